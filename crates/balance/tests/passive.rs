//! Passive health (NGINX `max_fails` / `fail_timeout`) and panic mode, on tokio's paused
//! clock.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use rpcgate_balance::{
    Balancer, Endpoint, EndpointSpec, Outcome, PassiveHealthPolicy, PickContext, Policy,
};
use tokio::time::advance;

const SECOND: Duration = Duration::from_secs(1);

fn passive(max_fails: u32, secs: u64) -> PassiveHealthPolicy {
    PassiveHealthPolicy {
        max_fails,
        fail_timeout: Duration::from_secs(secs),
    }
}

fn balancer(policy: Policy, p: PassiveHealthPolicy, addrs: &[&str]) -> Balancer {
    Balancer::new(
        policy,
        p,
        addrs.iter().map(|a| EndpointSpec::new(*a)).collect(),
    )
}

fn endpoint(lb: &Balancer, addr: &str) -> Arc<Endpoint> {
    lb.endpoints()
        .iter()
        .find(|e| e.address() == addr)
        .cloned()
        .unwrap()
}

fn fail(ep: &Arc<Endpoint>) {
    ep.start_call().finish(Outcome::Failure);
}

fn picks_only(lb: &Balancer, addr: &str) -> bool {
    (0..50).all(|_| {
        let p = lb.pick(&PickContext::default()).unwrap();
        !p.panic && p.endpoint.address() == addr
    })
}

#[tokio::test(start_paused = true)]
async fn one_failure_ejects_for_fail_timeout_with_max_fails_1() {
    let lb = balancer(Policy::RoundRobin, passive(1, 10), &["a", "b"]);
    let a = endpoint(&lb, "a");
    fail(&a);
    assert!(!a.is_healthy());
    assert!(a.passive_ejected());
    assert_eq!((a.failures(), a.requests(), a.ejections()), (1, 1, 1));
    assert!(picks_only(&lb, "b"));

    advance(Duration::from_secs(10) - Duration::from_millis(1)).await;
    assert!(!a.is_healthy());
    assert!(picks_only(&lb, "b"));

    advance(Duration::from_millis(1)).await;
    assert!(a.is_healthy());
    assert!(!a.passive_ejected());
    let spread = (0..10)
        .filter(|_| lb.pick(&PickContext::default()).unwrap().endpoint.address() == "a")
        .count();
    assert_eq!(spread, 5, "round robin over both again");
}

#[tokio::test(start_paused = true)]
async fn max_fails_3_needs_3_failures_within_the_window() {
    let lb = balancer(Policy::Random, passive(3, 10), &["a", "b"]);
    let a = endpoint(&lb, "a");
    fail(&a);
    advance(4 * SECOND).await;
    fail(&a);
    assert!(a.is_healthy(), "2 of 3");
    advance(4 * SECOND).await;
    fail(&a);
    assert!(!a.is_healthy(), "3 within 8 s of a 10 s window");
    assert!(picks_only(&lb, "b"));
    advance(10 * SECOND).await;
    assert!(a.is_healthy());
    // The count is fresh after the ejection.
    fail(&a);
    fail(&a);
    assert!(a.is_healthy());
    fail(&a);
    assert!(!a.is_healthy());
}

#[tokio::test(start_paused = true)]
async fn failures_spread_wider_than_the_window_do_not_eject() {
    let lb = balancer(Policy::Random, passive(3, 10), &["a"]);
    let a = endpoint(&lb, "a");
    for _ in 0..10 {
        fail(&a);
        advance(6 * SECOND).await;
        fail(&a);
        // The window opened at the first of the pair; the next failure comes 6 s after
        // the second one, 12 s after the window opened, and starts a new window.
        assert!(a.is_healthy());
        advance(6 * SECOND).await;
    }
    assert_eq!(a.failures(), 20);
    assert_eq!(a.ejections(), 0);
}

