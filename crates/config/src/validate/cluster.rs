//! `[[clusters]]`: endpoints, balancing policy, upstream protocol, timeouts, passive and
//! active health, `circuit_breaker`, `max_requests`, `slow_start`, and the keys of a later
//! release that a cluster may carry.

use std::ops::Range;

use super::Validator;
use crate::defaults;
use crate::duration::parse_duration;
use crate::file::{
    ActiveHealthFile, CircuitBreakerFile, ClusterFile, DiscoveryFile, EndpointFile, Spanned,
};
use crate::locate::KeyPath;
use crate::runtime::{
    ActiveHealth, CircuitBreaker, Cluster, ClusterTls, Discovery, Endpoint, HashKey, LbPolicy,
    PassiveHealth, UpstreamProtocol,
};

impl Validator<'_> {
    /// One `[[clusters]]` element (its `[clusters.tls]` is checked in [`super::tls`]).
    pub(super) fn cluster(&mut self, spanned: &Spanned<ClusterFile>, key: &KeyPath) -> Cluster {
        let c = spanned.get_ref();
        let span = spanned.span();
        if c.name.get_ref().is_empty() {
            self.err(&c.name.span(), &key.key("name"), "must not be empty");
        }

        let endpoints = self.endpoints(c, key, &span);

        let lb_name = c.lb.as_ref().map(|l| l.get_ref().as_str());
        let hash_key = c.hash_key.as_ref().and_then(|h| {
            let k = key.key("hash_key");
            if lb_name != Some("ring_hash") {
                self.key_err(
                    &h.span(),
                    &k,
                    "hash_key is only used with lb = \"ring_hash\"",
                );
                return None;
            }
            self.hash_key(h, &k)
        });
        let lb = match &c.lb {
            None => defaults::LB,
            Some(l) => match l.get_ref().as_str() {
                "round_robin" => LbPolicy::RoundRobin,
                "least_request" => LbPolicy::LeastRequest,
                "p2c_ewma" => LbPolicy::P2cEwma,
                "random" => LbPolicy::Random,
                "ring_hash" => {
                    if c.hash_key.is_none() {
                        self.err(
                            &l.span(),
                            &key.key("lb"),
                            "lb = \"ring_hash\" needs hash_key (\"header:NAME\" or \"client_ip\")",
                        );
                    }
                    LbPolicy::RingHash(hash_key.unwrap_or(HashKey::ClientIp))
                }
                other => {
                    self.err(
                        &l.span(),
                        &key.key("lb"),
                        format!(
                            "unknown lb {other:?}, expected one of round_robin, least_request, p2c_ewma, random, ring_hash"
                        ),
                    );
                    defaults::LB
                }
            },
        };

        let protocol = match &c.protocol {
            None => defaults::PROTOCOL,
            Some(p) => match p.get_ref().as_str() {
                "h2c" => UpstreamProtocol::H2c,
                "http1" => UpstreamProtocol::Http1,
                "h2" => UpstreamProtocol::H2,
                other => {
                    self.err(
                        &p.span(),
                        &key.key("protocol"),
                        format!("unknown protocol {other:?}, expected h2c, h2 or http1"),
                    );
                    defaults::PROTOCOL
                }
            },
        };
        let tls = match &c.tls {
            Some(tls) => {
                let k = key.key("tls");
                if protocol != UpstreamProtocol::H2 {
                    self.key_err(
                        &tls.span(),
                        &k,
                        "[clusters.tls] needs protocol = \"h2\" (TLS towards the backends)",
                    );
                }
                Some(self.cluster_tls(tls.get_ref(), &k, &tls.span()))
            }
            // `protocol = "h2"` alone: verify backends against the system's roots.
            None if protocol == UpstreamProtocol::H2 => Some(ClusterTls::default()),
            None => None,
        };

        let authority = c
            .authority
            .as_ref()
            .map(|a| a.get_ref().clone())
            .filter(|a| !a.is_empty());
        let connect_timeout = self.positive_duration(
            c.connect_timeout.as_ref(),
            &key.key("connect_timeout"),
            defaults::CONNECT_TIMEOUT,
        );
        let slow_start = c
            .slow_start
            .as_ref()
            .and_then(|s| self.duration(s, &key.key("slow_start")))
            .filter(|d| !d.is_zero());
        if let (Some(_), Some(s), LbPolicy::RingHash(_)) = (slow_start, &c.slow_start, &lb) {
            self.warn(
                &s.span(),
                &key.key("slow_start"),
                "has no effect with lb = \"ring_hash\" (keys stay on their endpoints)",
            );
        }
        let max_requests = c
            .max_requests
            .as_ref()
            .map(|m| *m.get_ref())
            .filter(|m| *m != 0);
        let mut passive_health = PassiveHealth {
            max_fails: defaults::PASSIVE_HEALTH_MAX_FAILS,
            fail_timeout: defaults::PASSIVE_HEALTH_FAIL_TIMEOUT,
        };
        if let Some(p) = &c.passive_health {
            let k = key.key("passive_health");
            let p = p.get_ref();
            if let Some(m) = &p.max_fails {
                passive_health.max_fails = *m.get_ref();
            }
            passive_health.fail_timeout = self.positive_duration(
                p.fail_timeout.as_ref(),
                &k.key("fail_timeout"),
                passive_health.fail_timeout,
            );
        }
        let active_health = c.active_health.as_ref().map(|a| {
            if protocol == UpstreamProtocol::Http1 {
                self.key_err(
                    &a.span(),
                    &key.key("active_health"),
                    "active_health sends grpc.health.v1.Health/Check over HTTP/2; it cannot probe protocol = \"http1\" backends",
                );
            }
            self.active_health(a.get_ref(), &key.key("active_health"))
        });
        let circuit_breaker = c
            .circuit_breaker
            .as_ref()
            .map(|b| self.circuit_breaker(b.get_ref(), &key.key("circuit_breaker")));
        let mut endpoints = endpoints;
        let discovery = c.discovery.as_ref().and_then(|d| {
            let found = self.discovery(
                d,
                &key.key("discovery"),
                c.endpoints.is_some(),
                c.name.get_ref(),
            )?;
            endpoints = found.1;
            Some(found.0)
        });

        Cluster {
            name: c.name.get_ref().clone(),
            endpoints,
            lb,
            protocol,
            authority,
            connect_timeout,
            passive_health,
            tls,
            max_requests,
            circuit_breaker,
            active_health,
            slow_start,
            discovery,
        }
    }

    /// `discovery = { dns = "name:port", refresh, resolver }`: no endpoints until the
    /// first answer, which comes at start.
    fn dns_discovery(
        &mut self,
        name: &Spanned<String>,
        dd: &DiscoveryFile,
        k: &KeyPath,
    ) -> Option<(Discovery, Vec<Endpoint>)> {
        if let Some(p) = &dd.prefix {
            self.err(
                &p.span(),
                &k.key("prefix"),
                "`prefix` goes with etcd, not dns",
            );
        }
        let refresh = self.positive_duration(
            dd.refresh.as_ref(),
            &k.key("refresh"),
            defaults::DNS_REFRESH,
        );
        let resolver = dd.resolver.as_ref().and_then(|r| {
            let parsed = r.get_ref().parse::<std::net::SocketAddr>();
            if parsed.is_err() {
                self.err(
                    &r.span(),
                    &k.key("resolver"),
                    format!(
                        "invalid DNS server {:?}: expected IP:PORT, e.g. \"10.0.0.2:53\"",
                        r.get_ref()
                    ),
                );
            }
            parsed.ok()
        });
        let address = name.get_ref();
        if let Err(why) = check_host_port(address) {
            self.err(
                &name.span(),
                &k.key("dns"),
                format!("invalid DNS name {address:?}: {why}"),
            );
            return None;
        }
        let (host, port) = address.rsplit_once(':')?;
        let port = port.parse().ok()?;
        Some((
            Discovery::Dns {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port,
                refresh,
                resolver,
            },
            Vec::new(),
        ))
    }

    /// `discovery = { etcd = ["HOST:PORT", …], prefix = "/rpcgate/services/NAME/" }`: no
    /// endpoints until the first read, which comes at start. The prefix defaults to
    /// `/rpcgate/services/CLUSTER/`, where `rpcgate register --service CLUSTER` writes.
    fn etcd_discovery(
        &mut self,
        servers: &Spanned<Vec<Spanned<String>>>,
        dd: &DiscoveryFile,
        k: &KeyPath,
        cluster: &str,
    ) -> Option<(Discovery, Vec<Endpoint>)> {
        for (name, given) in [
            ("refresh", dd.refresh.as_ref().map(Spanned::span)),
            ("resolver", dd.resolver.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = given {
                self.err(
                    &span,
                    &k.key(name),
                    format!("`{name}` goes with dns, not etcd"),
                );
            }
        }
        let mut ok = true;
        if servers.get_ref().is_empty() {
            self.key_err(
                &servers.span(),
                &k.key("etcd"),
                "needs at least one etcd address, e.g. [\"127.0.0.1:2379\"]",
            );
            ok = false;
        }
        for (i, server) in servers.get_ref().iter().enumerate() {
            let address = server.get_ref();
            let why = match address.split_once("://") {
                Some((scheme, rest)) => Some(format!(
                    "give HOST:PORT without the {scheme}:// (etcdctl's URL form), e.g. {rest:?}"
                )),
                None => check_host_port(address)
                    .err()
                    .map(|why| why.replace(":50051", ":2379")),
            };
            if let Some(why) = why {
                self.err(
                    &server.span(),
                    &k.key("etcd").index(i),
                    format!("invalid etcd address {address:?}: {why}"),
                );
                ok = false;
            }
        }
        if ok && self.depth == super::Depth::Check {
            let answering = servers.get_ref().iter().any(|s| answers(s.get_ref()));
            if !answering {
                self.warn(
                    &servers.span(),
                    &k.key("etcd"),
                    "no etcd address answers now: rpcgate starts, and the cluster's calls get UNAVAILABLE until etcd does",
                );
            }
        }
        let prefix = match &dd.prefix {
            Some(p) if p.get_ref().is_empty() => {
                self.err(
                    &p.span(),
                    &k.key("prefix"),
                    "an empty prefix would take every key in etcd as an endpoint; name the service's folder, e.g. \"/rpcgate/services/laptop/\"",
                );
                ok = false;
                String::new()
            }
            Some(p) => {
                let prefix = p.get_ref();
                if !prefix.starts_with('/') {
                    self.warn(
                        &p.span(),
                        &k.key("prefix"),
                        "does not start with '/', as the keys `rpcgate register` writes do (/rpcgate/services/NAME/ADDR)",
                    );
                } else if !prefix.ends_with('/') {
                    self.warn(
                        &p.span(),
                        &k.key("prefix"),
                        format!("matches every key that starts with it, {prefix}-v2/… too; end it with '/' to take one service's folder"),
                    );
                }
                prefix.clone()
            }
            None => format!("/rpcgate/services/{cluster}/"),
        };
        ok.then(|| {
            (
                Discovery::Etcd {
                    servers: servers
                        .get_ref()
                        .iter()
                        .map(|s| s.get_ref().clone())
                        .collect(),
                    prefix,
                },
                Vec::new(),
            )
        })
    }

    /// A cluster's `discovery` table, with the endpoints its source has now; `None` when
    /// it is wrong (each problem recorded) or not built yet.
    fn discovery(
        &mut self,
        d: &Spanned<DiscoveryFile>,
        k: &KeyPath,
        has_endpoints: bool,
        cluster: &str,
    ) -> Option<(Discovery, Vec<Endpoint>)> {
        let dd = d.get_ref();
        let sources = [dd.dns.is_some(), dd.etcd.is_some(), dd.file.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            self.key_err(&d.span(), k, "needs exactly one of dns, etcd or file");
            return None;
        }
        if has_endpoints {
            self.warn(
                &d.span(),
                k,
                "replaces `endpoints`: the cluster's list is not used",
            );
        }
        if let Some(name) = &dd.dns {
            return self.dns_discovery(name, dd, k);
        }
        if let Some(servers) = &dd.etcd {
            return self.etcd_discovery(servers, dd, k, cluster);
        }
        for (name, given, owner) in [
            ("refresh", dd.refresh.is_some(), "dns"),
            ("resolver", dd.resolver.is_some(), "dns"),
            ("prefix", dd.prefix.is_some(), "etcd"),
        ] {
            if given {
                self.key_err(
                    &d.span(),
                    &k.key(name),
                    format!("`{name}` goes with {owner}, not file"),
                );
            }
        }
        let file = dd.file.as_ref()?;
        let named = std::path::PathBuf::from(file.get_ref());
        let path = match &self.base_dir {
            Some(dir) if named.is_relative() => dir.join(&named),
            _ => named,
        };
        let text = match std::fs::metadata(&path).map(|m| m.is_file()) {
            Ok(true) => std::fs::read_to_string(&path).map_err(|e| e.to_string()),
            Ok(false) => Err("not a regular file".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        let text = match text {
            Ok(text) => text,
            Err(why) => {
                self.err(
                    &file.span(),
                    &k.key("file"),
                    format!("cannot read {}: {why}", path.display()),
                );
                return None;
            }
        };
        match crate::endpoints_file::parse_endpoints_file(&text, &path) {
            Ok(endpoints) => Some((Discovery::File(path), endpoints)),
            Err(why) => {
                self.err(&file.span(), &k.key("file"), why);
                None
            }
        }
    }

    /// A cluster's `active_health` table, with its defaults.
    fn active_health(&mut self, a: &ActiveHealthFile, key: &KeyPath) -> ActiveHealth {
        let interval = self.positive_duration(
            a.interval.as_ref(),
            &key.key("interval"),
            defaults::ACTIVE_HEALTH_INTERVAL,
        );
        let interval_ok = a
            .interval
            .as_ref()
            .is_none_or(|i| parse_duration(i.get_ref()).is_ok_and(|d| !d.is_zero()));
        // Without a `timeout`, a probe may take the default or the interval, whichever is
        // shorter, so that a short interval alone is valid.
        let timeout = self.positive_duration(
            a.timeout.as_ref(),
            &key.key("timeout"),
            defaults::ACTIVE_HEALTH_TIMEOUT.min(interval),
        );
        if let Some(t) = &a.timeout
            && interval_ok
            && timeout > interval
        {
            self.err(
                &t.span(),
                &key.key("timeout"),
                format!("must not be longer than interval ({interval:?}): probes would overlap"),
            );
        }
        ActiveHealth {
            interval,
            timeout,
            grpc_service: a
                .grpc_service
                .as_ref()
                .map(|s| s.get_ref().clone())
                .unwrap_or_default(),
            unhealthy_threshold: self.at_least_one(
                a.unhealthy_threshold.as_ref(),
                &key.key("unhealthy_threshold"),
                defaults::ACTIVE_HEALTH_UNHEALTHY_THRESHOLD,
            ),
            healthy_threshold: self.at_least_one(
                a.healthy_threshold.as_ref(),
                &key.key("healthy_threshold"),
                defaults::ACTIVE_HEALTH_HEALTHY_THRESHOLD,
            ),
        }
    }

    /// A cluster's `circuit_breaker` table, with its defaults.
    fn circuit_breaker(&mut self, b: &CircuitBreakerFile, key: &KeyPath) -> CircuitBreaker {
        let failure_ratio = self.ratio(
            b.failure_ratio.as_ref(),
            &key.key("failure_ratio"),
            defaults::BREAKER_FAILURE_RATIO,
            "the failed share of the window's calls",
        );
        CircuitBreaker {
            failure_ratio,
            min_requests: self.at_least_one(
                b.min_requests.as_ref(),
                &key.key("min_requests"),
                defaults::BREAKER_MIN_REQUESTS,
            ),
            window: self.positive_duration(
                b.window.as_ref(),
                &key.key("window"),
                defaults::BREAKER_WINDOW,
            ),
            open_duration: self.positive_duration(
                b.open_duration.as_ref(),
                &key.key("open_duration"),
                defaults::BREAKER_OPEN_DURATION,
            ),
            half_open_requests: self.at_least_one(
                b.half_open_requests.as_ref(),
                &key.key("half_open_requests"),
                defaults::BREAKER_HALF_OPEN_REQUESTS,
            ),
        }
    }

    /// A cluster's `endpoints`, in either form; addresses checked and distinct.
    fn endpoints(&mut self, c: &ClusterFile, key: &KeyPath, span: &Range<usize>) -> Vec<Endpoint> {
        let k = key.key("endpoints");
        let Some(list) = &c.endpoints else {
            if c.discovery.is_none() {
                self.key_err(span, key, "a cluster needs `endpoints` (or `discovery`)");
            }
            return Vec::new();
        };
        if list.get_ref().is_empty() && c.discovery.is_none() {
            self.err(&list.span(), &k, "must not be empty");
        }
        let mut out: Vec<Endpoint> = Vec::with_capacity(list.get_ref().len());
        for (i, e) in list.get_ref().iter().enumerate() {
            let ek = k.index(i);
            let (address, address_span, weight) = match e.get_ref() {
                EndpointFile::Address(a) => (a.clone(), e.span(), defaults::WEIGHT),
                EndpointFile::Table(t) => {
                    let weight = match &t.weight {
                        None => defaults::WEIGHT,
                        Some(w) => match u32::try_from(*w.get_ref()) {
                            Ok(w) if w >= 1 => w,
                            _ => {
                                self.err(
                                    &w.span(),
                                    &ek.key("weight"),
                                    format!("weight must be between 1 and {}", u32::MAX),
                                );
                                defaults::WEIGHT
                            }
                        },
                    };
                    (t.address.get_ref().clone(), t.address.span(), weight)
                }
            };
            let address_key = match e.get_ref() {
                EndpointFile::Address(_) => ek.clone(),
                EndpointFile::Table(_) => ek.key("address"),
            };
            if let Some((scheme, _)) = address.split_once("://") {
                self.err(
                    &address_span,
                    &address_key,
                    format!(
                        "endpoint {address:?} has a scheme: write host:port without `{scheme}://` and choose the cluster's `protocol` (\"h2c\" plaintext, \"h2\" TLS, \"http1\")"
                    ),
                );
                continue;
            }
            if let Err(why) = check_host_port(&address) {
                self.err(
                    &address_span,
                    &address_key,
                    format!("invalid endpoint address {address:?}: {why}"),
                );
                continue;
            }
            if self.depth == super::Depth::Check
                && let Err(why) = resolves(&address)
            {
                self.err(&address_span, &address_key, why);
                continue;
            }
            if out.iter().any(|o| o.address == address) {
                self.err(
                    &address_span,
                    &address_key,
                    format!("duplicate endpoint {address:?} (raise its weight instead)"),
                );
                continue;
            }
            out.push(Endpoint { address, weight });
        }
        out
    }

    /// `ring_hash`'s `hash_key`: `"header:NAME"` or `"client_ip"`.
    fn hash_key(&mut self, h: &Spanned<String>, key: &KeyPath) -> Option<HashKey> {
        let text = h.get_ref();
        if text == "client_ip" {
            return Some(HashKey::ClientIp);
        }
        if let Some(name) = text.strip_prefix("header:") {
            let lower = name.to_ascii_lowercase();
            if http::HeaderName::from_bytes(lower.as_bytes()).is_ok() {
                return Some(HashKey::Header(lower));
            }
            self.err(
                &h.span(),
                key,
                format!("invalid HTTP header name {name:?} in hash_key"),
            );
            return None;
        }
        self.err(
            &h.span(),
            key,
            format!("unknown hash_key {text:?}, expected \"header:NAME\" or \"client_ip\""),
        );
        None
    }
}

/// Whether `host:port` names at least one address (`rpcgate check`; IP literals always do).
/// Whether a TCP connection to `address` opens within a second (`check` only: etcd).
fn answers(address: &str) -> bool {
    use std::net::ToSocketAddrs;
    let Ok(found) = address.to_socket_addrs() else {
        return false;
    };
    found.into_iter().any(|a| {
        std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(1)).is_ok()
    })
}

fn resolves(address: &str) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    if address.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    match address
        .to_socket_addrs()
        .map(|mut found| found.next().is_some())
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("host name in {address:?} resolves to no address")),
        Err(e) => Err(format!("host name in {address:?} does not resolve: {e}")),
    }
}

/// `host:port` with a port in 1..=65535 and a plausible host: a DNS name, an IPv4
/// address or a bracketed IPv6 address. Resolution happens when connecting.
pub(crate) fn check_host_port(address: &str) -> Result<(), &'static str> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or("expected host:port, e.g. \"127.0.0.1:50051\"")?;
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err("the port must be a number from 1 to 65535"),
        Ok(_) => {}
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| "invalid IPv6 address between the brackets");
    }
    if host.is_empty() {
        return Err("the host is missing");
    }
    if host.contains(':') {
        return Err("an IPv6 address must be in brackets, e.g. \"[::1]:50051\"");
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err("the host may only contain letters, digits, '-', '.' and '_'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_host_port;

    #[test]
    fn host_port_forms() {
        for ok in [
            "127.0.0.1:50051",
            "localhost:1",
            "backend.internal:65535",
            "[::1]:50051",
            "my_host-1.example:80",
        ] {
            assert_eq!(check_host_port(ok), Ok(()), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:x",
            ":80",
            "::1:80",
            "[::zz]:80",
            "a b:80",
            "host:",
            "",
        ] {
            assert!(check_host_port(bad).is_err(), "{bad}");
        }
    }
}
