//! A per-cluster circuit breaker with sony/gobreaker's semantics over a rolling window.
//!
//! Why a breaker on top of passive health: passive health takes *one endpoint* out; a
//! breaker stops sending to a *whole cluster* that is failing (every endpoint down, an
//! overloaded dependency), so callers fail fast instead of queueing behind timeouts and
//! the cluster gets room to recover.
//!
//! The states, as in gobreaker:
//!
//! - **Closed**: calls pass; their outcomes are counted in a rolling window of
//!   `window` (ten buckets, see `window.rs`: an outcome is forgotten between 0.9 ×
//!   `window` and `window` after it was recorded). When a *failure* leaves at least
//!   `min_requests` outcomes in the window with `failures / requests >= failure_ratio`,
//!   the breaker opens (gobreaker's `ReadyToTrip` also only runs on a failure). Unlike
//!   gobreaker's default fixed `Interval`, the window rolls, so a burst of failures at
//!   the end of one interval and the start of the next is seen as one burst.
//! - **Open**: every call is rejected with the time left until `open_duration` has
//!   passed since the breaker opened. The first [`CircuitBreaker::admit`] after that
//!   turns the breaker half-open and is the first trial call.
//! - **HalfOpen**: at most `half_open_requests` trial calls are in flight at once
//!   (gobreaker's `MaxRequests`); more are rejected. A failed trial opens the breaker
//!   again for a new `open_duration`; `half_open_requests` consecutive successes close
//!   it with empty counts. gobreaker limits the trials *admitted* per half-open period;
//!   here a trial whose ticket is dropped without an outcome (a cancelled call) frees
//!   its slot, so cancelled trials cannot wedge the breaker half-open. The limit is per
//!   half-open period: trials still running from an earlier period (one that a failed
//!   trial ended) no longer hold a slot, as in gobreaker.
//!
//! Every state change starts a new *generation*; an outcome recorded on a ticket from an
//! earlier generation (a call admitted while closed that ends after the breaker opened)
//! is ignored, as in gobreaker.
//!
//! Concurrency: the state and generation are one atomic word and the open deadline
//! another, so admitting a call while closed is one atomic load and the ticket's `Arc`
//! clone (no lock, no clock read), and rejecting one while open is two loads and a clock
//! read. Recording a success while closed is a clock read and one `fetch_add` into the
//! lock-free window.
//! A small mutex serialises state changes and holds the half-open trial counts: it is
//! taken by a failure while closed (to decide whether to trip) and by anything while
//! half-open, where at most `half_open_requests` calls are running, so it stays
//! uncontended.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::nanos_since;
use crate::window::RollingCounts;

/// When a cluster's breaker trips and how it recovers (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Failure share of the window's outcomes at or above which a failure trips the
    /// breaker. Above 1.0 (or NaN) it never trips; at or below 0.0 any failure trips it
    /// once `min_requests` is reached.
    pub failure_ratio: f64,
    /// Outcomes the window must hold before the ratio is considered, so a quiet cluster
    /// is not opened by its first failure.
    pub min_requests: u32,
    /// Length of the rolling window of outcomes (ten buckets of `window / 10`).
    pub window: Duration,
    /// How long the breaker stays open before it lets trial calls through.
    pub open_duration: Duration,
    /// Trial calls allowed in flight while half-open, and the consecutive successes that
    /// close the breaker; 0 is treated as 1 (as gobreaker's `MaxRequests`).
    pub half_open_requests: u32,
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls pass and their outcomes are counted.
    Closed,
    /// Calls are rejected until the open period ends.
    Open,
    /// A few trial calls pass to probe whether the cluster recovered.
    HalfOpen,
}

