//! Header rewriting, pure: what the proxy removes, appends and sets on the way to a
//! backend and back, and the request heads it builds for each upstream protocol.
//!
//! Nothing here does I/O or reads the clock except [`h2_request`], which is handed the
//! time left until the deadline. Contract §3: hop-by-hop headers are removed (`te:
//! trailers` kept), `x-forwarded-for` is appended, `x-request-id` is set when absent, a
//! client-sent `x-forwarded-client-cert` is always replaced by the verified one.

use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Uri, Version};

use crate::deadline::format_grpc_timeout;

/// Connection-specific headers that never cross a proxy (RFC 9110 §7.6.1, RFC 9113 §8.2.2).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "proxy-authenticate",
];

/// Whether a request is gRPC (`content-type: application/grpc` or `application/grpc+…`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Drops what a backend's response says about its software (`server`), as NGINX hides it
/// by default: clients learn nothing about what runs behind the proxy, and rpcgate adds
/// no `server` header of its own. A route's `response_headers` can set one.
pub(crate) fn hide_backend(headers: &mut HeaderMap) {
    headers.remove(http::header::SERVER);
}

/// Removes the hop-by-hop headers, and those the `connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(connection) = headers.get(header::CONNECTION) {
        let named: Vec<HeaderName> = connection
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Request headers towards the backend: hop-by-hop removed (`te: trailers` kept),
/// `x-forwarded-for` appended, the route's headers set.
pub(crate) fn prepare_request(
    headers: &mut HeaderMap,
    version: Version,
    peer_ip: &HeaderValue,
    route_headers: &[(HeaderName, HeaderValue)],
) {
    // HTTP/2 requests cannot carry connection-specific headers or a `te` other than
    // `trailers`: the h2 codec refuses such a request before it gets here (RFC 9113
    // §8.2.2), so only HTTP/1.x requests need the scan.
    if version != Version::HTTP_2 {
        strip_hop_by_hop(headers);
        if let Some(te) = headers.get(header::TE)
            && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
        {
            headers.remove(header::TE);
        }
    }
    // Every `x-forwarded-for` line counts (RFC 9110 §5.3: lines are one list), as
    // NGINX's `$proxy_add_x_forwarded_for`; a value that is not text is dropped. Without
    // one (the usual case) the connection's ready-made value is shared, no allocation.
    if headers.contains_key("x-forwarded-for") {
        let mut forwarded = String::new();
        for line in headers.get_all("x-forwarded-for") {
            if let Ok(text) = line.to_str() {
                forwarded.push_str(text);
                forwarded.push_str(", ");
            }
        }
        forwarded.push_str(peer_ip.to_str().unwrap_or_default());
        if let Ok(value) = HeaderValue::from_str(&forwarded) {
            headers.insert("x-forwarded-for", value);
        }
    } else {
        headers.insert("x-forwarded-for", peer_ip.clone());
    }
    set_all(headers, route_headers);
}

/// Sets each pair, replacing any header of the same name (route `request_headers` and
/// `response_headers`).
pub(crate) fn set_all(headers: &mut HeaderMap, pairs: &[(HeaderName, HeaderValue)]) {
    for (name, value) in pairs {
        headers.insert(name.clone(), value.clone());
    }
}

/// Only rpcgate may say which client certificate was verified: a client-sent
/// `x-forwarded-client-cert` is removed, and the verified one (if any) set.
pub(crate) fn set_client_cert(headers: &mut HeaderMap, verified: Option<&HeaderValue>) {
    headers.remove("x-forwarded-client-cert");
    if let Some(value) = verified {
        headers.insert("x-forwarded-client-cert", value.clone());
    }
}

/// Returns the request's `x-request-id`, setting a fresh one when absent.
pub(crate) fn ensure_request_id(headers: &mut HeaderMap) -> String {
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        return id.to_string();
    }
    let id = format!("{:032x}", fastrand::u128(..));
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert("x-request-id", value);
    }
    id
}

/// The request's `:authority`, or its `Host` header (HTTP/1.1); a refcounted clone, no copy.
pub(crate) fn request_authority(uri: &Uri, headers: &HeaderMap) -> Option<http::uri::Authority> {
    uri.authority().cloned().or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|host| http::uri::Authority::try_from(host.as_bytes()).ok())
    })
}

