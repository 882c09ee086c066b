//! Tunnel ownership in process: an anonymous claimer gets a claim key and only that key joins
//! again (a stranger never sees a delivery), token clients keep owning by token, claims survive
//! a restart, anonymous tunnels from before claim keys change hands once, and a relay with a
//! per-process token accepts nobody else.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::SinkExt;
use http::{header, Request, StatusCode};
use http_body_util::Full;
use illumitunnel::protocol::{
    ClientMessage, Refusal, RelayMessage, CONNECT_PATH, PROTOCOL_VERSION,
};
use illumitunnel::Token;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A secret a sender puts in a delivery; no stranger may ever see it.
const PLANTED: &str = "Bearer planted-secret-3f9a";

fn refusal(reply: RelayMessage) -> (Refusal, String) {
    match reply {
        RelayMessage::Refused { reason, message } => (reason, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The claim key a `Welcome` handed out (empty when none).
fn welcomed_key(reply: &RelayMessage) -> String {
    match reply {
        RelayMessage::Welcome { claim_key, .. } => claim_key.clone(),
        other => panic!("expected a welcome, got {other:?}"),
    }
}

/// A delivery carrying the planted `Authorization` header.
fn with_secret(relay: &Relay, tunnel: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(format!("/t/{tunnel}/hook"))
        .header(header::HOST, relay.addr.to_string())
        .header(header::AUTHORIZATION, PLANTED)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// Reads what a refused session still receives until the relay closes it: nothing may arrive,
/// in particular no delivery.
async fn drain_refused(mut ws: Ws) {
    match tokio::time::timeout(Duration::from_secs(5), next_message(&mut ws)).await {
        Ok(None) => {}
        Ok(Some(message)) => panic!("a refused session received {message:?}"),
        Err(_) => panic!("a refused session stayed open"),
    }
}

#[tokio::test]
async fn an_anonymous_tunnel_is_rejoined_only_with_its_claim_key() {
    let relay = Relay::plain().await;
    let (owner, reply) = hello_with_key(&relay, None, PROTOCOL_VERSION, "mine", "").await;
    let key = welcomed_key(&reply);
    assert_eq!(key.len(), 64, "a 256-bit key in hex: {key}");
    let mut owner = spawn_client(owner, Behavior::Echo);

    // Strangers without the key, or with another one, are refused with what to do.
    for stranger_key in ["", "not-the-key", &key[..63], &key.to_uppercase()] {
        let (ws, reply) =
            hello_with_key(&relay, None, PROTOCOL_VERSION, "mine", stranger_key).await;
        let (reason, message) = refusal(reply);
        assert_eq!(reason, Refusal::TunnelTaken, "{stranger_key}");
        assert!(
            message.contains("mine") && message.contains("pick another name with --tunnel"),
            "{message}"
        );
        let answer = relay.send(with_secret(&relay, "mine", "during")).await;
        assert_eq!(answer.status, StatusCode::CREATED);
        drain_refused(ws).await;
    }
    for _ in 0..4 {
        let got = next_request(&mut owner).await;
        assert!(got.answer);
        assert_eq!(
            header_values(&got.headers, "authorization"),
            [PLANTED.as_bytes()]
        );
    }

    // The key holder may add a second listener (fan-out) and is not handed a new key.
    let (second, reply) = hello_with_key(&relay, None, PROTOCOL_VERSION, "mine", &key).await;
    assert_eq!(welcomed_key(&reply), "");
    let mut second = spawn_client(second, Behavior::Fail("the second session must not answer"));
    let answer = relay.send(with_secret(&relay, "mine", "fan-out")).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let (a, b) = (
        next_request(&mut owner).await,
        next_request(&mut second).await,
    );
    assert!(a.answer && !b.answer);
    assert_eq!(a.id, b.id);

    // A stranger may claim a name of its own and gets a key of its own.
    let (_other, reply) = hello_with_key(&relay, None, PROTOCOL_VERSION, "theirs", "").await;
    let other_key = welcomed_key(&reply);
    assert!(!other_key.is_empty() && other_key != key);
    relay.stop().await;
}

#[tokio::test]
async fn token_clients_own_by_token_and_get_no_claim_key() {
    let relay = Relay::start(false, |c| {
        c.tokens = vec![Token::new("alpha"), Token::new("beta")];
        c.allow_anonymous = true;
    })
    .await;
    let (_alpha, reply) = hello_with_key(&relay, Some("alpha"), PROTOCOL_VERSION, "tok", "x").await;
    assert_eq!(welcomed_key(&reply), "");
    let (_, reply) = hello_with_key(&relay, None, PROTOCOL_VERSION, "tok", "").await;
    assert_eq!(refusal(reply).0, Refusal::TunnelTaken);
    let (_, reply) = hello_with_key(&relay, Some("beta"), PROTOCOL_VERSION, "tok", "x").await;
    let (reason, message) = refusal(reply);
    assert_eq!(reason, Refusal::TunnelTaken);
    assert!(message.contains("another token"), "{message}");

    // An anonymous tunnel is not a token's to take, even with its key.
    let (_anon, reply) = hello_with_key(&relay, None, PROTOCOL_VERSION, "anon", "").await;
    let key = welcomed_key(&reply);
    let (_, reply) = hello_with_key(&relay, Some("alpha"), PROTOCOL_VERSION, "anon", &key).await;
    assert_eq!(refusal(reply).0, Refusal::TunnelTaken);
    relay.stop().await;
}

#[tokio::test]
async fn an_anonymous_claim_survives_a_relay_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let relay = Relay::start_in(false, data.clone(), |_| {}).await;
    let (ws, reply) = hello_with_key(&relay, None, PROTOCOL_VERSION, "kept", "").await;
    let key = welcomed_key(&reply);
    drop(ws);
    relay.stop().await;

    let relay = Relay::start_in(false, data, |_| {}).await;
    // Queued while nobody is connected; only the key holder may collect it.
    let answer = relay.send(with_secret(&relay, "kept", "queued")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let (ws, reply) = hello_with_key(&relay, None, PROTOCOL_VERSION, "kept", "").await;
    assert_eq!(refusal(reply).0, Refusal::TunnelTaken);
    drain_refused(ws).await;
    let (ws, reply) = hello_with_key(&relay, None, PROTOCOL_VERSION, "kept", &key).await;
    assert!(
        matches!(reply, RelayMessage::Welcome { queued: 1, .. }),
        "{reply:?}"
    );
    let mut owner = spawn_client(ws, Behavior::Record);
    let got = next_request(&mut owner).await;
    assert_eq!(got.body, b"queued");
    relay.stop().await;
}

#[tokio::test]
async fn an_anonymous_tunnel_from_before_claim_keys_goes_to_the_first_anonymous_claimer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    // A database as an older relay left it: the name owned by "anonymous".
    Relay::start_in(false, data.clone(), |_| {})
        .await
        .stop()
        .await;
    let db = rusqlite::Connection::open(data.join("relay.db")).unwrap();
    let now = illumitunnel::now_ms();
    db.execute(
        "INSERT INTO tunnels (name, owner, claimed_at_ms, last_seen_ms) VALUES ('legacy', 'anonymous', ?1, ?1)",
        [now],
    )
    .unwrap();
    drop(db);

    let relay = Relay::start_in(false, data.clone(), |c| {
        c.tokens = vec![Token::new("alpha")];
        c.allow_anonymous = true;
    })
    .await;
    // Still known: deliveries are queued, not 404.
    let answer = relay.post("/t/legacy/hook", "before").await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let (_, reply) = hello_with_key(&relay, Some("alpha"), PROTOCOL_VERSION, "legacy", "").await;
    assert_eq!(
        refusal(reply).0,
        Refusal::TunnelTaken,
        "a token never takes it over"
    );
    let (first, reply) = hello_with_key(&relay, None, PROTOCOL_VERSION, "legacy", "").await;
    let key = welcomed_key(&reply);
    assert_eq!(key.len(), 64);
    let (_, reply) = hello_with_key(&relay, None, PROTOCOL_VERSION, "legacy", "").await;
    assert_eq!(
        refusal(reply).0,
        Refusal::TunnelTaken,
        "taken over once, by one client"
    );
    drop(first);
    relay.stop().await;

    let relay = Relay::start_in(false, data, |_| {}).await;
    let (_, reply) = hello_with_key(&relay, None, PROTOCOL_VERSION, "legacy", "").await;
    assert_eq!(
        refusal(reply).0,
        Refusal::TunnelTaken,
        "the new owner is on disk"
    );
    let (_, reply) = hello_with_key(&relay, None, PROTOCOL_VERSION, "legacy", &key).await;
    assert!(matches!(reply, RelayMessage::Welcome { .. }), "{reply:?}");
    relay.stop().await;
}

/// Whether a session presenting `token` is refused as unauthorized: `401` at the upgrade, or a
/// `Refused` answer to `Hello` from a relay that checks after upgrading.
async fn is_unauthorized(relay: &Relay, token: Option<&str>) -> bool {
    let io = relay.connect_io(b"http/1.1").await;
    let mut req = format!("ws://{}{CONNECT_PATH}", relay.addr)
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        req.headers_mut().insert(header::AUTHORIZATION, value);
    }
    let upgrade = within("upgrade", tokio_tungstenite::client_async(req, io)).await;
    let mut ws = match upgrade {
        Ok((ws, _)) => ws,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            return response.status() == StatusCode::UNAUTHORIZED;
        }
        Err(err) => panic!("upgrade failed: {err}"),
    };
    let hello = ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        tunnel: "anything".into(),
        claim_key: String::new(),
        observer: false,
    };
    ws.send(Message::Binary(hello.encode())).await.unwrap();
    matches!(
        next_message(&mut ws).await,
        Some(RelayMessage::Refused {
            reason: Refusal::Unauthorized,
            ..
        })
    )
}

