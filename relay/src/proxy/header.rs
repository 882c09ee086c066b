//! The PROXY protocol header (HAProxy's specification, versions 1 and 2) that a proxy in TCP
//! mode (HAProxy, AWS NLB) writes at the start of a connection, before TLS: who the sender is.
//! [`parse`] is pure and says how many more bytes it needs; [`read`] reads exactly the header
//! from a stream (never a byte of what follows), so TLS or HTTP starts right after it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest version 1 line, `\r\n` included (the specification's limit).
pub const V1_MAX: usize = 107;
/// The 12 bytes that open a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 2 header accepted (16 fixed bytes, addresses and TLVs): room for what
/// HAProxy and AWS NLB send, far below the 64 KiB the length field could claim.
pub const V2_MAX: usize = 16 + 2048;
/// The shortest header of either version (`PROXY UNKNOWN\r\n`): read before deciding.
const MIN_HEADER: usize = 15;
const V1_PREFIX: &[u8] = b"PROXY ";

/// What a PROXY header says about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A sender's connection relayed by the proxy.
    Proxied {
        /// The sender.
        source: SocketAddr,
        /// The address the sender connected to.
        destination: SocketAddr,
    },
    /// The proxy's own connection (v2 `LOCAL`, e.g. a health check) or one whose addresses it
    /// could not tell (v1 `UNKNOWN`, v2 `UNSPEC`/`UNIX`): the TCP peer's address stands.
    Local,
}

/// Why a connection's start is not a usable PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The connection does not start with either version's signature.
    #[error("the connection did not start with a PROXY protocol header")]
    Missing,
    /// A version 1 line with no `\r\n` within 107 bytes.
    #[error("PROXY v1 line longer than {V1_MAX} bytes")]
    TooLong,
    /// A version 1 line that does not follow the specification.
    #[error("malformed PROXY v1 line: {0}")]
    V1(&'static str),
    /// A version 2 header that does not follow the specification.
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
    /// The connection ended or failed before the header was complete.
    #[error("connection closed before the PROXY header was complete")]
    Closed,
}

/// The result of looking at a connection's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The header, and how many bytes it took.
    Complete(ProxyHeader, usize),
    /// Not enough bytes yet: the header is at least this long.
    Incomplete(usize),
}

/// Parses the PROXY header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, HeaderError> {
    let starts = |prefix: &[u8]| {
        let n = buf.len().min(prefix.len());
        buf[..n] == prefix[..n]
    };
    if !starts(V1_PREFIX) && !starts(&V2_SIGNATURE) {
        return Err(HeaderError::Missing);
    }
    if buf.len() < MIN_HEADER {
        return Ok(Parsed::Incomplete(MIN_HEADER));
    }
    if buf.starts_with(&V2_SIGNATURE) {
        parse_v2(buf)
    } else {
        parse_v1(buf)
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, HeaderError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(newline) = window.iter().position(|b| *b == b'\n') else {
        return match buf.len() >= V1_MAX {
            true => Err(HeaderError::TooLong),
            false => Ok(Parsed::Incomplete(buf.len() + 1)),
        };
    };
    let line = window[..newline]
        .strip_suffix(b"\r")
        .ok_or(HeaderError::V1("the line must end with \\r\\n"))?;
    let line = std::str::from_utf8(line).map_err(|_| HeaderError::V1("not ASCII"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let header = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => ProxyHeader::Local,
        ["PROXY", "TCP4", src, dst, sport, dport] => {
            let ip = |s: &str| s.parse::<Ipv4Addr>().map(IpAddr::V4);
            proxied_v1(ip(src), ip(dst), sport, dport)?
        }
        ["PROXY", "TCP6", src, dst, sport, dport] => {
            let ip = |s: &str| s.parse::<Ipv6Addr>().map(IpAddr::V6);
            proxied_v1(ip(src), ip(dst), sport, dport)?
        }
        ["PROXY", "TCP4" | "TCP6", ..] => return Err(HeaderError::V1("expected 6 fields")),
        _ => return Err(HeaderError::V1("unknown protocol")),
    };
    Ok(Parsed::Complete(header, newline + 1))
}

fn proxied_v1<E>(
    source: Result<IpAddr, E>,
    destination: Result<IpAddr, E>,
    sport: &str,
    dport: &str,
) -> Result<ProxyHeader, HeaderError> {
    let port = |s: &str| {
        let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
        digits
            .then(|| s.parse::<u16>().ok())
            .flatten()
            .ok_or(HeaderError::V1("bad port"))
    };
    let (Ok(source), Ok(destination)) = (source, destination) else {
        return Err(HeaderError::V1("bad address for the protocol"));
    };
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(source, port(sport)?),
        destination: SocketAddr::new(destination, port(dport)?),
    })
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, HeaderError> {
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete(16));
    }
    let (version, command, family) = (buf[12] >> 4, buf[12] & 0x0f, buf[13]);
    if version != 2 {
        return Err(HeaderError::V2("version is not 2"));
    }
    let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if total > V2_MAX {
        return Err(HeaderError::V2("longer than the relay accepts"));
    }
    if buf.len() < total {
        return Ok(Parsed::Incomplete(total));
    }
    let body = &buf[16..total];
    let header = match (command, family) {
        (0x0, _) => ProxyHeader::Local,
        (0x1, 0x00 | 0x31 | 0x32) => ProxyHeader::Local,
        (0x1, 0x11) if body.len() >= 12 => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[at],
                    body[at + 1],
                    body[at + 2],
                    body[at + 3],
                ))
            };
            v2_proxied(ip(0), ip(4), &body[8..12])
        }
        (0x1, 0x21) if body.len() >= 36 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            v2_proxied(ip(0), ip(16), &body[32..36])
        }
        (0x1, 0x11 | 0x21) => return Err(HeaderError::V2("address block too short")),
        (0x1, 0x12 | 0x22) => return Err(HeaderError::V2("UDP, not a TCP connection")),
        (0x1, _) => return Err(HeaderError::V2("unknown address family")),
        _ => return Err(HeaderError::V2("unknown command")),
    };
    Ok(Parsed::Complete(header, total))
}

fn v2_proxied(source: IpAddr, destination: IpAddr, ports: &[u8]) -> ProxyHeader {
    ProxyHeader::Proxied {
        source: SocketAddr::new(source, u16::from_be_bytes([ports[0], ports[1]])),
        destination: SocketAddr::new(destination, u16::from_be_bytes([ports[2], ports[3]])),
    }
}

/// Reads exactly one PROXY header from `io`: nothing after it is consumed. Unbounded in time:
/// the caller wraps it in the first-request timeout.
pub async fn read<R: AsyncRead + Unpin>(io: &mut R) -> Result<ProxyHeader, HeaderError> {
    let mut buf = Vec::with_capacity(64);
    loop {
        match parse(&buf)? {
            Parsed::Complete(header, _) => return Ok(header),
            Parsed::Incomplete(need) => {
                let have = buf.len();
                buf.resize(need, 0);
                io.read_exact(&mut buf[have..])
                    .await
                    .map_err(|_| HeaderError::Closed)?;
            }
        }
    }
}

#[cfg(test)]
mod tests;
