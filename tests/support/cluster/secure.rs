//! A nats-server from the shipped `deploy/nats-server.conf`, as `docs/cluster.md` tells an
//! operator to run it: TLS with a CA and certificates made here by rcgen, passwords in the
//! environment, relay-2 as an NKey user, plus the users the attack tests need. Mutual TLS is
//! the configuration's commented lines switched on.

use std::path::{Path, PathBuf};

use rand::Rng;
use tempfile::TempDir;

use super::{Nats, Node};
use crate::support::temp_dir;

/// Client keepalive in the cluster-auth tests, so a dead connection is found quickly.
pub const KEEPALIVE_MS: &str = "300";
/// The shipped configuration, as an operator would start from it.
const SHIPPED: &str = include_str!("../../../deploy/nats-server.conf");

/// PEM files: a CA, the NATS server's certificate (127.0.0.1, localhost) and a client
/// certificate, both signed by the CA.
pub struct Pki {
    /// The CA, for `--cluster-ca` and the server's `ca_file`.
    pub ca_pem: PathBuf,
    /// The server's certificate.
    pub cert_pem: PathBuf,
    /// Its key.
    pub key_pem: PathBuf,
    /// A client certificate, for `--cluster-cert`.
    pub client_cert_pem: PathBuf,
    /// Its key, for `--cluster-key`.
    pub client_key_pem: PathBuf,
}

impl Pki {
    /// Generates the CA and both certificates as PEM files in `dir`.
    pub fn generate(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "illumitunnel NATS test CA");
        let ca = ca_params.self_signed(&ca_key).expect("self-sign the CA");
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().expect("a key");
            let cert = CertificateParams::new(names)
                .expect("leaf params")
                .signed_by(&key, &ca, &ca_key)
                .expect("sign a leaf");
            (cert, key)
        };
        let (server, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
        let (client, client_key) = leaf(vec!["relay-1".into()]);
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        Pki {
            ca_pem: write("nats-ca.pem", ca.pem()),
            cert_pem: write("nats-cert.pem", server.pem()),
            key_pem: write("nats-key.pem", server_key.serialize_pem()),
            client_cert_pem: write("client-cert.pem", client.pem()),
            client_key_pem: write("client-key.pem", client_key.serialize_pem()),
        }
    }
}

/// 32 random base64url characters after `prefix`.
pub fn secret(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::thread_rng();
    let tail: String = (0..32)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{tail}")
}

/// A NATS server from the shipped configuration with TLS and logins, plus the test's own
/// users: `stranger` (relay account, no relay permissions), `outsider` (another account) and
/// `auditor` (relay account, reads everything and may publish deliveries: what anyone on the
/// NATS network could do before logins, kept as the control that the attacks are real).
pub struct SecureNats {
    /// The server.
    pub nats: Nats,
    /// Its CA, certificate, and a client certificate for mutual TLS.
    pub pki: Pki,
    _dir: TempDir,
    /// Environment variable → password, for every user with one.
    pub passwords: Vec<(&'static str, String)>,
    /// relay-2's NKey seed file.
    pub nkey_file: PathBuf,
    /// The node token file, shared by both nodes.
    pub tokens_file: PathBuf,
    /// The client token in it.
    pub token: String,
}

impl SecureNats {
    /// The shipped configuration as it is.
    pub fn start() -> SecureNats {
        SecureNats::start_with(false)
    }

    /// The shipped configuration; with `mutual_tls`, its commented `ca_file` and `verify: true`
    /// switched on, so every connection needs a client certificate from the test CA.
    pub fn start_with(mutual_tls: bool) -> SecureNats {
        let dir = temp_dir();
        let pki = Pki::generate(dir.path());
        let key_pair = nkeys::KeyPair::new_user();
        let seed = key_pair.seed().expect("an NKey seed");
        let nkey_file = dir.path().join("relay-2.nk");
        std::fs::write(&nkey_file, format!("{seed}\n")).expect("write the seed");
        let token = secret("itr_");
        let tokens_file = dir.path().join("tokens");
        std::fs::write(&tokens_file, format!("{token}\n")).expect("write the tokens file");
        let passwords: Vec<(&'static str, String)> = [
            "RELAY_1_PASSWORD",
            "RELAY_3_PASSWORD",
            "ILLUMITUNNEL_ADMIN_PASSWORD",
            "STRANGER_PASSWORD",
            "OUTSIDER_PASSWORD",
            "AUDITOR_PASSWORD",
        ]
        .into_iter()
        .map(|name| (name, secret("pw-")))
        .collect();
        let text = configure(&pki, &key_pair.public_key(), mutual_tls);
        let env: Vec<(&str, &str)> = passwords.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let nats = Nats::start_config(&text, &env);
        SecureNats {
            nats,
            pki,
            _dir: dir,
            passwords,
            nkey_file,
            tokens_file,
            token,
        }
    }

