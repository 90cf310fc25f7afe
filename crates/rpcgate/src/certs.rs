//! `rpcgate certs`: a development PKI in one command (contract §1), instead of the afternoon of
//! `openssl` commands the TLS tutorials start with.

use std::path::Path;
use std::process::ExitCode;

use rpcgate_demo::pki::{DevPki, PkiPaths};

use crate::cli::CertsArgs;

/// Generates the CA, server and client certificates and writes them to `--dir`; exit 1
/// (writing nothing) when a file exists without `--force`, or on any other error.
pub fn main(args: CertsArgs) -> ExitCode {
    let written = DevPki::generate(&args.hosts).and_then(|pki| pki.write_to(&args.dir, args.force));
    match written {
        Ok(paths) => {
            print!("{}", summary(&args.dir, &args.hosts, &paths));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("rpcgate certs: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A TOML string for a path (TOML basic strings escape like Rust's `Debug` for ordinary
/// paths).
fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// What was written and how to use it: the config tables of contract §2 and a TLS backend.
fn summary(dir: &Path, hosts: &[String], paths: &PkiPaths) -> String {
    let hosts: Vec<&str> = hosts
        .iter()
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
        .collect();
    // SNI needs a DNS name; with only IP addresses, verification uses the address.
    let server_name = hosts
        .iter()
        .find(|host| host.parse::<std::net::IpAddr>().is_err())
        .or(hosts.first())
        .copied()
        .unwrap_or("localhost");
    let files = [
        (
            &paths.ca_cert,
            "CA certificate: what servers and clients trust",
        ),
        (
            &paths.ca_key,
            "CA private key (0600): keep it, or delete it when done",
        ),
        (&paths.server_cert, "server certificate"),
        (&paths.server_key, "server private key (0600)"),
        (&paths.client_cert, "client certificate (CN rpcgate-client)"),
        (&paths.client_key, "client private key (0600)"),
    ];
    let mut out = format!(
        "wrote a development PKI to {} (server certificate for {}):\n",
        dir.display(),
        hosts.join(", ")
    );
    for (path, what) in files {
        out.push_str(&format!("  {:<40} {what}\n", path.display()));
    }
    out.push_str(&format!(
        r#"
next steps: TLS with client certificates at the listener (rpcgate.toml)
  [listeners.tls]
  cert = {server_cert}
  key = {server_key}
  client_ca = {ca}

and TLS with a client certificate towards the backends (protocol = "h2")
  [clusters.tls]
  ca = {ca}
  cert = {client_cert}
  key = {client_key}
  server_name = "{server_name}"

a TLS backend that requires client certificates:
  rpcgate backend --listen 127.0.0.1:50051 --name b1 --tls-cert {server_cert} --tls-key {server_key} --client-ca {ca}
"#,
        server_cert = quoted(&paths.server_cert),
        server_key = quoted(&paths.server_key),
        ca = quoted(&paths.ca_cert),
        client_cert = quoted(&paths.client_cert),
        client_key = quoted(&paths.client_key),
    ));
    out
}
