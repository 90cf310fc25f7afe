//! `rpcgate status [--admin ADDR] [--watch]`: the admin API's `/status` in the terminal —
//! per cluster, its endpoints with health, in-flight calls, calls/s, errors/s and p99 —
//! for a server without a browser (contract §1). Exit 1 when the admin API cannot be
//! reached; `--watch` redraws every two seconds until Ctrl-C and keeps going (saying so)
//! while the admin API is away.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::cli::StatusArgs;

/// How often `--watch` redraws.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// A bound on each request: an admin API that accepts but never answers is unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the command.
pub fn main(args: StatusArgs) -> ExitCode {
    let runtime = match crate::runtime(false) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async {
        if !args.watch {
            return match fetch(args.admin).await {
                Ok(status) => {
                    print!("{}", render(&status));
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{}", unreachable(args.admin, &error));
                    ExitCode::FAILURE
                }
            };
        }
        let clear = std::io::IsTerminal::is_terminal(&std::io::stdout());
        loop {
            let screen = match fetch(args.admin).await {
                Ok(status) => render(&status),
                Err(error) => format!("{}\n", unreachable(args.admin, &error)),
            };
            if clear {
                // Home the cursor and clear the screen, as `watch` does.
                print!("\x1b[H\x1b[2J");
            }
            print!("{screen}");
            if !clear {
                println!();
            }
            tokio::select! {
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            }
        }
    })
}

fn unreachable(admin: SocketAddr, error: &str) -> String {
    format!(
        "cannot reach the admin API at {admin}: {error} (is rpcgate running with [admin] address = \"{admin}\"? use --admin ADDR)"
    )
}

/// `GET /status` over HTTP/1.1.
async fn fetch(admin: SocketAddr) -> Result<Value, String> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(admin)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = http::Request::get("/status")
            .header(http::header::HOST, admin.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("/status answered {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("/status is not JSON: {e}"))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
}

/// The status as text: a header line, the listeners, then a table per cluster.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rpcgate {}  generation {}  up {}  {}",
        text(&status["version"]),
        text(&status["generation"]),
        uptime(status["uptime_s"].as_f64().unwrap_or(0.0)),
        if status["ready"] == true {
            "ready"
        } else {
            "NOT READY (draining)"
        }
    );
    for listener in array(&status["listeners"]) {
        let _ = writeln!(
            out,
            "listener {} on {} ({}): {} connection(s) open, {} refused at max_connections",
            text(&listener["name"]),
            text(&listener["address"]),
            if listener["tls"] == true {
                "TLS"
            } else {
                "h2c + HTTP/1.1"
            },
            text(&listener["connections_active"]),
            text(&listener["connections_refused"]),
        );
    }
    for cluster in array(&status["clusters"]) {
        let _ = writeln!(
            out,
            "\ncluster {}  lb {}  circuit {}  in-flight {}  {} calls/s  {} errors/s  p99 {}",
            text(&cluster["name"]),
            text(&cluster["lb"]),
            text(&cluster["circuit"]),
            text(&cluster["in_flight"]),
            number(&cluster["calls_per_s"]),
            number(&cluster["errors_per_s"]),
            ms(&cluster["p99_ms"]),
        );
        if let Some(source) = cluster["discovery"].as_str() {
            let _ = writeln!(out, "  endpoints from {source}");
        }
        let mut rows = vec![
            [
                "ENDPOINT",
                "WEIGHT",
                "HEALTH",
                "IN-FLIGHT",
                "CALLS/S",
                "ERRORS/S",
                "P99",
                "EWMA",
                "REQUESTS",
                "FAILURES",
                "WHY",
            ]
            .map(String::from),
        ];
        for endpoint in array(&cluster["endpoints"]) {
            rows.push([
                text(&endpoint["address"]),
                text(&endpoint["weight"]),
                health(endpoint),
                text(&endpoint["in_flight"]),
                number(&endpoint["calls_per_s"]),
                number(&endpoint["errors_per_s"]),
                ms(&endpoint["p99_ms"]),
                ms(&endpoint["ewma_ms"]),
                text(&endpoint["requests"]),
                text(&endpoint["failures"]),
                endpoint["down_reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ]);
        }
        table(&mut out, &rows);
    }
    out
}

fn health(endpoint: &Value) -> String {
    if endpoint["healthy"] != true {
        "DOWN".to_owned()
    } else if let Some(factor) = endpoint["slow_start"].as_f64() {
        format!("warming {:.0}%", factor * 100.0)
    } else {
        "up".to_owned()
    }
}

/// Left-aligned columns two spaces apart, indented by two.
fn table(out: &mut String, rows: &[[String; 11]]) {
    let widths: Vec<usize> = (0..11)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::from(" ");
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, " {cell:<width$} ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn number(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |n| format!("{n:.1}"))
}

fn ms(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |n| format!("{n:.1}ms"))
}

fn uptime(seconds: f64) -> String {
    let total = seconds as u64;
    match (total / 3600, total % 3600 / 60, total % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn renders_clusters_and_endpoints_with_their_health() {
        let status = serde_json::json!({
            "version": "0.1.0", "generation": 3, "uptime_s": 75.0, "ready": true,
            "listeners": [{"name": "edge", "address": "127.0.0.1:8080", "tls": false,
                           "connections_active": 2, "connections_refused": 0}],
            "clusters": [{"name": "greeter", "lb": "round_robin", "circuit": "off",
                "in_flight": 1, "calls_per_s": 12.5, "errors_per_s": 0.0, "p99_ms": 3.25,
                "endpoints": [
                    {"address": "127.0.0.1:50051", "weight": 2, "healthy": true, "slow_start": null,
                     "in_flight": 1, "calls_per_s": 12.5, "errors_per_s": 0.0, "p99_ms": 3.25,
                     "ewma_ms": 1.5, "requests": 100, "failures": 0, "down_reason": null},
                    {"address": "127.0.0.1:50052", "healthy": false, "slow_start": null,
                     "in_flight": 0, "calls_per_s": 0.0, "errors_per_s": 0.0, "p99_ms": null,
                     "ewma_ms": 0.0, "requests": 7, "failures": 3,
                     "down_reason": "passive health: ejected"}]}]
        });
        let text = render(&status);
        assert!(
            text.starts_with("rpcgate 0.1.0  generation 3  up 1m15s  ready\n"),
            "{text}"
        );
        assert!(
            text.contains("cluster greeter  lb round_robin  circuit off"),
            "{text}"
        );
        let down = text.lines().find(|l| l.contains("50052")).unwrap();
        assert!(
            down.contains("DOWN") && down.ends_with("passive health: ejected"),
            "{down}"
        );
        let up = text.lines().find(|l| l.contains("50051")).unwrap();
        assert!(up.contains(" up ") && up.contains("3.2ms"), "{up}");
        assert!(up.starts_with("  127.0.0.1:50051  2 "), "{up}");
    }
}
