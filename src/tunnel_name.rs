//! Tunnel names: `[a-z0-9-]{3,40}`, the part of the public URL after `/t/`.

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

    /// A fresh random name such as `quiet-otter-4821`.
    pub fn random() -> Self {
        const ADJ: &[&str] = &[
            "quiet", "brave", "amber", "swift", "lucky", "calm", "bright", "misty", "bold", "eager",
        ];
        const NOUN: &[&str] = &[
            "otter", "falcon", "maple", "comet", "harbor", "lynx", "cedar", "heron", "pixel",
            "tide",
        ];
        let a = ADJ[rand::random::<usize>() % ADJ.len()];
        let n = NOUN[rand::random::<usize>() % NOUN.len()];
        TunnelName(format!("{a}-{n}-{:04}", rand::random::<u16>() % 10_000))
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
        for _ in 0..50 {
            let name = TunnelName::random();
            assert_eq!(TunnelName::parse(name.as_str()), Ok(name));
        }
    }
}
