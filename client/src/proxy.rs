//! Proxies for the connections that leave the machine — the relay websocket and IllumiChat's
//! API — read from `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (either case), as
//! curl reads them (hyper-util's `Matcher`). A proxy is asked for an HTTP `CONNECT` tunnel
//! (hyper-util's `Tunnel`), and TLS runs inside it, end to end with the relay or API. The
//! local server is never proxied: a proxy cannot reach this machine's localhost.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The proxy the environment names for `dst`, if any; a proxy this client cannot use (socks,
/// https://) is an error sentence.
fn proxy_for(matcher: &Matcher, dst: &Uri) -> Result<Option<Intercept>, String> {
    let Some(proxy) = matcher.intercept(dst) else {
        return Ok(None);
    };
    if proxy.uri().scheme_str() != Some("http") {
        return Err(format!(
            "the proxy {} for {dst} is not an http:// proxy; set HTTPS_PROXY to http://HOST:PORT, or add the host to NO_PROXY",
            proxy.uri()
        ));
    }
    Ok(Some(proxy))
}

/// Opens a `CONNECT` tunnel to `dst` through `proxy` over `direct`.
async fn tunnel(
    proxy: &Intercept,
    direct: HttpConnector,
    dst: Uri,
) -> Result<TokioIo<TcpStream>, String> {
    let mut tunnel = Tunnel::new(proxy.uri().clone(), direct);
    if let Some(auth) = proxy.basic_auth() {
        tunnel = tunnel.with_auth(auth.clone());
    }
    let proxy_uri = proxy.uri().clone();
    let failed = |e: &dyn std::fmt::Display| {
        format!("could not open a tunnel through the proxy {proxy_uri}: {e}; check HTTPS_PROXY and NO_PROXY")
    };
    std::future::poll_fn(|cx| tunnel.poll_ready(cx))
        .await
        .map_err(|e| failed(&e))?;
    tunnel.call(dst).await.map_err(|e| failed(&e))
}

/// A TCP connection to `host:port` for a connection that will speak TLS when `tls` (`wss`) or
/// not (`ws`): direct, or through the proxy the environment names for it. The relay session
/// dials with this.
pub async fn dial(host: &str, port: u16, tls: bool) -> std::io::Result<TcpStream> {
    let scheme = if tls { "https" } else { "http" };
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let dst: Uri = format!("{scheme}://{authority}/")
        .parse()
        .map_err(std::io::Error::other)?;
    match proxy_for(&Matcher::from_env(), &dst).map_err(std::io::Error::other)? {
        None => TcpStream::connect((host, port)).await,
        Some(proxy) => tunnel(&proxy, HttpConnector::new(), dst)
            .await
            .map(TokioIo::into_inner)
            .map_err(std::io::Error::other),
    }
}

/// A hyper connector that sends https requests through the environment's proxy and
/// everything else directly; for IllumiChat's API client.
#[derive(Clone)]
pub struct Connector {
    direct: HttpConnector,
    proxies: Option<std::sync::Arc<Matcher>>,
}

impl Connector {
    /// Every request direct (the local server).
    pub fn direct(direct: HttpConnector) -> Self {
        Connector {
            direct,
            proxies: None,
        }
    }

    /// https requests through the proxies the environment names now.
    pub fn from_env(direct: HttpConnector) -> Self {
        Self::with_matcher(direct, Matcher::from_env())
    }

    fn with_matcher(direct: HttpConnector, matcher: Matcher) -> Self {
        Connector {
            direct,
            proxies: Some(std::sync::Arc::new(matcher)),
        }
    }
}

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let proxy = match &self.proxies {
            // Plain http requests would need absolute-form requests to the proxy; the API is https.
            Some(matcher) if dst.scheme_str() == Some("https") => proxy_for(matcher, &dst),
            _ => Ok(None),
        };
        let mut direct = self.direct.clone();
        Box::pin(async move {
            match proxy? {
                None => direct.call(dst).await.map_err(Into::into),
                Some(proxy) => Ok(tunnel(&proxy, direct, dst).await?),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_and_odd_proxies() {
        let matcher = Matcher::builder()
            .https("http://127.0.0.1:3128")
            .no("relay.internal")
            .build();
        let via = |u: &str| proxy_for(&matcher, &u.parse().unwrap());
        let proxied = via("https://relay.example.com:443/").unwrap().unwrap();
        assert_eq!(proxied.uri().to_string(), "http://127.0.0.1:3128/");
        assert!(via("https://relay.internal:443/").unwrap().is_none());
        assert!(via("http://relay.example.com:80/").unwrap().is_none());

        let socks = Matcher::builder().https("socks5://127.0.0.1:1080").build();
        let err = proxy_for(&socks, &"https://relay.example.com/".parse().unwrap()).unwrap_err();
        assert!(err.contains("not an http:// proxy"), "{err}");
    }

    /// A CONNECT proxy on 127.0.0.1:0 for one tunnel; sends back the request line it got.
    async fn one_tunnel_proxy() -> (u16, tokio::sync::oneshot::Receiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut client, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                if client.read(&mut byte).await.unwrap_or(0) == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let dest = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let _ = tx.send(head.lines().next().unwrap_or_default().to_string());
            let port: u16 = dest
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let mut upstream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            client
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await
                .unwrap();
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
        (port, rx)
    }

    #[tokio::test]
    async fn the_api_connector_tunnels_https_through_the_proxy() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_port = upstream.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut conn, _) = upstream.accept().await.unwrap();
            let _ = conn.write_all(b"hello through the tunnel").await;
        });
        let (proxy_port, request_line) = one_tunnel_proxy().await;
        let matcher = Matcher::builder()
            .https(format!("http://127.0.0.1:{proxy_port}"))
            .build();
        let mut connector = Connector::with_matcher(HttpConnector::new(), matcher);
        let dst: Uri = format!("https://127.0.0.1:{upstream_port}/api/webhooks")
            .parse()
            .unwrap();
        let stream = tokio::time::timeout(std::time::Duration::from_secs(10), connector.call(dst))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            request_line.await.unwrap(),
            format!("CONNECT 127.0.0.1:{upstream_port} HTTP/1.1")
        );
        let mut got = String::new();
        stream.into_inner().read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "hello through the tunnel");
    }
}
