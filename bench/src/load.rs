//! The sender: POSTs a webhook body over HTTP/1.1 (plain or TLS) with a fixed number of
//! concurrent connections for a fixed time, keep-alive or a new connection per webhook, and
//! records every request's latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Most latencies one run keeps (memory bound for long runs).
const MAX_SAMPLES: usize = 4_000_000;
/// A sender gives up after this many failed requests in one run.
const MAX_ERRORS: u64 = 1_000;
/// Longest a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where webhooks are sent.
#[derive(Clone)]
pub struct Endpoint {
    /// TCP address of the receiver.
    pub addr: SocketAddr,
    /// Request path (and query).
    pub path: String,
    /// `POST` (a webhook) or `GET` (e.g. `/healthz`, sent without a body).
    pub method: hyper::Method,
    /// TLS connector for `https` endpoints (certificate not verified: loopback only).
    pub tls: Option<TlsConnector>,
}

impl Endpoint {
    /// A plain-HTTP endpoint.
    pub fn http(addr: SocketAddr, path: &str) -> Self {
        Endpoint {
            addr,
            path: path.to_string(),
            method: hyper::Method::POST,
            tls: None,
        }
    }

    /// The same receiver, asked `GET path` (the body given to [`run`] is not sent).
    pub fn get(&self, path: &str) -> Self {
        Endpoint {
            path: path.to_string(),
            method: hyper::Method::GET,
            ..self.clone()
        }
    }
}

/// What one load run measured.
#[derive(Debug, Default, Clone)]
pub struct Run {
    /// Requests answered 2xx within the window.
    pub ok: u64,
    /// Requests that failed or were answered otherwise.
    pub errors: u64,
    /// First error seen, for the report.
    pub first_error: Option<String>,
    /// Length of the window.
    pub elapsed: Duration,
    /// Latency of each successful request, sorted, in nanoseconds.
    pub latencies_ns: Vec<u64>,
}

impl Run {
    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile latency (0–100) in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * (self.latencies_ns.len() - 1) as f64).round() as usize;
        self.latencies_ns[rank.min(self.latencies_ns.len() - 1)] as f64 / 1e6
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn connect(ep: &Endpoint) -> Result<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(ep.addr)
        .await
        .with_context(|| format!("could not connect to {}", ep.addr))?;
    tcp.set_nodelay(true)?;
    let io: Box<dyn Io> = match &ep.tls {
        None => Box::new(tcp),
        Some(tls) => {
            let name = rustls::pki_types::ServerName::IpAddress(ep.addr.ip().into());
            Box::new(
                tls.connect(name, tcp)
                    .await
                    .context("TLS handshake failed")?,
            )
        }
    };
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP handshake failed")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

fn request(ep: &Endpoint, body: &Bytes, close: bool) -> Result<hyper::Request<Full<Bytes>>> {
    let mut req = hyper::Request::builder()
        .method(ep.method.clone())
        .uri(ep.path.as_str())
        .header("host", ep.addr.to_string())
        .header("user-agent", "IllumiChat-Webhooks/1.0 (illumitunnel-bench)");
    if close {
        req = req.header("connection", "close");
    }
    if ep.method == hyper::Method::GET {
        return Ok(req.body(Full::new(Bytes::new()))?);
    }
    req = req
        .header("content-type", "application/json")
        .header("x-illumichat-event", "ticket.created");
    Ok(req.body(Full::new(body.clone()))?)
}

