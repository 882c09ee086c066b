//! A forwarded delivery on its way to the capture store, and the delivery it becomes there.

use illumitunnel::delivery::{RequestRecord, ResponseRecord, Source};
use illumitunnel::{Delivery, DeliveryId};

/// A forwarded delivery on its way to the capture store.
#[derive(Debug)]
pub struct Capture {
    /// Delivery id from the relay.
    pub id: DeliveryId,
    /// When the relay received it, Unix ms.
    pub received_at_ms: i64,
    /// Tunnel it came through.
    pub tunnel: String,
    /// Whether the relay sent it again (from its offline queue, or after a failover).
    pub queued: bool,
    /// Full URL it was forwarded to.
    pub target: String,
    /// The request as it arrived.
    pub request: RequestRecord,
    /// The local answer, or why there was none.
    pub result: Result<ResponseRecord, String>,
    /// Forwarding time, microseconds.
    pub duration_us: i64,
    /// Tunnel, or Trigger when `trigger` sent it through the tunnel.
    pub source: Source,
    /// Whether `--events` left it out (answered 200, not forwarded).
    pub skipped: bool,
}

impl Capture {
    /// The delivery as the store keeps it.
    pub(crate) fn into_delivery(self) -> Delivery {
        // Parsing the envelope happens here, on the writer thread, off the forwarding path.
        let mut d = Delivery::new(self.id, self.received_at_ms, self.source, self.request);
        d.tunnel = Some(self.tunnel);
        d.queued = self.queued;
        d.skipped = self.skipped;
        // A skipped delivery went nowhere.
        d.target = if self.skipped {
            String::new()
        } else {
            self.target
        };
        d.duration_us = self.duration_us;
        match self.result {
            Ok(response) => d.response = Some(response),
            Err(error) => d.error = Some(error),
        }
        d
    }
}
