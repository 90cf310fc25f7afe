//! The pickers: small pure functions over an immutable snapshot of the endpoint set.
//!
//! Every picker answers one question: "an index of an endpoint that satisfies this
//! [`Tier`]". Each is called twice at most per pick:
//!
//! * **fast** (`exact = false`): a bounded, optimistic attempt at the preferred tier
//!   (a few random draws, a few round-robin slots, a few ring nodes). In the healthy
//!   steady state this is the only call, and it costs a few atomic loads.
//! * **exact** (`exact = true`): after the balancer has found, in one O(n) pass, the best
//!   tier that has any member, the picker must return a member of it; it may take O(n)
//!   (or O(schedule) / O(ring)) time. This only happens while endpoints are ejected or
//!   all avoided.
//!
//! Nothing here allocates.

use std::sync::Arc;

use crate::Endpoint;
use crate::tier::{Env, Tier};

pub(crate) mod p2c;
pub(crate) mod ring_hash;
pub(crate) mod round_robin;

/// Random draws tried by the fast path before giving up on it.
const FAST_DRAWS: usize = 4;

/// Prefix sums of the endpoint weights, for weighted random draws in O(log n).
#[derive(Debug)]
pub(crate) struct Weights {
    /// `cumulative[i]` = sum of the weights of endpoints `0..=i`.
    cumulative: Box<[u64]>,
    /// All weights equal: draw uniformly without a binary search.
    uniform: bool,
}

impl Weights {
    pub(crate) fn new(weights: &[u32]) -> Self {
        let mut sum = 0u64;
        let cumulative = weights
            .iter()
            .map(|&w| {
                sum += u64::from(w.max(1));
                sum
            })
            .collect();
        let uniform = weights.windows(2).all(|p| p[0].max(1) == p[1].max(1));
        Self {
            cumulative,
            uniform,
        }
    }

    /// The weight of endpoint `i` as of this snapshot.
    pub(crate) fn of(&self, i: usize) -> u64 {
        match i {
            0 => self.cumulative[0],
            _ => self.cumulative[i] - self.cumulative[i - 1],
        }
    }

    /// A weighted random index over all endpoints. The set must not be empty.
    fn draw(&self) -> usize {
        let n = self.cumulative.len();
        if self.uniform {
            return fastrand::usize(0..n);
        }
        let total = self.cumulative[n - 1];
        let r = fastrand::u64(0..total);
        self.cumulative.partition_point(|&c| c <= r)
    }
}

/// A weighted random endpoint in `tier`, other than `exclude`.
///
/// Fast: rejection sampling over the whole set, a few times (which is exactly the weighted
/// distribution restricted to the eligible endpoints). Exact: one pass to sum the
/// eligible weights, one to find the drawn one; `None` only when nothing is eligible.
pub(crate) fn weighted(
    endpoints: &[Arc<Endpoint>],
    weights: &Weights,
    env: &mut Env<'_>,
    tier: Tier,
    exclude: Option<usize>,
    exact: bool,
) -> Option<usize> {
    if !exact {
        for _ in 0..FAST_DRAWS {
            let i = weights.draw();
            if Some(i) != exclude && env.eligible(&endpoints[i], tier) {
                return Some(i);
            }
        }
        return None;
    }
    let mut total = 0u64;
    for (i, ep) in endpoints.iter().enumerate() {
        if Some(i) != exclude && env.eligible(ep, tier) {
            total += weights.of(i);
        }
    }
    if total == 0 {
        return None;
    }
    let mut r = fastrand::u64(0..total);
    for (i, ep) in endpoints.iter().enumerate() {
        if Some(i) == exclude || !env.eligible(ep, tier) {
            continue;
        }
        let w = weights.of(i);
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}

/// Greatest common divisor, for reducing weights.
pub(crate) fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_prefix_sums() {
        let w = Weights::new(&[5, 0, 2]);
        assert_eq!(&*w.cumulative, &[5, 6, 8]);
        assert_eq!((w.of(0), w.of(1), w.of(2)), (5, 1, 2));
        assert!(!w.uniform);
        assert!(Weights::new(&[3, 3, 3]).uniform);
        assert!(Weights::new(&[0, 1]).uniform);
    }

    #[test]
    fn draw_follows_weights() {
        let w = Weights::new(&[1, 3]);
        let mut counts = [0u32; 2];
        for _ in 0..40_000 {
            counts[w.draw()] += 1;
        }
        // Expected 10 000 / 30 000.
        assert!((9_000..11_000).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn gcd_works() {
        assert_eq!(gcd(10, 4), 2);
        assert_eq!(gcd(7, 0), 7);
        assert_eq!(gcd(1, 1), 1);
    }
}
