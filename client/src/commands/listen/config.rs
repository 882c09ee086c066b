//! `listen`'s arguments checked into a [`ListenConfig`]: the forward target, the relay and how
//! its certificate is trusted, `--events`/`--route`, and the limits (`--max-body`, capture
//! store retention), each with its documented default.

use std::path::PathBuf;
use std::time::Duration;

use illumitunnel::{Token, TunnelName};

use super::super::{parse_event_type, UsageError};
use crate::cli::ListenArgs;
use crate::forward::{Rules, Target};
use crate::illumichat::Api;
use crate::output::Format;
use crate::recorder::Retention;
use crate::session::RelayUrl;

/// Websocket ping interval unless `--keepalive-ms` says otherwise.
pub const DEFAULT_KEEPALIVE: Duration = illumitunnel_relay::config::DEFAULT_KEEPALIVE;
/// Largest request body taken from the relay, and local response body passed back.
pub const DEFAULT_MAX_BODY: usize = illumitunnel_relay::config::DEFAULT_MAX_BODY;
/// The capture store is pruned, oldest first, beyond this many bytes.
pub const DEFAULT_STORE_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Deliveries older than this are pruned from the capture store.
pub const DEFAULT_STORE_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

/// How the relay's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustChoice {
    /// Web PKI roots.
    Default,
    /// Web PKI roots plus the certificates in this PEM file.
    Ca(PathBuf),
    /// Anything.
    Insecure,
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
    /// Relay certificate trust.
    pub trust: TrustChoice,
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
}

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

impl TryFrom<&ListenArgs> for ListenConfig {
    type Error = UsageError;

    fn try_from(args: &ListenArgs) -> Result<Self, UsageError> {
        let usage = |e: &dyn std::fmt::Display| UsageError(e.to_string());
        let forward_to = args.forward_to.as_deref().filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            UsageError(
                "missing --forward-to URL; pass your local server's webhook URL, e.g. --forward-to http://localhost:3000/webhooks/illumichat"
                    .into(),
            )
        })?;
        let target = Target::parse(forward_to).map_err(|e| usage(&e))?;
        let relay = args
            .relay
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(RelayUrl::parse)
            .transpose()
            .map_err(|e| usage(&e))?;
        let tunnel = args
            .tunnel
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
            (None, false) => TrustChoice::Default,
        };
        if relay.is_none() && trust != TrustChoice::Default {
            return Err(UsageError(
                "--ca and --insecure only apply with --relay; the embedded relay is trusted already".into(),
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
            token: args
                .token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(Token::new),
            tunnel,
            trust,
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<ListenConfig, UsageError> {
        let mut argv = vec!["illumitunnel", "listen"];
        argv.extend_from_slice(args);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        match cli.command {
            crate::cli::Command::Listen(a) => ListenConfig::try_from(&a),
            _ => unreachable!(),
        }
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
            (&["--forward-to", "localhost:3000"][..], "missing http://"),
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
    fn empty_token_means_none() {
        let c = parse(&["--forward-to", "http://x", "--token", ""]).unwrap();
        assert!(c.token.is_none());
    }
}
