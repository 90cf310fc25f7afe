//! The retry budget on tokio's paused clock: ratio, floor, and the window rolling off.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rpcgate_balance::{RETRY_BUDGET_MIN, RETRY_BUDGET_WINDOW, RetryBudget};
use tokio::time::advance;

const SECOND: Duration = Duration::from_secs(1);

fn calls(b: &RetryBudget, n: usize) {
    for _ in 0..n {
        b.record_call();
    }
}

/// How many retries the budget grants in a row before refusing one.
fn spend_all(b: &RetryBudget) -> usize {
    let mut n = 0;
    while b.try_spend() {
        n += 1;
        assert!(n <= 1_000_000, "the budget never ran out");
    }
    n
}

#[test]
fn defaults_are_ten_seconds_and_three_retries() {
    assert_eq!(RETRY_BUDGET_WINDOW, Duration::from_secs(10));
    assert_eq!(RETRY_BUDGET_MIN, 3);
}

#[tokio::test(start_paused = true)]
async fn the_ratio_is_respected_under_many_calls() {
    let b = RetryBudget::new(0.2, RETRY_BUDGET_MIN, RETRY_BUDGET_WINDOW);
    calls(&b, 100);
    assert_eq!(b.available(), 20);
    assert_eq!(spend_all(&b), 20);
    assert!(!b.try_spend());
    assert_eq!(b.available(), 0);
    // Five more calls earn one more retry.
    calls(&b, 5);
    assert!(b.try_spend());
    assert!(!b.try_spend());
}

#[tokio::test(start_paused = true)]
async fn the_floor_allows_retries_on_a_quiet_route() {
    let b = RetryBudget::new(0.2, 3, RETRY_BUDGET_WINDOW);
    // No call at all: the floor still allows three.
    assert_eq!(spend_all(&b), 3);
    let b = RetryBudget::new(0.2, 3, RETRY_BUDGET_WINDOW);
    // 10 calls earn 2 (< 3): the floor wins.
    calls(&b, 10);
    assert_eq!(spend_all(&b), 3);
    // A zero floor and no calls: no retry.
    let b = RetryBudget::new(0.2, 0, RETRY_BUDGET_WINDOW);
    assert!(!b.try_spend());
}

#[tokio::test(start_paused = true)]
async fn the_window_rolling_off_restores_the_budget() {
    let b = RetryBudget::new(0.2, 3, RETRY_BUDGET_WINDOW);
    calls(&b, 50);
    assert_eq!(spend_all(&b), 10);
    // Nine seconds later the calls and the retries are both still in the window.
    advance(9 * SECOND).await;
    assert!(!b.try_spend());
    // At 10 s both left it: only the floor is left, fully available again.
    advance(SECOND).await;
    assert_eq!(b.available(), 3);
    assert_eq!(spend_all(&b), 3);
    // New traffic earns new budget.
    calls(&b, 100);
    assert_eq!(spend_all(&b), 17);
}

#[tokio::test(start_paused = true)]
async fn calls_and_retries_age_out_bucket_by_bucket() {
    let b = RetryBudget::new(0.5, 0, RETRY_BUDGET_WINDOW);
    calls(&b, 10); // at 0 s: 5 retries' worth
    advance(5 * SECOND).await;
    calls(&b, 10); // at 5 s: 5 more
    assert_eq!(spend_all(&b), 10);
    // At 10 s the first ten calls leave, but the ten retries (spent at 5 s) stay:
    // 10 calls allow 5, 10 are spent.
    advance(5 * SECOND).await;
    assert_eq!(b.available(), 0);
    // At 15 s everything left.
    advance(5 * SECOND).await;
    assert_eq!(b.available(), 0);
    calls(&b, 2);
    assert_eq!(b.available(), 1);
}

/// Threads spending at once never overspend: exactly the allowance is granted.
#[test]
fn concurrent_spends_never_overspend() {
    let b = Arc::new(RetryBudget::new(0.1, 0, Duration::from_secs(3600)));
    calls(&b, 1_000);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let b = Arc::clone(&b);
            thread::spawn(move || (0..1_000).filter(|_| b.try_spend()).count())
        })
        .collect();
    let granted: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(granted, 100);
}
