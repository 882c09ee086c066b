//! One connection attempt to the relay, step by step: TCP, TLS for `wss`, the websocket
//! upgrade on `/_illumitunnel/connect` with the token, `Hello`, and the relay's answer
//! (`Welcome` or a refusal). Each step is bounded by [`HANDSHAKE_TIMEOUT`], and each failure
//! is a sentence marked as worth retrying or fatal.

use futures_util::{SinkExt, StreamExt};
use illumitunnel::protocol::{ClientMessage, Refusal, RelayMessage, MAX_MESSAGE, PROTOCOL_VERSION};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::config::{SessionConfig, HANDSHAKE_TIMEOUT};
use super::relay_url::RelayUrl;
use super::tls;

/// A failed connection attempt.
#[derive(Debug)]
pub enum ConnectError {
    /// Retrying cannot help (refused token, taken name, untrusted certificate): exit 1.
    Fatal(String),
    /// Worth another attempt after a delay.
    Retry(String),
}

/// Any byte stream a websocket can run over (TCP, TLS, or a test's duplex pipe).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The relay link once upgraded.
pub type Ws = WebSocketStream<Box<dyn Io>>;

/// What the relay's `Welcome` said.
pub struct Welcome {
    /// The tunnel's public URL.
    pub public_url: String,
    /// Deliveries waiting in the relay's offline queue.
    pub queued: u32,
    /// Queued deliveries that expired before this session.
    pub expired: u32,
    /// Queued deliveries the relay set aside as dead letters.
    pub dead_letters: u32,
    /// The key that re-joins an anonymous tunnel; empty when the relay gives none.
    pub claim_key: String,
}

/// One attempt: TCP, TLS, websocket upgrade, `Hello`, and the relay's answer.
pub async fn connect(
    config: &SessionConfig,
    claim_key: &str,
) -> Result<(Ws, Welcome), ConnectError> {
    let io = dial(config).await?;
    let ws = upgrade(config, io).await?;
    greet(config, ws, claim_key).await
}

/// A relay that may answer another time: one sentence naming it.
fn retry(relay: &RelayUrl, cause: String) -> ConnectError {
    ConnectError::Retry(format!("could not connect to relay {relay}: {cause}"))
}

/// A relay this client will never reach as configured: one sentence naming it.
fn fatal(relay: &RelayUrl, cause: String) -> ConnectError {
    ConnectError::Fatal(format!("could not connect to relay {relay}: {cause}"))
}

fn timed_out(relay: &RelayUrl) -> ConnectError {
    retry(
        relay,
        format!(
            "timed out after {} s; check --relay",
            HANDSHAKE_TIMEOUT.as_secs()
        ),
    )
}

/// TCP (direct or through a proxy), then TLS for an https relay.
async fn dial(config: &SessionConfig) -> Result<Box<dyn Io>, ConnectError> {
    let relay = &config.relay;
    let retry = |cause: String| retry(relay, cause);
    let fatal = |cause: String| fatal(relay, cause);
    let timed_out = || timed_out(relay);
    let tcp = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        // Direct, or through a CONNECT tunnel when HTTPS_PROXY/NO_PROXY say so.
        crate::proxy::dial(&relay.host, relay.port, relay.tls),
    )
    .await
    .map_err(|_| timed_out())?
    .map_err(|e| retry(describe_connect_error(&e, relay)))?;
    let _ = tcp.set_nodelay(true);

    let io: Box<dyn Io> = if relay.tls {
        let name = rustls::pki_types::ServerName::try_from(relay.host.clone()).map_err(|_| {
            fatal(format!(
                "{} is not a valid TLS server name; check --relay",
                relay.host
            ))
        })?;
        let tls = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            tokio_rustls::TlsConnector::from(config.tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| match tls::explain_handshake_error(&e) {
            (cause, true) => retry(cause),
            (cause, false) => fatal(cause),
        })?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };

    Ok(io)
}

/// The websocket upgrade, with the token.
async fn upgrade(config: &SessionConfig, io: Box<dyn Io>) -> Result<Ws, ConnectError> {
    let relay = &config.relay;
    let retry = |cause: String| retry(relay, cause);
    let fatal = |cause: String| fatal(relay, cause);
    let timed_out = || timed_out(relay);
    let mut request = relay
        .connect_url()
        .into_client_request()
        .map_err(|e| fatal(format!("invalid relay URL: {e}; check --relay")))?;
    if let Some(token) = &config.token {
        let value =
            http::HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                fatal("the token contains characters a header cannot carry; check --token".into())
            })?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value);
    }
    let ws_config = WebSocketConfig {
        max_message_size: Some(MAX_MESSAGE),
        max_frame_size: Some(MAX_MESSAGE),
        ..Default::default()
    };
    let (ws, _) = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::client_async_with_config(request, io, Some(ws_config)),
    )
    .await
    .map_err(|_| timed_out())?
    .map_err(|e| match e {
        tungstenite::Error::Http(resp) if matches!(resp.status().as_u16(), 401 | 403) => {
            ConnectError::Fatal(refusal_sentence(Refusal::Unauthorized, "", config))
        }
        // The relay limits failed token checks per address; the right token is refused too
        // while the address is over the limit, so this is worth another try, not fatal.
        tungstenite::Error::Http(resp) if resp.status().as_u16() == 429 => retry(
            "the relay is refusing this address for a moment after too many failed token checks (429); if it repeats, check --token and ILLUMITUNNEL_TOKEN".into(),
        ),
        tungstenite::Error::Http(resp) => retry(format!(
            "it answered {} to the websocket upgrade; check that --relay is an illumitunnel relay",
            resp.status()
        )),
        other => retry(format!("websocket handshake failed: {other}")),
    })?;

    Ok(ws)
}

