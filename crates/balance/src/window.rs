//! A lock-free rolling window of two event counters, shared by the circuit breaker
//! (requests, failures) and the retry budget (calls, retries).
//!
//! Why not a mutex: both are updated on every call, from every worker thread, so a lock
//! would be the one contended point of a cluster's hot path. Instead the window is
//! [`BUCKETS`] slots, each counting one bucket of `window / BUCKETS` (bucket number =
//! nanoseconds since the owner's epoch / bucket width). A slot remembers which bucket
//! it counts (`stamp`); the first writer that finds it holding an older bucket resets it
//! (a compare-and-swap on the stamp elects one), everyone else just `fetch_add`s. A
//! read sums the slots whose bucket lies in the window.
//!
//! An event is forgotten when its bucket leaves the window: between `window − bucket`
//! and `window` after it happened (bucket granularity, like Finagle's and Linkerd's
//! bucketed budgets).
//!
//! Races only blur bucket boundaries, they never corrupt a count (there is no
//! subtraction anywhere): an update racing the reset of a new bucket may be lost (one
//! event fewer), one racing from an old clock reading may land in the next bucket, and a
//! read skips a bucket that is being reset. With one thread the counts are exact, which
//! the tests check. All atomics are `SeqCst`: on x86 that costs nothing for loads and
//! the read-modify-writes, and stores only happen when a bucket is reset.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

/// Slots in a window (10: each bucket is a tenth of the window).
pub(crate) const BUCKETS: usize = 10;

/// `stamp` while a writer resets the slot.
const RESETTING: u64 = u64::MAX;

/// One bucket's counts.
#[derive(Debug, Default)]
struct Slot {
    /// Bucket number + 1 this slot counts; 0 = empty or cleared; `RESETTING` while reset.
    stamp: AtomicU64,
    a: AtomicU64,
    b: AtomicU64,
}

/// Two counters over a rolling window (see the module docs).
#[derive(Debug)]
pub(crate) struct RollingCounts {
    slots: [Slot; BUCKETS],
    bucket_ns: u64,
}

impl RollingCounts {
    /// A window of `window`, at least `BUCKETS` nanoseconds.
    pub(crate) fn new(window: Duration) -> Self {
        let window_ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        Self {
            slots: Default::default(),
            bucket_ns: (window_ns / BUCKETS as u64).max(1),
        }
    }

    /// The bucket number of `now_ns` and its stamp value (never 0 nor `RESETTING`).
    fn bucket(&self, now_ns: u64) -> (u64, u64) {
        let bucket = (now_ns / self.bucket_ns).min(RESETTING - 2);
        (bucket, bucket + 1)
    }

    fn slot(&self, bucket: u64) -> &Slot {
        // `bucket % BUCKETS` < BUCKETS, so the cast is lossless.
        &self.slots[(bucket % BUCKETS as u64) as usize]
    }

    /// The slot for bucket `stamp - 1`, reset first if it still counts an older bucket.
    fn current(&self, bucket: u64, stamp: u64) -> &Slot {
        let slot = self.slot(bucket);
        let mut seen = slot.stamp.load(SeqCst);
        // A newer bucket (a clock read that lagged a whole window) or one being reset
        // (almost surely to this bucket) is counted into as it is.
        while seen < stamp {
            match slot.stamp.compare_exchange(seen, RESETTING, SeqCst, SeqCst) {
                Ok(_) => {
                    slot.a.store(0, SeqCst);
                    slot.b.store(0, SeqCst);
                    slot.stamp.store(stamp, SeqCst);
                    break;
                }
                Err(now) => seen = now,
            }
        }
        slot
    }

    /// Adds `a` and `b` to the bucket of `now_ns`.
    pub(crate) fn add(&self, now_ns: u64, a: u64, b: u64) {
        let (bucket, stamp) = self.bucket(now_ns);
        let slot = self.current(bucket, stamp);
        if a > 0 {
            slot.a.fetch_add(a, SeqCst);
        }
        if b > 0 {
            slot.b.fetch_add(b, SeqCst);
        }
    }

    /// The window's totals at `now_ns`, leaving out the slot at index `skip` if any.
    fn sum_except(&self, now_ns: u64, skip: Option<usize>) -> (u64, u64) {
        let (current, _) = self.bucket(now_ns);
        let (mut a, mut b) = (0u64, 0u64);
        for (i, slot) in self.slots.iter().enumerate() {
            if skip == Some(i) {
                continue;
            }
            let stamp = slot.stamp.load(SeqCst);
            if stamp == 0 || stamp == RESETTING {
                continue;
            }
            // A bucket newer than `current` (a writer read the clock later) counts too.
            if current.saturating_sub(stamp - 1) >= BUCKETS as u64 {
                continue;
            }
            let (sa, sb) = (slot.a.load(SeqCst), slot.b.load(SeqCst));
            if slot.stamp.load(SeqCst) != stamp {
                // Reset while we read: it now counts a bucket that has barely begun.
                continue;
            }
            a = a.saturating_add(sa);
            b = b.saturating_add(sb);
        }
        (a, b)
    }

