//! A development PKI in one call: a CA, a server certificate and a client certificate.
//!
//! Every TLS tutorial starts with an afternoon of `openssl` commands; `rpcgate certs` (contract
//! §1) and the TLS tests need the same three certificates in one step. [`DevPki::generate`]
//! makes them in memory with rcgen (aws-lc-rs, no `openssl` binary), and
//! [`DevPki::write_to`] writes the six PEM files contract §1 names, private keys readable by
//! their owner only.
//!
//! ```
//! use rpcgate_demo::pki::DevPki;
//!
//! let pki = DevPki::generate(&["localhost".into(), "127.0.0.1".into()])?;
//! assert!(pki.server_cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! let (cert, key) = pki.issue_client("alice")?; // another client of the same CA
//! let tls = rpcgate_demo::TlsServer::new(pki.server_cert_pem, pki.server_key_pem)
//!     .client_ca(pki.ca_cert_pem); // for BackendOptions::tls
//! # let _ = (cert, key, tls);
//! # Ok::<(), rpcgate_demo::pki::PkiError>(())
//! ```
//!
//! The certificates are for development and tests: valid from an hour ago for ten years,
//! no revocation, the CA key stored next to the certificates.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SignatureAlgorithm,
};

/// The CA's common name, so that a user who inspects a certificate knows where it came from.
pub const CA_COMMON_NAME: &str = "rpcgate development CA";
/// The default client certificate's common name.
pub const CLIENT_COMMON_NAME: &str = "rpcgate-client";

/// The file names [`DevPki::write_to`] writes, in contract §1's order.
pub const FILE_NAMES: [&str; 6] = [
    "ca-cert.pem",
    "ca-key.pem",
    "server-cert.pem",
    "server-key.pem",
    "client-cert.pem",
    "client-key.pem",
];

/// How long the certificates are valid from now (about ten years: a development PKI should
/// not expire under a long-lived checkout).
const VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// How far back validity starts, so a peer whose clock is a little behind still accepts it.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// Why a PKI could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// No host was given for the server certificate.
    #[error("no host given for the server certificate")]
    NoHosts,
    /// A host is neither an IP address nor a valid DNS name.
    #[error("invalid host {host:?} for the server certificate: {source}")]
    InvalidHost {
        /// The host as given.
        host: String,
        /// What rcgen said.
        source: rcgen::Error,
    },
    /// A host is not an IP address nor a DNS name (a URL, a port, a space, …).
    #[error("invalid host {host:?} for the server certificate: {why}")]
    NotAHost {
        /// The host as given.
        host: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A client certificate's common name cannot be encoded.
    #[error("invalid common name {name:?}: {source}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What rcgen said.
        source: rcgen::Error,
    },
    /// Key generation or signing failed.
    #[error("cannot generate the certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file to be written exists and overwriting was not asked for.
    #[error("{} already exists (use --force to overwrite)", .0.display())]
    Exists(PathBuf),
    /// Creating the directory or writing a file failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// The algorithm of the server and client keys (the CA's key is always ECDSA P-256), so
/// that tests can cover every key type rustls serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256 with SHA-256: small and fast, the default.
    #[default]
    EcdsaP256,
    /// RSA 2048 with PKCS#1 v1.5 SHA-256 signatures.
    Rsa2048,
    /// Ed25519.
    Ed25519,
}

impl KeyKind {
    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    fn generate(self) -> Result<KeyPair, rcgen::Error> {
        KeyPair::generate_for(self.algorithm())
    }

    /// The key usages a leaf certificate of this kind needs (RSA key exchange in TLS 1.2
    /// wants keyEncipherment; rustls does not use it, other clients may check it).
    fn leaf_usages(self) -> Vec<KeyUsagePurpose> {
        match self {
            Self::Rsa2048 => vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ],
            Self::EcdsaP256 | Self::Ed25519 => vec![KeyUsagePurpose::DigitalSignature],
        }
    }
}

/// A CA with a server and a client certificate, all PEM.
#[derive(Clone)]
pub struct DevPki {
    /// The CA certificate: what servers and clients trust (`client_ca`, `[clusters.tls] ca`).
    pub ca_cert_pem: String,
    /// The CA's private key (PKCS#8).
    pub ca_key_pem: String,
    /// The server certificate, with every host as a subject alternative name.
    pub server_cert_pem: String,
    /// The server's private key (PKCS#8).
    pub server_key_pem: String,
    /// The client certificate (CN `rpcgate-client`, clientAuth).
    pub client_cert_pem: String,
    /// The client's private key (PKCS#8).
    pub client_key_pem: String,
    /// The CA's parameters, to issue more certificates under the same name.
    ca_params: CertificateParams,
    /// The key type of issued leaf certificates.
    kind: KeyKind,
}

