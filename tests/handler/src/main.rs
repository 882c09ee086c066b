//! `illumitunnel-test-handler`: the webhook handler the end-to-end tests run as a real process,
//! on `127.0.0.1:0`. It prints `listening on http://127.0.0.1:PORT`, then one JSON line a request
//! (`{"n":1,"method":"POST","path":"/…","body_base64":"…"}`), so a test sees exactly what arrived.
//!
//! - An IllumiChat envelope is answered `200 {"received":true,"event":…,"id":…,"status":"processed"}`.
//!   `--variant 2` is the handler after a change: `ticket.updated` answers `"status":"queued"`,
//!   and every answer lists its keys in another order (which a test must not call a change).
//! - Any other body is echoed byte for byte (`--variant 2` flips the last byte).
//! - `--fail-first N` answers the first N requests `500`, as a handler that is down for a while.

// Printing the address and each request is what this process is for.
#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// What this handler was started as.
struct Settings {
    variant: u8,
    fail_first: u64,
    seen: AtomicU64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let settings = match parse_args() {
        Ok(settings) => Arc::new(settings),
        Err(usage) => {
            eprintln!(
                "error: {usage}; usage: illumitunnel-test-handler [--variant 1|2] [--fail-first N]"
            );
            return std::process::ExitCode::from(2);
        }
    };
    match serve(settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Arc<Settings>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let settings = settings.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, settings.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn parse_args() -> Result<Settings, String> {
    let mut settings = Settings {
        variant: 1,
        fail_first: 0,
        seen: AtomicU64::new(0),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--variant" => settings.variant = value.parse().map_err(|_| "--variant 1 or 2")?,
            "--fail-first" => settings.fail_first = value.parse().map_err(|_| "--fail-first N")?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(settings)
}

async fn answer(
    req: Request<Incoming>,
    settings: Arc<Settings>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let n = settings.seen.fetch_add(1, Ordering::SeqCst) + 1;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&body);
    println!(
        "{}",
        json!({ "n": n, "method": method, "path": path, "body_base64": b64 })
    );
    if n <= settings.fail_first {
        return Ok(respond(
            500,
            "application/json",
            br#"{"error":"failing on purpose"}"#.to_vec(),
        ));
    }
    let Ok(envelope) = serde_json::from_slice::<Value>(&body) else {
        let mut echo = body.to_vec();
        if settings.variant == 2 {
            if let Some(last) = echo.last_mut() {
                *last ^= 0xff;
            }
        }
        return Ok(respond(200, "application/octet-stream", echo));
    };
    let event = envelope["event"].clone();
    let id = envelope["data"]["id"].clone();
    let answer = match (settings.variant, event.as_str()) {
        (2, Some("ticket.updated")) => {
            json!({ "status": "queued", "id": id, "event": event, "received": true })
        }
        (2, _) => json!({ "status": "processed", "id": id, "event": event, "received": true }),
        _ => json!({ "received": true, "event": event, "id": id, "status": "processed" }),
    };
    Ok(respond(
        200,
        "application/json",
        answer.to_string().into_bytes(),
    ))
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
