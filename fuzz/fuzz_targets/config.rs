//! The config parser and validator on any text: never a panic, and every error names
//! the file and a position (`fuzz.toml:LINE:COL: …`), as `rpcgate check` promises.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = rpcgate_config::parse(text, "fuzz.toml") {
        for error in errors.errors() {
            let line = error.to_string();
            assert!(
                line.starts_with("fuzz.toml:"),
                "an error without its place: {line}"
            );
        }
    }
});
