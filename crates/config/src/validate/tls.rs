//! `[listeners.tls]` and `[clusters.tls]`: TLS settings and the PEM files they name,
//! which are read and checked at load time so that `check` and a reload find a bad file.

use std::ops::Range;
use std::path::PathBuf;

use super::Validator;
use crate::defaults;
use crate::file::{ClusterTlsFile, ListenerTlsFile, Spanned};
use crate::locate::KeyPath;
use crate::runtime::{ClientAuth, ClusterTls, ListenerTls, PemFile};

/// Why a certificate (DER) cannot be used today: expired, or not valid yet.
fn not_valid_now(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > validity.not_after {
        Some(format!(
            "the certificate expired on {} (renew it)",
            validity.not_after
        ))
    } else if now < validity.not_before {
        Some(format!(
            "the certificate is not valid before {} (check the clock, or the certificate)",
            validity.not_before
        ))
    } else {
        None
    }
}

/// What a PEM file must contain.
#[derive(Debug, Clone, Copy)]
enum PemKind {
    /// One or more certificates (a CA bundle).
    Certificates,
    /// A certificate chain, leaf first: `rpcgate check` also checks the leaf's dates.
    Chain,
    /// One private key.
    PrivateKey,
}

impl Validator<'_> {
    /// Reads and checks a PEM file named at `value` (relative to the config's folder).
    fn pem_file(
        &mut self,
        value: &Spanned<String>,
        key: &KeyPath,
        kind: PemKind,
    ) -> Option<PemFile> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let named = PathBuf::from(value.get_ref());
        let path = match &self.base_dir {
            Some(dir) if named.is_relative() => dir.join(&named),
            _ => named,
        };
        // Only regular files: reading a FIFO named here would hang `check` and reloads.
        let regular = std::fs::metadata(&path).map(|m| m.is_file());
        if let Ok(false) = regular {
            let message = format!("{} is not a regular file", path.display());
            self.err(&value.span(), key, message);
            return None;
        }
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(e) => {
                self.err(
                    &value.span(),
                    key,
                    format!("cannot read {}: {e}", path.display()),
                );
                return None;
            }
        };
        let problem = match kind {
            PemKind::Certificates | PemKind::Chain => {
                let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
                match certs {
                    Ok(certs) if certs.is_empty() => Some("no CERTIFICATE block found".to_owned()),
                    Ok(certs)
                        if matches!(kind, PemKind::Chain) && self.depth == super::Depth::Check =>
                    {
                        certs.first().and_then(|leaf| not_valid_now(leaf.as_ref()))
                    }
                    Ok(_) => None,
                    Err(e) => Some(format!("not a valid PEM certificate file: {e}")),
                }
            }
            PemKind::PrivateKey => match PrivateKeyDer::from_pem_slice(&pem) {
                Ok(_) => None,
                Err(e) => Some(format!(
                    "no usable private key (PKCS#8, PKCS#1 RSA or SEC1 EC PEM): {e}"
                )),
            },
        };
        if let Some(problem) = problem {
            self.err(&value.span(), key, format!("{}: {problem}", path.display()));
            return None;
        }
        Some(PemFile { path, pem })
    }

    /// `[listeners.tls]` at `k`: the listener's certificate and key, and client
    /// certificates when `client_ca` is given. `None` when a file cannot be used.
    pub(super) fn listener_tls(&mut self, t: &ListenerTlsFile, k: &KeyPath) -> Option<ListenerTls> {
        let mut client_auth = if t.client_ca.is_some() {
            defaults::CLIENT_AUTH
        } else {
            ClientAuth::None
        };
        if let Some(auth) = &t.client_auth {
            if t.client_ca.is_none() {
                self.key_err(
                    &auth.span(),
                    &k.key("client_auth"),
                    "client_auth needs client_ca (the CA that client certificates must chain to)",
                );
            } else {
                match auth.get_ref().as_str() {
                    "required" => client_auth = ClientAuth::Required,
                    "optional" => client_auth = ClientAuth::Optional,
                    other => self.err(
                        &auth.span(),
                        &k.key("client_auth"),
                        format!("unknown value {other:?}, expected required or optional"),
                    ),
                }
            }
        }
        let handshake_timeout = self.positive_duration(
            t.handshake_timeout.as_ref(),
            &k.key("handshake_timeout"),
            defaults::HANDSHAKE_TIMEOUT,
        );
        let cert = self.pem_file(&t.cert, &k.key("cert"), PemKind::Chain);
        let private_key = self.pem_file(&t.key, &k.key("key"), PemKind::PrivateKey);
        let client_ca = match &t.client_ca {
            Some(ca) => Some(self.pem_file(ca, &k.key("client_ca"), PemKind::Certificates)?),
            None => None,
        };
        Some(ListenerTls {
            cert: cert?,
            key: private_key?,
            client_ca,
            client_auth,
            handshake_timeout,
        })
    }

    /// `[clusters.tls]` at `k` (`span` is the table's): the CA for the backends'
    /// certificates, a client identity for mutual TLS, the server name, and
    /// `insecure_skip_verify`, which is accepted with a warning.
    pub(super) fn cluster_tls(
        &mut self,
        t: &ClusterTlsFile,
        k: &KeyPath,
        span: &Range<usize>,
    ) -> ClusterTls {
        let ca =
            t.ca.as_ref()
                .and_then(|ca| self.pem_file(ca, &k.key("ca"), PemKind::Certificates));
        let identity = match (&t.cert, &t.key) {
            (Some(cert), Some(key)) => {
                let cert = self.pem_file(cert, &k.key("cert"), PemKind::Chain);
                let key = self.pem_file(key, &k.key("key"), PemKind::PrivateKey);
                cert.zip(key)
            }
            (Some(_), None) => {
                self.key_err(
                    span,
                    &k.key("cert"),
                    "cert needs key (mutual TLS towards the backends)",
                );
                None
            }
            (None, Some(_)) => {
                self.key_err(
                    span,
                    &k.key("key"),
                    "key needs cert (mutual TLS towards the backends)",
                );
                None
            }
            (None, None) => None,
        };
        let server_name = t.server_name.as_ref().and_then(|name| {
            let value = name.get_ref();
            if rustls_pki_types::ServerName::try_from(value.as_str()).is_err() {
                self.err(
                    &name.span(),
                    &k.key("server_name"),
                    format!("invalid server name {value:?}"),
                );
                return None;
            }
            Some(value.clone())
        });
        let insecure_skip_verify = t.insecure_skip_verify.as_ref().is_some_and(|v| {
            if *v.get_ref() {
                self.warn(
                    &v.span(),
                    &k.key("insecure_skip_verify"),
                    "backend certificates are NOT verified: anyone on the path can impersonate the backends; use it for tests only",
                );
            }
            *v.get_ref()
        });
        ClusterTls {
            ca,
            identity,
            server_name,
            insecure_skip_verify,
        }
    }
}