impl std::fmt::Debug for DevPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs and test output.
        f.debug_struct("DevPki")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Where [`DevPki::write_to`] wrote each file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiPaths {
    /// `ca-cert.pem`.
    pub ca_cert: PathBuf,
    /// `ca-key.pem` (mode 0600).
    pub ca_key: PathBuf,
    /// `server-cert.pem`.
    pub server_cert: PathBuf,
    /// `server-key.pem` (mode 0600).
    pub server_key: PathBuf,
    /// `client-cert.pem`.
    pub client_cert: PathBuf,
    /// `client-key.pem` (mode 0600).
    pub client_key: PathBuf,
}

impl PkiPaths {
    fn in_dir(dir: &Path) -> Self {
        let [
            ca_cert,
            ca_key,
            server_cert,
            server_key,
            client_cert,
            client_key,
        ] = FILE_NAMES.map(|name| dir.join(name));
        Self {
            ca_cert,
            ca_key,
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    /// Every path, in contract §1's order.
    pub fn all(&self) -> [&Path; 6] {
        [
            &self.ca_cert,
            &self.ca_key,
            &self.server_cert,
            &self.server_key,
            &self.client_cert,
            &self.client_key,
        ]
    }
}

/// Validity from an hour ago for ten years, computed from the system clock.
fn set_validity(params: &mut CertificateParams) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - BACKDATE;
    params.not_after = now + VALIDITY;
}

/// The CA's parameters. Its common name carries a fingerprint of its key, so that two
/// development PKIs never share a subject: a certificate from another PKI is then
/// reported as `UnknownIssuer` (as `docs/tls.md` says), not as a bad signature from a CA
/// of the same name.
fn ca_params(ca_key: &KeyPair) -> CertificateParams {
    let mut params = CertificateParams::default();
    let fingerprint: String = ca_key
        .public_key_raw()
        .iter()
        .rev()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("{CA_COMMON_NAME} {fingerprint}"),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "rpcgate");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params);
    params
}

/// Parameters for a leaf certificate with this common name and extended key usage.
fn leaf_params(
    mut params: CertificateParams,
    common_name: &str,
    kind: KeyKind,
    usage: ExtendedKeyUsagePurpose,
) -> CertificateParams {
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = kind.leaf_usages();
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params);
    params
}

/// Whether `host` can name a server: an IP address, or a DNS name of labels made of
/// letters, digits and `-` (a leading `*.` for a wildcard).
fn plausible_host(host: &str) -> Result<(), &'static str> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if host.contains("://") {
        return Err("write the host alone, without a scheme such as https://");
    }
    if host.contains(':') {
        return Err("write the host alone, without a port");
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if !labels_ok || name.len() > 253 {
        return Err("expected an IP address or a DNS name (letters, digits, '-' and '.')");
    }
    Ok(())
}

impl DevPki {
    /// A fresh CA, a server certificate for `hosts` and a client certificate, ECDSA P-256.
    ///
    /// Each host becomes a subject alternative name (an IP SAN when it parses as an IP
    /// address, a DNS SAN otherwise); the first is also the server's common name. Calling
    /// it again gives an unrelated CA, which is how tests get a certificate that must be
    /// refused.
    ///
    /// # Errors
    ///
    /// [`PkiError::NoHosts`] for an empty list, [`PkiError::InvalidHost`] for a host that
    /// is not a valid DNS name, [`PkiError::Generate`] if key generation fails.
    pub fn generate(hosts: &[String]) -> Result<Self, PkiError> {
        Self::generate_with(hosts, KeyKind::EcdsaP256)
    }

    /// [`DevPki::generate`] with leaf keys (server, client) of `kind`.
    ///
    /// # Errors
    ///
    /// As [`DevPki::generate`].
    pub fn generate_with(hosts: &[String], kind: KeyKind) -> Result<Self, PkiError> {
        let hosts: Vec<String> = hosts
            .iter()
            .map(|host| host.trim().to_owned())
            .filter(|host| !host.is_empty())
            .collect();
        let Some(first) = hosts.first() else {
            return Err(PkiError::NoHosts);
        };
        let mut server_params = CertificateParams::default();
        for host in &hosts {
            if let Err(why) = plausible_host(host) {
                return Err(PkiError::NotAHost {
                    host: host.clone(),
                    why,
                });
            }
            let one = CertificateParams::new(vec![host.clone()]).map_err(|source| {
                PkiError::InvalidHost {
                    host: host.clone(),
                    source,
                }
            })?;
            server_params
                .subject_alt_names
                .extend(one.subject_alt_names);
        }
        let server_params = leaf_params(
            server_params,
            first,
            kind,
            ExtendedKeyUsagePurpose::ServerAuth,
        );

        let ca_key = KeyPair::generate()?;
        let ca_params = ca_params(&ca_key);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca_params.clone(), ca_key);

