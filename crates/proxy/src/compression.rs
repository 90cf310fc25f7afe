//! `compression = true` on a listener: gzip for compressible non-gRPC responses, as
//! NGINX's `gzip on` with `gzip_types` for text, JSON, JavaScript, XML and SVG.
//!
//! A response is compressed when all of these hold: the request's `accept-encoding`
//! takes gzip (q > 0, or `*`); the request is not HEAD; the response is not gRPC
//! (`application/grpc*` is never touched — gRPC has its own per-message compression); its
//! type is compressible; it carries no `content-encoding` (already encoded bodies stay as
//! they are) and no `cache-control: no-transform`; it is not a 204, 206 or 304; and its
//! `content-length`, when known, is at least [`MIN_LENGTH`].
//!
//! The body is compressed as it streams: each chunk from the backend goes through the
//! encoder and what it produced goes out at once (a sync flush per chunk), so a long or
//! endless response (server-sent events) is never held back or buffered whole. The
//! response gets `content-encoding: gzip` and `vary: accept-encoding`, loses its
//! `content-length`, and a strong `etag` becomes weak (the bytes differ), as NGINX does.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body::{Body, Frame};

use crate::body::{BoxError, ProxyBody};

/// Responses shorter than this are sent as they are (NGINX's `gzip_min_length` is 20;
/// below a few hundred bytes gzip's header and dictionary-less start gain nothing).
pub const MIN_LENGTH: u64 = 256;

/// gzip level 6 (NGINX uses 1; 6 is zlib's default and a better ratio for JSON at a
/// cost that stays small next to the proxying itself).
const LEVEL: u32 = 6;

/// Whether the client takes gzip, from its `accept-encoding`.
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT_ENCODING).iter().any(|value| {
        value.to_str().is_ok_and(|list| {
            list.split(',').any(|item| {
                let mut parts = item.split(';');
                let coding = parts.next().unwrap_or("").trim();
                let wanted = coding.eq_ignore_ascii_case("gzip") || coding == "*";
                wanted && parts.all(|p| !is_q_zero(p))
            })
        })
    })
}

/// `q=0` (or `q=0.0…`): the coding is refused.
fn is_q_zero(param: &str) -> bool {
    let Some((name, value)) = param.split_once('=') else {
        return false;
    };
    name.trim().eq_ignore_ascii_case("q") && value.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
}

/// Whether a response of this type is worth compressing.
fn compressible(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence.starts_with("application/grpc") {
        return false;
    }
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/javascript"
                | "application/x-javascript"
                | "application/xml"
                | "application/xhtml+xml"
                | "application/wasm"
                | "image/svg+xml"
                | "application/x-ndjson"
        )
}

/// Gzips `response` when it and the request (`method`, `request_headers`) fit the rules
/// of the module docs; else returns it unchanged.
pub(crate) fn gzip_if_fitting(
    method: &Method,
    request_headers: &HeaderMap,
    response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    if !compressible_response(method, &response) {
        return response;
    }
    let (mut head, body) = response.into_parts();
    if !accepts_gzip(request_headers) {
        // The same URL is gzipped for other clients: caches must keep them apart.
        head.headers
            .append(VARY, HeaderValue::from_static("accept-encoding"));
        return Response::from_parts(head, body);
    }
    let headers = &mut head.headers;
    headers.remove(CONTENT_LENGTH);
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    headers.append(VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(etag) = headers.get(ETAG)
        && etag.as_bytes().starts_with(b"\"")
        && let Ok(weak) = HeaderValue::from_bytes(&[b"W/", etag.as_bytes()].concat())
    {
        headers.insert(ETAG, weak);
    }
    Response::from_parts(head, ProxyBody::stream(GzipBody::new(body)))
}

/// Whether the response side of the rules holds (everything but `accept-encoding`).
fn compressible_response(method: &Method, response: &Response<ProxyBody>) -> bool {
    let headers = response.headers();
    let status = response.status();
    if method == Method::HEAD
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
        || headers.contains_key(CONTENT_ENCODING)
        || response.body().is_end_stream()
    {
        return false;
    }
    let typed = headers
        .get(CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .is_some_and(compressible);
    let no_transform = headers.get_all(CACHE_CONTROL).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("no-transform"))
    });
    let long_enough = match headers.get(CONTENT_LENGTH).and_then(|l| l.to_str().ok()) {
        Some(length) => length.parse::<u64>().is_ok_and(|n| n >= MIN_LENGTH),
        None => response
            .body()
            .size_hint()
            .exact()
            .is_none_or(|n| n >= MIN_LENGTH),
    };
    typed && !no_transform && long_enough
}

/// A body gzipped chunk by chunk.
struct GzipBody {
    inner: ProxyBody,
    encoder: Option<GzEncoder<Vec<u8>>>,
    /// Trailers that came after the data, sent after the gzip trailer.
    trailers: Option<HeaderMap>,
}

