//! Harness for the relay's in-process tests: the relay on `127.0.0.1:0` (plain and TLS), a
//! small fake client built from tokio-tungstenite and the wire protocol, and senders built on
//! hyper's client connections. Each test file uses a different part of it.

#![allow(clippy::unwrap_used, dead_code)] // test helpers outside #[test] fns

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use illumitunnel::headers::Header;
use illumitunnel::protocol::{self, ClientMessage, RelayMessage, CONNECT_PATH, PROTOCOL_VERSION};
use illumitunnel::DeliveryId;
use illumitunnel_relay::tls::SelfSigned;
use illumitunnel_relay::{Config, RelayError, TlsConfig};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

/// Upper bound on any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(20);

pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

// ---------------------------------------------------------------- relay

pub struct Relay {
    pub addr: SocketAddr,
    pub ca: Option<CertificateDer<'static>>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), RelayError>>,
    pub data_dir: std::path::PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Relay {
    pub async fn start(tls: bool, tune: impl FnOnce(&mut Config)) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("relay");
        let mut relay = Relay::start_in(tls, data_dir, tune).await;
        relay._dir = Some(dir);
        relay
    }

    /// A relay keeping its queue and ownership in `data_dir` (a restart reuses it).
    pub async fn start_in(
        tls: bool,
        data_dir: std::path::PathBuf,
        tune: impl FnOnce(&mut Config),
    ) -> Relay {
        let (tls_config, ca) = if tls {
            let cert = SelfSigned::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
            let ca = cert.cert.clone();
            (
                TlsConfig::Certified {
                    chain: vec![cert.cert],
                    key: cert.key,
                },
                Some(ca),
            )
        } else {
            (TlsConfig::Plain, None)
        };
        let mut config = Config::embedded(tls_config, data_dir.clone());
        tune(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(illumitunnel_relay::run(config, listener, shutdown.clone()));
        Relay {
            addr,
            ca,
            shutdown,
            task,
            data_dir,
            _dir: None,
        }
    }

    pub async fn plain() -> Relay {
        Relay::start(false, |_| {}).await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        within("relay shutdown", self.task).await.unwrap().unwrap();
    }

    pub async fn connect_io(&self, alpn: &[u8]) -> Box<dyn Io> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        match &self.ca {
            None => Box::new(tcp),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.clone()).unwrap();
                let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
                config.alpn_protocols = vec![alpn.to_vec()];
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                let name = ServerName::try_from("127.0.0.1").unwrap();
                Box::new(connector.connect(name, tcp).await.unwrap())
            }
        }
    }

    /// Sends one request over a fresh HTTP/1.1 connection.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Answer {
        let io = self.connect_io(b"http/1.1").await;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(conn);
        let response = within("response", sender.send_request(req)).await.unwrap();
        Answer::read(response).await
    }

    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> Answer {
        self.send(post(self.addr, path, body)).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        let req = Request::get(path)
            .header(header::HOST, self.addr.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.send(req).await
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub fn post(addr: SocketAddr, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(path)
        .header(header::HOST, addr.to_string())
        .body(Full::new(body.into()))
        .unwrap()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub async fn read(response: http::Response<hyper::body::Incoming>) -> Answer {
        let (parts, body) = response.into_parts();
        let body = within("response body", body.collect())
            .await
            .unwrap()
            .to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub fn error(&self) -> String {
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/json");
        let json: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        assert_eq!(json.as_object().unwrap().len(), 1, "{json}");
        json["error"].as_str().unwrap().to_string()
    }
}

// ---------------------------------------------------------------- fake client

pub type Ws = WebSocketStream<Box<dyn Io>>;

/// A connection to the relay and the websocket upgrade request for it, with `token`.
async fn upgrade_request(
    relay: &Relay,
    token: Option<&str>,
) -> (
    Box<dyn Io>,
    tokio_tungstenite::tungstenite::handshake::client::Request,
) {
    let io = relay.connect_io(b"http/1.1").await;
    let mut req = format!("ws://{}{CONNECT_PATH}", relay.addr)
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        req.headers_mut().insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
    }
    (io, req)
}

/// Tries the websocket upgrade with `token`; the relay's answer when it is not a 101.
pub async fn refused_upgrade(relay: &Relay, token: Option<&str>) -> (StatusCode, String) {
    let (io, req) = upgrade_request(relay, token).await;
    match within(
        "websocket handshake",
        tokio_tungstenite::client_async(req, io),
    )
    .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            (response.status(), String::from_utf8(body).unwrap())
        }
        Err(other) => panic!("upgrade failed without an answer: {other}"),
        Ok(_) => panic!("the relay upgraded"),
    }
}

