//! Valid files: defaults applied, endpoint forms, the embedded default, `load`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{MINIMAL, minimal_with, ok};
use rpcgate_config::{
    AccessLogTarget, Endpoint, HashKey, LbPolicy, LogFormat, PassiveHealth, RouteMatch,
    UpstreamProtocol,
};

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

#[test]
fn minimal_config_gets_every_default() {
    let c = ok(MINIMAL);
    assert_eq!(c.source, None);
    assert_eq!(c.server.workers, cpus());
    assert_eq!(c.server.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.admin, None);
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.access_log, AccessLogTarget::Stdout);
    assert_eq!(c.log.format, LogFormat::Json);

    let l = &c.listeners[0];
    assert_eq!(l.name, "edge");
    assert_eq!(l.address, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(l.max_connections, 10_000);
    assert_eq!(l.max_concurrent_streams, 256);
    assert_eq!(l.max_header_bytes, 16_384);
    assert_eq!(l.idle_timeout, Duration::from_secs(300));
    assert_eq!(l.send_timeout, Duration::from_secs(60));
    assert_eq!(l.max_send_buffer_bytes, 400 * 1024);
    assert!(!l.compression);
    assert_eq!(l.rate_limit, None);
    let r = &l.routes[0];
    assert_eq!(r.max_message_bytes, 4 * 1024 * 1024);
    assert_eq!(r.rate_limit, None);
    assert_eq!(r.name, "edge/0");
    assert_eq!(r.matcher, RouteMatch::default());
    assert_eq!(r.cluster, 0);
    assert_eq!(r.timeout, None);
    assert!(r.request_headers.is_empty() && r.response_headers.is_empty());

    let cl = &c.clusters[0];
    assert_eq!(cl.name, "backends");
    assert_eq!(
        cl.endpoints,
        [Endpoint {
            address: "127.0.0.1:50051".into(),
            weight: 1
        }]
    );
    assert_eq!(cl.lb, LbPolicy::RoundRobin);
    assert_eq!(cl.protocol, UpstreamProtocol::H2c);
    assert_eq!(cl.authority, None);
    assert_eq!(cl.connect_timeout, Duration::from_secs(2));
    assert_eq!(
        cl.passive_health,
        PassiveHealth {
            max_fails: 1,
            fail_timeout: Duration::from_secs(10)
        }
    );
}

#[test]
fn explicit_values_are_kept() {
    let text = r#"
[server]
workers = 3
drain_timeout = "0s"

[log]
level = "DEBUG"
access_log = "/var/log/rpcgate/access.log"
format = "text"

[[listeners]]
name = "edge"
address = "[::1]:9000"
max_connections = 5
max_concurrent_streams = 10
max_header_bytes = 1024
idle_timeout = "1h"
max_connection_age = "0s"

[[listeners.routes]]
name = "create"
match.method = "pkg.Laptops/Create"
match.authority = "api.example.com"
match.headers = { "X-Tenant" = "a", "x-env" = "prod" }
match.grpc = true
cluster = "b"
timeout = "1m30s"
request_headers = { "X-Env" = "prod" }
response_headers = { "strict-transport-security" = "max-age=6000" }

[[listeners.routes]]
match.path = "/healthz"
cluster = "a"

[[listeners.routes]]
match = { service = "pkg.Laptops", path_prefix = "/pkg." }
cluster = "a"

[[clusters]]
name = "a"
endpoints = ["localhost:1"]
lb = "ring_hash"
hash_key = "header:X-User-Id"
protocol = "http1"
authority = "backend.internal"
connect_timeout = "250ms"
passive_health = { max_fails = 0 }

[[clusters]]
name = "b"
endpoints = ["h:1", { address = "h:2", weight = 3 }, { address = "[::1]:3" }]
lb = "p2c_ewma"
passive_health = { max_fails = 5, fail_timeout = "30s" }
"#;
    let c = ok(text);
    assert_eq!(c.server.workers, 3);
    assert_eq!(c.server.drain_timeout, Duration::ZERO);
    assert_eq!(c.log.level, "debug");
    assert_eq!(
        c.log.access_log,
        AccessLogTarget::File(PathBuf::from("/var/log/rpcgate/access.log"))
    );
    assert_eq!(c.log.format, LogFormat::Text);

    let l = &c.listeners[0];
    assert_eq!(l.address, "[::1]:9000".parse().unwrap());
    assert_eq!(
        (
            l.max_connections,
            l.max_concurrent_streams,
            l.max_header_bytes
        ),
        (5, 10, 1024)
    );
    assert_eq!(l.idle_timeout, Duration::from_secs(3600));

    let r = &l.routes[0];
    assert_eq!(r.name, "create");
    assert_eq!(r.cluster, 1);
    assert_eq!(r.timeout, Some(Duration::from_secs(90)));
    assert_eq!(r.matcher.method.as_deref(), Some("pkg.Laptops/Create"));
    assert_eq!(r.matcher.authority.as_deref(), Some("api.example.com"));
    assert_eq!(r.matcher.grpc, Some(true));
    assert_eq!(
        r.matcher.headers,
        [
            ("x-env".into(), "prod".into()),
            ("x-tenant".into(), "a".into())
        ]
    );
    assert_eq!(r.request_headers, [("x-env".into(), "prod".into())]);
    assert_eq!(
        r.response_headers,
        [("strict-transport-security".into(), "max-age=6000".into())]
    );
    assert_eq!(l.routes[1].name, "edge/1");
    assert_eq!(l.routes[1].matcher.path.as_deref(), Some("/healthz"));
    assert_eq!(l.routes[1].cluster, 0);
    assert_eq!(l.routes[2].matcher.service.as_deref(), Some("pkg.Laptops"));
    assert_eq!(l.routes[2].matcher.path_prefix.as_deref(), Some("/pkg."));

    let a = &c.clusters[0];
    assert_eq!(
        a.lb,
        LbPolicy::RingHash(HashKey::Header("x-user-id".into()))
    );
    assert_eq!(a.protocol, UpstreamProtocol::Http1);
    assert_eq!(a.authority.as_deref(), Some("backend.internal"));
    assert_eq!(a.connect_timeout, Duration::from_millis(250));
    assert_eq!(a.passive_health.max_fails, 0);
    assert_eq!(a.passive_health.fail_timeout, Duration::from_secs(10));

    let b = &c.clusters[1];
    assert_eq!(b.lb, LbPolicy::P2cEwma);
    assert_eq!(
        b.endpoints,
        [
            Endpoint {
                address: "h:1".into(),
                weight: 1
            },
            Endpoint {
                address: "h:2".into(),
                weight: 3
            },
            Endpoint {
                address: "[::1]:3".into(),
                weight: 1
            },
        ]
    );
    assert_eq!(
        b.passive_health,
        PassiveHealth {
            max_fails: 5,
            fail_timeout: Duration::from_secs(30)
        }
    );
}

