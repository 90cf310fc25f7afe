//! Rate limits (`rate_limit` on listeners and routes): token buckets from `governor`
//! (GCRA: one atomic compare-and-swap per call, no timer, no task).
//!
//! `per = "listener"` is one bucket for every call. `per = "client_ip"` keys a bucket by
//! the client's address — an IPv6 client by its /64, since one host usually owns the
//! whole /64 and could otherwise rotate addresses to get fresh buckets. Memory is bounded
//! two ways: every second [`RateLimit::sweep`] (run by [`crate::observer`]) drops the
//! buckets that are full again (GCRA state that is indistinguishable from a new bucket, so
//! nothing is lost), and past `max_clients` tracked addresses, calls from any address
//! share [`CROWD_BUCKETS`] buckets by hash until a sweep brings the count back under the
//! cap. An attacker with many addresses then competes with itself, not with the memory.
//!
//! The clock is tokio's, so the paused-clock tests drive refills exactly.

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use rpcgate_config::{RateLimit as Settings, RateLimitScope};

/// Buckets that calls share by address hash while more than `max_clients` addresses are
/// tracked.
pub(crate) const CROWD_BUCKETS: u16 = 1024;

/// A rate limit, ready for the hot path.
#[derive(Debug)]
pub(crate) struct RateLimit {
    /// What the file said (to tell whether a reload changed it).
    pub(crate) settings: Settings,
    buckets: Buckets,
}

/// The buckets of one limit.
enum Buckets {
    /// One bucket for every call.
    Shared(Limiter<NotKeyed, InMemoryState>),
    /// One bucket per client address, with the shared ones for when too many are tracked.
    PerClient {
        clients: Limiter<ClientKey, DashMapStateStore<ClientKey>>,
        crowd: Limiter<u16, DashMapStateStore<u16>>,
        crowded: AtomicBool,
        max_clients: usize,
    },
}

impl std::fmt::Debug for Buckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Buckets::Shared(_) => f.write_str("Shared"),
            Buckets::PerClient { clients, .. } => write!(f, "PerClient({})", clients.len()),
        }
    }
}

type Limiter<K, S> = RateLimiter<K, S, TokioClock, NoOpMiddleware<TokioInstant>>;

/// The part of a client address a bucket is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClientKey {
    V4([u8; 4]),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl ClientKey {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4.octets()),
                None => ClientKey::V6((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

impl RateLimit {
    /// The buckets for `settings`, all full.
    pub(crate) fn new(settings: &Settings) -> Self {
        let quota = quota(settings);
        let buckets = match settings.per {
            RateLimitScope::Listener => Buckets::Shared(RateLimiter::new(
                quota,
                InMemoryState::default(),
                TokioClock,
            )),
            RateLimitScope::ClientIp => Buckets::PerClient {
                clients: RateLimiter::new(quota, DashMapStateStore::default(), TokioClock),
                crowd: RateLimiter::new(quota, DashMapStateStore::default(), TokioClock),
                crowded: AtomicBool::new(false),
                max_clients: settings.max_clients,
            },
        };
        Self {
            settings: settings.clone(),
            buckets,
        }
    }

    /// Takes a token for a call from `client`; `Err` with how long until one is free.
    pub(crate) fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let outcome = match &self.buckets {
            Buckets::Shared(limiter) => limiter.check(),
            Buckets::PerClient {
                clients,
                crowd,
                crowded,
                ..
            } => {
                let key = ClientKey::of(client);
                if crowded.load(Ordering::Relaxed) {
                    let slot = crowd_hasher().hash_one(key) % u64::from(CROWD_BUCKETS);
                    crowd.check_key(&(slot as u16))
                } else {
                    clients.check_key(&key)
                }
            }
        };
        outcome.map_err(|not_until| not_until.wait_time_from(TokioClock.now()))
    }

    /// Drops the buckets that are full again and decides whether calls share the crowd
    /// buckets until the next sweep. Returns the addresses tracked after it.
    pub(crate) fn sweep(&self) -> usize {
        let Buckets::PerClient {
            clients,
            crowd,
            crowded,
            max_clients,
        } = &self.buckets
        else {
            return 0;
        };
        clients.retain_recent();
        clients.shrink_to_fit();
        crowd.retain_recent();
        let tracked = clients.len();
        let over = tracked >= *max_clients;
        if crowded.swap(over, Ordering::Relaxed) != over {
            if over {
                tracing::warn!(
                    tracked,
                    max_clients,
                    "rate limit: max_clients addresses are tracked; new calls share {CROWD_BUCKETS} buckets by address until idle ones are dropped"
                );
            } else {
                tracing::info!(
                    tracked,
                    "rate limit: back under max_clients; every address has its own bucket again"
                );
            }
        }
        tracked
    }

    /// Client addresses with a bucket now (0 for `per = "listener"`).
    pub(crate) fn tracked(&self) -> usize {
        match &self.buckets {
            Buckets::Shared(_) => 0,
            Buckets::PerClient { clients, .. } => clients.len(),
        }
    }

    /// Whether calls share the crowd buckets until the next sweep (`max_clients` reached).
    pub(crate) fn crowded(&self) -> bool {
        match &self.buckets {
            Buckets::Shared(_) => false,
            Buckets::PerClient { crowded, .. } => crowded.load(Ordering::Relaxed),
        }
    }

    /// How the limit reads in a client's message: `50 calls/s per client address`.
    pub(crate) fn describe(&self) -> String {
        let per = match self.settings.per {
            RateLimitScope::ClientIp => "per client address",
            RateLimitScope::Listener => "for all clients",
        };
        let rate = self.settings.requests_per_second;
        let calls = if rate == 1.0 { "call" } else { "calls" };
        format!("{rate} {calls}/s, burst {}, {per}", self.settings.burst)
    }
}

/// A hasher with fixed keys for the crowd slots: the slot of an address must not change
/// between calls.
fn crowd_hasher() -> std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher> {
    std::hash::BuildHasherDefault::default()
}

/// `burst` calls at once, refilled at one per `1 / requests_per_second`.
fn quota(settings: &Settings) -> Quota {
    let period =
        Duration::from_secs_f64(1.0 / settings.requests_per_second).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(settings.burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst)
}

/// `grpc-retry-pushback-ms` for gRPC, `retry-after` (whole seconds, at least 1) for HTTP:
/// when to come back.
pub(crate) fn set_hint(headers: &mut http::HeaderMap, grpc: bool, wait: Duration) {
    if grpc {
        let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        headers.insert("grpc-retry-pushback-ms", http::HeaderValue::from(millis));
    } else {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from(seconds.max(1)),
        );
    }
}

