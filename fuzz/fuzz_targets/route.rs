//! Route matching on any request path, authority and header: never a panic, the same
//! answer twice, and gRPC paths split into service and method that rebuild the path.
#![no_main]

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use rpcgate_proxy::route::{RequestView, Router, grpc_service_method};

/// Routes of every match kind, in an order where earlier ones shadow nothing.
const ROUTES: &str = r#"
[[listeners]]
name = "edge"
address = "127.0.0.1:0"
[[listeners.routes]]
match.method = "helloworld.Greeter/SayHello"
cluster = "c"
[[listeners.routes]]
match.service = "techschool_pcbook.AuthService"
match.authority = "api.example.com"
cluster = "c"
[[listeners.routes]]
match.path = "/healthz"
match.grpc = false
cluster = "c"
[[listeners.routes]]
match.headers = { "x-tenant" = "blue" }
match.path_prefix = "/api/"
cluster = "c"
[[listeners.routes]]
match.path_prefix = "/"
match.grpc = true
cluster = "c"
[[clusters]]
name = "c"
endpoints = ["127.0.0.1:1"]
"#;

fn router() -> &'static (Router, usize) {
    static ROUTER: OnceLock<(Router, usize)> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let config = rpcgate_config::parse(ROUTES, "routes.toml").expect("the routes parse");
        let routes = &config.listeners[0].routes;
        (Router::new(routes), routes.len())
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // path \n authority \n x-tenant \n grpc?
    let mut parts = text.splitn(4, '\n');
    let path = parts.next().unwrap_or("");
    let authority = parts.next();
    let tenant = parts.next();
    let grpc = parts.next().is_some_and(|g| g.starts_with('1'));
    let mut headers = HeaderMap::new();
    if let Some(value) = tenant.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert(HeaderName::from_static("x-tenant"), value);
    }
    let view = RequestView {
        path,
        authority,
        headers: &headers,
        grpc,
    };
    let (router, count) = router();
    let found = router.find(&view);
    assert!(found.is_none_or(|i| i < *count));
    assert_eq!(found, router.find(&view));
    if let Some((service, method)) = grpc_service_method(path) {
        assert_eq!(format!("/{service}/{method}"), path);
    }
});
