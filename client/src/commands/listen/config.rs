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
    /// `--inspect ADDR` / `--no-inspect`: where the web inspector listens, if anywhere.
    pub inspect: crate::web::Inspect,
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
        let target = forward_target(args, settings)?;
        let relay = RelayChoice::new(args, settings)?;
        let tunnel = layer(args.tunnel.as_ref(), settings.tunnel.as_ref())
            .as_deref()
            .map(TunnelName::parse)
            .transpose()
            .map_err(|e| UsageError(format!("{e}; pass another with --tunnel NAME")))?;
        let trust = relay.trust(args, settings)?;
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
        if args.register && relay.url.is_none() && !args.api.allow_private_url {
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
        let retention = retention(args)?;
        let keepalive = match args.keepalive_ms {
            None => DEFAULT_KEEPALIVE,
            Some(0) => return Err(UsageError("--keepalive-ms must be at least 1".into())),
            Some(ms) => Duration::from_millis(ms),
        };
        Ok(ListenConfig {
            target,
            relay: relay.url,
            token: layer(args.token.as_ref(), settings.token.as_ref())
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(Token::new),
            tunnel,
            cleartext_warning: relay.cleartext_warning,
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
            retention,
            fan_out: args.fan_out,
            relay_port,
            inspect: crate::web::Inspect::from_args(
                args.inspect.as_deref(),
                args.no_inspect,
                std::env::var(crate::web::INSPECT_ENV).ok().as_deref(),
            )?,
        })
    }
}

/// `--relay` (or the remembered relay), checked.
struct RelayChoice {
    /// None: the embedded relay.
    url: Option<RelayUrl>,
    /// Whether it is the relay config.toml remembers, whose `allow_http` and `insecure` were
    /// said for it and no other.
    remembered: bool,
    /// What `--allow-http` to a non-loopback relay prints.
    cleartext_warning: Option<String>,
}

impl RelayChoice {
    fn new(args: &ListenArgs, settings: &Settings) -> Result<Self, UsageError> {
        let text =
            layer(args.relay.as_ref(), settings.relay.as_ref()).filter(|s| !s.trim().is_empty());
        let url = text
            .as_deref()
            .map(RelayUrl::parse)
            .transpose()
            .map_err(|e| UsageError(e.to_string()))?;
        let remembered = text
            .as_deref()
            .is_some_and(|text| settings.relay.as_deref().map(str::trim) == Some(text.trim()));
        let allow_http = args.allow_http || (settings.allow_http && remembered);
        let cleartext_warning = match &url {
            Some(relay) => relay.check_cleartext(allow_http).map_err(UsageError)?,
            None => None,
        };
        Ok(RelayChoice {
            url,
            remembered,
            cleartext_warning,
        })
    }

    /// How the relay's certificate is trusted: `--ca`, `--insecure`, or what config.toml
    /// remembers with this relay. Refuses trust flags without `--relay`, and `--fan-out` too.
    fn trust(&self, args: &ListenArgs, settings: &Settings) -> Result<TrustChoice, UsageError> {
        let trust = match (&args.ca, args.insecure) {
            (Some(_), true) => {
                return Err(UsageError(
                    "--ca and --insecure contradict each other; pass one of them".into(),
                ))
            }
            (Some(path), false) => TrustChoice::Ca(path.clone()),
            (None, true) => TrustChoice::Insecure,
            // The remembered CA belongs to the remembered relay: without one it means nothing.
            (None, false) => match (&settings.ca, &self.url) {
                // `login --insecure` was said for the relay remembered with it, no other.
                (_, Some(_)) if settings.insecure && self.remembered => TrustChoice::Insecure,
                (Some(path), Some(_)) => TrustChoice::Ca(path.clone()),
                _ => TrustChoice::Default,
            },
        };
        if self.url.is_none() && trust != TrustChoice::Default {
            return Err(UsageError(
                "--ca and --insecure only apply with --relay; the embedded relay is trusted already".into(),
            ));
        }
        if args.fan_out && self.url.is_none() {
            return Err(UsageError(
                "--fan-out joins a tunnel on a shared relay, and the embedded relay admits only the listen that started it; pass --relay URL".into(),
            ));
        }
        Ok(trust)
    }
}

/// `--store-max-bytes` and `--store-max-age`, with the defaults.
fn retention(args: &ListenArgs) -> Result<Retention, UsageError> {
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
    Ok(Retention { max_bytes, max_age })
}

#[cfg(test)]
mod tests;
