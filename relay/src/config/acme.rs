//! `--acme-domain` and its flags read into [`AcmeSettings`]: domains a CA can validate, the
//! directory (Let's Encrypt unless `--acme-directory`/`--acme-staging`), the contact address and
//! extra roots for the directory's HTTPS. Certificates are obtained by the relay's `acme` module.

use std::fmt;
use std::net::IpAddr;

use rustls::pki_types::CertificateDer;

use super::args::Args;
use super::error::ConfigError;

/// `--acme-directory` default: Let's Encrypt production.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// `--acme-staging`: Let's Encrypt's staging directory (untrusted certificates, high limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// Validated `--acme-*` settings.
#[derive(Clone)]
pub struct AcmeSettings {
    /// DNS names on the certificate, lower case.
    pub domains: Vec<String>,
    /// Contact address for the CA's expiry and policy mail.
    pub email: Option<String>,
    /// ACME directory URL.
    pub directory: String,
    /// Extra roots trusted for the directory's own HTTPS (`--acme-ca-root`).
    pub ca_roots: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for AcmeSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeSettings")
            .field("domains", &self.domains)
            .field("directory", &self.directory)
            .field("ca_roots", &self.ca_roots.len())
            .finish_non_exhaustive()
    }
}

/// Reads the `--acme-*` flags: `None` without `--acme-domain`.
pub(crate) fn settings_from(args: &Args) -> Result<Option<AcmeSettings>, ConfigError> {
    if args.acme_domains.is_empty() {
        let stray = [
            (args.acme_email.is_some(), "--acme-email"),
            (args.acme_directory.is_some(), "--acme-directory"),
            (args.acme_staging, "--acme-staging"),
            (args.acme_ca_root.is_some(), "--acme-ca-root"),
        ];
        return match stray.iter().find(|(set, _)| *set) {
            Some((_, flag)) => Err(ConfigError::AcmeFlagWithoutDomain(flag)),
            None => Ok(None),
        };
    }
    if args.http || args.self_signed || args.tls_cert.is_some() || args.tls_key.is_some() {
        return Err(ConfigError::AcmeWithOtherCertificate);
    }
    if !args.hostnames.is_empty() {
        return Err(ConfigError::HostnameWithoutSelfSigned);
    }
    let domains = args
        .acme_domains
        .iter()
        .map(|d| parse_domain(d).ok_or_else(|| ConfigError::AcmeDomain(d.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let directory = match (&args.acme_directory, args.acme_staging) {
        (Some(_), true) => return Err(ConfigError::AcmeStagingWithDirectory),
        (Some(url), false) if is_https_url(url) => url.clone(),
        (Some(url), false) => return Err(ConfigError::AcmeDirectory(url.clone())),
        (None, true) => LETS_ENCRYPT_STAGING.to_string(),
        (None, false) => LETS_ENCRYPT_PRODUCTION.to_string(),
    };
    let email = match &args.acme_email {
        Some(raw) => {
            let email = raw.strip_prefix("mailto:").unwrap_or(raw);
            let valid = matches!(email.split_once('@'), Some((user, host))
                if !user.is_empty() && host.contains('.') && !email.contains(char::is_whitespace));
            if !valid {
                return Err(ConfigError::AcmeEmail(raw.clone()));
            }
            Some(email.to_string())
        }
        None => None,
    };
    let ca_roots = match &args.acme_ca_root {
        Some(path) => crate::tls::load_certs(path).map_err(|reason| ConfigError::AcmeCaRoot {
            path: path.clone(),
            reason,
        })?,
        None => Vec::new(),
    };
    Ok(Some(AcmeSettings {
        domains,
        email,
        directory,
        ca_roots,
    }))
}

/// A DNS name a CA can validate: letters, digits and hyphens in dot-separated labels; not an
/// IP address, no wildcard (TLS-ALPN-01 cannot prove one).
fn parse_domain(name: &str) -> Option<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let valid = name.len() <= 253
        && name.parse::<IpAddr>().is_err()
        && name.split('.').all(label_ok)
        && !name
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    valid.then_some(name)
}

fn is_https_url(url: &str) -> bool {
    url.strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/') && !rest.contains(' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert_eq!(
            parse_domain("Relay.Example.COM."),
            Some("relay.example.com".into())
        );
        assert_eq!(parse_domain("relay.test"), Some("relay.test".into()));
        for bad in [
            "",
            "*.example.com",
            "127.0.0.1",
            "::1",
            "https://relay.example.com",
            "relay.example.com:443",
            "-a.example.com",
            "a..example.com",
            "1.2.3.4444",
        ] {
            assert_eq!(parse_domain(bad), None, "{bad}");
        }
    }
}
