//! Talking to the web inspector from tests: one request with exactly the headers given (Host
//! included), the inspector of a running `listen` (address from its banner, token from its
//! record), and an open live stream read event by event.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::runtime::Runtime;

use crate::support::{self, Listen, Stream, DEADLINE};

/// An answer from the inspector.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a JSON error with `status` and returns its sentence.
    pub fn error(&self, status: u16) -> String {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        let body = self.json();
        body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error sentence in {body}"))
            .to_string()
    }
}

/// The inspector of a running `listen`: its address and token.
pub struct Inspector {
    pub addr: String,
    pub token: String,
}

impl Inspector {
    /// The inspector `listen` printed in its banner, and its token from the running-listen record.
    pub fn of(listen: &Listen, tunnel: &str) -> Inspector {
        let line = listen.guard.wait_for_text(Stream::Stderr, "web inspector");
        let addr = support::after(&line, "http://").to_string();
        let record_path = listen
            .home()
            .join("data")
            .join("listen")
            .join(format!("{tunnel}.json"));
        let record: Value =
            serde_json::from_slice(&std::fs::read(&record_path).expect("listen record")).unwrap();
        assert_eq!(record["inspect"], json!(format!("http://{addr}")));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&record_path)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the record holds the token: owner only");
        }
        let token = record["inspect_token"].as_str().expect("token").to_string();
        Inspector { addr, token }
    }

    /// `method path` with `Host` set to the inspector's address and `headers`.
    pub fn call(
        &self,
        rt: &Runtime,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let host = self.addr.clone();
        let mut all = vec![("host", host.as_str())];
        all.extend_from_slice(headers);
        rt.block_on(request(&self.addr, method, path, &all, body))
    }

    pub fn get(&self, rt: &Runtime, path: &str) -> Answer {
        self.call(rt, "GET", path, &[], "")
    }

    /// A `POST` with the token.
    pub fn post(&self, rt: &Runtime, path: &str, body: &str) -> Answer {
        let token = self.token.clone();
        self.call(
            rt,
            "POST",
            path,
            &[("x-illumitunnel-token", token.as_str())],
            body,
        )
    }
}

/// One HTTP/1.1 request on a fresh connection, headers exactly as given (Host included).
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to the inspector at {addr}: {e}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut builder = http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let req = builder
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = tokio::time::timeout(DEADLINE, sender.send_request(req))
        .await
        .expect("the inspector answers in time")
        .expect("an answer");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(DEADLINE, body.collect())
        .await
        .expect("the whole body in time")
        .expect("body")
        .to_bytes()
        .to_vec();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// An open `GET /api/stream`.
pub struct EventStream {
    body: hyper::body::Incoming,
    buffered: String,
}

impl EventStream {
    pub async fn open(inspector: &Inspector) -> EventStream {
        let tcp = tokio::net::TcpStream::connect(&inspector.addr)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri("/api/stream")
            .header("host", &inspector.addr)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream; charset=utf-8"
        );
        let mut stream = EventStream {
            body: response.into_body(),
            buffered: String::new(),
        };
        // The first frame (`retry:`) says the stream is following the store.
        stream.more(Instant::now() + DEADLINE).await;
        stream
    }

    pub async fn more(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, self.body.frame())
            .await
            .expect("a stream frame before the deadline")
            .expect("the stream is open")
            .expect("a frame");
        if let Ok(data) = frame.into_data() {
            self.buffered.push_str(&String::from_utf8_lossy(&data));
        }
    }

    /// The next `delivery` event's data.
    pub async fn next_delivery(&mut self) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            while let Some(end) = self.buffered.find("\n\n") {
                let event: String = self.buffered.drain(..end + 2).collect();
                if !event.lines().any(|l| l == "event: delivery") {
                    continue;
                }
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .expect("a data line");
                return serde_json::from_str(data).expect("JSON data");
            }
            self.more(deadline).await;
        }
    }
}
