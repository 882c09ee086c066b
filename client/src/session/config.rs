//! What a session is told before it starts: the relay, the token, the tunnel, the trust, and
//! the bounds on its handshakes.

use std::sync::Arc;
use std::time::Duration;

use illumitunnel::{Token, TunnelName};

use super::relay_url::RelayUrl;

/// Bound on TCP connect, TLS and websocket handshakes, and the wait for `Welcome`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages waiting for the writer.
pub const OUTBOUND_QUEUE: usize = 1024;

/// What a session needs to know about the relay and the tunnel.
pub struct SessionConfig {
    /// Relay to connect to.
    pub relay: RelayUrl,
    /// Client token, if the relay needs one.
    pub token: Option<Token>,
    /// Tunnel to claim.
    pub tunnel: TunnelName,
    /// Which relay certificates to trust.
    pub tls: Arc<rustls::ClientConfig>,
    /// Ping interval; the relay is gone after two silent intervals.
    pub keepalive: Duration,
    /// Largest request body the client takes from the relay (`--max-body`).
    pub max_body: usize,
    /// The claim key remembered for this tunnel, if any (anonymous relays).
    pub claim_key: String,
    /// `listen --fan-out`: the relay sends this session copies only, never the push whose
    /// answer goes to the sender, nor the catch-up.
    pub observer: bool,
}
