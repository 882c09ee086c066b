//! `Config` validation: every refusal is one sentence; defaults and conversions.

use super::*;
use crate::cluster::connect::{Login, NatsTls, Secret};
use clap::Parser;
use std::io::Write;

fn args(argv: &[&str]) -> Args {
    let mut args =
        Args::try_parse_from(std::iter::once("illumitunnel-relay").chain(argv.iter().copied()))
            .unwrap();
    args.tokens_env = None;
    args
}

fn tokens_file(contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    f
}

#[test]
fn validation_table() {
    let lo = ["--listen", "127.0.0.1:0", "--allow-anonymous"];
    let cases: &[(&[&str], Option<&str>)] = &[
        (
            &["--http"],
            Some("refusing to listen on 0.0.0.0:8443 without client tokens"),
        ),
        (&["--http", "--allow-anonymous"], None),
        (&[&lo[..], &["--http"]].concat(), None),
        (
            &["--listen", "127.0.0.1:0", "--http"],
            Some("refusing to listen on 127.0.0.1:0 without client tokens"),
        ),
        (&lo, Some("choose how to serve")),
        (
            &[&lo[..], &["--tls-cert", "c.pem"]].concat(),
            Some("--tls-cert needs --tls-key"),
        ),
        (
            &[&lo[..], &["--tls-key", "k.pem"]].concat(),
            Some("--tls-key needs --tls-cert"),
        ),
        (
            &[&lo[..], &["--http", "--self-signed"]].concat(),
            Some("--http serves plain HTTP"),
        ),
        (
            &[&lo[..], &["--http", "--tls-cert", "c", "--tls-key", "k"]].concat(),
            Some("--http serves plain HTTP"),
        ),
        (
            &[
                &lo[..],
                &["--self-signed", "--tls-cert", "c", "--tls-key", "k"],
            ]
            .concat(),
            Some("--self-signed cannot"),
        ),
        (
            &[&lo[..], &["--http", "--hostname", "x.example"]].concat(),
            Some("--hostname only applies"),
        ),
        (
            &[
                &lo[..],
                &[
                    "--tls-cert",
                    "/nonexistent/c.pem",
                    "--tls-key",
                    "/nonexistent/k.pem",
                ],
            ]
            .concat(),
            Some("could not load /nonexistent/c.pem"),
        ),
        (
            &[&lo[..], &["--http", "--public-url", "ftp://x"]].concat(),
            Some("invalid --public-url"),
        ),
        (
            &[&lo[..], &["--http", "--public-url", "https://"]].concat(),
            Some("invalid --public-url"),
        ),
        (
            &[&lo[..], &["--http", "--max-body", "0"]].concat(),
            Some("--max-body must be"),
        ),
        (
            &[&lo[..], &["--http", "--response-timeout", "0"]].concat(),
            Some("--response-timeout must be"),
        ),
        (
            &[&lo[..], &["--http", "--keepalive-ms", "0"]].concat(),
            Some("--keepalive-ms must be"),
        ),
        (
            &[&lo[..], &["--http", "--queue-max-count", "0"]].concat(),
            Some("--queue-max-count and --queue-max-bytes must be at least 1"),
        ),
        (
            &[&lo[..], &["--http", "--queue-max-bytes", "0"]].concat(),
            Some("--queue-max-count and --queue-max-bytes must be at least 1"),
        ),
        (
            &[&lo[..], &["--http", "--tokens-file", "/nonexistent/tokens"]].concat(),
            Some("could not read tokens file /nonexistent/tokens"),
        ),
        (
            &[
                &lo[..],
                &["--self-signed", "--hostname", "relay.example.com"],
            ]
            .concat(),
            None,
        ),
    ];
    for (argv, want) in cases {
        let got = Config::try_from(args(argv));
        match (want, got) {
            (None, Ok(_)) => {}
            (Some(want), Err(err)) => {
                let msg = err.to_string();
                assert!(
                    msg.starts_with(want),
                    "{argv:?}: got {msg:?}, want {want:?}"
                );
                assert!(!msg.ends_with('.') && !msg.contains('\n'), "{msg}");
            }
            (want, got) => panic!("{argv:?}: want {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn tokens_from_file_and_env() {
    let long = |name: &str| format!("{name}-0123456789abcdef0123");
    let file = tokens_file(&format!(
        "# relay tokens\n {} \n\n{},{}\n",
        long("alpha"),
        long("beta"),
        long("gamma")
    ));
    let mut a = args(&["--http", "--tokens-file", file.path().to_str().unwrap()]);
    a.tokens_env = Some(format!("{},\n{}", long("delta"), long("epsilon")));
    let config = Config::try_from(a).unwrap();
    let tokens: Vec<&str> = config.tokens.iter().map(Token::expose).collect();
    let want: Vec<String> = ["alpha", "beta", "gamma", "delta", "epsilon"]
        .iter()
        .map(|n| long(n))
        .collect();
    assert_eq!(tokens, want);
    assert!(
        !format!("{config:?}").contains("alpha"),
        "tokens leak through Debug"
    );

    let empty = tokens_file("\n# nothing\n  \n");
    let err = Config::try_from(args(&[
        "--http",
        "--tokens-file",
        empty.path().to_str().unwrap(),
    ]))
    .unwrap_err();
    assert!(err.to_string().contains("has no tokens"), "{err}");

    let mut a = args(&["--http"]);
    a.tokens_env = Some(long("zeta"));
    assert!(
        Config::try_from(a).is_ok(),
        "env tokens allow a public listen address"
    );
}

#[test]
fn defaults_and_conversions() {
    let config = Config::try_from(args(&[
        "--listen",
        "127.0.0.1:0",
        "--allow-anonymous",
        "--http",
        "--public-url",
        "https://relay.example.com/",
        "--response-timeout",
        "3",
        "--offline",
        "reject",
        "--keepalive-ms",
        "50",
    ]))
    .unwrap();
    assert_eq!(
        config.public_url.as_deref(),
        Some("https://relay.example.com")
    );
    assert_eq!(config.response_timeout, Duration::from_secs(3));
    assert_eq!(config.offline, OfflinePolicy::Reject);
    assert_eq!(config.keepalive, Duration::from_millis(50));
    assert_eq!(config.max_body, DEFAULT_MAX_BODY);
    assert_eq!(config.tls.scheme(), "http");

    let config = Config::try_from(args(&[
        "--listen",
        "127.0.0.1:0",
        "--allow-anonymous",
        "--self-signed",
    ]))
    .unwrap();
    assert_eq!(config.tls.scheme(), "https");
    assert_eq!(config.offline, OfflinePolicy::Queue);
    assert_eq!(config.keepalive, DEFAULT_KEEPALIVE);
}

#[test]
fn pem_files_load_and_garbage_is_named() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.key_pair.serialize_pem()).unwrap();
    let (cs, ks) = (c.to_str().unwrap(), k.to_str().unwrap());
    let config = Config::try_from(args(&[
        "--listen",
        "127.0.0.1:0",
        "--allow-anonymous",
        "--tls-cert",
        cs,
        "--tls-key",
        ks,
    ]))
    .unwrap();
    assert_eq!(config.tls.scheme(), "https");

    let err = Config::try_from(args(&[
        "--listen",
        "127.0.0.1:0",
        "--allow-anonymous",
        "--tls-cert",
        ks,
        "--tls-key",
        ks,
    ]))
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("could not load {ks}: no certificate")),
        "{err}"
    );
    let err = Config::try_from(args(&[
        "--listen",
        "127.0.0.1:0",
        "--allow-anonymous",
        "--tls-cert",
        cs,
        "--tls-key",
        cs,
    ]))
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("could not load {cs}: no private key")),
        "{err}"
    );
}

