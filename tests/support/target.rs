//! The local server deliveries are forwarded to: hyper on the test's tokio runtime, bound to
//! `127.0.0.1:0`. It records every request exactly as received and answers what the test
//! programs (status, headers, body, delay).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use super::DEADLINE;

/// One request as the local server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query, without `?`.
    pub query: Option<String>,
    /// Headers in the order hyper keeps them (names lower-case), raw values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Recorded {
    /// Every value of header `name`, as text.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The single value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut all = self.header_all(name);
        assert!(all.len() <= 1, "{name} repeated: {all:?}");
        all.pop()
    }
}

/// What the local server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, in order; a name may repeat.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Time to wait before answering.
    pub delay: Duration,
}

impl Reply {
    /// `200` with `{"received":true}`, as IllumiChat's reference server answers.
    pub fn ok() -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: br#"{"received":true}"#.to_vec(),
            delay: Duration::ZERO,
        }
    }

    /// `status` with no headers and an empty body.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    /// Answers after `delay`.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// Decides the answer to each request.
pub type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

#[derive(Default)]
struct Log {
    requests: Mutex<Vec<Recorded>>,
    arrived: Condvar,
}

/// A running local server.
pub struct Target {
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Log>,
    accept: JoinHandle<()>,
}

impl Target {
    /// Answers every request with [`Reply::ok`].
    pub fn ok(rt: &Runtime) -> Target {
        Target::start(rt, |_| Reply::ok())
    }

    /// Echoes each request body back with status 200 and the request's content type.
    pub fn echo(rt: &Runtime) -> Target {
        Target::start(rt, |req| {
            let content_type = req
                .header("content-type")
                .unwrap_or_else(|| "application/octet-stream".into());
            Reply::status(200)
                .header("content-type", &content_type)
                .body(req.body.clone())
        })
    }

    /// Starts a server on `127.0.0.1:0` answering with `handler`.
    pub fn start(
        rt: &Runtime,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Target {
        let handler: Handler = Arc::new(handler);
        let log = Arc::new(Log::default());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the target on 127.0.0.1:0");
        let addr = listener.local_addr().expect("target address");
        let accept_log = Arc::clone(&log);
        let accept = rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = Arc::clone(&accept_log);
                let handler = Arc::clone(&handler);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        serve(req, Arc::clone(&log), Arc::clone(&handler))
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Target { addr, log, accept }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits up to [`DEADLINE`] until at least `count` requests arrived, and returns them all.
    pub fn wait_for_requests(&self, count: usize) -> Vec<Recorded> {
        let start = Instant::now();
        let mut requests = self.log.requests.lock().unwrap_or_else(|e| e.into_inner());
        while requests.len() < count {
            let left = DEADLINE.saturating_sub(start.elapsed());
            assert!(
                !left.is_zero(),
                "the target received {} of {count} requests within {DEADLINE:?}",
                requests.len()
            );
            requests = self
                .log
                .arrived
                .wait_timeout(requests, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        requests.clone()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(
    req: hyper::Request<Incoming>,
    log: Arc<Log>,
    handler: Handler,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(e) => format!("<body read failed: {e}>").into_bytes(),
    };
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
        body,
    };
    let reply = handler(&recorded);
    {
        let mut requests = log.requests.lock().unwrap_or_else(|e| e.into_inner());
        requests.push(recorded);
        log.arrived.notify_all();
    }
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = hyper::Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = hyper::StatusCode::from_u16(reply.status).expect("valid status");
    for (name, value) in reply.headers {
        response.headers_mut().append(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
            hyper::header::HeaderValue::from_str(&value).expect("valid header value"),
        );
    }
    Ok(response)
}
