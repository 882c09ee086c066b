use super::*;

fn h(n: &str, v: &[u8]) -> Header {
    (n.to_string(), v.to_vec())
}

fn origin(headers: &HeaderMap, peer: &str, trusted: &[&str]) -> Origin {
    let trusted = trusted.iter().map(|n| n.parse().unwrap()).collect();
    Origin::of(
        headers,
        peer.parse().unwrap(),
        &proxy::TrustedProxies::new(trusted),
    )
}

#[test]
fn forwarded_headers_keep_order_bytes_and_repeats() {
    let mut src = HeaderMap::new();
    src.append("host", HeaderValue::from_static("relay.example.com"));
    src.append("content-type", HeaderValue::from_static("application/json"));
    src.append(
        "x-raw",
        HeaderValue::from_bytes(&[0xff, 0x80, b'a']).unwrap(),
    );
    src.append("x-raw", HeaderValue::from_static("second"));
    src.append(
        "connection",
        HeaderValue::from_static("keep-alive, x-secret-hop"),
    );
    src.append("x-secret-hop", HeaderValue::from_static("1"));
    src.append("transfer-encoding", HeaderValue::from_static("chunked"));
    src.append("keep-alive", HeaderValue::from_static("timeout=5"));
    src.append("x-forwarded-proto", HeaderValue::from_static("gopher"));
    let out = forward_headers(
        &src,
        &origin(&src, "203.0.113.7", &[]),
        "https",
        Some(b"relay.example.com"),
    );
    assert_eq!(
        out,
        vec![
            h("content-type", b"application/json"),
            h("x-raw", &[0xff, 0x80, b'a']),
            h("x-raw", b"second"),
            h("x-forwarded-for", b"203.0.113.7"),
            h("x-forwarded-proto", b"https"),
            h("x-forwarded-host", b"relay.example.com"),
        ]
    );
}

#[test]
fn a_senders_own_origin_headers_never_pass() {
    let mut src = HeaderMap::new();
    for (name, value) in [
        ("x-forwarded-for", "198.51.100.1"),
        ("X-Real-IP", "198.51.100.2"),
        ("Forwarded", "for=198.51.100.3;proto=https"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-port", "1"),
        ("x-keep", "yes"),
    ] {
        src.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_static(value),
        );
    }
    let untrusted = origin(&src, "::ffff:127.0.0.1", &[]);
    let out = forward_headers(&src, &untrusted, "http", None);
    assert_eq!(
        out,
        vec![
            h("x-keep", b"yes"),
            h("x-forwarded-for", b"127.0.0.1"),
            h("x-forwarded-proto", b"http")
        ]
    );
    // From a trusted proxy only its X-Forwarded-For chain is believed, from the sender on.
    let trusted = origin(&src, "127.0.0.1", &["127.0.0.1"]);
    let out = forward_headers(&src, &trusted, "https", Some(b"relay.example.com"));
    assert_eq!(
        out,
        vec![
            h("x-keep", b"yes"),
            h("x-forwarded-for", b"198.51.100.1, 127.0.0.1"),
            h("x-forwarded-proto", b"https"),
            h("x-forwarded-host", b"relay.example.com"),
        ]
    );
}

#[test]
fn answers_drop_hop_by_hop_and_length_and_keep_the_rest() {
    let headers = vec![
        h("content-type", b"text/plain"),
        h("set-cookie", b"a=1"),
        h("set-cookie", b"b=2"),
        h("content-length", b"999"),
        h("connection", b"close"),
        h("x-bin", &[0xe9]),
        h("bad name", b"x"),
    ];
    let response = answer("t", 418, headers, Bytes::from_static(b"teapot")).unwrap();
    assert_eq!(response.status(), 418);
    let got: Vec<(String, Vec<u8>)> = response
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect();
    assert_eq!(
        got,
        vec![
            h("content-type", b"text/plain"),
            h("set-cookie", b"a=1"),
            h("set-cookie", b"b=2"),
            h("x-bin", &[0xe9])
        ]
    );
    assert!(answer("t", 101, vec![], Bytes::new()).is_err());
    assert!(answer("t", 1000, vec![], Bytes::new()).is_err());
}

#[tokio::test]
async fn a_push_never_falls_through_to_an_observer() {
    let (gone_tx, gone_rx) = tokio::sync::mpsc::channel(8);
    drop(gone_rx);
    let forwarder = SessionHandle::new(1, gone_tx);
    let (observer_tx, mut observer_rx) = tokio::sync::mpsc::channel(8);
    let observer = SessionHandle::new(2, observer_tx);
    let outgoing = Arc::new(OutgoingDelivery::new(
        QueuedDelivery {
            id: DeliveryId::generate(),
            received_at_ms: 0,
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: vec![],
            body: Bytes::from_static(b"{}"),
        },
        false,
    ));
    // The only forwarding session vanished: the delivery is queued, the observer gets nothing.
    let exchanged = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        exchange(&[forwarder, observer], 1, &outgoing, true),
    )
    .await;
    assert!(matches!(exchanged, Ok(Exchange::NoSession)));
    assert!(observer_rx.try_recv().is_err());
}
