//! Which certificates the client trusts, for relays and https local servers alike: the OS
//! trust store plus the web PKI roots (with `--ca`/`--forward-ca` added), the embedded relay's
//! own certificate, or anything with `--insecure`/`--forward-insecure`; and how a failed
//! handshake is explained.
//!
//! The OS store comes from rustls-native-certs (the same files and keychains OpenSSL and
//! browsers use, `SSL_CERT_FILE`/`SSL_CERT_DIR` included), merged with webpki-roots into one
//! root store: a corporate or mkcert-installed root works, a machine with an empty store still
//! reaches public relays, and `--ca` simply adds roots to the same store. (rustls-platform-
//! verifier would hand verification to the OS, which cannot take our extra roots on every
//! platform and behaves differently per OS; one store behaves the same everywhere.)
//!
//! A certificate given with `--ca`/`--forward-ca` that is byte for byte the one the server
//! presents is accepted as it is, even when it is marked `CA:TRUE` (what `openssl req -x509`
//! makes, which the web PKI rules refuse as a server certificate): the user named exactly that
//! certificate. The handshake signature is still checked against it.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The relay certificates this client accepts.
pub enum Trust {
    /// The OS trust store and the web PKI roots, plus these certificates (from `--ca`).
    System(Vec<CertificateDer<'static>>),
    /// Exactly these certificates (the embedded relay's self-signed one).
    Only(Vec<CertificateDer<'static>>),
    /// Any certificate (`--insecure`).
    Insecure,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration for websocket connections to the relay.
pub fn client_config(trust: Trust) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("could not set up TLS: {e}"))?;
    let mut config = match trust {
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
        Trust::System(extra) => {
            let mut roots = system_roots().clone();
            add_all(&mut roots, extra.clone())?;
            with_roots(builder, roots, extra, provider)?
        }
        Trust::Only(certs) => {
            let mut roots = RootCertStore::empty();
            add_all(&mut roots, certs.clone())?;
            with_roots(builder, roots, certs, provider)?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A configuration that trusts `roots` by the web PKI rules, and `exact` certificates when the
/// server presents one of them as they are.
fn with_roots(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>,
    roots: RootCertStore,
    exact: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
) -> Result<ClientConfig, String> {
    if exact.is_empty() {
        return Ok(builder.with_root_certificates(roots).with_no_client_auth());
    }
    let chain = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("could not set up TLS: {e}"))?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ExactOrChain {
            exact,
            chain,
            provider,
        }))
        .with_no_client_auth())
}

/// The web PKI roots plus whatever the OS trust store holds, read once per process (reading
/// the store takes milliseconds, and every client built here needs it).
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let native = rustls_native_certs::load_native_certs();
        for err in &native.errors {
            tracing::debug!(%err, "skipped part of the OS trust store");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "read the OS trust store");
        roots
    })
}

/// What is wrong with a rejected certificate, as a phrase after the host: "presented …".
pub fn certificate_problem(cause: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    match cause {
        E::UnknownIssuer => "presented a certificate from an issuer this client does not trust".into(),
        E::Expired | E::ExpiredContext { .. } => "presented an expired certificate".into(),
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            "presented a certificate that is not valid for its name".into()
        }
        E::Other(other) if other.to_string().contains("CaUsedAsEndEntity") => {
            "presented a CA certificate as its server certificate (CaUsedAsEndEntity); serve a certificate that CA issued, e.g. from `mkcert localhost`".into()
        }
        other => format!("presented a certificate this client does not trust ({other:?})"),
    }
}

fn add_all(roots: &mut RootCertStore, certs: Vec<CertificateDer<'static>>) -> Result<(), String> {
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("could not use a certificate as a trust root: {e}"))?;
    }
    Ok(())
}

/// Reads every certificate in a `--ca` PEM file.
pub fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    load_pem_certs("--ca", path)
}

/// Reads every certificate in the PEM file given as `flag` (`--ca`, `--forward-ca`).
pub fn load_pem_certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| {
        format!(
            "could not read {flag} {}: {e}; pass a PEM certificate file",
            path.display()
        )
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "could not parse {flag} {}: {e}; pass a PEM certificate file",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {} holds no PEM certificate; pass a CA certificate file",
            path.display()
        ));
    }
    Ok(certs)
}

