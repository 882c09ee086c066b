//! TLS for the relay: PEM loading, self-signed ECDSA certificates, and the rustls server
//! configuration (ALPN h2 + http/1.1, session tickets and a session cache so that senders that
//! open a new connection for every webhook resume instead of doing a full handshake). The
//! acceptor serves its certificate through a resolver, so a certificate can be replaced while
//! the relay runs: a [`CertSlot`] for PEM files (SIGHUP), the ACME resolver for `--acme-domain`.

use std::io::BufReader;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConnection};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

/// Longest a TLS handshake may take before the connection is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Server-side TLS sessions remembered for resumption by session id.
const SESSION_CACHE_SIZE: usize = 4096;

/// A freshly generated self-signed certificate.
pub struct SelfSigned {
    /// DER certificate, to trust in-process.
    pub cert: CertificateDer<'static>,
    /// DER private key.
    pub key: PrivateKeyDer<'static>,
    /// PEM certificate, to write for `--ca`.
    pub cert_pem: String,
    /// PEM private key (PKCS#8).
    pub key_pem: String,
    /// SHA-256 fingerprint, colon-separated upper-case hex.
    pub fingerprint: String,
}

impl SelfSigned {
    /// Generates an ECDSA P-256 certificate for `hostnames` (DNS names or IP addresses).
    pub fn generate(hostnames: &[String]) -> Result<Self, String> {
        let certified =
            rcgen::generate_simple_self_signed(hostnames.to_vec()).map_err(|e| e.to_string())?;
        let cert = certified.cert.der().clone();
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
        Ok(SelfSigned {
            fingerprint: fingerprint(&cert),
            cert_pem: certified.cert.pem(),
            key_pem: certified.key_pair.serialize_pem(),
            cert,
            key,
        })
    }
}

/// The self-signed certificate's file in the data dir: what clients trust with `--ca`.
pub const SELF_SIGNED_CERT: &str = "relay-ca.pem";
/// Its private key's file in the data dir (0600).
const SELF_SIGNED_KEY: &str = "relay-key.pem";
/// The first line of [`SELF_SIGNED_CERT`]: the names the certificate was made for.
const NAMES_LINE: &str = "# illumitunnel-relay self-signed certificate for: ";

/// The self-signed certificate kept in the data dir.
pub struct KeptSelfSigned {
    /// Leaf only.
    pub chain: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// `{data_dir}/relay-ca.pem`.
    pub path: std::path::PathBuf,
    /// SHA-256 fingerprint, colon-separated upper-case hex.
    pub fingerprint: String,
    /// Made now (first start, or the names changed) rather than read back.
    pub fresh: bool,
}

impl KeptSelfSigned {
    /// As a TLS configuration to serve with.
    pub fn config(self) -> crate::TlsConfig {
        crate::TlsConfig::Certified {
            chain: self.chain,
            key: self.key,
        }
    }
}

/// The self-signed certificate for `names` kept in `dir`: read back when it was made for the
/// same names, else made now and written (`relay-ca.pem`, and `relay-key.pem` at 0600), so a
/// restart keeps the fingerprint clients trust.
pub fn self_signed_in(dir: &Path, names: &[String]) -> Result<KeptSelfSigned, String> {
    let path = dir.join(SELF_SIGNED_CERT);
    let key_path = dir.join(SELF_SIGNED_KEY);
    let wanted = format!("{NAMES_LINE}{}", names.join(", "));
    let same_names = std::fs::read_to_string(&path)
        .is_ok_and(|text| text.lines().next() == Some(wanted.as_str()));
    if same_names {
        if let (Ok(chain), Ok(key)) = (load_certs(&path), load_key(&key_path)) {
            let fingerprint = chain.first().map(fingerprint).unwrap_or_default();
            return Ok(KeptSelfSigned {
                chain,
                key,
                path,
                fingerprint,
                fresh: false,
            });
        }
    }
    let made = SelfSigned::generate(names)?;
    let failed = |what: &Path, e: std::io::Error| {
        format!(
            "could not keep the self-signed certificate in {}: {e}; check --data-dir and its permissions",
            what.display()
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    write_file(&key_path, made.key_pem.as_bytes(), 0o600).map_err(|e| failed(&key_path, e))?;
    let text = format!("{wanted}\n{}", made.cert_pem);
    write_file(&path, text.as_bytes(), 0o644).map_err(|e| failed(&path, e))?;
    Ok(KeptSelfSigned {
        chain: vec![made.cert],
        key: made.key,
        path,
        fingerprint: made.fingerprint,
        fresh: true,
    })
}

/// Writes `bytes` to `path` through a temporary file renamed into place, with `mode`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// SHA-256 of a DER certificate as colon-separated upper-case hex (`AB:CD:…`).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(cert.as_ref());
    let mut out = String::with_capacity(digest.len() * 3);
    for (i, byte) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{byte:02X}"));
    }
    out
}

