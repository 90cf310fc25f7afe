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
    /// Keep a backend registered in etcd under a lease until stopped (SIGTERM or Ctrl-C),
    /// then deregister it; rpcgate's `discovery = { etcd = … }` finds it.
    Register(RegisterArgs),
    /// Print the gRPC xDS bootstrap JSON for proxyless clients (GRPC_XDS_BOOTSTRAP)
    /// pointing at an rpcgate's admin address; they dial xds:///LISTENER or xds:///CLUSTER.
    Bootstrap(BootstrapArgs),
}

/// `rpcgate bootstrap` options.
#[derive(Debug, Args)]
#[command(after_help = "Save it and point the client at it: \
rpcgate bootstrap > xds.json; GRPC_XDS_BOOTSTRAP=xds.json your-client, dialing xds:///NAME \
(NAME = an rpcgate listener: its routes; or a cluster: every call to it). The admin address \
must be reachable from the clients; it serves xDS unless [admin] says xds = false.")]
pub struct BootstrapArgs {
    /// The rpcgate admin address the clients reach (`[admin] address`), HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9901", value_parser = admin_address)]
    pub admin: String,
    /// The node id the clients present (shown in rpcgate's log when they connect).
    #[arg(long, default_value = "rpcgate-proxyless", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub node: String,
}

/// `rpcgate register` options.
#[derive(Debug, Args)]
#[command(
    after_help = "The key is PREFIX + SERVICE/ADDRESS, holding {\"Addr\": ADDRESS, \"Metadata\": {\"weight\": N}} \
(etcd's own naming format). A cluster with discovery = { etcd = [\"HOST:PORT\"] } and no prefix reads \
/rpcgate/services/CLUSTER/, so --service should be the cluster's name. If the process is killed, \
the key goes when the lease ends (--ttl)."
)]
pub struct RegisterArgs {
    /// etcd's client address(es), HOST:PORT, comma-separated or repeated.
    #[arg(long, required = true, value_delimiter = ',', value_parser = host_port)]
    pub etcd: Vec<String>,
    /// The service (cluster) name the backend belongs to.
    #[arg(long, value_parser = service_name)]
    pub service: String,
    /// The backend's HOST:PORT, as the proxies should reach it.
    #[arg(long, value_parser = host_port)]
    pub address: String,
    /// The lease's time to live: how long a killed process stays registered (at least 2s).
    #[arg(long, default_value = "10s", value_parser = ttl)]
    pub ttl: std::time::Duration,
    /// The backend's relative share of the calls.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub weight: u32,
    /// The folder of the services in etcd; the key is PREFIX/SERVICE/ADDRESS (a missing
    /// trailing '/' is added).
    #[arg(long, default_value = "/rpcgate/services/", value_parser = services_folder)]
    pub prefix: String,
}

/// An etcd address, `HOST:PORT`.
fn host_port(value: &str) -> Result<String, String> {
    host_port_like(value, "127.0.0.1:2379")
}

/// An rpcgate admin address, `HOST:PORT`.
fn admin_address(value: &str) -> Result<String, String> {
    host_port_like(value, "127.0.0.1:9901")
}

/// `HOST:PORT` with a port from 1 to 65535; `example` is the one the message shows.
fn host_port_like(value: &str, example: &str) -> Result<String, String> {
    if let Some((scheme, rest)) = value.split_once("://") {
        return Err(format!(
            "{value:?}: give HOST:PORT without the {scheme}://, e.g. {rest}"
        ));
    }
    match value.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
            Ok(value.to_owned())
        }
        _ => Err(format!(
            "{value:?} is not HOST:PORT with a port from 1 to 65535, e.g. {example}"
        )),
    }
}

/// `--prefix`: a folder path starting with '/'.
fn services_folder(value: &str) -> Result<String, String> {
    if !value.starts_with('/') {
        return Err(format!(
            "{value:?}: must start with '/', e.g. /rpcgate/services/"
        ));
    }
    Ok(value.to_owned())
}

/// A service name: one etcd path segment.
fn service_name(value: &str) -> Result<String, String> {
    if value.is_empty() || value.contains('/') {
        return Err(format!("{value:?}: must be non-empty, without '/'"));
    }
    Ok(value.to_owned())
}

/// A lease TTL such as `10s`, at least 2s (etcd's shortest lease).
fn ttl(value: &str) -> Result<std::time::Duration, String> {
    let ttl = humantime::parse_duration(value)
        .map_err(|e| format!("{value:?} is not a duration such as 10s: {e}"))?;
    if ttl < std::time::Duration::from_secs(2) {
        return Err(format!("{value:?}: etcd grants leases of at least 2s"));
    }
    Ok(ttl)
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
