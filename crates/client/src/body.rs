//! The request body of a call, shared by its attempts so that a retry can send it again.
//!
//! The first attempt reads the caller's body and keeps a copy of each data frame, up to
//! [`REPLAY_LIMIT`] bytes; a later attempt sends the copies, then goes on reading the
//! caller's body where the previous attempt left it. Past the limit no copy is kept and
//! the call can no longer be retried — except transparently: an attempt whose body was
//! never read (its connection failed before the request went out) has sent nothing, so
//! the call goes to another endpoint whatever its size.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};

use crate::service::BoxError;

/// The most a call's body may hold and still be retried after a response (as the proxy's
/// replay buffer).
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;

/// What the attempts share.
struct Shared {
    /// The caller's body, while not all of it has been read.
    source: Option<tonic::body::Body>,
    /// Copies of the data read so far (empty once `overflowed`).
    copies: Vec<Bytes>,
    copied: usize,
    overflowed: bool,
    /// The caller's trailers, once read.
    trailers: Option<HeaderMap>,
    /// Whether any attempt read anything.
    read: bool,
    /// The attempt that may read the caller's body now (the newest).
    reader: u32,
}

/// A call's request body, for making one attempt body after another.
#[derive(Clone)]
pub(crate) struct Replay {
    shared: Arc<Mutex<Shared>>,
}

impl Replay {
    pub(crate) fn new(source: tonic::body::Body) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Shared {
                source: Some(source),
                copies: Vec::new(),
                copied: 0,
                overflowed: false,
                trailers: None,
                read: false,
                reader: 0,
            })),
        }
    }

    /// The body of attempt number `attempt` (numbers grow); earlier attempts' bodies stop
    /// reading the caller's.
    pub(crate) fn attempt(&self, attempt: u32) -> tonic::body::Body {
        if let Ok(mut shared) = self.shared.lock() {
            shared.reader = attempt;
        }
        tonic::body::Body::new(AttemptBody {
            shared: self.shared.clone(),
            attempt,
            next: 0,
            trailers_sent: false,
        })
    }

    /// Whether no attempt has read any of the body: nothing of the call went out.
    pub(crate) fn untouched(&self) -> bool {
        self.shared.lock().is_ok_and(|s| !s.read)
    }

    /// Whether another attempt could send the body again.
    pub(crate) fn replayable(&self) -> bool {
        self.shared.lock().is_ok_and(|s| !s.overflowed)
    }
}

/// One attempt's view of the body.
struct AttemptBody {
    shared: Arc<Mutex<Shared>>,
    attempt: u32,
    /// The next copy to send.
    next: usize,
    trailers_sent: bool,
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Ok(mut shared) = this.shared.lock() else {
            return Poll::Ready(Some(Err("request body lock poisoned".into())));
        };
        shared.read = true;
        if shared.overflowed && this.attempt != shared.reader {
            return Poll::Ready(Some(Err("request body too large to send again".into())));
        }
        if !shared.overflowed && this.next < shared.copies.len() {
            let data = shared.copies[this.next].clone();
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let reader = shared.reader;
        let Some(source) = shared.source.as_mut() else {
            if this.trailers_sent {
                return Poll::Ready(None);
            }
            this.trailers_sent = true;
            return Poll::Ready(shared.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        };
        if this.attempt != reader {
            return Poll::Ready(Some(Err(
                "a newer attempt took over the request body".into()
            )));
        }
        match Pin::new(source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                shared.source = None;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(status))) => Poll::Ready(Some(Err(status.into()))),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if !shared.overflowed {
                        if shared.copied + data.len() > REPLAY_LIMIT {
                            shared.overflowed = true;
                            shared.copies.clear();
                        } else {
                            shared.copied += data.len();
                            shared.copies.push(data.clone());
                            this.next += 1;
                        }
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    shared.trailers = Some(trailers.clone());
                    shared.source = None;
                    this.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests fail loudly

    use bytes::Bytes;
    use http_body_util::BodyExt as _;

    use super::*;

    fn body_of(chunks: &[&'static [u8]]) -> tonic::body::Body {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        tonic::body::Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    async fn all(body: tonic::body::Body) -> Vec<u8> {
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn a_later_attempt_sends_the_whole_body_again() {
        let replay = Replay::new(body_of(&[b"ab", b"cd"]));
        assert!(replay.untouched());
        assert_eq!(all(replay.attempt(1)).await, b"abcd");
        assert!(!replay.untouched() && replay.replayable());
        assert_eq!(all(replay.attempt(2)).await, b"abcd");
    }

    #[tokio::test]
    async fn a_later_attempt_goes_on_where_the_first_stopped() {
        let replay = Replay::new(body_of(&[b"ab", b"cd", b"ef"]));
        let mut first = replay.attempt(1);
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"ab"));
        assert_eq!(all(replay.attempt(2)).await, b"abcdef");
        // Read on, the first attempt gets the same bytes (from the copies), never a gap.
        assert_eq!(all(first).await, b"cdef");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_cannot_be_sent_again() {
        static BIG: [u8; REPLAY_LIMIT + 1] = [7; REPLAY_LIMIT + 1];
        let replay = Replay::new(body_of(&[b"x", &BIG]));
        assert_eq!(all(replay.attempt(1)).await.len(), REPLAY_LIMIT + 2);
        assert!(!replay.replayable());
    }
}
