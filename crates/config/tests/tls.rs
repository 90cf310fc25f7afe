//! `[listeners.tls]`, `[clusters.tls]` and `protocol = "h2"`: the PEM files they name are
//! read and checked when the configuration loads (so `rpcgate check` and a reload catch a
//! bad file, at the value that names it), relative paths resolve against the config's
//! folder, and the tables land in the runtime config with their defaults.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{MINIMAL, TempDir, minimal_with, ok, pki, write_pki};
use rpcgate_config::{ClientAuth, ClusterTls, Config, PemFile, UpstreamProtocol};

/// 1-based `(line, col)` of the first `needle` in `text`, to say where an error must point.
fn pos(text: &str, needle: &str) -> (usize, usize) {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// 1-based line of the line of `text` that starts with `prefix` (a key; the temp folder's
/// name may hold the same words elsewhere).
fn line_starting(text: &str, prefix: &str) -> usize {
    text.lines()
        .position(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?} in:\n{text}"))
        + 1
}

/// Every error of `text` as `(line, col, key, message)`.
fn errors(text: &str) -> Vec<(usize, usize, String, String)> {
    common::err(text)
        .errors()
        .iter()
        .map(|e| {
            assert_eq!(e.file(), "t.toml");
            (
                e.line(),
                e.col(),
                e.key().to_owned(),
                e.message().to_owned(),
            )
        })
        .collect()
}

/// The single error of `text`.
fn one(text: &str) -> (usize, usize, String, String) {
    let mut all = errors(text);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    all.remove(0)
}

/// `MINIMAL` with a `[listeners.tls]` table made of `body`.
fn with_listener_tls(body: &str) -> String {
    minimal_with(
        "address = \"127.0.0.1:8080\"",
        &format!("[listeners.tls]\n{body}"),
    )
}

/// `MINIMAL` with `cluster_keys` added to the cluster (e.g. `protocol = "h2"`) and, when
/// `tls` is `Some`, a `[clusters.tls]` table made of it.
fn with_cluster(cluster_keys: &str, tls: Option<&str>) -> String {
    let mut text = MINIMAL.to_owned() + cluster_keys;
    if !cluster_keys.is_empty() && !cluster_keys.ends_with('\n') {
        text.push('\n');
    }
    if let Some(body) = tls {
        text.push_str("\n[clusters.tls]\n");
        text.push_str(body);
        text.push('\n');
    }
    text
}

/// A folder holding the test PKI under `certs/`, and the absolute path of each file.
struct Files {
    dir: TempDir,
}

impl Files {
    fn new(test: &str) -> Self {
        let dir = TempDir::new(test);
        write_pki(&dir);
        Self { dir }
    }

    /// Absolute path of `certs/<name>`, as it goes into a TOML string.
    fn cert(&self, name: &str) -> String {
        self.path(&format!("certs/{name}"))
    }

    /// Absolute path of `relative` in the folder, as it goes into a TOML string.
    fn path(&self, relative: &str) -> String {
        self.dir.path().join(relative).display().to_string()
    }

    /// Writes an extra file and returns its absolute path.
    fn write(&self, relative: &str, contents: &str) -> String {
        self.dir.write(relative, contents).display().to_string()
    }

    /// `cert = …`, `key = …` with the server certificate and key.
    fn server_pair(&self) -> String {
        format!(
            "cert = \"{}\"\nkey = \"{}\"\n",
            self.cert("server-cert.pem"),
            self.cert("server-key.pem")
        )
    }
}

fn pem(path: &str, contents: &str) -> PemFile {
    PemFile {
        path: PathBuf::from(path),
        pem: contents.as_bytes().to_vec(),
    }
}

fn listener_tls(config: &Config) -> &rpcgate_config::ListenerTls {
    config.listeners[0].tls.as_ref().expect("[listeners.tls]")
}

// ---- [listeners.tls] ----------------------------------------------------------------

#[test]
fn listener_tls_reads_its_files_and_applies_the_defaults() {
    let f = Files::new("listener_defaults");
    let config = ok(&with_listener_tls(&f.server_pair()));
    let tls = listener_tls(&config);
    assert_eq!(
        tls.cert,
        pem(&f.cert("server-cert.pem"), &pki().server_cert)
    );
    assert_eq!(tls.key, pem(&f.cert("server-key.pem"), &pki().server_key));
    assert_eq!(tls.client_ca, None);
    assert_eq!(tls.client_auth, ClientAuth::None);
    assert_eq!(tls.handshake_timeout, Duration::from_secs(10));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    // Without the table, no TLS.
    assert_eq!(ok(MINIMAL).listeners[0].tls, None);
}

#[test]
fn client_auth_is_required_by_default_with_client_ca_and_takes_both_values() {
    let f = Files::new("client_auth_values");
    let ca = format!("client_ca = \"{}\"\n", f.cert("ca-cert.pem"));
    let base = f.server_pair() + &ca;
    for (extra, want) in [
        ("", ClientAuth::Required),
        ("client_auth = \"required\"", ClientAuth::Required),
        ("client_auth = \"optional\"", ClientAuth::Optional),
    ] {
        let config = ok(&with_listener_tls(&format!("{base}{extra}")));
        let tls = listener_tls(&config);
        assert_eq!(tls.client_auth, want, "{extra:?}");
        assert_eq!(
            tls.client_ca,
            Some(pem(&f.cert("ca-cert.pem"), &pki().ca_cert))
        );
    }
}

#[test]
fn client_auth_needs_client_ca_and_a_known_value() {
    let f = Files::new("client_auth_errors");
    let text = with_listener_tls(&(f.server_pair() + "client_auth = \"optional\""));
    let (line, col) = (line_starting(&text, "client_auth ="), 1);
    assert_eq!(
        one(&text),
        (
            line,
            col,
            "listeners[0].tls.client_auth".to_owned(),
            "client_auth needs client_ca (the CA that client certificates must chain to)"
                .to_owned()
        )
    );

    let text = with_listener_tls(&format!(
        "{}client_ca = \"{}\"\nclient_auth = \"sometimes\"",
        f.server_pair(),
        f.cert("ca-cert.pem")
    ));
    let (line, col) = pos(&text, "\"sometimes\"");
    assert_eq!(
        one(&text),
        (
            line,
            col,
            "listeners[0].tls.client_auth".to_owned(),
            "unknown value \"sometimes\", expected required or optional".to_owned()
        )
    );
    assert_eq!(
        common::lines(&text),
        [format!(
            "t.toml:{line}:{col}: listeners[0].tls.client_auth: unknown value \"sometimes\", \
             expected required or optional"
        )]
    );
}

#[test]
fn handshake_timeout_is_a_positive_duration() {
    let f = Files::new("handshake_timeout");
    for (value, want) in [
        ("\"30s\"", Duration::from_secs(30)),
        ("\"250ms\"", Duration::from_millis(250)),
    ] {
        let config = ok(&with_listener_tls(&format!(
            "{}handshake_timeout = {value}",
            f.server_pair()
        )));
        assert_eq!(listener_tls(&config).handshake_timeout, want, "{value}");
    }

    let text = with_listener_tls(&format!("{}handshake_timeout = \"0s\"", f.server_pair()));
    let (line, col) = pos(&text, "\"0s\"");
    assert_eq!(
        one(&text),
        (
            line,
            col,
            "listeners[0].tls.handshake_timeout".to_owned(),
            "must be greater than 0s".to_owned()
        )
    );

    let text = with_listener_tls(&format!("{}handshake_timeout = \"soon\"", f.server_pair()));
    let (line, col) = pos(&text, "\"soon\"");
    let (l, c, key, message) = one(&text);
    assert_eq!(
        (l, c, key.as_str()),
        (line, col, "listeners[0].tls.handshake_timeout")
    );
    assert!(!message.is_empty());

    // A duration is a string.
    let text = with_listener_tls(&format!("{}handshake_timeout = 10", f.server_pair()));
    let (l, _, key, _) = one(&text);
    assert_eq!(
        (l, key.as_str()),
        (
            line_starting(&text, "handshake_timeout ="),
            "listeners[0].tls.handshake_timeout"
        )
    );
}

#[test]
fn cert_and_key_are_required_keys() {
    let text = with_listener_tls("cert = \"c.pem\"");
    let (_, _, key, message) = one(&text);
    assert_eq!(key, "listeners[0].tls");
    assert!(message.contains("`key`"), "{message}");
}

// ---- the PEM files ------------------------------------------------------------------

#[test]
fn a_missing_file_is_an_error_at_the_value_that_names_it() {
    let f = Files::new("missing_file");
    let missing = f.path("nope/server-cert.pem");
    let text = with_listener_tls(&format!(
        "cert = \"{missing}\"\nkey = \"{}\"",
        f.cert("server-key.pem")
    ));
    let (line, col) = pos(&text, &format!("\"{missing}\""));
    let (l, c, key, message) = one(&text);
    assert_eq!((l, c, key.as_str()), (line, col, "listeners[0].tls.cert"));
    assert!(
        message.starts_with(&format!("cannot read {missing}: ")),
        "{message}"
    );
    // The OS reason follows.
    assert!(message.len() > format!("cannot read {missing}: ").len());
}

#[test]
fn a_file_that_is_not_pem_has_no_certificate() {
    let f = Files::new("not_pem");
    let text_file = f.write("notes.txt", "hello, this is not a certificate\n");
    let text = with_listener_tls(&format!(
        "cert = \"{text_file}\"\nkey = \"{}\"",
        f.cert("server-key.pem")
    ));
    let (line, col) = pos(&text, &format!("\"{text_file}\""));
    assert_eq!(
        one(&text),
        (
            line,
            col,
            "listeners[0].tls.cert".to_owned(),
            format!("{text_file}: no CERTIFICATE block found")
        )
    );

    // An empty file too.
    let empty = f.write("empty.pem", "");
    let text = with_listener_tls(&format!(
        "cert = \"{empty}\"\nkey = \"{}\"",
        f.cert("server-key.pem")
    ));
    assert_eq!(one(&text).3, format!("{empty}: no CERTIFICATE block found"));
}

#[test]
fn a_damaged_certificate_block_is_an_error() {
    let f = Files::new("damaged_pem");
    let damaged = f.write(
        "damaged.pem",
        "-----BEGIN CERTIFICATE-----\n!!! not base64 !!!\n-----END CERTIFICATE-----\n",
    );
    let text = with_listener_tls(&format!(
        "cert = \"{damaged}\"\nkey = \"{}\"",
        f.cert("server-key.pem")
    ));
    let (line, col) = pos(&text, &format!("\"{damaged}\""));
    let (l, c, key, message) = one(&text);
    assert_eq!((l, c, key.as_str()), (line, col, "listeners[0].tls.cert"));
    assert!(
        message.starts_with(&format!("{damaged}: not a valid PEM certificate file: ")),
        "{message}"
    );
}

#[test]
fn a_key_file_must_hold_a_private_key() {
    let f = Files::new("key_without_key");
    let cert = f.cert("server-cert.pem");
    // The certificate given as the key, then a file with no PEM block at all.
    let text_file = f.write("notes.txt", "no key here\n");
    for not_a_key in [cert.clone(), text_file] {
        let text = with_listener_tls(&format!("cert = \"{cert}\"\nkey = \"{not_a_key}\""));
        let (line, col) = pos(&text, &format!("key = \"{not_a_key}\""));
        let (l, c, key, message) = one(&text);
        assert_eq!(
            (l, c, key.as_str()),
            (line, col + "key = ".len(), "listeners[0].tls.key")
        );
        assert!(
            message.starts_with(&format!(
                "{not_a_key}: no usable private key (PKCS#8, PKCS#1 RSA or SEC1 EC PEM)"
            )),
            "{message}"
        );
    }
}

#[test]
fn a_key_given_as_a_certificate_is_an_error() {
    let f = Files::new("key_as_cert");
    let key = f.cert("server-key.pem");
    let text = with_listener_tls(&format!(
        "cert = \"{key}\"\nkey = \"{key}\"\nclient_ca = \"{key}\""
    ));
    let got = errors(&text);
    let want_message = format!("{key}: no CERTIFICATE block found");
    assert_eq!(
        got,
        [
            (
                line_starting(&text, "cert ="),
                "cert = ".len() + 1,
                "listeners[0].tls.cert".to_owned(),
                want_message.clone()
            ),
            (
                line_starting(&text, "client_ca ="),
                "client_ca = ".len() + 1,
                "listeners[0].tls.client_ca".to_owned(),
                want_message
            ),
        ]
    );
}

#[test]
fn every_bad_file_is_reported_together() {
    let f = Files::new("all_bad_files");
    let missing = f.path("missing.pem");
    let cert = f.cert("server-cert.pem");
    let text = with_listener_tls(&format!(
        "cert = \"{missing}\"\nkey = \"{cert}\"\nclient_ca = \"{missing}\"\nhandshake_timeout = \"0s\""
    )) + &format!(
        "\n[clusters.tls]\nca = \"{missing}\"\ncert = \"{cert}\"\nkey = \"{cert}\"\n"
    );
    let text = text.replace(
        "endpoints = [\"127.0.0.1:50051\"]",
        "endpoints = [\"127.0.0.1:50051\"]\nprotocol = \"h2\"",
    );
    let got: Vec<String> = errors(&text).into_iter().map(|e| e.2).collect();
    assert_eq!(
        got,
        [
            "listeners[0].tls.cert",
            "listeners[0].tls.key",
            "listeners[0].tls.client_ca",
            "listeners[0].tls.handshake_timeout",
            "clusters[0].tls.ca",
            "clusters[0].tls.key",
        ]
    );
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let f = Files::new("relative_paths");
    let text = with_listener_tls(
        "cert = \"certs/server-cert.pem\"\nkey = \"./certs/server-key.pem\"\n\
         client_ca = \"certs/../certs/ca-cert.pem\"",
    );
    let config = common::load_in(&f.dir, &text).unwrap_or_else(|e| panic!("{e}"));
    let dir = f.dir.path();
    let tls = listener_tls(&config);
    assert_eq!(tls.cert.path, dir.join("certs/server-cert.pem"));
    assert_eq!(tls.cert.pem, pki().server_cert.as_bytes());
    assert_eq!(tls.key.path, dir.join("./certs/server-key.pem"));
    assert_eq!(tls.key.pem, pki().server_key.as_bytes());
    let ca = tls.client_ca.as_ref().unwrap();
    assert_eq!(ca.path, dir.join("certs/../certs/ca-cert.pem"));
    assert_eq!(ca.pem, pki().ca_cert.as_bytes());

    // Loaded from a sub-folder, the same text looks for sub/certs/…: the folder is the
    // config's, not the current directory.
    let sub = f.dir.write("sub/rpcgate.toml", &text);
    let e = rpcgate_config::load(&sub).unwrap_err();
    let wanted = dir.join("sub/certs/server-cert.pem").display().to_string();
    assert!(
        e.errors()[0]
            .message()
            .starts_with(&format!("cannot read {wanted}: ")),
        "{e}"
    );
    assert_eq!(e.len(), 3, "{e}");
    assert_eq!(e.errors()[0].file(), sub.display().to_string());

    // Absolute paths are taken as they are.
    let abs = with_listener_tls(&f.server_pair());
    let config = common::load_in(&TempDir::new("relative_paths_other"), &abs).unwrap();
    assert_eq!(
        listener_tls(&config).cert.path,
        Path::new(&f.cert("server-cert.pem"))
    );
}

/// `parse` has no file, hence no folder: relative paths are relative to the current
/// directory.
#[test]
fn parse_resolves_relative_paths_against_the_current_directory() {
    let f = Files::new("relative_to_cwd");
    let cwd = std::env::current_dir().unwrap();
    let relative = relative_to(&cwd, &f.dir.path().join("certs"));
    assert!(relative.is_relative(), "{}", relative.display());
    let cert = relative.join("server-cert.pem");
    let key = relative.join("server-key.pem");
    let text = with_listener_tls(&format!(
        "cert = \"{}\"\nkey = \"{}\"",
        cert.display(),
        key.display()
    ));
    let config = ok(&text);
    let tls = listener_tls(&config);
    assert_eq!(tls.cert.path, cert);
    assert_eq!(tls.cert.pem, pki().server_cert.as_bytes());
    assert_eq!(tls.key.path, key);

    // The SPEC listing's `certs/…` are not next to the current directory.
    let text = with_listener_tls(&format!(
        "cert = \"certs/server-cert.pem\"\nkey = \"{}\"",
        key.display()
    ));
    let (_, _, _, message) = one(&text);
    assert!(
        message.starts_with("cannot read certs/server-cert.pem: "),
        "{message}"
    );
}

/// `to` written relative to `from` (both absolute), with `..` up to their common ancestor.
fn relative_to(from: &Path, to: &Path) -> PathBuf {
    let mut up = PathBuf::new();
    for ancestor in from.ancestors() {
        if let Ok(rest) = to.strip_prefix(ancestor) {
            return up.join(rest);
        }
        up.push("..");
    }
    panic!("{} and {} share no ancestor", from.display(), to.display());
}

// ---- [clusters.tls] and protocol = "h2" ---------------------------------------------

#[test]
fn protocol_h2_alone_verifies_against_the_system_roots() {
    let config = ok(&with_cluster("protocol = \"h2\"", None));
    let cluster = &config.clusters[0];
    assert_eq!(cluster.protocol, UpstreamProtocol::H2);
    assert_eq!(cluster.tls, Some(ClusterTls::default()));
    let tls = cluster.tls.as_ref().unwrap();
    assert_eq!(
        (
            &tls.ca,
            &tls.identity,
            &tls.server_name,
            tls.insecure_skip_verify
        ),
        (&None, &None, &None, false)
    );
    assert!(config.warnings.is_empty());

    // Plaintext protocols have no TLS.
    for protocol in ["", "protocol = \"h2c\"", "protocol = \"http1\""] {
        let config = ok(&with_cluster(protocol, None));
        assert_eq!(config.clusters[0].tls, None, "{protocol:?}");
    }
}

#[test]
fn cluster_tls_reads_its_files() {
    let f = Files::new("cluster_tls");
    let config = ok(&with_cluster(
        "protocol = \"h2\"",
        Some(&format!(
            "ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nserver_name = \"localhost\"",
            f.cert("ca-cert.pem"),
            f.cert("client-cert.pem"),
            f.cert("client-key.pem")
        )),
    ));
    assert_eq!(
        config.clusters[0].tls,
        Some(ClusterTls {
            ca: Some(pem(&f.cert("ca-cert.pem"), &pki().ca_cert)),
            identity: Some((
                pem(&f.cert("client-cert.pem"), &pki().client_cert),
                pem(&f.cert("client-key.pem"), &pki().client_key),
            )),
            server_name: Some("localhost".to_owned()),
            insecure_skip_verify: false,
        })
    );
    assert!(config.warnings.is_empty());

    // Each key is optional.
    let config = ok(&with_cluster(
        "protocol = \"h2\"",
        Some(&format!("ca = \"{}\"", f.cert("ca-cert.pem"))),
    ));
    let tls = config.clusters[0].tls.as_ref().unwrap();
    assert!(tls.ca.is_some() && tls.identity.is_none() && tls.server_name.is_none());
}

#[test]
fn cluster_tls_files_are_checked_too() {
    let f = Files::new("cluster_tls_files");
    let missing = f.path("missing-ca.pem");
    let cert = f.cert("client-cert.pem");
    let text = with_cluster(
        "protocol = \"h2\"",
        Some(&format!(
            "ca = \"{missing}\"\ncert = \"{cert}\"\nkey = \"{cert}\""
        )),
    );
    let got = errors(&text);
    assert_eq!(got.len(), 2, "{got:#?}");
    let (line, col) = pos(&text, &format!("\"{missing}\""));
    assert_eq!(
        (got[0].0, got[0].1, got[0].2.as_str()),
        (line, col, "clusters[0].tls.ca")
    );
    assert!(got[0].3.starts_with(&format!("cannot read {missing}: ")));
    let (line, col) = pos(&text, &format!("key = \"{cert}\""));
    assert_eq!(
        (got[1].0, got[1].1, got[1].2.as_str()),
        (line, col + "key = ".len(), "clusters[0].tls.key")
    );
    assert!(
        got[1]
            .3
            .starts_with(&format!("{cert}: no usable private key")),
        "{}",
        got[1].3
    );
}

#[test]
fn cluster_tls_needs_protocol_h2() {
    let f = Files::new("cluster_tls_h2c");
    let ca = format!("ca = \"{}\"", f.cert("ca-cert.pem"));
    for protocol in ["", "protocol = \"h2c\"", "protocol = \"http1\""] {
        let text = with_cluster(protocol, Some(&ca));
        assert_eq!(
            one(&text),
            (
                pos(&text, "[clusters.tls]").0,
                1,
                "clusters[0].tls".to_owned(),
                "[clusters.tls] needs protocol = \"h2\" (TLS towards the backends)".to_owned()
            ),
            "{protocol:?}"
        );
    }
}

#[test]
fn cluster_cert_and_key_go_together() {
    let f = Files::new("cluster_cert_key");
    let text = with_cluster(
        "protocol = \"h2\"",
        Some(&format!("cert = \"{}\"", f.cert("client-cert.pem"))),
    );
    assert_eq!(
        one(&text),
        (
            line_starting(&text, "cert ="),
            1,
            "clusters[0].tls.cert".to_owned(),
            "cert needs key (mutual TLS towards the backends)".to_owned()
        )
    );

    let text = with_cluster(
        "protocol = \"h2\"",
        Some(&format!("key = \"{}\"", f.cert("client-key.pem"))),
    );
    assert_eq!(
        one(&text),
        (
            line_starting(&text, "key ="),
            1,
            "clusters[0].tls.key".to_owned(),
            "key needs cert (mutual TLS towards the backends)".to_owned()
        )
    );
}

#[test]
fn server_name_is_a_dns_name_or_an_ip() {
    for name in ["localhost", "backend.internal", "127.0.0.1", "::1"] {
        let config = ok(&with_cluster(
            "protocol = \"h2\"",
            Some(&format!("server_name = \"{name}\"")),
        ));
        assert_eq!(
            config.clusters[0]
                .tls
                .as_ref()
                .unwrap()
                .server_name
                .as_deref(),
            Some(name)
        );
    }
    for name in ["", "not a name", "back end.internal", "a..b", "https://x"] {
        let text = with_cluster(
            "protocol = \"h2\"",
            Some(&format!("server_name = \"{name}\"")),
        );
        let (line, col) = pos(&text, &format!("server_name = \"{name}\""));
        assert_eq!(
            one(&text),
            (
                line,
                col + "server_name = ".len(),
                "clusters[0].tls.server_name".to_owned(),
                format!("invalid server name {name:?}")
            ),
            "{name:?}"
        );
    }
}

#[test]
fn insecure_skip_verify_is_accepted_with_a_warning_at_its_value() {
    let text = with_cluster("protocol = \"h2\"", Some("insecure_skip_verify = true"));
    let config = ok(&text);
    assert!(
        config.clusters[0]
            .tls
            .as_ref()
            .unwrap()
            .insecure_skip_verify
    );
    let (line, col) = pos(&text, "true");
    assert_eq!(
        config.warnings,
        [format!(
            "t.toml:{line}:{col}: clusters[0].tls.insecure_skip_verify: backend certificates \
             are NOT verified: anyone on the path can impersonate the backends; use it for \
             tests only"
        )]
    );

    // From a file, the warning names the file.
    let dir = TempDir::new("insecure_warning");
    let config = common::load_in(&dir, &text).unwrap();
    let file = dir.path().join("rpcgate.toml").display().to_string();
    assert!(
        config.warnings[0].starts_with(&format!(
            "{file}:{line}:{col}: clusters[0].tls.insecure_skip_verify: backend certificates are NOT verified"
        )),
        "{:?}",
        config.warnings
    );

    // false (the default) is silent.
    let config = ok(&with_cluster(
        "protocol = \"h2\"",
        Some("insecure_skip_verify = false"),
    ));
    assert!(
        !config.clusters[0]
            .tls
            .as_ref()
            .unwrap()
            .insecure_skip_verify
    );
    assert!(config.warnings.is_empty());

    // It is a bool.
    let text = with_cluster("protocol = \"h2\"", Some("insecure_skip_verify = \"yes\""));
    assert_eq!(one(&text).2, "clusters[0].tls.insecure_skip_verify");
}

#[test]
fn unknown_keys_in_the_tls_tables_are_errors() {
    let text = with_cluster("protocol = \"h2\"", Some("sni = \"localhost\""));
    let (line, col) = pos(&text, "sni");
    let (l, c, key, message) = one(&text);
    assert_eq!((l, c, key.as_str()), (line, col, "clusters[0].tls.sni"));
    assert!(message.starts_with("unknown field `sni`"), "{message}");
}
