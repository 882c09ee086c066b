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
        Connector {
            direct,
            proxies: Some(std::sync::Arc::new(Matcher::from_env())),
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
}
