//! `ring_hash`: ketama-style consistent hashing.
//!
//! Each endpoint owns `100 × weight` points on a 64-bit ring, at `hash_key("address#i")`.
//! A call's key hash goes to the first point clockwise. Because the points depend only on
//! the endpoint's own address, adding or removing an endpoint moves only the keys whose
//! nearest point it owns (about 1/n of them), and every process computes the same ring no
//! matter in which order it learned the endpoints (equal point hashes are ordered by
//! address, not by position in the set).
//!
//! When the owner of that point is unhealthy or avoided the walk goes on clockwise to the
//! next eligible endpoint, so the keys of an ejected endpoint spread over the others and
//! come back when it recovers. The ring is kept to at most [`MAX_POINTS`] points
//! (12 bytes each) by scaling the per-endpoint counts down; that only happens with very
//! large weights or sets.

use std::sync::Arc;

use crate::Endpoint;
use crate::hash::Fnv;
use crate::tier::{Env, Tier};

/// Points per unit of weight.
pub(crate) const POINTS_PER_WEIGHT: u64 = 100;

/// Upper bound on ring points.
pub(crate) const MAX_POINTS: u64 = 1 << 16;

/// Ring nodes the fast path walks before leaving it to the exact path.
const FAST_NODES: usize = 16;

/// The sorted ring: point hashes and, in parallel, the owning endpoint's index.
#[derive(Debug)]
pub(crate) struct Ring {
    hashes: Box<[u64]>,
    owners: Box<[u32]>,
}

impl Ring {
    pub(crate) fn new(endpoints: &[Arc<Endpoint>], weights: &[u32]) -> Self {
        let total: u64 = weights
            .iter()
            .map(|&w| u64::from(w.max(1)) * POINTS_PER_WEIGHT)
            .sum();
        let mut points: Vec<(u64, &str, u32)> = Vec::with_capacity(total.min(MAX_POINTS) as usize);
        for (i, (ep, &w)) in endpoints.iter().zip(weights).enumerate() {
            let mut count = u64::from(w.max(1)) * POINTS_PER_WEIGHT;
            if total > MAX_POINTS {
                count = (count * MAX_POINTS / total).max(1);
            }
            let base = Fnv::new().write(ep.address().as_bytes()).write(b"#");
            for j in 0..count {
                // Endpoint indices fit in u32 (see round_robin).
                points.push((base.write_decimal(j).finish(), ep.address(), i as u32));
            }
        }
        points.sort_unstable_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
        Self {
            hashes: points.iter().map(|p| p.0).collect(),
            owners: points.iter().map(|p| p.2).collect(),
        }
    }

    /// The first endpoint in `tier` clockwise from `hash`.
    pub(crate) fn pick(
        &self,
        hash: u64,
        endpoints: &[Arc<Endpoint>],
        env: &mut Env<'_>,
        tier: Tier,
        exact: bool,
    ) -> Option<usize> {
        let len = self.hashes.len();
        if len == 0 {
            return None;
        }
        let start = self.hashes.partition_point(|&h| h < hash);
        let limit = if exact { len } else { len.min(FAST_NODES) };
        let mut rejected = None;
        for k in 0..limit {
            let mut pos = start + k;
            if pos >= len {
                pos -= len;
            }
            let i = self.owners[pos] as usize;
            if rejected == Some(i) {
                continue;
            }
            if env.eligible(&endpoints[i], tier) {
                return Some(i);
            }
            rejected = Some(i);
        }
        None
    }
}
