//! How a source (etcd, look-aside) and a registration retry after losing their server:
//! a wait that starts at [`FIRST_WAIT`] and doubles up to [`MAX_WAIT`], started over once
//! the server answered again, and each distinct error logged once rather than on every
//! attempt.

use std::time::Duration;

/// The first wait after a failure.
pub const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
pub const MAX_WAIT: Duration = Duration::from_secs(2);

/// One retry loop's state.
#[derive(Debug)]
pub(crate) struct Reconnect {
    wait: Duration,
    last_error: Option<String>,
}

impl Reconnect {
    pub(crate) fn new() -> Self {
        Self {
            wait: FIRST_WAIT,
            last_error: None,
        }
    }

    /// The server answered since the last failure: the next failure waits little again
    /// and is logged even if it is the one before.
    pub(crate) fn answered(&mut self) {
        self.wait = FIRST_WAIT;
        self.last_error = None;
    }

    /// Records a failure; true when it is not the one last recorded (worth a log line).
    pub(crate) fn failed(&mut self, error: &str) -> bool {
        if self.last_error.as_deref() == Some(error) {
            return false;
        }
        self.last_error = Some(error.to_owned());
        true
    }

    /// The wait before the next attempt; the one after it is twice as long (capped).
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.wait;
        self.wait = (self.wait * 2).min(MAX_WAIT);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_logs_each_error_once_and_starts_over_on_an_answer() {
        let mut r = Reconnect::new();
        let waits: Vec<u128> = (0..7).map(|_| r.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert!(r.failed("refused") && !r.failed("refused") && r.failed("reset"));
        r.answered();
        assert_eq!(r.next_wait(), FIRST_WAIT);
        assert!(r.failed("reset"));
    }
}
