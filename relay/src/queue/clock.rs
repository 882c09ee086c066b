//! Where the queue reads the time, so tests can move it by hand.

use std::sync::Arc;

/// Where the queue reads the time: the system clock, or a test's hand-set one.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// Unix milliseconds from the system clock.
    pub fn system() -> Self {
        Clock(Arc::new(illumitunnel::now_ms))
    }

    /// A clock that reads `now` (Unix milliseconds), for tests that move time by hand.
    pub fn manual(now: Arc<std::sync::atomic::AtomicI64>) -> Self {
        Clock(Arc::new(move || {
            now.load(std::sync::atomic::Ordering::SeqCst)
        }))
    }

    pub(super) fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}
