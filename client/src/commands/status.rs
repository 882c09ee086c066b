//! `illumitunnel status`: what this machine is set up to do, read from `config.toml`, the
//! remembered tunnel name and the live `listen` records, without connecting anywhere and without
//! creating anything: the relay, which token is saved (its first characters and length, never
//! the value), the tunnel, how the relay's certificate is trusted, the target deliveries go to,
//! and whether a `listen` runs for the tunnel here. `--json` prints the same as one object.

use std::io::Write as _;

use illumitunnel::paths;
use serde_json::{json, Value};

use super::listen::Running;
use super::{ignore_broken_pipe, Ctx};
use crate::cli::StatusArgs;
use crate::settings::Settings;

/// Prints the settings in effect; exit 0 whether or not anything is set up.
pub fn run(args: StatusArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let mut status = Status::read(&settings);
    status.last_target = last_target(&ctx.store);
    let text = if args.json {
        let mut line = illumitunnel::escape::json_string(&status.json());
        line.push('\n');
        line
    } else {
        status.text()
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    ignore_broken_pipe(out.write_all(text.as_bytes()).and_then(|()| out.flush()))
}

/// What `status` reports.
struct Status {
    config: std::path::PathBuf,
    relay: Option<String>,
    token: Option<TokenHint>,
    tunnel: Option<String>,
    /// `--ca` path, `insecure`, or `None` (the system trust store).
    ca: Option<String>,
    forward_to: Option<String>,
    /// Where the newest forwarded delivery in the capture store went.
    last_target: Option<String>,
    listen: Option<Running>,
}

/// A saved token, described without its value.
pub struct TokenHint {
    /// Its first characters.
    pub prefix: String,
    /// Its length in characters.
    pub length: usize,
}

/// How many characters of a token may be shown.
const SHOWN_TOKEN_CHARS: usize = 6;

impl TokenHint {
    /// Describes `token` without revealing it.
    pub fn of(token: &str) -> TokenHint {
        TokenHint {
            prefix: token.chars().take(SHOWN_TOKEN_CHARS).collect(),
            length: token.chars().count(),
        }
    }

    /// `itr_ab… (36 characters)`.
    pub fn text(&self) -> String {
        format!(
            "{}… ({} characters)",
            illumitunnel::escape::escape(&self.prefix),
            self.length
        )
    }
}

/// How the relay's certificate is trusted, as `status` and `login --json` name it.
pub fn ca_text(settings: &Settings) -> Option<String> {
    if settings.insecure {
        Some("insecure".into())
    } else {
        settings.ca.as_ref().map(|p| p.display().to_string())
    }
}

impl Status {
    fn read(settings: &Settings) -> Status {
        let tunnel = settings.tunnel.clone().or_else(remembered_tunnel_name);
        let listen = tunnel.as_deref().and_then(Running::live);
        Status {
            config: Settings::path(),
            relay: settings.relay.clone(),
            token: settings.token.as_deref().map(TokenHint::of),
            tunnel,
            ca: ca_text(settings),
            forward_to: settings.forward_to.clone(),
            last_target: None,
            listen,
        }
    }

    /// Nothing saved and nothing running.
    fn is_empty(&self) -> bool {
        self.relay.is_none()
            && self.token.is_none()
            && self.forward_to.is_none()
            && self.listen.is_none()
    }

    fn json(&self) -> Value {
        json!({
            "configured": !self.is_empty(),
            "config": self.config.display().to_string(),
            "relay": self.relay,
            "token_prefix": self.token.as_ref().map(|t| t.prefix.clone()),
            "token_length": self.token.as_ref().map(|t| t.length),
            "tunnel": self.tunnel,
            "ca": self.ca,
            "forward_to": self.forward_to,
            "last_target": self.last_target,
            "listen": self.listen.as_ref().map(|r| json!({
                "pid": r.pid,
                "target": r.target,
                "public_url": (!r.public_url.is_empty()).then_some(&r.public_url),
                "store": r.store.display().to_string(),
                "started": r.started,
            })),
        })
    }

    fn text(&self) -> String {
        let esc = |s: &str| illumitunnel::escape::escape(s).into_owned();
        let or = |v: &Option<String>, none: &str| v.as_deref().map_or(none.to_string(), esc);
        let mut lines = Vec::new();
        if self.is_empty() {
            lines.push(format!(
                "nothing set up yet ({} is empty or missing); start with illumitunnel login --relay URL, or illumitunnel listen PORT for a relay on this machine",
                self.config.display()
            ));
        }
        lines.push(format!(
            "relay      {}",
            or(&self.relay, "none (listen runs one on this machine)")
        ));
        lines.push(format!(
            "token      {}",
            self.token
                .as_ref()
                .map_or("none".to_string(), TokenHint::text)
        ));
        lines.push(format!("tunnel     {}", or(&self.tunnel, "none yet")));
        lines.push(format!("ca         {}", or(&self.ca, "system trust store")));
        let target = self
            .listen
            .as_ref()
            .map(|r| r.target.clone())
            .or_else(|| self.forward_to.clone())
            .or_else(|| self.last_target.clone());
        lines.push(format!("target     {}", or(&target, "none yet")));
        lines.push(match &self.listen {
            Some(r) => {
                let url = if r.public_url.is_empty() {
                    String::new()
                } else {
                    format!(" on {}", esc(&r.public_url))
                };
                format!(
                    "listen     running, PID {}, forwarding to {}{url}",
                    r.pid,
                    esc(&r.target)
                )
            }
            None => "listen     not running on this machine".to_string(),
        });
        lines.push(format!("config     {}", self.config.display()));
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }
}

/// Where the newest forwarded delivery in the capture store at `store` went; nothing when the
/// store does not exist (it is not created here).
fn last_target(store: &std::path::Path) -> Option<String> {
    use illumitunnel::store::{CaptureStore, Filter};
    if !store.is_file() {
        return None;
    }
    let store = CaptureStore::open(store).ok()?;
    store
        .list_newest(&Filter::default(), 50)
        .ok()?
        .into_iter()
        .find(|d| !d.target.is_empty())
        .map(|d| d.target)
}

/// The tunnel name `listen` remembered in the config dir, without creating one.
fn remembered_tunnel_name() -> Option<String> {
    let text = std::fs::read_to_string(paths::config_dir().join("tunnel")).ok()?;
    illumitunnel::TunnelName::parse(text.trim())
        .ok()
        .map(|t| t.as_str().to_string())
}
