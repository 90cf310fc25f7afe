//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use rpcgate_config::{Config, ConfigErrors};

/// A valid minimal config: one listener, one route, one cluster.
pub const MINIMAL: &str = r#"
[[listeners]]
name = "edge"
address = "127.0.0.1:8080"

[[listeners.routes]]
cluster = "backends"

[[clusters]]
name = "backends"
endpoints = ["127.0.0.1:50051"]
"#;

/// Parses text that must be valid.
pub fn ok(text: &str) -> Config {
    match rpcgate_config::parse(text, "t.toml") {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// Parses text that must be invalid.
pub fn err(text: &str) -> ConfigErrors {
    match rpcgate_config::parse(text, "t.toml") {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e,
    }
}

/// The error lines of invalid text.
pub fn lines(text: &str) -> Vec<String> {
    err(text).errors().iter().map(ToString::to_string).collect()
}

/// `MINIMAL` with `extra` inserted after the line that contains `after`.
pub fn minimal_with(after: &str, extra: &str) -> String {
    let mut out = String::new();
    let mut done = false;
    for line in MINIMAL.lines() {
        out.push_str(line);
        out.push('\n');
        if !done && line.contains(after) {
            out.push_str(extra);
            if !extra.ends_with('\n') {
                out.push('\n');
            }
            done = true;
        }
    }
    assert!(done, "{after:?} not in MINIMAL");
    out
}
