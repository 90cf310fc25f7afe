//! gRPC framing checks on the client's request body, before a backend is bothered.
//!
//! A gRPC body is a sequence of length-prefixed messages: one flag byte (0 plain, 1
//! compressed), a 4-byte big-endian length, then that many bytes (gRPC's
//! PROTOCOL-HTTP2). [`FrameReader`] follows the prefixes across DATA frames of any size,
//! keeping nothing but its position, and refuses what a gRPC server would refuse:
//!
//! - a message longer than the route's `max_message_bytes` → RESOURCE_EXHAUSTED (gRPC's
//!   own receive limit; checked on the wire size, so a compressed message counts as sent);
//! - the compressed flag on a call without `grpc-encoding` (or with `identity`), or a flag
//!   other than 0 and 1 → INTERNAL;
//! - a body that ends inside a message (the length prefix promised more) → INTERNAL.
//!
//! `CheckedBody` applies the reader to a request body: the first offending chunk is
//! never forwarded; the body yields a [`FramingError`] instead. Before any backend is
//! asked, the call reads what the client has sent already
//! (`RequestBody::read_ahead`): a unary
//! call's message usually came with its headers, so it is refused with no upstream stream
//! at all. Later in a stream, the attempt turns the error into that status for the client
//! and a reset (CANCEL) of the upstream stream. Other streams of the client's connection
//! are untouched.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, RequestBodyBox};

/// Why a request body broke gRPC's framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramingError {
    /// A message's length prefix is over the limit.
    TooLarge {
        /// The length the prefix announced.
        length: u32,
        /// The route's `max_message_bytes`.
        limit: u32,
    },
    /// The compressed flag is set but the call names no `grpc-encoding`.
    CompressedWithoutEncoding,
    /// The flag byte is neither 0 nor 1.
    BadFlag(u8),
    /// The body ended inside a message.
    Truncated {
        /// What the prefix promised (5 bytes of prefix, or the message's length).
        expected: u32,
        /// What came of it.
        got: u32,
    },
}

impl FramingError {
    /// Whether this is the size limit (RESOURCE_EXHAUSTED) rather than broken framing
    /// (INTERNAL).
    pub fn is_too_large(&self) -> bool {
        matches!(self, FramingError::TooLarge { .. })
    }
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FramingError::TooLarge { length, limit } => write!(
                f,
                "a request message of {length} bytes is larger than max_message_bytes ({limit})"
            ),
            FramingError::CompressedWithoutEncoding => f.write_str(
                "a request message is marked compressed but the call has no grpc-encoding",
            ),
            FramingError::BadFlag(flag) => write!(
                f,
                "a request message has the invalid compressed flag {flag} (only 0 and 1 exist)"
            ),
            FramingError::Truncated { expected, got } => write!(
                f,
                "the request ended inside a gRPC message: {got} of {expected} bytes came"
            ),
        }
    }
}

impl std::error::Error for FramingError {}

/// Where the reader is in the message sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Reading the 5-byte prefix; `have` bytes of it so far.
    Prefix { have: u8 },
    /// Inside a message's bytes; `left` of `length` to go.
    Message { length: u32, left: u32 },
}

/// Follows gRPC length prefixes through a byte stream fed in chunks of any size.
#[derive(Debug, Clone)]
pub struct FrameReader {
    limit: u32,
    compression_allowed: bool,
    position: Position,
    prefix: [u8; 5],
}

impl FrameReader {
    /// A reader for a call whose messages may be `limit` bytes at most, and may be
    /// compressed when the call names a `grpc-encoding` other than `identity`.
    pub fn new(limit: u32, compression_allowed: bool) -> Self {
        Self {
            limit,
            compression_allowed,
            position: Position::Prefix { have: 0 },
            prefix: [0; 5],
        }
    }

