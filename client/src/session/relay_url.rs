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

    /// Whether the relay is on this machine: `localhost`, 127.0.0.0/8 or ::1 (also as
    /// `::ffff:127.x.y.z`). Nothing sent to it crosses a network.
    pub fn is_loopback(&self) -> bool {
        use std::net::IpAddr;
        let host = self.host.trim_end_matches('.');
        if host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        match host.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => v4.is_loopback(),
            Ok(IpAddr::V6(v6)) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            Err(_) => false,
        }
    }

    /// Whether a session would cross a network unencrypted: `http://` (or `ws://`) to a host
    /// that is not this machine. The token, or an anonymous tunnel's claim key, and every
    /// delivery would be readable by anyone on the way.
    pub fn is_cleartext_remote(&self) -> bool {
        !self.tls && !self.is_loopback()
    }

    /// The rule for `--allow-http`: a cleartext relay off this machine is refused with a
    /// sentence unless `allow_http`; when allowed, the warning line to print (once, on stderr).
    pub fn check_cleartext(&self, allow_http: bool) -> Result<Option<String>, String> {
        if !self.is_cleartext_remote() {
            return Ok(None);
        }
        let url = self.as_http();
        if allow_http {
            Ok(Some(format!(
                "warning: relay {url} is http:// and not on this machine: the token and every delivery cross the network unencrypted (--allow-http)"
            )))
        } else {
            Err(format!(
                "refusing to send the token to relay {url} unencrypted: it is http:// and not on this machine, so anyone on the network could read the token and every delivery; use an https:// relay, or pass --allow-http to send it anyway"
            ))
        }
    }

    /// The relay as the user wrote it, with `http`/`https` for the scheme.
    fn as_http(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!(
            "{scheme}://{}:{}{}",
            self.host_for_url(),
            self.port,
            self.prefix
        )
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
    fn only_cleartext_relays_off_this_machine_need_allow_http() {
        for (input, remote) in [
            ("http://127.0.0.1:8080", false),
            ("http://127.9.9.9", false),
            ("ws://[::1]:80", false),
            ("http://[::ffff:127.0.0.1]:80", false),
            ("http://localhost:8080", false),
            ("http://LOCALHOST.:8080", false),
            ("https://relay.example.com", false),
            ("wss://10.0.0.5", false),
            ("http://relay.example.com", true),
            ("ws://10.0.0.5:8080", true),
            ("http://[2001:db8::1]:8080", true),
            ("http://128.0.0.1", true),
            ("http://localhost.example.com", true),
        ] {
            let url = RelayUrl::parse(input).unwrap();
            assert_eq!(url.is_cleartext_remote(), remote, "{input}");
            assert_eq!(url.check_cleartext(false).is_err(), remote, "{input}");
            assert_eq!(
                url.check_cleartext(true).unwrap().is_some(),
                remote,
                "{input}"
            );
        }
        let url = RelayUrl::parse("http://relay.example.com:8080/base").unwrap();
        let refused = url.check_cleartext(false).unwrap_err();
        assert!(
            refused.starts_with("refusing to send the token to relay http://relay.example.com:8080/base unencrypted: ")
                && refused.ends_with("; use an https:// relay, or pass --allow-http to send it anyway"),
            "{refused}"
        );
        let warning = url.check_cleartext(true).unwrap().unwrap();
        assert!(
            warning.starts_with("warning: relay http://relay.example.com:8080/base "),
            "{warning}"
        );
        assert!(!warning.contains('\n') && !refused.contains('\n'));
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
