//! Writes the seed corpora in `fuzz/seeds/<target>/` from real messages: the codec's own
//! encodings of what a session exchanges, IllumiChat's sample envelopes, paths senders use.
//! Run from `fuzz/`: `cargo +nightly run --example seeds`.

use std::path::Path;

use bytes::Bytes;
use illumitunnel::delivery::DeliveryId;
use illumitunnel::event::{samples, EventType};
use illumitunnel::protocol::{ClientMessage, Refusal, RelayMessage, PROTOCOL_VERSION};

const ENVELOPE: &[u8] = include_bytes!("../../bench/src/envelope.json");

fn write(target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = Path::new("seeds").join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> std::io::Result<()> {
    let id = DeliveryId::parse("0190b3c2f4a1b7e3c").ok_or(std::io::ErrorKind::InvalidData)?;
    let headers = vec![
        ("content-type".to_string(), b"application/json".to_vec()),
        (
            "x-illumichat-signature".to_string(),
            b"sha256=5d41402abc4b2a76b9719d911017c592".to_vec(),
        ),
        ("x-raw".to_string(), vec![0xff, 0xfe, b'a', 0x80]),
        ("x-forwarded-for".to_string(), b"203.0.113.7".to_vec()),
    ];
    let client = [
        ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            tunnel: "my-app".into(),
            claim_key: String::new(),
            observer: false,
        },
        ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            tunnel: "quiet-comet-k3v9x2m4p7qa".into(),
            claim_key: "ck_7f3a9e".into(),
            observer: false,
        },
        ClientMessage::Response {
            id: id.clone(),
            status: 200,
            headers: headers[..1].to_vec(),
            body: Bytes::from_static(br#"{"received":true}"#),
            end: true,
        },
        ClientMessage::Response {
            id: id.clone(),
            status: 500,
            headers: headers.clone(),
            body: Bytes::from_static(&ENVELOPE[..200]),
            end: false,
        },
        ClientMessage::ResponseChunk {
            id: id.clone(),
            data: Bytes::from_static(&ENVELOPE[200..]),
            end: true,
        },
        ClientMessage::Failed {
            id: id.clone(),
            message: "connection refused to 127.0.0.1:3000".into(),
        },
        ClientMessage::Recorded { id: id.clone() },
        ClientMessage::NotRecorded {
            id: id.clone(),
            message: "disk full".into(),
        },
        ClientMessage::Rejected {
            id: id.clone(),
            message: "larger than --max-body".into(),
        },
    ];
    let relay = [
        RelayMessage::Welcome {
            tunnel: "my-app".into(),
            public_url: "https://relay.example/t/my-app".into(),
            queued: 3,
            expired: 0,
            dead_letters: 1,
            claim_key: String::new(),
        },
        RelayMessage::Refused {
            reason: Refusal::TunnelTaken,
            message: "tunnel my-app is taken".into(),
        },
        RelayMessage::Request {
            id: id.clone(),
            received_at_ms: 1_750_000_000_000,
            answer: true,
            redelivery: false,
            method: "POST".into(),
            path: "/webhooks/illumichat".into(),
            query: "source=widget".into(),
            headers: headers.clone(),
            body: Bytes::from_static(ENVELOPE),
            end: true,
        },
        RelayMessage::Request {
            id: id.clone(),
            received_at_ms: 1_750_000_000_000,
            answer: false,
            redelivery: true,
            method: "PUT".into(),
            path: "/".into(),
            query: String::new(),
            headers: Vec::new(),
            body: Bytes::new(),
            end: false,
        },
        RelayMessage::RequestChunk {
            id: id.clone(),
            data: Bytes::from_static(ENVELOPE),
            end: true,
        },
        RelayMessage::Cancel { id: id.clone() },
        RelayMessage::DeadLettered {
            id,
            reason: "ended three sessions".into(),
        },
    ];
    for (i, m) in client.iter().enumerate() {
        write("wire_decode", &format!("client-{i}"), &m.encode())?;
    }
    for (i, m) in relay.iter().enumerate() {
        write("wire_decode", &format!("relay-{i}"), &m.encode())?;
    }

    write("envelope", "ticket-created", ENVELOPE)?;
    for (i, e) in EventType::ALL.into_iter().enumerate() {
        let body = serde_json::to_vec(&samples::sample(e, 1_750_000_000_000))?;
        write("envelope", &format!("sample-{i}"), &body)?;
    }
    write(
        "envelope",
        "odd",
        br#" {"event":"a\u0062","data":{"id":42,"nested":{"id":"no"}},"timestamp":7.5e3,"workspaceId":null}"#,
    )?;

    let paths = [
        "/healthz",
        "/metrics",
        "/_illumitunnel/connect",
        "/t/my-app",
        "/t/my-app/webhooks/illumichat",
        "/t/my-app/../../metrics",
        "/t/abc/..;/admin",
        "/t/abc/..%2f..%2fadmin",
        "/t//x",
        "/t/%61bc/x%5cy",
    ];
    for (i, p) in paths.iter().enumerate() {
        write("route_parse", &format!("path-{i}"), p.as_bytes())?;
    }

    // flags (bit 0 https, bits 1-2 host, bit 3 port), port, tail NUL path NUL query
    let joins: [(u8, u16, &str, &str, &str); 6] = [
        (8, 3000, "/webhooks/illumichat", "/", ""),
        (8, 3000, "/hooks?key=1", "/sub/x", "a=1&b=%20"),
        (10, 8080, "", "//evil.example/x", ""),
        (9, 8443, "/hooks", "/a/%2E%2e/%2e/../../admin", "q=\r\n#x"),
        (4, 0, "/h/", "/x?smuggled=1#f", ""),
        (14, 3000, "/api/v1", "/..;/admin/ü", "x=1"),
    ];
    for (i, (flags, port, tail, path, query)) in joins.iter().enumerate() {
        let mut bytes = vec![*flags];
        bytes.extend_from_slice(&port.to_be_bytes());
        bytes.extend_from_slice(format!("{tail}\0{path}\0{query}").as_bytes());
        write("forward_join", &format!("join-{i}"), &bytes)?;
    }
    Ok(())
}
