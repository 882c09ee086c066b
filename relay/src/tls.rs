//! TLS for the relay: PEM loading and self-signed certificates. (Skeleton.)

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A freshly generated self-signed certificate.
pub struct SelfSigned {
    /// DER certificate, to trust in-process.
    pub cert: CertificateDer<'static>,
    /// DER private key.
    pub key: PrivateKeyDer<'static>,
    /// PEM certificate, to write for `--ca`.
    pub cert_pem: String,
    /// SHA-256 fingerprint, colon-separated upper-case hex.
    pub fingerprint: String,
}

impl SelfSigned {
    /// Generates an ECDSA P-256 certificate for `hostnames` (DNS names or IP addresses).
    pub fn generate(hostnames: &[String]) -> Result<Self, String> {
        let _ = hostnames;
        Err("not implemented yet".to_string())
    }
}
