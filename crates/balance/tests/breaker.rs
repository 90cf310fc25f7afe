//! The circuit breaker's gobreaker semantics over a rolling window, on tokio's paused
//! clock, and its consistency under threads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use rpcgate_balance::{
    BreakerPolicy, BreakerSnapshot, BreakerState, CircuitBreaker, Rejected, Transition,
};
use tokio::time::advance;

const SECOND: Duration = Duration::from_secs(1);

/// 50 % of at least 10 outcomes in 10 s trips; open 5 s; 2 trials.
fn policy() -> BreakerPolicy {
    BreakerPolicy {
        failure_ratio: 0.5,
        min_requests: 10,
        window: Duration::from_secs(10),
        open_duration: Duration::from_secs(5),
        half_open_requests: 2,
    }
}

/// Admits and records one call; returns the transition it caused.
fn call(b: &CircuitBreaker, success: bool) -> Option<Transition> {
    let admission = b.admit().expect("admitted");
    assert_eq!(admission.transition, None);
    admission.ticket.record(success)
}

fn calls(b: &CircuitBreaker, n: usize, success: bool) {
    for _ in 0..n {
        assert_eq!(call(b, success), None);
    }
}

fn rejected(b: &CircuitBreaker) -> Rejected {
    b.admit().expect_err("rejected")
}

fn transition(from: BreakerState, to: BreakerState, requests: u32, failures: u32) -> Transition {
    Transition {
        from,
        to,
        requests,
        failures,
    }
}

/// Trips `b` (fresh, `policy()`) with ten failures.
fn trip(b: &CircuitBreaker) {
    calls(b, 9, false);
    assert_eq!(
        call(b, false),
        Some(transition(BreakerState::Closed, BreakerState::Open, 10, 10))
    );
}

#[tokio::test(start_paused = true)]
async fn trips_only_at_min_requests_and_ratio() {
    let b = CircuitBreaker::new(policy());
    // Nine failures: 100 % but below min_requests.
    calls(&b, 9, false);
    assert_eq!(b.snapshot().state, BreakerState::Closed);
    // Successes never trip, even once min_requests is reached (90 % failures).
    assert_eq!(call(&b, true), None);
    // 10 successes more: 9 / 20 failures, below the ratio.
    calls(&b, 9, true);
    let snap = b.snapshot();
    assert_eq!(
        (snap.state, snap.requests, snap.failures),
        (BreakerState::Closed, 19, 9)
    );
    // The tenth failure: 10 / 20 = 50 %, at the ratio.
    assert_eq!(
        call(&b, false),
        Some(transition(BreakerState::Closed, BreakerState::Open, 20, 10))
    );
    assert_eq!(
        b.snapshot(),
        BreakerSnapshot {
            state: BreakerState::Open,
            requests: 0,
            failures: 0,
            open_until_remaining: Some(Duration::from_secs(5)),
        }
    );
}

