//! The response-head hold: while a call may still be retried, its response head is held
//! until the first message or the end of the stream (contract §4, "trailer-aware"), so a
//! call that fails before sending any message — trailers-only, trailers or a reset before
//! the first message — can still be sent again. A streaming response is never delayed
//! past its first message: that message is held with the head and goes out with it.
//!
//! Only attempts of a route with a retry policy hold ([`crate::retry`]); others pass the
//! head at once and pay nothing.

use bytes::Bytes;
use http::Response;

use crate::verdict::{Cause, Verdict, grpc_status};

/// What came after a held response head.
#[derive(Debug)]
pub(crate) enum Held {
    /// The first message's bytes: the response goes to the client.
    Data(Bytes),
    /// Trailers before any message.
    Trailers(http::HeaderMap),
    /// The end of the stream, without trailers.
    End,
    /// The stream broke before any message.
    Broken(::h2::Error),
}

/// Holds a response head while a retry is still possible: reads up to the first message or
/// the end of the stream, so a call that fails before sending any message can still be
/// retried. `None` when the head ended the stream (trailers-only).
pub(crate) async fn hold(recv: &mut h2::RecvStream) -> Option<Box<Held>> {
    if recv.is_end_stream() {
        return None;
    }
    // Boxed: the answers and bodies of calls that do not hold stay small.
    Some(Box::new(
        match std::future::poll_fn(|cx| recv.poll_data(cx)).await {
            Some(Ok(bytes)) => Held::Data(bytes),
            Some(Err(error)) => Held::Broken(error),
            None => match std::future::poll_fn(|cx| recv.poll_trailers(cx)).await {
                Ok(Some(trailers)) => Held::Trailers(trailers),
                Ok(None) => Held::End,
                Err(error) => Held::Broken(error),
            },
        },
    ))
}

/// How a held answer ended, if it ended before anything could go to the client (a
/// trailers-only response, trailers or a reset before the first message, a non-gRPC HTTP
/// error): what a retry policy decides on. A broken stream's error is taken out of
/// `first`, so the caller answers the client from the verdict if it does not retry.
pub(crate) fn ended(
    head: &Response<h2::RecvStream>,
    first: &mut Option<Box<Held>>,
    grpc: bool,
) -> Option<Verdict> {
    if grpc && head.status() != http::StatusCode::OK && !head.headers().contains_key("grpc-status")
    {
        return Some(Verdict::new(Cause::UpstreamHttpError(head.status())));
    }
    match first.as_deref() {
        None if head.body().is_end_stream() => Some(Verdict::completed(
            grpc_status(head.headers()),
            head.status(),
        )),
        None | Some(Held::Data(_)) => None,
        Some(Held::Trailers(trailers)) => {
            Some(Verdict::completed(grpc_status(trailers), head.status()))
        }
        Some(Held::End) => Some(Verdict::completed(None, head.status())),
        Some(Held::Broken(_)) => match first.take().map(|held| *held) {
            Some(Held::Broken(error)) => Some(Verdict::new(Cause::BrokenMidStream(error))),
            _ => None,
        },
    }
}
