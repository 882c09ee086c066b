//! Idle and slow sockets held against the relay's ingress: connections that send nothing, stop
//! in the middle of a request line or an HTTP/2 preface, or finish TLS and go silent. They are
//! opened from this process, then only held (never read or written again) while the latency
//! the relay still gives `/healthz` and a tunnel is measured; afterwards each is checked for
//! whether the relay closed it.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

/// Longest one socket may take to connect (and finish TLS).
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// Most reads spent draining what the relay sent to one socket before judging it.
const MAX_DRAIN_READS: usize = 16;

/// What a held socket does after connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowKind {
    /// Connects and sends nothing (on a TLS listener: no ClientHello).
    Silent,
    /// Sends the start of an HTTP/1.1 request line.
    PartialRequestLine,
    /// Sends the first half of the HTTP/2 connection preface.
    PartialPreface,
    /// Sends the whole HTTP/2 preface, then no SETTINGS frame.
    FullPreface,
    /// Finishes the TLS handshake, then sends nothing.
    TlsSilent,
    /// Finishes TLS, then sends the start of a request line inside it.
    TlsPartialRequestLine,
    /// Finishes TLS, then sends half of the HTTP/2 preface inside it.
    TlsPartialPreface,
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A request line cut before its version ends.
const PARTIAL_LINE: &[u8] = b"POST /t/bench-slow/webhooks HTT";

impl SlowKind {
    /// The mix held against a plain-HTTP relay.
    pub const PLAIN: [SlowKind; 4] = [
        SlowKind::Silent,
        SlowKind::PartialRequestLine,
        SlowKind::PartialPreface,
        SlowKind::FullPreface,
    ];
    /// The mix held against a TLS relay.
    pub const TLS: [SlowKind; 4] = [
        SlowKind::Silent,
        SlowKind::TlsSilent,
        SlowKind::TlsPartialRequestLine,
        SlowKind::TlsPartialPreface,
    ];

    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            SlowKind::Silent => "silent",
            SlowKind::PartialRequestLine => "partial request line",
            SlowKind::PartialPreface => "partial h2 preface",
            SlowKind::FullPreface => "h2 preface, no SETTINGS",
            SlowKind::TlsSilent => "TLS done, silent",
            SlowKind::TlsPartialRequestLine => "TLS + partial request line",
            SlowKind::TlsPartialPreface => "TLS + partial h2 preface",
        }
    }

    fn needs_tls(self) -> bool {
        matches!(
            self,
            SlowKind::TlsSilent | SlowKind::TlsPartialRequestLine | SlowKind::TlsPartialPreface
        )
    }

    fn bytes(self) -> &'static [u8] {
        match self {
            SlowKind::Silent | SlowKind::TlsSilent => b"",
            SlowKind::PartialRequestLine | SlowKind::TlsPartialRequestLine => PARTIAL_LINE,
            SlowKind::PartialPreface | SlowKind::TlsPartialPreface => &PREFACE[..12],
            SlowKind::FullPreface => PREFACE,
        }
    }
}

/// Sockets held open until this is dropped.
pub struct HeldSockets {
    held: Vec<(SlowKind, std::net::TcpStream)>,
    /// Sockets that could not be opened, and the first reason.
    pub failed: usize,
    /// First failure, for the report.
    pub first_error: Option<String>,
}

impl HeldSockets {
    /// Sockets held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// For each kind: sockets held, and how many of them the relay has closed by now.
    pub fn closed_by_relay(&mut self) -> Vec<(SlowKind, usize, usize)> {
        let mut out: Vec<(SlowKind, usize, usize)> = Vec::new();
        for (kind, sock) in &mut self.held {
            let closed = is_closed(sock);
            match out.iter_mut().find(|(k, _, _)| k == kind) {
                Some(row) => {
                    row.1 += 1;
                    row.2 += usize::from(closed);
                }
                None => out.push((*kind, 1, usize::from(closed))),
            }
        }
        out
    }
}

/// Whether the peer closed `sock`: reads (non-blocking) past whatever the relay sent (a TLS
/// session ticket, a 408) until end of stream, a reset, or nothing more to read.
fn is_closed(sock: &mut std::net::TcpStream) -> bool {
    if sock.set_nonblocking(true).is_err() {
        return true;
    }
    let mut buf = [0u8; 4096];
    for _ in 0..MAX_DRAIN_READS {
        match sock.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    false
}

/// Opens `n` sockets to `addr`, cycling through `kinds`, `parallel` at a time; `tls` is
/// needed for the kinds that finish a handshake.
pub async fn open(
    addr: SocketAddr,
    tls: Option<TlsConnector>,
    kinds: &[SlowKind],
    n: usize,
    parallel: usize,
) -> HeldSockets {
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let kind = kinds[i % kinds.len().max(1)];
        let gate = gate.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let opened = tokio::time::timeout(OPEN_TIMEOUT, open_one(addr, tls, kind)).await;
            match opened {
                Ok(Ok(sock)) => Ok((kind, sock)),
                Ok(Err(err)) => Err(format!("{}: {err:#}", kind.label())),
                Err(_) => Err(format!(
                    "{}: not open within {OPEN_TIMEOUT:?}",
                    kind.label()
                )),
            }
        });
    }
    let mut held = HeldSockets {
        held: Vec::with_capacity(n),
        failed: 0,
        first_error: None,
    };
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(sock)) => held.held.push(sock),
            Ok(Err(err)) => {
                held.failed += 1;
                held.first_error.get_or_insert(err);
            }
            Err(err) => {
                held.failed += 1;
                held.first_error.get_or_insert(err.to_string());
            }
        }
    }
    held
}

async fn open_one(
    addr: SocketAddr,
    tls: Option<TlsConnector>,
    kind: SlowKind,
) -> Result<std::net::TcpStream> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .context("could not connect")?;
    if kind.needs_tls() {
        let tls = tls.context("a TLS kind against a relay without TLS")?;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let mut stream = tls
            .connect(name, tcp)
            .await
            .context("TLS handshake failed")?;
        stream.write_all(kind.bytes()).await?;
        stream.flush().await?;
        // Keep the TCP socket; dropping the TLS state sends nothing (no close_notify).
        let (inner, _) = stream.into_inner();
        tcp = inner;
    } else {
        tcp.write_all(kind.bytes()).await?;
    }
    Ok(tcp.into_std()?)
}