pub async fn open_ws(relay: &Relay, token: Option<&str>) -> Ws {
    let (io, req) = upgrade_request(relay, token).await;
    let (ws, response) = within(
        "websocket handshake",
        tokio_tungstenite::client_async(req, io),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

pub async fn next_message(ws: &mut Ws) -> Option<RelayMessage> {
    loop {
        match within("relay message", ws.next()).await? {
            Ok(Message::Binary(bytes)) => return Some(RelayMessage::decode(&bytes).unwrap()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(_) | Err(_) => return None,
        }
    }
}

/// Claim keys relays gave this test process, by relay data dir and tunnel: like one client
/// machine's config dir, which outlives a relay restart on the same data dir.
static CLAIM_KEYS: std::sync::Mutex<Vec<(std::path::PathBuf, String, String)>> =
    std::sync::Mutex::new(Vec::new());

/// The claim key kept for `tunnel` on `relay`, or empty.
pub fn kept_claim_key(relay: &Relay, tunnel: &str) -> String {
    let keys = CLAIM_KEYS.lock().unwrap();
    keys.iter()
        .rev()
        .find(|(dir, t, _)| *dir == relay.data_dir && t == tunnel)
        .map(|(_, _, key)| key.clone())
        .unwrap_or_default()
}

/// Opens a session and returns the relay's first answer to `Hello`, sending the claim key
/// this process kept for the tunnel and keeping any new one, as the real client does.
pub async fn hello(
    relay: &Relay,
    token: Option<&str>,
    version: u16,
    tunnel: &str,
) -> (Ws, RelayMessage) {
    let kept = kept_claim_key(relay, tunnel);
    hello_with_key(relay, token, version, tunnel, &kept).await
}

/// Like [`hello`] with a claim key of the caller's choice (a stranger sends none or a wrong one).
pub async fn hello_with_key(
    relay: &Relay,
    token: Option<&str>,
    version: u16,
    tunnel: &str,
    claim_key: &str,
) -> (Ws, RelayMessage) {
    let mut ws = open_ws(relay, token).await;
    let hello = ClientMessage::Hello {
        version,
        tunnel: tunnel.into(),
        claim_key: claim_key.into(),
        observer: false,
    };
    ws.send(Message::Binary(hello.encode())).await.unwrap();
    let reply = next_message(&mut ws).await.expect("an answer to hello");
    if let RelayMessage::Welcome { claim_key, .. } = &reply {
        if !claim_key.is_empty() {
            let entry = (
                relay.data_dir.clone(),
                tunnel.to_string(),
                claim_key.clone(),
            );
            CLAIM_KEYS.lock().unwrap().push(entry);
        }
    }
    (ws, reply)
}

pub async fn connect(relay: &Relay, tunnel: &str) -> Ws {
    let (ws, reply) = hello(relay, None, PROTOCOL_VERSION, tunnel).await;
    match reply {
        RelayMessage::Welcome {
            tunnel: t,
            public_url,
            queued: 0,
            expired: 0,
            ..
        } => {
            assert_eq!(t, tunnel);
            assert!(
                public_url.ends_with(&format!("/t/{tunnel}")),
                "{public_url}"
            );
        }
        other => panic!("expected welcome, got {other:?}"),
    }
    ws
}

#[derive(Debug, Clone)]
pub struct Received {
    pub id: DeliveryId,
    pub answer: bool,
    pub queued: bool,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

#[derive(Debug)]
pub enum Event {
    Request(Received),
    Cancel(DeliveryId),
    DeadLettered(DeliveryId, String),
}

#[derive(Clone)]
pub enum Behavior {
    /// 201 with fixed headers and the request body echoed back.
    Echo,
    /// `Failed` with this message.
    Fail(&'static str),
    /// Never answers.
    Silent,
    /// Like `Echo`, then `Recorded` for deliveries from the offline queue.
    Record,
}

/// Runs a fake client on `ws`; every request it assembles and every cancel is reported.
pub fn spawn_client(mut ws: Ws, behavior: Behavior) -> mpsc::Receiver<Event> {
    let (events, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut assembling: Option<Received> = None;
        while let Some(Ok(frame)) = ws.next().await {
            // Dropping the receiver ends this client (its socket closes) at the next frame.
            if events.is_closed() {
                return;
            }
            let Message::Binary(bytes) = frame else {
                continue;
            };
            let done = match RelayMessage::decode(&bytes).unwrap() {
                RelayMessage::Request {
                    id,
                    answer,
                    redelivery: queued,
                    method,
                    path,
                    query,
                    headers,
                    body,
                    end,
                    ..
                } => {
                    let r = Received {
                        id,
                        answer,
                        queued,
                        method,
                        path,
                        query,
                        headers,
                        body: body.to_vec(),
                    };
                    if end {
                        Some(r)
                    } else {
                        assembling = Some(r);
                        None
                    }
                }
                RelayMessage::RequestChunk { id, data, end } => {
                    let r = assembling.as_mut().expect("chunk after head");
                    assert_eq!(r.id, id, "chunks of one delivery arrive together here");
                    r.body.extend_from_slice(&data);
                    if end {
                        assembling.take()
                    } else {
                        None
                    }
                }
                RelayMessage::Cancel { id } => {
                    let _ = events.send(Event::Cancel(id)).await;
                    None
                }
                RelayMessage::DeadLettered { id, reason } => {
                    let _ = events.send(Event::DeadLettered(id, reason)).await;
                    None
                }
                other => panic!("unexpected {other:?}"),
            };
            let Some(request) = done else { continue };
            if request.answer {
                for reply in answer(&behavior, &request) {
                    if ws.send(Message::Binary(reply.encode())).await.is_err() {
                        return;
                    }
                }
            }
            if request.queued && matches!(behavior, Behavior::Record) {
                let recorded = ClientMessage::Recorded {
                    id: request.id.clone(),
                };
                if ws.send(Message::Binary(recorded.encode())).await.is_err() {
                    return;
                }
            }
            let _ = events.send(Event::Request(request)).await;
        }
    });
    rx
}

pub fn answer(behavior: &Behavior, request: &Received) -> Vec<ClientMessage> {
    let id = request.id.clone();
    match behavior {
        Behavior::Silent => vec![],
        Behavior::Fail(message) => vec![ClientMessage::Failed {
            id,
            message: message.to_string(),
        }],
        Behavior::Echo | Behavior::Record => {
            let headers = vec![
                (
                    "content-type".to_string(),
                    b"application/octet-stream".to_vec(),
                ),
                ("x-echo-path".to_string(), request.path.clone().into_bytes()),
                (
                    "x-echo-query".to_string(),
                    request.query.clone().into_bytes(),
                ),
                ("x-bin".to_string(), vec![0xff, 0xfe, b'x']),
                ("set-cookie".to_string(), b"a=1".to_vec()),
                ("set-cookie".to_string(), b"b=2".to_vec()),
                ("connection".to_string(), b"close".to_vec()),
                ("content-length".to_string(), b"1".to_vec()),
            ];
            let body = Bytes::from(request.body.clone());
            let (first, rest) = protocol::split_body(&body);
            let mut out = vec![ClientMessage::Response {
                id: id.clone(),
                status: 201,
                headers,
                body: first,
                end: rest.is_empty(),
            }];
            let n = rest.len();
            out.extend(rest.into_iter().enumerate().map(|(i, data)| {
                ClientMessage::ResponseChunk {
                    id: id.clone(),
                    data,
                    end: i + 1 == n,
                }
            }));
            out
        }
    }
}

pub async fn next_request(events: &mut mpsc::Receiver<Event>) -> Received {
    loop {
        match within("a request at the client", events.recv())
            .await
            .expect("client running")
        {
            Event::Request(r) => return r,
            Event::Cancel(_) | Event::DeadLettered(..) => continue,
        }
    }
}

pub fn header_values<'a>(headers: &'a [Header], name: &str) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
        .collect()
}
