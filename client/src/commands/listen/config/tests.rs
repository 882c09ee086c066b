//! `listen`'s arguments and config.toml layered into a `ListenConfig`, and the usage errors.

use super::*;
use clap::Parser;

fn parse(args: &[&str]) -> Result<ListenConfig, UsageError> {
    parse_with(args, &Settings::default())
}

fn parse_with(args: &[&str], settings: &Settings) -> Result<ListenConfig, UsageError> {
    let mut argv = vec!["illumitunnel", "listen"];
    argv.extend_from_slice(args);
    let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
    match cli.command {
        crate::cli::Command::Listen(a) => ListenConfig::try_from((&a, settings)),
        _ => unreachable!(),
    }
}

#[test]
fn target_takes_a_port_host_port_path_or_url() {
    for (given, want) in [
        ("3000", "http://localhost:3000/"),
        ("localhost:3000/path", "http://localhost:3000/path"),
        ("127.0.0.1:8080", "http://127.0.0.1:8080/"),
        (
            "https://localhost:3443/hooks",
            "https://localhost:3443/hooks",
        ),
    ] {
        assert_eq!(parse(&[given]).unwrap().target.to_string(), want, "{given}");
        let flag = parse(&["--forward-to", given]).unwrap();
        assert_eq!(flag.target.to_string(), want, "--forward-to {given}");
    }
    let both = parse(&["3000", "--forward-to", "http://localhost:4000"]).unwrap_err();
    assert!(both.to_string().contains("pass one of them"), "{both}");
    for bad in ["0", "70000", "ftp://x"] {
        assert!(parse(&[bad]).is_err(), "{bad}");
    }
}

#[test]
fn flags_win_over_config_toml_which_fills_the_gaps() {
    let file = Settings {
        relay: Some("https://file-relay.example.com".into()),
        token: Some("file-token".into()),
        forward_to: Some("4000".into()),
        tunnel: Some("file-tunnel".into()),
        ca: Some("file-ca.pem".into()),
        allow_http: false,
        insecure: false,
    };
    let from_file = parse_with(&[], &file).unwrap();
    assert_eq!(from_file.target.to_string(), "http://localhost:4000/");
    assert_eq!(
        from_file.relay.unwrap().to_string(),
        "wss://file-relay.example.com:443"
    );
    assert_eq!(from_file.token.unwrap().expose(), "file-token");
    assert_eq!(from_file.tunnel.unwrap().as_str(), "file-tunnel");
    assert_eq!(from_file.trust, TrustChoice::Ca("file-ca.pem".into()));

    let flags = parse_with(
        &[
            "3000",
            "--relay",
            "https://flag-relay.example.com",
            "--token",
            "flag-token",
            "--tunnel",
            "flag-tunnel",
            "--insecure",
        ],
        &file,
    )
    .unwrap();
    assert_eq!(flags.target.to_string(), "http://localhost:3000/");
    assert_eq!(
        flags.relay.unwrap().to_string(),
        "wss://flag-relay.example.com:443"
    );
    assert_eq!(flags.token.unwrap().expose(), "flag-token");
    assert_eq!(flags.tunnel.unwrap().as_str(), "flag-tunnel");
    assert_eq!(flags.trust, TrustChoice::Insecure);

    // A remembered CA without a remembered relay has nothing to apply to.
    let ca_only = Settings {
        ca: Some("file-ca.pem".into()),
        ..Settings::default()
    };
    assert_eq!(
        parse_with(&["3000"], &ca_only).unwrap().trust,
        TrustChoice::Default
    );
}

#[test]
fn forward_trust_applies_to_https_targets_only() {
    let ca = parse(&["https://localhost:3443", "--forward-ca", "root.pem"]).unwrap();
    assert_eq!(ca.forward_trust, TrustChoice::Ca("root.pem".into()));
    let any = parse(&["https://localhost:3443", "--forward-insecure"]).unwrap();
    assert_eq!(any.forward_trust, TrustChoice::Insecure);
    let http = parse(&["3000", "--forward-insecure"]).unwrap_err();
    assert!(
        http.to_string().contains("only apply to an https://"),
        "{http}"
    );
}

#[test]
fn register_with_the_embedded_relay_is_refused_unless_allowed() {
    let err = parse(&["3000", "--register", "--api-token", "t"]).unwrap_err();
    assert!(err.to_string().contains("--allow-private-url"), "{err}");
    assert!(parse(&[
        "3000",
        "--register",
        "--api-token",
        "t",
        "--allow-private-url"
    ])
    .is_ok());
}

