//! Shared core of illumitunnel: the wire protocol between relay and client, IllumiChat's event
//! model and the capture store. No sockets, no terminal.
//!
//! # Glossary
//! - **Delivery**: one webhook request with the local server's response.
//! - **Tunnel**: a named public URL, `{relay}/t/{tunnel}`, owned by one client token.
//! - **Session**: one client's websocket connection to the relay, serving one tunnel.
//! - **Relay**: the public server that accepts deliveries and carries them to sessions.
//! - **Replay**: a stored delivery's request sent again to the local server.
//! - **Capture store**: the client's SQLite file holding every delivery.
//!
//! # Layout
//! - [`protocol`] — `ClientMessage` / `RelayMessage` and their binary codec.
//! - [`reassembly`] — head + chunks → body, bounded per body and in partial bodies.
//! - [`delivery`] — `DeliveryId`, `Token`, request/response records, JSON shape.
//! - [`har`] — HAR 1.2 export.
//! - [`escape`] — sender-controlled text made safe for a terminal, as text and as JSON.
//! - [`headers`] — ordered raw headers, hop-by-hop stripping, redaction.
//! - [`event`] — IllumiChat event types, envelope, dedup key.
//! - [`store`] — `CaptureStore` over SQLite.
//! - [`suite`] — suite files (JSON Lines) for handler regression tests.
//! - [`tunnel_name`] — `TunnelName::parse`.
//! - [`paths`] — data and config dirs.

pub mod delivery;
pub mod escape;
pub mod event;
pub mod har;
pub mod headers;
pub mod paths;
pub mod protocol;
pub mod reassembly;
pub mod store;
pub mod suite;
pub mod tunnel_name;

pub use delivery::{Delivery, DeliveryId, Token};
pub use tunnel_name::TunnelName;

/// Current time, Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Formats Unix milliseconds as RFC 3339 UTC with milliseconds, e.g. `2025-06-15T14:30:00.000Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
}

/// Parses a duration such as `30s`, `15m`, `2h`, `7d` or `1h30m` (humantime's syntax: units
/// from `ns` to `y`, combinable, spaces allowed); a bare number has no unit and is refused.
/// Used by every flag that takes a duration, the relay's included.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    humantime::parse_duration(s.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let secs = std::time::Duration::from_secs;
        for (text, want) in [
            ("15m", Some(secs(900))),
            ("2d", Some(secs(172_800))),
            ("1h30m", Some(secs(5_400))),
            ("1h 30m", Some(secs(5_400))),
            (" 30s ", Some(secs(30))),
            ("1w", Some(secs(604_800))),
            ("15", None),
            ("m", None),
            ("", None),
            ("-5m", None),
            ("soon", None),
        ] {
            assert_eq!(parse_duration(text), want, "{text:?}");
        }
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_ms(1_750_000_000_123), "2025-06-15T15:06:40.123Z");
    }
}
