//! `docs/config.md` cannot drift from the file model: every key the parser accepts has a
//! row there (by its dotted path), and every documented key is one the parser accepts.
//! The keys are read from serde itself (the "expected one of" list of an unknown field).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;

use rpcgate_config::file::*;
use serde::de::DeserializeOwned;

/// The fields of table type `T`, as serde names them.
fn fields<T: DeserializeOwned>() -> Vec<String> {
    let error = match toml::from_str::<T>("zz_no_such_key = 1") {
        Ok(_) => panic!("an unknown key was accepted"),
        Err(e) => e.message().to_string(),
    };
    let expected = error
        .split_once("expected")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no field list in {error:?}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Every dotted key path of the file model (array tables without brackets), and the
/// paths of the tables among them (which have sections of their own).
fn model_keys() -> (BTreeSet<String>, BTreeSet<String>) {
    let tables: Vec<(&str, Vec<String>)> = vec![
        ("server", fields::<ServerFile>()),
        ("admin", fields::<AdminFile>()),
        ("log", fields::<LogFile>()),
        ("listeners", fields::<ListenerFile>()),
        ("listeners.rate_limit", fields::<RateLimitFile>()),
        ("listeners.tls", fields::<ListenerTlsFile>()),
        ("listeners.routes", fields::<RouteFile>()),
        ("listeners.routes.match", fields::<MatchFile>()),
        ("listeners.routes.retry", fields::<RetryFile>()),
        ("listeners.routes.rate_limit", fields::<RateLimitFile>()),
        ("clusters", fields::<ClusterFile>()),
        ("clusters.endpoints", fields::<EndpointTableFile>()),
        ("clusters.passive_health", fields::<PassiveHealthFile>()),
        ("clusters.active_health", fields::<ActiveHealthFile>()),
        ("clusters.circuit_breaker", fields::<CircuitBreakerFile>()),
        ("clusters.discovery", fields::<DiscoveryFile>()),
        ("clusters.tls", fields::<ClusterTlsFile>()),
    ];
    // A key that is itself one of these tables has its own section, not a row.
    let table_paths: BTreeSet<String> = tables.iter().map(|(p, _)| (*p).to_owned()).collect();
    let keys = tables
        .iter()
        .flat_map(|(path, keys)| keys.iter().map(move |k| format!("{path}.{k}")))
        .filter(|k| !table_paths.contains(k) || k == "clusters.endpoints")
        .collect();
    (keys, table_paths)
}

/// The keys documented in `docs/config.md`: the first cell of each table row.
fn documented_keys() -> BTreeSet<String> {
    let doc = include_str!("../../../docs/config.md");
    doc.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(key, _)| key.to_owned())
        .filter(|key| key.contains('.'))
        .collect()
}

#[test]
fn every_key_is_documented_and_every_documented_key_exists() {
    let (model, tables) = model_keys();
    let documented = documented_keys();
    let missing: Vec<_> = model.difference(&documented).collect();
    let unknown: Vec<_> = documented
        .iter()
        .filter(|k| !model.contains(*k) && !tables.contains(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "keys without a row in docs/config.md: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "docs/config.md documents keys the parser does not take: {unknown:?}"
    );
    assert!(model.len() > 60, "{model:?}");
}
