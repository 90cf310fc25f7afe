//! `[[listeners.routes]]`: a route's name, `match` table, cluster, timeout and header
//! rewrites.

use std::collections::HashMap;
use std::time::Duration;

use super::Validator;
use crate::defaults;
use crate::file::{HeaderMapFile, MatchFile, RouteFile, Spanned};
use crate::locate::KeyPath;
use crate::runtime::{Route, RouteMatch};

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
        if let Some(v) = &r.retry {
            self.not_implemented("routes.retry", &key.key("retry"), &v.span());
        }
        if let Some(v) = &r.rate_limit {
            self.not_implemented("routes.rate_limit", &key.key("rate_limit"), &v.span());
        }
        let request_headers = r
            .request_headers
            .as_ref()
            .map(|h| self.headers(h.get_ref(), &key.key("request_headers")))
            .unwrap_or_default();
        let response_headers = r
            .response_headers
            .as_ref()
            .map(|h| self.headers(h.get_ref(), &key.key("response_headers")))
            .unwrap_or_default();
        Route {
            name,
            matcher,
            cluster,
            timeout,
            request_headers,
            response_headers,
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
            .map(|h| self.headers(h.get_ref(), &key.key("headers")))
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
    fn headers(&mut self, map: &HeaderMapFile, key: &KeyPath) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(map.len());
        for (name, value) in map {
            let k = key.key(name.get_ref());
            let lower = name.get_ref().to_ascii_lowercase();
            if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
                self.err(
                    &name.span(),
                    &k,
                    format!("invalid HTTP header name {:?}", name.get_ref()),
                );
                continue;
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
