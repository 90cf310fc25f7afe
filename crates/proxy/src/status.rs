//! The one place where a verdict becomes bytes on the wire: a response of the proxy's own
//! making, or the trailers that end a stream the proxy had to cut.
//!
//! For a gRPC request (`content-type: application/grpc*`) an error is a *trailers-only*
//! response — HTTP 200 with `grpc-status` and a percent-encoded `grpc-message` in the
//! headers and no body — so that every gRPC client reads a real status instead of an HTML
//! 502 (what NGINX sends). Other requests get the HTTP status of the verdict (contract §3).
//! Which code and which status is decided in [`crate::verdict`], never here.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::body::ProxyBody;
use crate::verdict::{Code, Verdict};

/// The response for a call the proxy ends by itself, with `message` for the client.
pub fn respond(verdict: &Verdict, grpc: bool, message: &str) -> Response<ProxyBody> {
    if grpc {
        trailers_only(verdict.code.unwrap_or(Code::UNKNOWN), message)
    } else {
        http_error(verdict.http_status, message)
    }
}

/// The trailers that end a gRPC stream the proxy cut (the backend broke or the deadline
/// passed after the response head went out).
pub fn trailers(code: Code, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(code.0));
    set_grpc_message(&mut trailers, message);
    trailers
}

/// A trailers-only gRPC response: status and message in the headers, no body.
pub fn trailers_only(code: Code, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code.0));
    set_grpc_message(headers, message);
    response
}

/// Sets `grpc-message`, percent-encoded as the gRPC wire spec requires.
pub fn set_grpc_message(headers: &mut HeaderMap, message: &str) {
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", value);
    }
}

/// A plain-text HTTP error response for non-gRPC requests.
pub fn http_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Percent-encodes a `grpc-message` (gRPC PROTOCOL-HTTP2: bytes outside 0x20..=0x7E and `%`).
pub fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Cause;

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("a b%c\né"), "a b%25c%0A%C3%A9");
    }

    #[test]
    fn trailers_only_carries_status_in_headers() {
        let response = trailers_only(Code::UNAVAILABLE, "no backend");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "14");
        assert_eq!(response.headers()["grpc-message"], "no backend");
        assert_eq!(response.headers()["content-type"], "application/grpc");
    }

    #[test]
    fn a_verdict_becomes_grpc_or_http() {
        let verdict = Verdict::new(Cause::NoRoute {
            path: "/a.B/C".into(),
        });
        let message = verdict.cause.to_string();
        let grpc = respond(&verdict, true, &message);
        assert_eq!(grpc.status(), StatusCode::OK);
        assert_eq!(grpc.headers()["grpc-status"], "12");
        assert_eq!(grpc.headers()["grpc-message"], "no route for /a.B/C");
        let http = respond(&verdict, false, &message);
        assert_eq!(http.status(), StatusCode::NOT_FOUND);
        assert_eq!(http.headers()["content-type"], "text/plain; charset=utf-8");
    }

    #[test]
    fn cut_streams_end_with_status_trailers() {
        let trailers = trailers(Code::DEADLINE_EXCEEDED, "deadline exceeded");
        assert_eq!(trailers["grpc-status"], "4");
        assert_eq!(trailers["grpc-message"], "deadline exceeded");
    }
}
