//! The client's session with the relay: connect (TCP, TLS, websocket upgrade, `Hello` →
//! `Welcome`), serve deliveries until the connection drops, and reconnect with
//! [`Backoff`](crate::backoff::Backoff) until shutdown.
//!
//! # Layout
//! - `relay_url` — the validated `--relay` URL.
//! - `connect` — one connection attempt, each step bounded, failures as sentences.
//! - `link` — a connection's reader and writer halves; chunked bodies reassembled, bounded.
//! - `delivery` — forward, answer, record: live deliveries concurrently, redeliveries (and live
//!   deliveries behind them) in order; the messages queued for the relay.
//! - `tls` — which relay certificates are trusted.

mod config;
mod connect;
mod delivery;
mod link;
mod relay_url;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff;
use crate::forward::Forwarder;
use crate::recorder::RecorderHandle;
use crate::status::{ConnectionState, ListenEvent};

pub use config::{SessionConfig, HANDSHAKE_TIMEOUT, OUTBOUND_QUEUE};
use connect::{connect, ConnectError};
use delivery::Deliveries;
pub use relay_url::RelayUrl;

/// What a `Welcome` tells whoever keeps state across runs.
pub struct Welcomed<'a> {
    /// The tunnel's public URL.
    pub public_url: &'a str,
    /// The key that re-joins the tunnel; empty when the relay gives none.
    pub claim_key: &'a str,
}

/// Called on each `Welcome`, before the screen hears of the connection, so whatever another
/// command needs (the `listen` record) exists before the banner, and the claim key is kept.
pub type OnWelcome = Box<dyn FnMut(&Welcomed<'_>) + Send>;

/// Everything a running session works with.
pub struct Session {
    /// Where and who.
    pub config: Arc<SessionConfig>,
    /// Sends deliveries to the local server.
    pub forwarder: Forwarder,
    /// Capture store writer.
    pub recorder: RecorderHandle,
    /// The screen's channel.
    pub screen: mpsc::Sender<ListenEvent>,
    /// Set to the tunnel's public URL on each `Welcome`.
    pub public_url: watch::Sender<Option<String>>,
    /// Runs on each `Welcome`, before the screen hears of it.
    pub on_welcome: OnWelcome,
    /// Once shutdown has begun, stops waiting for deliveries still being forwarded: they are
    /// left unrecorded to the relay, which sends them again.
    pub abandon: CancellationToken,
}

/// Runs the session until `shutdown`, reconnecting after every drop. Returns an error only
/// when the relay refuses the session or its certificate cannot be trusted.
pub async fn run(mut session: Session, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut backoff = backoff::with_thread_rng();
    // Survives reconnects: answers queued while the link was down go out on the next one.
    let (outbound_tx, mut outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let deliveries = Deliveries::new(
        session.forwarder.clone(),
        session.recorder.clone(),
        session.config.tunnel.to_string(),
        outbound_tx,
        session.screen.clone(),
    );
    let mut claim_key = session.config.claim_key.clone();
    show(&session.screen, ConnectionState::Connecting).await;
    let mut generation = 0u64;
    let result = loop {
        let attempt = tokio::select! {
            attempt = connect(&session.config, &claim_key) => attempt,
            _ = shutdown.cancelled() => break Ok(()),
        };
        let cause = match attempt {
            Ok((ws, welcome)) => {
                generation += 1;
                if !welcome.claim_key.is_empty() {
                    claim_key = welcome.claim_key.clone();
                }
                (session.on_welcome)(&Welcomed {
                    public_url: &welcome.public_url,
                    claim_key: &welcome.claim_key,
                });
                session.public_url.send_replace(Some(welcome.public_url));
                show(
                    &session.screen,
                    ConnectionState::Connected {
                        queued: welcome.queued,
                        expired: welcome.expired,
                        dead_letters: welcome.dead_letters,
                    },
                )
                .await;
                let started = Instant::now();
                let cause = link::serve(
                    ws,
                    deliveries.connection(generation),
                    &mut outbound_rx,
                    session.config.keepalive,
                    session.config.max_body,
                    &shutdown,
                )
                .await;
                if shutdown.is_cancelled() {
                    break Ok(());
                }
                backoff.connection_lasted(started.elapsed());
                // A connection that was up is retried within one keepalive interval (a laptop
                // waking from sleep), with jitter so a restarted relay is not hit all at once.
                let delay = backoff.after_drop(session.config.keepalive);
                tracing::debug!(%cause, ?delay, "reconnecting");
                if !wait_to_reconnect(&session.screen, delay, cause, &shutdown).await {
                    break Ok(());
                }
                continue;
            }
            Err(ConnectError::Fatal(sentence)) => {
                show(&session.screen, ConnectionState::Refused(sentence.clone())).await;
                break Err(anyhow::anyhow!(sentence));
            }
            Err(ConnectError::Retry(cause)) => cause,
        };
        let delay = backoff.next_delay();
        tracing::debug!(%cause, ?delay, "reconnecting");
        if !wait_to_reconnect(&session.screen, delay, cause, &shutdown).await {
            break Ok(());
        }
    };
    deliveries.drain_until(&session.abandon).await;
    result
}

/// One connection attempt and a clean goodbye, for `login`: the public URL the relay gives the
/// tunnel, or the sentence why not (a refused token, an unreachable relay, an untrusted
/// certificate), retryable or not.
pub async fn check(config: &SessionConfig) -> Result<String, String> {
    match connect(config, &config.claim_key).await {
        Ok((mut ws, welcome)) => {
            let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, ws.close(None)).await;
            Ok(welcome.public_url)
        }
        Err(ConnectError::Fatal(sentence) | ConnectError::Retry(sentence)) => Err(sentence),
    }
}

/// Shows the reconnect and waits `delay`; `false` when shutdown came first.
async fn wait_to_reconnect(
    screen: &mpsc::Sender<ListenEvent>,
    delay: Duration,
    cause: String,
    shutdown: &CancellationToken,
) -> bool {
    show(
        screen,
        ConnectionState::Reconnecting {
            in_secs: delay.as_secs_f64(),
            cause,
        },
    )
    .await;
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.cancelled() => false,
    }
}

async fn show(screen: &mpsc::Sender<ListenEvent>, state: ConnectionState) {
    let _ = screen.send(ListenEvent::Connection(state)).await;
}

#[cfg(test)]
mod tests;
