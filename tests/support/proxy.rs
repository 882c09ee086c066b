//! A small TCP proxy for the tests that put the relay behind one: it accepts on `127.0.0.1:0`,
//! optionally writes a PROXY protocol header naming a sender (as HAProxy or AWS NLB would),
//! then pipes bytes both ways. Every connection the relay sees through it comes from
//! 127.0.0.1, the proxy's address; an HTTP-aware proxy's `X-Forwarded-For` is played by the
//! sender's own request header.

use std::net::{IpAddr, SocketAddr};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::{JoinHandle, JoinSet};

/// What the proxy writes before the sender's bytes.
#[derive(Debug, Clone, Copy)]
pub enum Header {
    /// Nothing: a plain TCP proxy.
    None,
    /// A PROXY protocol v1 text line naming this sender.
    V1(SocketAddr),
    /// A PROXY protocol v2 binary header naming this sender.
    V2(SocketAddr),
}

impl Header {
    /// The header bytes for a connection to `destination`.
    pub fn bytes(&self, destination: SocketAddr) -> Vec<u8> {
        match *self {
            Header::None => Vec::new(),
            Header::V1(source) => {
                let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
                let dst = match (source.ip(), destination.ip()) {
                    (IpAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
                    (_, ip) => ip,
                };
                format!(
                    "PROXY {family} {} {dst} {} {}\r\n",
                    source.ip(),
                    source.port(),
                    destination.port()
                )
                .into_bytes()
            }
            Header::V2(source) => {
                let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
                out.push(0x21); // version 2, PROXY
                let mut body = Vec::new();
                match (source.ip(), destination.ip()) {
                    (IpAddr::V4(src), IpAddr::V4(dst)) => {
                        out.push(0x11);
                        body.extend_from_slice(&src.octets());
                        body.extend_from_slice(&dst.octets());
                    }
                    (src, dst) => {
                        let v6 = |ip: IpAddr| match ip {
                            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                            IpAddr::V6(v6) => v6,
                        };
                        out.push(0x21);
                        body.extend_from_slice(&v6(src).octets());
                        body.extend_from_slice(&v6(dst).octets());
                    }
                }
                body.extend_from_slice(&source.port().to_be_bytes());
                body.extend_from_slice(&destination.port().to_be_bytes());
                out.extend_from_slice(&(body.len() as u16).to_be_bytes());
                out.extend_from_slice(&body);
                out
            }
        }
    }
}

/// A running proxy in front of `upstream`; dropping it closes every connection it carries.
pub struct TcpProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy on `rt` that opens each connection to `upstream` with `header`.
    pub fn start(rt: &Runtime, upstream: SocketAddr, header: Header) -> TcpProxy {
        // A backlog above the default 128, so a burst of a few hundred connections is queued,
        // not dropped and retried a second later.
        let listener = rt
            .block_on(async {
                let socket = TcpSocket::new_v4()?;
                socket.bind("127.0.0.1:0".parse().expect("an address"))?;
                socket.listen(1024)
            })
            .expect("bind the proxy on 127.0.0.1:0");
        let addr = listener.local_addr().expect("proxy address");
        let task = rt.spawn(async move {
            // Owned here: aborting the accept loop drops the set, which aborts every pipe.
            let mut pipes = JoinSet::new();
            while let Ok((mut sender, _)) = listener.accept().await {
                pipes.spawn(async move {
                    let Ok(mut relay) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = relay.set_nodelay(true);
                    let prefix = header.bytes(upstream);
                    if relay.write_all(&prefix).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut sender, &mut relay).await;
                });
                while pipes.try_join_next().is_some() {}
            }
        });
        TcpProxy { addr, task }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
