//! Behaviour of each policy on a healthy or partly healthy set.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rpcgate_balance::{
    Balancer, Endpoint, EndpointSpec, Outcome, PassiveHealthPolicy, PickContext, Policy, hash_key,
};

/// The passive health these tests run with (NGINX's max_fails = 1 / fail_timeout = 10s).
const NGINX_PASSIVE: PassiveHealthPolicy = PassiveHealthPolicy {
    max_fails: 1,
    fail_timeout: Duration::from_secs(10),
};

const ALL: [Policy; 5] = [
    Policy::RoundRobin,
    Policy::LeastRequest,
    Policy::P2cEwma,
    Policy::Random,
    Policy::RingHash,
];

fn specs(weights: &[(&str, u32)]) -> Vec<EndpointSpec> {
    weights
        .iter()
        .map(|&(a, w)| EndpointSpec::new(a).with_weight(w))
        .collect()
}

fn balancer(policy: Policy, weights: &[(&str, u32)]) -> Balancer {
    Balancer::new(policy, NGINX_PASSIVE, specs(weights))
}

fn pick_addr(lb: &Balancer, ctx: &PickContext<'_>) -> String {
    lb.pick(ctx).unwrap().endpoint.address().to_owned()
}

fn counts(lb: &Balancer, n: usize) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for _ in 0..n {
        *m.entry(pick_addr(lb, &PickContext::default())).or_default() += 1;
    }
    m
}

fn endpoint(lb: &Balancer, addr: &str) -> Arc<Endpoint> {
    lb.endpoints()
        .iter()
        .find(|e| e.address() == addr)
        .cloned()
        .unwrap()
}

#[test]
fn empty_set_picks_none_for_every_policy() {
    for policy in ALL {
        let lb = Balancer::new(policy, NGINX_PASSIVE, vec![]);
        assert!(lb.pick(&PickContext::default()).is_none(), "{policy:?}");
        let ctx = PickContext {
            hash: Some(42),
            avoid: &[1, 2, 3],
        };
        assert!(lb.pick(&ctx).is_none(), "{policy:?}");
        lb.set_endpoints(specs(&[("a:1", 1)]));
        assert_eq!(pick_addr(&lb, &ctx), "a:1");
        lb.set_endpoints(vec![]);
        assert!(lb.pick(&ctx).is_none(), "{policy:?}");
        assert!(lb.endpoints().is_empty());
    }
}

#[test]
fn round_robin_is_smooth_for_5_1_1() {
    let lb = balancer(Policy::RoundRobin, &[("a", 5), ("b", 1), ("c", 1)]);
    let seq: Vec<String> = (0..14)
        .map(|_| pick_addr(&lb, &PickContext::default()))
        .collect();
    let expected = ["a", "a", "b", "a", "c", "a", "a"];
    assert_eq!(
        seq,
        expected
            .iter()
            .chain(&expected)
            .copied()
            .collect::<Vec<_>>()
    );
}

#[test]
fn round_robin_alternates_over_equal_weights() {
    let lb = balancer(Policy::RoundRobin, &[("a", 1), ("b", 1), ("c", 1)]);
    let seq: Vec<String> = (0..9)
        .map(|_| pick_addr(&lb, &PickContext::default()))
        .collect();
    assert_eq!(seq, ["a", "b", "c", "a", "b", "c", "a", "b", "c"]);
}

#[test]
fn round_robin_skips_unhealthy_and_keeps_alternating() {
    let lb = balancer(Policy::RoundRobin, &[("a", 1), ("b", 1), ("c", 1)]);
    endpoint(&lb, "c").set_active_healthy(false);
    let seq: Vec<String> = (0..8)
        .map(|_| pick_addr(&lb, &PickContext::default()))
        .collect();
    assert_eq!(seq, ["a", "b", "a", "b", "a", "b", "a", "b"]);
}

