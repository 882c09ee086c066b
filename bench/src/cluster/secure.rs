//! A nats-server as `docs/cluster.md` recommends it, for the cost of the TLS and login hop: the
//! shipped `deploy/nats-server.conf` (TLS, the `RELAYS` account, per-node permissions) with a
//! CA and certificate made by rcgen and passwords in the environment.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::proc::Proc;

/// The shipped configuration.
const SHIPPED: &str = include_str!("../../../deploy/nats-server.conf");
/// How long nats-server may take to say it is ready.
const READY: Duration = Duration::from_secs(20);

/// A running nats-server with TLS and logins.
pub struct SecureNats {
    /// The process.
    pub proc: Proc,
    /// `tls://127.0.0.1:PORT` without a login.
    pub url: String,
    /// The CA that signed its certificate, for `--cluster-ca`.
    pub ca: PathBuf,
    passwords: Vec<(&'static str, String)>,
}

impl SecureNats {
    /// Starts it in `dir` on `port`.
    pub fn start(nats_bin: &str, dir: &Path, port: u16) -> Result<SecureNats> {
        let (ca, cert, key) = certificates(dir)?;
        let passwords: Vec<(&'static str, String)> = [
            "RELAY_1_PASSWORD",
            "RELAY_2_PASSWORD",
            "RELAY_3_PASSWORD",
            "ILLUMITUNNEL_ADMIN_PASSWORD",
        ]
        .into_iter()
        .map(|name| (name, format!("bench-{}-{}", name.len(), std::process::id())))
        .collect();
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let text = SHIPPED
            .replace("/etc/nats/nats-cert.pem", &path(&cert))
            .replace("/etc/nats/nats-key.pem", &path(&key))
            .replace("/var/lib/nats", &path(&dir.join("nats-secure")));
        let file = dir.join("nats-secure.conf");
        std::fs::write(&file, text).context("could not write the NATS configuration")?;
        let mut cmd = Command::new(nats_bin);
        cmd.arg("-c")
            .arg(&file)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .envs(passwords.iter().map(|(k, v)| (k, v)));
        let mut proc = Proc::spawn_logged("nats-secure", cmd, dir)
            .context("could not start nats-server with the shipped configuration")?;
        proc.wait_for_line("Server is ready", true, READY)?;
        Ok(SecureNats {
            proc,
            url: format!("tls://127.0.0.1:{port}"),
            ca,
            passwords,
        })
    }

    /// `tls://relay-N:PASSWORD@127.0.0.1:PORT` for node `n` (1–3).
    pub fn node_url(&self, n: usize) -> String {
        let var = format!("RELAY_{n}_PASSWORD");
        let password = self
            .passwords
            .iter()
            .find(|(k, _)| *k == var)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        self.url
            .replacen("tls://", &format!("tls://relay-{n}:{password}@"), 1)
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`.
fn certificates(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "illumitunnel bench CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?
        .signed_by(&leaf_key, &ca, &ca_key)?;
    let write = |name: &str, pem: String| -> Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, pem)?;
        Ok(path)
    };
    Ok((
        write("nats-ca.pem", ca.pem())?,
        write("nats-cert.pem", leaf.pem())?,
        write("nats-key.pem", leaf_key.serialize_pem())?,
    ))
}
