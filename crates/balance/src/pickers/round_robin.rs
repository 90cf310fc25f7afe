//! `round_robin`: NGINX's smooth weighted round robin, made lock-free.
//!
//! NGINX runs SWRR under the upstream's lock on every pick (add each weight to a running
//! `current`, take the largest, subtract the total). The sequence it produces depends
//! only on the weights, so we run it once when the endpoint set changes and store the
//! resulting schedule (one endpoint index per slot, one full cycle). A pick is then one
//! `fetch_add` on a shared cursor and one array read. Weights are reduced by their gcd
//! first; if the cycle would still be longer than [`MAX_SCHEDULE`] slots the weights are
//! scaled down (each staying ≥ 1), which keeps the ratios to within rounding.
//!
//! Unhealthy or avoided endpoints are skipped by taking further cursor slots, which keeps
//! the other endpoints' relative shares (with 3 equal endpoints and one ejected, the other
//! two alternate). After a few slots the exact path scans the schedule instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::gcd;
use crate::Endpoint;
use crate::tier::{Env, Tier};

/// Longest cycle kept, in slots (4 bytes each). Beyond it weights are scaled down.
pub(crate) const MAX_SCHEDULE: u64 = 4096;

/// Cursor slots the fast path tries before leaving it to the exact path.
const FAST_SLOTS: usize = 4;

/// A precomputed SWRR cycle and the cursor walking it.
#[derive(Debug)]
pub(crate) struct RoundRobin {
    schedule: Box<[u32]>,
    cursor: AtomicUsize,
}

impl RoundRobin {
    pub(crate) fn new(weights: &[u32]) -> Self {
        Self {
            schedule: schedule(weights).into_boxed_slice(),
            cursor: AtomicUsize::new(0),
        }
    }

    fn next_slot(&self) -> usize {
        self.cursor.fetch_add(1, Ordering::Relaxed) % self.schedule.len()
    }

    pub(crate) fn pick(
        &self,
        endpoints: &[Arc<Endpoint>],
        env: &mut Env<'_>,
        tier: Tier,
        exact: bool,
    ) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        if !exact {
            for _ in 0..len.min(FAST_SLOTS) {
                let i = self.schedule[self.next_slot()] as usize;
                if env.eligible(&endpoints[i], tier) {
                    return Some(i);
                }
            }
            return None;
        }
        let start = self.next_slot();
        (start..len)
            .chain(0..start)
            .map(|slot| self.schedule[slot] as usize)
            .find(|&i| env.eligible(&endpoints[i], tier))
    }
}

/// One cycle of smooth weighted round robin over `weights` (0 counts as 1).
pub(crate) fn schedule(weights: &[u32]) -> Vec<u32> {
    let n = weights.len();
    if n == 0 {
        return Vec::new();
    }
    let mut w: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1))).collect();
    reduce(&mut w);
    let total: u64 = w.iter().sum();
    if total > MAX_SCHEDULE {
        for x in &mut w {
            *x = (*x * MAX_SCHEDULE / total).max(1);
        }
        reduce(&mut w);
    }
    if w.iter().all(|&x| x == 1) {
        // Endpoint indices fit in u32: a set of 4 billion endpoints is not a thing.
        return (0..n as u32).collect();
    }
    let total: u64 = w.iter().sum();
    let total_i = total as i64;
    let mut current = vec![0i64; n];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..n {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total_i;
        out.push(best as u32);
    }
    out
}

fn reduce(w: &mut [u64]) {
    let g = w.iter().fold(0, |g, &x| gcd(g, x)).max(1);
    for x in w {
        *x /= g;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_example_5_1_1() {
        // a a b a c a a, the sequence from NGINX's commit introducing smooth WRR.
        assert_eq!(schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn equal_weights_alternate_and_gcd_reduces() {
        assert_eq!(schedule(&[1, 1, 1]), vec![0, 1, 2]);
        assert_eq!(schedule(&[4, 4]), vec![0, 1]);
        assert_eq!(schedule(&[10, 5, 5]), schedule(&[2, 1, 1]));
        assert_eq!(schedule(&[0, 0]), vec![0, 1]);
        assert!(schedule(&[]).is_empty());
    }

    #[test]
    fn long_cycles_are_capped_with_ratios_kept() {
        let s = schedule(&[100_000, 50_000, 1]);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 3, "{}", s.len());
        let count = |i: u32| s.iter().filter(|&&x| x == i).count() as f64;
        assert!((count(0) / count(1) - 2.0).abs() < 0.01);
        assert_eq!(count(2), 1.0);
    }

    #[test]
    fn counts_per_cycle_equal_weights() {
        let s = schedule(&[3, 7, 2]);
        assert_eq!(s.len(), 12);
        for (i, w) in [3, 7, 2].into_iter().enumerate() {
            assert_eq!(s.iter().filter(|&&x| x as usize == i).count(), w);
        }
    }
}
