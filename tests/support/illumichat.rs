//! A stand-in for IllumiChat's documented webhook API on `127.0.0.1:0`: `GET`/`POST
//! /api/webhooks`, `PATCH`/`DELETE /api/webhooks/{id}`, each checking `Authorization: Bearer`
//! (401 otherwise) and answering 404 for unknown ids. Lists are answered as `{"data": [...]}`,
//! one webhook as the bare object. Every request is kept for the test to inspect.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// One API call as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Authorization header, if any.
    pub authorization: Option<String>,
    /// JSON body, or null.
    pub body: Value,
}

#[derive(Default)]
struct State {
    hooks: Vec<Value>,
    calls: Vec<Call>,
    next: u32,
}

/// The running stand-in.
pub struct IllumiChat {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl IllumiChat {
    /// Starts the stand-in accepting `token`.
    pub fn start(rt: &Runtime, token: &str) -> IllumiChat {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the IllumiChat stand-in on 127.0.0.1:0");
        let addr = listener.local_addr().expect("stand-in address");
        let accept_state = Arc::clone(&state);
        let expected = format!("Bearer {token}");
        let accept = rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&accept_state);
                let expected = expected.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        serve(req, Arc::clone(&state), expected.clone())
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        IllumiChat {
            addr,
            state,
            accept,
        }
    }

    /// The `--api-base` for it.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The webhooks it holds now.
    pub fn hooks(&self) -> Vec<Value> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hooks
            .clone()
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .calls
            .clone()
    }
}

impl Drop for IllumiChat {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn answer(status: u16, body: Value) -> hyper::Response<Full<Bytes>> {
    let text = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("valid status");
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn serve(
    req: hyper::Request<Incoming>,
    state: Arc<Mutex<State>>,
    expected: String,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let call = Call {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        authorization: parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    };
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    state.calls.push(call.clone());
    if call.authorization.as_deref() != Some(expected.as_str()) {
        return Ok(answer(401, json!({"error": "invalid token"})));
    }
    let id = call.path.strip_prefix("/api/webhooks/").map(str::to_string);
    let index = id
        .as_ref()
        .and_then(|id| state.hooks.iter().position(|h| h["id"] == id.as_str()));
    let response = match (call.method.as_str(), call.path.as_str(), index) {
        ("GET", "/api/webhooks", _) => answer(200, json!({"data": state.hooks})),
        ("POST", "/api/webhooks", _) => {
            state.next += 1;
            let mut hook = call.body.clone();
            hook["id"] = json!(format!("wh_{}", state.next));
            state.hooks.push(hook.clone());
            answer(201, hook)
        }
        ("PATCH", _, Some(i)) => {
            if let (Some(hook), Some(patch)) =
                (state.hooks[i].as_object_mut(), call.body.as_object())
            {
                for (k, v) in patch {
                    hook.insert(k.clone(), v.clone());
                }
            }
            answer(200, state.hooks[i].clone())
        }
        ("DELETE", _, Some(i)) => {
            state.hooks.remove(i);
            answer(204, Value::Null)
        }
        _ => answer(404, json!({"error": "not found"})),
    };
    Ok(response)
}
