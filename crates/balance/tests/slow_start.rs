//! Slow start on the paused clock: an endpoint that joins later, or comes back from an
//! ejection or a failed health check, gets a share that ramps up over the window, for
//! every policy that weighs endpoints; the first set starts at full weight; ring_hash
//! keeps its keys where they are.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rpcgate_balance::{Balancer, EndpointSpec, Outcome, PassiveHealthPolicy, PickContext, Policy};

const WINDOW: Duration = Duration::from_secs(10);
const PICKS: usize = 20_000;

fn passive() -> PassiveHealthPolicy {
    PassiveHealthPolicy {
        max_fails: 1,
        fail_timeout: Duration::from_secs(5),
    }
}

/// The share of `PICKS` picks that went to `address`.
fn share(lb: &Balancer, address: &str) -> f64 {
    let hits = (0..PICKS)
        .filter(|_| lb.pick(&PickContext::default()).unwrap().endpoint.address() == address)
        .count();
    hits as f64 / PICKS as f64
}

fn two(policy: Policy) -> Balancer {
    Balancer::new(policy, passive(), vec![EndpointSpec::new("a")]).with_slow_start(WINDOW)
}

#[tokio::test(start_paused = true)]
async fn a_joining_endpoint_ramps_up_for_every_weighing_policy() {
    for policy in [
        Policy::RoundRobin,
        Policy::Random,
        Policy::LeastRequest,
        Policy::P2cEwma,
    ] {
        let lb = two(policy);
        lb.set_endpoints(vec![EndpointSpec::new("a"), EndpointSpec::new("b")]);
        // At the start b has 10% of its weight: about 1/11 of the picks, or less with
        // redraws bounded; far below its fair half.
        let start = share(&lb, "b");
        assert!(start < 0.2, "{policy:?}: {start}");
        assert!(start > 0.01, "{policy:?}: b must warm up, got {start}");
        tokio::time::advance(WINDOW / 2).await;
        let half = share(&lb, "b");
        assert!(
            half > start && half < 0.48,
            "{policy:?}: {start} then {half}"
        );
        tokio::time::advance(WINDOW).await;
        let done = share(&lb, "b");
        assert!((0.45..0.55).contains(&done), "{policy:?}: {done}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_set_starts_at_full_weight() {
    let lb = Balancer::new(
        Policy::RoundRobin,
        passive(),
        vec![EndpointSpec::new("a"), EndpointSpec::new("b")],
    )
    .with_slow_start(WINDOW);
    let b = share(&lb, "b");
    assert!((0.45..0.55).contains(&b), "{b}");
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_back_from_an_ejection_ramps_up() {
    let lb = Balancer::new(
        Policy::RoundRobin,
        passive(),
        vec![EndpointSpec::new("a"), EndpointSpec::new("b")],
    )
    .with_slow_start(WINDOW);
    let b = lb.endpoints()[1].clone();
    b.start_call().finish(Outcome::Failure);
    assert!(share(&lb, "b") < 0.001, "ejected");
    tokio::time::advance(Duration::from_secs(5)).await;
    let back = share(&lb, "b");
    assert!(back > 0.01 && back < 0.2, "{back}");
    tokio::time::advance(WINDOW).await;
    assert!((0.45..0.55).contains(&share(&lb, "b")));
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_healthy_again_after_a_failed_check_ramps_up() {
    let lb = Balancer::new(
        Policy::Random,
        passive(),
        vec![EndpointSpec::new("a"), EndpointSpec::new("b")],
    )
    .with_slow_start(WINDOW);
    let b = lb.endpoints()[1].clone();
    b.set_active_healthy(false);
    assert!(share(&lb, "b") < 0.001);
    b.set_active_healthy(true);
    assert!(share(&lb, "b") < 0.2);
    // Marking it healthy again while healthy does not restart the ramp.
    tokio::time::advance(WINDOW).await;
    b.set_active_healthy(true);
    assert!(share(&lb, "b") > 0.45);
}

#[tokio::test(start_paused = true)]
async fn ring_hash_keeps_its_keys() {
    let lb = Balancer::new(Policy::RingHash, passive(), vec![EndpointSpec::new("a")])
        .with_slow_start(WINDOW);
    lb.set_endpoints(vec![EndpointSpec::new("a"), EndpointSpec::new("b")]);
    for key in 0..200u64 {
        let hash = rpcgate_balance::hash_key(&key.to_be_bytes());
        let ctx = PickContext {
            hash: Some(hash),
            avoid: &[],
        };
        let first = lb.pick(&ctx).unwrap().endpoint.address().to_owned();
        for _ in 0..5 {
            assert_eq!(lb.pick(&ctx).unwrap().endpoint.address(), first);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn without_slow_start_a_joining_endpoint_gets_its_share_at_once() {
    let lb = Balancer::new(Policy::RoundRobin, passive(), vec![EndpointSpec::new("a")]);
    lb.set_endpoints(vec![EndpointSpec::new("a"), EndpointSpec::new("b")]);
    assert!((0.45..0.55).contains(&share(&lb, "b")));
}
