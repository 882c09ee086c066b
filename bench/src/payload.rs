//! What the bench sends and stores: the ~1.5 KB IllumiChat `ticket.created` envelope that
//! `peers.sh` sends, a large body, and a capture store filled with many deliveries.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use illumitunnel::delivery::{RequestRecord, ResponseRecord, Source};
use illumitunnel::store::CaptureStore;
use illumitunnel::{Delivery, DeliveryId};

/// The envelope, byte for byte the payload of `peers.sh` (1,433 bytes, no trailing newline).
pub const ENVELOPE: &str = include_str!("envelope.json");

/// The envelope as a request body.
pub fn envelope() -> Bytes {
    Bytes::from_static(ENVELOPE.as_bytes())
}

/// A JSON body of exactly `size` bytes: an envelope whose `data.note` is padded with text.
pub fn large_body(size: usize) -> Bytes {
    let head = r#"{"event":"ticket.created","timestamp":"2025-06-15T14:30:00Z","workspaceId":"ws_abc123","data":{"id":"tkt_large","note":""#;
    let tail = r#""}}"#;
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(head.as_bytes());
    let pad = size.saturating_sub(head.len() + tail.len());
    body.extend(std::iter::repeat_n(b'x', pad));
    body.extend_from_slice(tail.as_bytes());
    Bytes::from(body)
}

/// The headers IllumiChat sends with the envelope, as a forwarded delivery records them.
pub fn request_headers() -> Vec<(String, Vec<u8>)> {
    vec![
        ("host".to_string(), b"127.0.0.1:3000".to_vec()),
        ("content-type".to_string(), b"application/json".to_vec()),
        (
            "user-agent".to_string(),
            b"IllumiChat-Webhooks/1.0".to_vec(),
        ),
        ("x-illumichat-event".to_string(), b"ticket.created".to_vec()),
        (
            "content-length".to_string(),
            ENVELOPE.len().to_string().into_bytes(),
        ),
    ]
}

/// Fills the capture store at `path` with `n` forwarded deliveries of the envelope (each with
/// its own ticket id, timestamp and delivery id), `batch` per transaction. Returns the time taken.
pub fn fill_store(path: &Path, n: usize, batch: usize) -> Result<Duration> {
    let started = Instant::now();
    let mut store = CaptureStore::open(path).context("could not open the capture store")?;
    let now = illumitunnel::now_ms();
    let headers = request_headers();
    let response = ResponseRecord {
        status: 200,
        headers: vec![("content-type".to_string(), b"application/json".to_vec())],
        body: Bytes::from_static(br#"{"received":true}"#),
    };
    let mut i = 0usize;
    while i < n {
        let mut rows = Vec::with_capacity(batch);
        for j in i..(i + batch).min(n) {
            let at = now - (n - j) as i64 * 100;
            let body = ENVELOPE
                .replace("tkt_xyz789", &format!("tkt_{j:06}"))
                .replace("2025-06-15T14:30:00Z", &illumitunnel::rfc3339_ms(at));
            let id = DeliveryId::parse(&format!("bench{j:08}")).context("invalid delivery id")?;
            let request = RequestRecord {
                method: "POST".into(),
                path: "/webhooks/illumichat".into(),
                query: String::new(),
                headers: headers.clone(),
                body: Bytes::from(body),
            };
            let mut d = Delivery::new(id, at, Source::Tunnel, request);
            d.tunnel = Some("bench-store".into());
            d.target = "http://127.0.0.1:3000/webhooks/illumichat".into();
            d.response = Some(response.clone());
            d.duration_us = 350;
            rows.push(d);
        }
        i += rows.len();
        store
            .insert_batch(&mut rows)
            .context("could not insert into the capture store")?;
    }
    Ok(started.elapsed())
}