#[test]
fn queue_limits() {
    let lo = ["--listen", "127.0.0.1:0", "--allow-anonymous", "--http"];
    let config = Config::try_from(args(&lo)).unwrap();
    assert_eq!(config.queue, QueueLimits::default());
    assert_eq!(config.queue.max_age, Duration::from_secs(72 * 3600));
    let config = Config::try_from(args(
        &[
            &lo[..],
            &[
                "--queue-max-count",
                "5",
                "--queue-max-bytes",
                "1000",
                "--queue-max-age",
                "15m",
            ],
        ]
        .concat(),
    ))
    .unwrap();
    assert_eq!(
        config.queue,
        QueueLimits {
            max_count: 5,
            max_bytes: 1000,
            max_age: Duration::from_secs(900),
            max_total_bytes: crate::queue::DEFAULT_MAX_TOTAL_BYTES,
        }
    );
    // humantime accepts weeks (3w), fractions (1.5h) and combinations (1h30m).
    for bad in ["0s", "15", "3x", "soon"] {
        let err =
            Args::try_parse_from(["illumitunnel-relay", "--http", "--queue-max-age", bad].iter())
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("is not a duration; use a number and a unit"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn hostile_input_limits_have_defaults_and_refuse_nonsense() {
    let parse = |extra: &[&str]| {
        let mut args = vec![
            "illumitunnel-relay",
            "--http",
            "--listen",
            "127.0.0.1:0",
            "--allow-anonymous",
        ];
        args.extend_from_slice(extra);
        Config::try_from(Args::try_parse_from(args).unwrap())
    };
    let config = parse(&[]).unwrap();
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.limits.max_header_bytes, 64 * 1024);
    assert_eq!(config.limits.max_inflight_bytes, 256 * 1024 * 1024);
    assert_eq!(
        (
            config.limits.max_connections,
            config.limits.max_connections_per_ip
        ),
        (10_000, 256)
    );
    assert_eq!(config.limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(
        config.limits.tunnel_ttl,
        Duration::from_secs(30 * 24 * 3600)
    );
    assert_eq!(config.queue.max_total_bytes, 1024 * 1024 * 1024);
    assert!(!config.metrics_tunnel_labels && config.metrics_listen.is_none());
    let config = parse(&[
        "--max-header-bytes",
        "2048",
        "--idle-timeout",
        "5",
        "--tunnel-ttl",
        "2h",
        "--metrics-listen",
        "127.0.0.1:9100",
        "--metrics-tunnel-labels",
    ])
    .unwrap();
    assert_eq!(config.limits.max_header_bytes, 2048);
    assert_eq!(config.limits.idle_timeout, Duration::from_secs(5));
    assert_eq!(config.limits.tunnel_ttl, Duration::from_secs(7200));
    assert_eq!(
        config.metrics_listen,
        Some("127.0.0.1:9100".parse().unwrap())
    );
    assert!(config.metrics_tunnel_labels);
    for (extra, sentence) in [
        (
            vec!["--max-header-bytes", "200000"],
            "--max-header-bytes must be between 1024 and 98304 bytes",
        ),
        (
            vec!["--max-header-bytes", "10"],
            "--max-header-bytes must be between",
        ),
        (
            vec!["--max-connections", "0"],
            "--max-connections must be at least 1",
        ),
        (
            vec!["--max-connections-per-ip", "0"],
            "--max-connections-per-ip must be at least 1",
        ),
        (
            vec!["--idle-timeout", "0"],
            "--idle-timeout must be at least 1",
        ),
        (
            vec!["--queue-max-total-bytes", "0"],
            "--queue-max-total-bytes must be at least 1",
        ),
        (
            vec!["--max-inflight-bytes", "1000"],
            "--max-inflight-bytes must be at least --max-body",
        ),
    ] {
        let err = parse(&extra).unwrap_err().to_string();
        assert!(err.starts_with(sentence), "{extra:?}: {err}");
    }
}

#[test]
fn acme_flags() {
    let acme = ["--acme-domain", "relay.example.com"];
    let cases: &[(&[&str], Option<&str>)] = &[
        (&acme, None),
        (
            &[
                &acme[..],
                &["--acme-email", "ops@example.com", "--acme-staging"],
            ]
            .concat(),
            None,
        ),
        (
            &[&acme[..], &["--tls-cert", "c.pem", "--tls-key", "k.pem"]].concat(),
            Some(
                "--acme-domain obtains its own certificate and cannot be combined with --tls-cert",
            ),
        ),
        (
            &[&acme[..], &["--self-signed"]].concat(),
            Some("--acme-domain obtains"),
        ),
        (
            &[&acme[..], &["--http"]].concat(),
            Some("--acme-domain obtains"),
        ),
        (
            &[&acme[..], &["--hostname", "x.example"]].concat(),
            Some("--hostname only applies"),
        ),
        (
            &["--http", "--acme-email", "ops@example.com"],
            Some("--acme-email only applies with --acme-domain"),
        ),
        (
            &["--http", "--acme-staging"],
            Some("--acme-staging only applies"),
        ),
        (
            &["--acme-domain", "https://relay.example.com"],
            Some("invalid --acme-domain \"https://relay.example.com\""),
        ),
        (
            &["--acme-domain", "*.example.com"],
            Some("invalid --acme-domain"),
        ),
        (
            &["--acme-domain", "203.0.113.9"],
            Some("invalid --acme-domain"),
        ),
        (
            &[&acme[..], &["--acme-directory", "http://ca.example/dir"]].concat(),
            Some("invalid --acme-directory"),
        ),
        (
            &[
                &acme[..],
                &[
                    "--acme-directory",
                    "https://ca.example/dir",
                    "--acme-staging",
                ],
            ]
            .concat(),
            Some("--acme-staging picks"),
        ),
        (
            &[&acme[..], &["--acme-email", "not-an-address"]].concat(),
            Some("invalid --acme-email"),
        ),
        (
            &[&acme[..], &["--acme-ca-root", "/nonexistent/root.pem"]].concat(),
            Some("could not load --acme-ca-root /nonexistent/root.pem"),
        ),
    ];
    for (argv, want) in cases {
        let mut parsed = args(argv);
        // An ACME relay is public: give it a token so only the ACME rules are under test.
        parsed.stored_tokens = 1;
        match (want, Config::try_from(parsed)) {
            (None, Ok(config)) => assert_eq!(config.tls.scheme(), "https"),
            (Some(want), Err(err)) => {
                let msg = err.to_string();
                assert!(
                    msg.starts_with(want),
                    "{argv:?}: got {msg:?}, want {want:?}"
                );
            }
            (want, got) => panic!("{argv:?}: want {want:?}, got {got:?}"),
        }
    }
    let config = Config::try_from({
        let mut a = args(&["--acme-domain", "Relay.Example.com", "--acme-staging"]);
        a.stored_tokens = 1;
        a
    })
    .unwrap();
    let TlsConfig::Acme(settings) = config.tls else {
        panic!("not ACME")
    };
    assert_eq!(settings.domains, ["relay.example.com"]);
    assert_eq!(
        config.public_url.as_deref(),
        Some("https://relay.example.com:8443")
    );
    assert_eq!(settings.directory, crate::acme::LETS_ENCRYPT_STAGING);
}

#[test]
fn stored_tokens_let_a_public_relay_start() {
    let public = ["--listen", "0.0.0.0:8443", "--http"];
    let err = Config::try_from(args(&public)).unwrap_err();
    assert!(
        err.to_string()
            .contains("illumitunnel-relay token add NAME"),
        "{err}"
    );
    let mut with_stored = args(&public);
    with_stored.stored_tokens = 2;
    let config = Config::try_from(with_stored).unwrap();
    assert!(config.tokens.is_empty() && config.stored_tokens);
}

#[test]
fn token_subcommands_parse_with_a_data_dir_anywhere() {
    let parsed = args(&["token", "add", "laptop", "--data-dir", "/srv/relay"]);
    assert!(matches!(
        parsed.command,
        Some(Command::Token(TokenCommand::Add { ref name })) if name == "laptop"
    ));
    assert_eq!(parsed.data_dir.as_deref(), Some(Path::new("/srv/relay")));
    let parsed = args(&["--data-dir", "/srv/relay", "token", "revoke", "laptop"]);
    assert!(matches!(
        parsed.command,
        Some(Command::Token(TokenCommand::Revoke { .. }))
    ));
    assert!(matches!(
        args(&["token", "list"]).command,
        Some(Command::Token(TokenCommand::List))
    ));
}

#[test]
fn the_systemd_unit_starts_a_valid_hardened_acme_relay() {
    let unit = include_str!("../../../deploy/illumitunnel-relay.service");
    for setting in [
        "DynamicUser=yes",
        "StateDirectory=illumitunnel-relay",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l == setting), "missing {setting}");
    }
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let argv: Vec<&str> = exec
        .split_whitespace()
        .filter(|w| *w != "$RELAY_FLAGS")
        .map(|w| match w {
            "${RELAY_DOMAIN}" => "relay.example.com",
            "${ACME_EMAIL}" => "ops@example.com",
            other => other,
        })
        .collect();
    assert_eq!(argv[0], "/usr/local/bin/illumitunnel-relay");
    let mut parsed = args(&argv[1..]);
    parsed.stored_tokens = 1;
    let config = Config::try_from(parsed).unwrap();
    assert!(matches!(config.tls, TlsConfig::Acme(_)));
    assert_eq!(
        config.public_url.as_deref(),
        Some("https://relay.example.com")
    );
    assert_eq!(config.data_dir, Path::new("/var/lib/illumitunnel-relay"));
}

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

// Behind a proxy on purpose; no relay without tokens.

#[test]
fn a_relay_without_tokens_refuses_to_start_on_loopback_too() {
    for listen in ["127.0.0.1:8080", "[::1]:8080", "0.0.0.0:8443"] {
        let err = Config::try_from(args(&["--http", "--listen", listen])).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to listen on {} without client tokens: any client could open tunnels on it, also through a proxy on loopback; add one with `illumitunnel-relay token add NAME`, pass --tokens-file FILE (or set ILLUMITUNNEL_RELAY_TOKENS), or pass --allow-anonymous to accept any client",
                listen.parse::<SocketAddr>().unwrap()
            )
        );
    }
    let open = ["--http", "--listen", "127.0.0.1:8080", "--allow-anonymous"];
    assert!(Config::try_from(args(&open)).unwrap().allow_anonymous);
    let mut stored = args(&["--http", "--listen", "127.0.0.1:8080"]);
    stored.stored_tokens = 1;
    assert!(Config::try_from(stored).is_ok(), "`token add` tokens count");
    let mut env = args(&["--http", "--listen", "127.0.0.1:8080"]);
    env.tokens_env = Some("itr_0123456789abcdefghijklmnopqrstuv".into());
    assert!(Config::try_from(env).is_ok(), "environment tokens count");
    // The embedded relay of `listen` is unchanged: its own process token, on loopback.
    let embedded = Config::embedded(TlsConfig::Plain, PathBuf::from("/tmp/x"));
    assert!(embedded.tokens.is_empty() && embedded.allow_anonymous);
}

