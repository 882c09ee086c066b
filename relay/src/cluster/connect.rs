//! How a node (or `token … --cluster`) reaches NATS: the servers of `--cluster`, the login
//! (`user:pass@` or a token in the URL, `--cluster-creds`, `--cluster-nkey`) and TLS
//! (`tls://` URLs, `--cluster-ca`, `--cluster-cert`/`--cluster-key`). Secrets live in
//! [`Secret`]s, whose Debug prints `MASKED`; the servers are kept without the credentials their
//! URLs carried, so whatever prints a [`NatsLink`] prints no password. A refusal by NATS at
//! start becomes one sentence naming the flag to check.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{ConnectErrorKind, Event};

use crate::config::{Login, NatsLink};

/// Longest a node waits for NATS when it starts.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The cluster could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// NATS did not answer.
    #[error("could not reach NATS at {servers}: {cause}; start nats-server with JetStream (-js) or fix --cluster")]
    Unreachable {
        /// The servers tried.
        servers: String,
        /// What failed.
        cause: String,
    },
    /// NATS refused the login.
    #[error("NATS at {servers} refused the credentials: {cause}; check {flag}")]
    Refused {
        /// The servers tried (without credentials).
        servers: String,
        /// What NATS said.
        cause: String,
        /// Where the credentials came from.
        flag: &'static str,
    },
    /// TLS to NATS failed (an untrusted certificate, or a server without TLS).
    #[error("could not set up TLS to NATS at {servers}: {cause}; check that --cluster-ca is the CA that signed the NATS server's certificate (for the host in the URL), that the server has TLS on, and --cluster-cert/--cluster-key if it asks for a client certificate")]
    Tls {
        /// The servers tried (without credentials).
        servers: String,
        /// What failed.
        cause: String,
    },
    /// JetStream refused to set up a bucket or stream.
    #[error("could not set up JetStream {what}: {cause}; is JetStream enabled (nats-server -js), and may this NATS user use the relay's buckets and streams (permissions in docs/cluster.md)?")]
    Setup {
        /// The bucket or stream.
        what: &'static str,
        /// What failed.
        cause: String,
    },
}

/// What NATS last refused (a permissions violation), for the sentence when set-up fails.
#[derive(Clone, Default)]
pub struct LastRefusal(Arc<Mutex<Option<String>>>);

impl LastRefusal {
    /// The last refusal NATS reported, if any.
    pub fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set(&self, text: String) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(text);
    }
}

/// Connects to `link`'s servers as `name`, with replies on `inbox` (`_INBOX.{node}` for a
/// node, so its NATS user may read its own replies only). Waits up to [`CONNECT_TIMEOUT`].
pub async fn connect(
    link: &NatsLink,
    name: String,
    inbox: Option<String>,
) -> Result<(async_nats::Client, LastRefusal), ClusterError> {
    let servers = link.servers_text();
    let unreachable = |cause: String| ClusterError::Unreachable {
        servers: servers.clone(),
        cause,
    };
    let addrs = link
        .servers
        .iter()
        .map(|s| s.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreachable(e.to_string()))?;
    let refusal = LastRefusal::default();
    let mut options = login(async_nats::ConnectOptions::new(), &link.login)
        .map_err(|cause| ClusterError::Refused {
            servers: servers.clone(),
            cause,
            flag: link.login.flag(),
        })?
        .name(name)
        .connection_timeout(CONNECT_TIMEOUT)
        .event_callback({
            let refusal = refusal.clone();
            move |event| on_event(refusal.clone(), event)
        })
        // Reconnects go on for ever, a few seconds apart at most.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts as u64).min(2_000))
        });
    if let Some(inbox) = inbox {
        options = options.custom_inbox_prefix(inbox);
    }
    if link.tls.required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &link.tls.ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &link.tls.client {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, options.connect(addrs))
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))?;
    match connected {
        Ok(client) => Ok((client, refusal)),
        Err(err) => Err(match err.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                ClusterError::Refused {
                    servers,
                    // The kind says it all; its source repeats it with a prefix.
                    cause: err.kind().to_string(),
                    flag: link.login.flag(),
                }
            }
            _ if is_tls(&err) => ClusterError::Tls {
                servers,
                cause: err.to_string(),
            },
            _ => unreachable(err.to_string()),
        }),
    }
}

/// Whether a failure came from TLS (the client reports an untrusted certificate as I/O).
fn is_tls(err: &async_nats::ConnectError) -> bool {
    if err.kind() == ConnectErrorKind::Tls {
        return true;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    // Bounded by the chain's length.
    while let Some(cause) = next {
        if cause.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            let inner = io
                .get_ref()
                .map(|e| e as &(dyn std::error::Error + 'static));
            if inner.is_some_and(|e| e.downcast_ref::<rustls::Error>().is_some()) {
                return true;
            }
        }
        next = cause.source();
    }
    false
}

fn login(
    options: async_nats::ConnectOptions,
    login: &Login,
) -> Result<async_nats::ConnectOptions, String> {
    Ok(match login {
        Login::Anonymous => options,
        Login::Password { user, password } => {
            options.user_and_password(user.clone(), password.expose().to_owned())
        }
        Login::Token(token) => options.token(token.expose().to_owned()),
        Login::Nkey(seed) => options.nkey(seed.expose().trim().to_owned()),
        // The parser's message names no secret.
        Login::Creds(text) => options
            .credentials(text.expose())
            .map_err(|e| format!("not a NATS credentials file ({e})"))?,
    })
}

/// Logs what NATS refuses while the node runs (a permissions violation names the subject) and
/// keeps the last refusal for the set-up sentence.
async fn on_event(refusal: LastRefusal, event: Event) {
    match event {
        Event::ServerError(err) => {
            let text = err.to_string();
            tracing::warn!(error = %text, "NATS refused an operation; check this node's NATS permissions (docs/cluster.md)");
            refusal.set(text);
        }
        Event::Disconnected => tracing::warn!("lost the connection to NATS; reconnecting"),
        Event::Connected => tracing::info!("connected to NATS"),
        other => tracing::debug!(event = %other, "NATS connection event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NatsTls, Secret};

    #[test]
    fn debug_output_masks_every_secret() {
        let link = NatsLink {
            servers: vec!["nats://h:4222".into()],
            login: Login::Password {
                user: "relay-a".into(),
                password: Secret::new("hunter2-password"),
            },
            tls: NatsTls::default(),
        };
        let text = format!("{link:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("MASKED"), "{text}");
        for login in [
            Login::Token(Secret::new("tok-secret")),
            Login::Nkey(Secret::new("SUAseedsecret")),
            Login::Creds(Secret::new("-----BEGIN NATS USER JWT----- secret")),
        ] {
            let text = format!("{login:?} {}", login.describe());
            assert!(!text.contains("secret"), "{text}");
        }
    }
}
