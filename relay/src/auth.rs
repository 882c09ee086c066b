//! Client authentication and tunnel ownership. The bearer token a client presents on the
//! websocket upgrade is checked against the configured tokens in constant time, and its
//! SHA-256 becomes the [`Owner`] of the tunnels it claims. A client without a token (on a relay
//! that allows it, or holding the embedded relay's per-process token) owns a tunnel by a claim
//! key instead: the relay gives the first claimer a fresh random key in `Welcome` and keeps
//! only its SHA-256, so only a `Hello` carrying that key joins the tunnel again. The relay never
//! keeps a token or a claim key beyond the moment it checks one.

use illumitunnel::Token;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes in a claim key (256 bits).
const CLAIM_KEY_BYTES: usize = 32;

/// Who owns a tunnel, or who asks for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// From [`Auth::check`]: a client with no token of its own, which claims by claim key. In
    /// the relay database: a tunnel claimed anonymously before claim keys existed, which the
    /// next anonymous claimer takes over with a fresh key.
    Anonymous,
    /// SHA-256 of the client's token.
    Token([u8; 32]),
    /// SHA-256 of the claim key the relay gave the tunnel's first anonymous claimer.
    Key([u8; 32]),
}

/// What a claim does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The claimant already owns the tunnel: it joins.
    Joined(Owner),
    /// The tunnel is now the claimant's (it was free, or anonymous from before claim keys):
    /// record the owner, and give an anonymous claimer its new key.
    Claimed(Owner),
    /// Another owner holds the tunnel.
    Taken,
}

/// The one ownership rule: `current` is the tunnel's owner (`None` when free), `presented`
/// what the client proves (its token hash, or the hash of the claim key it kept), and `fresh`
/// what it would own on a new claim (its token hash, or a new claim key's hash).
pub fn decide(current: Option<Owner>, presented: Option<Owner>, fresh: Owner) -> Claim {
    match current {
        None => Claim::Claimed(fresh),
        Some(current) if presented.is_some_and(|p| p.same_as(&current)) => Claim::Joined(current),
        Some(Owner::Anonymous) if matches!(fresh, Owner::Key(_)) => Claim::Claimed(fresh),
        Some(_) => Claim::Taken,
    }
}

/// A claim key for a new anonymous claim: the key the client keeps, and the owner the relay
/// records (its SHA-256).
pub fn fresh_claim_key() -> (String, Owner) {
    let mut bytes = [0u8; CLAIM_KEY_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let key = to_hex(&bytes);
    let owner = Owner::of_claim_key(&key);
    (key, owner)
}

impl Owner {
    /// The owner a presented claim key proves.
    pub fn of_claim_key(key: &str) -> Owner {
        Owner::Key(hash(key.as_bytes()))
    }

    /// How the relay database keeps an owner: `anonymous`, the token hash in hex, or `key:`
    /// and the claim key hash in hex.
    pub fn key(&self) -> String {
        match self {
            Owner::Anonymous => ANONYMOUS.to_owned(),
            Owner::Token(hash) => to_hex(hash),
            Owner::Key(hash) => format!("{KEY_PREFIX}{}", to_hex(hash)),
        }
    }

    /// Reads [`Owner::key`] back; `None` for anything else.
    pub fn parse_key(key: &str) -> Option<Owner> {
        if key == ANONYMOUS {
            return Some(Owner::Anonymous);
        }
        match key.strip_prefix(KEY_PREFIX) {
            Some(hex) => from_hex(hex).map(Owner::Key),
            None => from_hex(key).map(Owner::Token),
        }
    }

    /// Equality that takes the same time whichever byte differs.
    fn same_as(&self, other: &Owner) -> bool {
        match (self, other) {
            (Owner::Token(a), Owner::Token(b)) | (Owner::Key(a), Owner::Key(b)) => {
                bool::from(a.ct_eq(b))
            }
            (Owner::Anonymous, Owner::Anonymous) => true,
            _ => false,
        }
    }
}

const ANONYMOUS: &str = "anonymous";
const KEY_PREFIX: &str = "key:";

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(hash)
}

/// The presented token is missing or not one of the relay's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthorized;

/// The relay's token check.
#[derive(Debug)]
pub struct Auth {
    hashes: Vec<[u8; 32]>,
    allow_anonymous: bool,
    /// The embedded relay's per-process token: when set, the only client accepted.
    process: Option<[u8; 32]>,
}

impl Auth {
    /// Keeps only the SHA-256 of each token.
    pub fn new(tokens: &[Token], allow_anonymous: bool) -> Self {
        Auth {
            hashes: tokens.iter().map(|t| hash(t.expose().as_bytes())).collect(),
            allow_anonymous,
            process: None,
        }
    }

    /// Keeps these token hashes (stored tokens are known only by their hash).
    pub fn from_hashes(hashes: Vec<[u8; 32]>, allow_anonymous: bool) -> Self {
        Auth {
            hashes,
            allow_anonymous,
            process: None,
        }
    }

