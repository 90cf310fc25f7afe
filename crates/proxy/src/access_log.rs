//! The access log: one line per call (contract §7), JSON or NGINX-like text.
//!
//! Lines are formatted on the worker that handled the call and handed to one writer
//! thread through a bounded channel, so a slow terminal or disk never blocks a call. If
//! the writer falls behind by more than the channel holds, lines are dropped and counted
//! rather than letting memory grow.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::SystemTime;

use rpcgate_config::{AccessLogTarget, LogFormat};
use serde_json::json;

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 65_536;

/// Everything the access log says about one call.
#[derive(Debug, Default, Clone)]
pub struct AccessRecord {
    /// Listener name.
    pub listener: Arc<str>,
    /// Client `ip:port`.
    pub client: String,
    /// Verified client certificate subject (mutual TLS), if any.
    pub tls_client_subject: Option<String>,
    /// `:authority` or `Host`.
    pub authority: String,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// gRPC service, for gRPC calls.
    pub grpc_service: Option<String>,
    /// gRPC method, for gRPC calls.
    pub grpc_method: Option<String>,
    /// `HTTP/2.0` or `HTTP/1.1`.
    pub protocol: &'static str,
    /// HTTP status sent to the client.
    pub status: u16,
    /// Final gRPC status, for gRPC calls.
    pub grpc_status: Option<u32>,
    /// The route that took the call.
    pub route: Option<Arc<str>>,
    /// The cluster that served it.
    pub cluster: Option<Arc<str>>,
    /// The endpoint of the last attempt.
    pub endpoint: Option<String>,
    /// Attempts made: the first, then every retry (transparent and by policy).
    pub attempts: u32,
    /// Whole call duration in milliseconds.
    pub duration_ms: f64,
    /// Time from sending upstream to the response headers, in milliseconds.
    pub upstream_ms: Option<f64>,
    /// Request body bytes received from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// `user-agent` header.
    pub user_agent: Option<String>,
    /// `x-request-id` (the client's or the one rpcgate set).
    pub request_id: Option<String>,
    /// Why the call did not simply complete (`no_route`, `connect_failed`, `deadline`,
    /// `circuit_open`, …); `None` when the backend answered.
    pub reason: Option<&'static str>,
}

/// What the writer thread is sent.
#[derive(Debug)]
enum Entry {
    /// One formatted line.
    Line(String),
    /// Reopen the file (SIGUSR1, after a log rotation moved it away).
    Reopen,
}

