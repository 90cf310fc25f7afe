//! Durations as the configuration writes them: `"250ms"`, `"2s"`, `"1m"`, `"1h"`, `"0s"`,
//! and sums such as `"1m30s"`.
//!
//! A unit is always required, so that `timeout = "5"` cannot be read as five seconds by
//! one person and five milliseconds by another. Public because the command line takes the
//! same form (e.g. `--ttl 10s`).

use std::time::Duration;

/// Parses a duration: one or more `<digits><unit>` parts, unit `ms`, `s`, `m` or `h`.
///
/// # Errors
/// A message fit to follow the key in an error line, e.g.
/// `invalid duration "5": a unit is required (ms, s, m or h)`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = |why: &str| format!("invalid duration {text:?}: {why}");
    if text.is_empty() {
        return Err(invalid("empty; write e.g. \"2s\" or \"250ms\""));
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid(
                "expected a non-negative whole number followed by ms, s, m or h",
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| invalid("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3600).map(Duration::from_secs),
            "" => return Err(invalid("a unit is required (ms, s, m or h)")),
            other => {
                return Err(invalid(&format!(
                    "unknown unit {other:?} (use ms, s, m or h)"
                )));
            }
        };
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| invalid("too large"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn rejects_what_is_ambiguous_or_wrong() {
        for bad in [
            "5", "-1s", "1x", "", "s", "1.5s", " 1s", "1s ", "1 s", "1S", "1sec",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.starts_with("invalid duration"), "{bad}: {err}");
        }
        assert!(
            parse_duration("5")
                .unwrap_err()
                .contains("a unit is required")
        );
        assert!(
            parse_duration("1x")
                .unwrap_err()
                .contains("unknown unit \"x\"")
        );
        assert!(parse_duration("-1s").unwrap_err().contains("non-negative"));
    }

    #[test]
    fn rejects_overflow_instead_of_wrapping() {
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("18446744073709551615h").is_err());
        assert!(parse_duration("18446744073709551615s18446744073709551615s").is_err());
    }
}
