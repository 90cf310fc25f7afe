//! Retries by policy (`route.retry`, contract §4), beside the attempt loop.
//!
//! The attempt loop ([`crate::attempt`]) makes transparent retries on its own (a call that
//! provably never reached a backend). Beyond those, a route with a `retry` table gets a
//! [`Retrier`] per call, which decides after each attempt whether another one is made:
//!
//! - only for the listed final gRPC statuses (read from the verdict: a trailers-only
//!   answer, trailers that came before any message, a reset or lost connection before the
//!   first message) and for an attempt cut by `per_try_timeout`; never for what the
//!   client did, and never once the call's own deadline has passed;
//! - only while nothing of the response has reached the client: the attempt loop holds a
//!   response's head until its first message or its end ([`Retrier::may_retry`]), and
//!   a call whose first message went out is never retried;
//! - only while the request is still held for replay (64 KiB, and not still streaming):
//!   a retry wanted but impossible for that reason is logged and counted;
//! - at most `max_attempts` attempts that reached a backend, each preferring an endpoint
//!   not tried yet (the loop's avoid list);
//! - after a backoff ([`rpcgate_balance::Backoff`]) that must end before the deadline;
//! - within the route's retry budget ([`rpcgate_balance::RetryBudget`]): at most
//!   `budget_ratio` of the route's calls over the last 10 s, so a failing cluster is not
//!   hammered.
//!
//! A route without a `retry` table pays nothing: no budget, no hold, no [`Retrier`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rpcgate_balance::{Backoff, RetryBudget};
use rpcgate_config::RetryPolicy;
use tokio::time::Instant;

use crate::deadline::Deadline;
use crate::verdict::{Cause, Code, Fault, Verdict};

/// A route's retry policy, ready for the hot path, with its budget and counters.
#[derive(Debug)]
pub(crate) struct RetryState {
    /// Attempts in all that may reach a backend.
    max_attempts: u32,
    /// The retried codes.
    on: Vec<Code>,
    /// How long one attempt may wait for its response head.
    pub(crate) per_try_timeout: Option<Duration>,
    backoff: Backoff,
    budget: RetryBudget,
    /// Retries made (for metrics).
    pub(crate) retries: AtomicU64,
    /// Retries the policy wanted but could not make: the request was not held for replay.
    pub(crate) skipped: AtomicU64,
}

impl RetryState {
    /// The state of a route's `retry` table.
    pub(crate) fn new(policy: &RetryPolicy) -> Self {
        Self {
            max_attempts: policy.max_attempts,
            on: policy.on.iter().copied().map(Code).collect(),
            per_try_timeout: policy.per_try_timeout,
            backoff: rpcgate_discovery::policy::backoff(policy),
            budget: rpcgate_discovery::policy::budget(policy),
            retries: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// Whether the policy asks for a call that ended this way to be tried again.
    fn wants(&self, cause: &Cause, fault: Fault, code: Option<Code>) -> bool {
        match cause {
            Cause::PerTryTimeout(_) => true,
            // No time left, or the client's doing: never retried.
            Cause::DeadlineBeforeHead(_)
            | Cause::DeadlineMidStream
            | Cause::ClientCancelled(_)
            | Cause::ClientGone
            | Cause::SendTimeout => false,
            _ => fault == Fault::Upstream && code.is_some_and(|c| self.on.contains(&c)),
        }
    }
}

/// One call's retries.
#[derive(Debug)]
pub(crate) struct Retrier<'a> {
    state: &'a RetryState,
    /// Attempts so far that reached a backend (transparent retries do not count).
    attempts: u32,
    /// Retries made so far.
    pub(crate) retries: u32,
}

impl<'a> Retrier<'a> {
    /// Starts a call on a route with a retry policy (it counts in the budget).
    pub(crate) fn start(state: &'a RetryState) -> Self {
        state.budget.record_call();
        Self {
            state,
            attempts: 0,
            retries: 0,
        }
    }

    /// The route's `per_try_timeout`.
    pub(crate) fn per_try_timeout(&self) -> Option<Duration> {
        self.state.per_try_timeout
    }

    /// Whether a failure of the next attempt could still be retried, so its response head
    /// is worth holding until the first message.
    pub(crate) fn may_retry(&self, body_replayable: bool) -> bool {
        body_replayable && self.attempts + 1 < self.state.max_attempts
    }

    /// After an attempt that reached a backend and ended with `verdict` before anything
    /// went to the client: the backoff to wait before the next attempt, or `None` when
    /// the call ends with this verdict.
    pub(crate) fn after(
        &mut self,
        verdict: &Verdict,
        body_replayable: bool,
        deadline: Option<Deadline>,
        route: &str,
    ) -> Option<Duration> {
        self.after_status(
            &verdict.cause,
            verdict.fault,
            verdict.code,
            body_replayable,
            deadline,
            route,
        )
    }

    /// [`Retrier::after`] from the parts of a verdict not yet built (a held response).
    pub(crate) fn after_status(
        &mut self,
        cause: &Cause,
        fault: Fault,
        code: Option<Code>,
        body_replayable: bool,
        deadline: Option<Deadline>,
        route: &str,
    ) -> Option<Duration> {
        self.attempts += 1;
        if !self.state.wants(cause, fault, code) {
            return None;
        }
        let code_name = code.map_or("-", Code::name);
        if !body_replayable {
            self.state.skipped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                route,
                code = code_name,
                "not retried: the request is over the 64 KiB replay buffer or still streaming"
            );
            return None;
        }
        if self.attempts >= self.state.max_attempts {
            tracing::debug!(
                route,
                code = code_name,
                attempts = self.attempts,
                "not retried: max_attempts reached"
            );
            return None;
        }
        let delay = self.state.backoff.delay(self.retries + 1);
        if let Some(deadline) = deadline
            && Instant::now() + delay >= deadline.at
        {
            tracing::debug!(
                route,
                code = code_name,
                "not retried: the backoff would outlast the call's deadline"
            );
            return None;
        }
        if !self.state.budget.try_spend() {
            tracing::debug!(
                route,
                code = code_name,
                "not retried: the route's retry budget is spent"
            );
            return None;
        }
        self.retries += 1;
        self.state.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            route,
            code = code_name,
            retry = self.retries,
            ?delay,
            "retrying"
        );
        Some(delay)
    }
}
