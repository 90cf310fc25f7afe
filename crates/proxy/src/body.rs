//! The body types at the proxy's two boundaries.
//!
//! - [`ProxyBody`]: every response body rpcgate sends to a client — nothing, one chunk of
//!   its own making, or a stream from a backend (the `response_body` module). Streams are
//!   boxed behind the `Body` trait so that this module depends on no other: the response
//!   writer ([`crate::status`]) and the streaming bodies both build on it.
//! - [`RequestBodyBox`]: the client's request body, boxed where a call enters the forward
//!   path (`call::forward`), so that other front ends (gRPC-Web, and later the client
//!   library) can hand their own bodies to the same attempt logic.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;

/// Errors a body can end with (boxed, as hyper wants).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's request body as the attempt logic reads it.
pub type RequestBodyBox = UnsyncBoxBody<Bytes, BoxError>;

/// A response body streaming from a backend (see the `response_body` module).
pub(crate) type StreamingBody = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>;

/// Every response body rpcgate sends.
pub struct ProxyBody {
    kind: Kind,
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Full(_) => "full",
            Kind::Stream(_) => "stream",
        };
        f.debug_struct("ProxyBody").field("kind", &kind).finish()
    }
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Stream(StreamingBody),
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

    /// A body streaming from a backend.
    pub(crate) fn stream(body: impl Body<Data = Bytes, Error = BoxError> + Send + 'static) -> Self {
        Self {
            kind: Kind::Stream(Box::pin(body)),
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
            Kind::Stream(body) => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(body) => body.size_hint(),
        }
    }
}