#[test]
fn validates_arguments() {
    let ok = parse(&[
        "--forward-to",
        "http://localhost:3000/hooks",
        "--tunnel",
        "my-app",
    ])
    .unwrap();
    assert_eq!(ok.target.to_string(), "http://localhost:3000/hooks");
    assert_eq!(ok.tunnel.unwrap().as_str(), "my-app");
    assert!(ok.relay.is_none());
    assert_eq!(ok.keepalive, DEFAULT_KEEPALIVE);

    let ok = parse(&[
        "--forward-to",
        "https://localhost:3000",
        "--relay",
        "https://relay.example.com",
        "--insecure",
        "--keepalive-ms",
        "250",
    ])
    .unwrap();
    assert_eq!(ok.trust, TrustChoice::Insecure);
    assert_eq!(ok.keepalive, Duration::from_millis(250));
    assert_eq!(ok.relay.unwrap().to_string(), "wss://relay.example.com:443");

    for (args, needle) in [
        (&[][..], "missing --forward-to URL"),
        (&["--forward-to", ""][..], "missing --forward-to URL"),
        (
            &["--forward-to", "ftp://x"][..],
            "only http:// and https://",
        ),
        (
            &["--forward-to", "http://x", "--tunnel", "No_Way"][..],
            "invalid tunnel name",
        ),
        (
            &["--forward-to", "http://x", "--relay", "relay.example.com"][..],
            "invalid --relay",
        ),
        (
            &["--forward-to", "http://x", "--insecure"][..],
            "only apply with --relay",
        ),
        (
            &["--forward-to", "http://x", "--keepalive-ms", "0"][..],
            "at least 1",
        ),
    ] {
        let err = parse(args).unwrap_err().to_string();
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
}

#[test]
fn limits_and_retention_have_defaults_and_are_checked() {
    let c = parse(&["--forward-to", "http://x"]).unwrap();
    assert_eq!(c.max_body, 10 * 1024 * 1024);
    assert_eq!(c.retention.max_bytes, 2 * 1024 * 1024 * 1024);
    assert_eq!(c.retention.max_age, Duration::from_secs(30 * 86_400));
    let c = parse(&[
        "--forward-to",
        "http://x",
        "--max-body",
        "4096",
        "--store-max-bytes",
        "1000000",
        "--store-max-age",
        "12h",
    ])
    .unwrap();
    assert_eq!(c.max_body, 4096);
    assert_eq!(c.retention.max_bytes, 1_000_000);
    assert_eq!(c.retention.max_age, Duration::from_secs(12 * 3600));
    for (args, needle) in [
        (&["--max-body", "0"][..], "--max-body must be at least 1"),
        (
            &["--store-max-bytes", "0"][..],
            "--store-max-bytes must be at least 1",
        ),
        (&["--store-max-age", "soon"][..], "write it like 12h or 30d"),
        (&["--store-max-age", "0d"][..], "write it like 12h or 30d"),
    ] {
        let mut argv = vec!["--forward-to", "http://x"];
        argv.extend_from_slice(args);
        let err = parse(&argv).unwrap_err().to_string();
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn an_http_relay_off_this_machine_needs_allow_http_from_flag_or_its_own_login() {
    let remote = "http://relay.example.com:8080";
    let refused = parse(&["3000", "--relay", remote]).unwrap_err().to_string();
    assert!(refused.contains("pass --allow-http"), "{refused}");
    let allowed = parse(&["3000", "--relay", remote, "--allow-http"]).unwrap();
    let warning = allowed.cleartext_warning.unwrap();
    assert!(
        warning.starts_with("warning: relay http://relay.example.com:8080 "),
        "{warning}"
    );
    for fine in ["http://127.0.0.1:8080", "https://relay.example.com"] {
        let c = parse(&["3000", "--relay", fine]).unwrap();
        assert_eq!(c.cleartext_warning, None, "{fine}");
    }
    assert_eq!(parse(&["3000"]).unwrap().cleartext_warning, None);

    let logged_in = Settings {
        relay: Some(remote.into()),
        allow_http: true,
        ..Settings::default()
    };
    let from_file = parse_with(&["3000"], &logged_in).unwrap();
    assert!(from_file.cleartext_warning.is_some());
    let same_by_flag = parse_with(&["3000", "--relay", remote], &logged_in).unwrap();
    assert!(same_by_flag.cleartext_warning.is_some());
    // What login allowed for one relay says nothing about another.
    let other = parse_with(&["3000", "--relay", "http://other.example.com"], &logged_in)
        .unwrap_err()
        .to_string();
    assert!(other.contains("pass --allow-http"), "{other}");
}

#[test]
fn empty_token_means_none() {
    let c = parse(&["--forward-to", "http://x", "--token", ""]).unwrap();
    assert!(c.token.is_none());
}

#[test]
fn a_remembered_insecure_applies_to_its_relay_only() {
    let file = Settings {
        relay: Some("https://self-signed.example.com".into()),
        insecure: true,
        ..Settings::default()
    };
    let remembered = parse_with(&["3000"], &file).unwrap();
    assert_eq!(remembered.trust, TrustChoice::Insecure);
    let other = parse_with(&["3000", "--relay", "https://other.example.com"], &file).unwrap();
    assert_eq!(other.trust, TrustChoice::Default);
}

#[test]
fn relay_port_defaults_to_8443_and_fan_out_needs_a_shared_relay() {
    let c = parse(&["3000"]).unwrap();
    assert_eq!((c.relay_port, c.fan_out), (DEFAULT_RELAY_PORT, false));
    assert_eq!(
        parse(&["3000", "--relay-port", "9443"]).unwrap().relay_port,
        9443
    );
    let zero = parse(&["3000", "--relay-port", "0"])
        .unwrap_err()
        .to_string();
    assert_eq!(zero, "--relay-port must be 1-65535");
    let alone = parse(&["3000", "--fan-out"]).unwrap_err().to_string();
    assert!(alone.ends_with("; pass --relay URL"), "{alone}");
    let shared = parse(&["3000", "--fan-out", "--relay", "https://relay.example.com"]).unwrap();
    assert!(shared.fan_out);
}
