//! The in-flight budget: request bodies the relay holds in memory across all requests
//! (`--max-inflight-bytes`). A request reserves its declared size (or `--max-body` when it
//! declares none) before its body is read, shrinks the reservation to what arrived, and gives it
//! back when it is answered; a request that does not fit is answered 503 with `Retry-After`, so
//! memory never grows past the budget plus what one request over-reads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes of request bodies in memory, against a limit.
pub struct InflightBudget {
    limit: usize,
    used: AtomicUsize,
}

/// The budget cannot hold a request's body now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget;

impl InflightBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(InflightBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Reserves `bytes`, or fails at once when they do not fit.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Result<Reservation, OverBudget> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.checked_add(bytes).filter(|n| *n <= self.limit);
            let Some(next) = next else {
                return Err(OverBudget);
            };
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Ok(Reservation {
                        budget: self.clone(),
                        bytes,
                    })
                }
                Err(now) => used = now,
            }
        }
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// Bytes held for one request; given back on drop.
pub struct Reservation {
    budget: Arc<InflightBudget>,
    bytes: usize,
}

impl Reservation {
    /// Gives back what the request did not need.
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.budget
                .used
                .fetch_sub(self.bytes - bytes, Ordering::AcqRel);
            self.bytes = bytes;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_the_limit_shrink_and_come_back() {
        let budget = InflightBudget::new(100);
        let mut a = budget.reserve(60).unwrap();
        assert_eq!(budget.reserve(41).err(), Some(OverBudget));
        let b = budget.reserve(40).unwrap();
        assert_eq!(budget.used(), 100);
        a.shrink_to(10);
        a.shrink_to(50);
        assert_eq!(budget.used(), 50, "shrinking never grows");
        drop(b);
        drop(a);
        assert_eq!(budget.used(), 0);
        assert_eq!(budget.reserve(usize::MAX).err(), Some(OverBudget));
    }
}
