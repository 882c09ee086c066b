//! Client authentication: the bearer token a client presents on the websocket upgrade is
//! checked against the configured tokens in constant time, and its SHA-256 becomes the
//! [`Owner`] key of the tunnels it claims, so the relay never keeps a token beyond start-up.

use illumitunnel::Token;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Who claims a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A client that presented no token, on a relay that allows it.
    Anonymous,
    /// SHA-256 of the client's token.
    Token([u8; 32]),
}

/// The presented token is missing or not one of the relay's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthorized;

/// The relay's token check.
#[derive(Debug)]
pub struct Auth {
    hashes: Vec<[u8; 32]>,
    allow_anonymous: bool,
}

impl Auth {
    /// Keeps only the SHA-256 of each token.
    pub fn new(tokens: &[Token], allow_anonymous: bool) -> Self {
        Auth {
            hashes: tokens.iter().map(|t| hash(t.expose().as_bytes())).collect(),
            allow_anonymous,
        }
    }

    /// Checks an `Authorization` header value. With no tokens configured (a loopback relay)
    /// every client is accepted and a presented token still keys ownership.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<Owner, Unauthorized> {
        let token = authorization.and_then(bearer);
        match token {
            None if self.allow_anonymous || self.hashes.is_empty() => Ok(Owner::Anonymous),
            None => Err(Unauthorized),
            Some(token) => {
                let presented = hash(token);
                if self.hashes.is_empty() {
                    return Ok(Owner::Token(presented));
                }
                // Compare against every token so timing does not tell which one matched.
                let matched = self
                    .hashes
                    .iter()
                    .fold(subtle::Choice::from(0), |acc, h| acc | h.ct_eq(&presented));
                if bool::from(matched) {
                    Ok(Owner::Token(presented))
                } else {
                    Err(Unauthorized)
                }
            }
        }
    }
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The token of `Bearer TOKEN` (scheme case-insensitive); `None` when absent or empty.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = value[SCHEME.len()..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(tokens: &[&str], anonymous: bool) -> Auth {
        let tokens: Vec<Token> = tokens.iter().map(|t| Token::new(*t)).collect();
        Auth::new(&tokens, anonymous)
    }

    #[test]
    fn token_checks() {
        let a = auth(&["alpha", "beta"], false);
        assert_eq!(
            a.check(Some(b"Bearer beta")),
            Ok(Owner::Token(hash(b"beta")))
        );
        assert_eq!(
            a.check(Some(b"bearer  alpha ")),
            Ok(Owner::Token(hash(b"alpha")))
        );
        assert_eq!(a.check(Some(b"Bearer gamma")), Err(Unauthorized));
        assert_eq!(a.check(Some(b"Basic YWxwaGE=")), Err(Unauthorized));
        assert_eq!(a.check(Some(b"Bearer ")), Err(Unauthorized));
        assert_eq!(a.check(None), Err(Unauthorized));
        assert_ne!(
            a.check(Some(b"Bearer alpha")),
            a.check(Some(b"Bearer beta"))
        );
    }

    #[test]
    fn anonymous_and_open_relays() {
        let a = auth(&["alpha"], true);
        assert_eq!(a.check(None), Ok(Owner::Anonymous));
        assert_eq!(a.check(Some(b"Bearer wrong")), Err(Unauthorized));
        let open = auth(&[], false);
        assert_eq!(open.check(None), Ok(Owner::Anonymous));
        assert_eq!(
            open.check(Some(b"Bearer any")),
            Ok(Owner::Token(hash(b"any")))
        );
    }

    #[test]
    fn debug_never_shows_tokens() {
        assert!(!format!("{:?}", auth(&["alpha"], false)).contains("alpha"));
    }
}
