//! The contract §2 reference listing: every key in it parses, validation refuses exactly the
//! keys that a later release builds, at their lines, and its TLS tables load with real
//! PEM files.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use rpcgate_config::file::{EndpointFile, FileConfig};
use rpcgate_config::validate::NOT_IMPLEMENTED;
use rpcgate_config::{ClientAuth, ClientErrorDetail, ConfigErrors, UpstreamProtocol};

const SPEC: &str = include_str!("fixtures/spec.toml");

#[test]
fn every_key_of_the_listing_is_in_the_file_model() {
    let file: FileConfig = toml::from_str(SPEC).expect("the SPEC listing parses");
    let l = file.listeners[0].get_ref();
    assert_eq!(l.name.get_ref(), "edge");
    assert_eq!(l.routes.len(), 3);
    assert!(l.tls.is_some() && l.rate_limit.is_some() && l.allow.is_some());
    let r = l.routes[1].get_ref();
    let retry = r.retry.as_ref().unwrap().get_ref();
    assert_eq!(*retry.max_attempts.as_ref().unwrap().get_ref(), 3);
    assert_eq!(retry.on.as_ref().unwrap().get_ref().len(), 2);
    let m = l.routes[0].get_ref().matcher.as_ref().unwrap().get_ref();
    assert_eq!(
        m.service.as_ref().unwrap().get_ref(),
        "techschool_pcbook.AuthService"
    );
    let c = file.clusters[0].get_ref();
    let eps = c.endpoints.as_ref().unwrap().get_ref();
    assert!(matches!(eps[0].get_ref(), EndpointFile::Address(a) if a == "127.0.0.1:50051"));
    assert!(
        matches!(eps[1].get_ref(), EndpointFile::Table(t) if *t.weight.as_ref().unwrap().get_ref() == 2)
    );
    assert!(c.circuit_breaker.is_some() && c.active_health.is_some() && c.tls.is_some());
    assert_eq!(
        c.discovery
            .as_ref()
            .unwrap()
            .get_ref()
            .dns
            .as_ref()
            .unwrap()
            .get_ref(),
        "backend.internal:50051"
    );
}

#[test]
fn the_commented_discovery_forms_parse_too() {
    for d in [
        r#"discovery = { etcd = ["127.0.0.1:2379"], prefix = "/rpcgate/services/laptop/" }"#,
        r#"discovery = { file = "endpoints.json" }"#,
    ] {
        let text = SPEC.replace(
            r#"discovery = { dns = "backend.internal:50051", refresh = "5s" }"#,
            d,
        );
        let _: FileConfig = toml::from_str(&text).expect(d);
    }
}

/// The SPEC listing written as `<dir>/rpcgate.toml` next to real PEM files at the paths it
/// names (`certs/…`, relative to the file's folder), so only the listing's own problems
/// are reported.
fn load_listing(dir: &common::TempDir, text: &str) -> ConfigErrors {
    common::write_pki(dir);
    match common::load_in(dir, text) {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e,
    }
}

/// The error lines, with the temp folder's file name shortened to `rpcgate.toml`.
fn short_lines(dir: &common::TempDir, errors: &ConfigErrors) -> Vec<String> {
    let file = dir.path().join("rpcgate.toml").display().to_string();
    errors
        .errors()
        .iter()
        .map(|e| {
            assert_eq!(e.file(), file);
            e.to_string().replacen(&file, "rpcgate.toml", 1)
        })
        .collect()
}

