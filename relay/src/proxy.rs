//! Running behind a proxy on purpose: which peers are trusted proxies (`--trusted-proxy`), the
//! sender's real address taken from their `X-Forwarded-For` (the right-to-left walk nginx's
//! realip module and Caddy's `trusted_proxies` do: the right-most entry that is not itself a
//! trusted proxy), and the `X-Forwarded-For` chain sent on to the handler. The PROXY protocol
//! header that carries the address instead (`--proxy-protocol`) is read in [`header`].
//!
//! Whatever a peer outside `--trusted-proxy` writes in `X-Forwarded-For`, `Forwarded` or
//! `X-Real-IP` is never believed: its address is the TCP peer's.

pub mod header;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpStream;
use tracing::debug;

use crate::conn::{ConnectionLimits, ConnectionSlot, SenderSlot};
use crate::error::json_error;
use header::ProxyHeader;

/// One `--trusted-proxy` network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `fd00::/8`, or a plain address (a /32 or /128).
    fn from_str(s: &str) -> Result<Self, String> {
        let wrong = || {
            format!(
                "{s:?} is not an address or network; use e.g. 127.0.0.1, 10.0.0.0/8 or fd00::/8"
            )
        };
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s.trim(), None),
        };
        let network = IpAddr::from_str(addr).map_err(|_| wrong())?.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(wrong)?,
            Some(_) => return Err(wrong()),
        };
        Ok(Cidr { network, prefix })
    }
}

/// The `--trusted-proxy` networks; empty: no peer is trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Trusts the peers inside `networks`.
    pub fn new(networks: Vec<Cidr>) -> Self {
        TrustedProxies(networks)
    }

    /// Whether no peer is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }
}

/// Where a request came from, as the relay believes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The sender's address: used for per-address limits and logs.
    pub sender: IpAddr,
    /// The peer is a trusted proxy, so `sender` came from its `X-Forwarded-For` and the
    /// proxy's `X-Forwarded-Proto`/`-Host` are kept.
    pub via_trusted_proxy: bool,
    /// The `X-Forwarded-For` value sent on: from the sender through every trusted hop to the
    /// peer, entries left of the sender (which anyone could have written) dropped.
    pub forwarded_for: String,
}

impl Origin {
    /// The origin of a request from `peer` carrying `headers`.
    pub fn of(headers: &HeaderMap, peer: IpAddr, trusted: &TrustedProxies) -> Origin {
        let peer = peer.to_canonical();
        if !trusted.contains(peer) {
            return Origin {
                sender: peer,
                via_trusted_proxy: false,
                forwarded_for: peer.to_string(),
            };
        }
        let entries = chain(headers);
        let (sender, from) = walk(&entries, peer, trusted);
        let mut forwarded_for: Vec<String> = entries[from..]
            .iter()
            .filter_map(|entry| parse_entry(entry))
            .map(|ip| ip.to_string())
            .collect();
        forwarded_for.push(peer.to_string());
        Origin {
            sender,
            via_trusted_proxy: true,
            forwarded_for: forwarded_for.join(", "),
        }
    }
}

/// Every `X-Forwarded-For` entry in order, across repeated header lines; an entry that is not
/// UTF-8 stays in place as one that is not an address (so it stops the walk where it stands).
fn chain(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .map(|entry| std::str::from_utf8(entry.trim_ascii()).unwrap_or("?"))
        .filter(|entry| !entry.is_empty())
        .collect()
}

/// The right-to-left walk: skip entries that are trusted proxies; the first one that is not is
/// the sender. Returns the sender and the index its entry starts the chain sent on from. An
/// entry that is not an address stops the walk: the last trusted hop (or the peer) is the
/// sender, since nothing left of it can be believed.
fn walk(entries: &[&str], peer: IpAddr, trusted: &TrustedProxies) -> (IpAddr, usize) {
    let mut sender = (peer, entries.len());
    for (index, entry) in entries.iter().enumerate().rev() {
        let Some(ip) = parse_entry(entry) else {
            break;
        };
        sender = (ip, index);
        if !trusted.contains(ip) {
            break;
        }
    }
    sender
}

/// An `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:80`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = IpAddr::from_str(entry) {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = SocketAddr::from_str(entry) {
        return Some(addr.ip().to_canonical());
    }
    let bracketed = entry.strip_prefix('[')?.strip_suffix(']')?;
    Ipv6Addr::from_str(bracketed)
        .ok()
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

/// Whether a header names where a request came from: `Forwarded`, `X-Forwarded-*`, `X-Real-IP`.
/// From a peer outside `--trusted-proxy` the relay drops every one of them.
pub fn is_origin_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("forwarded")
        || name.eq_ignore_ascii_case("x-real-ip")
        || name
            .get(..12)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("x-forwarded-"))
}

/// Admits a connection from `peer` at accept, or `None` to close it. A trusted proxy's
/// connection carries many senders: it counts only toward the total, and its senders are counted
/// by their real address once known (PROXY header, or each request's `X-Forwarded-For`). With
/// `--proxy-protocol` a peer outside `--trusted-proxy` is closed.
pub(crate) fn admit(
    limits: &Arc<ConnectionLimits>,
    trusted: &TrustedProxies,
    proxy_protocol: bool,
    peer: SocketAddr,
) -> Option<ConnectionSlot> {
    let slot = match (trusted.contains(peer.ip()), proxy_protocol) {
        (true, _) => limits.admit_proxy(),
        (false, false) => limits.admit(peer.ip()),
        (false, true) => {
            debug!(%peer, "not a --trusted-proxy peer with --proxy-protocol; closing");
            return None;
        }
    };
    if slot.is_none() {
        debug!(%peer, "connection limit reached; closing at accept");
    }
    slot
}

/// Reads a trusted proxy's PROXY header from `stream` (within `within`, the first-request
/// timeout) and counts the sender it names; `None` closes the connection: no valid header, or
/// the sender is at its per-address limit. A `LOCAL`/`UNKNOWN` header keeps the proxy as `peer`.
pub(crate) async fn read_sender(
    stream: &mut TcpStream,
    peer: SocketAddr,
    limits: &Arc<ConnectionLimits>,
    within: Duration,
) -> Option<(SocketAddr, Option<SenderSlot>)> {
    let source = match tokio::time::timeout(within, header::read(stream)).await {
        Ok(Ok(ProxyHeader::Proxied { source, .. })) => source,
        Ok(Ok(ProxyHeader::Local)) => return Some((peer, None)),
        Ok(Err(err)) => {
            debug!(%err, "closing a connection from a trusted proxy");
            return None;
        }
        Err(_) => {
            debug!("no PROXY header within the first-request timeout; closing");
            return None;
        }
    };
    match limits.admit_sender(source.ip()) {
        Some(slot) => Some((source, Some(slot))),
        None => {
            debug!(sender = %source, "per-address connection limit reached; closing");
            None
        }
    }
}

/// `Retry-After` on a 429 for a sender at its per-address limit, in seconds.
const RETRY_AFTER_SECS: &str = "5";

/// The answer to a request behind a trusted proxy whose sender already has
/// `--max-connections-per-ip` requests in flight: 429 JSON with `Retry-After` (a proxy would
/// turn a closed connection into its own 502, which says nothing).
pub fn too_many_from(sender: IpAddr) -> Response<Full<Bytes>> {
    let mut response = json_error(
        StatusCode::TOO_MANY_REQUESTS,
        &format!("too many requests in flight from {sender} (--max-connections-per-ip); wait for the answers before sending more"),
    );
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    response
}

#[cfg(test)]
mod tests;
