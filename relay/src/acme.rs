//! Certificates from an ACME CA (Let's Encrypt by default) for `--acme-domain`. rustls-acme
//! does the protocol: it answers TLS-ALPN-01 validations through the relay's own TLS resolver,
//! so only the relay's port needs to be reachable, and renews each certificate once two thirds
//! of its lifetime have passed (30 days before expiry for Let's Encrypt's 90-day certificates)
//! while the relay keeps serving. The account key and certificates are cached under
//! `{data_dir}/acme/` (directory 0700, files 0600), so a restart serves the cached certificate
//! at once and asks the CA only when it is due.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use rustls_acme::{AccountCache, AcmeConfig, CertCache, EventOk, ResolvesServerCertAcme};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::AcmeSettings;
#[cfg(test)]
use crate::config::{LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING};

/// The cache directory inside the data dir.
pub const CACHE_DIR: &str = "acme";

/// Where the certificate for `domains` from `directory` is cached: `{dir}/cert-{h}-{domains}.pem`
/// with `h` the first 8 bytes of the directory URL's SHA-256 in hex, domains joined by `+`.
pub fn cert_file(dir: &Path, domains: &[String], directory: &str) -> PathBuf {
    dir.join(format!(
        "cert-{}-{}.pem",
        short_hash(directory),
        domains.join("+")
    ))
}

/// Where the account key for `directory` is cached.
pub fn account_file(dir: &Path, directory: &str) -> PathBuf {
    dir.join(format!("account-{}.der", short_hash(directory)))
}

fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Account and certificates in one private directory.
struct FileCache {
    dir: PathBuf,
}

impl FileCache {
    async fn read(path: PathBuf) -> std::io::Result<Option<Vec<u8>>> {
        let read = tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        });
        read.await.map_err(std::io::Error::other)?
    }

    async fn write(path: PathBuf, bytes: Vec<u8>) -> std::io::Result<()> {
        let write = tokio::task::spawn_blocking(move || write_private(&path, &bytes));
        write.await.map_err(std::io::Error::other)?
    }
}

/// Writes `bytes` to a 0600 file beside `path`, then renames it over `path`, so a crash never
/// leaves half a key.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

#[async_trait::async_trait]
impl CertCache for FileCache {
    type EC = std::io::Error;

    async fn load_cert(
        &self,
        domains: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, Self::EC> {
        FileCache::read(cert_file(&self.dir, domains, directory_url)).await
    }

    async fn store_cert(
        &self,
        domains: &[String],
        directory_url: &str,
        cert: &[u8],
    ) -> Result<(), Self::EC> {
        let path = cert_file(&self.dir, domains, directory_url);
        FileCache::write(path, cert.to_vec()).await
    }
}

#[async_trait::async_trait]
impl AccountCache for FileCache {
    type EA = std::io::Error;

    async fn load_account(
        &self,
        _contact: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, Self::EA> {
        FileCache::read(account_file(&self.dir, directory_url)).await
    }

    async fn store_account(
        &self,
        _contact: &[String],
        directory_url: &str,
        account: &[u8],
    ) -> Result<(), Self::EA> {
        let path = account_file(&self.dir, directory_url);
        FileCache::write(path, account.to_vec()).await
    }
}

/// Creates `dir` with mode 0700 (and tightens an existing one).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Starts obtaining and renewing the certificate in the background until `shutdown`; the
/// returned resolver serves it (nothing until the first certificate arrives or is read from the
/// cache) and answers the CA's TLS-ALPN-01 validations.
pub fn spawn(
    settings: &AcmeSettings,
    data_dir: &Path,
    shutdown: CancellationToken,
) -> Result<Arc<ResolvesServerCertAcme>, String> {
    let dir = data_dir.join(CACHE_DIR);
    create_private_dir(&dir)
        .map_err(|e| format!("could not create the ACME cache {}: {e}", dir.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for root in &settings.ca_roots {
        roots
            .add(root.clone())
            .map_err(|e| format!("--acme-ca-root is not a usable CA certificate: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut state = AcmeConfig::new_with_client_config(settings.domains.clone(), Arc::new(client))
        .contact(settings.email.iter().map(|e| format!("mailto:{e}")))
        .directory(&settings.directory)
        .cache(FileCache { dir })
        .state();
    let resolver = state.resolver();
    let (domains, directory) = (settings.domains.join(","), settings.directory.clone());
    info!(%domains, %directory, "obtaining the certificate over ACME (TLS-ALPN-01)");
    tokio::spawn(async move {
        loop {
            // Both branches are cancel-safe: a token wait and `StreamExt::next`.
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = state.next() => event,
            };
            match event {
                Some(Ok(EventOk::DeployedNewCert)) => {
                    info!(%domains, "serving a new certificate from the ACME CA")
                }
                Some(Ok(EventOk::DeployedCachedCert)) => {
                    info!(%domains, "serving the cached ACME certificate")
                }
                Some(Ok(event)) => info!(?event, "ACME cache updated"),
                // rustls-acme retries with backoff; the old certificate (if any) keeps serving.
                Some(Err(err)) => {
                    warn!(%err, %domains, "ACME certificate not obtained yet; retrying")
                }
                None => return,
            }
        }
    });
    Ok(resolver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_files_are_private_and_keyed_by_directory() {
        let dir = tempfile::tempdir().unwrap();
        let acme = dir.path().join(CACHE_DIR);
        create_private_dir(&acme).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&acme), 0o700);
        let domains = vec!["relay.example.com".to_string()];
        let prod = cert_file(&acme, &domains, LETS_ENCRYPT_PRODUCTION);
        assert_ne!(prod, cert_file(&acme, &domains, LETS_ENCRYPT_STAGING));
        assert!(prod.to_string_lossy().ends_with("-relay.example.com.pem"));
        write_private(&prod, b"secret").unwrap();
        write_private(&prod, b"secret 2").unwrap();
        assert_eq!(mode(&prod), 0o600);
        assert_eq!(std::fs::read(&prod).unwrap(), b"secret 2");
    }
}
