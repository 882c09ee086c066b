//! Reconnect delays: exponential with full jitter, capped, and reset once a connection has
//! proved stable. Pure: the caller sleeps, and the random source is injected so tests are exact.

use std::time::Duration;

/// Ceiling of the first delay; each failed attempt doubles it.
pub const BASE: Duration = Duration::from_secs(1);
/// Longest delay between attempts.
pub const CAP: Duration = Duration::from_secs(30);
/// A connection that stayed up this long resets the delays to [`BASE`].
pub const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Shortest delay, so full jitter never turns into a busy loop.
pub const FLOOR: Duration = Duration::from_millis(100);

/// Reconnect delay schedule. `rng` returns a uniform value in `[0, 1)`.
pub struct Backoff<R> {
    attempt: u32,
    rng: R,
}

impl<R: FnMut() -> f64> Backoff<R> {
    /// A schedule starting at [`BASE`].
    pub fn new(rng: R) -> Self {
        Backoff { attempt: 0, rng }
    }

    /// The delay before the next attempt: uniform in `[0, min(CAP, BASE * 2^n)]`, at least [`FLOOR`].
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = BASE
            .checked_mul(1u32 << self.attempt.min(16))
            .unwrap_or(CAP)
            .min(CAP);
        self.attempt = self.attempt.saturating_add(1);
        let r = (self.rng)().clamp(0.0, 1.0);
        ceiling.mul_f64(r).max(FLOOR)
    }

    /// The delay before reconnecting after an established connection dropped: the usual
    /// schedule, but at most half a keepalive interval, so a client that was asleep (its
    /// connection found dead on waking) is back within one interval.
    pub fn after_drop(&mut self, keepalive: Duration) -> Duration {
        let ceiling = (keepalive / 2).max(Duration::from_millis(1));
        self.next_delay().min(ceiling)
    }

    /// Tells the schedule how long the last connection stayed up; a stable one resets it.
    pub fn connection_lasted(&mut self, uptime: Duration) {
        if uptime >= STABLE_AFTER {
            self.attempt = 0;
        }
    }
}

