//! The client's request body on its way to the backends, with the replay buffer that
//! makes transparent retry possible.
//!
//! Every byte read from the client is kept (up to [`REPLAY_LIMIT`]) until the call has an
//! answer, so an attempt that provably never reached a backend can be sent again, from
//! the start, on another endpoint. Past the limit the kept bytes are dropped and the body
//! is no longer replayable: the attempt loop then stops retrying.
//!
//! [`RequestBody::pump_step`] is cancel-safe: the chunk being sent stays in `pending`
//! across every await, so an attempt cut short (its response head arrived first) loses
//! nothing, and [`pump_rest`] carries on from there once the head is in.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{BoxError, RequestBodyBox};
use crate::grpc_framing::FramingError;

/// Request bytes kept for replaying a call on another endpoint (contract §4: 64 KiB).
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// Why pumping the request body stopped.
pub(crate) enum PumpError {
    /// The client's side failed (reset, connection lost).
    Client(BoxError),
    /// The backend's stream is closed for sending.
    Upstream,
}

/// The client's request body, with what has been read of it kept for a replay on
/// another endpoint until it grows past [`REPLAY_LIMIT`].
#[derive(Default)]
pub(crate) struct RequestBody {
    incoming: Option<RequestBodyBox>,
    /// Data already read from the client, for replay (cleared once over the limit).
    kept: Vec<Bytes>,
    kept_bytes: usize,
    replayable: bool,
    trailers: Option<HeaderMap>,
    incoming_done: bool,
    /// Position in `kept` of the current attempt.
    cursor: usize,
    /// A chunk taken but not yet fully sent on the current attempt.
    pending: Option<Bytes>,
    sent_end: bool,
    /// Body bytes received from the client so far.
    pub(crate) bytes_in: u64,
}

impl RequestBody {
    /// Wraps the client's body; nothing is read yet.
    pub(crate) fn new(incoming: RequestBodyBox) -> Self {
        let done = incoming.is_end_stream();
        Self {
            incoming: Some(incoming),
            replayable: true,
            incoming_done: done,
            ..Default::default()
        }
    }

    /// Whether the request has no body at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.incoming_done && self.kept.is_empty() && self.trailers.is_none() && self.bytes_in == 0
    }

    /// Whether the whole body read so far is still held, so another attempt can send it.
    pub(crate) fn replayable(&self) -> bool {
        self.replayable
    }

    /// Whether the current attempt has sent the end of the body.
    pub(crate) fn done_sending(&self) -> bool {
        self.sent_end
    }

    /// The body for an HTTP/1.1 attempt, which hyper's client streams itself. The first
    /// attempt reads the body ahead, up to [`REPLAY_LIMIT`] (as NGINX buffers request
    /// bodies): a body that ends within it is sent whole and kept for another attempt; a
    /// longer one is sent as what was read followed by the rest, and is then no longer
    /// replayable. A later attempt sends the kept body again.
    pub(crate) async fn for_http1(&mut self) -> Result<RequestBodyBox, BoxError> {
        while !self.incoming_done && self.replayable && self.incoming.is_some() {
            let Some(incoming) = self.incoming.as_mut() else {
                break;
            };
            match incoming.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.bytes_in += data.len() as u64;
                        self.kept_bytes += data.len();
                        self.kept.push(data);
                        if self.kept_bytes > REPLAY_LIMIT {
                            self.replayable = false;
                        }
                    }
                }
                Some(Err(error)) => return Err(error),
                None => self.incoming_done = true,
            }
        }
        let kept: VecDeque<Bytes> = self.kept.iter().cloned().collect();
        let rest = if self.replayable {
            None
        } else {
            // Sent once: the rest streams from the client and cannot be sent again.
            self.kept.clear();
            self.incoming.take()
        };
        Ok(Prefixed { kept, rest }.boxed_unsync())
    }

    /// Reads what the client has already sent, without waiting: for a unary call usually
    /// its whole message, so the framing checks ([`crate::grpc_framing`]) can refuse it
    /// before any backend is asked. What is read is kept and sent first by the attempt.
    pub(crate) fn read_ahead(&mut self) -> Result<(), BoxError> {
        // Up to the replay limit: what is read is kept for a retry anyway.
        while !self.incoming_done && self.trailers.is_none() && self.replayable {
            let Some(incoming) = self.incoming.as_mut() else {
                return Ok(());
            };
            match incoming.frame().now_or_never() {
                None => return Ok(()),
                Some(None) => self.incoming_done = true,
                Some(Some(Err(error))) => return Err(error),
                Some(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        self.bytes_in += data.len() as u64;
                        self.kept_bytes += data.len();
                        // Kept to be sent even past the replay limit; then not replayable.
                        self.replayable = self.kept_bytes <= REPLAY_LIMIT;
                        self.kept.push(data);
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.trailers = Some(trailers);
                        }
                    }
                },
            }
        }
        Ok(())
    }

    /// Starts a new attempt from the beginning of the body.
    pub(crate) fn rewind(&mut self) {
        self.cursor = 0;
        self.pending = None;
        self.sent_end = self.is_empty();
    }

    /// Sends the next piece of the body (or its end) on `send`.
    pub(crate) async fn pump_step(
        &mut self,
        send: &mut h2::SendStream<Bytes>,
    ) -> Result<(), PumpError> {
        if self.pending.is_none() {
            if self.cursor < self.kept.len() {
                self.pending = Some(self.kept[self.cursor].clone());
                self.cursor += 1;
            } else if !self.incoming_done {
                let Some(incoming) = self.incoming.as_mut() else {
                    self.incoming_done = true;
                    return Ok(());
                };
                // While waiting on the client, notice a backend that resets the stream.
                let frame = tokio::select! {
                    biased;
                    frame = incoming.frame() => frame,
                    _ = std::future::poll_fn(|cx| send.poll_reset(cx)) => return Err(PumpError::Upstream),
                };
                match frame {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => {
                            self.bytes_in += data.len() as u64;
                            if self.replayable {
                                self.kept_bytes += data.len();
                                if self.kept_bytes > REPLAY_LIMIT {
                                    self.replayable = false;
                                    self.kept.clear();
                                } else {
                                    self.kept.push(data.clone());
                                    self.cursor = self.kept.len();
                                }
                            }
                            if !data.is_empty() {
                                self.pending = Some(data);
                            }
                        }
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                self.trailers = Some(trailers);
                            }
                        }
                    },
                    Some(Err(error)) => return Err(PumpError::Client(error)),
                    None => self.incoming_done = true,
                }
                if self.pending.is_none() && !(self.incoming_done || self.trailers.is_some()) {
                    return Ok(());
                }
            }
        }
        // The chunk stays in `self.pending` across every await, so an attempt cancelled
        // halfway (the response arrived first) loses nothing.
        if self.pending.is_some() {
            while let Some(chunk) = self.pending.as_mut() {
                if chunk.is_empty() {
                    self.pending = None;
                    break;
                }
                send.reserve_capacity(chunk.len());
                let capacity = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                    Some(Ok(n)) => n,
                    _ => return Err(PumpError::Upstream),
                };
                let Some(chunk) = self.pending.as_mut() else {
                    break;
                };
                if capacity == 0 {
                    continue;
                }
                let piece = chunk.split_to(capacity.min(chunk.len()));
                if send.send_data(piece, false).is_err() {
                    return Err(PumpError::Upstream);
                }
            }
            return Ok(());
        }
        if self.incoming_done || self.trailers.is_some() {
            let result = match self.trailers.clone() {
                Some(trailers) => send.send_trailers(trailers),
                None => send.send_data(Bytes::new(), true),
            };
            self.sent_end = true;
            result.map_err(|_| PumpError::Upstream)?;
        }
        Ok(())
    }
}

