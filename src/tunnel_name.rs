//! Tunnel names: `[a-z0-9-]{3,40}`, the part of the public URL after `/t/`.

use rand::Rng as _;

/// Bits of randomness in a [`TunnelName::random`] name: 4 + 4 from the words, 5 per suffix
/// character.
pub const RANDOM_BITS: u32 = ADJECTIVES.len().ilog2() + NOUNS.len().ilog2() + 5 * SUFFIX_LEN as u32;

// A random name is at least 64 bits, and each word equally likely, or this does not build.
const _: () = assert!(
    RANDOM_BITS >= 64 && ADJECTIVES.len().is_power_of_two() && NOUNS.len().is_power_of_two()
);

/// First words of random names (a power of two, so each is equally likely).
const ADJECTIVES: [&str; 16] = [
    "quiet", "brave", "amber", "swift", "lucky", "calm", "bright", "misty", "bold", "eager",
    "gentle", "sunny", "silver", "wild", "merry", "rapid",
];
/// Second words of random names.
const NOUNS: [&str; 16] = [
    "otter", "falcon", "maple", "comet", "harbor", "lynx", "cedar", "heron", "pixel", "tide",
    "meadow", "river", "spark", "willow", "ember", "quartz",
];
/// Characters of a random name's suffix: lowercase Crockford base32 (no i, l, o, u).
const SUFFIX_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Suffix characters in a random name.
const SUFFIX_LEN: usize = 12;

/// A valid tunnel name.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct TunnelName(String);

/// Why a string is not a tunnel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tunnel name {0:?}: use 3 to 40 characters of a-z, 0-9 and -")]
pub struct InvalidTunnelName(pub String);

impl TunnelName {
    /// Shortest name accepted.
    pub const MIN_LEN: usize = 3;
    /// Longest name accepted.
    pub const MAX_LEN: usize = 40;

    /// Validates `s`.
    pub fn parse(s: &str) -> Result<Self, InvalidTunnelName> {
        let ok = (Self::MIN_LEN..=Self::MAX_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(TunnelName(s.to_string()))
        } else {
            Err(InvalidTunnelName(s.chars().take(60).collect()))
        }
    }

    /// A fresh random name such as `quiet-comet-k3v9x2m4p7qa`: two words and a suffix, from
    /// the operating system's random source, [`RANDOM_BITS`] bits in all, so nobody finds a
    /// tunnel by guessing its name.
    pub fn random() -> Self {
        let mut rng = rand::rngs::OsRng;
        let adjective = ADJECTIVES[rng.gen_range(0..ADJECTIVES.len())];
        let noun = NOUNS[rng.gen_range(0..NOUNS.len())];
        let suffix: String = (0..SUFFIX_LEN)
            .map(|_| char::from(SUFFIX_ALPHABET[rng.gen_range(0..SUFFIX_ALPHABET.len())]))
            .collect();
        TunnelName(format!("{adjective}-{noun}-{suffix}"))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TunnelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["abc", "my-app-1", &"a".repeat(40)] {
            assert!(TunnelName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "My-App", "a_b_c", "a/b/c", &"a".repeat(41), "ünï", ""] {
            assert!(TunnelName::parse(bad).is_err(), "{bad}");
        }
        // A name remembered from before random names grew stays valid.
        assert!(TunnelName::parse("quiet-otter-4821").is_ok());
    }

    #[test]
    fn random_names_carry_at_least_64_bits_and_keep_the_shape() {
        let mut seen = std::collections::HashSet::new();
        let mut suffix_chars = std::collections::HashSet::new();
        for _ in 0..2000 {
            let name = TunnelName::random();
            assert_eq!(TunnelName::parse(name.as_str()), Ok(name.clone()));
            let parts: Vec<&str> = name.as_str().split('-').collect();
            assert_eq!(parts.len(), 3, "{name}");
            assert!(
                ADJECTIVES.contains(&parts[0]) && NOUNS.contains(&parts[1]),
                "{name}"
            );
            assert_eq!(parts[2].len(), SUFFIX_LEN, "{name}");
            assert!(
                parts[2].bytes().all(|b| SUFFIX_ALPHABET.contains(&b)),
                "{name}"
            );
            suffix_chars.extend(parts[2].bytes());
            assert!(seen.insert(name.clone()), "repeated {name}");
        }
        // 24,000 draws from 32 characters: every one shows up unless the draw is broken.
        assert_eq!(suffix_chars.len(), SUFFIX_ALPHABET.len());
        let longest = ADJECTIVES.iter().map(|w| w.len()).max().unwrap_or(0)
            + NOUNS.iter().map(|w| w.len()).max().unwrap_or(0)
            + SUFFIX_LEN
            + 2;
        assert!(longest <= TunnelName::MAX_LEN);
    }
}
