//! How fast one address may fail the client token check: a token bucket per sender address
//! ([`RATE`] a second, bursts of [`BURST`]), so guessing tokens costs an attacker time. Only
//! failures spend the bucket. While an address's bucket is empty, every upgrade from it is
//! answered `429` *before* its token is looked at — a right token too — or a guess that hits
//! would still get through at full speed. IPv6 senders are counted per /64, the block one
//! host usually holds. The table is bounded ([`MAX_ADDRESSES`]): settled entries go first,
//! then arbitrary ones, so many addresses cannot grow memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::warn;

/// Failed token checks per second one address may keep up.
pub const RATE: f64 = 10.0;
/// Failed token checks one address may make at once before [`RATE`] applies.
pub const BURST: f64 = 20.0;
/// At most one WARN per address in this long.
pub const WARN_EVERY: Duration = Duration::from_secs(60);
/// Most addresses the table holds (about 64 bytes each).
pub const MAX_ADDRESSES: usize = 16_384;

/// An address whose failures are over the limit: answer 429 and say when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// When the address may try again.
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Failures the address may still make now.
    allowance: f64,
    at: Instant,
    warned: Option<Instant>,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.allowance = (self.allowance + elapsed * RATE).min(BURST);
        self.at = now;
    }

    /// Full again and not warned about lately: the same as no entry at all.
    fn is_settled(&self, now: Instant) -> bool {
        let full =
            self.allowance + now.saturating_duration_since(self.at).as_secs_f64() * RATE >= BURST;
        full && self
            .warned
            .is_none_or(|at| now.saturating_duration_since(at) >= WARN_EVERY)
    }
}

/// Failed token checks per sender address.
#[derive(Debug, Default)]
pub struct FailureLimit {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl FailureLimit {
    /// Takes one failure's worth from `addr`'s bucket before a token check (give it back with
    /// [`passed`](Self::passed)); `Err` when the address is limited, logged at WARN once per
    /// [`WARN_EVERY`].
    pub fn reserve(&self, addr: IpAddr, now: Instant) -> Result<(), Limited> {
        let key = key(addr);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(&key) && buckets.len() >= MAX_ADDRESSES {
            make_room(&mut buckets, now);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            allowance: BURST,
            at: now,
            warned: None,
        });
        bucket.refill(now);
        if bucket.allowance >= 1.0 {
            bucket.allowance -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.allowance) / RATE;
        let retry_after = Duration::from_secs(wait.ceil().max(1.0) as u64);
        let due = bucket
            .warned
            .is_none_or(|at| now.saturating_duration_since(at) >= WARN_EVERY);
        if due {
            bucket.warned = Some(now);
            warn!(
                address = %key,
                "more than 10 failed client token checks a second from this address: answering 429 until it slows down (logged once a minute per address)"
            );
        }
        Err(Limited { retry_after })
    }

    /// The token check `reserve` was taken for passed: nothing is spent.
    pub fn passed(&self, addr: IpAddr) {
        let key = key(addr);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(&key) {
            bucket.allowance = (bucket.allowance + 1.0).min(BURST);
            if bucket.allowance >= BURST && bucket.warned.is_none() {
                buckets.remove(&key);
            }
        }
    }

    /// Addresses in the table.
    pub fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops settled entries; if that frees too little, arbitrary ones down to half the bound, so
/// the cost of a full table is paid once per [`MAX_ADDRESSES`] / 2 new addresses.
fn make_room(buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
    buckets.retain(|_, bucket| !bucket.is_settled(now));
    let excess = buckets.len().saturating_sub(MAX_ADDRESSES / 2);
    if excess > 0 {
        let victims: Vec<IpAddr> = buckets.keys().take(excess).copied().collect();
        for victim in victims {
            buckets.remove(&victim);
        }
    }
}

/// IPv4 as it is (IPv4-mapped IPv6 too); IPv6 by its /64.
fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_burst_then_ten_a_second_and_other_addresses_are_not_touched() {
        let limit = FailureLimit::default();
        let start = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..20 {
            assert_eq!(limit.reserve(a, start), Ok(()));
        }
        let limited = limit.reserve(a, start).unwrap_err();
        assert_eq!(limited.retry_after, Duration::from_secs(1));
        assert_eq!(limit.reserve(ip("192.0.2.2"), start), Ok(()));
        // 100 ms buys one more failure, not two.
        let later = start + Duration::from_millis(100);
        assert_eq!(limit.reserve(a, later), Ok(()));
        assert!(limit.reserve(a, later).is_err());
        // A full second buys ten.
        let second = later + Duration::from_secs(1);
        for _ in 0..10 {
            assert_eq!(limit.reserve(a, second), Ok(()));
        }
        assert!(limit.reserve(a, second).is_err());
    }

    #[test]
    fn checks_that_pass_spend_nothing() {
        let limit = FailureLimit::default();
        let now = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..100 {
            limit.reserve(a, now).unwrap();
            limit.passed(a);
        }
        assert!(limit.is_empty(), "a good client leaves no entry");
        for _ in 0..20 {
            limit.reserve(a, now).unwrap();
        }
        assert!(limit.reserve(a, now).is_err());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let limit = FailureLimit::default();
        let now = Instant::now();
        for i in 0..20 {
            limit.reserve(ip(&format!("2001:db8::{i:x}")), now).unwrap();
        }
        assert!(limit.reserve(ip("2001:db8::ffff:1"), now).is_err());
        assert_eq!(limit.reserve(ip("2001:db8:0:1::1"), now), Ok(()));
        for _ in 0..20 {
            limit.reserve(ip("::ffff:192.0.2.9"), now).unwrap();
        }
        assert!(limit.reserve(ip("192.0.2.9"), now).is_err());
    }

    #[test]
    fn many_addresses_cannot_grow_the_table_past_its_bound() {
        let limit = FailureLimit::default();
        let now = Instant::now();
        for i in 0..(3 * MAX_ADDRESSES as u32) {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = limit.reserve(addr, now);
            assert!(limit.len() <= MAX_ADDRESSES);
        }
        // Settled entries are the first to go: a limited address keeps its state.
        let limit = FailureLimit::default();
        let attacker = ip("198.51.100.7");
        for _ in 0..21 {
            let _ = limit.reserve(attacker, now);
        }
        for i in 0..(MAX_ADDRESSES as u32 - 1) {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            limit.reserve(addr, now).unwrap();
        }
        assert_eq!(limit.len(), MAX_ADDRESSES);
        // 3 s refill every allowance; only the attacker was warned about within the minute.
        let later = now + Duration::from_secs(3);
        limit.reserve(ip("203.0.113.1"), later).unwrap();
        assert_eq!(limit.len(), 2);
        assert!(limit.buckets.lock().unwrap().contains_key(&attacker));
    }

    #[test]
    fn the_warning_comes_once_a_minute() {
        let limit = FailureLimit::default();
        let now = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..20 {
            limit.reserve(a, now).unwrap();
        }
        let warned_at = |l: &FailureLimit| l.buckets.lock().unwrap()[&a].warned;
        assert!(limit.reserve(a, now).is_err());
        assert_eq!(warned_at(&limit), Some(now));
        let soon = now + Duration::from_secs(30);
        for _ in 0..400 {
            let _ = limit.reserve(a, soon);
        }
        assert_eq!(warned_at(&limit), Some(now));
        let minute = now + Duration::from_secs(61);
        for _ in 0..30 {
            let _ = limit.reserve(a, minute);
        }
        assert_eq!(warned_at(&limit), Some(minute));
    }
}