#[tokio::test(start_paused = true)]
async fn below_the_ratio_never_trips() {
    let b = CircuitBreaker::new(policy());
    for _ in 0..100 {
        calls(&b, 2, true);
        assert_eq!(call(&b, false), None);
    }
    assert_eq!(b.snapshot().state, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_window_rolls_and_old_failures_are_forgotten() {
    let b = CircuitBreaker::new(policy());
    calls(&b, 6, false);
    advance(9 * SECOND).await;
    // Still in the window: 6 + 3 = 9 outcomes, below min_requests.
    calls(&b, 3, false);
    assert_eq!(b.snapshot().requests, 9);
    advance(SECOND).await;
    // The first six (recorded at 0 s) left the window at 10 s.
    assert_eq!(b.snapshot().requests, 3);
    calls(&b, 6, false);
    assert_eq!(
        call(&b, false),
        Some(transition(BreakerState::Closed, BreakerState::Open, 10, 10))
    );
}

#[tokio::test(start_paused = true)]
async fn open_rejects_with_a_retry_after_that_counts_down() {
    let b = CircuitBreaker::new(policy());
    trip(&b);
    assert_eq!(
        rejected(&b),
        Rejected {
            retry_after: Duration::from_secs(5),
            transition: None,
        }
    );
    advance(2 * SECOND).await;
    assert_eq!(rejected(&b).retry_after, Duration::from_secs(3));
    advance(3 * SECOND - Duration::from_millis(1)).await;
    assert_eq!(rejected(&b).retry_after, Duration::from_millis(1));
    assert_eq!(
        b.snapshot().open_until_remaining,
        Some(Duration::from_millis(1))
    );
}

#[tokio::test(start_paused = true)]
async fn turns_half_open_after_open_duration_with_limited_trial_slots() {
    let b = CircuitBreaker::new(policy());
    trip(&b);
    advance(5 * SECOND).await;
    // The open period is over: the snapshot already says so.
    assert_eq!(b.snapshot().state, BreakerState::HalfOpen);
    assert_eq!(b.snapshot().open_until_remaining, None);

    let first = b.admit().unwrap();
    assert_eq!(
        first.transition,
        Some(transition(BreakerState::Open, BreakerState::HalfOpen, 0, 0))
    );
    assert!(first.ticket.is_trial());
    let second = b.admit().unwrap();
    assert_eq!(second.transition, None);
    // Both trial slots are taken.
    assert_eq!(
        rejected(&b),
        Rejected {
            retry_after: Duration::ZERO,
            transition: None,
        }
    );
    // A success frees a slot without closing yet (1 of 2 consecutive successes).
    assert_eq!(first.ticket.record(true), None);
    assert_eq!(b.snapshot().requests, 1);
    let third = b.admit().unwrap();
    assert!(rejected(&b).retry_after.is_zero());
    assert_eq!(
        second.ticket.record(true),
        Some(transition(
            BreakerState::HalfOpen,
            BreakerState::Closed,
            2,
            0
        ))
    );
    // Closed again with empty counts; the leftover trial's outcome is ignored.
    assert_eq!(third.ticket.record(false), None);
    let snap = b.snapshot();
    assert_eq!(
        (snap.state, snap.requests, snap.failures),
        (BreakerState::Closed, 0, 0)
    );
    assert!(!b.admit().unwrap().ticket.is_trial());
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_reopens_for_a_new_open_duration() {
    let b = CircuitBreaker::new(policy());
    trip(&b);
    advance(5 * SECOND).await;
    let first = b.admit().unwrap();
    let second = b.admit().unwrap();
    assert_eq!(first.ticket.record(true), None);
    advance(SECOND).await;
    assert_eq!(
        second.ticket.record(false),
        Some(transition(BreakerState::HalfOpen, BreakerState::Open, 2, 1))
    );
    assert_eq!(rejected(&b).retry_after, Duration::from_secs(5));
    advance(5 * SECOND).await;
    let again = b.admit().unwrap();
    assert_eq!(
        again.transition,
        Some(transition(BreakerState::Open, BreakerState::HalfOpen, 0, 0))
    );
}

#[tokio::test(start_paused = true)]
async fn dropped_tickets_count_nothing_and_free_trial_slots() {
    let b = CircuitBreaker::new(policy());
    // Closed: cancelled calls are not counted.
    for _ in 0..20 {
        drop(b.admit().unwrap());
    }
    assert_eq!(b.snapshot().requests, 0);
    trip(&b);
    advance(5 * SECOND).await;
    let first = b.admit().unwrap();
    let second = b.admit().unwrap();
    assert!(b.admit().is_err());
    drop(first);
    let third = b.admit().expect("the dropped trial freed its slot");
    drop(second);
    drop(third);
    // Nothing was recorded: still half-open, no successes, both slots free.
    assert_eq!(b.snapshot().state, BreakerState::HalfOpen);
    assert_eq!(b.snapshot().requests, 0);
    let (x, y) = (b.admit().unwrap(), b.admit().unwrap());
    assert_eq!(x.ticket.record(true), None);
    assert_eq!(
        y.ticket.record(true),
        Some(transition(
            BreakerState::HalfOpen,
            BreakerState::Closed,
            2,
            0
        ))
    );
}

#[tokio::test(start_paused = true)]
async fn outcomes_from_before_a_state_change_are_ignored() {
    let b = CircuitBreaker::new(policy());
    let old = b.admit().unwrap();
    trip(&b);
    // A call admitted while closed ends while open: it changes nothing.
    assert_eq!(old.ticket.record(false), None);
    assert_eq!(rejected(&b).retry_after, Duration::from_secs(5));
    advance(5 * SECOND).await;
    let trial = b.admit().unwrap();
    let late = b.admit().unwrap();
    let (a, c) = (trial.ticket.record(true), late.ticket.record(true));
    assert_eq!(a, None);
    assert_eq!(c.map(|t| t.to), Some(BreakerState::Closed));
}

#[tokio::test(start_paused = true)]
async fn zero_half_open_requests_means_one_trial() {
    let b = CircuitBreaker::new(BreakerPolicy {
        half_open_requests: 0,
        ..policy()
    });
    trip(&b);
    advance(5 * SECOND).await;
    let trial = b.admit().unwrap();
    assert!(b.admit().is_err());
    assert_eq!(
        trial.ticket.record(true),
        Some(transition(
            BreakerState::HalfOpen,
            BreakerState::Closed,
            1,
            0
        ))
    );
}

#[tokio::test(start_paused = true)]
async fn a_ratio_above_one_never_trips() {
    let b = CircuitBreaker::new(BreakerPolicy {
        failure_ratio: 1.5,
        ..policy()
    });
    calls(&b, 100, false);
    assert_eq!(b.snapshot().state, BreakerState::Closed);
}

/// Threads admitting and recording at once: the reported transitions form one valid
/// path of the state machine.
#[test]
fn concurrent_use_stays_consistent() {
    const THREADS: usize = 4;
    const CALLS: usize = 5_000;
    let b = Arc::new(CircuitBreaker::new(BreakerPolicy {
        failure_ratio: 0.3,
        min_requests: 5,
        window: Duration::from_secs(3600),
        open_duration: Duration::ZERO,
        half_open_requests: 3,
    }));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let b = Arc::clone(&b);
            thread::spawn(move || {
                let mut transitions = Vec::new();
                for i in 0..CALLS {
                    let admission = match b.admit() {
                        Ok(a) => a,
                        Err(r) => {
                            transitions.extend(r.transition);
                            continue;
                        }
                    };
                    transitions.extend(admission.transition);
                    let ticket = admission.ticket;
                    if i % 7 == 0 {
                        thread::yield_now();
                    }
                    match (i + t) % 4 {
                        0 => drop(ticket),
                        1 => transitions.extend(ticket.record(false)),
                        _ => transitions.extend(ticket.record(true)),
                    }
                }
                transitions
            })
        })
        .collect();
    let transitions: Vec<Transition> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();

    let states = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ];
    let net = |s: BreakerState| {
        let into = transitions.iter().filter(|t| t.to == s).count() as i64;
        let out = transitions.iter().filter(|t| t.from == s).count() as i64;
        into - out + i64::from(s == BreakerState::Closed)
    };
    // Starting closed, a valid path leaves exactly one state "current".
    assert_eq!(states.map(net).iter().sum::<i64>(), 1);
    assert!(
        states.iter().all(|&s| (0..=1).contains(&net(s))),
        "{transitions:?}"
    );
    assert!(transitions.iter().all(|t| matches!(
        (t.from, t.to),
        (BreakerState::Closed, BreakerState::Open)
            | (BreakerState::Open, BreakerState::HalfOpen)
            | (
                BreakerState::HalfOpen,
                BreakerState::Open | BreakerState::Closed
            )
    )));
    assert!(
        transitions.iter().any(|t| t.to == BreakerState::Open),
        "the failure mix should trip the breaker at least once"
    );
}

