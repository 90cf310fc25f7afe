//! `rpcgate check`: validate a configuration file, like `nginx -t` and a little further:
//! besides what `run` checks, endpoint host names must resolve, the access-log file must
//! open, certificates must be valid today, and TLS keys must match their certificates
//! (see `rpcgate_config::check`). Warnings (exit 0) say what probably does not do what
//! was meant. `--json` prints the same for editors and CI.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::CheckArgs;

/// Prints `configuration OK` (exit 0) or every error with `file:line:col` (exit 1).
pub fn main(args: CheckArgs) -> ExitCode {
    let file = args.config.display().to_string();
    let (errors, warnings) = match rpcgate_config::check(&args.config) {
        Ok(config) => {
            // Build the TLS configurations too (a key that does not match its
            // certificate is only found by rustls).
            let errors = rpcgate_proxy::tls::check(&config)
                .into_iter()
                .map(|problem| {
                    let e = rpcgate_config::tls_key_error(
                        &args.config,
                        problem.section,
                        problem.index,
                        &problem.message,
                    );
                    (
                        e.to_string(),
                        json!({ "file": e.file(), "line": e.line(), "col": e.col(), "key": e.key(), "message": e.message() }),
                    )
                })
                .collect::<Vec<_>>();
            (errors, config.warnings)
        }
        Err(errors) => (
            errors
                .errors()
                .iter()
                .map(|e| {
                    (
                        e.to_string(),
                        json!({ "file": e.file(), "line": e.line(), "col": e.col(), "key": e.key(), "message": e.message() }),
                    )
                })
                .collect(),
            errors.warnings().to_vec(),
        ),
    };
    if args.json {
        let report = json!({
            "ok": errors.is_empty(),
            "errors": errors.iter().map(|(_, j)| j.clone()).collect::<Vec<_>>(),
            "warnings": warnings.iter().map(|w| warning_json(&file, w)).collect::<Vec<_>>(),
        });
        println!("{report}");
    } else {
        for warning in &warnings {
            eprintln!("warning: {warning}");
        }
        for (text, _) in &errors {
            eprintln!("{text}");
        }
        if errors.is_empty() {
            println!("configuration OK");
        }
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A warning line (`FILE:LINE:COL: KEY: MESSAGE`) as JSON fields.
fn warning_json(file: &str, warning: &str) -> Value {
    let parsed = warning
        .strip_prefix(file)
        .and_then(|rest| rest.strip_prefix(':'))
        .and_then(|rest| {
            let mut parts = rest.splitn(3, ':');
            let line: usize = parts.next()?.parse().ok()?;
            let col: usize = parts.next()?.parse().ok()?;
            let (key, message) = parts.next()?.trim_start().split_once(": ")?;
            Some(json!({ "file": file, "line": line, "col": col, "key": key, "message": message }))
        });
    parsed.unwrap_or_else(|| json!({ "file": file, "message": warning }))
}
