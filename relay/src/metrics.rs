//! The relay's Prometheus metrics, served as text on `GET /metrics`: tunnels with a client
//! connected, live sessions, deliveries by outcome, the latency of answered deliveries, and the
//! offline queue's depth and bytes per tunnel. Counters per outcome are resolved once at start
//! so the hot path only touches atomics.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// How a delivery to `/t/{tunnel}/…` ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// The local server's answer went back to the sender.
    answered,
    /// The client could not reach the local server (502).
    failed,
    /// No answer within `--response-timeout` (504).
    timeout,
    /// The client disconnected before answering (502).
    client_gone,
    /// Known tunnel, no client connected, `--offline reject` (503).
    offline,
    /// Known tunnel, no client connected: committed to the offline queue (202).
    queued,
    /// The offline queue is full or could not be written (503).
    rejected,
    /// Dropped from the offline queue after `--queue-max-age`.
    expired,
    /// Sent again from the offline queue to a session.
    redelivered,
    /// Set aside from the offline queue after ending or being rejected by three sessions.
    dead_lettered,
    /// Unknown tunnel (404).
    unknown_tunnel,
    /// Body over `--max-body` (413).
    too_large,
    /// The body could not be read (400/408).
    bad_request,
}

impl Outcome {
    const ALL: [Outcome; 13] = [
        Outcome::answered,
        Outcome::failed,
        Outcome::timeout,
        Outcome::client_gone,
        Outcome::offline,
        Outcome::queued,
        Outcome::rejected,
        Outcome::expired,
        Outcome::redelivered,
        Outcome::dead_lettered,
        Outcome::unknown_tunnel,
        Outcome::too_large,
        Outcome::bad_request,
    ];

    /// The outcome named `name` (as its label reads), for answers from other cluster nodes.
    pub fn from_name(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| format!("{o:?}") == name)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TunnelLabels {
    tunnel: String,
}

/// The offline queue's metrics, updated by the queue thread: depth and bytes in all, per
/// tunnel only when asked for (`--metrics-tunnel-labels`: tunnel names are the capability to
/// post to a tunnel; a tunnel's series disappears when its queue empties), and the expired and
/// dead-letter counters.
#[derive(Clone, Default)]
pub struct QueueGauges {
    per_tunnel: Arc<AtomicBool>,
    total_depth: Gauge<i64, AtomicI64>,
    total_bytes: Gauge<i64, AtomicI64>,
    depth: Family<TunnelLabels, Gauge<i64, AtomicI64>>,
    bytes: Family<TunnelLabels, Gauge<i64, AtomicI64>>,
    expired: Counter,
    dead_letters: Counter,
}

impl QueueGauges {
    /// Whether queue metrics carry tunnel names.
    pub fn label_tunnels(&self, on: bool) {
        self.per_tunnel.store(on, Ordering::Relaxed);
    }