impl GzipBody {
    fn new(inner: ProxyBody) -> Self {
        Self {
            inner,
            encoder: Some(GzEncoder::new(Vec::new(), Compression::new(LEVEL))),
            trailers: None,
        }
    }

    /// Compresses `data` and takes what the encoder has produced so far.
    fn compress(&mut self, data: &[u8]) -> Result<Bytes, BoxError> {
        let Some(encoder) = self.encoder.as_mut() else {
            return Ok(Bytes::new());
        };
        encoder.write_all(data)?;
        encoder.flush()?;
        Ok(Bytes::from(std::mem::take(encoder.get_mut())))
    }

    /// Ends the gzip stream: the rest of the output and its trailer.
    fn finish(&mut self) -> Result<Option<Bytes>, BoxError> {
        match self.encoder.take() {
            Some(encoder) => Ok(Some(Bytes::from(encoder.finish()?))),
            None => Ok(None),
        }
    }
}

impl Body for GzipBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.encoder.is_none() {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.compress(&data)?;
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.trailers = Some(trailers);
                        }
                        if let Some(last) = this.finish()? {
                            return Poll::Ready(Some(Ok(Frame::data(last))));
                        }
                    }
                },
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => {
                    if let Some(last) = this.finish()? {
                        return Poll::Ready(Some(Ok(Frame::data(last))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Read;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn accept_encoding_is_read_as_http_says() {
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "gzip, deflate, br"
        )])));
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "br;q=1.0, GZIP;q=0.5"
        )])));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "*")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "br")])));
        assert!(!accepts_gzip(&headers(&[])));
    }

    #[test]
    fn types_are_chosen_like_gzip_types() {
        for yes in [
            "text/html",
            "application/json; charset=utf-8",
            "application/problem+json",
            "image/svg+xml",
        ] {
            assert!(compressible(yes), "{yes}");
        }
        for no in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc-web",
            "image/png",
            "application/octet-stream",
        ] {
            assert!(!compressible(no), "{no}");
        }
    }

    fn response(body: &'static str, pairs: &[(&'static str, &'static str)]) -> Response<ProxyBody> {
        let mut response = Response::new(ProxyBody::full(Bytes::from_static(body.as_bytes())));
        *response.headers_mut() = headers(pairs);
        response
    }

    #[tokio::test]
    async fn a_fitting_response_is_gzipped_and_decodes_to_the_original() {
        let text: &'static str = Box::leak("{\"hello\": \"world\"} ".repeat(40).into_boxed_str());
        let request = headers(&[("accept-encoding", "gzip")]);
        let out = gzip_if_fitting(
            &Method::GET,
            &request,
            response(
                text,
                &[("content-type", "application/json"), ("etag", "\"abc\"")],
            ),
        );
        assert_eq!(out.headers()["content-encoding"], "gzip");
        assert_eq!(out.headers()["vary"], "accept-encoding");
        assert_eq!(out.headers()["etag"], "W/\"abc\"");
        let bytes = out.into_body().collect().await.unwrap().to_bytes();
        assert!(bytes.len() < text.len());
        let mut decoded = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut decoded)
            .unwrap();
        assert_eq!(decoded, text);
    }

    #[test]
    fn a_client_without_gzip_gets_the_plain_body_and_vary() {
        let long: &'static str = Box::leak("x".repeat(300).into_boxed_str());
        let out = gzip_if_fitting(
            &Method::GET,
            &headers(&[("accept-encoding", "br")]),
            response(long, &[("content-type", "text/plain")]),
        );
        assert!(!out.headers().contains_key("content-encoding"));
        assert_eq!(out.headers()["vary"], "accept-encoding");
    }

    #[test]
    fn small_encoded_grpc_and_head_responses_are_left_alone() {
        let request = headers(&[("accept-encoding", "gzip")]);
        let long: &'static str = Box::leak("x".repeat(300).into_boxed_str());
        let cases = [
            (
                Method::GET,
                response("short", &[("content-type", "text/plain")]),
            ),
            (
                Method::GET,
                response(long, &[("content-type", "application/grpc")]),
            ),
            (
                Method::GET,
                response(
                    long,
                    &[("content-type", "text/plain"), ("content-encoding", "br")],
                ),
            ),
            (
                Method::GET,
                response(
                    long,
                    &[
                        ("content-type", "text/plain"),
                        ("cache-control", "no-transform"),
                    ],
                ),
            ),
            (
                Method::GET,
                response(long, &[("content-type", "image/png")]),
            ),
            (
                Method::HEAD,
                response(long, &[("content-type", "text/plain")]),
            ),
        ];
        for (method, case) in cases {
            let out = gzip_if_fitting(&method, &request, case);
            assert_ne!(
                out.headers().get("content-encoding").map(|v| v.as_bytes()),
                Some(&b"gzip"[..])
            );
        }
    }
}
