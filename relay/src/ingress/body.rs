//! Reading a request body: frame by frame into one buffer, each frame counted in the in-flight
//! budget as it arrives, within `--max-body`, the response timeout and `--min-body-rate`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body;

use crate::budget::Reservation;
use crate::error::IngressError;

/// Reads the body frame by frame into one buffer sized from `declared` (never past the limit),
/// so a large body is copied a frame at a time as it arrives, not in one long copy at the end
/// that would hold the relay's thread from every other tunnel. Each frame grows `reservation`
/// first; the body must arrive within the response timeout and keep `--min-body-rate`.
pub(crate) async fn read<B>(
    body: B,
    declared: Option<u64>,
    rules: BodyRules,
    reservation: &mut Reservation,
) -> Result<Bytes, IngressError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let BodyRules {
        limit,
        within,
        rate,
        grace,
        budget_limit,
    } = rules;
    let pace = Pace::new(rate, grace);
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(limit).min(limit));
    let read = async move {
        let mut body = Limited::new(body, limit);
        let mut buf = bytes::BytesMut::new();
        let mut slice = 0usize;
        loop {
            if slice >= SLICE {
                // A large body from a fast sender is ready frame after frame: give the thread
                // to other tunnels' deliveries between slices instead of copying it all at once.
                slice = 0;
                tokio::task::yield_now().await;
            }
            let frame = match pace.deadline(buf.len()) {
                Some(deadline) => tokio::time::timeout_at(deadline, body.frame())
                    .await
                    .map_err(|_| IngressError::BodyTooSlow { rate })?,
                None => body.frame().await,
            };
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|err| match err.downcast::<LengthLimitError>() {
                Ok(_) => IngressError::BodyTooLarge { limit },
                Err(err) => IngressError::BodyRead(err.to_string()),
            })?;
            if let Ok(data) = frame.into_data() {
                reservation
                    .grow(data.len())
                    .map_err(|_| IngressError::Busy {
                        limit: budget_limit,
                    })?;
                if buf.capacity() - buf.len() < data.len() {
                    // The declared size is allocated only once a first buffer's worth has
                    // arrived: a sender that declares much and sends little gets little.
                    let want = if buf.len() >= FIRST_BUFFER {
                        capacity
                    } else {
                        capacity.min(FIRST_BUFFER)
                    };
                    buf.reserve(want.saturating_sub(buf.len()).max(data.len()));
                }
                buf.extend_from_slice(&data);
                slice += data.len();
            }
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(within, read).await {
        Err(_) => Err(IngressError::BodyTimeout(within)),
        Ok(result) => result,
    }
}

/// What a request body must keep to: `--max-body`, the response timeout, `--min-body-rate`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyRules {
    /// `--max-body`.
    pub limit: usize,
    /// The whole body arrives within this (the response timeout).
    pub within: Duration,
    /// `--min-body-rate`, bytes a second; 0: off.
    pub rate: u64,
    /// Time before the rate applies.
    pub grace: Duration,
    /// `--max-inflight-bytes`, named in the 503.
    pub budget_limit: usize,
}

/// Bytes of a body buffered before its declared length is allocated.
const FIRST_BUFFER: usize = 64 * 1024;
/// Bytes of one body read before the reading task lets others run.
const SLICE: usize = 256 * 1024;

/// `--min-body-rate` as a deadline, the way Apache's mod_reqtimeout counts it: a body has the
/// grace, plus one second for every `rate` bytes received, to send its next byte.
#[derive(Debug, Clone, Copy)]
struct Pace {
    started: tokio::time::Instant,
    rate: u64,
    grace: Duration,
}

impl Pace {
    fn new(rate: u64, grace: Duration) -> Pace {
        Pace {
            started: tokio::time::Instant::now(),
            rate,
            grace,
        }
    }

    /// When the body is too slow having received `received` bytes; `None` when the check is off.
    fn deadline(&self, received: usize) -> Option<tokio::time::Instant> {
        if self.rate == 0 {
            return None;
        }
        let earned = Duration::from_secs_f64(received as f64 / self.rate as f64);
        Some(self.started + self.grace + earned)
    }
}

#[cfg(test)]
mod tests;
