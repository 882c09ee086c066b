//! `Config` validation: every refusal is one sentence; defaults and conversions.

use super::*;

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
        Some(Command::Token(TokenCommand::List { json: false }))
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

mod access;
mod acme;
mod cluster;

// The drain window.

#[test]
fn the_catch_up_window_defaults_to_32_and_must_be_at_least_1() {
    let base = ["--http", "--allow-anonymous", "--listen", "127.0.0.1:0"];
    let config = Config::try_from(args(&base)).unwrap();
    assert_eq!(config.catch_up_window, 32);
    let one = Config::try_from(args(&[&base[..], &["--catch-up-window", "1"]].concat())).unwrap();
    assert_eq!(one.catch_up_window, 1);
    let zero = Config::try_from(args(&[&base[..], &["--catch-up-window", "0"]].concat()));
    let err = zero.unwrap_err();
    assert!(
        matches!(err, ConfigError::ZeroLimit("catch-up-window")),
        "{err}"
    );
    assert_eq!(err.to_string(), "--catch-up-window must be at least 1");
}