/// For a failed TLS handshake: the cause as a phrase, and whether retrying can help.
pub fn explain_handshake_error(err: &std::io::Error) -> (String, bool) {
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(cause)) => {
            tracing::debug!(?cause, "relay certificate rejected");
            let what = match cause {
                rustls::CertificateError::Expired
                | rustls::CertificateError::ExpiredContext { .. } => "certificate expired",
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => {
                    "certificate not valid for this host"
                }
                _ => "certificate not trusted",
            };
            (format!("{what}; pass --ca FILE or --insecure"), false)
        }
        Some(other) => (
            format!("tls handshake failed: {other}; check that --relay speaks https"),
            true,
        ),
        None => (format!("tls handshake failed: {err}"), true),
    }
}

/// Accepts a server certificate that is byte for byte one the user gave (`--ca`,
/// `--forward-ca`), else verifies the chain by the web PKI rules; the handshake signature is
/// checked either way.
#[derive(Debug)]
struct ExactOrChain {
    exact: Vec<CertificateDer<'static>>,
    chain: Arc<rustls::client::WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ExactOrChain {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.exact.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            return Ok(ServerCertVerified::assertion());
        }
        self.chain
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
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
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What a relay presents: its certificate chain and key.
    struct RelayCert {
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    }

    /// A test CA, as PEM (what `--ca` reads), and relay certificates it signs.
    struct TestCa {
        pem: String,
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    impl TestCa {
        fn new(name: &str) -> TestCa {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.self_signed(&key).unwrap();
            TestCa {
                pem: cert.pem(),
                cert,
                key,
            }
        }

        /// A relay certificate for `127.0.0.1` and `localhost`, signed by this CA.
        fn sign_relay(&self) -> RelayCert {
            let key = KeyPair::generate().unwrap();
            let params =
                CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                    .unwrap();
            let leaf = params.signed_by(&key, &self.cert, &self.key).unwrap();
            RelayCert {
                chain: vec![leaf.der().clone()],
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            }
        }

        /// The CA as `--ca FILE` loads it.
        fn load_as_ca_flag(&self, dir: &Path) -> Vec<CertificateDer<'static>> {
            let path = dir.join("ca.pem");
            std::fs::write(&path, &self.pem).unwrap();
            load_ca(&path).unwrap()
        }
    }

    /// A real TLS handshake over an in-memory pipe between a relay presenting `relay` and a
    /// client with `config` dialling `host`, then one byte from the relay to show the session
    /// carries data. Returns the client's error when the handshake fails.
    async fn handshake(
        config: Arc<ClientConfig>,
        relay: &RelayCert,
        host: &str,
    ) -> std::io::Result<()> {
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(relay.chain.clone(), relay.key.clone_key())
            .unwrap();
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(config);
        let (client_io, relay_io) = tokio::io::duplex(4096);
        let relay_side = async move {
            let mut tls = acceptor.accept(relay_io).await?;
            tls.write_all(b"!").await?;
            tls.flush().await?;
            // Held open until the client has read the byte.
            Ok::<_, std::io::Error>(tls)
        };
        let name = ServerName::try_from(host.to_string()).unwrap();
        let client_side = async move {
            let mut tls = connector.connect(name, client_io).await?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await?;
            assert_eq!(&byte, b"!");
            Ok::<_, std::io::Error>(())
        };
        let both = async { tokio::join!(relay_side, client_side) };
        let (_relay, client) = tokio::time::timeout(std::time::Duration::from_secs(10), both)
            .await
            .expect("the handshake finished within 10 s");
        client
    }

    #[tokio::test]
    async fn with_ca_a_relay_signed_by_that_ca_is_trusted_and_one_signed_by_another_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ours = TestCa::new("our relay CA");
        let theirs = TestCa::new("someone else's CA");
        let config = client_config(Trust::System(ours.load_as_ca_flag(dir.path()))).unwrap();

