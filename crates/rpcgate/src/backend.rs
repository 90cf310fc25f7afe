//! `rpcgate backend`: one demo gRPC server for tutorials and tests.

use std::process::ExitCode;

use rpcgate_testkit::{BackendOptions, serve_backend};

use crate::cli::BackendArgs;

/// Serves until SIGTERM or SIGINT, then drains and exits 0.
pub fn main(args: BackendArgs, log_level: Option<&str>) -> ExitCode {
    crate::init_tracing(log_level, "info");
    if args.tls_cert.is_some() {
        eprintln!("rpcgate backend: --tls-cert/--tls-key/--client-ca are not implemented yet");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("rpcgate backend: cannot bind {}: {error}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(name = %args.name, address = %args.listen, "demo backend serving");
        let served = serve_backend(listener, BackendOptions::new(args.name), stop_signal()).await;
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("rpcgate backend: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn stop_signal() {
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