/// A schedule using the thread-local random generator.
pub fn with_thread_rng() -> Backoff<impl FnMut() -> f64> {
    Backoff::new(rand::random::<f64>)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::new(|| 1.0);
        let secs: Vec<u64> = (0..8).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling_with_a_floor() {
        let mut b = Backoff::new(|| 0.0);
        assert_eq!(b.next_delay(), FLOOR);
        let mut b = Backoff::new(|| 0.5);
        b.next_delay();
        b.next_delay();
        assert_eq!(b.next_delay(), Duration::from_secs(2));
    }

    #[test]
    fn many_attempts_never_overflow() {
        let mut b = Backoff::new(|| 1.0);
        for _ in 0..1000 {
            assert!(b.next_delay() <= CAP);
        }
    }

    #[test]
    fn stable_connection_resets_short_one_does_not() {
        let mut b = Backoff::new(|| 1.0);
        for _ in 0..5 {
            b.next_delay();
        }
        b.connection_lasted(Duration::from_secs(5));
        assert_eq!(b.next_delay(), CAP);
        b.connection_lasted(STABLE_AFTER);
        assert_eq!(b.next_delay(), BASE);
    }

    #[test]
    fn a_dropped_connection_is_retried_within_half_a_keepalive() {
        let mut b = Backoff::new(|| 1.0);
        for _ in 0..6 {
            b.next_delay();
        }
        assert_eq!(
            b.after_drop(Duration::from_millis(300)),
            Duration::from_millis(150)
        );
        assert_eq!(
            b.after_drop(Duration::from_secs(10)),
            Duration::from_secs(5)
        );
        let mut b = Backoff::new(|| 0.0);
        assert_eq!(
            b.after_drop(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
        assert_eq!(b.after_drop(Duration::from_secs(10)), FLOOR);
    }

    /// What one connection attempt of the simulated client does.
    #[derive(Clone, Copy)]
    enum Attempt {
        /// The relay cannot be reached.
        Refused,
        /// Connected, then dropped after this long.
        Up(Duration),
    }

    /// The session's reconnect loop in miniature (`session::run`): a refused attempt waits
    /// `next_delay`, a dropped connection reports its uptime and waits `after_drop`. Returns, for
    /// each attempt after the first, how long the clock moved between the previous attempt
    /// ending and this one starting.
    async fn waits_before_attempts<R: FnMut() -> f64>(
        backoff: &mut Backoff<R>,
        attempts: &[Attempt],
        keepalive: Duration,
    ) -> Vec<Duration> {
        let mut waits = Vec::with_capacity(attempts.len());
        let mut ended = tokio::time::Instant::now();
        for attempt in attempts {
            waits.push(ended.elapsed());
            let delay = match *attempt {
                Attempt::Refused => backoff.next_delay(),
                Attempt::Up(uptime) => {
                    let up = tokio::time::Instant::now();
                    tokio::time::sleep(uptime).await;
                    backoff.connection_lasted(up.elapsed());
                    backoff.after_drop(keepalive)
                }
            };
            ended = tokio::time::Instant::now();
            tokio::time::sleep(delay).await;
        }
        waits.remove(0);
        waits
    }

    /// A deterministic uniform source in `[0, 1)` (xorshift), seeded.
    fn seeded(mut state: u64) -> impl FnMut() -> f64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// The full-jitter ceiling before the `n`th retry (0-based): 1 s doubling, 30 s at most.
    fn ceiling(n: usize) -> Duration {
        (BASE * 2u32.pow(n.min(5) as u32)).min(CAP)
    }

    #[tokio::test(start_paused = true)]
    async fn waits_between_refused_attempts_stay_within_full_jitter_and_the_cap() {
        let refused = [Attempt::Refused; 41];
        let mut b = Backoff::new(seeded(0x5eed));
        let waits = waits_before_attempts(&mut b, &refused, Duration::from_secs(10)).await;
        for (n, wait) in waits.iter().enumerate() {
            assert!(
                *wait >= FLOOR && *wait <= ceiling(n),
                "wait {n} was {wait:?}, outside [{FLOOR:?}, {:?}]: {waits:?}",
                ceiling(n)
            );
        }
        // Jitter really spreads the waits: capped ones land low as well as high.
        let capped = &waits[5..];
        let (low, high) = (CAP / 4, CAP * 3 / 4);
        assert!(capped.iter().any(|w| *w < low), "{capped:?}");
        assert!(capped.iter().any(|w| *w > high), "{capped:?}");

        // The extremes of the random source reach the floor and the cap, never beyond.
        let mut script = [0.0, 0.999_999, 0.0]
            .into_iter()
            .chain(std::iter::repeat(1.0));
        let mut b = Backoff::new(move || script.next().unwrap_or(1.0));
        let waits = waits_before_attempts(&mut b, &[Attempt::Refused; 1001], CAP).await;
        assert_eq!(waits[0], FLOOR, "a zero draw still waits the floor");
        assert!(waits[1] > Duration::from_millis(1999), "{:?}", waits[1]);
        assert_eq!(waits[2], FLOOR);
        assert_eq!(
            waits.iter().max(),
            Some(&CAP),
            "a thousand failures wait 30 s at most"
        );
        assert!(waits[5..].iter().all(|w| *w == CAP));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_up_for_thirty_seconds_resets_the_waits_and_a_shorter_one_does_not() {
        use Attempt::{Refused, Up};
        let keepalive = Duration::from_secs(10);
        let mut b = Backoff::new(|| 1.0);
        let mut attempts = vec![Refused; 6];
        attempts.extend([Up(Duration::from_secs(5)), Refused, Refused]);
        let waits = waits_before_attempts(&mut b, &attempts, keepalive).await;
        let secs = |w: &[Duration]| w.iter().map(Duration::as_secs).collect::<Vec<_>>();
        // After a 5 s connection the drop is retried within half a keepalive, then the waits
        // carry on at the cap where they were.
        assert_eq!(secs(&waits), [1, 2, 4, 8, 16, 30, 5, 30]);

        let mut b = Backoff::new(|| 1.0);
        let mut attempts = vec![Refused; 6];
        attempts.extend([Up(STABLE_AFTER), Refused, Refused, Refused]);
        let waits = waits_before_attempts(&mut b, &attempts, keepalive).await;
        // After 30 s up, the schedule starts again from 1 s.
        assert_eq!(secs(&waits), [1, 2, 4, 8, 16, 30, 1, 2, 4]);
    }

    #[test]
    fn random_delays_stay_in_range() {
        let mut b = with_thread_rng();
        for n in 0..20u32 {
            let d = b.next_delay();
            let ceiling = BASE.checked_mul(1 << n.min(16)).unwrap_or(CAP).min(CAP);
            assert!(
                d >= FLOOR && d <= ceiling.max(FLOOR),
                "{d:?} at attempt {n}"
            );
        }
    }
}
