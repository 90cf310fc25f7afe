//! Warnings about a valid file that probably does not do what was meant (printed by
//! `check`, logged by `run`; never an error): a listener without routes, a route without
//! `match`, a route no request can reach because an earlier one takes everything it
//! would, duplicate route names, and limits outside sane ranges.

use super::Validator;
use crate::file::{FileConfig, MatchFile, RouteFile};
use crate::locate::KeyPath;
use crate::runtime::{Listener, Server};

/// `workers` above this many per CPU only add context switches.
const WORKERS_PER_CPU: usize = 4;
/// Below this, gRPC metadata (auth tokens, tracing headers) gets refused.
const MIN_SANE_HEADER_BYTES: u32 = 4096;
/// Connection lifetimes below this make clients reconnect all the time.
const MIN_SANE_CONNECTION_TIME: std::time::Duration = std::time::Duration::from_secs(1);
/// Above this, one client can make the proxy hold a lot of memory per stream.
const MAX_SANE_HEADER_BYTES: u32 = 1 << 20;

/// The paths a route's `match` can take: a prefix, or one exact path.
#[derive(Debug, PartialEq)]
enum Paths<'a> {
    Prefix(String),
    Exact(&'a str),
}

impl Paths<'_> {
    /// The paths of a match table (absent: every path).
    fn of(matcher: Option<&MatchFile>) -> Paths<'_> {
        let Some(m) = matcher else {
            return Paths::Prefix(String::new());
        };
        if let Some(path) = &m.path {
            return Paths::Exact(path.get_ref());
        }
        if let Some(method) = &m.method {
            return Paths::Prefix(format!("/{}", method.get_ref()));
        }
        if let Some(service) = &m.service {
            return Paths::Prefix(format!("/{}/", service.get_ref()));
        }
        match &m.path_prefix {
            Some(prefix) => Paths::Prefix(prefix.get_ref().clone()),
            None => Paths::Prefix(String::new()),
        }
    }

    /// Whether every path of `other` is one of these.
    fn covers(&self, other: &Paths<'_>) -> bool {
        match (self, other) {
            (Paths::Prefix(p), Paths::Prefix(q)) => q.starts_with(p.as_str()),
            (Paths::Prefix(p), Paths::Exact(e)) => e.starts_with(p.as_str()),
            (Paths::Exact(a), Paths::Exact(b)) => a == b,
            (Paths::Exact(_), Paths::Prefix(_)) => false,
        }
    }
}

/// Whether a match has conditions besides the path (then it may let requests through to
/// later routes, and no shadowing can be claimed).
fn narrows(matcher: Option<&MatchFile>) -> bool {
    matcher.is_some_and(|m| m.authority.is_some() || m.headers.is_some() || m.grpc.is_some())
}

