//! The last minutes of totals, one sample a second, for what counters alone cannot say:
//! calls/s, errors/s and p99 *now* (over [`RATE_WINDOW`]), and the dashboard's charts.
//!
//! The observer calls [`History::record`] once a second on the control runtime; `/status`
//! reads. A sample holds cumulative totals (calls, errors, the latency histogram) per
//! cluster and per endpoint, so any window is the difference of two samples.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rpcgate_balance::{Endpoint, HistogramSnapshot, NO_CODE};
use tokio::time::Instant;

use super::View;

/// The window of the rates and percentiles `/status` shows.
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Samples kept: five minutes at one a second, plus the one a first difference needs.
const KEEP: usize = 301;

/// Cumulative totals of a cluster or an endpoint at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Totals {
    /// Calls (for an endpoint: attempts) that ended.
    pub(crate) calls: u64,
    /// Those that ended with a gRPC status other than OK.
    pub(crate) errors: u64,
    /// Their durations.
    pub(crate) latency: HistogramSnapshot,
}

impl Totals {
    /// Totals from per-code counts and a histogram.
    pub(crate) fn from_codes(codes: &[u64], latency: HistogramSnapshot) -> Self {
        Self {
            calls: codes.iter().sum(),
            errors: codes
                .iter()
                .enumerate()
                .filter(|&(code, _)| code != 0 && code != NO_CODE)
                .map(|(_, n)| n)
                .sum(),
            latency,
        }
    }

    /// An endpoint's totals now.
    pub(crate) fn of_endpoint(endpoint: &Endpoint) -> Self {
        let outcomes = endpoint.outcomes();
        Self::from_codes(&outcomes.codes.snapshot(), outcomes.latency.snapshot())
    }

    fn add(&mut self, other: &Totals) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.latency.add(&other.latency);
    }
}

/// What happened over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Rates {
    pub(crate) calls_per_s: f64,
    pub(crate) errors_per_s: f64,
    /// The 99th percentile in ms; `None` without calls in the window.
    pub(crate) p99_ms: Option<f64>,
}

impl Rates {
    fn between(now: &Totals, then: &Totals, seconds: f64) -> Self {
        if seconds <= 0.0 {
            return Self::default();
        }
        Self {
            calls_per_s: now.calls.saturating_sub(then.calls) as f64 / seconds,
            errors_per_s: now.errors.saturating_sub(then.errors) as f64 / seconds,
            p99_ms: now
                .latency
                .since(&then.latency)
                .quantile(0.99)
                .map(|s| s * 1e3),
        }
    }
}

#[derive(Debug)]
struct Sample {
    at: Instant,
    clusters: HashMap<Arc<str>, Totals>,
    endpoints: HashMap<u64, Totals>,
}

/// The samples, oldest first.
#[derive(Debug, Default)]
pub(crate) struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Takes a sample of `view` now.
    pub(crate) fn record(&self, view: &View) {
        let mut clusters: HashMap<Arc<str>, Totals> = HashMap::new();
        for route in view.stats.routes() {
            if route.cluster.is_empty() {
                continue;
            }
            let totals = clusters.entry(route.cluster.clone()).or_default();
            for method in route.methods() {
                totals.add(&Totals::from_codes(
                    &method.codes.snapshot(),
                    method.latency.snapshot(),
                ));
            }
        }
        let generation = view.generations.load();
        let endpoints = generation
            .clusters()
            .iter()
            .flat_map(|c| c.balancer.endpoints().to_vec())
            .map(|e| (e.id(), Totals::of_endpoint(&e)))
            .collect();
        let sample = Sample {
            at: Instant::now(),
            clusters,
            endpoints,
        };
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() == KEEP {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The rates over the last [`RATE_WINDOW`] (or as much of it as was sampled).
    pub(crate) fn recent(&self) -> Recent {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(last) = samples.back() else {
            return Recent::default();
        };
        let first = samples
            .iter()
            .find(|s| last.at.duration_since(s.at) <= RATE_WINDOW)
            .unwrap_or(last);
        let seconds = last.at.duration_since(first.at).as_secs_f64();
        let rates = |now: Option<&Totals>, then: Option<&Totals>| match (now, then) {
            (Some(now), Some(then)) => Rates::between(now, then, seconds),
            (Some(now), None) => Rates::between(now, &Totals::default(), seconds),
            _ => Rates::default(),
        };
        Recent {
            clusters: last
                .clusters
                .iter()
                .map(|(name, now)| (name.clone(), rates(Some(now), first.clusters.get(name))))
                .collect(),
            endpoints: last
                .endpoints
                .iter()
                .map(|(id, now)| (*id, rates(Some(now), first.endpoints.get(id))))
                .collect(),
        }
    }

    /// A cluster's calls/s and errors/s in each second sampled, oldest first.
    pub(crate) fn series(&self, cluster: &str) -> (Vec<f64>, Vec<f64>) {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let mut calls = Vec::with_capacity(samples.len());
        let mut errors = Vec::with_capacity(samples.len());
        for (before, after) in samples.iter().zip(samples.iter().skip(1)) {
            let seconds = after.at.duration_since(before.at).as_secs_f64();
            let zero = Totals::default();
            let then = before.clusters.get(cluster).unwrap_or(&zero);
            let now = after.clusters.get(cluster).unwrap_or(&zero);
            let rates = Rates::between(now, then, seconds);
            calls.push(round(rates.calls_per_s));
            errors.push(round(rates.errors_per_s));
        }
        (calls, errors)
    }
}

/// Rates per cluster (by name) and per endpoint (by id).
#[derive(Debug, Default)]
pub(crate) struct Recent {
    pub(crate) clusters: HashMap<Arc<str>, Rates>,
    pub(crate) endpoints: HashMap<u64, Rates>,
}

/// Two decimals: what a person reads, and a smaller JSON.
pub(crate) fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