impl BreakerState {
    /// The state as a Prometheus gauge value: 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    /// The state's name as logged and shown by the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    fn bits(self) -> u64 {
        u64::from(self.as_gauge())
    }

    fn from_bits(bits: u64) -> Self {
        match bits & STATE_MASK {
            0 => Self::Closed,
            1 => Self::Open,
            _ => Self::HalfOpen,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change, with the counts that caused it, for a warn log line and a metric.
///
/// - closed → open: the window's outcomes when the tripping failure was recorded;
/// - open → half-open: 0 and 0 (time caused it, not calls);
/// - half-open → open: the trials recorded in that half-open period (the successes and
///   the one failure), failures 1;
/// - half-open → closed: the successful trials (`half_open_requests`), failures 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: BreakerState,
    /// The state entered.
    pub to: BreakerState,
    /// Outcomes counted when the change happened (see the type docs).
    pub requests: u32,
    /// Failures among them.
    pub failures: u32,
}

/// An admitted call: record its outcome on the ticket.
#[derive(Debug)]
#[must_use = "the ticket records the call's outcome; keep it until the call completes"]
pub struct Admission {
    /// Records the call's outcome; dropping it records nothing.
    pub ticket: BreakerTicket,
    /// The state change this admission made (open → half-open when the open period had
    /// ended: this call is the first trial), to be logged.
    pub transition: Option<Transition>,
}

/// A call the breaker refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// How long until the breaker lets a call through again: the rest of the open period
    /// while open; `Duration::ZERO` while half-open with every trial slot taken, since a
    /// slot frees as soon as a trial call ends and the breaker cannot know when that is.
    pub retry_after: Duration,
    /// A state change made while deciding. Always `None` so far: the admission that ends
    /// an open period is itself admitted as the first trial and reports the change in
    /// [`Admission::transition`]. Kept so both outcomes of [`CircuitBreaker::admit`] are
    /// logged the same way.
    pub transition: Option<Transition>,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rejected by the circuit breaker, retry after {:?}",
            self.retry_after
        )
    }
}

impl std::error::Error for Rejected {}

/// What the admin API shows of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSnapshot {
    /// The state the next call would find: an open breaker whose open period has ended
    /// shows as half-open even before a call made the change.
    pub state: BreakerState,
    /// Outcomes counted in the current state: the window's while closed, the successful
    /// trials while half-open, 0 while open (counts are reset when the breaker opens).
    pub requests: u32,
    /// Failures among them (0 unless closed: a failed trial reopens the breaker).
    pub failures: u32,
    /// Time left in the open period while open, else `None`.
    pub open_until_remaining: Option<Duration>,
}

/// Low bits of the state word holding the state; the rest is the generation.
const STATE_BITS: u32 = 2;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

fn word(state: BreakerState, generation: u64) -> u64 {
    (generation << STATE_BITS) | state.bits()
}