    /// Sets the depth across every tunnel.
    pub fn totals(&self, count: u64, bytes: u64) {
        self.total_depth
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        self.total_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Sets a tunnel's queue depth (kept only with tunnel labels on).
    pub fn set(&self, tunnel: &str, count: u64, bytes: u64) {
        if !self.per_tunnel.load(Ordering::Relaxed) {
            return;
        }
        let labels = TunnelLabels {
            tunnel: tunnel.to_owned(),
        };
        self.depth
            .get_or_create(&labels)
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        self.bytes
            .get_or_create(&labels)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Drops a tunnel whose queue is empty.
    pub fn remove(&self, tunnel: &str) {
        let labels = TunnelLabels {
            tunnel: tunnel.to_owned(),
        };
        self.depth.remove(&labels);
        self.bytes.remove(&labels);
    }

    /// Counts deliveries dropped for age.
    pub fn expired(&self, count: u64) {
        self.expired.inc_by(count);
    }

    /// Counts a queued delivery set aside as a dead letter.
    pub fn dead_lettered(&self) {
        self.dead_letters.inc();
    }
}

/// Every metric the relay exports.
pub struct Metrics {
    registry: Registry,
    /// Tunnels with at least one session.
    pub tunnels_connected: Gauge<i64, AtomicI64>,
    /// Live client sessions.
    pub sessions: Gauge<i64, AtomicI64>,
    deliveries: [Counter; Outcome::ALL.len()],
    latency: Histogram,
    /// The offline queue's gauges, handed to the queue thread.
    pub queue: QueueGauges,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `illumitunnel_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("illumitunnel");
        let tunnels_connected = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "tunnels_connected",
            "Tunnels with at least one client session",
            tunnels_connected.clone(),
        );
        let sessions = Gauge::<i64, AtomicI64>::default();
        registry.register("sessions", "Connected client sessions", sessions.clone());
        let family = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Deliveries to /t/{tunnel}/ by outcome",
            family.clone(),
        );
        let deliveries =
            Outcome::ALL.map(|outcome| family.get_or_create(&OutcomeLabels { outcome }).clone());
        let queue = QueueGauges {
            per_tunnel: Arc::default(),
            total_depth: Gauge::default(),
            total_bytes: Gauge::default(),
            depth: Family::default(),
            bytes: Family::default(),
            expired: deliveries[Outcome::expired as usize].clone(),
            dead_letters: deliveries[Outcome::dead_lettered as usize].clone(),
        };
        registry.register(
            "queued_deliveries",
            "Deliveries in every tunnel's offline queue",
            queue.total_depth.clone(),
        );
        registry.register(
            "queued_bytes",
            "Bytes (bodies and headers) in every tunnel's offline queue",
            queue.total_bytes.clone(),
        );
        registry.register(
            "queue_depth",
            "Deliveries in a tunnel's offline queue",
            queue.depth.clone(),
        );
        registry.register(
            "queue_bytes",
            "Bytes (bodies and headers) in a tunnel's offline queue",
            queue.bytes.clone(),
        );
        // 0.25 ms .. ~8 s
        let latency = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        registry.register(
            "delivery_duration_seconds",
            "Time from a delivery's arrival to its answer, for deliveries a client answered",
            latency.clone(),
        );
        Metrics {
            registry,
            tunnels_connected,
            sessions,
            deliveries,
            latency,
            queue,
        }
    }

    /// Counts one delivery; `elapsed` is observed when a client answered it.
    pub fn delivery(&self, outcome: Outcome, elapsed: Duration) {
        self.deliveries[outcome as usize].inc();
        if matches!(outcome, Outcome::answered | Outcome::failed) {
            self.latency.observe(elapsed.as_secs_f64());
        }
    }

    /// Prometheus/OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_every_metric() {
        let metrics = Metrics::new();
        metrics.delivery(Outcome::answered, Duration::from_millis(3));
        metrics.delivery(Outcome::timeout, Duration::from_secs(25));
        metrics.sessions.inc();
        metrics.queue.set("hidden-app", 3, 300);
        assert!(
            !metrics.encode().contains("hidden-app"),
            "no names unless asked"
        );
        metrics.queue.label_tunnels(true);
        metrics.queue.totals(4, 301);
        metrics.queue.set("my-app", 3, 300);
        metrics.queue.set("gone-app", 1, 1);
        metrics.queue.remove("gone-app");
        metrics.queue.expired(2);
        metrics.queue.dead_lettered();
        let text = metrics.encode();
        assert!(!text.contains("gone-app"), "{text}");
        for needle in [
            "illumitunnel_tunnels_connected 0",
            "illumitunnel_sessions 1",
            "illumitunnel_deliveries_total{outcome=\"answered\"} 1",
            "illumitunnel_deliveries_total{outcome=\"timeout\"} 1",
            "illumitunnel_deliveries_total{outcome=\"offline\"} 0",
            "illumitunnel_deliveries_total{outcome=\"expired\"} 2",
            "illumitunnel_deliveries_total{outcome=\"dead_lettered\"} 1",
            "illumitunnel_queue_depth{tunnel=\"my-app\"} 3",
            "illumitunnel_queued_deliveries 4",
            "illumitunnel_queued_bytes 301",
            "illumitunnel_queue_bytes{tunnel=\"my-app\"} 300",
            "illumitunnel_delivery_duration_seconds_count 1",
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