#[test]
fn avoided_endpoints_are_skipped_while_others_are_healthy() {
    for policy in ALL {
        let lb = balancer(policy, &[("a", 1), ("b", 1), ("c", 1)]);
        let avoid = [endpoint(&lb, "a").id(), endpoint(&lb, "b").id()];
        for i in 0..50u64 {
            let ctx = PickContext {
                hash: Some(hash_key(&i.to_le_bytes())),
                avoid: &avoid,
            };
            let pick = lb.pick(&ctx).unwrap();
            assert_eq!(pick.endpoint.address(), "c", "{policy:?}");
            assert!(!pick.panic);
        }
    }
}

#[test]
fn all_avoided_falls_back_to_healthy_without_panic() {
    for policy in ALL {
        let lb = balancer(policy, &[("a", 1), ("b", 1)]);
        endpoint(&lb, "b").set_active_healthy(false);
        let avoid = [endpoint(&lb, "a").id(), endpoint(&lb, "b").id()];
        let ctx = PickContext {
            hash: Some(7),
            avoid: &avoid,
        };
        for _ in 0..20 {
            let pick = lb.pick(&ctx).unwrap();
            assert_eq!(pick.endpoint.address(), "a", "{policy:?}");
            assert!(!pick.panic, "{policy:?}");
        }
    }
}

#[test]
fn least_request_prefers_the_emptier_endpoint() {
    let lb = balancer(Policy::LeastRequest, &[("a", 1), ("b", 1)]);
    let a = endpoint(&lb, "a");
    let held: Vec<_> = (0..3).map(|_| a.start_call()).collect();
    for _ in 0..100 {
        assert_eq!(pick_addr(&lb, &PickContext::default()), "b");
    }
    drop(held);
    assert_eq!(a.in_flight(), 0);
}

#[test]
fn least_request_divides_load_by_weight() {
    // a: 2 in flight at weight 3 (0.67 per unit) beats b: 1 in flight at weight 1.
    let lb = balancer(Policy::LeastRequest, &[("a", 3), ("b", 1)]);
    let _a = [
        endpoint(&lb, "a").start_call(),
        endpoint(&lb, "a").start_call(),
    ];
    let _b = endpoint(&lb, "b").start_call();
    for _ in 0..100 {
        assert_eq!(pick_addr(&lb, &PickContext::default()), "a");
    }
}

/// Starts a call on `ep`, lets `latency` pass on the paused clock, finishes it.
async fn observe(ep: &Arc<Endpoint>, latency: Duration) {
    let call = ep.start_call();
    tokio::time::advance(latency).await;
    call.finish(Outcome::Success);
}

#[tokio::test(start_paused = true)]
async fn p2c_ewma_prefers_the_faster_endpoint_then_recovers_after_decay() {
    let lb = balancer(Policy::P2cEwma, &[("fast", 1), ("slow", 1)]);
    let (fast, slow) = (endpoint(&lb, "fast"), endpoint(&lb, "slow"));
    observe(&slow, Duration::from_millis(100)).await;
    observe(&fast, Duration::from_millis(1)).await;
    assert!((fast.ewma_ms() - 1.0).abs() < 0.01, "{}", fast.ewma_ms());
    assert!(slow.ewma_ms() > 99.0, "{}", slow.ewma_ms());
    let c = counts(&lb, 200);
    assert_eq!(c.get("fast"), Some(&200), "{c:?}");

    // The fast one takes calls until its load outweighs the latency gap: 100× here.
    let held: Vec<_> = (0..150).map(|_| fast.start_call()).collect();
    assert_eq!(counts(&lb, 50).get("slow"), Some(&50));
    drop(held);

    // A minute without traffic to `slow` decays its estimate to 100·e⁻⁶ ≈ 0.25 ms while
    // `fast` keeps answering in 1 ms: `slow` is probed again.
    tokio::time::advance(Duration::from_secs(60)).await;
    observe(&fast, Duration::from_millis(1)).await;
    assert!(slow.ewma_ms() < 0.3, "{}", slow.ewma_ms());
    let c = counts(&lb, 200);
    assert_eq!(c.get("slow"), Some(&200), "{c:?}");
}

