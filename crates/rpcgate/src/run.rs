//! `rpcgate run`: load the configuration, serve until a signal, drain, exit.

use std::process::ExitCode;

use rpcgate_proxy::{Proxy, ProxyHandle};

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
        let signal = wait_for_stop_signal(&proxy).await;
        tracing::info!(%signal, drain_timeout = ?config.server.drain_timeout, "draining");
        proxy.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// Waits for SIGTERM, SIGINT or SIGQUIT and names the one that came. The other signals an
/// operator sends must not kill the proxy, whose default action it would be: SIGHUP
/// reloads the configuration file (as NGINX's `-s reload`; an invalid file is logged and
/// the running configuration stays), SIGUSR1 reopens the access-log file (log rotation,
/// as NGINX's `-s reopen`), SIGUSR2 is logged and ignored.
async fn wait_for_stop_signal(proxy: &ProxyHandle) -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut hup), Ok(mut usr1), Ok(mut usr2)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
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
                tracing::info!("SIGHUP: reloading the configuration");
                // Blocking (files, sockets) is fine here: this runtime only waits for signals;
                // the workers and the admin API run on threads of their own.
                match proxy.reload() {
                    Ok(generation) => tracing::info!(generation, "SIGHUP: configuration reloaded"),
                    Err(error) => {
                        for line in error.to_string().lines() {
                            tracing::error!("SIGHUP: reload refused, the running configuration stays: {line}");
                        }
                    }
                }
            }
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: reopening the access log");
                proxy.reopen_access_log();
            }
            _ = usr2.recv() => {
                tracing::info!("SIGUSR2: ignored");
            }
        }
    }
}