/// The listing made consistent (the clusters it routes to exist, `ring_hash` for its
/// `hash_key`, `h2` for its `[clusters.tls]`).
fn consistent(listing: &str) -> String {
    listing
        .replace(r#"lb = "round_robin" "#, r#"lb = "ring_hash"   "#)
        .replace(r#"protocol = "h2c" "#, r#"protocol = "h2"  "#)
        + "\n[[clusters]]\nname = \"auth\"\nendpoints = [\"127.0.0.1:1\"]\n\
           \n[[clusters]]\nname = \"rest\"\nendpoints = [\"127.0.0.1:2\"]\n"
}

/// The listing is a reference of keys, not a consistent file: besides the keys of a
/// later release, it routes to clusters it does not define (`auth`, `rest`), gives
/// `hash_key` with `round_robin`, and `[clusters.tls]` with `protocol = "h2c"`.
#[test]
fn the_verbatim_listing_reports_each_refused_key_at_its_line() {
    let dir = common::TempDir::new("verbatim_listing");
    let got = short_lines(&dir, &load_listing(&dir, SPEC));
    let want = [
        "rpcgate.toml:40:11: listeners[0].routes[0].cluster: unknown cluster `auth` (defined clusters: laptop)",
        "rpcgate.toml:55:11: listeners[0].routes[2].cluster: unknown cluster `rest` (defined clusters: laptop)",
        "rpcgate.toml:61:1: clusters[0].hash_key: hash_key is only used with lb = \"ring_hash\"",
        "rpcgate.toml:74:1: clusters[0].tls: [clusters.tls] needs protocol = \"h2\" (TLS towards the backends)",
    ];
    assert_eq!(got, want);
}

/// Made consistent, the listing loads: every key of it is built, and `[listeners.tls]`,
/// `[clusters.tls]` and `protocol = "h2"` land in the runtime config.
#[test]
fn the_consistent_listing_loads() {
    let dir = common::TempDir::new("consistent_listing");
    common::write_pki(&dir);
    let config = match common::load_in(&dir, &consistent(SPEC)) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    };
    assert!(config.admin.as_ref().is_some_and(|a| a.xds));
}

/// Without the keys of a later release, the consistent listing loads, and its TLS tables
/// land in the runtime config with the files read from the config's folder.
#[test]
fn the_listing_without_later_keys_loads_with_its_tls_files() {
    let later = [
        "xds =",
        "max_message_bytes =",
        "allow =",
        "deny =",
        "rate_limit =",
        "retry =",
        "discovery =",
    ];
    let text: String = consistent(SPEC)
        .lines()
        .filter(|line| !later.iter().any(|k| line.starts_with(k)))
        .map(|line| format!("{line}\n"))
        .collect();
    let dir = common::TempDir::new("listing_loads");
    common::write_pki(&dir);
    let config = match common::load_in(&dir, &text) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    };
    let pki = common::pki();
    let certs = dir.path().join("certs");

    let tls = config.listeners[0].tls.as_ref().expect("[listeners.tls]");
    assert_eq!(tls.cert.path, certs.join("server-cert.pem"));
    assert_eq!(tls.cert.pem, pki.server_cert.as_bytes());
    assert_eq!(tls.key.path, certs.join("server-key.pem"));
    assert_eq!(tls.key.pem, pki.server_key.as_bytes());
    let client_ca = tls.client_ca.as_ref().expect("client_ca");
    assert_eq!(client_ca.path, certs.join("ca-cert.pem"));
    assert_eq!(client_ca.pem, pki.ca_cert.as_bytes());
    assert_eq!(tls.client_auth, ClientAuth::Required);
    assert_eq!(tls.handshake_timeout, Duration::from_secs(10));

    let laptop = &config.clusters[0];
    assert_eq!(laptop.protocol, UpstreamProtocol::H2);
    let tls = laptop.tls.as_ref().expect("[clusters.tls]");
    assert_eq!(tls.ca.as_ref().unwrap().path, certs.join("ca-cert.pem"));
    let (cert, key) = tls.identity.as_ref().expect("cert and key");
    assert_eq!(cert.path, certs.join("client-cert.pem"));
    assert_eq!(cert.pem, pki.client_cert.as_bytes());
    assert_eq!(key.path, certs.join("client-key.pem"));
    assert_eq!(key.pem, pki.client_key.as_bytes());
    assert_eq!(tls.server_name.as_deref(), Some("localhost"));
    assert!(!tls.insecure_skip_verify);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let admin = config.admin.as_ref().expect("[admin]");
    assert_eq!(admin.address.to_string(), "127.0.0.1:9901");
    assert_eq!(config.log.client_error_detail, ClientErrorDetail::Reason);
    // The clusters added to make it consistent are h2c: no TLS.
    assert!(config.clusters[1..].iter().all(|c| c.tls.is_none()));
}