    /// Reads the next chunk of the body.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), FramingError> {
        while !chunk.is_empty() {
            match self.position {
                Position::Prefix { have } => {
                    let have = usize::from(have);
                    let take = (5 - have).min(chunk.len());
                    self.prefix[have..have + take].copy_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    let have = have + take;
                    if have < 5 {
                        // `have` is below 5 here.
                        self.position = Position::Prefix { have: have as u8 };
                        continue;
                    }
                    let [flag, a, b, c, d] = self.prefix;
                    match flag {
                        0 => {}
                        1 if self.compression_allowed => {}
                        1 => return Err(FramingError::CompressedWithoutEncoding),
                        other => return Err(FramingError::BadFlag(other)),
                    }
                    let length = u32::from_be_bytes([a, b, c, d]);
                    if length > self.limit {
                        return Err(FramingError::TooLarge {
                            length,
                            limit: self.limit,
                        });
                    }
                    self.position = if length == 0 {
                        Position::Prefix { have: 0 }
                    } else {
                        Position::Message {
                            length,
                            left: length,
                        }
                    };
                }
                Position::Message { length, left } => {
                    let take = u32::try_from(chunk.len()).unwrap_or(u32::MAX).min(left);
                    chunk = &chunk[take as usize..];
                    self.position = if take == left {
                        Position::Prefix { have: 0 }
                    } else {
                        Position::Message {
                            length,
                            left: left - take,
                        }
                    };
                }
            }
        }
        Ok(())
    }

    /// The body is over: it must not end inside a message.
    pub fn finish(&self) -> Result<(), FramingError> {
        match self.position {
            Position::Prefix { have: 0 } => Ok(()),
            Position::Prefix { have } => Err(FramingError::Truncated {
                expected: 5,
                got: u32::from(have),
            }),
            Position::Message { length, left } => Err(FramingError::Truncated {
                expected: length,
                got: length - left,
            }),
        }
    }
}

/// Whether a call's `grpc-encoding` lets its messages be compressed.
pub(crate) fn compression_allowed(headers: &http::HeaderMap) -> bool {
    headers
        .get("grpc-encoding")
        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// A request body checked by a [`FrameReader`] as it streams.
pub(crate) struct CheckedBody {
    inner: RequestBodyBox,
    reader: FrameReader,
    failed: bool,
}

impl CheckedBody {
    /// Wraps `inner`, boxed again so the rest of the call sees the same type.
    pub(crate) fn wrap(inner: RequestBodyBox, reader: FrameReader) -> RequestBodyBox {
        RequestBodyBox::new(Self {
            inner,
            reader,
            failed: false,
        })
    }

    fn fail(&mut self, error: FramingError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.failed = true;
        Poll::Ready(Some(Err(Box::new(error))))
    }
}

impl Body for CheckedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref()
                    && let Err(error) = this.reader.feed(data)
                {
                    return this.fail(error);
                }
                if frame.is_trailers()
                    && let Err(error) = this.reader.finish()
                {
                    return this.fail(error);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => Poll::Ready(Some(Err(error))),
            None => match this.reader.finish() {
                Ok(()) => Poll::Ready(None),
                Err(error) => this.fail(error),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        // An empty body is framed correctly (no message at all).
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(flag: u8, len: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend(len.to_be_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn well_framed_messages_pass_in_chunks_of_any_size() {
        let mut stream = message(0, 3, b"abc");
        stream.extend(message(0, 0, b""));
        stream.extend(message(1, 2, b"zz"));
        for size in 1..=stream.len() {
            let mut reader = FrameReader::new(3, true);
            for chunk in stream.chunks(size) {
                reader.feed(chunk).unwrap();
            }
            reader.finish().unwrap();
        }
    }

    #[test]
    fn each_violation_is_named() {
        let mut reader = FrameReader::new(3, false);
        assert_eq!(
            reader.feed(&message(0, 4, b"")),
            Err(FramingError::TooLarge {
                length: 4,
                limit: 3
            })
        );
        let mut reader = FrameReader::new(3, false);
        assert_eq!(
            reader.feed(&message(1, 1, b"x")),
            Err(FramingError::CompressedWithoutEncoding)
        );
        let mut reader = FrameReader::new(3, true);
        assert_eq!(
            reader.feed(&message(2, 1, b"x")),
            Err(FramingError::BadFlag(2))
        );
        let mut reader = FrameReader::new(10, false);
        reader.feed(&message(0, 5, b"ab")).unwrap();
        assert_eq!(
            reader.finish(),
            Err(FramingError::Truncated {
                expected: 5,
                got: 2
            })
        );
        let mut reader = FrameReader::new(10, false);
        reader.feed(&[0, 0]).unwrap();
        assert_eq!(
            reader.finish(),
            Err(FramingError::Truncated {
                expected: 5,
                got: 2
            })
        );
    }

    #[test]
    fn identity_is_no_compression() {
        let mut headers = http::HeaderMap::new();
        assert!(!compression_allowed(&headers));
        headers.insert("grpc-encoding", http::HeaderValue::from_static("identity"));
        assert!(!compression_allowed(&headers));
        headers.insert("grpc-encoding", http::HeaderValue::from_static("gzip"));
        assert!(compression_allowed(&headers));
    }
}
