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

    #[tokio::test(start_paused = true)]
    async fn sleeping_the_schedule_takes_the_sum_of_its_delays() {
        let mut b = Backoff::new(|| 1.0);
        let start = tokio::time::Instant::now();
        for _ in 0..6 {
            tokio::time::sleep(b.next_delay()).await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1 + 2 + 4 + 8 + 16 + 30)
        );
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