/// Keys with an "off" value are accepted (the listing's `"0s"`, `false`, `[]`, `0`);
/// any other value is refused at the key.
#[test]
fn keys_with_an_off_value_are_refused_only_when_turned_on() {
    let off = common::minimal_with(
        "address = \"127.0.0.1:8080\"",
        "max_connection_age = \"0s\"\ngrpc_web = false\ncors_allowed_origins = []\ncompression = false\ndeny = []",
    );
    let off = off.replace(
        "endpoints = [\"127.0.0.1:50051\"]",
        "endpoints = [\"127.0.0.1:50051\"]\nslow_start = \"0s\"\nmax_requests = 0",
    );
    common::ok(&off);

    let on = off
        .replace(
            "max_connection_age = \"0s\"\n",
            "max_connection_age = \"10m\"\n",
        )
        .replace("\"0s\"", "\"10m\"")
        .replace("false", "true")
        .replace("[]", "[\"https://example.com\"]")
        .replace("max_requests = 0", "max_requests = 100");
    let got = common::lines(&on);
    assert_eq!(
        got,
        [
            "t.toml:6:1: listeners.grpc_web is not implemented yet",
            "t.toml:7:1: listeners.cors_allowed_origins is not implemented yet",
            "t.toml:9:9: listeners[0].deny[0]: invalid network \"https://example.com\": expected an IPv4 or IPv6 address, e.g. \"10.0.0.0/8\" or \"::1\"",
        ]
    );
}

/// Every entry of the one list is exercised by the tests above, so deleting a line there
/// is noticed by a test that then has to change.
#[test]
fn the_not_implemented_list_is_what_the_tests_cover() {
    let covered = ["listeners.grpc_web", "listeners.cors_allowed_origins"];
    assert_eq!(NOT_IMPLEMENTED, covered);
}

/// A route's `deny` (not in the listing) is refused like its `allow`; `xds = false` and
/// both `client_error_detail` values are taken, a typo in either is an error at its value.
#[test]
fn route_access_lists_admin_xds_and_client_error_detail() {
    let deny = common::minimal_with(
        "cluster = \"backends\"",
        "allow = [\"10.0.0.0/8\", \"::1\"]\ndeny = [\"10.1.0.0/16\"]",
    );
    let access = &common::ok(&deny).listeners[0].routes[0].access;
    assert_eq!((access.allow.len(), access.deny.len()), (2, 1));
    let bad = common::minimal_with("cluster = \"backends\"", "deny = [\"10.0.0.1/8\"]");
    assert_eq!(
        common::lines(&bad),
        [
            "t.toml:8:9: listeners[0].routes[0].deny[0]: invalid network \"10.0.0.1/8\": host bits are set: write 10.0.0.0/8, or the address alone for just that host"
        ]
    );
    for detail in ["reason", "full"] {
        let text = format!(
            "[admin]\naddress = \"127.0.0.1:0\"\nxds = false\n[log]\nclient_error_detail = \"{detail}\"\n{}",
            common::minimal_with("", "")
        );
        common::ok(&text);
    }
    let typo = format!(
        "[log]\nclient_error_detail = \"verbose\"\n{}",
        common::minimal_with("", "")
    );
    assert_eq!(
        common::lines(&typo),
        [
            "t.toml:2:23: log.client_error_detail: unknown value \"verbose\", expected \"reason\" or \"full\""
        ]
    );
}

#[test]
fn sub_keys_of_later_keys_are_still_strict() {
    let text = common::minimal_with(
        "cluster = \"backends\"",
        "retry = { max_attempts = 3, tries = 2 }",
    );
    let e = common::err(&text);
    assert_eq!(e.len(), 1);
    let e = &e.errors()[0];
    assert_eq!((e.line(), e.col()), (8, 29));
    assert_eq!(e.key(), "listeners[0].routes[0].retry.tries");
    assert!(e.message().starts_with("unknown field `tries`"), "{e}");

    let text = common::minimal_with(
        "address = \"127.0.0.1:8080\"",
        "[listeners.tls]\ncert = \"c\"\nkey = \"k\"\nclient_cert = \"x\"",
    );
    let e = common::err(&text);
    assert_eq!(e.errors()[0].key(), "listeners[0].tls.client_cert");
    assert_eq!(e.errors()[0].line(), 8);
}
