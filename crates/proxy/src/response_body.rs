//! Response bodies streaming from a backend to the client, and where a streamed call ends.
//!
//! A forwarded gRPC response streams from the backend's `h2::RecvStream` frame by frame:
//! a chunk is handed on (and its flow-control capacity released to the backend) only
//! when the client side has room, so a slow reader slows the backend and nothing buffers
//! a whole stream. The body is also where such a call *ends*: it reads the final
//! `grpc-status` from the trailers and hands the verdict to [`CallEnd`]; a stream broken
//! mid-call or a passed deadline becomes a proper gRPC status in the trailers (written by
//! [`crate::status`]) instead of a bare reset.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame};
use tokio::time::Sleep;

use crate::body::BoxError;
use crate::call_end::CallEnd;
use crate::hold::Held;
use crate::status;
use crate::upstream::StreamSlot;
use crate::verdict::{Cause, Code, Verdict, grpc_status};

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
    /// The frame read while the response head was held (retries), yielded first.
    first: Option<Box<Held>>,
    state: State,
    /// The response head's status, for the verdict.
    http_status: StatusCode,
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
        http_status: StatusCode,
        first: Option<Box<Held>>,
        deadline: Option<Pin<Box<Sleep>>>,
        end: CallEnd,
        slot: StreamSlot,
    ) -> Self {
        Self {
            recv: Some(recv),
            first,
            state: State::Data,
            http_status,
            deadline,
            end: Some(end),
            slot: Some(slot),
            bytes_out: 0,
        }
    }

    fn grpc(&self) -> bool {
        self.end.as_ref().is_some_and(|end| end.grpc)
    }

    /// Ends the call with a status of the proxy's making: trailers for gRPC, an error
    /// (stream reset) for plain HTTP.
    fn cut(&mut self, cause: Cause) -> Option<Result<Frame<Bytes>, BoxError>> {
        // Dropping the receive side tells the backend (RST_STREAM CANCEL) to stop.
        self.recv = None;
        // The stream broke because the client's body was refused: say so, not "reset".
        let cause = match (cause, self.end.as_ref().and_then(CallEnd::client_fault)) {
            (Cause::BrokenMidStream(_), Some(fault)) => Cause::BadMessage(fault),
            (cause, _) => cause,
        };
        let grpc = self.grpc();
        let verdict = Verdict::new(cause);
        let (verdict, message) = match &self.end {
            Some(end) => {
                let verdict = end.shutdown_aware(verdict);
                let message = end.client_message(&verdict);
                (verdict, message)
            }
            None => {
                let message = verdict.cause.to_string();
                (verdict, message)
            }
        };
        let code = verdict.code.unwrap_or(Code::UNKNOWN);
        self.finish(verdict);
        if grpc {
            Some(Ok(Frame::trailers(status::trailers(code, &message))))
        } else {
            Some(Err(message.into()))
        }
    }

    /// Yields the frame read while the head was held.
    fn held(&mut self, first: Held) -> Option<Result<Frame<Bytes>, BoxError>> {
        match first {
            Held::Data(bytes) => {
                if let Some(recv) = self.recv.as_mut() {
                    let _ = recv.flow_control().release_capacity(bytes.len());
                }
                self.bytes_out += bytes.len() as u64;
                Some(Ok(Frame::data(bytes)))
            }
            Held::Trailers(trailers) => {
                self.finish(Verdict::completed(grpc_status(&trailers), self.http_status));
                Some(Ok(Frame::trailers(trailers)))
            }
            Held::End => {
                self.finish(Verdict::completed(None, self.http_status));
                None
            }
            Held::Broken(error) => self.cut(Cause::BrokenMidStream(error)),
        }
    }

    fn finish(&mut self, verdict: Verdict) {
        self.state = State::Done;
        self.slot = None;
        self.deadline = None;
        if let Some(end) = self.end.take() {
            end.finish(verdict, self.bytes_out);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.state == State::Done {
            return Poll::Ready(None);
        }
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(this.cut(Cause::DeadlineMidStream));
        }
        if let Some(first) = this.first.take() {
            return Poll::Ready(this.held(*first));
        }
        let Some(recv) = this.recv.as_mut() else {
            return Poll::Ready(None);
        };
        if this.state == State::Data {
            match ready!(recv.poll_data(cx)) {
                Some(Ok(bytes)) => {
                    let _ = recv.flow_control().release_capacity(bytes.len());
                    this.bytes_out += bytes.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Some(Err(error)) => return Poll::Ready(this.cut(Cause::BrokenMidStream(error))),
                None => this.state = State::Trailers,
            }
        }
        match ready!(recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => {
                let verdict = Verdict::completed(grpc_status(&trailers), this.http_status);
                this.finish(verdict);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Ok(None) => {
                this.finish(Verdict::completed(None, this.http_status));
                Poll::Ready(None)
            }
            Err(error) => Poll::Ready(this.cut(Cause::BrokenMidStream(error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // The client went away (or the server dropped us) before the end: a cancel.
        if let Some(end) = self.end.take() {
            end.finish(Verdict::new(Cause::ClientGone), self.bytes_out);
        }
    }
}

impl Drop for Http1Body {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            // Dropped at its end (an empty body is never polled): the call completed;
            // else the client went away mid-body.
            let verdict = if self.inner.is_end_stream() {
                Verdict::completed(None, self.http_status)
            } else {
                Verdict::new(Cause::ClientGone)
            };
            end.finish(verdict, self.bytes_out);
        }
    }
}

/// A response streaming from an HTTP/1.1 backend.
#[derive(Debug)]
pub(crate) struct Http1Body {
    inner: hyper::body::Incoming,
    http_status: StatusCode,
    end: Option<CallEnd>,
    bytes_out: u64,
}

impl Http1Body {
    /// Wraps an HTTP/1.1 response body; `end` is told when it is over.
    pub(crate) fn new(inner: hyper::body::Incoming, http_status: StatusCode, end: CallEnd) -> Self {
        Self {
            inner,
            http_status,
            end: Some(end),
            bytes_out: 0,
        }
    }
}

impl Body for Http1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            None => {
                if let Some(end) = this.end.take() {
                    end.finish(Verdict::completed(None, this.http_status), this.bytes_out);
                }
                Poll::Ready(None)
            }
            Some(Err(error)) => {
                let message = error.to_string();
                if let Some(end) = this.end.take() {
                    end.finish(Verdict::new(Cause::Http1BodyFailed(error)), this.bytes_out);
                }
                Poll::Ready(Some(Err(message.into())))
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes_out += data.len() as u64;
                }
                // A body of known length ends with its last frame: hyper sees
                // `is_end_stream` and never polls again, so the call ends here.
                if this.inner.is_end_stream()
                    && let Some(end) = this.end.take()
                {
                    end.finish(Verdict::completed(None, this.http_status), this.bytes_out);
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