/// A request body made of chunks already read, then (maybe) the rest from the client.
struct Prefixed {
    kept: VecDeque<Bytes>,
    rest: Option<RequestBodyBox>,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.kept.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.kept.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.rest {
            None => SizeHint::with_exact(self.kept.iter().map(|c| c.len() as u64).sum()),
            Some(_) => SizeHint::default(),
        }
    }
}

/// What a pump running on its own tells the call's end: the request body bytes received
/// from the client (for the access log), and a framing error that made it stop.
pub(crate) type BytesIn = Arc<PumpState>;

/// See [`BytesIn`].
#[derive(Debug, Default)]
pub(crate) struct PumpState {
    /// Request body bytes received from the client so far.
    pub(crate) bytes: AtomicU64,
    /// Why the client's body was refused mid-stream ([`crate::grpc_framing`]).
    pub(crate) fault: OnceLock<FramingError>,
}

impl PumpState {
    /// The state of a pump that takes over after `bytes` were received.
    pub(crate) fn after(bytes: u64) -> BytesIn {
        Arc::new(Self {
            bytes: AtomicU64::new(bytes),
            fault: OnceLock::new(),
        })
    }
}

/// Streams the rest of a request body after the response head has arrived (client and
/// bidi streaming), stopping when the backend resets or ends the stream. `bytes_in`
/// follows the body's count.
pub(crate) async fn pump_rest(
    mut body: RequestBody,
    mut send: h2::SendStream<Bytes>,
    bytes_in: BytesIn,
) {
    while !body.done_sending() {
        let step = body.pump_step(&mut send).await;
        bytes_in.bytes.store(body.bytes_in, Ordering::Relaxed);
        match step {
            Ok(()) => {}
            Err(PumpError::Client(error)) => {
                if let Ok(fault) = error.downcast::<FramingError>() {
                    // Set before the reset, so the response side sees it when the
                    // backend's stream ends.
                    let _ = bytes_in.fault.set(*fault);
                }
                send.send_reset(h2::Reason::CANCEL);
                return;
            }
            Err(PumpError::Upstream) => return,
        }
    }
}
