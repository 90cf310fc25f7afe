//! `rpcgate backend`: one demo gRPC server for tutorials and tests.

use std::process::ExitCode;

use rpcgate_demo::{BackendOptions, TlsServer, serve_backend};

use crate::cli::BackendArgs;

/// Serves (over TLS with `--tls-cert`/`--tls-key`, requiring client certificates with
/// `--client-ca`) until SIGTERM or SIGINT, then drains and exits 0. Unreadable or invalid
/// PEM files are reported before listening, with exit 1.
pub fn main(args: BackendArgs, log_level: Option<&str>) -> ExitCode {
    crate::init_tracing(log_level, "info");
    let mut options = BackendOptions::new(args.name.clone());
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        match TlsServer::from_files(cert, key, args.client_ca.as_deref()) {
            Ok(tls) => options = options.tls(tls),
            Err(error) => {
                eprintln!("rpcgate backend: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    let runtime = match crate::runtime(true) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("rpcgate backend: cannot bind {}: {error}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        let tls = match &options.tls {
            Some(tls) if tls.client_ca_pem.is_some() => "mutual",
            Some(_) => "on",
            None => "off",
        };
        tracing::info!(name = %args.name, address = %args.listen, tls, "demo backend serving");
        let served = serve_backend(listener, options, stop_signal()).await;
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("rpcgate backend: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub(crate) async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
