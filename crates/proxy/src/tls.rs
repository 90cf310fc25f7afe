//! TLS with rustls, on both sides of the proxy.
//!
//! One crypto provider for the whole project: aws-lc-rs (rustls' default; the faster of
//! the two for handshakes). TLS 1.2 and 1.3 only.
//!
//! - Listeners ([`server_config`]): ALPN `h2` and `http/1.1`; with `client_ca`, client
//!   certificates are verified (`client_auth` required or optional). The verified client
//!   certificate becomes [`ClientIdentity`]: its subject for the access log and an
//!   `x-forwarded-client-cert` value in Envoy's format for the backend.
//! - Clusters ([`client_config`]): ALPN `h2`, verification against `ca` or the system's
//!   roots, an optional client certificate (mutual TLS towards the backends), and — only
//!   under the name `insecure_skip_verify` — no verification at all.
//!
//! [`check`] builds every TLS configuration of a [`Config`] without starting anything,
//! so `rpcgate check` finds a key that does not match its certificate.

use std::sync::Arc;

use http::HeaderValue;
use rpcgate_config::{ClientAuth, ClusterTls, Config, ListenerTls, PemFile};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// A TLS configuration that cannot be built, with the file or setting at fault.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct TlsError {
    what: String,
    reason: String,
}

impl TlsError {
    fn new(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// A certificate and key that do not go together, said plainly (rustls says "keys may
    /// not be consistent: KeyMismatch").
    fn pair(cert: &PemFile, key: &PemFile, error: rustls::Error) -> Self {
        let reason = if error.to_string().contains("KeyMismatch") {
            format!(
                "the private key {} does not belong to the certificate {}",
                key.path.display(),
                cert.path.display()
            )
        } else {
            error.to_string()
        };
        Self::new(
            format!("{} with {}", cert.path.display(), key.path.display()),
            reason,
        )
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn certificates(file: &PemFile) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(&file.pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(file.path.display().to_string(), e))
}

fn private_key(file: &PemFile) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&file.pem)
        .map_err(|e| TlsError::new(file.path.display().to_string(), e))
}

fn root_store(file: &PemFile) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates(file)?);
    if added == 0 {
        return Err(TlsError::new(
            file.path.display().to_string(),
            "no usable CA certificate",
        ));
    }
    Ok(roots)
}

/// The rustls server configuration of a listener.
pub fn server_config(tls: &ListenerTls) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new("TLS versions", e))?;
    let verifier = match (&tls.client_ca, tls.client_auth) {
        (Some(ca), auth) if auth != ClientAuth::None => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(ca)?), provider);
            let verifier = if auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            verifier
                .build()
                .map_err(|e| TlsError::new(ca.path.display().to_string(), e))?
        }
        _ => WebPkiClientVerifier::no_client_auth(),
    };
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates(&tls.cert)?, private_key(&tls.key)?)
        .map_err(|e| TlsError::pair(&tls.cert, &tls.key, e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The rustls client configuration of a cluster.
pub fn client_config(tls: &ClusterTls) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let roots = match &tls.ca {
        Some(ca) => root_store(ca)?,
        None => {
            let mut roots = RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            roots
        }
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new("TLS versions", e))?
        .with_root_certificates(roots);
    let mut config = match &tls.identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| TlsError::pair(cert, key, e))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    if tls.insecure_skip_verify {
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(NoCertificateVerification(provider)));
    }
    Ok(Arc::new(config))
}

/// Builds every TLS configuration of `config`; one line per problem.
pub fn check(config: &Config) -> Vec<TlsProblem> {
    let mut problems = Vec::new();
    for (index, listener) in config.listeners.iter().enumerate() {
        if let Some(tls) = &listener.tls
            && let Err(e) = server_config(tls)
        {
            problems.push(TlsProblem {
                section: "listeners",
                index,
                message: format!("listener {}: TLS: {e}", listener.name),
            });
        }
    }
    for (index, cluster) in config.clusters.iter().enumerate() {
        if let Some(tls) = &cluster.tls
            && let Err(e) = client_config(tls)
        {
            problems.push(TlsProblem {
                section: "clusters",
                index,
                message: format!("cluster {}: TLS: {e}", cluster.name),
            });
        }
    }
    problems
}

/// A TLS table that cannot be built, and where it is in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsProblem {
    /// `"listeners"` or `"clusters"`.
    pub section: &'static str,
    /// Which listener or cluster, in file order.
    pub index: usize,
    /// What is wrong.
    pub message: String,
}

/// The name to send as SNI and to verify: `server_name`, else the endpoint's host.
pub fn server_name(
    configured: Option<&str>,
    address: &str,
) -> Result<ServerName<'static>, TlsError> {
    let host = match configured {
        Some(name) => name,
        None => address
            .rsplit_once(':')
            .map_or(address, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']'),
    };
    ServerName::try_from(host.to_string())
        .map_err(|e| TlsError::new(format!("server name {host}"), e))
}

/// A verified client certificate, as the backends and the access log see it.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The certificate's subject, RFC 4514 style (`CN=rpcgate-client`).
    pub subject: String,
    /// `x-forwarded-client-cert` in Envoy's format: `Hash=<sha256 hex>;Subject="<subject>"`.
    pub xfcc: HeaderValue,
}

/// The identity of a verified client certificate (the leaf of the chain), if any.
pub fn client_identity(certificates: Option<&[CertificateDer<'static>]>) -> Option<ClientIdentity> {
    let leaf = certificates?.first()?;
    let subject = match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, cert)) => cert.subject().to_string(),
        Err(_) => String::new(),
    };
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.as_ref());
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let escaped = subject.replace('\\', "\\\\").replace('"', "\\\"");
    let xfcc = HeaderValue::from_str(&format!("Hash={hash};Subject=\"{escaped}\""))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    Some(ClientIdentity { subject, xfcc })
}

/// `insecure_skip_verify`: accepts any certificate, still checks handshake signatures.
#[derive(Debug)]
struct NoCertificateVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_defaults_to_the_endpoint_host() {
        assert_eq!(
            server_name(None, "backend.internal:50051").unwrap(),
            ServerName::try_from("backend.internal").unwrap()
        );
        assert_eq!(
            server_name(None, "127.0.0.1:50051").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(
            server_name(None, "[::1]:50051").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        assert_eq!(
            server_name(Some("localhost"), "127.0.0.1:50051").unwrap(),
            ServerName::try_from("localhost").unwrap()
        );
    }
}
