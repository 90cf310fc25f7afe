//! The warn line for a failure on the way to a backend (connect, TLS, a lost connection, a
//! reset stream), with the endpoint and the cause — at most one per endpoint every
//! [`INTERVAL`], saying how many more there were, so a dead backend under load does not
//! flood the log. The access log still has every call.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rpcgate_balance::Endpoint;
use tokio::time::Instant;

use crate::verdict::Cause;

/// The shortest time between two lines about one endpoint.
pub(crate) const INTERVAL: Duration = Duration::from_secs(5);

/// Endpoint id → when its last line was written and the failures not written since.
static LAST: Mutex<BTreeMap<u64, (Instant, u64)>> = Mutex::new(BTreeMap::new());

/// Entries kept before quiet ones are forgotten (endpoints come and go with discovery).
const KEEP: usize = 4096;

/// Logs (or counts, when a line about this endpoint was written lately) a failure.
pub(crate) fn failure(cluster: &str, endpoint: &Endpoint, cause: &Cause) {
    let now = Instant::now();
    let suppressed = {
        let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
        match last.get_mut(&endpoint.id()) {
            Some((at, skipped)) if now.duration_since(*at) < INTERVAL => {
                *skipped += 1;
                return;
            }
            Some(entry) => std::mem::replace(entry, (now, 0)).1,
            None => {
                if last.len() >= KEEP {
                    last.retain(|_, (at, _)| now.duration_since(*at) < INTERVAL);
                }
                last.insert(endpoint.id(), (now, 0));
                0
            }
        }
    };
    tracing::warn!(
        cluster,
        endpoint = endpoint.address(),
        reason = cause.reason().unwrap_or("-"),
        more_since_last = suppressed,
        "upstream failure: {cause}"
    );
}
