//! TLS for the demo/test backends: `rpcgate backend --tls-cert … --tls-key … [--client-ca …]`
//! and the tests of upstream TLS (`protocol = "h2"`, `[clusters.tls]`) need gRPC servers
//! that speak TLS, optionally requiring a client certificate, the way the tutorial's Go
//! servers do with `-tls`.
//!
//! rustls with the aws-lc-rs provider (the only one in the workspace), TLS 1.2 and 1.3,
//! ALPN `h2` and `http/1.1` (the backends serve both). Handshakes run concurrently and
//! each has a deadline, so a client that stalls its handshake neither holds a task forever
//! nor delays other clients; a failed handshake only drops that connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete its TLS handshake (a stalled handshake
/// must not hold a connection).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A backend's TLS settings: its certificate chain and key, and the CA that client
/// certificates must chain to when mutual TLS is wanted. All PEM text.
#[derive(Clone)]
pub struct TlsServer {
    /// The server certificate chain, leaf first.
    pub cert_pem: String,
    /// The server's private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_pem: String,
    /// When set, every client must present a certificate that chains to one of these CA
    /// certificates (mutual TLS); a handshake without one fails.
    pub client_ca_pem: Option<String>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs and test output.
        f.debug_struct("TlsServer")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a backend's TLS settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// Which file it is ("certificate", "key", "client CA").
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The PEM text holds no usable item of the expected kind, or is malformed.
    #[error("invalid {what}: {detail}")]
    Pem {
        /// Which input it is ("certificate", "key", "client CA").
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// rustls refused the certificate, key or CA (e.g. a key that does not match the
    /// certificate, or an unsupported key type).
    #[error("{what}: {source}")]
    Rustls {
        /// What was being set up.
        what: &'static str,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The client certificate verifier could not be built from the CA.
    #[error("client CA: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

impl From<TlsError> for io::Error {
    fn from(error: TlsError) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, error.to_string())
    }
}

fn certificates(what: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            what,
            detail: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            detail: "no PEM CERTIFICATE block found".to_owned(),
        });
    }
    Ok(certs)
}

fn read(what: &'static str, path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

impl TlsServer {
    /// TLS with this certificate chain and key, no client certificates asked for.
    pub fn new(cert_pem: impl Into<String>, key_pem: impl Into<String>) -> Self {
        Self {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
            client_ca_pem: None,
        }
    }

    /// Requires client certificates chained to `ca_pem` (mutual TLS).
    #[must_use]
    pub fn client_ca(mut self, ca_pem: impl Into<String>) -> Self {
        self.client_ca_pem = Some(ca_pem.into());
        self
    }

    /// Reads the PEM files (what `rpcgate backend --tls-cert/--tls-key/--client-ca` takes)
    /// and checks that they make a working configuration, so a bad file is reported
    /// before the backend starts listening.
    ///
    /// # Errors
    ///
    /// [`TlsError::Read`] naming an unreadable file; any error of
    /// [`TlsServer::server_config`].
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let mut server = Self::new(read("certificate", cert)?, read("key", key)?);
        if let Some(ca) = client_ca {
            server.client_ca_pem = Some(read("client CA", ca)?);
        }
        server.server_config()?;
        Ok(server)
    }

    /// The rustls server configuration: aws-lc-rs, TLS 1.2 and 1.3, ALPN `h2` then
    /// `http/1.1`, and a WebPKI client verifier when [`TlsServer::client_ca_pem`] is set.
    ///
    /// # Errors
    ///
    /// [`TlsError::Pem`] when a PEM input holds nothing usable, [`TlsError::Rustls`] or
    /// [`TlsError::Verifier`] when rustls refuses the certificate, key or CA.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain = certificates("certificate", &self.cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|error| {
            TlsError::Pem {
                what: "key",
                detail: match error {
                    rustls_pki_types::pem::Error::NoItemsFound => {
                        "no PEM PRIVATE KEY block found".to_owned()
                    }
                    other => other.to_string(),
                },
            }
        })?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|source| TlsError::Rustls {
                what: "protocol versions",
                source,
            })?;
        let builder = match &self.client_ca_pem {
            Some(ca_pem) => {
                let mut roots = RootCertStore::empty();
                for ca in certificates("client CA", ca_pem)? {
                    roots.add(ca).map_err(|source| TlsError::Rustls {
                        what: "client CA",
                        source,
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|source| match source {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    TlsError::Pem {
                        what: "key",
                        detail: "it does not belong to the certificate".to_owned(),
                    }
                }
                source => TlsError::Rustls {
                    what: "certificate and key",
                    source,
                },
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

type Handshake = Pin<Box<dyn Future<Output = Option<TlsStream<TcpStream>>> + Send>>;

/// What [`tls_incoming`] keeps between items.
struct Incoming {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: FuturesUnordered<Handshake>,
}

fn handshake(acceptor: TlsAcceptor, tcp: TcpStream, peer: SocketAddr) -> Handshake {
    Box::pin(async move {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "backend TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "backend TLS handshake timed out");
                None
            }
        }
    })
}

/// The TLS connections accepted on `listener`: each TCP connection is handshaken
/// concurrently with the others (within [`HANDSHAKE_TIMEOUT`]) and yielded once its
/// handshake succeeds; failed handshakes are logged at debug and dropped. Accept errors
/// are yielded as they come. Dropping the stream closes the listener and abandons the
/// handshakes in progress.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> + Send {
    let state = Incoming {
        listener,
        acceptor: TlsAcceptor::from(config),
        handshakes: FuturesUnordered::new(),
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            tokio::select! {
                accepted = state.listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        // Small gRPC messages should not wait for Nagle.
                        let _ = tcp.set_nodelay(true);
                        state.handshakes.push(handshake(state.acceptor.clone(), tcp, peer));
                    }
                    Err(error) => return Some((Err(error), state)),
                },
                Some(done) = state.handshakes.next(), if !state.handshakes.is_empty() => {
                    if let Some(tls) = done {
                        return Some((Ok(tls), state));
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests;
