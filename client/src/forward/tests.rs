//! Forwarding against real local servers on 127.0.0.1, and the target's parsing and path
//! guards.

use super::*;

fn target(s: &str) -> Target {
    Target::parse(s).unwrap()
}

#[test]
fn parses_good_targets() {
    let t = target("http://localhost:3000/webhooks/illumichat/");
    assert_eq!(t.to_string(), "http://localhost:3000/webhooks/illumichat");
    assert_eq!(t.host_port(), "localhost:3000");
    assert_eq!(
        target("https://example.test").host_port(),
        "example.test:443"
    );
    assert_eq!(
        target("http://[::1]:8080").to_string(),
        "http://[::1]:8080/"
    );
}

#[test]
fn rejects_bad_targets_with_a_sentence() {
    for (input, needle) in [
        ("localhost:3000", "missing http:// or https://"),
        ("ftp://host/x", "only http:// and https://"),
        ("http://", "not a URL"),
        ("not a url", "not a URL"),
        ("http://user:pw@localhost:3000", "user info"),
        ("/just/a/path", "not a URL"),
    ] {
        let err = Target::parse(input).unwrap_err().to_string();
        assert!(err.contains(needle), "{input}: {err}");
        assert!(!err.ends_with('.'), "{err}");
    }
}

#[test]
fn delivery_path_extends_the_forward_path() {
    let t = target("http://127.0.0.1:3000/webhooks/illumichat");
    assert_eq!(
        t.uri_for("/", "").to_string(),
        "http://127.0.0.1:3000/webhooks/illumichat"
    );
    assert_eq!(
        t.uri_for("", "").to_string(),
        "http://127.0.0.1:3000/webhooks/illumichat"
    );
    assert_eq!(
        t.uri_for("/sub/x", "a=1&b=%20").to_string(),
        "http://127.0.0.1:3000/webhooks/illumichat/sub/x?a=1&b=%20"
    );
    let root = target("http://127.0.0.1:3000");
    assert_eq!(
        root.uri_for("/x", "").to_string(),
        "http://127.0.0.1:3000/x"
    );
    assert_eq!(
        root.uri_for("//evil.example/x", "").to_string(),
        "http://127.0.0.1:3000/evil.example/x"
    );
    let with_query = target("http://127.0.0.1:3000/h?key=1");
    assert_eq!(
        with_query.uri_for("/", "a=2").to_string(),
        "http://127.0.0.1:3000/h?key=1&a=2"
    );
}

#[test]
fn dot_segments_never_climb_above_the_forward_path() {
    let t = target("http://127.0.0.1:3000/hooks");
    for (path, want) in [
        ("/../../admin", "/hooks/admin"),
        ("/a/../b", "/hooks/b"),
        ("/a/%2E%2e/%2e/b", "/hooks/b"),
        ("/a/./", "/hooks/a/"),
        ("/a/..", "/hooks"),
        ("/plain/path", "/hooks/plain/path"),
    ] {
        assert_eq!(t.uri_for(path, "").path(), want, "{path}");
    }
}

#[test]
fn hostile_paths_never_leave_the_origin() {
    let t = target("http://127.0.0.1:3000/hooks");
    for hostile in [
        "//evil.example/x",
        "/..%2f..",
        "/../../admin",
        "http://evil/x",
        "@evil",
        "/@evil",
        "evil.example:80/x",
        "/x#frag",
        "/x?smuggled=1",
        "/\r\nHost: evil",
        "/ü",
        "//",
        "",
    ] {
        let uri = t.uri_for(hostile, "q=\r\n#x");
        assert_eq!(uri.scheme_str(), Some("http"), "{hostile}");
        assert_eq!(
            uri.authority().map(|a| a.as_str()),
            Some("127.0.0.1:3000"),
            "{hostile}"
        );
        assert!(uri.path().starts_with("/hooks"), "{hostile} -> {uri}");
        // Re-parsing the text form must land on the same origin too.
        let reparsed: Uri = uri.to_string().parse().unwrap();
        assert_eq!(reparsed.authority(), uri.authority(), "{hostile}");
        assert_eq!(reparsed.path(), uri.path(), "{hostile}");
    }
    assert_eq!(
        t.uri_for("//evil.example/x", "").to_string(),
        "http://127.0.0.1:3000/hooks//evil.example/x"
    );
    assert_eq!(
        t.uri_for("http://evil/x", "").to_string(),
        "http://127.0.0.1:3000/hooks/http://evil/x"
    );
    assert_eq!(
        t.uri_for("/x?smuggled=1#f", "").path(),
        "/hooks/x%3Fsmuggled=1%23f"
    );
}

#[test]
fn error_sentences_name_the_cause() {
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    assert_eq!(
        describe_error(&refused, "127.0.0.1:3000", ""),
        "connection refused to 127.0.0.1:3000"
    );
}