    /// The window's totals `(a, b)` at `now_ns`.
    pub(crate) fn sum(&self, now_ns: u64) -> (u64, u64) {
        self.sum_except(now_ns, None)
    }

    /// Adds 1 to `b` in the bucket of `now_ns` if `allowed(a_total, b_total)` says so for
    /// the window's totals before the add; returns whether it added. The add is a
    /// compare-and-swap on the current bucket's `b`, so concurrent callers cannot both
    /// take the last unit of an allowance (other buckets only change at a reset).
    pub(crate) fn try_add_b(&self, now_ns: u64, allowed: impl Fn(u64, u64) -> bool) -> bool {
        let (bucket, stamp) = self.bucket(now_ns);
        let slot = self.current(bucket, stamp);
        // `bucket % BUCKETS` < BUCKETS, so the cast is lossless.
        let index = (bucket % BUCKETS as u64) as usize;
        loop {
            let (others_a, others_b) = self.sum_except(now_ns, Some(index));
            let cur_b = slot.b.load(SeqCst);
            let cur_a = slot.a.load(SeqCst);
            // While the slot is reset its counts are an old bucket's: count them as 0.
            let (cur_a, cur_b_counted) = if slot.stamp.load(SeqCst) == RESETTING {
                (0, 0)
            } else {
                (cur_a, cur_b)
            };
            if !allowed(
                others_a.saturating_add(cur_a),
                others_b.saturating_add(cur_b_counted),
            ) {
                return false;
            }
            if slot
                .b
                .compare_exchange(cur_b, cur_b.saturating_add(1), SeqCst, SeqCst)
                .is_ok()
            {
                return true;
            }
        }
    }

    /// Forgets every count (a new closed period of the breaker starts from zero).
    pub(crate) fn clear(&self) {
        for slot in &self.slots {
            slot.stamp.store(0, SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn counts_within_the_window_and_forgets_older_buckets() {
        let w = RollingCounts::new(Duration::from_secs(10));
        w.add(0, 1, 1);
        w.add(S / 2, 2, 0);
        w.add(5 * S, 3, 1);
        assert_eq!(w.sum(5 * S), (6, 2));
        // Bucket 0 ([0 s, 1 s)) is still in the window through 9.999 s...
        assert_eq!(w.sum(10 * S - 1), (6, 2));
        // ...and gone once bucket 10 begins.
        assert_eq!(w.sum(10 * S), (3, 1));
        assert_eq!(w.sum(15 * S), (0, 0));
    }

    #[test]
    fn a_reused_slot_starts_from_zero() {
        let w = RollingCounts::new(Duration::from_secs(10));
        w.add(3 * S, 5, 5);
        // Same slot (bucket 13), ten seconds later.
        w.add(13 * S, 1, 0);
        assert_eq!(w.sum(13 * S), (1, 0));
    }

    #[test]
    fn a_long_idle_gap_forgets_everything() {
        let w = RollingCounts::new(Duration::from_secs(10));
        for i in 0..10 {
            w.add(i * S, 1, 1);
        }
        assert_eq!(w.sum(9 * S), (10, 10));
        assert_eq!(w.sum(1_000 * S), (0, 0));
        w.add(1_000 * S, 1, 0);
        assert_eq!(w.sum(1_000 * S), (1, 0));
    }

    #[test]
    fn clear_forgets_and_counting_resumes() {
        let w = RollingCounts::new(Duration::from_secs(10));
        w.add(S, 4, 2);
        w.clear();
        assert_eq!(w.sum(S), (0, 0));
        w.add(S, 1, 1);
        assert_eq!(w.sum(S), (1, 1));
    }

    #[test]
    fn try_add_b_respects_the_allowance() {
        let w = RollingCounts::new(Duration::from_secs(10));
        w.add(0, 4, 0);
        let at_most_half = |a: u64, b: u64| b < a / 2;
        assert!(w.try_add_b(S, at_most_half));
        assert!(w.try_add_b(2 * S, at_most_half));
        assert!(!w.try_add_b(3 * S, at_most_half));
        assert_eq!(w.sum(3 * S), (4, 2));
    }

    #[test]
    fn tiny_and_huge_windows_do_not_panic() {
        let tiny = RollingCounts::new(Duration::ZERO);
        tiny.add(u64::MAX, 1, 1);
        assert_eq!(tiny.sum(u64::MAX), (1, 1));
        let huge = RollingCounts::new(Duration::MAX);
        huge.add(u64::MAX, 1, 0);
        assert_eq!(huge.sum(0), (1, 0));
    }
}