fn generation_of(word: u64) -> u64 {
    word >> STATE_BITS
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn saturate_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Half-open trial bookkeeping; its mutex also serialises state changes.
#[derive(Debug, Default)]
struct Trials {
    in_flight: u32,
    successes: u32,
}

#[derive(Debug)]
struct Shared {
    policy: BreakerPolicy,
    /// `half_open_requests`, at least 1.
    trials: u32,
    /// Origin of the nanosecond timestamps below.
    epoch: Instant,
    /// State (low bits) and generation; written only with `control` held.
    word: AtomicU64,
    /// Nanoseconds since `epoch` at which the open period ends (meaningful while open);
    /// stored before the word that announces the open state.
    open_until: AtomicU64,
    /// Closed-state outcomes: `a` = requests, `b` = failures.
    window: RollingCounts,
    control: Mutex<Trials>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Trials> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ns(&self) -> u64 {
        nanos_since(self.epoch, Instant::now())
    }

    /// Opens the breaker at `now_ns`, as generation `generation`. Caller holds `control`.
    fn open(&self, generation: u64, now_ns: u64) {
        self.open_until.store(
            now_ns.saturating_add(duration_ns(self.policy.open_duration)),
            Ordering::SeqCst,
        );
        self.window.clear();
        self.word
            .store(word(BreakerState::Open, generation), Ordering::SeqCst);
    }

    fn ticket(self: &Arc<Self>, word: u64) -> BreakerTicket {
        BreakerTicket {
            shared: Arc::clone(self),
            word,
            settled: false,
        }
    }

    /// Admission when the breaker is not (or no longer) simply closed.
    fn admit_slow(self: &Arc<Self>) -> Result<Admission, Rejected> {
        let mut trials = self.lock();
        let mut current = self.word.load(Ordering::SeqCst);
        let mut transition = None;
        match BreakerState::from_bits(current) {
            BreakerState::Closed => {
                return Ok(Admission {
                    ticket: self.ticket(current),
                    transition: None,
                });
            }
            BreakerState::Open => {
                let now_ns = self.now_ns();
                let until = self.open_until.load(Ordering::SeqCst);
                if now_ns < until {
                    return Err(Rejected {
                        retry_after: Duration::from_nanos(until - now_ns),
                        transition: None,
                    });
                }
                *trials = Trials::default();
                current = word(BreakerState::HalfOpen, generation_of(current) + 1);
                self.word.store(current, Ordering::SeqCst);
                transition = Some(Transition {
                    from: BreakerState::Open,
                    to: BreakerState::HalfOpen,
                    requests: 0,
                    failures: 0,
                });
            }
            BreakerState::HalfOpen => {}
        }
        if trials.in_flight >= self.trials {
            return Err(Rejected {
                retry_after: Duration::ZERO,
                transition: None,
            });
        }
        trials.in_flight += 1;
        Ok(Admission {
            ticket: self.ticket(current),
            transition,
        })
    }

    /// A closed-state outcome of a ticket issued with `issued`.
    fn record_closed(&self, issued: u64, success: bool) -> Option<Transition> {
        if self.word.load(Ordering::SeqCst) != issued {
            return None;
        }
        let now_ns = self.now_ns();
        if success {
            self.window.add(now_ns, 1, 0);
            return None;
        }
        self.window.add(now_ns, 1, 1);
        let (requests, failures) = self.window.sum(now_ns);
        let policy = &self.policy;
        let trips = requests >= u64::from(policy.min_requests)
            && requests > 0
            && failures as f64 / requests as f64 >= policy.failure_ratio;
        if !trips {
            return None;
        }
        let _trials = self.lock();
        // Another failure may have tripped it meanwhile.
        if self.word.load(Ordering::SeqCst) != issued {
            return None;
        }
        self.open(generation_of(issued) + 1, now_ns);
        Some(Transition {
            from: BreakerState::Closed,
            to: BreakerState::Open,
            requests: saturate_u32(requests),
            failures: saturate_u32(failures),
        })
    }

    /// A trial's outcome (`Some`) or its cancellation (`None`).
    fn record_trial(&self, issued: u64, success: Option<bool>) -> Option<Transition> {
        let mut trials = self.lock();
        if self.word.load(Ordering::SeqCst) != issued {
            // The half-open period this trial belonged to is over.
            return None;
        }
        trials.in_flight = trials.in_flight.saturating_sub(1);
        let next = generation_of(issued) + 1;
        match success {
            None => None,
            Some(true) => {
                trials.successes += 1;
                if trials.successes < self.trials {
                    return None;
                }
                let requests = trials.successes;
                *trials = Trials::default();
                self.window.clear();
                self.word
                    .store(word(BreakerState::Closed, next), Ordering::SeqCst);
                Some(Transition {
                    from: BreakerState::HalfOpen,
                    to: BreakerState::Closed,
                    requests,
                    failures: 0,
                })
            }
            Some(false) => {
                let requests = trials.successes + 1;
                *trials = Trials::default();
                self.open(next, self.now_ns());
                Some(Transition {
                    from: BreakerState::HalfOpen,
                    to: BreakerState::Open,
                    requests,
                    failures: 1,
                })
            }
        }
    }
}

/// A per-cluster circuit breaker (see the module docs). Shared by reference: `admit`
/// takes `&self` and tickets keep the breaker's state alive on their own.
#[derive(Debug)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

impl CircuitBreaker {
    /// A closed breaker with empty counts.
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            shared: Arc::new(Shared {
                policy,
                trials: policy.half_open_requests.max(1),
                epoch: Instant::now(),
                word: AtomicU64::new(word(BreakerState::Closed, 0)),
                open_until: AtomicU64::new(0),
                window: RollingCounts::new(policy.window),
                control: Mutex::new(Trials::default()),
            }),
        }
    }

    /// The policy this breaker applies.
    pub fn policy(&self) -> BreakerPolicy {
        self.shared.policy
    }

    /// Asks to start a call: `Ok` with a ticket to record its outcome on, or `Err` when
    /// the breaker is open or has every half-open trial slot taken. Either may carry a
    /// state change to log.
    pub fn admit(&self) -> Result<Admission, Rejected> {
        let shared = &self.shared;
        let current = shared.word.load(Ordering::SeqCst);
        match BreakerState::from_bits(current) {
            BreakerState::Closed => Ok(Admission {
                ticket: shared.ticket(current),
                transition: None,
            }),
            BreakerState::Open => {
                // Fast rejection without the lock while the open period lasts.
                let now_ns = shared.now_ns();
                let until = shared.open_until.load(Ordering::SeqCst);
                if now_ns < until {
                    return Err(Rejected {
                        retry_after: Duration::from_nanos(until - now_ns),
                        transition: None,
                    });
                }
                shared.admit_slow()
            }
            BreakerState::HalfOpen => shared.admit_slow(),
        }
    }

    /// The state and counts as of now, for the admin API and metrics.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let shared = &self.shared;
        let trials = shared.lock();
        let current = shared.word.load(Ordering::SeqCst);
        let now_ns = shared.now_ns();
        match BreakerState::from_bits(current) {
            BreakerState::Closed => {
                let (requests, failures) = shared.window.sum(now_ns);
                BreakerSnapshot {
                    state: BreakerState::Closed,
                    requests: saturate_u32(requests),
                    failures: saturate_u32(failures),
                    open_until_remaining: None,
                }
            }
            BreakerState::Open => {
                let until = shared.open_until.load(Ordering::SeqCst);
                if now_ns < until {
                    BreakerSnapshot {
                        state: BreakerState::Open,
                        requests: 0,
                        failures: 0,
                        open_until_remaining: Some(Duration::from_nanos(until - now_ns)),
                    }
                } else {
                    BreakerSnapshot {
                        state: BreakerState::HalfOpen,
                        requests: 0,
                        failures: 0,
                        open_until_remaining: None,
                    }
                }
            }
            BreakerState::HalfOpen => BreakerSnapshot {
                state: BreakerState::HalfOpen,
                requests: trials.successes,
                failures: 0,
                open_until_remaining: None,
            },
        }
    }
}

