//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use rpcgate_config::{Config, ConfigErrors};

/// A valid minimal config: one listener, one route, one cluster.
pub const MINIMAL: &str = r#"
[[listeners]]
name = "edge"
address = "127.0.0.1:8080"

[[listeners.routes]]
cluster = "backends"

[[clusters]]
name = "backends"
endpoints = ["127.0.0.1:50051"]
"#;

/// Parses text that must be valid.
pub fn ok(text: &str) -> Config {
    match rpcgate_config::parse(text, "t.toml") {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// Parses text that must be invalid.
pub fn err(text: &str) -> ConfigErrors {
    match rpcgate_config::parse(text, "t.toml") {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e,
    }
}

/// The error lines of invalid text.
pub fn lines(text: &str) -> Vec<String> {
    err(text).errors().iter().map(ToString::to_string).collect()
}

/// `MINIMAL` with `extra` inserted after the line that contains `after`.
pub fn minimal_with(after: &str, extra: &str) -> String {
    let mut out = String::new();
    let mut done = false;
    for line in MINIMAL.lines() {
        out.push_str(line);
        out.push('\n');
        if !done && line.contains(after) {
            out.push_str(extra);
            if !extra.ends_with('\n') {
                out.push('\n');
            }
            done = true;
        }
    }
    assert!(done, "{after:?} not in MINIMAL");
    out
}

/// A fresh folder under the system temp dir, unique to this process and test, removed
/// when dropped (also when the test panics).
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// `<temp>/rpcgate-config-<pid>-<test>`, emptied first in case a killed run left it.
    pub fn new(test: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("rpcgate-config-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    /// The folder.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// Writes `contents` to `relative` (creating its folders) and returns the full path.
    pub fn write(&self, relative: &str, contents: impl AsRef<[u8]>) -> std::path::PathBuf {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Real PEM text: a CA, a server certificate for `localhost` and a client certificate,
/// both signed by the CA.
pub struct Pki {
    pub ca_cert: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

/// The test PKI, generated once per test binary.
pub fn pki() -> &'static Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    static PKI: std::sync::OnceLock<Pki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "rpcgate test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();

        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            vec!["client.test".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            ca_cert: ca.pem(),
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    })
}

/// Writes the PKI under `dir` with the file names of the SPEC listing:
/// `certs/{ca-cert,server-cert,server-key,client-cert,client-key}.pem`.
pub fn write_pki(dir: &TempDir) {
    let pki = pki();
    dir.write("certs/ca-cert.pem", &pki.ca_cert);
    dir.write("certs/server-cert.pem", &pki.server_cert);
    dir.write("certs/server-key.pem", &pki.server_key);
    dir.write("certs/client-cert.pem", &pki.client_cert);
    dir.write("certs/client-key.pem", &pki.client_key);
}

/// Writes `text` as `<dir>/rpcgate.toml` and loads it, so relative paths in it resolve
/// against `dir`.
pub fn load_in(dir: &TempDir, text: &str) -> Result<Config, ConfigErrors> {
    let path = dir.write("rpcgate.toml", text);
    rpcgate_config::load(&path)
}