#[test]
fn trusted_proxies_and_the_proxy_protocol_are_validated() {
    let base = ["--http", "--listen", "127.0.0.1:8080", "--allow-anonymous"];
    let config = Config::try_from(args(
        &[
            &base[..],
            &[
                "--trusted-proxy",
                "127.0.0.1",
                "--trusted-proxy",
                "10.0.0.0/8",
                "--trusted-proxy",
                "fd00::/8",
            ],
        ]
        .concat(),
    ))
    .unwrap();
    let trusted = &config.trusted_proxies;
    assert!(trusted.contains("127.0.0.1".parse().unwrap()));
    assert!(trusted.contains("::ffff:10.9.8.7".parse().unwrap()));
    assert!(trusted.contains("fd00::1".parse().unwrap()));
    assert!(!trusted.contains("127.0.0.2".parse().unwrap()));
    assert!(!config.proxy_protocol);
    assert!(Config::try_from(args(&base))
        .unwrap()
        .trusted_proxies
        .is_empty());

    let err = Config::try_from(args(&[&base[..], &["--proxy-protocol"]].concat())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--proxy-protocol needs --trusted-proxy CIDR naming the proxies that send the header (e.g. --trusted-proxy 10.0.0.0/8); connections from anyone else are closed"
    );
    let with = [
        &base[..],
        &["--proxy-protocol", "--trusted-proxy", "10.0.0.0/8"],
    ]
    .concat();
    assert!(Config::try_from(args(&with)).unwrap().proxy_protocol);

    for bad in ["10.0.0.0/33", "proxy.example.com", "10.0.0.0/"] {
        let err =
            Args::try_parse_from(["illumitunnel-relay", "--http", "--trusted-proxy", bad].iter())
                .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        assert!(
            err.to_string().contains(
                "is not an address or network; use e.g. 127.0.0.1, 10.0.0.0/8 or fd00::/8"
            ),
            "{bad}: {err}"
        );
    }
}