/// Sends one POST on a new connection and returns the status and body.
pub async fn post_once(ep: &Endpoint, body: &Bytes) -> Result<(u16, Bytes)> {
    let fut = async {
        let mut send = connect(ep).await?;
        let resp = send.send_request(request(ep, body, true)?).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, anyhow::Error>((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .context("no answer within the request timeout")?
}

/// Sends `body` from `conc` concurrent senders for `window`, each waiting for its answer before
/// the next request; with `close` every request opens a new connection (`Connection: close`).
pub async fn run(
    ep: &Endpoint,
    body: &Bytes,
    conc: usize,
    close: bool,
    window: Duration,
) -> Result<Run> {
    let start = Instant::now();
    let deadline = start + window;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let ep = ep.clone();
        let body = body.clone();
        tasks.spawn(
            async move { sender(ep, body, close, deadline, MAX_SAMPLES / conc.max(1)).await },
        );
    }
    let mut total = Run::default();
    while let Some(done) = tasks.join_next().await {
        let one = done.context("a sender task panicked")?;
        total.ok += one.ok;
        total.errors += one.errors;
        if total.first_error.is_none() {
            total.first_error = one.first_error;
        }
        total.latencies_ns.extend(one.latencies_ns);
    }
    total.elapsed = start.elapsed().max(Duration::from_millis(1));
    total.latencies_ns.sort_unstable();
    if total.ok == 0 {
        bail!(
            "no request succeeded against {}: {}",
            ep.addr,
            total.first_error.as_deref().unwrap_or("no answer")
        );
    }
    Ok(total)
}

async fn sender(
    ep: Endpoint,
    body: Bytes,
    close: bool,
    deadline: Instant,
    max_samples: usize,
) -> Run {
    let mut run = Run::default();
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    while Instant::now() < deadline && run.errors < MAX_ERRORS {
        let t0 = Instant::now();
        let attempt = async {
            let mut send = match conn.take() {
                Some(send) => send,
                None => connect(&ep).await?,
            };
            send.ready().await?;
            let resp = send.send_request(request(&ep, &body, close)?).await?;
            let status = resp.status();
            resp.into_body().collect().await?;
            if !status.is_success() {
                bail!("answered {status}");
            }
            Ok::<_, anyhow::Error>(send)
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
            Ok(Ok(send)) => {
                let took = t0.elapsed();
                run.ok += 1;
                if run.latencies_ns.len() < max_samples {
                    run.latencies_ns.push(took.as_nanos() as u64);
                }
                if !close {
                    conn = Some(send);
                }
            }
            Ok(Err(err)) => {
                run.errors += 1;
                run.first_error.get_or_insert_with(|| format!("{err:#}"));
            }
            Err(_) => {
                run.errors += 1;
                run.first_error
                    .get_or_insert_with(|| "request timed out".into());
            }
        }
    }
    run
}

/// A TLS connector that accepts any certificate, for the relay's `--self-signed` on loopback.
/// Session resumption stays on (rustls's default in-memory cache), as a real sender's would.
pub fn insecure_tls() -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider.clone())))
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| {
            // the ring provider supports the default protocol versions; this is not reached
            rustls::ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth()
        });
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Sends `count` webhooks at `rate` per second on one keep-alive connection (a burst the way a
/// busy IllumiChat workspace sends it), each answered before the next is due when possible.
pub async fn paced(ep: &Endpoint, body: &Bytes, rate: u32, count: u64) -> Result<Run> {
    let start = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut run = Run::default();
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    for _ in 0..count {
        interval.tick().await;
        if run.errors >= MAX_ERRORS {
            break;
        }
        let t0 = Instant::now();
        let attempt = async {
            let mut send = match conn.take() {
                Some(send) => send,
                None => connect(ep).await?,
            };
            send.ready().await?;
            let resp = send.send_request(request(ep, body, false)?).await?;
            let status = resp.status();
            resp.into_body().collect().await?;
            if !status.is_success() {
                bail!("answered {status}");
            }
            Ok::<_, anyhow::Error>(send)
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
            Ok(Ok(send)) => {
                run.ok += 1;
                run.latencies_ns.push(t0.elapsed().as_nanos() as u64);
                conn = Some(send);
            }
            Ok(Err(err)) => {
                run.errors += 1;
                run.first_error.get_or_insert_with(|| format!("{err:#}"));
            }
            Err(_) => {
                run.errors += 1;
                run.first_error
                    .get_or_insert_with(|| "request timed out".into());
            }
        }
    }
    run.elapsed = start.elapsed();
    run.latencies_ns.sort_unstable();
    Ok(run)
}
