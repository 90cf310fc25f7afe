//! Response bodies sent to clients, and the end-of-call bookkeeping they carry.
//!
//! A forwarded gRPC response streams from the backend's `h2::RecvStream` to the client
//! frame by frame: a chunk is handed on (and its flow-control capacity released to the
//! backend) only when the client side has room, so a slow reader slows the backend and
//! nothing buffers a whole stream. The body is also where a call *ends*: it reads the
//! final `grpc-status` from the trailers, tells passive health and the access log, and
//! turns a stream broken mid-call or a passed deadline into a proper gRPC status in the
//! trailers instead of a bare reset.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::forward::CallEnd;
use crate::status::{Code, percent_encode, reset_code};
use crate::upstream::StreamSlot;

/// Errors a body can end with (boxed, as hyper wants).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body rpcgate sends.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Empty,
    Full(Option<Bytes>),
    Upstream(Box<UpstreamBody>),
    Http1(Box<Http1Body>),
}

impl ProxyBody {
    /// A body with no bytes (trailers-only responses end the stream with the headers).
    pub fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    /// A body of one chunk.
    pub fn full(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full(Some(bytes)),
        }
    }

    /// A body streaming from an upstream HTTP/2 stream.
    pub(crate) fn upstream(body: UpstreamBody) -> Self {
        Self {
            kind: Kind::Upstream(Box::new(body)),
        }
    }

    /// A body streaming from an upstream HTTP/1.1 response.
    pub(crate) fn http1(body: hyper::body::Incoming, end: Option<CallEnd>) -> Self {
        Self {
            kind: Kind::Http1(Box::new(Http1Body { inner: body, end })),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => body.poll_frame(cx),
            Kind::Http1(body) => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream(body) => body.state == State::Done,
            Kind::Http1(body) => body.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(_) => SizeHint::default(),
            Kind::Http1(body) => body.inner.size_hint(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    Trailers,
    Done,
}

/// A response streaming from a backend's HTTP/2 stream.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    recv: Option<h2::RecvStream>,
    state: State,
    grpc: bool,
    deadline: Option<Pin<Box<Sleep>>>,
    end: Option<CallEnd>,
    /// Holds the connection's stream slot until the stream is over.
    slot: Option<StreamSlot>,
    bytes_out: u64,
}

impl UpstreamBody {
    /// Wraps an upstream stream; `end` is told how the call finished.
    pub(crate) fn new(
        recv: h2::RecvStream,
        grpc: bool,
        deadline: Option<Pin<Box<Sleep>>>,
        end: CallEnd,
        slot: StreamSlot,
    ) -> Self {
        Self {
            recv: Some(recv),
            state: State::Data,
            grpc,
            deadline,
            end: Some(end),
            slot: Some(slot),
            bytes_out: 0,
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.state == State::Done {
            return Poll::Ready(None);
        }
        if let Some(deadline) = &mut self.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(self.fail(
                Code::DeadlineExceeded,
                "deadline exceeded while the backend was still answering",
            ));
        }
        let Some(recv) = self.recv.as_mut() else {
            return Poll::Ready(None);
        };
        if self.state == State::Data {
            match ready!(recv.poll_data(cx)) {
                Some(Ok(bytes)) => {
                    let _ = recv.flow_control().release_capacity(bytes.len());
                    self.bytes_out += bytes.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Some(Err(error)) => return Poll::Ready(self.broken(error)),
                None => self.state = State::Trailers,
            }
        }
        match ready!(recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => {
                let status = grpc_status(&trailers);
                self.finish(status, None);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Ok(None) => {
                self.finish(None, None);
                Poll::Ready(None)
            }
            Err(error) => Poll::Ready(self.broken(error)),
        }
    }

    /// The upstream stream broke mid-call.
    fn broken(&mut self, error: h2::Error) -> Option<Result<Frame<Bytes>, BoxError>> {
        let code = match error.reason() {
            Some(reason) if error.is_reset() => reset_code(reason),
            _ => Code::Unavailable,
        };
        let message = if error.is_io() || error.is_go_away() {
            format!("backend connection lost mid-call: {error}")
        } else {
            format!("backend reset the stream mid-call: {error}")
        };
        self.fail(code, &message)
    }

    /// Ends the call with a status of the proxy's making: trailers for gRPC, an error
    /// (stream reset) for plain HTTP.
    fn fail(&mut self, code: Code, message: &str) -> Option<Result<Frame<Bytes>, BoxError>> {
        // Dropping the receive side tells the backend (RST_STREAM CANCEL) to stop.
        self.recv = None;
        self.finish(Some(code.as_u8().into()), Some(message));
        if self.grpc {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from(u16::from(code.as_u8())));
            if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
                trailers.insert("grpc-message", value);
            }
            Some(Ok(Frame::trailers(trailers)))
        } else {
            Some(Err(message.to_string().into()))
        }
    }

    fn finish(&mut self, grpc_status: Option<u32>, error: Option<&str>) {
        self.state = State::Done;
        self.slot = None;
        self.deadline = None;
        if let Some(end) = self.end.take() {
            end.finish(grpc_status, self.bytes_out, error);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // The client went away (or the server dropped us) before the end: a cancel.
        if let Some(end) = self.end.take() {
            end.finish(
                Some(Code::Cancelled.as_u8().into()),
                self.bytes_out,
                Some("client cancelled"),
            );
        }
    }
}

/// A response streaming from an HTTP/1.1 backend.
#[derive(Debug)]
struct Http1Body {
    inner: hyper::body::Incoming,
    end: Option<CallEnd>,
}

impl Http1Body {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => {
                if let Some(end) = self.end.take() {
                    end.finish(None, 0, None);
                }
            }
            Some(Err(error)) => {
                if let Some(end) = self.end.take() {
                    end.finish(None, 0, Some(&error.to_string()));
                }
            }
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }
}

/// Reads `grpc-status` from headers or trailers.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|s| s.trim().parse().ok())
}
