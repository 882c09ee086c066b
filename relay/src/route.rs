//! Pure request routing: which of the relay's endpoints a path names, and for webhook paths
//! `/t/{tunnel}/{rest}` the tunnel and the rest. The rest is passed on verbatim (the client
//! decides what it may reach); only the tunnel segment is interpreted here. Before routing,
//! [`check_method`] and [`check_path`] refuse what no webhook sender sends and what local
//! frameworks would read as another path (`%2f`, `%5c`, `..;`).

use illumitunnel::protocol::CONNECT_PATH;

/// What a request path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/healthz`.
    Healthz,
    /// `/metrics`.
    Metrics,
    /// The client websocket, [`CONNECT_PATH`].
    Connect,
    /// A webhook delivery for `tunnel`; `rest` starts with `/`.
    Tunnel {
        /// The raw tunnel segment (not yet validated as a name).
        tunnel: &'a str,
        /// The path below the tunnel, `/` when empty.
        rest: &'a str,
    },
    /// Anything else.
    NotFound,
}

/// Whether a webhook sender would use `method`: `POST PUT PATCH DELETE GET HEAD OPTIONS`.
pub fn check_method(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
    ]
    .contains(method)
}

/// Refuses a path that a local server could decode into another path: an encoded slash or
/// backslash (`%2f`, `%5c`, any case), or a `;` parameter on a dot segment (`..;`, `.;`),
/// which Tomcat and Spring strip before resolving `..`.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") {
        return Err("encoded slash (%2f)");
    }
    if lower.contains("%5c") || path.contains('\\') {
        return Err("backslash");
    }
    let dot_parameter = lower.split('/').any(|segment| {
        segment.split_once(';').is_some_and(|(name, _)| {
            let name = name.replace("%2e", ".");
            name == "." || name == ".."
        })
    });
    if dot_parameter {
        return Err("parameter on a dot segment (..;)");
    }
    Ok(())
}

/// Routes a request path (without the query).
pub fn parse(path: &str) -> Route<'_> {
    match path {
        "/healthz" => return Route::Healthz,
        "/metrics" => return Route::Metrics,
        p if p == CONNECT_PATH => return Route::Connect,
        _ => {}
    }
    let Some(after) = path.strip_prefix("/t/") else {
        return Route::NotFound;
    };
    let (tunnel, rest) = match after.find('/') {
        Some(i) => after.split_at(i),
        None => (after, "/"),
    };
    if tunnel.is_empty() {
        return Route::NotFound;
    }
    Route::Tunnel { tunnel, rest }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel<'a>(tunnel: &'a str, rest: &'a str) -> Route<'a> {
        Route::Tunnel { tunnel, rest }
    }

    #[test]
    fn routes() {
        let cases = [
            ("/healthz", Route::Healthz),
            ("/metrics", Route::Metrics),
            ("/_illumitunnel/connect", Route::Connect),
            ("/t/my-app", tunnel("my-app", "/")),
            ("/t/my-app/", tunnel("my-app", "/")),
            (
                "/t/my-app/webhooks/illumichat",
                tunnel("my-app", "/webhooks/illumichat"),
            ),
            ("/", Route::NotFound),
            ("/t", Route::NotFound),
            ("/t/", Route::NotFound),
            ("/t//x", Route::NotFound),
            ("/healthz/", Route::NotFound),
            ("/_illumitunnel/connect/x", Route::NotFound),
            ("/T/my-app/x", Route::NotFound),
            ("*", Route::NotFound),
        ];
        for (path, want) in cases {
            assert_eq!(parse(path), want, "{path}");
        }
    }

    #[test]
    fn hostile_paths_stay_below_the_tunnel() {
        // The rest is carried verbatim; it never changes which tunnel is addressed.
        let cases = [
            ("/t/abc//evil.example/x", tunnel("abc", "//evil.example/x")),
            (
                "/t/abc/../../etc/passwd",
                tunnel("abc", "/../../etc/passwd"),
            ),
            ("/t/abc/..%2f..%2fadmin", tunnel("abc", "/..%2f..%2fadmin")),
            (
                "/t/abc/http://evil.example/",
                tunnel("abc", "/http://evil.example/"),
            ),
            ("/t/%61bc/x", tunnel("%61bc", "/x")),
            ("/t/../metrics", tunnel("..", "/metrics")),
            ("/t/abc\0/x", tunnel("abc\0", "/x")),
        ];
        for (path, want) in cases {
            assert_eq!(parse(path), want, "{path}");
        }
        let long = format!("/t/{}/x", "a".repeat(100_000));
        assert!(matches!(parse(&long), Route::Tunnel { rest: "/x", .. }));
    }

    #[test]
    fn paths_a_local_framework_would_read_as_another_path_are_refused() {
        for path in [
            "/t/abc/..%2f..%2fadmin",
            "/t/abc/a%2Fb",
            "/t/abc/..%5cadmin",
            "/t/abc/a%5Cb",
            "/t/abc/a\\b",
            "/t/abc/..;/admin",
            "/t/abc/.;/admin",
            "/t/abc/..;jsessionid=1/admin",
            "/t/abc/%2e%2e;/admin",
            "/t/abc/%2E%2E;/admin",
        ] {
            assert!(check_path(path).is_err(), "{path}");
        }
        for path in [
            "/t/abc/webhooks/illumichat",
            "/t/abc/a;b=1",
            "/t/abc/..a;b",
            "/t/abc/%20space",
            "/t/abc/../x",
            "/healthz",
        ] {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn only_webhook_methods_pass() {
        for m in ["POST", "PUT", "PATCH", "DELETE", "GET", "HEAD", "OPTIONS"] {
            assert!(check_method(&m.parse().unwrap()), "{m}");
        }
        for m in ["CONNECT", "TRACE", "PROPFIND", "BREW"] {
            assert!(!check_method(&m.parse().unwrap()), "{m}");
        }
    }
}