#[tokio::test]
async fn a_per_process_token_is_the_only_way_in_and_the_kept_key_outlives_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let with_token = |token: &'static str| {
        move |c: &mut illumitunnel_relay::Config| {
            c.allow_anonymous = false;
            c.process_token = Some(Token::new(token));
        }
    };
    let relay = Relay::start_in(false, data.clone(), with_token("first-process")).await;
    assert!(is_unauthorized(&relay, None).await);
    assert!(is_unauthorized(&relay, Some("guess")).await);
    let (ws, reply) =
        hello_with_key(&relay, Some("first-process"), PROTOCOL_VERSION, "local", "").await;
    let key = welcomed_key(&reply);
    assert!(!key.is_empty(), "the process's own client claims by key");
    drop(ws);
    relay.stop().await;

    // The next process has a new token; its client re-joins with the key it kept.
    let relay = Relay::start_in(false, data, with_token("second-process")).await;
    assert!(is_unauthorized(&relay, Some("first-process")).await);
    let (_, reply) = hello_with_key(
        &relay,
        Some("second-process"),
        PROTOCOL_VERSION,
        "local",
        "",
    )
    .await;
    assert_eq!(refusal(reply).0, Refusal::TunnelTaken);
    let (_, reply) = hello_with_key(
        &relay,
        Some("second-process"),
        PROTOCOL_VERSION,
        "local",
        &key,
    )
    .await;
    assert!(matches!(reply, RelayMessage::Welcome { .. }), "{reply:?}");
    relay.stop().await;
}