#[test]
fn every_lb_policy_and_hash_key() {
    for (lb, want) in [
        ("round_robin", LbPolicy::RoundRobin),
        ("least_request", LbPolicy::LeastRequest),
        ("p2c_ewma", LbPolicy::P2cEwma),
        ("random", LbPolicy::Random),
    ] {
        let c = ok(&minimal_with(
            "name = \"backends\"",
            &format!("lb = \"{lb}\""),
        ));
        assert_eq!(c.clusters[0].lb, want);
    }
    let c = ok(&minimal_with(
        "name = \"backends\"",
        "lb = \"ring_hash\"\nhash_key = \"client_ip\"",
    ));
    assert_eq!(c.clusters[0].lb, LbPolicy::RingHash(HashKey::ClientIp));
}

#[test]
fn workers_zero_means_one_per_cpu() {
    let c = ok(&format!("[server]\nworkers = 0\n{MINIMAL}"));
    assert_eq!(c.server.workers, cpus());
    assert!(c.server.workers >= 1);
}

#[test]
fn authority_empty_string_means_none() {
    let c = ok(&minimal_with("name = \"backends\"", "authority = \"\""));
    assert_eq!(c.clusters[0].authority, None);
}

#[test]
fn the_embedded_default_config_is_valid() {
    let c = rpcgate_config::parse(rpcgate_config::DEFAULT_CONFIG, "default.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listeners.len(), 1);
    let l = &c.listeners[0];
    assert_eq!(l.name, "edge");
    assert_eq!(l.address, "127.0.0.1:8080".parse().unwrap());
    let routes: Vec<(Option<&str>, Option<&str>, &str)> = l
        .routes
        .iter()
        .map(|r| {
            (
                r.matcher.service.as_deref(),
                r.matcher.path_prefix.as_deref(),
                c.clusters[r.cluster].name.as_str(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            (Some("techschool_pcbook.AuthService"), None, "auth"),
            (Some("techschool_pcbook.LaptopService"), None, "laptop"),
            (None, Some("/"), "greeter"),
        ]
    );
    for cluster in &c.clusters {
        let addrs: Vec<&str> = cluster
            .endpoints
            .iter()
            .map(|e| e.address.as_str())
            .collect();
        assert_eq!(
            addrs,
            ["127.0.0.1:50051", "127.0.0.1:50052", "127.0.0.1:50053"]
        );
    }
}

#[test]
fn load_reads_a_file_and_records_its_path() {
    let dir = std::env::temp_dir().join(format!("rpcgate-config-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rpcgate.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    let c = rpcgate_config::load(&path).unwrap();
    assert_eq!(c.source.as_deref(), Some(path.as_path()));
    assert_eq!(c.listeners[0].name, "edge");

    std::fs::write(&path, MINIMAL.replace("8080", "80800")).unwrap();
    let e = rpcgate_config::load(&path).unwrap_err();
    assert_eq!(e.errors()[0].file(), path.display().to_string());
    assert_eq!(e.errors()[0].line(), 4);

    std::fs::write(&path, b"\xff\xfe").unwrap();
    let e = rpcgate_config::load(&path).unwrap_err();
    assert!(e.to_string().contains("not UTF-8"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rate_limit_defaults_and_given_values() {
    let c = ok(&common::minimal_with(
        "address = \"127.0.0.1:8080\"",
        "rate_limit = { requests_per_second = 2.5 }\ncompression = true\nsend_timeout = \"5s\"",
    ));
    let l = &c.listeners[0];
    assert_eq!(
        l.rate_limit,
        Some(rpcgate_config::RateLimit {
            requests_per_second: 2.5,
            burst: 3,
            per: rpcgate_config::RateLimitScope::ClientIp,
            max_clients: 100_000,
        })
    );
    assert!(l.compression);
    assert_eq!(l.send_timeout, Duration::from_secs(5));
    let c = ok(&common::minimal_with(
        "cluster = \"backends\"",
        "rate_limit = { requests_per_second = 50, burst = 7, per = \"listener\" }\nmax_message_bytes = 1024",
    ));
    let r = &c.listeners[0].routes[0];
    let limit = r.rate_limit.as_ref().unwrap();
    assert_eq!(
        (limit.burst, limit.per),
        (7, rpcgate_config::RateLimitScope::Listener)
    );
    assert_eq!(r.max_message_bytes, 1024);
}

#[test]
fn etcd_discovery_prefix_defaults_to_the_register_folder_of_the_cluster() {
    let c = ok(&MINIMAL.replace(
        "endpoints = [\"127.0.0.1:50051\"]",
        "discovery = { etcd = [\"127.0.0.1:2379\", \"[::1]:2379\"] }",
    ));
    assert_eq!(
        c.clusters[0].discovery,
        Some(rpcgate_config::Discovery::Etcd {
            servers: vec!["127.0.0.1:2379".into(), "[::1]:2379".into()],
            prefix: format!("/rpcgate/services/{}/", c.clusters[0].name),
        })
    );
    let c = ok(&MINIMAL.replace(
        "endpoints = [\"127.0.0.1:50051\"]",
        "discovery = { etcd = [\"127.0.0.1:2379\"], prefix = \"/svc/laptop/\" }",
    ));
    let Some(rpcgate_config::Discovery::Etcd { prefix, .. }) = &c.clusters[0].discovery else {
        panic!("{:?}", c.clusters[0].discovery);
    };
    assert_eq!(prefix, "/svc/laptop/");
    // A prefix without its slashes is taken, with a warning that says what it matches.
    for (prefix, says) in [
        (
            "/svc/laptop",
            "matches every key that starts with it, /svc/laptop-v2/… too",
        ),
        ("svc/laptop/", "does not start with '/'"),
    ] {
        let c = ok(&MINIMAL.replace(
            "endpoints = [\"127.0.0.1:50051\"]",
            &format!("discovery = {{ etcd = [\"127.0.0.1:2379\"], prefix = \"{prefix}\" }}"),
        ));
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("discovery.prefix: ") && w.contains(says)),
            "{:?}",
            c.warnings
        );
    }
}

#[test]
fn dns_discovery_defaults_and_given_values() {
    let c = ok(&MINIMAL.replace(
        "endpoints = [\"127.0.0.1:50051\"]",
        "discovery = { dns = \"backend.internal:50051\" }",
    ));
    assert_eq!(
        c.clusters[0].discovery,
        Some(rpcgate_config::Discovery::Dns {
            host: "backend.internal".into(),
            port: 50051,
            refresh: Duration::from_secs(5),
            resolver: None,
        })
    );
    assert!(c.clusters[0].endpoints.is_empty());
    let c = ok(&MINIMAL.replace(
        "endpoints = [\"127.0.0.1:50051\"]",
        "discovery = { dns = \"[::1]:7\", refresh = \"1s\", resolver = \"127.0.0.1:5353\" }",
    ));
    let Some(rpcgate_config::Discovery::Dns { host, resolver, .. }) = &c.clusters[0].discovery
    else {
        panic!("{:?}", c.clusters[0].discovery);
    };
    assert_eq!(host, "::1");
    assert_eq!(*resolver, Some("127.0.0.1:5353".parse().unwrap()));
}