impl Validator<'_> {
    /// Every warning of this module, over the whole file.
    pub(super) fn warnings_about(
        &mut self,
        file: &FileConfig,
        server: &Server,
        listeners: &[Listener],
    ) {
        self.limit_warnings(file, server, listeners);
        let mut names: Vec<(String, KeyPath)> = Vec::new();
        for (li, l) in file.listeners.iter().enumerate() {
            let key = KeyPath::root("listeners").index(li);
            let l_file = l.get_ref();
            if l_file.routes.is_empty() {
                self.warn(
                    &l.span(),
                    &key,
                    "has no routes: every request gets UNIMPLEMENTED (gRPC) or 404",
                );
            }
            for (ri, r) in l_file.routes.iter().enumerate() {
                let rk = key.key("routes").index(ri);
                let route = r.get_ref();
                let last = ri + 1 == l_file.routes.len();
                self.route_warnings(&l_file.routes[..ri], r, &rk, last);
                if let Some(name) = &route.name {
                    if let Some((_, first)) = names.iter().find(|(n, _)| n == name.get_ref()) {
                        let first = first.to_string();
                        self.warn(
                            &name.span(),
                            &rk.key("name"),
                            format!(
                                "route name {:?} is also the name of {first}: metrics and logs cannot tell them apart",
                                name.get_ref()
                            ),
                        );
                    } else {
                        names.push((name.get_ref().clone(), rk.clone()));
                    }
                }
            }
        }
    }

    fn route_warnings(
        &mut self,
        earlier: &[crate::file::Spanned<RouteFile>],
        route: &crate::file::Spanned<RouteFile>,
        key: &KeyPath,
        last: bool,
    ) {
        let r = route.get_ref();
        let matcher = r.matcher.as_ref().map(|m| m.get_ref());
        // The last route without `match` is the usual catch-all; before others it hides them.
        if matcher.is_none() && !last {
            self.warn(
                &route.span(),
                key,
                "has no `match`: it takes every request, so the routes after it are never used",
            );
        }
        let paths = Paths::of(matcher);
        if let Some(index) = earlier.iter().position(|e| {
            let m = e.get_ref().matcher.as_ref().map(|m| m.get_ref());
            !narrows(m) && Paths::of(m).covers(&paths)
        }) {
            self.warn(
                &route.span(),
                key,
                format!(
                    "can never match: routes[{index}] before it takes every request it would (first match wins; put the more specific route first)"
                ),
            );
        }
    }

    fn limit_warnings(&mut self, file: &FileConfig, server: &Server, listeners: &[Listener]) {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        if server.workers > WORKERS_PER_CPU * cpus
            && let Some(w) = file
                .server
                .as_ref()
                .and_then(|s| s.get_ref().workers.as_ref())
        {
            self.warn(
                &w.span(),
                &KeyPath::root("server").key("workers"),
                format!(
                    "{} workers on {cpus} CPU(s): more than {WORKERS_PER_CPU} per CPU only adds context switches (0 = one per CPU)",
                    server.workers
                ),
            );
        }
        for (i, (l, l_file)) in listeners.iter().zip(&file.listeners).enumerate() {
            let key = KeyPath::root("listeners").index(i);
            let short = [
                (
                    "max_connection_age",
                    l.max_connection_age,
                    l_file.get_ref().max_connection_age.as_ref(),
                    "every client reconnects that often",
                ),
                (
                    "idle_timeout",
                    Some(l.idle_timeout),
                    l_file.get_ref().idle_timeout.as_ref(),
                    "clients between two calls are disconnected and must reconnect",
                ),
                (
                    "send_timeout",
                    Some(l.send_timeout),
                    l_file.get_ref().send_timeout.as_ref(),
                    "a client that pauses reading a stream that long loses its connection",
                ),
            ];
            for (name, value, written, effect) in short {
                if let (Some(value), Some(written)) = (value, written)
                    && value < MIN_SANE_CONNECTION_TIME
                {
                    self.warn(
                        &written.span(),
                        &key.key(name),
                        format!("{value:?} is very short: {effect}"),
                    );
                }
            }
            let Some(bytes) = l_file.get_ref().max_header_bytes.as_ref() else {
                continue;
            };
            let key = KeyPath::root("listeners").index(i).key("max_header_bytes");
            if l.max_header_bytes < MIN_SANE_HEADER_BYTES {
                self.warn(
                    &bytes.span(),
                    &key,
                    format!(
                        "{} bytes is small: requests with ordinary gRPC metadata (tokens, tracing) would be refused",
                        l.max_header_bytes
                    ),
                );
            } else if l.max_header_bytes > MAX_SANE_HEADER_BYTES {
                self.warn(
                    &bytes.span(),
                    &key,
                    format!(
                        "{} bytes is large: each client stream may make rpcgate hold that much",
                        l.max_header_bytes
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_what_starts_with_them() {
        let all = Paths::Prefix(String::new());
        let svc = Paths::Prefix("/pkg.Svc/".into());
        assert!(all.covers(&svc));
        assert!(svc.covers(&Paths::Prefix("/pkg.Svc/Get".into())));
        assert!(svc.covers(&Paths::Exact("/pkg.Svc/Get")));
        assert!(!svc.covers(&all));
        assert!(!Paths::Exact("/a").covers(&Paths::Prefix("/a".into())));
    }
}
