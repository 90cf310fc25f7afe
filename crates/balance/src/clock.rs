//! Time helpers.
//!
//! Time comes from `tokio::time::Instant` so tests can drive ejections and EWMA decay with
//! tokio's paused clock. Instants are stored in atomics as nanoseconds since a
//! per-endpoint epoch (the instant the endpoint was created): a per-endpoint epoch rather
//! than a process-wide one because each paused test runtime has its own clock, and an
//! epoch taken from another runtime could lie in this one's future.

use tokio::time::Instant;

/// Nanoseconds from `epoch` to `now`, 0 if `now` is earlier, saturating at `u64::MAX`
/// (584 years).
pub(crate) fn nanos_since(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}
