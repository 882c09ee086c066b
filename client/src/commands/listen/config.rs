//! `listen`'s arguments checked into a [`ListenConfig`]: the forward target, the relay and how
//! its certificate is trusted, `--events`/`--route`, and the limits (`--max-body`, capture
//! store retention), each with its documented default.

use std::path::PathBuf;
use std::time::Duration;

use illumitunnel::{Token, TunnelName};

use super::super::parse_event_type;
use crate::cli::ListenArgs;
use crate::forward::{Rules, Target};
use crate::illumichat::Api;
use crate::output::Format;
use crate::recorder::Retention;
use crate::session::RelayUrl;
use crate::settings::{layer, Settings};
use crate::usage::UsageError;

/// Websocket ping interval unless `--keepalive-ms` says otherwise.
pub const DEFAULT_KEEPALIVE: Duration = illumitunnel_relay::config::DEFAULT_KEEPALIVE;
/// Largest request body taken from the relay, and local response body passed back.
pub const DEFAULT_MAX_BODY: usize = illumitunnel_relay::config::DEFAULT_MAX_BODY;
/// The capture store is pruned, oldest first, beyond this many bytes.
pub const DEFAULT_STORE_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Deliveries older than this are pruned from the capture store.
pub const DEFAULT_STORE_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

/// How a certificate (the relay's, or an https local server's) is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustChoice {
    /// The OS trust store and the web PKI roots.
    Default,
    /// The same, plus the certificates in this PEM file.
    Ca(PathBuf),
    /// Anything.
    Insecure,
}

impl TrustChoice {
    /// What `--forward-ca` / `--forward-insecure` ask for.
    pub fn forwarding(args: &crate::cli::ForwardTrustArgs) -> Result<Self, UsageError> {
        match (&args.forward_ca, args.forward_insecure) {
            (Some(_), true) => Err(UsageError(
                "--forward-ca and --forward-insecure contradict each other; pass one of them"
                    .into(),
            )),
            (Some(path), false) => Ok(TrustChoice::Ca(path.clone())),
            (None, true) => Ok(TrustChoice::Insecure),
            (None, false) => Ok(TrustChoice::Default),
        }
    }
}

/// `listen`'s arguments, validated.
#[derive(Debug)]
pub struct ListenConfig {
    /// Where deliveries go.
    pub target: Target,
    /// The relay; `None` starts one in-process.
    pub relay: Option<RelayUrl>,
    /// Client token.
    pub token: Option<Token>,
    /// Tunnel name; `None` uses the remembered one.
    pub tunnel: Option<TunnelName>,
    /// The line to print once before connecting: an http:// relay off this machine that
    /// `--allow-http` (or `allow_http` in config.toml) lets the token go to.
    pub cleartext_warning: Option<String>,
    /// Relay certificate trust.
    pub trust: TrustChoice,
    /// Trust in an https local server (`--forward-ca`, `--forward-insecure`).
    pub forward_trust: TrustChoice,
    /// `--allow-private-url`: `--register` may register a URL IllumiChat cannot reach.
    pub allow_private_url: bool,
    /// How deliveries are shown.
    pub format: Format,
    /// Whether the user asked for lines even in a terminal.
    pub no_tui: bool,
    /// Websocket ping interval.
    pub keepalive: Duration,
    /// `--events` and `--route`.
    pub rules: Rules,
    /// `--register`: the IllumiChat API to register the tunnel URL with.
    pub register: Option<Api>,
    /// `--max-body`.
    pub max_body: usize,
    /// `--store-max-bytes` and `--store-max-age`.
    pub retention: Retention,
    /// `--fan-out`: record and show the tunnel's deliveries, never forward them.
    pub fan_out: bool,
    /// `--relay-port` / `ILLUMITUNNEL_PORT`: the embedded relay's port.
    pub relay_port: u16,
}