/// `Hello`, then the relay's first word: a `Welcome` (checked) or a refusal.
async fn greet(
    config: &SessionConfig,
    mut ws: Ws,
    claim_key: &str,
) -> Result<(Ws, Welcome), ConnectError> {
    let relay = &config.relay;
    let retry = |cause: String| retry(relay, cause);
    let fatal = |cause: String| fatal(relay, cause);
    let hello = ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        tunnel: config.tunnel.to_string(),
        claim_key: claim_key.to_string(),
        observer: config.observer,
    };
    ws.send(Message::Binary(hello.encode()))
        .await
        .map_err(|e| retry(format!("connection lost during hello: {e}")))?;
    let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Binary(buf)) => return Some(RelayMessage::decode(&buf)),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
        None
    })
    .await
    .map_err(|_| {
        retry(format!(
            "no answer to hello within {} s",
            HANDSHAKE_TIMEOUT.as_secs()
        ))
    })?;
    match answer {
        Some(Ok(RelayMessage::Welcome {
            public_url,
            queued,
            expired,
            dead_letters,
            claim_key,
            ..
        })) => {
            check_public_url(&public_url).map_err(|why| {
                fatal(format!(
                    "it sent a tunnel URL that {why}; check --relay, or ask the relay's operator to fix its --public-url"
                ))
            })?;
            // Kept in a file and sent back in `Hello`: a relay cannot make it anything else.
            if !is_claim_key(&claim_key) {
                return Err(fatal(format!(
                    "it sent a claim key that is not 1 to {MAX_CLAIM_KEY} printable ASCII characters; check --relay"
                )));
            }
            Ok((
                ws,
                Welcome {
                    public_url,
                    queued,
                    expired,
                    dead_letters,
                    claim_key,
                },
            ))
        }
        Some(Ok(RelayMessage::Refused { reason, message })) => Err(ConnectError::Fatal(
            refusal_sentence(reason, &message, config),
        )),
        Some(Ok(other)) => Err(retry(format!(
            "unexpected first message {}",
            message_name(&other)
        ))),
        Some(Err(e)) => Err(retry(format!("unreadable answer to hello: {e}"))),
        None => Err(retry(
            "the relay closed the connection before welcoming this client".into(),
        )),
    }
}

/// Longest claim key taken from a relay's `Welcome` (the relay's are 64 hex characters).
const MAX_CLAIM_KEY: usize = 256;

/// Whether a `Welcome`'s claim key is fit to keep: empty (none given), or printable ASCII
/// without spaces, at most [`MAX_CLAIM_KEY`] long.
fn is_claim_key(key: &str) -> bool {
    key.len() <= MAX_CLAIM_KEY && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Longest tunnel URL taken from a relay's `Welcome`.
const MAX_PUBLIC_URL: usize = 2048;

/// A `Welcome`'s tunnel URL is printed, written to the `listen` record and registered with IllumiChat:
/// it must be an http(s) URL with a host, short, and free of anything a terminal acts on.
/// `Err` says what is wrong, with the URL escaped.
fn check_public_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_PUBLIC_URL {
        return Err(format!("is longer than {MAX_PUBLIC_URL} bytes"));
    }
    let shown = || illumitunnel::escape::escape(url).into_owned();
    if url
        .chars()
        .any(|c| c.is_whitespace() || illumitunnel::escape::is_unsafe(c))
    {
        return Err(format!(
            "holds control or invisible characters ({})",
            shown()
        ));
    }
    let parsed: Option<http::Uri> = url.parse().ok();
    let is_web_url = parsed.as_ref().is_some_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https"))
            && u.authority().is_some_and(|a| !a.host().is_empty())
    });
    if !is_web_url {
        return Err(format!("is not an http(s) URL ({})", shown()));
    }
    Ok(())
}

fn describe_connect_error(err: &std::io::Error, relay: &RelayUrl) -> String {
    match err.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused; check --relay".into(),
        _ if err.to_string().contains("lookup") || err.to_string().contains("resolve") => {
            format!("could not resolve {}; check --relay", relay.host)
        }
        _ => format!("{err}; check --relay"),
    }
}

