//! `rpcgate check`: validate a configuration file, like `nginx -t`.

use std::process::ExitCode;

use crate::cli::ConfigArgs;

/// Prints `configuration OK` (exit 0) or every error with `file:line:col` (exit 1).
pub fn main(args: ConfigArgs) -> ExitCode {
    match rpcgate_config::load(&args.config) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            // Build the TLS configurations too (a key that does not match its
            // certificate is only found by rustls).
            let problems = rpcgate_proxy::tls::check(&config);
            if !problems.is_empty() {
                for problem in problems {
                    eprintln!("{}: {problem}", args.config.display());
                }
                return ExitCode::FAILURE;
            }
            println!("configuration OK");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}