// Token strength: tokens in a tokens file or the environment carry at least 128 bits.

#[test]
fn short_tokens_are_refused_naming_their_line_never_the_token() {
    let file = tokens_file("# team\nitr_0123456789abcdef0123456789\n\nabc\n");
    let path = file.path().to_str().unwrap().to_string();
    let err = Config::try_from(args(&["--http", "--tokens-file", &path])).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("tokens file {path} line 4 holds a token shorter than 22 characters (128 bits); replace it with a long random one, e.g. from `illumitunnel-relay token add NAME` or `openssl rand -hex 16`")
    );
    assert!(!err.to_string().contains("abc"), "{err}");

    // 21 characters are one too few; 22 are enough.
    let mut a = args(&["--http"]);
    a.tokens_env = Some(format!("{},{}", "a".repeat(22), "b".repeat(21)));
    let err = Config::try_from(a).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ILLUMITUNNEL_RELAY_TOKENS entry 2 is a token shorter than 22 characters (128 bits); replace it with a long random one, e.g. from `openssl rand -hex 16`"
    );
    assert_eq!(
        parse_tokens(&format!("{}, {}", "a".repeat(22), "b".repeat(22))).map(|t| t.len()),
        Ok(2)
    );
    assert_eq!(
        parse_tokens("# short comment\nshort"),
        Err(WeakToken { line: 2, entry: 1 })
    );
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

