//! Who may connect: tokens, anonymous relays, trusted proxies.

use super::*;

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