/// Where finished records go.
#[derive(Debug, Clone)]
pub struct AccessLog {
    sink: Option<SyncSender<Entry>>,
    format: LogFormat,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// An access log that writes nothing.
    pub fn off() -> Self {
        Self {
            sink: None,
            format: LogFormat::Json,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Opens the target and starts the writer thread.
    pub fn open(target: &AccessLogTarget, format: LogFormat) -> std::io::Result<Self> {
        if *target == AccessLogTarget::Off {
            return Ok(Self::off());
        }
        let writer = open_target(target)?;
        let (sink, lines) = sync_channel(QUEUE);
        let target = target.clone();
        std::thread::Builder::new()
            .name("rpcgate-access-log".into())
            .spawn(move || write_lines(lines, writer, &target))?;
        Ok(Self {
            sink: Some(sink),
            format,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Whether records are wanted at all (lets callers skip building them).
    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Formats and queues one record.
    pub fn write(&self, record: &AccessRecord) {
        let Some(sink) = &self.sink else { return };
        let line = match self.format {
            LogFormat::Json => format_json(record),
            LogFormat::Text => format_text(record),
        };
        if let Err(TrySendError::Full(_)) = sink.try_send(Entry::Line(line)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Asks the writer to reopen a file target (log rotation: `mv` the file, then
    /// SIGUSR1, as with NGINX). Lines queued before are written to the old file. Standard
    /// output and error need no reopening.
    pub fn reopen(&self) {
        if let Some(sink) = &self.sink
            && sink.try_send(Entry::Reopen).is_err()
        {
            tracing::warn!("the access log writer is behind or gone; the file was not reopened");
        }
    }
}

fn open_target(target: &AccessLogTarget) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        AccessLogTarget::Stdout | AccessLogTarget::Off => Box::new(std::io::stdout()),
        AccessLogTarget::Stderr => Box::new(std::io::stderr()),
        AccessLogTarget::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
    })
}

fn write_lines(entries: Receiver<Entry>, writer: Box<dyn Write + Send>, target: &AccessLogTarget) {
    let mut out = std::io::BufWriter::new(writer);
    while let Ok(entry) = entries.recv() {
        let mut next = Some(entry);
        while let Some(entry) = next.take() {
            match entry {
                Entry::Line(line) => {
                    let _ = out.write_all(line.as_bytes());
                }
                Entry::Reopen => {
                    let _ = out.flush();
                    if let AccessLogTarget::File(path) = target {
                        match open_target(target) {
                            Ok(writer) => {
                                out = std::io::BufWriter::new(writer);
                                tracing::info!(path = %path.display(), "access log reopened");
                            }
                            Err(error) => {
                                tracing::error!(path = %path.display(), %error, "cannot reopen the access log; writing on to the old file");
                            }
                        }
                    }
                }
            }
            next = entries.try_recv().ok();
        }
        let _ = out.flush();
    }
}

fn timestamp() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn format_json(r: &AccessRecord) -> String {
    let mut line = json!({
        "ts": timestamp(),
        "listener": &*r.listener,
        "client": r.client,
        "tls_client_subject": r.tls_client_subject,
        "authority": r.authority,
        "method": r.method,
        "path": r.path,
        "grpc_service": r.grpc_service,
        "grpc_method": r.grpc_method,
        "protocol": r.protocol,
        "status": r.status,
        "grpc_status": r.grpc_status,
        "route": r.route.as_deref(),
        "cluster": r.cluster.as_deref(),
        "endpoint": r.endpoint,
        "attempts": r.attempts,
        "duration_ms": round3(r.duration_ms),
        "upstream_ms": r.upstream_ms.map(round3),
        "bytes_in": r.bytes_in,
        "bytes_out": r.bytes_out,
        "user_agent": r.user_agent,
        "request_id": r.request_id,
        "reason": r.reason,
    })
    .to_string();
    line.push('\n');
    line
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn format_text(r: &AccessRecord) -> String {
    let dash = |v: Option<&str>| v.unwrap_or("-").to_string();
    format!(
        "{client} {subject} [{ts}] \"{method} {path} {protocol}\" {status} grpc={grpc} {bytes_out} \"{ua}\" listener={listener} route={route} cluster={cluster} endpoint={endpoint} attempts={attempts} duration_ms={duration:.3} upstream_ms={upstream} bytes_in={bytes_in} authority={authority} request_id={request_id} reason={reason}\n",
        client = r.client,
        subject = dash(r.tls_client_subject.as_deref()),
        ts = timestamp(),
        method = r.method,
        path = r.path,
        protocol = r.protocol,
        status = r.status,
        grpc = r.grpc_status.map_or("-".into(), |c| c.to_string()),
        bytes_out = r.bytes_out,
        ua = dash(r.user_agent.as_deref()),
        listener = r.listener,
        route = dash(r.route.as_deref()),
        cluster = dash(r.cluster.as_deref()),
        endpoint = dash(r.endpoint.as_deref()),
        attempts = r.attempts,
        duration = r.duration_ms,
        upstream = r.upstream_ms.map_or("-".into(), |v| format!("{v:.3}")),
        bytes_in = r.bytes_in,
        authority = r.authority,
        request_id = dash(r.request_id.as_deref()),
        reason = r.reason.unwrap_or("-"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord {
        AccessRecord {
            listener: "edge".into(),
            client: "127.0.0.1:5000".into(),
            method: "POST".into(),
            path: "/helloworld.Greeter/SayHello".into(),
            grpc_service: Some("helloworld.Greeter".into()),
            grpc_method: Some("SayHello".into()),
            protocol: "HTTP/2.0",
            status: 200,
            grpc_status: Some(0),
            attempts: 1,
            request_id: Some("abc".into()),
            ..Default::default()
        }
    }

    #[test]
    fn json_line_has_every_spec_field() {
        let line = format_json(&record());
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        for field in [
            "ts",
            "listener",
            "client",
            "tls_client_subject",
            "authority",
            "method",
            "path",
            "grpc_service",
            "grpc_method",
            "protocol",
            "status",
            "grpc_status",
            "route",
            "cluster",
            "endpoint",
            "attempts",
            "duration_ms",
            "upstream_ms",
            "bytes_in",
            "bytes_out",
            "user_agent",
            "request_id",
            "reason",
        ] {
            assert!(value.get(field).is_some(), "missing {field}");
        }
        assert_eq!(value["grpc_status"], 0);
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn text_line_reads_like_nginx() {
        let line = format_text(&record());
        assert!(line.starts_with("127.0.0.1:5000 - ["));
        assert!(line.contains("\"POST /helloworld.Greeter/SayHello HTTP/2.0\" 200 grpc=0"));
    }
}