/// One admitted call. Record its outcome with [`BreakerTicket::record`]; dropping the
/// ticket instead (a cancelled call) counts nothing and frees a half-open trial slot.
#[derive(Debug)]
#[must_use = "dropping the ticket forgets the call's outcome; record it when the call ends"]
pub struct BreakerTicket {
    shared: Arc<Shared>,
    /// The state word when the call was admitted.
    word: u64,
    /// Whether the outcome was recorded (so `Drop` has nothing to release).
    settled: bool,
}

impl BreakerTicket {
    /// Whether this call is a half-open trial (its outcome decides whether the breaker
    /// closes or opens again).
    pub fn is_trial(&self) -> bool {
        BreakerState::from_bits(self.word) == BreakerState::HalfOpen
    }

    /// Records the call's outcome; returns the state change it caused, if any. An
    /// outcome from an earlier state (the breaker changed state while the call ran) is
    /// ignored.
    pub fn record(mut self, success: bool) -> Option<Transition> {
        self.settled = true;
        if self.is_trial() {
            self.shared.record_trial(self.word, Some(success))
        } else {
            self.shared.record_closed(self.word, success)
        }
    }
}

impl Drop for BreakerTicket {
    fn drop(&mut self) {
        if !self.settled && self.is_trial() {
            self.shared.record_trial(self.word, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn breaker_types_are_send_and_sync() {
        assert_send_sync::<CircuitBreaker>();
        assert_send_sync::<BreakerTicket>();
        assert_send_sync::<Admission>();
    }

    #[test]
    fn states_export_as_gauges_and_names() {
        let all = [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ];
        assert_eq!(all.map(BreakerState::as_gauge), [0, 1, 2]);
        assert_eq!(all.map(|s| s.to_string()), ["closed", "open", "half_open"]);
        for s in all {
            assert_eq!(BreakerState::from_bits(word(s, 7)), s);
            assert_eq!(generation_of(word(s, 7)), 7);
        }
    }
}
