//! What `rpcgate check` looks at beyond `load` (`rpcgate_config::check`): endpoint host
//! names resolve, the access-log file opens, certificates are valid today. `load` (run,
//! reload) does not refuse a file for those.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::TempDir;

fn both(dir: &TempDir, text: &str) -> (bool, Vec<String>) {
    let path = dir.write("rpcgate.toml", text);
    let loaded = rpcgate_config::load(&path).is_ok();
    let checked = match rpcgate_config::check(&path) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .errors()
            .iter()
            .map(|e| format!("{}:{}: {}: {}", e.line(), e.col(), e.key(), e.message()))
            .collect(),
    };
    (loaded, checked)
}

#[test]
fn unresolvable_names_and_unopenable_logs_are_errors_for_check_only() {
    let dir = TempDir::new("check_depth");
    let text = format!(
        "[log]\naccess_log = {:?}\n{}",
        dir.path()
            .join("no-such-dir/access.log")
            .display()
            .to_string(),
        common::MINIMAL.replace(
            "\"127.0.0.1:50051\"",
            "\"localhost:50051\", \"backend.invalid:50051\""
        )
    );
    let (loaded, checked) = both(&dir, &text);
    assert!(loaded, "load refuses what only check should");
    assert_eq!(checked.len(), 2, "{checked:?}");
    assert!(
        checked[0].starts_with("2:14: log.access_log: cannot open")
            && checked[0].contains("for appending"),
        "{checked:?}"
    );
    assert!(
        checked[1].contains(
            "clusters[0].endpoints[1]: host name in \"backend.invalid:50051\" does not resolve"
        ),
        "{checked:?}"
    );
    // A log path that opens is created, as nginx -t does.
    let ok = text
        .replace("no-such-dir/", "")
        .replace(", \"backend.invalid:50051\"", "");
    assert_eq!(both(&dir, &ok).1, Vec::<String>::new());
    assert!(dir.path().join("access.log").exists());
}

#[test]
fn an_expired_certificate_is_an_error_for_check_at_its_key() {
    use rcgen::{CertificateParams, KeyPair};
    let dir = TempDir::new("check_expired");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    dir.write("old-cert.pem", cert.pem());
    dir.write("old-key.pem", key.serialize_pem());
    let text = common::minimal_with(
        "address = \"127.0.0.1:8080\"",
        "[listeners.tls]\ncert = \"old-cert.pem\"\nkey = \"old-key.pem\"",
    );
    let (loaded, checked) = both(&dir, &text);
    assert!(loaded);
    assert_eq!(checked.len(), 1, "{checked:?}");
    assert!(
        checked[0].starts_with("6:8: listeners[0].tls.cert:")
            && checked[0].contains("the certificate expired on"),
        "{checked:?}"
    );
}
