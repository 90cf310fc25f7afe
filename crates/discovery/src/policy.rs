//! A cluster's and a route's settings from the configuration, in the balance crate's
//! types: the one mapping the proxy and `rpcgate-client` share, so both read the same TOML
//! tables into the same policies (issue 11's "one policy model").
//!
//! It lives here because this crate is the one both depend on that knows the
//! configuration and the balancer alike.

use rpcgate_balance::{
    Backoff, BackoffKind, BreakerPolicy, PassiveHealthPolicy, Policy, RETRY_BUDGET_MIN,
    RETRY_BUDGET_WINDOW, RetryBudget,
};
use rpcgate_config::{CircuitBreaker, HashKey, LbPolicy, PassiveHealth, RetryBackoff, RetryPolicy};

/// The picker of `lb`, and for `ring_hash` where its key comes from.
pub fn picker(lb: &LbPolicy) -> (Policy, Option<HashKey>) {
    match lb {
        LbPolicy::RoundRobin => (Policy::RoundRobin, None),
        LbPolicy::LeastRequest => (Policy::LeastRequest, None),
        LbPolicy::P2cEwma => (Policy::P2cEwma, None),
        LbPolicy::Random => (Policy::Random, None),
        LbPolicy::RingHash(key) => (Policy::RingHash, Some(key.clone())),
    }
}

/// `passive_health`.
pub fn passive(health: &PassiveHealth) -> PassiveHealthPolicy {
    PassiveHealthPolicy {
        max_fails: health.max_fails,
        fail_timeout: health.fail_timeout,
    }
}

/// `circuit_breaker`.
pub fn breaker(breaker: &CircuitBreaker) -> BreakerPolicy {
    BreakerPolicy {
        failure_ratio: breaker.failure_ratio,
        min_requests: breaker.min_requests,
        window: breaker.window,
        open_duration: breaker.open_duration,
        half_open_requests: breaker.half_open_requests,
    }
}

/// The waits between a route's retries.
pub fn backoff(retry: &RetryPolicy) -> Backoff {
    Backoff {
        kind: match retry.backoff {
            RetryBackoff::Linear => BackoffKind::Linear,
            RetryBackoff::Exponential => BackoffKind::Exponential,
        },
        base: retry.base_interval,
        max: retry.max_interval,
        jitter: retry.jitter,
    }
}

/// A route's retry budget.
pub fn budget(retry: &RetryPolicy) -> RetryBudget {
    RetryBudget::new(retry.budget_ratio, RETRY_BUDGET_MIN, RETRY_BUDGET_WINDOW)
}