/// Reads a PEM certificate chain; the error says what is wrong with the file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM file ({e})"))?;
    if certs.is_empty() {
        return Err("no certificate found in the file".into());
    }
    Ok(certs)
}

/// Reads the first PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|e| format!("not a PEM file ({e})"))?
        .ok_or_else(|| "no private key found in the file".into())
}

/// ALPN protocol of ACME TLS-ALPN-01 validation connections (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A certificate and key that can be swapped while connections keep the one they started with.
#[derive(Debug)]
pub struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl CertSlot {
    /// Checks that `key` belongs to the chain's leaf.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<Self>, String> {
        Ok(Arc::new(CertSlot(RwLock::new(certified_key(chain, key)?))))
    }

    /// Serves `chain` to new connections from now on; on error the old pair stays.
    pub fn replace(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<(), String> {
        let certified = certified_key(chain, key)?;
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = certified;
        Ok(())
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, String> {
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(|e| format!("the certificate and key do not fit together: {e}"))
}

/// Whether a finished handshake was an ACME validation (it carries no HTTP).
pub fn is_acme_validation(connection: &ServerConnection) -> bool {
    connection.alpn_protocol() == Some(ACME_TLS_ALPN)
}

/// Builds the acceptor for a fixed certificate: see [`acceptor_with`].
pub fn acceptor(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<TlsAcceptor, String> {
    acceptor_with(CertSlot::new(chain, key)?, false)
}

/// Builds the acceptor: TLS 1.2/1.3 with ring, ALPN `h2` then `http/1.1` (and `acme-tls/1`
/// when `acme`), resumption on, certificates from `resolver`.
pub fn acceptor_with(
    resolver: Arc<dyn ResolvesServerCert>,
    acme: bool,
) -> Result<TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if acme {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string())?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_has_fingerprint_and_builds_an_acceptor() {
        let cert = SelfSigned::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert_eq!(cert.fingerprint.len(), 32 * 3 - 1);
        assert!(cert.fingerprint.split(':').all(|b| b.len() == 2
            && b.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())));
        assert!(cert.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(acceptor(vec![cert.cert], cert.key).is_ok());
    }

    #[test]
    fn missing_and_empty_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert_eq!(
            load_certs(&empty).unwrap_err(),
            "no certificate found in the file"
        );
        assert_eq!(
            load_key(&empty).unwrap_err(),
            "no private key found in the file"
        );
        assert!(load_certs(&dir.path().join("missing.pem")).is_err());
    }

    #[test]
    fn a_slot_swaps_its_certificate_and_refuses_a_wrong_key() {
        let first = SelfSigned::generate(&["localhost".into()]).unwrap();
        let second = SelfSigned::generate(&["localhost".into()]).unwrap();
        let slot = CertSlot::new(vec![first.cert.clone()], first.key.clone_key()).unwrap();
        let served = |slot: &CertSlot| slot.0.read().unwrap().cert[0].clone();
        assert_eq!(served(&slot), first.cert);
        let mismatch = slot.replace(vec![second.cert.clone()], first.key.clone_key());
        assert!(mismatch.unwrap_err().contains("do not fit together"));
        assert_eq!(served(&slot), first.cert);
        slot.replace(vec![second.cert.clone()], second.key).unwrap();
        assert_eq!(served(&slot), second.cert);
    }
}
