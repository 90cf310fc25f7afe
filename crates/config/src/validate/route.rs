//! `[[listeners.routes]]`: a route's name, `match` table, cluster, timeout, `retry` and
//! header rewrites.

use std::collections::HashMap;
use std::time::Duration;

use super::Validator;
use crate::defaults;
use crate::file::{HeaderMapFile, MatchFile, RetryFile, RouteFile, Spanned};
use crate::locate::KeyPath;
use crate::runtime::{RetryBackoff, RetryPolicy, Route, RouteMatch};

/// The gRPC status codes a `retry.on` list may name, as gRPC's status code document
/// spells them in snake case (OK is not a failure, so it cannot be retried).
const RETRYABLE_CODES: [(&str, u32); 16] = [
    ("cancelled", 1),
    ("unknown", 2),
    ("invalid_argument", 3),
    ("deadline_exceeded", 4),
    ("not_found", 5),
    ("already_exists", 6),
    ("permission_denied", 7),
    ("resource_exhausted", 8),
    ("failed_precondition", 9),
    ("aborted", 10),
    ("out_of_range", 11),
    ("unimplemented", 12),
    ("internal", 13),
    ("unavailable", 14),
    ("data_loss", 15),
    ("unauthenticated", 16),
];

impl Validator<'_> {
    /// Route `index` of `listener`; `clusters` maps cluster names to their index.
    pub(super) fn route(
        &mut self,
        spanned: &Spanned<RouteFile>,
        key: &KeyPath,
        listener: &str,
        index: usize,
        clusters: &HashMap<&str, usize>,
    ) -> Route {
        let r = spanned.get_ref();
        let name = match &r.name {
            Some(n) if n.get_ref().is_empty() => {
                self.err(&n.span(), &key.key("name"), "must not be empty");
                String::new()
            }
            Some(n) => n.get_ref().clone(),
            None => defaults::route_name(listener, index),
        };
        let matcher = match &r.matcher {
            Some(m) => self.route_match(m.get_ref(), &key.key("match")),
            None => RouteMatch::default(),
        };
        let cluster = match clusters.get(r.cluster.get_ref().as_str()) {
            Some(&i) => i,
            None => {
                let mut known: Vec<&str> = clusters.keys().copied().collect();
                known.sort_unstable();
                let known = if known.is_empty() {
                    "no [[clusters]] are defined".to_owned()
                } else {
                    format!("defined clusters: {}", known.join(", "))
                };
                self.err(
                    &r.cluster.span(),
                    &key.key("cluster"),
                    format!("unknown cluster `{}` ({known})", r.cluster.get_ref()),
                );
                0
            }
        };
        let timeout = r
            .timeout
            .as_ref()
            .map(|t| self.positive_duration(Some(t), &key.key("timeout"), Duration::ZERO));
        let retry = r
            .retry
            .as_ref()
            .map(|v| self.retry(v.get_ref(), &key.key("retry")));
        if let (Some(timeout), Some(policy), Some(file)) = (timeout, &retry, &r.retry)
            && let (Some(per_try), Some(span)) = (
                policy.per_try_timeout,
                file.get_ref().per_try_timeout.as_ref().map(|p| p.span()),
            )
            && per_try >= timeout
        {
            self.warn(
                &span,
                &key.key("retry").key("per_try_timeout"),
                format!("is not shorter than the route's timeout ({timeout:?}): no attempt can be retried after it"),
            );
        }
        let rate_limit = self.rate_limit(r.rate_limit.as_ref(), key);
        let max_message_bytes = match &r.max_message_bytes {
            Some(m) if !(1..=u64::from(u32::MAX)).contains(m.get_ref()) => {
                self.err(
                    &m.span(),
                    &key.key("max_message_bytes"),
                    format!(
                        "must be between 1 and {} (a gRPC message's length is 32 bits)",
                        u32::MAX
                    ),
                );
                defaults::MAX_MESSAGE_BYTES
            }
            Some(m) => u32::try_from(*m.get_ref()).unwrap_or(u32::MAX),
            None => defaults::MAX_MESSAGE_BYTES,
        };
        let access = self.access_list(&r.allow, &r.deny, key);
        let request_headers = r
            .request_headers
            .as_ref()
            .map(|h| self.headers(h.get_ref(), &key.key("request_headers"), Use::Set))
            .unwrap_or_default();
        let response_headers = r
            .response_headers
            .as_ref()
            .map(|h| self.headers(h.get_ref(), &key.key("response_headers"), Use::Set))
            .unwrap_or_default();
        Route {
            name,
            matcher,
            cluster,
            timeout,
            request_headers,
            response_headers,
            retry,
            access,
            rate_limit,
            max_message_bytes,
        }
    }

    /// A route's `retry` table, with its defaults.
    fn retry(&mut self, r: &RetryFile, key: &KeyPath) -> RetryPolicy {
        let max_attempts = match &r.max_attempts {
            Some(m) if !(1..=defaults::RETRY_MAX_ATTEMPTS_LIMIT).contains(m.get_ref()) => {
                self.err(
                    &m.span(),
                    &key.key("max_attempts"),
                    format!(
                        "must be between 1 (no retry) and {}",
                        defaults::RETRY_MAX_ATTEMPTS_LIMIT
                    ),
                );
                defaults::RETRY_MAX_ATTEMPTS
            }
            Some(m) => *m.get_ref(),
            None => defaults::RETRY_MAX_ATTEMPTS,
        };
        let on = match &r.on {
            None => defaults::RETRY_ON.to_vec(),
            Some(list) if list.get_ref().is_empty() => {
                self.err(
                    &list.span(),
                    &key.key("on"),
                    "must name at least one gRPC status, e.g. [\"unavailable\"]",
                );
                defaults::RETRY_ON.to_vec()
            }
            Some(list) => {
                let mut codes = Vec::new();
                for (i, name) in list.get_ref().iter().enumerate() {
                    let wanted = name.get_ref().trim().to_ascii_lowercase();
                    match RETRYABLE_CODES.iter().find(|(n, _)| *n == wanted) {
                        Some((_, code)) if !codes.contains(code) => codes.push(*code),
                        Some(_) => {}
                        None if wanted == "ok" => self.err(
                            &name.span(),
                            &key.key("on").index(i),
                            "OK is a success and is never retried",
                        ),
                        None => {
                            let known: Vec<&str> =
                                RETRYABLE_CODES.iter().map(|(n, _)| *n).collect();
                            self.err(
                                &name.span(),
                                &key.key("on").index(i),
                                format!(
                                    "unknown gRPC status {:?}; expected one of {}",
                                    name.get_ref(),
                                    known.join(", ")
                                ),
                            );
                        }
                    }
                }
                codes
            }
        };
        let backoff = match r.backoff.as_ref() {
            None => defaults::RETRY_BACKOFF,
            Some(b) => match b.get_ref().as_str() {
                "linear" => RetryBackoff::Linear,
                "exponential" => RetryBackoff::Exponential,
                other => {
                    self.err(
                        &b.span(),
                        &key.key("backoff"),
                        format!(
                            "unknown backoff {other:?}; expected \"linear\" or \"exponential\""
                        ),
                    );
                    defaults::RETRY_BACKOFF
                }
            },
        };
        let base_interval = self.positive_duration(
            r.base_interval.as_ref(),
            &key.key("base_interval"),
            defaults::RETRY_BASE_INTERVAL,
        );
        let max_interval = self.positive_duration(
            r.max_interval.as_ref(),
            &key.key("max_interval"),
            defaults::retry_max_interval(base_interval),
        );
        if let Some(m) = &r.max_interval
            && max_interval < base_interval
        {
            self.err(
                &m.span(),
                &key.key("max_interval"),
                format!("must be at least base_interval ({base_interval:?})"),
            );
        }
        let budget_ratio = self.ratio(
            r.budget_ratio.as_ref(),
            &key.key("budget_ratio"),
            defaults::RETRY_BUDGET_RATIO,
            "a share of the route's calls",
        );
        let per_try_timeout = r
            .per_try_timeout
            .as_ref()
            .map(|t| self.positive_duration(Some(t), &key.key("per_try_timeout"), Duration::ZERO));
        RetryPolicy {
            max_attempts,
            on,
            backoff,
            base_interval,
            max_interval,
            jitter: r
                .jitter
                .as_ref()
                .map_or(defaults::RETRY_JITTER, |j| *j.get_ref()),
            budget_ratio,
            per_try_timeout,
        }
    }

    /// A route's `match` table: each condition given must be well formed.
    fn route_match(&mut self, m: &MatchFile, key: &KeyPath) -> RouteMatch {
        let mut check =
            |v: &Option<Spanned<String>>, field: &str, ok: fn(&str) -> bool, what: &str| {
                let v = v.as_ref()?;
                if ok(v.get_ref()) {
                    Some(v.get_ref().clone())
                } else {
                    self.err(
                        &v.span(),
                        &key.key(field),
                        format!("{:?}: {what}", v.get_ref()),
                    );
                    None
                }
            };
        let service = check(
            &m.service,
            "service",
            |s| !s.is_empty() && !s.contains('/'),
            "expected a fully-qualified gRPC service name without '/', e.g. \"pkg.Service\"",
        );
        let method = check(
            &m.method,
            "method",
            |s| {
                s.split_once('/')
                    .is_some_and(|(svc, m)| !svc.is_empty() && !m.is_empty() && !m.contains('/'))
            },
            "expected \"pkg.Service/Method\" (without a leading '/')",
        );
        let path = check(
            &m.path,
            "path",
            |s| s.starts_with('/'),
            "must start with '/'",
        );
        let path_prefix = check(
            &m.path_prefix,
            "path_prefix",
            |s| s.starts_with('/'),
            "must start with '/'",
        );
        let authority = check(
            &m.authority,
            "authority",
            |s| !s.is_empty(),
            "must not be empty",
        );
        let headers = m
            .headers
            .as_ref()
            .map(|h| self.headers(h.get_ref(), &key.key("headers"), Use::Match))
            .unwrap_or_default();
        RouteMatch {
            service,
            method,
            path,
            path_prefix,
            authority,
            headers,
            grpc: m.grpc.as_ref().map(|g| *g.get_ref()),
        }
    }

    /// Header names are lower-cased (HTTP/2 requires it) and must be valid and distinct;
    /// values must be valid header values.
    /// A header table: valid names and values, none given twice; for `request_headers` /
    /// `response_headers`, none that rpcgate or the protocol itself manages
    /// ([`reserved_header`]).
    fn headers(&mut self, map: &HeaderMapFile, key: &KeyPath, usage: Use) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(map.len());
        for (name, value) in map {
            let k = key.key(name.get_ref());
            let lower = name.get_ref().to_ascii_lowercase();
            if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
                self.err(
                    &name.span(),
                    &k,
                    format!(
                        "invalid HTTP header name {:?}: a name is letters, digits and - (no spaces or colons), e.g. \"x-frame-options\"",
                        name.get_ref()
                    ),
                );
                continue;
            }
            if let Some(why) = reserved_header(&lower).filter(|_| usage == Use::Set) {
                self.err(
                    &name.span(),
                    &k,
                    format!("header {lower:?} cannot be set here: {why}"),
                );
                continue;
            }
            if lower == "content-type" && usage == Use::Set {
                self.warn(
                    &name.span(),
                    &k,
                    "replaces the content type of every answer of the route; gRPC clients refuse an answer that is not application/grpc",
                );
            }
            if http::HeaderValue::from_str(value.get_ref()).is_err() {
                self.err(
                    &value.span(),
                    &k,
                    "invalid HTTP header value (control characters are not allowed)",
                );
                continue;
            }
            if out.iter().any(|(n, _)| *n == lower) {
                self.err(
                    &name.span(),
                    &k,
                    format!("header {lower:?} is given twice (names are case-insensitive)"),
                );
                continue;
            }
            out.push((lower, value.get_ref().clone()));
        }
        // TOML tables do not keep file order; sorting by the lower-case name at least
        // makes the order independent of how names were capitalised.
        out.sort();
        out
    }
}

/// What a header table is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// `request_headers` / `response_headers`: set on the way.
    Set,
    /// `match.headers`: compared.
    Match,
}

/// Why a header may not be set by `request_headers` / `response_headers`, if it may not:
/// the ones that frame the message or the connection (setting them desynchronises the
/// peer or breaks HTTP/2), and gRPC's own status fields (a proxy error would read OK).
fn reserved_header(name: &str) -> Option<&'static str> {
    Some(match name {
        "content-length" | "transfer-encoding" => {
            "it frames the body, which rpcgate sets from the body itself"
        }
        "connection" | "keep-alive" | "proxy-connection" | "upgrade" | "te" | "trailer" => {
            "it is a hop-by-hop header, managed per connection (and not allowed in HTTP/2)"
        }
        "host" => "the upstream authority is the cluster's `authority` key",
        "grpc-status" | "grpc-message" | "grpc-status-details-bin" => {
            "it carries the call's gRPC status, which comes from the backend or from rpcgate"
        }
        "grpc-encoding" | "content-encoding" => {
            "it says how the body is encoded; a wrong value makes the body unreadable"
        }
        _ => return None,
    })
}