/// Threads racing for half-open trial slots never hold more than there are, and
/// cancelled trials give every slot back.
#[test]
fn concurrent_trials_never_exceed_their_slots() {
    const THREADS: usize = 4;
    const CALLS: usize = 5_000;
    let b = Arc::new(CircuitBreaker::new(BreakerPolicy {
        failure_ratio: 0.5,
        min_requests: 1,
        window: Duration::from_secs(3600),
        open_duration: Duration::ZERO,
        half_open_requests: 3,
    }));
    assert_eq!(call(&b, false).map(|t| t.to), Some(BreakerState::Open));
    let in_flight = Arc::new(AtomicU32::new(0));
    let max = Arc::new(AtomicU32::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (b, in_flight, max) = (Arc::clone(&b), Arc::clone(&in_flight), Arc::clone(&max));
            thread::spawn(move || {
                let mut admitted = 0;
                for _ in 0..CALLS {
                    // Only cancelled trials: the half-open period never ends.
                    let Ok(admission) = b.admit() else { continue };
                    assert!(admission.ticket.is_trial());
                    admitted += 1;
                    let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(n, Ordering::SeqCst);
                    thread::yield_now();
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    drop(admission);
                }
                admitted
            })
        })
        .collect();
    let admitted: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(admitted > 0);
    assert!(max.load(Ordering::SeqCst) <= 3);
    assert_eq!(b.snapshot().state, BreakerState::HalfOpen);
    let all: Vec<_> = (0..3)
        .map(|_| b.admit().expect("every slot was freed"))
        .collect();
    assert!(b.admit().is_err());
    drop(all);
}