/// The request head towards an HTTP/2 backend. `authority` is the cluster's override or
/// the client's; without either, the endpoint's address. `time_left` is forwarded as
/// `grpc-timeout`.
pub(crate) fn h2_request(
    parts: &http::request::Parts,
    authority: Option<&http::uri::Authority>,
    endpoint_address: &str,
    tls: bool,
    time_left: Option<Duration>,
) -> Result<Request<()>, http::Error> {
    // Every piece is reused (refcounted `Bytes`), nothing is parsed again.
    let authority = match authority {
        Some(authority) => authority.clone(),
        None => endpoint_address.parse()?,
    };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(if tls {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    uri.authority = Some(authority);
    uri.path_and_query = Some(
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    let mut request = Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = Uri::from_parts(uri)?;
    *request.version_mut() = Version::HTTP_2;
    // One clone of the map (no rehashing), rather than re-inserting header by header.
    let mut headers = parts.headers.clone();
    headers.remove(header::HOST);
    if let Some(left) = time_left {
        headers.insert("grpc-timeout", format_grpc_timeout(left));
    }
    *request.headers_mut() = headers;
    Ok(request)
}

/// The request towards an HTTP/1.1 backend, with `Host` set to `authority` when given.
pub(crate) fn http1_request<B>(
    parts: &http::request::Parts,
    authority: Option<&http::uri::Authority>,
    endpoint_address: &str,
    body: B,
) -> Result<Request<B>, http::Error> {
    let uri = Uri::builder()
        .scheme("http")
        .authority(endpoint_address)
        .path_and_query(parts.uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()?;
    let mut request = Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .body(body)?;
    *request.headers_mut() = parts.headers.clone();
    if let Some(authority) = authority
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(header::HOST, value);
    }
    Ok(request)
}

/// The HTTP version as the access log writes it.
pub(crate) fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

/// A header's value as text, if it is text.
pub(crate) fn header_string(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn peer() -> HeaderValue {
        HeaderValue::from_static("10.1.2.3")
    }

    #[test]
    fn http1_requests_lose_hop_by_hop_headers_and_keep_te_trailers() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "secret"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("x-kept", "1"),
        ]);
        prepare_request(&mut headers, Version::HTTP_11, &peer(), &[]);
        for gone in ["connection", "keep-alive", "x-private", "upgrade"] {
            assert!(!headers.contains_key(gone), "{gone} kept");
        }
        assert_eq!(headers["te"], "trailers");
        assert_eq!(headers["x-kept"], "1");

        let mut gzip_te = map(&[("te", "gzip")]);
        prepare_request(&mut gzip_te, Version::HTTP_11, &peer(), &[]);
        assert!(!gzip_te.contains_key("te"));
    }

    #[test]
    fn x_forwarded_for_appends_every_line() {
        let mut fresh = HeaderMap::new();
        prepare_request(&mut fresh, Version::HTTP_2, &peer(), &[]);
        assert_eq!(fresh["x-forwarded-for"], "10.1.2.3");

        let mut forwarded = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        prepare_request(&mut forwarded, Version::HTTP_2, &peer(), &[]);
        let values: Vec<_> = forwarded.get_all("x-forwarded-for").iter().collect();
        assert_eq!(values, ["1.1.1.1, 2.2.2.2, 10.1.2.3"]);
    }

    #[test]
    fn route_headers_replace_client_ones() {
        let mut headers = map(&[("x-env", "dev"), ("x-env", "test")]);
        let route = [(
            HeaderName::from_static("x-env"),
            HeaderValue::from_static("prod"),
        )];
        prepare_request(&mut headers, Version::HTTP_2, &peer(), &route);
        let values: Vec<_> = headers.get_all("x-env").iter().collect();
        assert_eq!(values, ["prod"]);
    }

    #[test]
    fn client_sent_certificates_never_pass() {
        let mut headers = map(&[("x-forwarded-client-cert", "Hash=forged")]);
        set_client_cert(&mut headers, None);
        assert!(!headers.contains_key("x-forwarded-client-cert"));
        let mut headers = map(&[("x-forwarded-client-cert", "Hash=forged")]);
        set_client_cert(&mut headers, Some(&HeaderValue::from_static("Hash=real")));
        assert_eq!(headers["x-forwarded-client-cert"], "Hash=real");
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let mut given = map(&[("x-request-id", "abc")]);
        assert_eq!(ensure_request_id(&mut given), "abc");
        let mut none = HeaderMap::new();
        let id = ensure_request_id(&mut none);
        assert_eq!(id.len(), 32);
        assert_eq!(none["x-request-id"], id.as_str());
    }

    #[test]
    fn authority_comes_from_the_uri_or_host() {
        let uri: Uri = "http://api.example.com/a".parse().unwrap();
        assert_eq!(
            request_authority(&uri, &HeaderMap::new()).unwrap(),
            "api.example.com"
        );
        let path_only: Uri = "/a".parse().unwrap();
        let host = map(&[("host", "rest.example.com:8080")]);
        assert_eq!(
            request_authority(&path_only, &host).unwrap(),
            "rest.example.com:8080"
        );
        assert!(request_authority(&path_only, &HeaderMap::new()).is_none());
    }

    #[test]
    fn h2_heads_carry_scheme_authority_and_time_left() {
        let (parts, ()) = Request::post("/helloworld.Greeter/SayHello")
            .header("host", "client.example")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap()
            .into_parts();
        let request = h2_request(
            &parts,
            None,
            "127.0.0.1:50051",
            true,
            Some(Duration::from_millis(1500)),
        )
        .unwrap();
        assert_eq!(
            request.uri().to_string(),
            "https://127.0.0.1:50051/helloworld.Greeter/SayHello"
        );
        assert!(!request.headers().contains_key("host"));
        assert_eq!(request.headers()["grpc-timeout"], "1500000u");
        assert_eq!(request.version(), Version::HTTP_2);

        let authority: http::uri::Authority = "backend.internal".parse().unwrap();
        let request = h2_request(&parts, Some(&authority), "127.0.0.1:50051", false, None).unwrap();
        assert_eq!(
            request.uri().to_string(),
            "http://backend.internal/helloworld.Greeter/SayHello"
        );
        assert!(!request.headers().contains_key("grpc-timeout"));
    }

    #[test]
    fn http1_requests_go_to_the_endpoint_with_the_host_asked_for() {
        let (parts, ()) = Request::get("/healthcheck?x=1")
            .body(())
            .unwrap()
            .into_parts();
        let authority: http::uri::Authority = "rest.example.com".parse().unwrap();
        let request = http1_request(&parts, Some(&authority), "127.0.0.1:8081", ()).unwrap();
        assert_eq!(
            request.uri().to_string(),
            "http://127.0.0.1:8081/healthcheck?x=1"
        );
        assert_eq!(request.headers()["host"], "rest.example.com");
    }

    #[test]
    fn grpc_is_told_by_content_type() {
        assert!(is_grpc(&map(&[("content-type", "application/grpc")])));
        assert!(is_grpc(&map(&[("content-type", "application/grpc+proto")])));
        assert!(!is_grpc(&map(&[("content-type", "application/json")])));
        assert!(!is_grpc(&HeaderMap::new()));
    }
}
