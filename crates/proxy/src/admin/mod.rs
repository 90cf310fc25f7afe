//! The admin API on `admin.address` (contract §5): `/healthz`, `/ready`, `/metrics`,
//! `/status` and the dashboard at `/`, over HTTP/1.1 and h2c on one port, and on the
//! same port the gRPC services for thick and proxyless clients: the look-aside API
//! ([`lookaside`]) and, unless `admin.xds = false`, xDS ([`xds`]).
//! A request with a gRPC content type goes to the gRPC services, any other to the HTTP
//! pages.
//!
//! It runs on the control runtime, apart from the workers, so a scrape never competes
//! with calls for a worker's event loop. Everything it shows is read from the current
//! [`Generation`](crate::state::Generation) and the process's [`Stats`] at request time;
//! rates and recent percentiles come from the [`History`] the observer fills once a
//! second. Without `[admin]` none of this runs and nothing listens.

mod history;
mod lookaside;
mod metrics;
mod status;
mod xds;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::Instant;

pub(crate) use history::History;

use crate::error::StartError;
use crate::reload::{Core, ReloadError};
use crate::state::Generations;
use crate::stats::Stats;

/// The dashboard: one self-contained page that polls `/status`.
const DASHBOARD: &str = include_str!("dashboard.html");

/// What the admin API reads: the live generation and listeners, the counters, and the
/// history; and what `POST /reload` swaps.
#[derive(Debug)]
pub(crate) struct View {
    pub(crate) core: Arc<Core>,
    pub(crate) generations: Arc<Generations>,
    pub(crate) stats: Arc<Stats>,
    /// False once shutdown began.
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) started: Instant,
    pub(crate) history: History,
    /// The xDS server's counters.
    pub(crate) xds: Arc<rpcgate_xds::AdsStats>,
}

impl View {
    /// A view of a proxy that has just started.
    pub(crate) fn new(core: Arc<Core>, ready: Arc<AtomicBool>) -> Self {
        Self {
            generations: core.generations.clone(),
            stats: core.stats.clone(),
            core,
            ready,
            started: Instant::now(),
            history: History::default(),
            xds: Arc::default(),
        }
    }
}

/// Serves the admin API on `socket` until `shutdown`; returns the bound address. xDS
/// streams end earlier, when `draining` turns true, so proxyless clients move to another
/// rpcgate while this one drains.
pub(crate) fn serve(
    socket: std::net::TcpListener,
    view: Arc<View>,
    runtime: &Handle,
    mut shutdown: watch::Receiver<bool>,
    draining: watch::Receiver<bool>,
) -> Result<SocketAddr, StartError> {
    let address = socket
        .local_addr()
        .map_err(|source| bind_error(&socket, source))?;
    let _entered = runtime.enter();
    let listener = TcpListener::from_std(socket)
        .map_err(|source| StartError::AdminBind { address, source })?;
    tracing::info!(%address, "admin API listening: dashboard at http://{address}/");
    let mut grpc = tonic::service::Routes::new(
        lookaside::pb::lookaside_server::LookasideServer::new(lookaside::Lookaside {
            generations: view.generations.clone(),
        }),
    );
    if view.core.serves_xds() {
        grpc = grpc.add_service(xds::start(
            view.generations.clone(),
            runtime,
            draining,
            view.xds.clone(),
        ));
    }
    runtime.spawn(async move {
        let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.changed() => return,
            };
            let Ok((stream, peer)) = accepted else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let view = view.clone();
            let builder = builder.clone();
            let grpc = grpc.clone();
            // What tonic's `Request::remote_addr` reads (the xDS log names its clients).
            let connection = tonic::transport::server::TcpConnectInfo {
                local_addr: stream.local_addr().ok(),
                remote_addr: Some(peer),
            };
            tokio::spawn(async move {
                let service = service_fn(move |mut request: Request<Incoming>| {
                    let view = view.clone();
                    let mut grpc = grpc.clone();
                    let connection = connection.clone();
                    async move {
                        if is_grpc(&request) {
                            if !view.core.serves_xds() && request.uri().path().starts_with(ADS_PATH)
                            {
                                return Ok(tonic::Status::unimplemented(
                                    "xDS is off on this rpcgate ([admin] xds = false)",
                                )
                                .into_http());
                            }
                            request.extensions_mut().insert(connection);
                            return tonic::codegen::Service::call(&mut grpc, request).await;
                        }
                        Ok::<_, Infallible>(
                            answer(&view, &request).await.map(tonic::body::Body::new),
                        )
                    }
                });
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}

/// The path prefix of Envoy's ADS service.
const ADS_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/";

/// Whether a request is a gRPC call (`content-type: application/grpc…`).
fn is_grpc(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn bind_error(socket: &std::net::TcpListener, source: std::io::Error) -> StartError {
    StartError::AdminBind {
        address: socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
        source,
    }
}

/// The answer to one admin request.
async fn answer(view: &Arc<View>, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() == "/reload" {
        return reload(view, request.method()).await;
    }
    let get = request.method() == Method::GET || request.method() == Method::HEAD;
    match (request.uri().path(), get) {
        ("/healthz", true) => text(StatusCode::OK, "ok\n"),
        ("/ready", true) if view.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready\n"),
        ("/ready", true) => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        ("/metrics", true) => match metrics::encode(view) {
            Ok(body) => with_type(StatusCode::OK, metrics::CONTENT_TYPE, body),
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics encoding failed\n",
            ),
        },
        ("/status", true) => with_type(
            StatusCode::OK,
            "application/json",
            status::render(view).to_string(),
        ),
        ("/", true) => with_type(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD),
        ("/healthz" | "/ready" | "/metrics" | "/status" | "/", false) => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
            response
                .headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; the admin API serves / /status /metrics /healthz /ready, and POST /reload\n",
        ),
    }
}

/// `POST /reload`: re-read the configuration file and swap it in; 200 with the new
/// generation as JSON, or 400 with the errors (the running configuration stays).
async fn reload(view: &Arc<View>, method: &Method) -> Response<Full<Bytes>> {
    if method != Method::POST {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
        response
            .headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
        return response;
    }
    let core = view.core.clone();
    // Reading files, binding sockets and building TLS configs block: not on the runtime.
    let result = tokio::task::spawn_blocking(move || core.reload()).await;
    match result {
        Ok(Ok(generation)) => {
            tracing::info!(generation, "POST /reload: configuration reloaded");
            with_type(
                StatusCode::OK,
                "application/json",
                serde_json::json!({ "generation": generation }).to_string(),
            )
        }
        Ok(Err(error)) => {
            log_refused(&error, "POST /reload");
            with_type(
                StatusCode::BAD_REQUEST,
                "text/plain; charset=utf-8",
                format!("{error}\nthe running configuration stays\n"),
            )
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the reload task failed\n",
        ),
    }
}

/// Logs a refused reload: each error on its own line, at error level.
pub(crate) fn log_refused(error: &ReloadError, by: &str) {
    for line in error.to_string().lines() {
        tracing::error!(
            by,
            "reload refused, the running configuration stays: {line}"
        );
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body)
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}
