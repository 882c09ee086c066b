//! The web inspector of `listen`: a page and a local JSON API on a loopback address (default
//! `127.0.0.1:4040`, the next free port up to 4049 when taken), reading the same capture store
//! as the terminal inspector. It asks `listen` for replays over the same channel the terminal
//! inspector uses, so a replay from the page is forwarded, recorded and shown like any other.
//!
//! A local web server is an attack surface, so: it binds loopback only; every request whose
//! `Host` is not the bound address (or `localhost` with its port) is refused (DNS rebinding);
//! every `POST` needs the per-process token in `X-Illumitunnel-Token`, a header a cross-site form
//! cannot send and, without CORS, a cross-site script cannot either; every response carries a
//! strict `Content-Security-Policy`; secret header values are hidden unless asked for.
//!
//! # Layout
//! - `addr` — `--inspect ADDR` / `--no-inspect` and binding the port.
//! - `respond` — response building: JSON, errors, the security headers.
//! - `state` — what every request shares.
//! - `reads` — capture store reads off the async threads, and the list cursor.
//! - `api` — the `/api/` endpoints.
//! - `stream` — `GET /api/stream`, newly committed deliveries as server-sent events.

mod addr;
mod api;
mod reads;
mod respond;
mod state;
mod stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::status::ReplayRequest;

pub use addr::{bind, Inspect, INSPECT_ENV};
use respond::{error, Reply};
use state::State;

/// The header a state-changing call carries the per-process token in.
pub const TOKEN_HEADER: &str = "x-illumitunnel-token";

/// The page, with `{{TOKEN}}` where the per-process token goes.
const INDEX_HTML: &str = include_str!("web/assets/index.html");
/// The page's script.
const APP_JS: &str = include_str!("web/assets/app.js");
/// The page's styles.
const STYLE_CSS: &str = include_str!("web/assets/style.css");

/// What the inspector reads and whom it asks for replays.
pub struct Sources {
    /// The capture store `listen` records into.
    pub store: PathBuf,
    /// The newest committed `seq` (`RecorderHandle::committed`).
    pub committed: watch::Receiver<i64>,
    /// `listen`'s replay server, shared with the terminal inspector.
    pub replays: mpsc::Sender<ReplayRequest>,
}

/// A started web inspector.
pub struct Started {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The token state-changing calls need.
    pub token: String,
    /// The server, which ends on `listen`'s shutdown.
    pub task: JoinHandle<()>,
}

impl Started {
    /// The page's URL, for the banner, the terminal header and the running-listen record.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Serves the inspector on `listener` until `shutdown`.
pub fn start(listener: TcpListener, sources: Sources, shutdown: CancellationToken) -> Started {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let token = new_token();
    let state = Arc::new(State {
        addr,
        token: token.clone(),
        index: INDEX_HTML.replace("{{TOKEN}}", &token),
        reads: reads::Reads::new(sources.store),
        committed: sources.committed,
        replays: sources.replays,
        shutdown: shutdown.clone(),
    });
    let task = tokio::spawn(serve(listener, state, shutdown));
    Started { addr, token, task }
}

/// 32 random bytes, base64url: what the page and scripts send back on state-changing calls.
fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Accepts connections until `shutdown`, then ends every open one (live streams included), so
/// nothing holds `listen`'s replay channel afterwards.
async fn serve(listener: TcpListener, state: Arc<State>, shutdown: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                // A stream event is one small write: Nagle would hold it for the page's
                // delayed ACK (up to 40 ms).
                let _ = stream.set_nodelay(true);
                stream
            }
            Err(err) => {
                // Out of file descriptors, say: wait a moment rather than spin.
                tracing::warn!(%err, "the web inspector could not accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let state = state.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
            });
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%err, "a web inspector connection ended");
            }
        });
    }
    connections.shutdown().await;
}