#[tokio::test(start_paused = true)]
async fn max_fails_0_turns_passive_health_off() {
    let lb = balancer(Policy::RoundRobin, passive(0, 10), &["a"]);
    let a = endpoint(&lb, "a");
    for _ in 0..100 {
        fail(&a);
        a.mark_failure();
    }
    assert!(a.is_healthy());
    assert_eq!(a.failures(), 200);
    assert!(!lb.pick(&PickContext::default()).unwrap().panic);
}

#[tokio::test(start_paused = true)]
async fn failures_while_ejected_do_not_extend_the_ejection() {
    let lb = balancer(Policy::RoundRobin, passive(1, 10), &["a"]);
    let a = endpoint(&lb, "a");
    let late = a.start_call();
    fail(&a);
    advance(5 * SECOND).await;
    late.finish(Outcome::Failure);
    advance(5 * SECOND).await;
    assert!(a.is_healthy());
    assert_eq!((a.failures(), a.ejections()), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn mark_failure_feeds_passive_health_without_a_call() {
    let lb = balancer(Policy::RoundRobin, passive(2, 10), &["a", "b"]);
    let a = endpoint(&lb, "a");
    a.mark_failure();
    a.mark_failure();
    assert!(!a.is_healthy());
    assert_eq!((a.requests(), a.failures(), a.in_flight()), (0, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn cancelled_and_successful_calls_do_not_count_as_failures() {
    let lb = balancer(Policy::RoundRobin, passive(1, 10), &["a"]);
    let a = endpoint(&lb, "a");
    let cancelled = a.start_call();
    let ok = a.start_call();
    assert_eq!(a.in_flight(), 2);
    drop(cancelled);
    ok.finish(Outcome::Success);
    assert_eq!((a.in_flight(), a.requests(), a.failures()), (0, 2, 0));
    assert!(a.is_healthy());
}

#[tokio::test(start_paused = true)]
async fn panic_mode_when_every_endpoint_is_ejected() {
    for policy in [
        Policy::RoundRobin,
        Policy::LeastRequest,
        Policy::P2cEwma,
        Policy::Random,
        Policy::RingHash,
    ] {
        let lb = balancer(policy, passive(1, 10), &["a", "b"]);
        let (a, b) = (endpoint(&lb, "a"), endpoint(&lb, "b"));
        fail(&a);
        fail(&b);
        let mut seen = [0; 2];
        for i in 0..200u64 {
            let p = lb
                .pick(&PickContext {
                    hash: Some(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                    avoid: &[],
                })
                .unwrap();
            assert!(p.panic, "{policy:?}");
            seen[usize::from(p.endpoint.address() == "b")] += 1;
        }
        assert!(
            seen[0] > 0 && seen[1] > 0,
            "{policy:?} spreads in panic: {seen:?}"
        );

        // Still prefers the endpoint the call has not tried.
        let avoid = [a.id()];
        for _ in 0..20 {
            let p = lb
                .pick(&PickContext {
                    hash: Some(1),
                    avoid: &avoid,
                })
                .unwrap();
            assert!(p.panic);
            assert_eq!(p.endpoint.address(), "b", "{policy:?}");
        }
        // Everything avoided and ejected: still an answer.
        let avoid = [a.id(), b.id()];
        assert!(
            lb.pick(&PickContext {
                hash: None,
                avoid: &avoid
            })
            .unwrap()
            .panic
        );

        advance(10 * SECOND).await;
        assert!(
            !lb.pick(&PickContext::default()).unwrap().panic,
            "{policy:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn active_health_verdict_excludes_like_ejection() {
    let lb = balancer(Policy::LeastRequest, passive(1, 10), &["a", "b"]);
    let a = endpoint(&lb, "a");
    a.set_active_healthy(false);
    assert!(!a.is_healthy());
    assert!(!a.passive_ejected());
    assert!(picks_only(&lb, "b"));
    a.set_active_healthy(true);
    assert!(a.is_healthy());
}
