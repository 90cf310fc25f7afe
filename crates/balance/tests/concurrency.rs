//! Many threads picking and finishing calls at once, while the set changes.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use rpcgate_balance::{Balancer, EndpointSpec, Outcome, PassiveHealthPolicy, PickContext, Policy};

#[test]
fn concurrent_picks_and_calls_leave_counters_consistent() {
    const THREADS: usize = 4;
    const CALLS: usize = 5_000;
    for policy in [
        Policy::RoundRobin,
        Policy::LeastRequest,
        Policy::P2cEwma,
        Policy::Random,
        Policy::RingHash,
    ] {
        let specs = |w: u32| {
            vec![
                EndpointSpec::new("a").with_weight(w),
                EndpointSpec::new("b"),
                EndpointSpec::new("c"),
            ]
        };
        let passive = PassiveHealthPolicy {
            max_fails: 3,
            fail_timeout: Duration::from_millis(2),
        };
        let lb = Arc::new(Balancer::new(policy, passive, specs(1)));
        let stop = Arc::new(AtomicBool::new(false));
        let updater = {
            let (lb, stop) = (Arc::clone(&lb), Arc::clone(&stop));
            thread::spawn(move || {
                let mut w = 1;
                while !stop.load(Ordering::Relaxed) {
                    w = if w == 1 { 3 } else { 1 };
                    lb.set_endpoints(specs(w));
                    thread::yield_now();
                }
            })
        };
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let lb = Arc::clone(&lb);
                thread::spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..CALLS {
                        let ctx = PickContext {
                            hash: Some((i * 31 + t) as u64),
                            avoid: &[],
                        };
                        let call = lb.pick(&ctx).unwrap().endpoint.start_call();
                        match i % 5 {
                            0 => drop(call),
                            1 => {
                                call.finish(Outcome::Failure);
                            }
                            2 => held.push(call),
                            _ => {
                                call.finish(Outcome::Success);
                            }
                        }
                        if held.len() > 8 {
                            held.drain(..).for_each(|c| {
                                c.finish(Outcome::Success);
                            });
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        updater.join().unwrap();

        let eps = lb.endpoints();
        assert_eq!(eps.len(), 3);
        assert!(eps.iter().all(|e| e.in_flight() == 0), "{policy:?}");
        let requests: u64 = eps.iter().map(|e| e.requests()).sum();
        let failures: u64 = eps.iter().map(|e| e.failures()).sum();
        assert_eq!(requests, (THREADS * CALLS) as u64, "{policy:?}");
        assert_eq!(failures, (THREADS * CALLS / 5) as u64, "{policy:?}");
    }
}