        handshake(config.clone(), &ours.sign_relay(), "127.0.0.1")
            .await
            .expect("a relay certificate that chains to --ca is trusted");
        let err = handshake(config.clone(), &theirs.sign_relay(), "127.0.0.1")
            .await
            .expect_err("a relay certificate from another CA is refused");
        assert_eq!(
            explain_handshake_error(&err),
            (
                "certificate not trusted; pass --ca FILE or --insecure".to_string(),
                false
            ),
            "{err}"
        );
        // Chaining to the CA is not enough: the certificate must name the host dialled.
        let err = handshake(config, &ours.sign_relay(), "relay.example.com")
            .await
            .expect_err("a certificate for another host is refused");
        assert_eq!(
            explain_handshake_error(&err),
            (
                "certificate not valid for this host; pass --ca FILE or --insecure".to_string(),
                false
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn without_ca_a_private_ca_is_not_trusted() {
        let ours = TestCa::new("our relay CA");
        let config = client_config(Trust::System(Vec::new())).unwrap();
        let err = handshake(config, &ours.sign_relay(), "127.0.0.1")
            .await
            .expect_err("the web PKI roots do not include a private CA");
        assert!(!explain_handshake_error(&err).1, "{err}");
    }

    #[tokio::test]
    async fn insecure_accepts_any_relay_certificate() {
        let config = client_config(Trust::Insecure).unwrap();
        for ca in [TestCa::new("one CA"), TestCa::new("another CA")] {
            for host in ["127.0.0.1", "relay.example.com"] {
                handshake(config.clone(), &ca.sign_relay(), host)
                    .await
                    .unwrap_or_else(|e| panic!("--insecure refused {host}: {e}"));
            }
        }
    }

    #[tokio::test]
    async fn the_embedded_relay_is_trusted_by_its_own_certificate_only() {
        let names = ["127.0.0.1".to_string(), "localhost".to_string()];
        let embedded = illumitunnel_relay::tls::SelfSigned::generate(&names).unwrap();
        let relay = RelayCert {
            chain: vec![embedded.cert.clone()],
            key: embedded.key.clone_key(),
        };
        let config = client_config(Trust::Only(vec![embedded.cert.clone()])).unwrap();
        handshake(config.clone(), &relay, "127.0.0.1")
            .await
            .expect("the embedded relay's own certificate is trusted");
        let other = TestCa::new("a CA the web trusts nowhere").sign_relay();
        handshake(config, &other, "127.0.0.1")
            .await
            .expect_err("any other certificate is refused");
    }

    #[tokio::test]
    async fn a_ca_marked_certificate_given_exactly_is_accepted_as_the_server_certificate() {
        // What `openssl req -x509` makes: self-signed, CA:TRUE, served as is.
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let server = RelayCert {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        };
        let config = client_config(Trust::System(vec![cert.der().clone()])).unwrap();
        handshake(config.clone(), &server, "127.0.0.1")
            .await
            .expect("the exact certificate given is trusted even with CA:TRUE");
        // Another CA:TRUE certificate is still refused.
        let other = TestCa::new("someone else's CA").sign_relay();
        handshake(config, &other, "127.0.0.1")
            .await
            .expect_err("a certificate not given is refused");
        // Without it, the web PKI rules refuse it.
        let plain = client_config(Trust::System(Vec::new())).unwrap();
        handshake(plain, &server, "127.0.0.1")
            .await
            .expect_err("not trusted without --ca");
    }

    #[test]
    fn ca_file_errors_are_sentences() {
        let dir = tempfile::tempdir().unwrap();
        let missing = load_ca(&dir.path().join("nope.pem")).unwrap_err();
        assert!(missing.starts_with("could not read --ca "), "{missing}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem").unwrap();
        assert!(load_ca(&empty)
            .unwrap_err()
            .contains("holds no PEM certificate"));
    }

    #[test]
    fn untrusted_certificate_is_fatal_with_a_remedy() {
        let err = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let (msg, retry) = explain_handshake_error(&err);
        assert_eq!(msg, "certificate not trusted; pass --ca FILE or --insecure");
        assert!(!retry);
    }
}
