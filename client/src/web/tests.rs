//! The web inspector's request checks: `Host` and the token.

use super::*;

fn request(host: Option<&str>, token: Option<&str>) -> Request<()> {
    let mut builder = Request::builder().uri("/api/deliveries");
    if let Some(host) = host {
        builder = builder.header(http::header::HOST, host);
    }
    if let Some(token) = token {
        builder = builder.header(TOKEN_HEADER, token);
    }
    builder.body(()).unwrap()
}

#[test]
fn only_the_bound_address_or_localhost_with_its_port_is_a_host() {
    let v4: SocketAddr = "127.0.0.1:4041".parse().unwrap();
    for host in ["127.0.0.1:4041", "localhost:4041", "LOCALHOST:4041"] {
        assert!(host_allowed(v4, &request(Some(host), None)), "{host}");
    }
    for host in [
        "evil.example",
        "evil.example:4041",
        "localhost:4040",
        "127.0.0.1",
        "127.0.0.2:4041",
        "[::1]:4041",
    ] {
        assert!(!host_allowed(v4, &request(Some(host), None)), "{host}");
    }
    assert!(!host_allowed(v4, &request(None, None)));
    let v6: SocketAddr = "[::1]:4041".parse().unwrap();
    assert!(host_allowed(v6, &request(Some("[::1]:4041"), None)));
    assert!(host_allowed(v6, &request(Some("localhost:4041"), None)));
    assert!(!host_allowed(v6, &request(Some("127.0.0.1:4041"), None)));
}

#[test]
fn the_token_must_match_exactly() {
    let token = new_token();
    assert_eq!(token.len(), 43);
    assert!(token_matches(&token, &request(None, Some(&token))));
    assert!(!token_matches(&token, &request(None, None)));
    assert!(!token_matches(&token, &request(None, Some(&token[1..]))));
    assert!(!token_matches(&token, &request(None, Some(&new_token()))));
}