    /// With `Some(hash)`, accepts only the client whose token has this SHA-256 (see
    /// [`with_process_token`](Self::with_process_token)).
    pub fn with_process_hash(mut self, hash: Option<[u8; 32]>) -> Self {
        self.process = hash;
        self
    }

    /// With `Some(token)`, accepts only clients presenting `token` (the embedded relay's
    /// per-process token); they own tunnels by claim key, so a restarted `listen`, which has a
    /// new token, re-joins its tunnel with the key it kept.
    pub fn with_process_token(mut self, token: Option<&Token>) -> Self {
        self.process = token.map(|t| hash(t.expose().as_bytes()));
        self
    }

    /// Checks an `Authorization` header value: `Ok(Owner::Token(_))` for a token that owns
    /// tunnels by its hash, `Ok(Owner::Anonymous)` for a client that claims by claim key. With
    /// no tokens configured (an `--allow-anonymous` relay) every client is accepted and a
    /// presented token still keys ownership.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<Owner, Unauthorized> {
        let token = authorization.and_then(bearer);
        if let Some(process) = &self.process {
            return match token {
                Some(token) if bool::from(hash(token).ct_eq(process)) => Ok(Owner::Anonymous),
                _ => Err(Unauthorized),
            };
        }
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
    fn the_process_token_is_the_only_way_in_and_claims_by_key() {
        let a = auth(&[], false).with_process_token(Some(&Token::new("per-process")));
        assert_eq!(a.check(Some(b"Bearer per-process")), Ok(Owner::Anonymous));
        assert_eq!(a.check(None), Err(Unauthorized));
        assert_eq!(a.check(Some(b"Bearer guess")), Err(Unauthorized));
        assert_eq!(a.check(Some(b"Bearer per-process2")), Err(Unauthorized));
        assert!(!format!("{a:?}").contains("per-process"));
    }

    #[test]
    fn claim_keys_are_random_and_only_their_hash_owns() {
        let (key, owner) = fresh_claim_key();
        let (other, _) = fresh_claim_key();
        assert_eq!(key.len(), CLAIM_KEY_BYTES * 2);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(key, other);
        assert_eq!(owner, Owner::of_claim_key(&key));
        assert!(!owner.key().contains(&key));
    }

    #[test]
    fn only_the_owner_joins_and_anonymous_tunnels_from_before_claim_keys_are_taken_over() {
        let (a, b) = (Owner::Key(hash(b"key-a")), Owner::Key(hash(b"key-b")));
        let (t, u) = (Owner::Token(hash(b"alpha")), Owner::Token(hash(b"beta")));
        // Free names go to the claimant.
        assert_eq!(decide(None, None, a), Claim::Claimed(a));
        assert_eq!(decide(None, Some(b), a), Claim::Claimed(a));
        assert_eq!(decide(None, Some(t), t), Claim::Claimed(t));
        // Only the kept key re-joins an anonymous tunnel.
        assert_eq!(decide(Some(a), Some(a), b), Claim::Joined(a));
        assert_eq!(decide(Some(a), None, b), Claim::Taken);
        assert_eq!(decide(Some(a), Some(b), b), Claim::Taken);
        assert_eq!(decide(Some(a), Some(t), t), Claim::Taken);
        // Token tunnels keep their rule.
        assert_eq!(decide(Some(t), Some(t), t), Claim::Joined(t));
        assert_eq!(decide(Some(t), Some(u), u), Claim::Taken);
        assert_eq!(decide(Some(t), Some(a), b), Claim::Taken);
        // A tunnel an older relay kept as anonymous goes to the next anonymous claimer only.
        assert_eq!(decide(Some(Owner::Anonymous), None, a), Claim::Claimed(a));
        assert_eq!(decide(Some(Owner::Anonymous), Some(t), t), Claim::Taken);
    }

    #[test]
    fn owner_keys_round_trip() {
        for owner in [
            Owner::Anonymous,
            Owner::Token(hash(b"alpha")),
            Owner::Key(hash(b"alpha")),
        ] {
            assert_eq!(Owner::parse_key(&owner.key()), Some(owner));
        }
        assert_eq!(Owner::Token([0xab; 32]).key(), "ab".repeat(32));
        assert_eq!(
            Owner::Key([0xab; 32]).key(),
            format!("key:{}", "ab".repeat(32))
        );
        for bad in [
            "",
            "anon",
            &"zz".repeat(32),
            &"ab".repeat(31),
            "é".repeat(32).as_str(),
            "key:",
            &format!("key:{}", "ab".repeat(31)),
        ] {
            assert_eq!(Owner::parse_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_tokens() {
        assert!(!format!("{:?}", auth(&["alpha"], false)).contains("alpha"));
    }
}
