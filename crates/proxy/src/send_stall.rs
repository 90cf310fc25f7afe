//! `send_timeout`: a client that stops taking its responses loses its connection.
//!
//! A client that stops reading its socket, or keeps its HTTP/2 flow-control window shut,
//! holds every response it does not take — and through them the backend streams they
//! come from, which the proxy reads only as fast as the client takes bytes. NGINX cuts
//! such a client after `send_timeout`; Envoy's `stream_idle_timeout` covers the same.
//!
//! How it is seen: hyper asks a response body for its next frame only once it could send
//! the last one. So a body that has handed out a data frame and not been asked again is
//! *waiting on the client*. [`SendWatch`] counts the connection's waiting bodies and
//! every time one of them is asked again (the client took bytes: progress).
//! [`StallCheck`], ticked by the connection's task every quarter of `send_timeout`,
//! closes the connection when bodies were waiting and no progress was made for four
//! ticks in a row: between 1× and 1.25× `send_timeout` of no progress at all. Dropping
//! the connection drops its streams, and with them the backend streams (RST_STREAM
//! CANCEL). A slow client that takes *some* bytes is never cut: any progress resets it.
//!
//! Cost per call: an `Arc` clone, and one relaxed atomic add per data frame each way.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};

/// Ticks in a row without progress (while bodies wait) that close the connection.
const STALLED_TICKS: u32 = 4;

/// One connection's response bodies, as far as waiting on the client goes.
#[derive(Debug, Default)]
pub(crate) struct SendWatch {
    /// Bodies that handed out a data frame and were not asked for the next one yet.
    waiting: AtomicUsize,
    /// Times a waiting body was asked again.
    progress: AtomicU64,
}

/// A response body that tells its connection's [`SendWatch`] when it waits on the client.
pub(crate) struct WatchedBody {
    inner: ProxyBody,
    watch: Arc<SendWatch>,
    waiting: bool,
}

impl WatchedBody {
    /// Watches `inner` for `watch`.
    pub(crate) fn new(inner: ProxyBody, watch: Arc<SendWatch>) -> Self {
        Self {
            inner,
            watch,
            waiting: false,
        }
    }

    fn resume(&mut self) {
        if self.waiting {
            self.waiting = false;
            self.watch.waiting.fetch_sub(1, Ordering::Relaxed);
            self.watch.progress.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Body for WatchedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        this.resume();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && frame.data_ref().is_some_and(|d| !d.is_empty())
        {
            // Until hyper asks again, this frame waits for the client to take it.
            this.waiting = true;
            this.watch.waiting.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        if self.waiting {
            self.watch.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The connection task's side: looks at the watch every quarter of `send_timeout`.
#[derive(Debug)]
pub(crate) struct StallCheck {
    watch: Arc<SendWatch>,
    last_progress: u64,
    stalled: u32,
    /// How often to look.
    pub(crate) interval: Duration,
}

impl StallCheck {
    /// A check of `watch` for this `send_timeout`.
    pub(crate) fn new(watch: Arc<SendWatch>, send_timeout: Duration) -> Self {
        Self {
            watch,
            last_progress: 0,
            stalled: 0,
            interval: (send_timeout / STALLED_TICKS).max(Duration::from_millis(1)),
        }
    }

    /// One look; `true` when the client has taken nothing for `send_timeout` while
    /// responses waited on it.
    pub(crate) fn tick(&mut self) -> bool {
        let waiting = self.watch.waiting.load(Ordering::Relaxed);
        let progress = self.watch.progress.load(Ordering::Relaxed);
        if waiting > 0 && progress == self.last_progress {
            self.stalled += 1;
        } else {
            self.stalled = 0;
        }
        self.last_progress = progress;
        self.stalled >= STALLED_TICKS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_waiting_body_with_no_progress_trips_after_four_ticks() {
        let watch = Arc::new(SendWatch::default());
        let mut check = StallCheck::new(watch.clone(), Duration::from_secs(60));
        assert_eq!(check.interval, Duration::from_secs(15));
        let mut body = WatchedBody::new(ProxyBody::full(Bytes::from_static(b"x")), watch.clone());
        // Nothing waits yet: no stall however long.
        for _ in 0..10 {
            assert!(!check.tick());
        }
        let frame = body.frame().await.unwrap().unwrap();
        assert!(frame.is_data());
        assert_eq!(watch.waiting.load(Ordering::Relaxed), 1);
        for _ in 0..3 {
            assert!(!check.tick());
        }
        assert!(check.tick(), "four ticks without progress");
        // Asked again (the client took the bytes): progress, not waiting.
        assert!(body.frame().await.is_none());
        assert_eq!(watch.waiting.load(Ordering::Relaxed), 0);
        assert!(!check.tick());
    }

    #[tokio::test]
    async fn progress_resets_the_count_and_drop_stops_waiting() {
        let watch = Arc::new(SendWatch::default());
        let mut check = StallCheck::new(watch.clone(), Duration::from_secs(4));
        let mut slow = WatchedBody::new(ProxyBody::full(Bytes::from_static(b"a")), watch.clone());
        let _ = slow.frame().await;
        let mut other = WatchedBody::new(ProxyBody::full(Bytes::from_static(b"b")), watch.clone());
        let _ = other.frame().await;
        for _ in 0..3 {
            assert!(!check.tick());
        }
        let _ = other.frame().await; // the client took the other stream's bytes
        assert!(!check.tick());
        drop(slow);
        assert_eq!(watch.waiting.load(Ordering::Relaxed), 0);
    }
}
