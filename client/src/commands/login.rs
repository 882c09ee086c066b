//! `illumitunnel login` and `logout`: check a relay and token by connecting (a websocket
//! handshake and `Hello` with the token, the tunnel `listen` will use), then remember them in
//! `config.toml`, so later commands need neither flags nor environment variables and the token
//! never has to be typed on a command line again. An `http://` relay off this machine is refused
//! before the token is read or sent, unless `--allow-http`, which is remembered for that relay.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;

use illumitunnel::{Token, TunnelName};

use super::listen::{remembered_claim_key, remembered_tunnel, DEFAULT_KEEPALIVE, DEFAULT_MAX_BODY};
use super::status::{ca_text, TokenHint};
use crate::cli::LoginArgs;
use crate::session::tls::{self, Trust};
use crate::session::{self, RelayUrl, SessionConfig};
use crate::settings::{layer, Settings};
use crate::usage::UsageError;

/// Longest token line read from standard input.
const MAX_TOKEN_LINE: u64 = 4096;

/// Checks the relay and token, then writes them (and `--ca`) to `config.toml`.
pub fn run(args: LoginArgs) -> anyhow::Result<()> {
    let mut settings = Settings::load()?;
    let relay_text = layer(args.relay.as_ref(), settings.relay.as_ref())
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            UsageError(
                "missing --relay URL; pass your relay's base URL, e.g. illumitunnel login --relay https://relay.example.com".into(),
            )
        })?;
    let relay = RelayUrl::parse(&relay_text).map_err(|e| UsageError(e.to_string()))?;
    // What is remembered for another relay (its CA, its token, allow_http) says nothing about
    // this one.
    let same_relay = settings.relay.as_deref() == Some(relay_text.as_str());
    let allow_http = args.allow_http || (same_relay && settings.allow_http);
    // Refused before the token is read or sent anywhere.
    let cleartext_warning = relay.check_cleartext(allow_http).map_err(UsageError)?;
    if let Some(warning) = &cleartext_warning {
        eprintln!("{warning}");
    }
    let ca = match &args.ca {
        Some(path) => Some(std::path::absolute(path).unwrap_or_else(|_| path.clone())),
        None if same_relay => settings.ca.clone(),
        None => None,
    };
    let token = token_to_check(&args, &settings, same_relay)?;
    let tunnel = remembered_or_default_tunnel(&settings)?;
    // `--ca` replaces a remembered `insecure`; without either flag, this relay's is kept.
    let insecure = args.insecure || (args.ca.is_none() && same_relay && settings.insecure);
    let trust = match &ca {
        _ if insecure => Trust::Insecure,
        Some(path) => Trust::System(tls::load_ca(path).map_err(UsageError)?),
        None => Trust::System(Vec::new()),
    };
    let config = SessionConfig {
        relay,
        token: Some(Token::new(&token)),
        claim_key: remembered_claim_key(&tunnel),
        tunnel,
        tls: tls::client_config(trust).map_err(anyhow::Error::msg)?,
        keepalive: DEFAULT_KEEPALIVE,
        max_body: DEFAULT_MAX_BODY,
        // Only checks the handshake: never the session a sender's delivery is pushed to.
        observer: true,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("could not start the async runtime: {e}"))?;
    let public_url = runtime
        .block_on(session::check(&config))
        .map_err(anyhow::Error::msg)?;
    settings.relay = Some(relay_text.clone());
    settings.token = Some(token);
    settings.ca = if insecure { None } else { ca };
    settings.insecure = insecure;
    settings.allow_http = cleartext_warning.is_some();
    let path = settings.save()?;
    let hint = TokenHint::of(settings.token.as_deref().unwrap_or_default());
    eprintln!(
        "logged in to {relay_text} as {} (tunnel {}); saved to {}",
        hint.text(),
        illumitunnel::escape::escape(&public_url),
        path.display()
    );
    if args.json {
        let saved = serde_json::json!({
            "relay": relay_text,
            "token_prefix": hint.prefix,
            "token_length": hint.length,
            "tunnel": config.tunnel.as_str(),
            "public_url": public_url,
            "ca": ca_text(&settings),
            "config": path.display().to_string(),
        });
        print_json_line(&saved)?;
    }
    Ok(())
}

/// `login --json`'s one line on stdout; a closed pipe is not an error.
fn print_json_line(saved: &serde_json::Value) -> anyhow::Result<()> {
    let mut line = illumitunnel::escape::json_string(saved);
    line.push('\n');
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    super::ignore_broken_pipe(out.write_all(line.as_bytes()).and_then(|()| out.flush()))?;
    Ok(())
}

/// `--token`, else (for the relay remembered) the saved token, else one read from stdin.
fn token_to_check(
    args: &LoginArgs,
    settings: &Settings,
    same_relay: bool,
) -> anyhow::Result<String> {
    match args
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        Some(token) => Ok(token.to_string()),
        // A token piped in replaces the saved one: that is how a token is rotated. On a
        // terminal, the saved token of this relay is checked again without a prompt.
        None => match settings.token.clone().filter(|_| same_relay) {
            Some(remembered) if std::io::stdin().is_terminal() => Ok(remembered),
            Some(remembered) => Ok(read_piped_token()?.unwrap_or(remembered)),
            None => read_token(),
        },
    }
}

/// The tunnel named in config.toml, else this machine's remembered one.
fn remembered_or_default_tunnel(settings: &Settings) -> anyhow::Result<TunnelName> {
    match settings.tunnel.as_deref().map(TunnelName::parse) {
        Some(Ok(name)) => Ok(name),
        Some(Err(e)) => {
            Err(UsageError(format!("{e}; fix tunnel in {}", Settings::path().display())).into())
        }
        None => Ok(remembered_tunnel()),
    }
}

/// A token piped in on standard input (one line), or `None` when nothing was piped.
fn read_piped_token() -> anyhow::Result<Option<String>> {
    let mut line = String::new();
    std::io::Read::take(std::io::stdin().lock(), MAX_TOKEN_LINE)
        .read_line(&mut line)
        .map_err(|e| anyhow::anyhow!("could not read the token from standard input: {e}"))?;
    let token = line.trim().to_string();
    Ok((!token.is_empty()).then_some(token))
}

/// The token from standard input: one line, prompted for on a terminal. Read this way it
/// never appears in the process list or the shell history.
fn read_token() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("relay token: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    std::io::Read::take(stdin.lock(), MAX_TOKEN_LINE)
        .read_line(&mut line)
        .map_err(|e| anyhow::anyhow!("could not read the token from standard input: {e}"))?;
    let token = line.trim().to_string();
    if token.is_empty() {
        return Err(UsageError(
            "missing token; type it when asked, pipe it in (illumitunnel login --relay URL < token-file) or pass --token TOKEN".into(),
        )
        .into());
    }
    Ok(token)
}

/// Removes the token from `config.toml`, keeping the relay and everything else.
pub fn logout() -> anyhow::Result<()> {
    let mut settings = Settings::load()?;
    let path: PathBuf = Settings::path();
    if settings.token.take().is_none() {
        eprintln!("not logged in: {} holds no token", path.display());
        return Ok(());
    }
    settings.save()?;
    let relay = settings.relay.as_deref().unwrap_or("the relay");
    eprintln!(
        "logged out of {relay}; removed the token from {}",
        path.display()
    );
    Ok(())
}
