//! `routes.retry`: defaults, every key mapped, and a clear error at the value for each bad
//! one (file:line:col and the key path).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{lines, minimal_with, ok};
use rpcgate_config::{RetryBackoff, RetryPolicy};

/// MINIMAL's route with `retry = { … }` (line 8 of the file).
fn with_retry(table: &str) -> String {
    minimal_with("cluster = \"backends\"", &format!("retry = {{ {table} }}"))
}

fn policy(table: &str) -> RetryPolicy {
    ok(&with_retry(table)).listeners[0].routes[0]
        .retry
        .clone()
        .expect("a retry policy")
}

#[test]
fn a_route_without_retry_has_no_policy() {
    assert_eq!(ok(common::MINIMAL).listeners[0].routes[0].retry, None);
}

#[test]
fn an_empty_table_gets_every_default() {
    assert_eq!(
        policy(""),
        RetryPolicy {
            max_attempts: 3,
            on: vec![14],
            backoff: RetryBackoff::Exponential,
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
            jitter: true,
            budget_ratio: 0.2,
            per_try_timeout: None,
        }
    );
}

#[test]
fn every_key_is_taken() {
    let p = policy(
        r#"max_attempts = 5, on = ["unavailable", "RESOURCE_EXHAUSTED", "unavailable"], backoff = "linear", base_interval = "1s", max_interval = "1s", jitter = false, budget_ratio = 0.5, per_try_timeout = "300ms""#,
    );
    assert_eq!(p.max_attempts, 5);
    assert_eq!(
        p.on,
        vec![14, 8],
        "names are case-insensitive, duplicates dropped"
    );
    assert_eq!(p.backoff, RetryBackoff::Linear);
    assert_eq!(p.base_interval, Duration::from_secs(1));
    assert_eq!(p.max_interval, Duration::from_secs(1));
    assert!(!p.jitter);
    assert_eq!(p.budget_ratio, 0.5);
    assert_eq!(p.per_try_timeout, Some(Duration::from_millis(300)));
    // max_interval follows base_interval when not given.
    assert_eq!(
        policy(r#"base_interval = "100ms""#).max_interval,
        Duration::from_secs(1)
    );
}

#[test]
fn bad_values_are_reported_at_the_value_with_the_key() {
    let cases: [(&str, &str); 9] = [
        (
            "max_attempts = 0",
            "t.toml:8:26: listeners[0].routes[0].retry.max_attempts: must be between 1 (no retry) and 10",
        ),
        (
            "max_attempts = 11",
            "t.toml:8:26: listeners[0].routes[0].retry.max_attempts: must be between 1 (no retry) and 10",
        ),
        (
            r#"on = ["unavaliable"]"#,
            "t.toml:8:17: listeners[0].routes[0].retry.on[0]: unknown gRPC status \"unavaliable\"; expected one of cancelled, unknown, invalid_argument, deadline_exceeded, not_found, already_exists, permission_denied, resource_exhausted, failed_precondition, aborted, out_of_range, unimplemented, internal, unavailable, data_loss, unauthenticated",
        ),
        (
            "on = []",
            "t.toml:8:16: listeners[0].routes[0].retry.on: must name at least one gRPC status, e.g. [\"unavailable\"]",
        ),
        (
            r#"backoff = "fibonacci""#,
            "t.toml:8:21: listeners[0].routes[0].retry.backoff: unknown backoff \"fibonacci\"; expected \"linear\" or \"exponential\"",
        ),
        (
            r#"base_interval = "0s""#,
            "t.toml:8:27: listeners[0].routes[0].retry.base_interval: must be greater than 0s",
        ),
        (
            r#"base_interval = "1s", max_interval = "500ms""#,
            "t.toml:8:48: listeners[0].routes[0].retry.max_interval: must be at least base_interval (1s)",
        ),
        (
            "budget_ratio = 1.5",
            "t.toml:8:26: listeners[0].routes[0].retry.budget_ratio: must be greater than 0 and at most 1 (a share of the route's calls)",
        ),
        (
            r#"per_try_timeout = "soon""#,
            "t.toml:8:29: listeners[0].routes[0].retry.per_try_timeout: invalid duration \"soon\": expected a non-negative whole number followed by ms, s, m or h",
        ),
    ];
    let mut wrong = Vec::new();
    for (table, want) in cases {
        let got = lines(&with_retry(table));
        if got != [want] {
            wrong.push(format!("{table}\n  got  {got:?}\n  want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn ok_cannot_be_retried() {
    assert_eq!(
        lines(&with_retry(r#"on = ["ok"]"#)),
        ["t.toml:8:17: listeners[0].routes[0].retry.on[0]: OK is a success and is never retried"]
    );
}
