//! The test process's resident set size, to show that an attack does not grow memory.

use std::time::Duration;

/// This process's resident set size, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("no VmRSS in /proc/self/status")
}

/// The highest RSS seen while it runs: sampled every few milliseconds by a thread of
/// its own, so that a busy runtime cannot hide a short peak.
pub struct RssPeak {
    baseline: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<u64>,
}

impl RssPeak {
    pub fn start() -> Self {
        let baseline = rss_kib();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = rss_kib();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib());
                std::thread::sleep(Duration::from_millis(5));
            }
            peak.max(rss_kib())
        });
        Self {
            baseline,
            stop,
            sampler,
        }
    }

    /// The growth over the baseline at the peak, in KiB.
    pub fn growth(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.sampler.join().unwrap().saturating_sub(self.baseline)
    }
}
