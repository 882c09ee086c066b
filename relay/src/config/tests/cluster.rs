//! `--cluster` and its NATS login and TLS flags.

use super::*;

use crate::config::{Login, NatsTls, Secret};

#[test]
fn cluster_flags_are_validated() {
    let base = ["--http", "--listen", "127.0.0.1:0", "--allow-anonymous"];
    let ok = Config::try_from(args(
        &[
            &base[..],
            &[
                "--cluster",
                "nats://t@a:4222,nats://t@b:4222",
                "--node-id",
                "relay-1",
            ],
        ]
        .concat(),
    ))
    .unwrap();
    assert_eq!(
        ok.cluster,
        Some(ClusterConfig {
            nats: NatsLink {
                servers: vec!["nats://a:4222".into(), "nats://b:4222".into()],
                login: Login::Token(Secret::new("t")),
                tls: NatsTls::default(),
            },
            node_id: "relay-1".into(),
            replicas: 1,
        })
    );
    let err = |extra: &[&str]| {
        Config::try_from(args(&[&base[..], extra].concat()))
            .unwrap_err()
            .to_string()
    };
    assert!(err(&["--cluster", "nats://a:4222"]).contains("--cluster needs --node-id NAME"));
    assert!(err(&["--cluster", "nats://a:4222", "--node-id", "Relay 1"])
        .contains("--node-id \"Relay 1\" is not a node id"));
    // Public and without tokens is fine on a cluster: its tokens live in NATS.
    let public = Args::try_parse_from([
        "illumitunnel-relay",
        "--http",
        "--cluster",
        "nats://relay:pw@a:4222",
        "--node-id",
        "n1",
    ])
    .unwrap();
    assert!(Config::try_from(public).is_ok());
    assert!(Args::try_parse_from(["illumitunnel-relay", "--http", "--node-id", "n1"]).is_err());
    assert!(Args::try_parse_from([
        "illumitunnel-relay",
        "--http",
        "--cluster",
        "nats://a:4222",
        "--node-id",
        "n1",
        "--cluster-replicas",
        "9"
    ])
    .is_err());
}

// NATS with credentials and TLS (`--cluster-creds`, `--cluster-nkey`, `--cluster-ca`, …).

/// A user NKey seed of the right shape (the relay checks its form; NATS checks the key).
const SEED: &str = "SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM";

fn nats(extra: &[&str]) -> Result<Config, ConfigError> {
    let base = ["--http", "--listen", "127.0.0.1:0", "--node-id", "n1"];
    Config::try_from(args(&[&base[..], extra].concat()))
}

