//! The development PKI: chains verify with rustls' WebPKI verifiers for the right names
//! and purposes only, every key kind works, and the files get the right modes and are
//! never overwritten by accident.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::{CA_COMMON_NAME, CLIENT_COMMON_NAME, DevPki, FILE_NAMES, KeyKind, PkiError};

fn hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn roots(pki: &DevPki) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(der(&pki.ca_cert_pem)).unwrap();
    Arc::new(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_verifier(pki: &DevPki) -> Arc<WebPkiServerVerifier> {
    WebPkiServerVerifier::builder_with_provider(roots(pki), provider())
        .build()
        .unwrap()
}

fn client_verifier(pki: &DevPki) -> Arc<dyn ClientCertVerifier> {
    WebPkiClientVerifier::builder_with_provider(roots(pki), provider())
        .build()
        .unwrap()
}

fn verify_server(pki: &DevPki, cert_pem: &str, name: &str) -> Result<(), rustls::Error> {
    server_verifier(pki)
        .verify_server_cert(
            &der(cert_pem),
            &[],
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

fn verify_client(pki: &DevPki, cert_pem: &str) -> Result<(), rustls::Error> {
    client_verifier(pki)
        .verify_client_cert(&der(cert_pem), &[], UnixTime::now())
        .map(|_| ())
}

fn common_name(cert_pem: &str) -> String {
    let der = der(cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    cert.subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn server_certificate_verifies_for_every_host_and_nothing_else() {
    let pki = DevPki::generate(&hosts()).unwrap();
    verify_server(&pki, &pki.server_cert_pem, "localhost").unwrap();
    verify_server(&pki, &pki.server_cert_pem, "127.0.0.1").unwrap();
    let wrong = verify_server(&pki, &pki.server_cert_pem, "example.com").unwrap_err();
    assert!(
        matches!(
            wrong,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                | rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. }
                )
        ),
        "{wrong:?}"
    );
    // An IP SAN, not a DNS name "127.0.0.2" or similar.
    verify_server(&pki, &pki.server_cert_pem, "127.0.0.2").unwrap_err();
}

#[test]
fn client_certificate_verifies_as_a_client_only() {
    let pki = DevPki::generate(&hosts()).unwrap();
    verify_client(&pki, &pki.client_cert_pem).unwrap();
    // clientAuth only: not usable as a server certificate.
    verify_server(&pki, &pki.client_cert_pem, "localhost").unwrap_err();
    // serverAuth only: not usable as a client certificate.
    verify_client(&pki, &pki.server_cert_pem).unwrap_err();
}

#[test]
fn another_ca_is_not_trusted() {
    let pki = DevPki::generate(&hosts()).unwrap();
    let other = DevPki::generate(&hosts()).unwrap();
    verify_server(&pki, &other.server_cert_pem, "localhost").unwrap_err();
    verify_client(&pki, &other.client_cert_pem).unwrap_err();
    let (foreign, _) = pki.foreign_client().unwrap();
    verify_client(&pki, &foreign).unwrap_err();
}

/// Two PKIs never share a CA subject, so a certificate from the other one is an unknown
/// issuer (not a bad signature from a CA of the same name); hosts are checked.
#[test]
fn each_ca_has_its_own_name_and_hosts_are_checked() {
    let pki = DevPki::generate(&hosts()).unwrap();
    let other = DevPki::generate(&hosts()).unwrap();
    assert_ne!(
        common_name(&pki.ca_cert_pem),
        common_name(&other.ca_cert_pem)
    );
    let error = verify_server(&pki, &other.server_cert_pem, "localhost").unwrap_err();
    assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");
    for bad in [
        "https://example.com",
        "example.com:443",
        "two words",
        "a..b",
    ] {
        let Err(error) = DevPki::generate(&[bad.to_owned()]) else {
            panic!("{bad} was accepted");
        };
        assert!(matches!(error, PkiError::NotAHost { .. }), "{bad}: {error}");
    }
    DevPki::generate(&["*.example.com".into(), "::1".into()]).unwrap();
}

#[test]
fn names_and_extensions() {
    let pki = DevPki::generate(&["api.internal".into(), "10.0.0.7".into()]).unwrap();
    assert!(common_name(&pki.ca_cert_pem).starts_with(CA_COMMON_NAME));
    assert_eq!(common_name(&pki.server_cert_pem), "api.internal");
    assert_eq!(common_name(&pki.client_cert_pem), CLIENT_COMMON_NAME);

    let ca = der(&pki.ca_cert_pem);
    let (_, ca) = X509Certificate::from_der(&ca).unwrap();
    assert!(ca.is_ca());
    assert!(ca.key_usage().unwrap().unwrap().value.key_cert_sign());

    let server = der(&pki.server_cert_pem);
    let (_, server) = X509Certificate::from_der(&server).unwrap();
    assert!(!server.is_ca());
    let sans = &server
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(sans.len(), 2, "{sans:?}");
    assert!(
        matches!(sans[0], GeneralName::DNSName("api.internal")),
        "{sans:?}"
    );
    assert!(
        matches!(sans[1], GeneralName::IPAddress(&[10, 0, 0, 7])),
        "{sans:?}"
    );
    let eku = server.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    assert!(server.validity().is_valid());
}

#[test]
fn issued_clients_carry_their_name_and_verify() {
    let pki = DevPki::generate(&hosts()).unwrap();
    let (cert, key) = pki.issue_client("alice").unwrap();
    assert_eq!(common_name(&cert), "alice");
    assert!(PrivateKeyDer::from_pem_slice(key.as_bytes()).is_ok());
    verify_client(&pki, &cert).unwrap();
}

#[test]
fn every_key_kind_makes_verifiable_chains() {
    for kind in [KeyKind::EcdsaP256, KeyKind::Rsa2048, KeyKind::Ed25519] {
        let pki = DevPki::generate_with(&hosts(), kind).unwrap();
        assert_eq!(pki.key_kind(), kind);
        verify_server(&pki, &pki.server_cert_pem, "localhost").unwrap();
        verify_client(&pki, &pki.client_cert_pem).unwrap();
        let (cert, _) = pki.issue_client("bob").unwrap();
        verify_client(&pki, &cert).unwrap();
        // rustls accepts the key with the certificate (a real handshake per kind is in
        // the TLS backend tests).
        crate::TlsServer::new(pki.server_cert_pem.clone(), pki.server_key_pem.clone())
            .server_config()
            .unwrap();
    }
}

#[test]
fn bad_hosts_are_refused() {
    assert!(matches!(DevPki::generate(&[]), Err(PkiError::NoHosts)));
    assert!(matches!(
        DevPki::generate(&[" ".into()]),
        Err(PkiError::NoHosts)
    ));
    let error = DevPki::generate(&["bad host\u{e9}".into()]).unwrap_err();
    assert!(
        matches!(&error, PkiError::NotAHost { host, .. } if host == "bad host\u{e9}"),
        "{error:?}"
    );
}

/// A fresh directory under cargo's scratch space (not created).
fn scratch(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rpcgate-pki-{}-{}-{name}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn write_to_sets_modes_and_refuses_to_overwrite() {
    let dir = scratch("write").join("nested");
    let pki = DevPki::generate(&hosts()).unwrap();
    let paths = pki.write_to(&dir, false).unwrap();
    for (path, name) in paths.all().into_iter().zip(FILE_NAMES) {
        assert_eq!(path, dir.join(name));
        let expected = if name.ends_with("-key.pem") {
            0o600
        } else {
            0o644
        };
        assert_eq!(mode(path), expected, "{name}");
    }
    assert_eq!(
        std::fs::read_to_string(&paths.server_key).unwrap(),
        pki.server_key_pem
    );
    assert_eq!(
        std::fs::read_to_string(&paths.ca_cert).unwrap(),
        pki.ca_cert_pem
    );

    // A second PKI is refused, naming the file, and nothing changes.
    let other = DevPki::generate(&hosts()).unwrap();
    let error = other.write_to(&dir, false).unwrap_err();
    assert!(
        matches!(&error, PkiError::Exists(path) if *path == paths.ca_cert),
        "{error:?}"
    );
    assert!(error.to_string().contains("ca-cert.pem"), "{error}");
    assert_eq!(
        std::fs::read_to_string(&paths.ca_cert).unwrap(),
        pki.ca_cert_pem
    );

    // Only one file present is enough to refuse, before anything is written.
    std::fs::remove_file(&paths.ca_cert).unwrap();
    let error = other.write_to(&dir, false).unwrap_err();
    assert!(
        matches!(&error, PkiError::Exists(path) if *path == paths.ca_key),
        "{error:?}"
    );
    assert!(paths.ca_cert.symlink_metadata().is_err());

    // force replaces them all, and a key file made readable gets 0600 again.
    std::fs::set_permissions(&paths.client_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    other.write_to(&dir, true).unwrap();
    assert_eq!(
        std::fs::read_to_string(&paths.ca_cert).unwrap(),
        other.ca_cert_pem
    );
    assert_eq!(
        std::fs::read_to_string(&paths.client_key).unwrap(),
        other.client_key_pem
    );
    assert_eq!(mode(&paths.client_key), 0o600);
    assert_eq!(mode(&paths.client_cert), 0o644);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}