// Budget: the minimum body rate.
#[test]
fn min_body_rate_defaults_to_8_kib_a_second_after_5_s_and_0_turns_it_off() {
    let base = ["--http", "--allow-anonymous", "--listen", "127.0.0.1:0"];
    let config = Config::try_from(args(&base)).unwrap();
    assert_eq!(config.limits.min_body_rate, 8 * 1024);
    assert_eq!(config.limits.min_body_grace, Duration::from_secs(5));
    let off = Config::try_from(args(&[&base[..], &["--min-body-rate", "0"]].concat())).unwrap();
    assert_eq!(off.limits.min_body_rate, 0);
    let tuned = Config::try_from(args(
        &[
            &base[..],
            &["--min-body-rate", "1000", "--min-body-grace-ms", "300"],
        ]
        .concat(),
    ))
    .unwrap();
    assert_eq!(
        (tuned.limits.min_body_rate, tuned.limits.min_body_grace),
        (1000, Duration::from_millis(300))
    );
    assert!(Args::try_parse_from(["illumitunnel-relay", "--min-body-rate", "8KiB/s"]).is_err());
}

// The drain window.

#[test]
fn the_drain_window_defaults_to_32_and_must_be_at_least_1() {
    let base = ["--http", "--allow-anonymous", "--listen", "127.0.0.1:0"];
    let config = Config::try_from(args(&base)).unwrap();
    assert_eq!(config.drain_window, 32);
    let one = Config::try_from(args(&[&base[..], &["--drain-window", "1"]].concat())).unwrap();
    assert_eq!(one.drain_window, 1);
    let zero = Config::try_from(args(&[&base[..], &["--drain-window", "0"]].concat()));
    let err = zero.unwrap_err();
    assert!(
        matches!(err, ConfigError::ZeroLimit("drain-window")),
        "{err}"
    );
    assert_eq!(err.to_string(), "--drain-window must be at least 1");
}
