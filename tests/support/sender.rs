//! The webhook sender (IllumiChat's side): one request on a fresh connection, HTTP/1.1 or
//! HTTP/2, plain or TLS, with headers sent exactly in the order and bytes given.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use super::DEADLINE;

/// Which relay certificates the sender accepts over `https://`.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Any certificate (the embedded relay's self-signed one).
    Anything,
    /// Only a certificate with this SHA-256 fingerprint (`AA:BB:…`).
    Fingerprint(String),
    /// Certificates chaining to these roots.
    Roots(Vec<CertificateDer<'static>>),
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    chunks: Vec<Bytes>,
    chunked: bool,
    http2: bool,
    trust: Trust,
}

/// The answer the sender got.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers (names lower-case), raw values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// HTTP version of the answer.
    pub version: http::Version,
}

impl Response {
    /// Every value of header `name`, as text.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// The `error` sentence of a JSON error body.
    pub fn error(&self) -> String {
        let body = self.json();
        body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no \"error\" string in {body}"))
            .to_string()
    }
}

impl Request {
    /// A `POST` to `url`.
    pub fn post(url: &str) -> Request {
        Request::new("POST", url)
    }

    /// A request with `method` to `url`.
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            chunks: Vec::new(),
            chunked: false,
            http2: false,
            trust: Trust::Anything,
        }
    }

    /// Adds a header (repeatable).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Request {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body, sent with a `Content-Length`.
    pub fn body(mut self, body: impl Into<Bytes>) -> Request {
        self.chunks = vec![body.into()];
        self
    }

    /// Sets the body, sent with `Transfer-Encoding: chunked` in these chunks.
    pub fn chunked(mut self, chunks: Vec<Bytes>) -> Request {
        self.chunks = chunks;
        self.chunked = true;
        self
    }

    /// Speaks HTTP/2 (negotiated by ALPN over TLS).
    pub fn http2(mut self) -> Request {
        self.http2 = true;
        self
    }

    /// Sets which certificates are accepted.
    pub fn trust(mut self, trust: Trust) -> Request {
        self.trust = trust;
        self
    }

    /// Sends on `rt` and waits for the whole answer.
    pub fn send(self, rt: &Runtime) -> Response {
        rt.block_on(self.send_async())
    }

    /// Sends and waits for the whole answer, bounded by [`DEADLINE`].
    pub async fn send_async(self) -> Response {
        let url = self.url.clone();
        match tokio::time::timeout(DEADLINE, self.exchange()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => panic!("sending to {url} failed: {e}"),
            Err(_) => panic!("no answer from {url} within {DEADLINE:?}"),
        }
    }

    /// Sends and waits for the whole answer; a refused or reset connection, or no answer
    /// within [`DEADLINE`], is an `Err` (a sender that got no answer), not a panic.
    pub async fn try_send(self) -> Result<Response, String> {
        match tokio::time::timeout(DEADLINE, self.exchange()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {DEADLINE:?}")),
        }
    }

    async fn exchange(self) -> Result<Response, Box<dyn std::error::Error + Send + Sync>> {
        let uri: http::Uri = self.url.parse()?;
        let https = uri.scheme_str() == Some("https");
        let authority = uri.authority().ok_or("URL has no host")?.clone();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        if https {
            let config = client_config(&self.trust, self.http2)?;
            let name = ServerName::try_from(host)?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await?;
            self.over(TokioIo::new(tls), &uri, &authority).await
        } else {
            self.over(TokioIo::new(tcp), &uri, &authority).await
        }
    }

    async fn over<T>(
        self,
        io: T,
        uri: &http::Uri,
        authority: &http::uri::Authority,
    ) -> Result<Response, Box<dyn std::error::Error + Send + Sync>>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut builder = http::Request::builder().method(self.method.as_str());
        builder = if self.http2 {
            builder.uri(uri.clone())
        } else {
            builder
                .uri(path)
                .header(http::header::HOST, authority.as_str())
        };
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_slice());
        }
        let body = SendBody::new(self.chunks, self.chunked);
        let request = builder.body(body)?;
        let response = if self.http2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            sender.send_request(request).await?
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            sender.send_request(request).await?
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes().to_vec();
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                .collect(),
            body,
            version: parts.version,
        })
    }
}

/// A request body from ready chunks; with `chunked` its length is not announced.
struct SendBody {
    chunks: VecDeque<Bytes>,
    chunked: bool,
}

impl SendBody {
    fn new(chunks: Vec<Bytes>, chunked: bool) -> SendBody {
        SendBody {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
            chunked,
        }
    }
}

impl hyper::body::Body for SendBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        !self.chunked && self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.chunked {
            SizeHint::default()
        } else {
            SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(
    trust: &Trust,
    http2: bool,
) -> Result<rustls::ClientConfig, Box<dyn std::error::Error + Send + Sync>> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let mut config = match trust {
        Trust::Roots(roots) => {
            let mut store = RootCertStore::empty();
            for root in roots {
                store.add(root.clone())?;
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
        Trust::Anything => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                fingerprint: None,
                provider: provider(),
            }))
            .with_no_client_auth(),
        Trust::Fingerprint(fp) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                fingerprint: Some(fp.clone()),
                provider: provider(),
            }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// SHA-256 of `der` as colon-separated upper-case hex, the way the relay prints it.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Accepts any certificate, or only the one with `fingerprint`; signatures are still checked.
#[derive(Debug)]
struct Pinned {
    fingerprint: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.fingerprint {
            Some(expected) if !fingerprint(end_entity).eq_ignore_ascii_case(expected) => {
                Err(rustls::Error::General(format!(
                    "certificate fingerprint {} is not the printed {expected}",
                    fingerprint(end_entity)
                )))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
