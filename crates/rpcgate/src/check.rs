//! `rpcgate check`: validate a configuration file, like `nginx -t`.

use std::process::ExitCode;

use crate::cli::ConfigArgs;

/// Prints `configuration OK` (exit 0) or every error with `file:line:col` (exit 1).
pub fn main(args: ConfigArgs) -> ExitCode {
    match rpcgate_config::load(&args.config) {
        Ok(_) => {
            println!("configuration OK");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}
