//! `--acme-*` flags and the shipped systemd unit.

use super::*;

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
    assert_eq!(settings.directory, crate::config::LETS_ENCRYPT_STAGING);
}
