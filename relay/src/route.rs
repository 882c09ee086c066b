//! Pure request-path routing: which of the relay's endpoints a path names, and for webhook
//! paths `/t/{tunnel}/{rest}` the tunnel and the rest. The rest is passed on verbatim (the
//! client decides what it may reach); only the tunnel segment is interpreted here.

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
}
