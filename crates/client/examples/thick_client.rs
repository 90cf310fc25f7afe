//! A thick client: balances Greeter calls itself over a service's backends, with no proxy
//! hop, using rpcgate's policies.
//!
//! ```text
//! cargo run -p rpcgate-client --example thick_client -- --etcd 127.0.0.1:2379 --service laptop
//! cargo run -p rpcgate-client --example thick_client -- --lookaside 127.0.0.1:9901 --cluster laptop
//! cargo run -p rpcgate-client --example thick_client -- --endpoints 127.0.0.1:50051,127.0.0.1:50052
//! ```
//!
//! Options: `--calls N` (default 10), `--lb POLICY` (default `p2c_ewma`). Each call prints
//! the backend that served it (the demo backends tag their replies), or the error.
//! Start backends with `rpcgate backend --listen 127.0.0.1:50051 --name b1`, and register
//! them with `rpcgate register --etcd 127.0.0.1:2379 --service laptop --address 127.0.0.1:50051`.

use std::process::ExitCode;
use std::time::Duration;

use rpcgate_client::ClientBuilder;
use rpcgate_demo::pb::helloworld::{HelloRequest, greeter_client::GreeterClient};

/// The value after `--name`, if given.
fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // The library logs what its source does (etcd unreachable, a look-aside NOT_FOUND):
    // warnings by default, more with RUST_LOG=info.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let calls: usize = flag(&args, "--calls")
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let lb = flag(&args, "--lb").unwrap_or_else(|| "p2c_ewma".to_owned());
    // The same [[clusters]] table rpcgate.toml has.
    let (name, source) = if let Some(etcd) = flag(&args, "--etcd") {
        let service = flag(&args, "--service").unwrap_or_else(|| "laptop".to_owned());
        let servers: Vec<String> = etcd.split(',').map(|s| format!("{s:?}")).collect();
        let source = format!("discovery = {{ etcd = [{}] }}", servers.join(", "));
        (service, source)
    } else if let Some(list) = flag(&args, "--endpoints") {
        let endpoints: Vec<String> = list.split(',').map(|s| format!("{s:?}")).collect();
        (
            "greeter".to_owned(),
            format!("endpoints = [{}]", endpoints.join(", ")),
        )
    } else if flag(&args, "--lookaside").is_some() {
        let cluster = flag(&args, "--cluster").unwrap_or_else(|| "laptop".to_owned());
        (cluster, "endpoints = [\"127.0.0.1:1\"]".to_owned())
    } else {
        eprintln!(
            "usage: thick_client (--etcd HOST:PORT --service NAME | --lookaside ADMIN --cluster NAME | --endpoints A,B) [--calls N] [--lb POLICY]"
        );
        return ExitCode::from(2);
    };
    let toml = format!("[[clusters]]\nname = {name:?}\nlb = {lb:?}\n{source}\n");
    let mut builder = match ClientBuilder::from_toml(&toml, "thick_client", &name) {
        Ok(builder) => builder,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    if let Some(admin) = flag(&args, "--lookaside") {
        builder = builder.lookaside(admin, name.clone());
    }
    let client = match builder.build() {
        Ok(client) => client,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let mut greeter = GreeterClient::new(client);
    // A discovered set arrives a moment after start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut failed = 0;
    for i in 0..calls {
        let request = HelloRequest {
            name: format!("call {i}"),
        };
        match greeter.say_hello(request).await {
            Ok(reply) => {
                let backend = reply
                    .metadata()
                    .get("x-backend")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_owned();
                println!("call {i}: served by {backend}");
            }
            Err(status) => {
                failed += 1;
                println!("call {i}: {:?} {}", status.code(), status.message());
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