#[tokio::test(start_paused = true)]
async fn p2c_ewma_gives_new_endpoints_traffic() {
    let lb = balancer(Policy::P2cEwma, &[("old", 1)]);
    observe(&endpoint(&lb, "old"), Duration::from_millis(10)).await;
    lb.set_endpoints(specs(&[("old", 1), ("new", 1)]));
    let c = counts(&lb, 2000);
    let new = c.get("new").copied().unwrap_or(0);
    assert!((700..1300).contains(&new), "{c:?}");
}

fn assert_shares(c: &HashMap<String, usize>, expected: &[(&str, f64)], n: usize, tol: f64) {
    for &(addr, share) in expected {
        let got = c.get(addr).copied().unwrap_or(0) as f64 / n as f64;
        assert!(
            (got - share).abs() <= share * tol,
            "{addr}: {got:.3} vs {share:.3} ({c:?})"
        );
    }
}

#[test]
fn weighted_policies_follow_weights_with_no_load() {
    let weights = [("a", 1), ("b", 2), ("c", 3)];
    let shares = [("a", 1.0 / 6.0), ("b", 2.0 / 6.0), ("c", 3.0 / 6.0)];
    for policy in [
        Policy::Random,
        Policy::LeastRequest,
        Policy::P2cEwma,
        Policy::RingHash, // no hash: weighted random
    ] {
        let lb = balancer(policy, &weights);
        let n = 60_000;
        assert_shares(&counts(&lb, n), &shares, n, 0.10);
    }
}

#[test]
fn weight_zero_counts_as_one() {
    let lb = balancer(Policy::RoundRobin, &[("a", 0), ("b", 1)]);
    assert!(lb.endpoints().iter().all(|e| e.weight() == 1));
    let c = counts(&lb, 10);
    assert_eq!((c["a"], c["b"]), (5, 5));
}

fn ring_map(lb: &Balancer, keys: u64) -> Vec<String> {
    (0..keys)
        .map(|k| {
            let ctx = PickContext {
                hash: Some(hash_key(format!("user-{k}").as_bytes())),
                avoid: &[],
            };
            pick_addr(lb, &ctx)
        })
        .collect()
}

#[test]
fn ring_hash_is_stable_and_independent_of_order() {
    let addrs = [("10.0.0.1:1", 1), ("10.0.0.2:1", 1), ("10.0.0.3:1", 2)];
    let lb = balancer(Policy::RingHash, &addrs);
    let mut reversed = addrs;
    reversed.reverse();
    let other = balancer(Policy::RingHash, &reversed);
    let first = ring_map(&lb, 2000);
    assert_eq!(first, ring_map(&lb, 2000), "same key, same endpoint");
    assert_eq!(first, ring_map(&other, 2000), "a fleet agrees");
    // Spread roughly by weight (vnodes make it approximate).
    let heavy = first.iter().filter(|a| *a == "10.0.0.3:1").count();
    assert!((700..1300).contains(&heavy), "{heavy}");
}

#[test]
fn ring_hash_removal_only_remaps_the_removed_endpoints_keys() {
    let addrs: Vec<(String, u32)> = (1..=5).map(|i| (format!("10.0.0.{i}:80"), 1)).collect();
    let refs: Vec<(&str, u32)> = addrs.iter().map(|(a, w)| (a.as_str(), *w)).collect();
    let lb = balancer(Policy::RingHash, &refs);
    let keys = 10_000;
    let before = ring_map(&lb, keys);
    let removed = "10.0.0.3:80";
    lb.set_endpoints(specs(
        &refs
            .iter()
            .copied()
            .filter(|(a, _)| *a != removed)
            .collect::<Vec<_>>(),
    ));
    let after = ring_map(&lb, keys);
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        if b == removed {
            assert_ne!(a, removed);
            moved += 1;
        } else {
            assert_eq!(a, b, "a key of a remaining endpoint moved");
        }
    }
    // About 1/5 of the keys lived on the removed endpoint.
    assert!((1_200..2_800).contains(&moved), "{moved}");
}

