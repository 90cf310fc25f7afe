//! A cluster's `max_requests`, `circuit_breaker` and `active_health`: defaults, values
//! taken, and a clear error at each bad value.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{lines, minimal_with, ok};
use rpcgate_config::{ActiveHealth, CircuitBreaker};

/// MINIMAL's cluster with `extra` after its endpoints (line 12 of the file).
fn cluster_with(extra: &str) -> String {
    minimal_with("endpoints = [\"127.0.0.1:50051\"]", extra)
}

#[test]
fn max_requests_zero_or_absent_is_unlimited() {
    assert_eq!(ok(common::MINIMAL).clusters[0].max_requests, None);
    assert_eq!(
        ok(&cluster_with("max_requests = 0")).clusters[0].max_requests,
        None
    );
    assert_eq!(
        ok(&cluster_with("max_requests = 100")).clusters[0].max_requests,
        Some(100)
    );
}

#[test]
fn a_circuit_breaker_table_gets_its_defaults() {
    assert_eq!(ok(common::MINIMAL).clusters[0].circuit_breaker, None);
    assert_eq!(
        ok(&cluster_with("circuit_breaker = {}")).clusters[0].circuit_breaker,
        Some(CircuitBreaker {
            failure_ratio: 0.6,
            min_requests: 10,
            window: Duration::from_secs(10),
            open_duration: Duration::from_secs(5),
            half_open_requests: 3,
        })
    );
    let set = ok(&cluster_with(
        r#"circuit_breaker = { failure_ratio = 0.5, min_requests = 4, window = "30s", open_duration = "4s", half_open_requests = 2 }"#,
    ));
    assert_eq!(
        set.clusters[0].circuit_breaker,
        Some(CircuitBreaker {
            failure_ratio: 0.5,
            min_requests: 4,
            window: Duration::from_secs(30),
            open_duration: Duration::from_secs(4),
            half_open_requests: 2,
        })
    );
}

#[test]
fn bad_breaker_values_are_reported_at_the_value_with_the_key() {
    let cases = [
        (
            "failure_ratio = 0.0",
            "t.toml:12:37: clusters[0].circuit_breaker.failure_ratio: must be greater than 0 and at most 1 (the failed share of the window's calls)",
        ),
        (
            "min_requests = 0",
            "t.toml:12:36: clusters[0].circuit_breaker.min_requests: must be at least 1",
        ),
        (
            r#"window = "0s""#,
            "t.toml:12:30: clusters[0].circuit_breaker.window: must be greater than 0s",
        ),
        (
            r#"open_duration = "5 s""#,
            "t.toml:12:37: clusters[0].circuit_breaker.open_duration: invalid duration \"5 s\": unknown unit \" s\" (use ms, s, m or h)",
        ),
        (
            "half_open_requests = 0",
            "t.toml:12:42: clusters[0].circuit_breaker.half_open_requests: must be at least 1",
        ),
    ];
    let mut wrong = Vec::new();
    for (table, want) in cases {
        let got = lines(&cluster_with(&format!("circuit_breaker = {{ {table} }}")));
        if got != [want] {
            wrong.push(format!("{table}\n  got  {got:?}\n  want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn an_active_health_table_gets_its_defaults() {
    assert_eq!(ok(common::MINIMAL).clusters[0].active_health, None);
    assert_eq!(
        ok(&cluster_with("active_health = {}")).clusters[0].active_health,
        Some(ActiveHealth {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            grpc_service: String::new(),
            unhealthy_threshold: 2,
            healthy_threshold: 1,
        })
    );
    let set = ok(&cluster_with(
        r#"active_health = { interval = "5s", timeout = "500ms", grpc_service = "helloworld.Greeter", unhealthy_threshold = 3, healthy_threshold = 2 }"#,
    ));
    let a = set.clusters[0].active_health.clone().unwrap();
    assert_eq!(a.interval, Duration::from_secs(5));
    assert_eq!(a.timeout, Duration::from_millis(500));
    assert_eq!(a.grpc_service, "helloworld.Greeter");
    assert_eq!((a.unhealthy_threshold, a.healthy_threshold), (3, 2));
}

#[test]
fn bad_active_health_values_are_reported_at_the_value_with_the_key() {
    let cases = [
        (
            r#"interval = "0s""#,
            "t.toml:12:30: clusters[0].active_health.interval: must be greater than 0s",
        ),
        (
            r#"interval = "1s", timeout = "2s""#,
            "t.toml:12:46: clusters[0].active_health.timeout: must not be longer than interval (1s): probes would overlap",
        ),
        (
            "unhealthy_threshold = 0",
            "t.toml:12:41: clusters[0].active_health.unhealthy_threshold: must be at least 1",
        ),
    ];
    let mut wrong = Vec::new();
    for (table, want) in cases {
        let got = lines(&cluster_with(&format!("active_health = {{ {table} }}")));
        if got != [want] {
            wrong.push(format!("{table}\n  got  {got:?}\n  want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn slow_start_zero_or_absent_is_off() {
    assert_eq!(ok(common::MINIMAL).clusters[0].slow_start, None);
    assert_eq!(
        ok(&cluster_with(r#"slow_start = "0s""#)).clusters[0].slow_start,
        None
    );
    assert_eq!(
        ok(&cluster_with(r#"slow_start = "30s""#)).clusters[0].slow_start,
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        lines(&cluster_with(r#"slow_start = "30""#)),
        [
            "t.toml:12:14: clusters[0].slow_start: invalid duration \"30\": a unit is required (ms, s, m or h)"
        ]
    );
}

#[test]
fn active_health_needs_http2_and_a_short_interval_alone_is_fine() {
    let http1 = cluster_with("protocol = \"http1\"\nactive_health = {}");
    assert_eq!(
        lines(&http1),
        [
            "t.toml:13:1: clusters[0].active_health: active_health sends grpc.health.v1.Health/Check over HTTP/2; it cannot probe protocol = \"http1\" backends"
        ]
    );
    let short = ok(&cluster_with(r#"active_health = { interval = "500ms" }"#));
    let a = short.clusters[0].active_health.clone().unwrap();
    assert_eq!(
        a.timeout,
        Duration::from_millis(500),
        "the timeout follows a shorter interval"
    );
}

#[test]
fn settings_that_cannot_work_are_warned_about() {
    let ring = ok(&cluster_with(
        "lb = \"ring_hash\"\nhash_key = \"client_ip\"\nslow_start = \"30s\"",
    ));
    assert_eq!(ring.warnings.len(), 1, "{:?}", ring.warnings);
    assert!(
        ring.warnings[0].contains("clusters[0].slow_start: has no effect with lb = \"ring_hash\""),
        "{:?}",
        ring.warnings
    );
    let text = minimal_with(
        "cluster = \"backends\"",
        "timeout = \"1s\"\nretry = { per_try_timeout = \"2s\" }",
    );
    let route = ok(&text);
    assert!(
        route
            .warnings
            .iter()
            .any(|w| w
                .contains("retry.per_try_timeout: is not shorter than the route's timeout (1s)")),
        "{:?}",
        route.warnings
    );
}