/// The sentence `listen` exits with when the relay refuses the session.
pub fn refusal_sentence(reason: Refusal, message: &str, config: &SessionConfig) -> String {
    let tunnel = &config.tunnel;
    // The relay's own words: escaped, so they cannot act on the terminal.
    let detail = if message.is_empty() {
        String::new()
    } else {
        format!(" ({})", illumitunnel::escape::escape(message))
    };
    match reason {
        Refusal::Unauthorized => "relay refused the token; run `illumitunnel login` with a token from the relay, or check --token and ILLUMITUNNEL_TOKEN".into(),
        Refusal::TunnelNameInvalid => {
            format!("relay refused the tunnel name {tunnel}{detail}; pass another with --tunnel NAME")
        }
        Refusal::TunnelTaken if config.token.is_some() => format!(
            "tunnel {tunnel} belongs to another token on this relay; pick another name with --tunnel NAME"
        ),
        // Anonymous clients own a tunnel by the claim key its first client was given.
        Refusal::TunnelTaken => format!(
            "tunnel {tunnel} belongs to another client on this relay (this machine does not hold its claim key); pick another name with --tunnel NAME"
        ),
        Refusal::VersionMismatch => format!(
            "relay speaks another protocol version than this client (version {PROTOCOL_VERSION}){detail}; upgrade illumitunnel or the relay"
        ),
    }
}

fn message_name(m: &RelayMessage) -> &'static str {
    match m {
        RelayMessage::Welcome { .. } => "welcome",
        RelayMessage::Refused { .. } => "refused",
        RelayMessage::Request { .. } => "request",
        RelayMessage::RequestChunk { .. } => "request chunk",
        RelayMessage::Cancel { .. } => "cancel",
        RelayMessage::DeadLettered { .. } => "dead letter",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use illumitunnel::TunnelName;

    #[test]
    fn refusals_say_what_to_do() {
        let config = |token: Option<&str>| SessionConfig {
            relay: RelayUrl::loopback(false, 1),
            token: token.map(illumitunnel::Token::new),
            tunnel: TunnelName::parse("my-app").unwrap(),
            tls: tls::client_config(tls::Trust::Insecure).unwrap(),
            keepalive: std::time::Duration::from_secs(30),
            max_body: 1024,
            claim_key: String::new(),
            observer: false,
        };
        let (tokenless, with_token) = (config(None), config(Some("alpha")));
        assert_eq!(
            refusal_sentence(Refusal::Unauthorized, "bad", &with_token),
            "relay refused the token; run `illumitunnel login` with a token from the relay, or check --token and ILLUMITUNNEL_TOKEN"
        );
        let taken = refusal_sentence(Refusal::TunnelTaken, "", &with_token);
        assert!(taken.contains("another token") && taken.contains("--tunnel NAME"));
        let taken = refusal_sentence(Refusal::TunnelTaken, "", &tokenless);
        assert!(
            taken.contains("claim key") && taken.contains("--tunnel NAME"),
            "{taken}"
        );
        assert!(refusal_sentence(Refusal::VersionMismatch, "", &tokenless).contains("upgrade"));
        let hostile = refusal_sentence(
            Refusal::VersionMismatch,
            "v9\x1b]0;pwned\x07\u{202e}",
            &tokenless,
        );
        assert!(hostile.contains("(v9^[]0;pwned^G\\u{202e})"), "{hostile}");
    }

    #[test]
    fn a_welcome_url_must_be_a_plain_http_url() {
        for good in [
            "https://relay.example.com/t/my-app",
            "http://127.0.0.1:8080/t/my-app",
            "https://[::1]:8443/base/t/x",
        ] {
            assert_eq!(check_public_url(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            (
                "https://relay.example.com/t/\x1b[2J\x07",
                "control or invisible characters (https://relay.example.com/t/^[[2J^G)",
            ),
            (
                "https://relay.example.com/t/\u{202e}ppa",
                "control or invisible characters (https://relay.example.com/t/\\u{202e}ppa)",
            ),
            (
                "https://relay.example.com/t/a b",
                "control or invisible characters",
            ),
            (
                "javascript:alert(1)",
                "is not an http(s) URL (javascript:alert(1))",
            ),
            ("/t/my-app", "is not an http(s) URL"),
            ("", "is not an http(s) URL"),
        ] {
            let err = check_public_url(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(!err.chars().any(illumitunnel::escape::is_unsafe), "{err:?}");
        }
        assert!(is_claim_key("") && is_claim_key(&"a1".repeat(32)));
        assert!(!is_claim_key("key\nsecond line") && !is_claim_key("\x1b[2J"));
        assert!(!is_claim_key(&"a".repeat(MAX_CLAIM_KEY + 1)));
        let long = format!("https://r.example/{}", "a".repeat(MAX_PUBLIC_URL));
        assert!(check_public_url(&long).unwrap_err().contains("longer than"));
    }
}