/// One request: the `Host` check, then the route; every answer gets the security headers.
async fn handle(state: &State, req: Request<Incoming>) -> http::Response<respond::Body> {
    let reply = if !host_allowed(state.addr, &req) {
        error(
            StatusCode::FORBIDDEN,
            "this inspector answers only requests addressed to its own loopback address; open it at the address listen printed",
        )
    } else {
        route(state, req).await
    };
    reply.into_response()
}

async fn route(state: &State, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    // HEAD is answered as GET; hyper leaves the body out.
    let method = match req.method() {
        &Method::HEAD => Method::GET,
        other => other.clone(),
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if method == Method::POST && !token_matches(&state.token, &req) {
        return error(
            StatusCode::FORBIDDEN,
            "this call changes something and needs the inspector's token in the X-Illumitunnel-Token header; read inspect_token from listen's record in the data dir's listen folder",
        );
    }
    match (&method, segments.as_slice()) {
        (&Method::GET, [""]) => Reply::text(&state.index, "text/html; charset=utf-8"),
        (&Method::GET, ["assets", "app.js"]) => {
            Reply::text(APP_JS, "text/javascript; charset=utf-8")
        }
        (&Method::GET, ["assets", "style.css"]) => {
            Reply::text(STYLE_CSS, "text/css; charset=utf-8")
        }
        // Browsers ask for it on their own; there is none, and a 404 would be noise.
        (&Method::GET, ["favicon.ico"]) => Reply::bytes(
            StatusCode::NO_CONTENT,
            Bytes::new(),
            http::HeaderValue::from_static("image/x-icon"),
        ),
        (&Method::GET, ["api", "deliveries"]) => api::list(state, req.uri().query()).await,
        (&Method::GET, ["api", "deliveries", id]) => api::one(state, id, req.uri().query()).await,
        (&Method::GET, ["api", "deliveries", id, "body"]) => {
            api::body(state, id, req.uri().query()).await
        }
        (&Method::POST, ["api", "deliveries", id, "replay"]) => {
            let id = id.to_string();
            let query = req.uri().query().map(str::to_string);
            match read_body(req).await {
                Ok(body) => api::replay(state, &id, &body, query.as_deref()).await,
                Err(reply) => reply,
            }
        }
        (&Method::POST, ["api", "test"]) => match read_body(req).await {
            Ok(body) => api::test(state, &body).await,
            Err(reply) => reply,
        },
        (&Method::GET, ["api", "stream"]) => {
            let last = req
                .headers()
                .get("last-event-id")
                .and_then(|v| v.to_str().ok());
            stream::open(state, req.uri().query(), last)
        }
        (_, ["" | "assets" | "api", ..]) if known_path(&segments) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "this address does not take that method; see docs/api.md for each endpoint's method",
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "nothing here; the API is under /api/ (see docs/api.md)",
        ),
    }
}

/// Whether a path names an endpoint (so a wrong method is 405, not 404).
fn known_path(segments: &[&str]) -> bool {
    matches!(
        segments,
        [""] | ["assets", "app.js" | "style.css"]
            | ["api", "deliveries" | "test" | "stream"]
            | ["api", "deliveries", _]
            | ["api", "deliveries", _, "body" | "replay"]
    )
}

/// How long accepting waits after a failed accept.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Largest request body the API reads (a replay's body can be as large as a delivery's).
const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Reply> {
    use http_body_util::BodyExt as _;
    match http_body_util::Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "the request body could not be read or is over 16 MiB; send a smaller one",
        )),
    }
}

/// Whether the request's `Host` names this inspector: its bound `ip:port`, or `localhost:port`.
fn host_allowed<B>(bound: SocketAddr, req: &Request<B>) -> bool {
    let Some(host) = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    host == bound.to_string() || host == format!("localhost:{}", bound.port())
}

/// Whether the request carries this process's token, compared in constant time.
fn token_matches<B>(token: &str, req: &Request<B>) -> bool {
    let Some(sent) = req.headers().get(TOKEN_HEADER) else {
        return false;
    };
    let (sent, token) = (sent.as_bytes(), token.as_bytes());
    sent.len() == token.len()
        && sent
            .iter()
            .zip(token)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests;