#[test]
fn certificate_errors_name_the_cause_and_the_flags() {
    #[derive(Debug)]
    struct CaUsedAsEndEntity;
    impl std::fmt::Display for CaUsedAsEndEntity {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("CaUsedAsEndEntity")
        }
    }
    impl std::error::Error for CaUsedAsEndEntity {}
    // As the TLS connector reports it: an io::Error around an io::Error around rustls's.
    let wrapped = |cause: rustls::CertificateError| {
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(cause),
        );
        std::io::Error::other(tls)
    };
    let mkcert = wrapped(rustls::CertificateError::Other(rustls::OtherError(
        std::sync::Arc::new(CaUsedAsEndEntity),
    )));
    let sentence = describe_error(&mkcert, "localhost:3443", FORWARD_TRUST_REMEDY);
    assert!(
        sentence.starts_with(
            "localhost:3443 presented a CA certificate as its server certificate (CaUsedAsEndEntity)"
        ),
        "{sentence}"
    );
    assert!(
        sentence.contains("; pass its CA with --forward-ca PEM"),
        "{sentence}"
    );
    assert!(sentence.contains("--forward-insecure"), "{sentence}");
    assert!(!sentence.contains("OtherError"), "{sentence}");
    let unknown = wrapped(rustls::CertificateError::UnknownIssuer);
    assert_eq!(
        describe_error(&unknown, "localhost:3443", ""),
        "localhost:3443 presented a certificate from an issuer this client does not trust"
    );
}

fn envelope(body: &'static [u8], headers: Vec<Header>) -> RequestRecord {
    RequestRecord {
        method: "POST".into(),
        path: "/sub".into(),
        query: "q=1".into(),
        headers,
        body: Bytes::from_static(body),
    }
}

#[tokio::test]
async fn events_skip_and_routes_pick_the_path() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let rules = Rules {
        only: Some(vec!["ticket.created".into()]),
        routes: vec![("ticket.created".into(), "/tickets/".into())],
    };
    let f = Forwarder::new(target(&format!("http://127.0.0.1:{port}/hooks"))).with_rules(&rules);

    let skipped = f
        .forward(&envelope(br#"{"event":"lead.captured"}"#, vec![]))
        .await;
    assert!(skipped.skipped);
    assert_eq!(skipped.source, Source::Tunnel);
    let answer = skipped.result.unwrap();
    assert_eq!((answer.status, &answer.body[..]), (200, SKIPPED_BODY));

    let routed = f
        .forward(&envelope(
            br#"{"event":"ticket.created"}"#,
            vec![(TRIGGER_HEADER.into(), b"1".to_vec())],
        ))
        .await;
    assert!(!routed.skipped);
    assert_eq!(routed.source, Source::Trigger);
    assert_eq!(
        routed.uri.to_string(),
        format!("http://127.0.0.1:{port}/tickets/sub?q=1")
    );
    assert!(routed.result.is_err(), "nothing listens there");

    // No readable event: forwarded to the --forward-to path, never skipped.
    let plain = f.forward(&envelope(b"not json", vec![])).await;
    assert!(!plain.skipped);
    assert_eq!(
        plain.uri.to_string(),
        format!("http://127.0.0.1:{port}/hooks/sub?q=1")
    );
}

#[tokio::test]
async fn refused_local_server_is_one_sentence() {
    // Bind then drop to get a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let f = Forwarder::new(target(&format!("http://127.0.0.1:{port}/hooks")));
    let out = f
        .forward(&RequestRecord {
            method: "POST".into(),
            path: "/".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        out.result.unwrap_err(),
        format!("connection refused to 127.0.0.1:{port}")
    );
}

#[tokio::test]
async fn a_local_response_over_max_body_is_cut_and_fails() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Two requests at most, each answered with 5,000 bytes.
        for _ in 0..2 {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0; 4096];
            let _ = conn.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-length: 5000\r\nconnection: close\r\n\r\n";
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(&[b'x'; 5000]).await;
        }
    });
    let f = Forwarder::new(target(&format!("http://{addr}/hooks")));
    let fits = f
        .clone()
        .with_max_body(5000)
        .forward(&envelope(b"{}", vec![]))
        .await;
    assert_eq!(fits.result.unwrap().body.len(), 5000);
    let cut = f
        .with_max_body(1000)
        .forward(&envelope(b"{}", vec![]))
        .await;
    let err = cut.result.unwrap_err();
    assert!(err.contains("over --max-body (1000 bytes)"), "{err}");
    assert!(
        err.contains("the response was cut and the sender got 502"),
        "{err}"
    );
}

#[tokio::test]
async fn a_local_response_head_too_large_for_the_link_fails_with_a_sentence() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0; 4096];
        let _ = conn.read(&mut buf).await;
        let big = "v".repeat(50_000);
        let head = format!(
            "HTTP/1.1 200 OK\r\nx-a: {big}\r\nx-b: {big}\r\nx-c: {big}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
        );
        let _ = conn.write_all(head.as_bytes()).await;
    });
    let f = Forwarder::new(target(&format!("http://{addr}/hooks")));
    let err = f
        .forward(&envelope(b"{}", vec![]))
        .await
        .result
        .unwrap_err();
    assert!(err.contains("bytes of headers, more than the"), "{err}");
    assert!(err.contains("the sender got 502"), "{err}");
}