        let server_key = kind.generate()?;
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        let mut pki = Self {
            ca_cert_pem: ca_cert.pem(),
            ca_key_pem,
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: String::new(),
            client_key_pem: String::new(),
            ca_params,
            kind,
        };
        let (client_cert_pem, client_key_pem) = pki.issue_with(&issuer, CLIENT_COMMON_NAME)?;
        pki.client_cert_pem = client_cert_pem;
        pki.client_key_pem = client_key_pem;
        Ok(pki)
    }

    /// The kind of the leaf keys.
    pub fn key_kind(&self) -> KeyKind {
        self.kind
    }

    /// Another client certificate from the same CA, with `common_name` as its subject's CN
    /// (for tests that check which client a server saw). Returns `(cert_pem, key_pem)`.
    ///
    /// # Errors
    ///
    /// [`PkiError::InvalidName`] if the name cannot be encoded, [`PkiError::Generate`] if
    /// key generation or signing fails.
    pub fn issue_client(&self, common_name: &str) -> Result<(String, String), PkiError> {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem)?;
        let issuer = Issuer::new(self.ca_params.clone(), ca_key);
        self.issue_with(&issuer, common_name)
    }

    fn issue_with(
        &self,
        issuer: &Issuer<'_, KeyPair>,
        common_name: &str,
    ) -> Result<(String, String), PkiError> {
        let params = leaf_params(
            CertificateParams::default(),
            common_name,
            self.kind,
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let key = self.kind.generate()?;
        let cert = params
            .signed_by(&key, issuer)
            .map_err(|source| PkiError::InvalidName {
                name: common_name.to_owned(),
                source,
            })?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A client certificate and key from a *different*, freshly made CA with the same
    /// names: what a server verifying against this PKI's CA must refuse.
    ///
    /// # Errors
    ///
    /// As [`DevPki::generate`].
    pub fn foreign_client(&self) -> Result<(String, String), PkiError> {
        let other = Self::generate_with(&["localhost".to_owned()], self.kind)?;
        Ok((other.client_cert_pem, other.client_key_pem))
    }

    /// Writes the six contract §1 files into `dir` (created if missing): certificates with
    /// mode 0644, private keys with mode 0600 from the moment they exist.
    ///
    /// Unless `force`, nothing is written when any of the six files exists already, so a
    /// CA in use is never replaced by accident. With `force` existing files are replaced
    /// (removed and created again, so a key file gets mode 0600 even if the old one was
    /// readable by others).
    ///
    /// # Errors
    ///
    /// [`PkiError::Exists`] naming the first existing file (without `force`),
    /// [`PkiError::Io`] naming the directory or file that could not be written.
    pub fn write_to(&self, dir: &Path, force: bool) -> Result<PkiPaths, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let paths = PkiPaths::in_dir(dir);
        if !force {
            for path in paths.all() {
                // symlink_metadata: a dangling symlink counts as existing too.
                if path.symlink_metadata().is_ok() {
                    return Err(PkiError::Exists(path.to_owned()));
                }
            }
        }
        let contents = [
            (&self.ca_cert_pem, 0o644),
            (&self.ca_key_pem, 0o600),
            (&self.server_cert_pem, 0o644),
            (&self.server_key_pem, 0o600),
            (&self.client_cert_pem, 0o644),
            (&self.client_key_pem, 0o600),
        ];
        for (path, (text, mode)) in paths.all().into_iter().zip(contents) {
            write_new(path, text, mode, force).map_err(|source| PkiError::Io {
                path: path.to_owned(),
                source,
            })?;
        }
        Ok(paths)
    }
}

/// Creates `path` with `mode` (never widening an existing file's mode: with `replace` an
/// existing file is removed first) and writes `text`.
fn write_new(path: &Path, text: &str, mode: u32, replace: bool) -> io::Result<()> {
    if replace {
        match std::fs::remove_file(path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    // Explicitly, so the umask cannot make certificates unreadable to other users.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests;