    /// The password in environment variable `name`.
    pub fn password(&self, name: &str) -> &str {
        let (_, value) = self
            .passwords
            .iter()
            .find(|(k, _)| *k == name)
            .expect("a password");
        value
    }

    /// `tls://USER:PASSWORD@127.0.0.1:PORT`.
    pub fn url_as(&self, user: &str, password_var: &str) -> String {
        format!(
            "tls://{user}:{}@127.0.0.1:{}",
            self.password(password_var),
            self.nats.port()
        )
    }

    /// `tls://127.0.0.1:PORT`, without a login.
    pub fn tls_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.nats.port())
    }

    /// `--cluster-ca`.
    pub fn ca(&self) -> &str {
        self.pki.ca_pem.to_str().expect("a UTF-8 path")
    }

    /// relay-1 logs in with user and password, relay-2 with its NKey; both over TLS.
    pub fn two_nodes(&self) -> Vec<Node> {
        let tokens = self.tokens_file.to_str().expect("a UTF-8 path");
        let common = ["--cluster-ca", self.ca(), "--tokens-file", tokens];
        let one = Node::start_with(
            "relay-1",
            &self.url_as("relay-1", "RELAY_1_PASSWORD"),
            &[&common[..], &["--keepalive-ms", KEEPALIVE_MS]].concat(),
        );
        let nkey = self.nkey_file.to_str().expect("a UTF-8 path");
        let two = Node::start_with(
            "relay-2",
            &self.tls_url(),
            &[
                &common[..],
                &["--cluster-nkey", nkey, "--keepalive-ms", KEEPALIVE_MS],
            ]
            .concat(),
        );
        vec![one, two]
    }

    /// An async-nats client logged in as `user`, trusting the test CA.
    pub async fn client_as(&self, user: &str, password_var: &str) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .user_and_password(user.into(), self.password(password_var).into())
            .add_root_certificates(self.pki.ca_pem.clone())
            .require_tls(true)
            .connect(self.tls_url())
            .await
            .unwrap_or_else(|e| panic!("{user} could not log in: {e}"))
    }
}

/// The shipped configuration with the test's certificate, relay-2 as an NKey user and the
/// test's extra users.
fn configure(pki: &Pki, relay_2_public_key: &str, mutual_tls: bool) -> String {
    let replace = |text: String, from: &str, to: &str| {
        assert!(
            text.contains(from),
            "the shipped configuration lost {from:?}"
        );
        text.replace(from, to)
    };
    let path = |p: &Path| p.to_str().expect("a UTF-8 path").to_owned();
    let mut text = SHIPPED.to_owned();
    text = replace(text, "/etc/nats/nats-cert.pem", &path(&pki.cert_pem));
    text = replace(text, "/etc/nats/nats-key.pem", &path(&pki.key_pem));
    if mutual_tls {
        text = replace(
            text,
            "  # ca_file: \"/etc/nats/clients-ca.pem\"\n  # verify: true",
            &format!("  ca_file: \"{}\"\n  verify: true", path(&pki.ca_pem)),
        );
    }
    text = replace(text, "/var/lib/nats", "{STORE}");
    text = replace(
        text,
        "{ user: relay-2, password: $RELAY_2_PASSWORD,",
        &format!("{{ nkey: {relay_2_public_key},"),
    );
    text = replace(
        text,
        "    users: [\n",
        "    users: [\n      { user: stranger, password: $STRANGER_PASSWORD, permissions: { publish: [\"app.>\"], subscribe: [\"app.>\"] } }\n      { user: auditor, password: $AUDITOR_PASSWORD, permissions: { publish: [\"illumitunnel.node.*.deliver.*\"], subscribe: [\">\"] } }\n",
    );
    replace(
        text,
        "accounts {\n",
        "accounts {\n  OTHER { users: [ { user: outsider, password: $OUTSIDER_PASSWORD } ] }\n",
    )
}

/// Asserts that no node hit a permission NATS refuses and no secret reached its output.
pub fn assert_clean(nodes: &[Node], secure: &SecureNats) {
    for node in nodes {
        let stderr = node.relay().guard.stderr();
        assert!(
            !stderr.contains("NATS refused an operation"),
            "{} was refused a NATS permission:\n{stderr}",
            node.id
        );
        for (_, password) in &secure.passwords {
            assert!(
                !stderr.contains(password.as_str()),
                "a password in {}'s output",
                node.id
            );
        }
        let seed = std::fs::read_to_string(&secure.nkey_file).expect("the seed");
        assert!(
            !stderr.contains(seed.trim()),
            "the NKey seed in {}'s output",
            node.id
        );
    }
    let server = secure.nats.stderr();
    let refused: Vec<&str> = server
        .lines()
        .filter(|l| l.contains("Violation"))
        .filter(|l| {
            l.contains("RELAYS/user:relay-")
                || l.contains("RELAYS/nkey:")
                || l.contains("illumitunnel-admin")
        })
        .collect();
    assert!(
        refused.is_empty(),
        "the shipped permissions refused a relay:\n{refused:#?}"
    );
}
