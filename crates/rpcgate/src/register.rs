//! `rpcgate register`: keeps one backend registered in etcd (contract §1, §8), for
//! backends that cannot register themselves — a sidecar next to the server, or a line in
//! its start script.

use std::process::ExitCode;

use rpcgate_discovery::etcd::registration::{Registration, RegistrationSpec};

use crate::cli::RegisterArgs;

/// Registers until SIGTERM or SIGINT, then revokes the lease (deleting the key) and exits
/// 0. etcd being unreachable is not fatal: it retries and logs, as a sidecar should.
pub fn main(args: RegisterArgs, log_level: Option<&str>) -> ExitCode {
    crate::init_tracing(log_level, "info");
    let runtime = match crate::runtime(false) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let spec = RegistrationSpec {
        key: RegistrationSpec::key_for(&args.prefix, &args.service, &args.address),
        servers: args.etcd,
        address: args.address,
        weight: args.weight,
        ttl: args.ttl,
    };
    runtime.block_on(async {
        let key = spec.key.clone();
        let registration = Registration::start(spec);
        crate::backend::stop_signal().await;
        match registration.deregister().await {
            Ok(()) => tracing::info!(key = key.as_str(), "deregistered from etcd"),
            Err(e) => tracing::warn!(key = key.as_str(), "not deregistered: {e}"),
        }
        ExitCode::SUCCESS
    })
}
