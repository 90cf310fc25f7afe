//! `rpcgate run`: load the configuration, serve until a signal, drain, exit.

use std::process::ExitCode;

use rpcgate_proxy::Proxy;

use crate::cli::ConfigArgs;

/// Runs the proxy; exit 0 after a clean drain, 1 on a bad config or a failed bind.
pub fn main(args: ConfigArgs, log_level: Option<&str>) -> ExitCode {
    let config = match rpcgate_config::load(&args.config) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    crate::init_tracing(log_level, &config.log.level);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match crate::runtime(false) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let proxy = match Proxy::start(&config) {
            Ok(proxy) => proxy,
            Err(error) => {
                tracing::error!(%error, "cannot start");
                eprintln!("rpcgate: {error}");
                return ExitCode::FAILURE;
            }
        };
        for (name, address) in proxy.addresses() {
            tracing::info!(listener = %name, %address, workers = config.server.workers, "listening");
        }
        let signal = wait_for_stop_signal().await;
        tracing::info!(%signal, drain_timeout = ?config.server.drain_timeout, "draining");
        proxy.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// Waits for SIGTERM, SIGINT or SIGQUIT and names the one that came. SIGHUP (NGINX's
/// reload signal) must not kill the proxy, whose default action it is: until reloads are
/// built, it is logged and the running configuration stays.
async fn wait_for_stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    loop {
        tokio::select! {
            _ = term.recv() => return "SIGTERM",
            _ = int.recv() => return "SIGINT",
            _ = quit.recv() => return "SIGQUIT",
            _ = hup.recv() => {
                tracing::warn!("SIGHUP: configuration reload is not implemented yet; the running configuration stays");
            }
        }
    }
}