/// The embedded relay's port when neither `--relay-port` nor `ILLUMITUNNEL_PORT` names one.
pub const DEFAULT_RELAY_PORT: u16 = 8443;

/// `--events` and `--route` checked: known event types, routes to absolute paths.
fn parse_rules(args: &ListenArgs) -> Result<Rules, UsageError> {
    let only = args
        .events
        .as_ref()
        .map(|events| {
            events
                .iter()
                .filter(|e| !e.trim().is_empty())
                .map(|e| parse_event_type(e).map(|t| t.as_str().to_string()))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    if only.as_ref().is_some_and(Vec::is_empty) {
        return Err(UsageError(format!(
            "--events needs at least one event type; use some of {}",
            illumitunnel::event::EventType::list()
        )));
    }
    let mut routes: Vec<(String, String)> = Vec::new();
    for route in &args.route {
        let (event, path) = route.split_once('=').ok_or_else(|| {
            UsageError(format!(
                "--route {route:?} is not TYPE=PATH; write it like --route lead.captured=/crm/leads"
            ))
        })?;
        let event = parse_event_type(event)?.as_str().to_string();
        let path_ok = path.starts_with('/')
            && path
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'\\'));
        if !path_ok {
            return Err(UsageError(format!(
                "--route {route:?}: PATH must start with / and hold no spaces, ? or #; write it like --route {event}=/crm/leads"
            )));
        }
        if routes.iter().any(|(e, _)| *e == event) {
            return Err(UsageError(format!(
                "--route names {event} twice; give each event type one path"
            )));
        }
        routes.push((event, path.to_string()));
    }
    Ok(Rules { only, routes })
}

/// The forward target: `listen TARGET` or `--forward-to` (not both), else `forward_to` in
/// config.toml.
fn forward_target(args: &ListenArgs, settings: &Settings) -> Result<Target, UsageError> {
    let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    let text = match (given(&args.target), given(&args.forward_to)) {
        (Some(target), Some(flag)) => {
            return Err(UsageError(format!(
                "both TARGET {target:?} and --forward-to {flag:?} say where deliveries go; pass one of them"
            )))
        }
        (Some(text), None) | (None, Some(text)) => text,
        (None, None) => given(&settings.forward_to).ok_or_else(|| {
            UsageError(
                "missing --forward-to URL; pass your local server's port or webhook URL, e.g. illumitunnel listen 3000 or --forward-to http://localhost:3000/webhooks/illumichat"
                    .into(),
            )
        })?,
    };
    Target::parse_shorthand(&text).map_err(|e| UsageError(e.to_string()))
}

impl TryFrom<(&ListenArgs, &Settings)> for ListenConfig {
    type Error = UsageError;

