//! The one place where an error becomes a response.
//!
//! Every failure the proxy itself detects is a [`ProxyError`]. For a gRPC request
//! (`content-type: application/grpc*`) it becomes a *trailers-only* response — HTTP 200
//! with `grpc-status` and a percent-encoded `grpc-message` in the headers and no body — so
//! that every gRPC client reads a real status instead of an HTML 502 (what NGINX sends).
//! Other requests get the HTTP status of SPEC §3. The codes follow
//! <https://grpc.github.io/grpc/core/md_doc_statuscodes.html> and gRPC's "HTTP to gRPC
//! Status Code Mapping" (`doc/http-grpc-status-mapping.md`).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::body::ProxyBody;

/// Canonical gRPC status codes that the proxy produces or maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// 0
    Ok = 0,
    /// 1: the client cancelled.
    Cancelled = 1,
    /// 2: unknown error (an unmapped HTTP status from upstream).
    Unknown = 2,
    /// 4: the call's deadline passed.
    DeadlineExceeded = 4,
    /// 7: the client address is denied.
    PermissionDenied = 7,
    /// 8: a rate limit or size limit was hit.
    ResourceExhausted = 8,
    /// 12: no route matches (or upstream 404).
    Unimplemented = 12,
    /// 13: internal error (proxy bug, upstream protocol error).
    Internal = 13,
    /// 14: no backend could take the call; the standard retryable code.
    Unavailable = 14,
    /// 16: upstream answered HTTP 401.
    Unauthenticated = 16,
}

impl Code {
    /// The numeric value sent in `grpc-status`.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// Canonical name of a gRPC status code (for logs and metrics labels).
pub fn code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// A failure detected by the proxy, with where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route of the listener matches the request.
    #[error("no route for {0}")]
    NoRoute(String),
    /// The cluster has no endpoint at all.
    #[error("cluster {0} has no endpoints")]
    NoEndpoint(String),
    /// Every attempt to connect failed (or was refused before processing).
    #[error("no backend of cluster {cluster} could take the call: {reason}")]
    Unavailable {
        /// The cluster's name.
        cluster: String,
        /// The last failure, for the message.
        reason: String,
    },
    /// The deadline (route `timeout` or client `grpc-timeout`) passed before a response.
    #[error("deadline exceeded after {0:?} waiting for the backend")]
    DeadlineExceeded(std::time::Duration),
    /// The upstream reset the stream before answering.
    #[error("backend reset the stream: {0}")]
    UpstreamReset(h2::Reason),
    /// The upstream connection broke before an answer.
    #[error("backend connection lost: {0}")]
    ConnectionLost(String),
    /// The client reset its request (or lost its connection) while it was being sent.
    #[error("the client cancelled the call: {0}")]
    ClientCancelled(String),
    /// The request could not be turned into an upstream request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A call's task panicked (a bug in rpcgate); the process keeps running.
    #[error("internal error in rpcgate while handling the call")]
    Panicked,
}

impl ProxyError {
    /// The gRPC status code of this error (SPEC §3).
    pub fn grpc_code(&self) -> Code {
        match self {
            ProxyError::NoRoute(_) => Code::Unimplemented,
            ProxyError::NoEndpoint(_) | ProxyError::Unavailable { .. } => Code::Unavailable,
            ProxyError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ProxyError::UpstreamReset(reason) => reset_code(*reason),
            ProxyError::ConnectionLost(_) => Code::Unavailable,
            ProxyError::ClientCancelled(_) => Code::Cancelled,
            ProxyError::BadRequest(_) => Code::Internal,
            ProxyError::Panicked => Code::Internal,
        }
    }

    /// The HTTP status of this error for non-gRPC requests (SPEC §3).
    pub fn http_status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute(_) => StatusCode::NOT_FOUND,
            ProxyError::NoEndpoint(_) | ProxyError::Unavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamReset(_) | ProxyError::ConnectionLost(_) => StatusCode::BAD_GATEWAY,
            // NGINX's 499 "client closed request": nobody reads it, the log does.
            ProxyError::ClientCancelled(_) => {
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Panicked => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response to send for this error.
    pub fn into_response(self, grpc: bool) -> Response<ProxyBody> {
        if grpc {
            trailers_only(self.grpc_code().as_u8().into(), &self.to_string())
        } else {
            http_error(self.http_status(), &self.to_string())
        }
    }
}

/// The gRPC code for an HTTP/2 reset seen from upstream: REFUSED_STREAM means the call
/// was not processed (retryable, 14), CANCEL is 1, anything else 13 (SPEC §3).
pub fn reset_code(reason: h2::Reason) -> Code {
    if reason == h2::Reason::REFUSED_STREAM {
        Code::Unavailable
    } else if reason == h2::Reason::CANCEL {
        Code::Cancelled
    } else {
        Code::Internal
    }
}

/// gRPC's mapping of an HTTP status without `grpc-status` to a gRPC code.
pub fn http_to_grpc(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// A trailers-only gRPC response: status and message in the headers, no body.
pub fn trailers_only(code: u32, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code));
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

    #[test]
    fn http_statuses_map_as_grpc_documents() {
        assert_eq!(http_to_grpc(StatusCode::BAD_GATEWAY), Code::Unavailable);
        assert_eq!(
            http_to_grpc(StatusCode::SERVICE_UNAVAILABLE),
            Code::Unavailable
        );
        assert_eq!(http_to_grpc(StatusCode::GATEWAY_TIMEOUT), Code::Unavailable);
        assert_eq!(
            http_to_grpc(StatusCode::TOO_MANY_REQUESTS),
            Code::Unavailable
        );
        assert_eq!(http_to_grpc(StatusCode::NOT_FOUND), Code::Unimplemented);
        assert_eq!(
            http_to_grpc(StatusCode::UNAUTHORIZED),
            Code::Unauthenticated
        );
        assert_eq!(http_to_grpc(StatusCode::FORBIDDEN), Code::PermissionDenied);
        assert_eq!(http_to_grpc(StatusCode::BAD_REQUEST), Code::Internal);
        assert_eq!(http_to_grpc(StatusCode::IM_A_TEAPOT), Code::Unknown);
    }

    #[test]
    fn resets_map_per_spec() {
        assert_eq!(reset_code(h2::Reason::REFUSED_STREAM), Code::Unavailable);
        assert_eq!(reset_code(h2::Reason::CANCEL), Code::Cancelled);
        assert_eq!(reset_code(h2::Reason::PROTOCOL_ERROR), Code::Internal);
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("a b%c\né"), "a b%25c%0A%C3%A9");
    }

    #[test]
    fn trailers_only_carries_status_in_headers() {
        let response = trailers_only(14, "no backend");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "14");
        assert_eq!(response.headers()["grpc-message"], "no backend");
        assert_eq!(response.headers()["content-type"], "application/grpc");
    }
}
