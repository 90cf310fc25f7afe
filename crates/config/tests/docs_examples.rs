//! Every ```toml block in the user docs is a complete configuration that validates, so
//! the docs cannot drift from what `rpcgate check` accepts.

mod common;

use std::path::Path;

fn toml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, line) in markdown.lines().enumerate() {
        match &mut current {
            None if line.trim_start().starts_with("```toml") => {
                current = Some((index + 2, String::new()))
            }
            Some(_) if line.trim_start().starts_with("```") => blocks.extend(current.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn every_toml_block_in_the_docs_validates() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    // The TLS examples name `certs/*.pem` next to the config, as `rpcgate certs --dir certs`
    // writes them.
    let dir = common::TempDir::new("docs_examples");
    common::write_pki(&dir);
    let mut checked = 0;
    for entry in std::fs::read_dir(&docs).expect("docs/ exists") {
        let path = entry.expect("readable").path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("utf-8");
        for (line, block) in toml_blocks(&text) {
            let name = format!("{}:{line}", path.display());
            let file = dir.write("rpcgate.toml", &block);
            if let Err(errors) = rpcgate_config::load(&file) {
                panic!("a TOML example in the docs ({name}) does not validate:\n{errors}");
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "expected the migration guide's examples, found {checked}"
    );
}