#[test]
fn ring_hash_walks_past_unhealthy_and_returns_when_healthy() {
    let lb = balancer(Policy::RingHash, &[("a", 1), ("b", 1), ("c", 1)]);
    let before = ring_map(&lb, 3000);
    let a = endpoint(&lb, "a");
    a.set_active_healthy(false);
    let during = ring_map(&lb, 3000);
    for (b, d) in before.iter().zip(&during) {
        assert_ne!(d, "a");
        if b != "a" {
            assert_eq!(b, d);
        }
    }
    // The ejected endpoint's keys spread over both others.
    let to_b = before
        .iter()
        .zip(&during)
        .filter(|(b, d)| *b == "a" && *d == "b")
        .count();
    let of_a = before.iter().filter(|b| *b == "a").count();
    assert!(to_b > of_a / 5 && to_b < of_a * 4 / 5, "{to_b} of {of_a}");
    a.set_active_healthy(true);
    assert_eq!(before, ring_map(&lb, 3000));
}

#[test]
fn set_endpoints_keeps_surviving_endpoints_and_their_counters() {
    for policy in ALL {
        let lb = balancer(policy, &[("a", 1), ("b", 1)]);
        let a = endpoint(&lb, "a");
        let call = a.start_call();
        lb.set_endpoints(specs(&[("a", 3), ("c", 1)]));
        let eps = lb.endpoints();
        assert_eq!(eps.len(), 2);
        assert!(Arc::ptr_eq(&eps[0], &a), "{policy:?}");
        assert_eq!((a.in_flight(), a.requests(), a.weight()), (1, 1, 3));
        assert_ne!(eps[1].id(), a.id());
        assert!(lb.endpoints().iter().all(|e| e.address() != "b"));
        call.finish(Outcome::Success);
        assert_eq!(a.in_flight(), 0);
        // Only the new set is picked from.
        for _ in 0..20 {
            assert_ne!(pick_addr(&lb, &PickContext::default()), "b");
        }
    }
}

#[test]
fn unchanged_set_keeps_round_robin_position() {
    let lb = balancer(Policy::RoundRobin, &[("a", 1), ("b", 1), ("c", 1)]);
    assert_eq!(pick_addr(&lb, &PickContext::default()), "a");
    lb.set_endpoints(specs(&[("a", 1), ("b", 1), ("c", 1)]));
    assert_eq!(pick_addr(&lb, &PickContext::default()), "b");
}

#[test]
fn duplicate_addresses_are_merged() {
    let lb = balancer(Policy::Random, &[("a", 1), ("a", 5), ("b", 1)]);
    let eps = lb.endpoints();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0].weight(), 1);
}

#[test]
fn endpoint_ids_are_unique() {
    let one = balancer(Policy::Random, &[("a", 1), ("b", 1)]);
    let two = balancer(Policy::Random, &[("a", 1), ("b", 1)]);
    let mut ids: Vec<u64> = one
        .endpoints()
        .iter()
        .chain(two.endpoints().iter())
        .map(|e| e.id())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4);
}

/// Labels from discovery travel with an endpoint and change in place, like its weight: the
/// endpoint keeps its identity and counters.
#[test]
fn metadata_travels_with_an_endpoint_and_changes_in_place() {
    let zone = |z: &str| rpcgate_balance::Metadata::from([("zone".to_string(), z.to_string())]);
    let lb = Balancer::new(
        Policy::RoundRobin,
        NGINX_PASSIVE,
        vec![
            EndpointSpec::new("a").with_metadata(zone("z1")),
            EndpointSpec::new("b"),
        ],
    );
    let a = endpoint(&lb, "a");
    assert_eq!(a.metadata().get("zone").map(String::as_str), Some("z1"));
    assert!(endpoint(&lb, "b").metadata().is_empty());
    let _ = a.start_call();
    lb.set_endpoints(vec![
        EndpointSpec::new("a").with_metadata(zone("z2")),
        EndpointSpec::new("b"),
    ]);
    let again = endpoint(&lb, "a");
    assert!(Arc::ptr_eq(&a, &again), "the endpoint kept its identity");
    assert_eq!(again.requests(), 1);
    assert_eq!(again.metadata().get("zone").map(String::as_str), Some("z2"));
}
