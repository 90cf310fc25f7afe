//! What `rpcgate-client` costs per call over a plain tonic `Channel` to one backend: the
//! same unary SayHello, one call at a time, through a `Channel` and through a one-endpoint
//! `Client` in alternating blocks of 1000 calls (so drift in the machine's speed hits both
//! alike). Everything runs on one thread (a current-thread runtime: the connections'
//! tasks too), so the thread's CPU time from `/proc/thread-self/schedstat` (nanoseconds)
//! is the whole client-side cost. `bench/client.sh` runs it against a release-built
//! `rpcgate backend` in another process.
//!
//! ```text
//! cargo run --release -p rpcgate-client --example overhead -- --backend 127.0.0.1:50051 [--calls 30000] [--rounds 3]
//! ```

use tokio::time::Instant;

use rpcgate_client::ClientBuilder;
use rpcgate_demo::pb::helloworld::{HelloRequest, greeter_client::GreeterClient};

/// This thread's CPU time in seconds (the first field of schedstat, in nanoseconds).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let nanos: f64 = stat
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .unwrap_or(0.0);
    nanos / 1e9
}

/// Runs `calls` calls through `greeter`; returns (CPU seconds, wall seconds).
async fn measure<T>(greeter: &mut GreeterClient<T>, calls: usize) -> (f64, f64)
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let cpu = cpu_seconds();
    let wall = Instant::now();
    for _ in 0..calls {
        let request = HelloRequest {
            name: "bench".into(),
        };
        if let Err(status) = greeter.say_hello(request).await {
            eprintln!("call failed: {status}");
            std::process::exit(1);
        }
    }
    (cpu_seconds() - cpu, wall.elapsed().as_secs_f64())
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(backend) = flag(&args, "--backend") else {
        eprintln!("usage: overhead --backend HOST:PORT [--calls N] [--rounds N]");
        std::process::exit(2);
    };
    let calls: usize = flag(&args, "--calls")
        .and_then(|n| n.parse().ok())
        .unwrap_or(30_000);
    let rounds: usize = flag(&args, "--rounds")
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let channel = match tonic::transport::Endpoint::from_shared(format!("http://{backend}")) {
        Ok(endpoint) => match endpoint.connect().await {
            Ok(channel) => channel,
            Err(e) => {
                eprintln!("cannot connect to {backend}: {e}");
                std::process::exit(1);
            }
        },
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let client = match ClientBuilder::endpoints("bench", [backend.as_str()]).and_then(|b| b.build())
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let mut plain = GreeterClient::new(channel);
    let mut balanced = GreeterClient::new(client);
    // Warm both up (connections, allocator, EWMA).
    measure(&mut plain, 1000).await;
    measure(&mut balanced, 1000).await;
    println!(
        "round  channel_cpu_us  client_cpu_us  overhead_cpu_us  channel_wall_us  client_wall_us"
    );
    let mut overheads = Vec::new();
    const BLOCK: usize = 1000;
    let calls = calls.div_ceil(BLOCK).max(1) * BLOCK;
    let per = |total: f64| total * 1e6 / calls as f64;
    for round in 1..=rounds {
        let (mut plain_cpu, mut plain_wall, mut client_cpu, mut client_wall) = (0.0, 0.0, 0.0, 0.0);
        for _ in 0..calls.div_ceil(BLOCK) {
            let (cpu, wall) = measure(&mut plain, BLOCK).await;
            (plain_cpu, plain_wall) = (plain_cpu + cpu, plain_wall + wall);
            let (cpu, wall) = measure(&mut balanced, BLOCK).await;
            (client_cpu, client_wall) = (client_cpu + cpu, client_wall + wall);
        }
        let (plain_cpu, plain_wall, client_cpu, client_wall) = (
            per(plain_cpu),
            per(plain_wall),
            per(client_cpu),
            per(client_wall),
        );
        overheads.push(client_cpu - plain_cpu);
        println!(
            "{round:>5}  {plain_cpu:>14.2}  {client_cpu:>13.2}  {:>15.2}  {plain_wall:>15.2}  {client_wall:>14.2}",
            client_cpu - plain_cpu
        );
    }
    overheads.sort_by(f64::total_cmp);
    println!(
        "median overhead: {:.2} µs CPU per call",
        overheads[overheads.len() / 2]
    );
}
