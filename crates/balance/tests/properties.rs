//! Property tests: the invariants every policy must keep, for any set, weights, health
//! and avoid list.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use rpcgate_balance::{Balancer, EndpointSpec, PassiveHealthPolicy, PickContext, Policy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Up,
    /// Ejected by passive health.
    Ejected,
    /// Marked down by active health.
    Down,
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::RoundRobin),
        Just(Policy::LeastRequest),
        Just(Policy::P2cEwma),
        Just(Policy::Random),
        Just(Policy::RingHash),
    ]
}

fn health() -> impl Strategy<Value = Health> {
    prop_oneof![
        3 => Just(Health::Up),
        1 => Just(Health::Ejected),
        1 => Just(Health::Down),
    ]
}

/// (weight, health, avoided) per endpoint.
fn endpoint_set() -> impl Strategy<Value = Vec<(u32, Health, bool)>> {
    vec((0u32..=10, health(), any::<bool>()), 0..8)
}

fn build(policy: Policy, set: &[(u32, Health, bool)]) -> (Balancer, Vec<u64>) {
    let passive = PassiveHealthPolicy {
        max_fails: 1,
        fail_timeout: Duration::from_secs(3600),
    };
    let specs = set
        .iter()
        .enumerate()
        .map(|(i, &(w, _, _))| EndpointSpec::new(format!("10.0.0.{i}:80")).with_weight(w))
        .collect();
    let lb = Balancer::new(policy, passive, specs);
    let mut avoid = Vec::new();
    for (ep, &(_, health, avoided)) in lb.endpoints().iter().zip(set) {
        match health {
            Health::Up => {}
            Health::Ejected => {
                ep.mark_failure();
            }
            Health::Down => ep.set_active_healthy(false),
        }
        if avoided {
            avoid.push(ep.id());
        }
    }
    (lb, avoid)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn picks_respect_health_then_avoid_then_panic(
        policy in policy(),
        set in endpoint_set(),
        hashes in vec(option::of(any::<u64>()), 1..24),
    ) {
        let (lb, avoid) = build(policy, &set);
        let healthy = |i: usize| set[i].1 == Health::Up;
        let any_healthy = (0..set.len()).any(healthy);
        let any_preferred = (0..set.len()).any(|i| healthy(i) && !set[i].2);
        let any_fresh = set.iter().any(|s| !s.2);
        for hash in hashes {
            let ctx = PickContext { hash, avoid: &avoid };
            let Some(pick) = lb.pick(&ctx) else {
                prop_assert!(set.is_empty(), "None from a non-empty set");
                continue;
            };
            prop_assert!(!set.is_empty());
            let i = lb.endpoints().iter().position(|e| e.id() == pick.endpoint.id()).unwrap();
            let avoided = avoid.contains(&pick.endpoint.id());
            prop_assert_eq!(pick.endpoint.is_healthy(), healthy(i));
            if any_healthy {
                prop_assert!(healthy(i), "unhealthy pick while a healthy endpoint exists");
                prop_assert!(!pick.panic);
            } else {
                prop_assert!(pick.panic, "no healthy endpoint but no panic flag");
            }
            if any_preferred || (!any_healthy && any_fresh) {
                prop_assert!(!avoided, "avoided pick while a better one exists");
            }
            if policy == Policy::RingHash && hash.is_some() {
                let again = lb.pick(&ctx).unwrap();
                prop_assert_eq!(again.endpoint.id(), pick.endpoint.id(), "ring hash not stable");
            }
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn round_robin_is_exact_per_cycle(weights in vec(0u32..=20, 1..7)) {
        let set: Vec<_> = weights.iter().map(|&w| (w, Health::Up, false)).collect();
        let (lb, _) = build(Policy::RoundRobin, &set);
        let eff: Vec<u32> = weights.iter().map(|&w| w.max(1)).collect();
        let g = eff.iter().fold(0, |g, &w| gcd(g, w));
        let cycle: u32 = eff.iter().map(|w| w / g).sum();
        let mut counts = vec![0u32; eff.len()];
        for _ in 0..2 * cycle {
            let p = lb.pick(&PickContext::default()).unwrap();
            let i = lb.endpoints().iter().position(|e| e.id() == p.endpoint.id()).unwrap();
            counts[i] += 1;
        }
        let expected: Vec<u32> = eff.iter().map(|w| 2 * w / g).collect();
        prop_assert_eq!(counts, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// With no load, the random-draw policies send traffic in proportion to weight: each
    /// endpoint's count lies within 5 standard deviations (+1) of its expectation (a false
    /// alarm has odds below 1 in a million per endpoint).
    #[test]
    fn random_draw_policies_follow_weights(
        policy in prop_oneof![
            Just(Policy::Random),
            Just(Policy::LeastRequest),
            Just(Policy::P2cEwma),
            Just(Policy::RingHash),
        ],
        weights in vec(1u32..=10, 1..6),
    ) {
        let set: Vec<_> = weights.iter().map(|&w| (w, Health::Up, false)).collect();
        let (lb, _) = build(policy, &set);
        let n = 20_000u32;
        let eps = lb.endpoints();
        let mut counts = vec![0u32; eps.len()];
        for _ in 0..n {
            let p = lb.pick(&PickContext::default()).unwrap();
            counts[eps.iter().position(|e| e.id() == p.endpoint.id()).unwrap()] += 1;
        }
        let total: u32 = weights.iter().sum();
        for (i, &w) in weights.iter().enumerate() {
            let p = f64::from(w) / f64::from(total);
            let mean = f64::from(n) * p;
            let sd = (f64::from(n) * p * (1.0 - p)).sqrt();
            prop_assert!(
                (f64::from(counts[i]) - mean).abs() <= 5.0 * sd + 1.0,
                "{:?}: endpoint {} got {} of {}, expected {:.0}",
                policy, i, counts[i], n, mean
            );
        }
    }
}
