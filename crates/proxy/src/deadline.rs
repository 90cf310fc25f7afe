//! Call deadlines: the client's `grpc-timeout` and the route's `timeout`.
//!
//! The smaller of the two is the call's deadline (contract §4); the time left is forwarded
//! upstream as `grpc-timeout`, so the backend stops working when nobody waits any more.
//! Format (gRPC PROTOCOL-HTTP2): at most 8 ASCII digits and one unit letter,
//! `H`ours, `M`inutes, `S`econds, `m`illiseconds, `u`microseconds, `n`anoseconds.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

/// Parses a `grpc-timeout` value; `None` when it is malformed (then it is ignored, as
/// gRPC servers do).
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Formats a duration as a `grpc-timeout` value with the finest unit that fits in 8 digits.
pub fn format_grpc_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let (amount, unit) = if nanos <= MAX {
        (nanos, 'n')
    } else if nanos / 1_000 <= MAX {
        (nanos / 1_000, 'u')
    } else if nanos / 1_000_000 <= MAX {
        (nanos / 1_000_000, 'm')
    } else if nanos / 1_000_000_000 <= MAX {
        (nanos / 1_000_000_000, 'S')
    } else if nanos / 60_000_000_000 <= MAX {
        (nanos / 60_000_000_000, 'M')
    } else {
        ((nanos / 3_600_000_000_000).min(MAX), 'H')
    };
    HeaderValue::from_str(&format!("{amount}{unit}"))
        .unwrap_or_else(|_| HeaderValue::from_static("99999999H"))
}

/// The call's timeout: the smaller of the client's and the route's.
pub fn effective_timeout(client: Option<Duration>, route: Option<Duration>) -> Option<Duration> {
    match (client, route) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A call's deadline: when it passes, and the timeout it came from (for the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// When the call must be over.
    pub at: Instant,
    /// The effective timeout, counted from the call's start.
    pub timeout: Duration,
}

impl Deadline {
    /// The deadline of a call that started at `started` with these request headers on a
    /// route with this `timeout`; `None` when neither the client nor the route sets one.
    pub fn for_call(
        headers: &HeaderMap,
        route_timeout: Option<Duration>,
        started: Instant,
    ) -> Option<Self> {
        let client = headers
            .get("grpc-timeout")
            .and_then(|v| parse_grpc_timeout(v.as_bytes()));
        effective_timeout(client, route_timeout).map(|timeout| Self {
            at: started + timeout,
            timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_grpc_timeout(b"250m"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_grpc_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            &b""[..],
            b"S",
            b"123456789S",
            b"1x",
            b"-1S",
            b"1.5S",
            b"1 S",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_round_trip_within_unit_precision() {
        for d in [
            Duration::from_nanos(5),
            Duration::from_millis(250),
            Duration::from_secs(30),
            Duration::from_secs(86_400 * 365),
        ] {
            let text = format_grpc_timeout(d);
            let back = parse_grpc_timeout(text.as_bytes()).expect("valid");
            assert!(
                back <= d && d - back < d / 1000 + Duration::from_nanos(1),
                "{d:?} -> {text:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_deadline_counts_from_its_start() {
        let started = Instant::now();
        let mut headers = HeaderMap::new();
        assert_eq!(Deadline::for_call(&headers, None, started), None);
        headers.insert("grpc-timeout", HeaderValue::from_static("250m"));
        let deadline = Deadline::for_call(&headers, Some(Duration::from_secs(2)), started).unwrap();
        assert_eq!(deadline.timeout, Duration::from_millis(250));
        assert_eq!(deadline.at, started + Duration::from_millis(250));
        headers.insert("grpc-timeout", HeaderValue::from_static("bogus"));
        let route_only =
            Deadline::for_call(&headers, Some(Duration::from_secs(2)), started).unwrap();
        assert_eq!(route_only.timeout, Duration::from_secs(2));
    }

    #[test]
    fn smaller_timeout_wins() {
        let s = Duration::from_secs;
        assert_eq!(effective_timeout(Some(s(1)), Some(s(2))), Some(s(1)));
        assert_eq!(effective_timeout(Some(s(3)), Some(s(2))), Some(s(2)));
        assert_eq!(effective_timeout(None, Some(s(2))), Some(s(2)));
        assert_eq!(effective_timeout(None, None), None);
    }
}