    /// Flags (and the environment variables clap reads for them) win over config.toml.
    fn try_from((args, settings): (&ListenArgs, &Settings)) -> Result<Self, UsageError> {
        let usage = |e: &dyn std::fmt::Display| UsageError(e.to_string());
        let target = forward_target(args, settings)?;
        let relay_text =
            layer(args.relay.as_ref(), settings.relay.as_ref()).filter(|s| !s.trim().is_empty());
        let relay = relay_text
            .as_deref()
            .map(RelayUrl::parse)
            .transpose()
            .map_err(|e| usage(&e))?;
        // `allow_http` in config.toml was said for the relay remembered with it, no other.
        let remembered = |text: &str| settings.relay.as_deref().map(str::trim) == Some(text.trim());
        let allow_http = args.allow_http
            || (settings.allow_http && relay_text.as_deref().is_some_and(remembered));
        let cleartext_warning = match &relay {
            Some(relay) => relay.check_cleartext(allow_http).map_err(UsageError)?,
            None => None,
        };
        let tunnel = layer(args.tunnel.as_ref(), settings.tunnel.as_ref())
            .as_deref()
            .map(TunnelName::parse)
            .transpose()
            .map_err(|e| UsageError(format!("{e}; pass another with --tunnel NAME")))?;
        let trust = match (&args.ca, args.insecure) {
            (Some(_), true) => {
                return Err(UsageError(
                    "--ca and --insecure contradict each other; pass one of them".into(),
                ))
            }
            (Some(path), false) => TrustChoice::Ca(path.clone()),
            (None, true) => TrustChoice::Insecure,
            // The remembered CA belongs to the remembered relay: without one it means nothing.
            (None, false) => match (&settings.ca, &relay) {
                // `login --insecure` was said for the relay remembered with it, no other.
                (_, Some(_))
                    if settings.insecure && relay_text.as_deref().is_some_and(remembered) =>
                {
                    TrustChoice::Insecure
                }
                (Some(path), Some(_)) => TrustChoice::Ca(path.clone()),
                _ => TrustChoice::Default,
            },
        };
        if relay.is_none() && trust != TrustChoice::Default {
            return Err(UsageError(
                "--ca and --insecure only apply with --relay; the embedded relay is trusted already".into(),
            ));
        }
        if args.fan_out && relay.is_none() {
            return Err(UsageError(
                "--fan-out joins a tunnel on a shared relay, and the embedded relay admits only the listen that started it; pass --relay URL".into(),
            ));
        }
        let relay_port = match args.relay_port {
            None => DEFAULT_RELAY_PORT,
            Some(0) => return Err(UsageError("--relay-port must be 1-65535".into())),
            Some(port) => port,
        };
        let forward_trust = TrustChoice::forwarding(&args.forward_trust)?;
        if forward_trust != TrustChoice::Default && !target.is_https() {
            return Err(UsageError(format!(
                "--forward-ca and --forward-insecure only apply to an https:// local server, and {target} is http; drop the flag or forward to https://"
            )));
        }
        if args.register && relay.is_none() && !args.api.allow_private_url {
            // The embedded relay's URL is on 127.0.0.1: unreachable, known before it starts.
            return Err(UsageError(
                "refusing to --register the embedded relay's URL: IllumiChat cannot reach 127.0.0.1; pass --relay with a public relay, or --allow-private-url to register it anyway for testing".into(),
            ));
        }
        let max_body = match args.max_body {
            None => DEFAULT_MAX_BODY,
            Some(0) => return Err(UsageError("--max-body must be at least 1".into())),
            Some(n) => n,
        };
        let max_bytes = match args.store_max_bytes {
            None => DEFAULT_STORE_MAX_BYTES,
            Some(0) => return Err(UsageError("--store-max-bytes must be at least 1".into())),
            Some(n) => n,
        };
        let max_age = match args.store_max_age.as_deref() {
            None => DEFAULT_STORE_MAX_AGE,
            Some(text) => illumitunnel::parse_duration(text)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    UsageError(format!(
                        "--store-max-age {text:?} is not a duration; write it like 12h or 30d"
                    ))
                })?,
        };
        let keepalive = match args.keepalive_ms {
            None => DEFAULT_KEEPALIVE,
            Some(0) => return Err(UsageError("--keepalive-ms must be at least 1".into())),
            Some(ms) => Duration::from_millis(ms),
        };
        Ok(ListenConfig {
            target,
            relay,
            token: layer(args.token.as_ref(), settings.token.as_ref())
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(Token::new),
            tunnel,
            cleartext_warning,
            trust,
            forward_trust,
            allow_private_url: args.api.allow_private_url,
            format: if args.json {
                Format::Json
            } else {
                Format::Lines
            },
            no_tui: args.no_tui,
            keepalive,
            rules: parse_rules(args)?,
            register: if args.register {
                Some(Api::new(&args.api)?)
            } else {
                None
            },
            max_body,
            retention: Retention { max_bytes, max_age },
            fan_out: args.fan_out,
            relay_port,
        })
    }
}

#[cfg(test)]
mod tests {
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
}