/// governor's clock on tokio's time, so a paused test clock drives the buckets.
#[derive(Debug, Clone, Copy, Default)]
struct TokioClock;

/// A tokio instant as governor's reference point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct TokioInstant(tokio::time::Instant);

impl Add<Nanos> for TokioInstant {
    type Output = Self;

    fn add(self, other: Nanos) -> Self {
        Self(self.0 + Duration::from(other))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_duration_since(earlier.0))
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        self.0
            .checked_sub(Duration::from(duration))
            .map_or(*self, Self)
    }
}

impl Clock for TokioClock {
    type Instant = TokioInstant;

    fn now(&self) -> TokioInstant {
        TokioInstant(tokio::time::Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rate: f64, burst: u32, per: RateLimitScope, max_clients: usize) -> RateLimit {
        RateLimit::new(&Settings {
            requests_per_second: rate,
            burst,
            per,
            max_clients,
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| panic!("{text}"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_rate_with_the_wait_until_the_next_token() {
        let limit = limit(10.0, 3, RateLimitScope::ClientIp, 100);
        let client = ip("192.0.2.1");
        for _ in 0..3 {
            assert!(limit.check(client).is_ok());
        }
        let wait = limit.check(client).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // Another address has its own bucket.
        assert!(limit.check(ip("192.0.2.2")).is_ok());
        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(limit.check(client).is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(limit.check(client).is_ok());
        assert!(limit.check(client).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn per_listener_is_one_bucket_for_everyone() {
        let limit = limit(1.0, 2, RateLimitScope::Listener, 100);
        assert!(limit.check(ip("192.0.2.1")).is_ok());
        assert!(limit.check(ip("192.0.2.2")).is_ok());
        assert_eq!(limit.check(ip("192.0.2.3")), Err(Duration::from_secs(1)));
        assert_eq!(limit.sweep(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ipv6_client_is_one_bucket_per_64_and_mapped_v4_is_v4() {
        let limit = limit(1.0, 1, RateLimitScope::ClientIp, 100);
        assert!(limit.check(ip("2001:db8::1")).is_ok());
        assert!(limit.check(ip("2001:db8::2")).is_err());
        assert!(limit.check(ip("2001:db8:0:1::1")).is_ok());
        assert!(limit.check(ip("192.0.2.7")).is_ok());
        assert!(limit.check(ip("::ffff:192.0.2.7")).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_buckets_are_dropped_and_the_cap_makes_addresses_share() {
        let limit = limit(100.0, 1, RateLimitScope::ClientIp, 50);
        for i in 0..200u32 {
            let client = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(limit.check(client).is_ok());
        }
        assert_eq!(limit.tracked(), 200);
        // Over the cap: the next calls share the crowd buckets.
        assert_eq!(limit.sweep(), 200);
        let newcomer = ip("198.51.100.1");
        assert!(limit.check(newcomer).is_ok());
        assert_eq!(limit.tracked(), 200, "a crowded limit adds no address");
        // Soon after, every bucket is full again: all dropped, each address its own again.
        tokio::time::advance(Duration::from_millis(50)).await;
        assert_eq!(limit.sweep(), 0);
        assert!(limit.check(newcomer).is_ok());
        assert_eq!(limit.tracked(), 1);
    }

    #[test]
    fn hints_say_when_to_come_back() {
        let mut headers = http::HeaderMap::new();
        set_hint(&mut headers, true, Duration::from_micros(20_500));
        assert_eq!(headers["grpc-retry-pushback-ms"], "20");
        set_hint(&mut headers, false, Duration::from_millis(1_200));
        assert_eq!(headers["retry-after"], "2");
        set_hint(&mut headers, false, Duration::from_millis(1));
        assert_eq!(headers["retry-after"], "1");
    }
}
