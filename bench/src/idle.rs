//! Idle clients: many websocket sessions opened the way `illumitunnel listen` opens one
//! (upgrade at [`CONNECT_PATH`], `Hello`, wait for `Welcome`), each on a tunnel of its own,
//! then held open and answering the relay's keepalive pings.
//!
//! One source address reaches one relay port from at most ~28,000 ephemeral ports, so sessions
//! are spread over loopback source addresses (127.0.0.2, 127.0.0.3, …), [`PER_SOURCE`] each.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use illumitunnel::protocol::{ClientMessage, RelayMessage, CONNECT_PATH, PROTOCOL_VERSION};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Longest one session may take to be welcomed.
const HELLO_TIMEOUT: Duration = Duration::from_secs(20);
/// Sessions opened from one loopback source address (fewer than its ephemeral ports).
pub const PER_SOURCE: usize = 20_000;

/// The loopback source address of session `i`.
fn source(i: usize) -> SocketAddr {
    let host = u8::try_from(2 + i / PER_SOURCE).unwrap_or(u8::MAX);
    SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0))
}

/// Sessions held open until this is dropped.
pub struct IdleSessions {
    tasks: JoinSet<()>,
    /// Sessions the relay welcomed.
    pub opened: usize,
    /// Sessions that failed, and the first reason.
    pub failed: usize,
    /// First failure, for the report.
    pub first_error: Option<String>,
}

impl IdleSessions {
    /// Sessions still open now.
    pub fn alive(&self) -> usize {
        self.tasks.len()
    }
}

/// Opens `n` sessions to the relay at `relay`, `parallel` handshakes at a time, tunnels named
/// `{prefix}-{i}`.
pub async fn open(relay: SocketAddr, n: usize, parallel: usize, prefix: &str) -> IdleSessions {
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(n.max(1));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let gate = gate.clone();
        let ready = ready_tx.clone();
        let tunnel = format!("{prefix}-{i:05}");
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await;
            let opened =
                tokio::time::timeout(HELLO_TIMEOUT, handshake(relay, source(i), &tunnel)).await;
            drop(permit);
            let mut ws = match opened {
                Ok(Ok(ws)) => {
                    let _ = ready.send(Ok(())).await;
                    ws
                }
                Ok(Err(err)) => {
                    let _ = ready.send(Err(format!("{err:#}"))).await;
                    return;
                }
                Err(_) => {
                    let _ = ready.send(Err("no welcome within 20 s".into())).await;
                    return;
                }
            };
            drop(ready);
            // reading answers the relay's pings (tungstenite queues the pong and flushes it)
            while let Some(Ok(_)) = ws.next().await {}
        });
    }
    drop(ready_tx);
    let mut sessions = IdleSessions {
        tasks,
        opened: 0,
        failed: 0,
        first_error: None,
    };
    for _ in 0..n {
        match ready_rx.recv().await {
            Some(Ok(())) => sessions.opened += 1,
            Some(Err(err)) => {
                sessions.failed += 1;
                sessions.first_error.get_or_insert(err);
            }
            None => break,
        }
    }
    sessions
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn handshake(relay: SocketAddr, from: SocketAddr, tunnel: &str) -> Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    socket
        .bind(from)
        .with_context(|| format!("could not bind {from}"))?;
    let tcp = socket.connect(relay).await.context("could not connect")?;
    tcp.set_nodelay(true)?;
    // small buffers: this side is not what is measured
    let config = WebSocketConfig {
        write_buffer_size: 0,
        ..WebSocketConfig::default()
    };
    let url = format!("ws://{relay}{CONNECT_PATH}");
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
        .await
        .context("websocket upgrade failed")?;
    let hello = ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        tunnel: tunnel.to_string(),
        claim_key: String::new(),
        observer: false,
    };
    ws.send(Message::Binary(hello.encode())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(buf))) => match RelayMessage::decode(&buf) {
                Ok(RelayMessage::Welcome { .. }) => return Ok(ws),
                Ok(RelayMessage::Refused { message, .. }) => bail!("refused: {message}"),
                Ok(_) => bail!("unexpected first message"),
                Err(err) => bail!("undecodable first message: {err}"),
            },
            Some(Ok(_)) => continue,
            Some(Err(err)) => bail!("websocket error: {err}"),
            None => bail!("closed before the welcome"),
        }
    }
}
