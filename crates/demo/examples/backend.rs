//! Runs one test backend until Ctrl-C, for trying clients (e.g. the Python interop
//! client) against it without the proxy: `cargo run -p rpcgate-demo --example backend
//! -- 127.0.0.1:0 b1`. Prints `listening on ADDR` once it accepts connections.

use rpcgate_demo::{BackendOptions, serve_backend};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:50051".to_owned());
    let name = args.next().unwrap_or_else(|| "backend".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve_backend(listener, BackendOptions::new(name), shutdown).await?;
    Ok(())
}