fn pem_pair() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let cert = crate::tls::SelfSigned::generate(&["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let pem = |label: &str, der: &[u8]| {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    };
    std::fs::write(&cert_path, pem("CERTIFICATE", cert.cert.as_ref())).unwrap();
    std::fs::write(&key_path, pem("PRIVATE KEY", cert.key.secret_der())).unwrap();
    let s = |p: std::path::PathBuf| p.to_str().unwrap().to_owned();
    (dir, s(cert_path), s(key_path))
}

#[test]
fn nats_off_loopback_needs_a_credential() {
    let (_dir, cert, key) = pem_pair();
    let seed = tokens_file(SEED);
    let seed = seed.path().to_str().unwrap();
    let refused = Some("refusing to join NATS at nats://10.0.0.1:4222 without credentials");
    let cases: Vec<(Vec<&str>, Option<&str>)> = vec![
        (vec!["--cluster", "nats://10.0.0.1:4222"], refused),
        (vec!["--cluster", "10.0.0.1:4222"], refused),
        (
            vec!["--cluster", "nats://127.0.0.1:4222,nats://10.0.0.1:4222"],
            refused,
        ),
        // TLS alone proves nothing about who connects.
        (
            vec![
                "--cluster",
                "tls://nats.example.com:4222",
                "--cluster-ca",
                &cert,
            ],
            Some("refusing to join NATS at tls://nats.example.com:4222"),
        ),
        (
            vec!["--cluster", "nats://10.0.0.1:4222", "--cluster-insecure"],
            None,
        ),
        (vec!["--cluster", "nats://127.0.0.1:4222"], None),
        (
            vec!["--cluster", "nats://localhost:4222,nats://[::1]:4222"],
            None,
        ),
        (vec!["--cluster", "nats://relay-a:pw@10.0.0.1:4222"], None),
        (vec!["--cluster", "nats://s3cr3t-token@10.0.0.1:4222"], None),
        (
            vec!["--cluster", "tls://10.0.0.1:4222", "--cluster-nkey", seed],
            None,
        ),
        (
            vec![
                "--cluster",
                "tls://10.0.0.1:4222",
                "--cluster-cert",
                &cert,
                "--cluster-key",
                &key,
            ],
            None,
        ),
        (
            vec!["--cluster", "http://10.0.0.1:4222"],
            Some("invalid --cluster URL \"http://10.0.0.1:4222\""),
        ),
        (
            vec!["--cluster", "nats://u:%zz@h:4222"],
            Some("invalid --cluster URL \"nats://…@h:4222\""),
        ),
        (
            vec!["--cluster", "nats://a:1@h1:4222,nats://b:2@h2:4222"],
            Some("the --cluster URLs carry different logins"),
        ),
        (
            vec!["--cluster", "nats://a:1@h1:4222", "--cluster-nkey", seed],
            Some("--cluster carries a login in its URL and --cluster-nkey gives another"),
        ),
        (
            vec!["--cluster", "tls://h:4222", "--cluster-cert", &cert],
            Some("--cluster-cert and --cluster-key go together"),
        ),
        (
            vec![
                "--cluster",
                "tls://h:4222",
                "--cluster-nkey",
                "/nonexistent/seed",
            ],
            Some("could not load --cluster-nkey /nonexistent/seed: No such file"),
        ),
        (
            vec!["--cluster", "tls://h:4222", "--cluster-nkey", &cert],
            Some("not a user NKey seed; pass a file holding the NATS user's NKey seed"),
        ),
        (
            vec!["--cluster", "tls://h:4222", "--cluster-creds", seed],
            Some("could not load --cluster-creds"),
        ),
        (
            vec!["--cluster", "tls://u:p@h:4222", "--cluster-ca", seed],
            Some("could not load --cluster-ca"),
        ),
        (
            vec![
                "--cluster",
                "tls://u:p@h:4222",
                "--cluster-ca",
                &cert,
                "--cluster-cert",
                &cert,
                "--cluster-key",
                &cert,
            ],
            Some("could not load --cluster-key"),
        ),
    ];
    for (argv, expected) in cases {
        match (nats(&argv), expected) {
            (Ok(_), None) => {}
            (Err(err), Some(expected)) => {
                let text = err.to_string();
                assert!(text.contains(expected), "{argv:?}: {text}");
                assert!(
                    !text.contains(SEED) && !text.contains("pw@"),
                    "{argv:?}: {text}"
                );
            }
            (result, _) => panic!("{argv:?}: expected {expected:?}, got {result:?}"),
        }
    }
    // clap: one way to log in from files, and every NATS flag needs --cluster.
    assert!(Args::try_parse_from([
        "illumitunnel-relay",
        "--cluster",
        "nats://h",
        "--cluster-creds",
        "a",
        "--cluster-nkey",
        "b"
    ])
    .is_err());
    assert!(Args::try_parse_from(["illumitunnel-relay", "--http", "--cluster-insecure"]).is_err());
}

#[test]
fn nats_settings_reach_the_config_without_secrets_in_debug() {
    let (_dir, cert, key) = pem_pair();
    let seed = tokens_file(SEED);
    let config = nats(&[
        "--cluster",
        "tls://relay-a:hunter2-pw@10.0.0.1:4222,tls://relay-a:hunter2-pw@10.0.0.2:4222",
        "--cluster-ca",
        &cert,
    ])
    .unwrap();
    let link = config.cluster.as_ref().unwrap().nats.clone();
    assert_eq!(link.servers, ["tls://10.0.0.1:4222", "tls://10.0.0.2:4222"]);
    assert_eq!(
        link.login,
        Login::Password {
            user: "relay-a".into(),
            password: Secret::new("hunter2-pw")
        }
    );
    assert!(link.tls.required);
    assert_eq!(link.tls.ca.as_deref(), Some(Path::new(&cert)));
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");

    let config = nats(&[
        "--cluster",
        "nats://10.0.0.1:4222",
        "--cluster-nkey",
        seed.path().to_str().unwrap(),
        "--cluster-cert",
        &cert,
        "--cluster-key",
        &key,
    ])
    .unwrap();
    let link = &config.cluster.as_ref().unwrap().nats;
    assert_eq!(link.login, Login::Nkey(Secret::new(SEED)));
    // A client certificate means TLS even on a nats:// URL.
    assert!(link.tls.required);
    assert!(!format!("{config:?}").contains(SEED));
    // Plain nats:// with no TLS flag stays plain (the server may still ask for TLS).
    let plain = nats(&["--cluster", "nats://127.0.0.1:4222"]).unwrap();
    assert!(!plain.cluster.unwrap().nats.tls.required);
}

#[test]
fn token_commands_take_the_same_nats_flags() {
    let seed = tokens_file(SEED);
    let parsed = Args::try_parse_from([
        "illumitunnel-relay",
        "token",
        "add",
        "laptop",
        "--cluster",
        "tls://10.0.0.1:4222",
        "--cluster-nkey",
        seed.path().to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(
        nats_link(&parsed).unwrap().login,
        Login::Nkey(Secret::new(SEED))
    );
    let bare = Args::try_parse_from([
        "illumitunnel-relay",
        "token",
        "list",
        "--cluster",
        "nats://10.0.0.1:4222",
    ])
    .unwrap();
    assert!(matches!(
        nats_link(&bare),
        Err(ConfigError::Nats(LinkError::WithoutCredentials(_)))
    ));
}
