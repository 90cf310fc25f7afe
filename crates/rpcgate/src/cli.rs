//! The command line (contract §1), with clap.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// rpcgate: a gRPC-aware load balancer and reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "rpcgate", version, about, long_about = None)]
pub struct Cli {
    /// Log verbosity (error, warn, info, debug, trace, off, or a tracing filter such as
    /// `info,rpcgate_proxy=debug`); overrides RUST_LOG (and, for `run`, the config
    /// file's `log.level`).
    #[arg(long, global = true, value_parser = log_level)]
    pub log_level: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A `--log-level` value: a level name, or a filter whose every directive names a target
/// (`target=level`) or a level. A bare word that is neither (a typo such as `debgu`) would
/// otherwise parse as a target name and silently turn all logging off.
fn log_level(value: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let known = |word: &str| LEVELS.contains(&word.trim().to_ascii_lowercase().as_str());
    let ok = !value.trim().is_empty()
        && value
            .split(',')
            .all(|directive| match directive.split_once('=') {
                Some((target, level)) => !target.trim().is_empty() && known(level),
                None => known(directive),
            });
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!(
            "unknown log level {value:?}: use error, warn, info, debug, trace or off, or a filter such as \"info,rpcgate_proxy=debug\""
        ))
    }
}

/// A count that must be at least 1 (`--backends`, `--calls`): 0 is refused rather than
/// silently read as 1.
fn at_least_one(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        Ok(_) => Err("must be at least 1".to_string()),
        Err(e) => Err(format!("{value:?} is not a whole number: {e}")),
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run(ConfigArgs),
    /// Validate the configuration like `nginx -t`: prints `configuration OK` or every error.
    Check(CheckArgs),
    /// Start demo backends and a balancer in-process, send calls, show how they spread and what
    /// failures do, and print the admin URL (live dashboard); `--serve` keeps it all up.
    Demo(DemoArgs),
    /// Run one demo gRPC backend that tags its replies with its name.
    Backend(BackendArgs),
    /// Write a development PKI: a CA, a server certificate for the hosts, a client certificate.
    Certs(CertsArgs),
    /// Show the admin API's view in the terminal: per cluster, its endpoints with health,
    /// in-flight calls, calls/s, errors/s and p99.
    Status(StatusArgs),
}

/// `rpcgate status` options.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The admin API's address as IP:PORT (`[admin] address` in the config).
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// Redraw every two seconds until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
}

/// `-c FILE`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The configuration file.
    #[arg(short, long, default_value = "rpcgate.toml")]
    pub config: PathBuf,
}

/// `rpcgate check` options.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file.
    #[arg(short, long, default_value = "rpcgate.toml")]
    pub config: PathBuf,
    /// Print the diagnostics as JSON (for editors and CI):
    /// `{"ok": bool, "errors": [{file, line, col, key, message}], "warnings": [...]}`.
    #[arg(long)]
    pub json: bool,
}

/// `rpcgate demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run the demo over mutual TLS on both sides: a development PKI, backends that
    /// require client certificates, a listener that verifies them, and a client
    /// without a certificate refused.
    #[arg(long)]
    pub tls: bool,
    /// How many backends to start (at least 1).
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    pub backends: usize,
    /// How many calls to send in each phase (at least 1).
    #[arg(long, default_value_t = 30, value_parser = at_least_one)]
    pub calls: usize,
    /// Keep the balancer, its admin API and the backends running after the demo, until
    /// Ctrl-C or SIGTERM (exit 0).
    #[arg(long)]
    pub serve: bool,
    /// The balancer's listener address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The admin API's address: dashboard at /, /metrics, /status (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin: SocketAddr,
}

/// `rpcgate backend` options.
#[derive(Debug, Args)]
pub struct BackendArgs {
    /// Address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Name the backend tags its replies with.
    #[arg(long)]
    pub name: String,
    /// Serve TLS with this certificate chain (PEM, leaf first).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates chained to this CA (PEM): mutual TLS.
    #[arg(long, requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
}

/// `rpcgate certs` options.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write the PEM files to (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// Names and IP addresses the server certificate is valid for, comma-separated; the
    /// first is also its common name.
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    pub hosts: Vec<String>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}
