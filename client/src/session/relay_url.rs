//! The `--relay` URL: which schemes are accepted (`http`/`https` map to `ws`/`wss`), the host
//! and port to dial, the path prefix the relay is served under, and the sentence a bad value
//! gets.

use std::fmt;

use illumitunnel::protocol::CONNECT_PATH;

/// A validated `--relay` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    pub(super) tls: bool,
    pub(super) host: String,
    pub(super) port: u16,
    /// Path prefix the relay is served under, without a trailing `/` (usually empty).
    prefix: String,
}

/// Why a `--relay` value is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid --relay {input:?}: {why}; pass the relay's base URL, e.g. https://relay.example.com"
)]
pub struct RelayUrlError {
    input: String,
    why: &'static str,
}

impl RelayUrl {
    /// Accepts `http`, `https`, `ws` and `wss` URLs (http → ws, https → wss).
    pub fn parse(s: &str) -> Result<Self, RelayUrlError> {
        let err = |why| RelayUrlError {
            input: s.to_string(),
            why,
        };
        let uri: http::Uri = s.trim().parse().map_err(|_| err("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https" | "wss") => true,
            Some("http" | "ws") => false,
            Some(_) => return Err(err("the scheme must be https, http, wss or ws")),
            None => return Err(err("missing https://")),
        };
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| err("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(err("user info is not supported; use --token"));
        }
        if uri.query().is_some() {
            return Err(err("a query is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(RelayUrl {
            tls,
            host,
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// A URL for a relay listening on loopback.
    pub fn loopback(tls: bool, port: u16) -> Self {
        RelayUrl {
            tls,
            host: "127.0.0.1".into(),
            port,
            prefix: String::new(),
        }
    }

    /// The websocket URL of the relay's connect endpoint.
    pub fn connect_url(&self) -> String {
        format!("{self}{}", CONNECT_PATH)
    }

    fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "wss" } else { "ws" };
        write!(
            f,
            "{scheme}://{}:{}{}",
            self.host_for_url(),
            self.port,
            self.prefix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls_map_to_websocket_schemes() {
        for (input, shown) in [
            ("https://relay.example.com", "wss://relay.example.com:443"),
            ("http://127.0.0.1:8080/", "ws://127.0.0.1:8080"),
            (
                "wss://relay.example.com:9443/base/",
                "wss://relay.example.com:9443/base",
            ),
            ("ws://[::1]:80", "ws://[::1]:80"),
        ] {
            assert_eq!(
                RelayUrl::parse(input).unwrap().to_string(),
                shown,
                "{input}"
            );
        }
        assert_eq!(
            RelayUrl::parse("https://r.example").unwrap().connect_url(),
            "wss://r.example:443/_illumitunnel/connect"
        );
    }

    #[test]
    fn bad_relay_urls_are_sentences() {
        for (input, needle) in [
            ("relay.example.com", "missing https://"),
            ("ftp://relay.example.com", "scheme must be"),
            ("https://", "not a URL"),
            ("https://u:p@r.example", "user info"),
        ] {
            let err = RelayUrl::parse(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
            assert!(err.starts_with("invalid --relay "), "{err}");
        }
    }
}
