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

impl Owner {
    /// How the relay database keeps an owner: `anonymous` or the hash in hex.
    pub fn key(&self) -> String {
        match self {
            Owner::Anonymous => "anonymous".to_owned(),
            Owner::Token(hash) => hash.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Reads [`Owner::key`] back; `None` for anything else.
    pub fn parse_key(key: &str) -> Option<Owner> {
        if key == "anonymous" {
            return Some(Owner::Anonymous);
        }
        if key.len() != 64 || !key.is_ascii() {
            return None;
        }
        let mut hash = [0u8; 32];
        for (i, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&key[i * 2..i * 2 + 2], 16).ok()?;
        }
        Some(Owner::Token(hash))
    }
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

    /// Keeps these token hashes (stored tokens are known only by their hash).
    pub fn from_hashes(hashes: Vec<[u8; 32]>, allow_anonymous: bool) -> Self {
        Auth {
            hashes,
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
    fn owner_keys_round_trip() {
        for owner in [Owner::Anonymous, Owner::Token(hash(b"alpha"))] {
            assert_eq!(Owner::parse_key(&owner.key()), Some(owner));
        }
        assert_eq!(Owner::Token([0xab; 32]).key(), "ab".repeat(32));
        for bad in [
            "",
            "anon",
            &"zz".repeat(32),
            &"ab".repeat(31),
            "é".repeat(32).as_str(),
        ] {
            assert_eq!(Owner::parse_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_tokens() {
        assert!(!format!("{:?}", auth(&["alpha"], false)).contains("alpha"));
    }
}
