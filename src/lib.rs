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

/// Parses a duration such as `30s`, `15m`, `2h`, `7d` (for `--since`).
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("15m"),
            Some(std::time::Duration::from_secs(900))
        );
        assert_eq!(
            parse_duration("2d"),
            Some(std::time::Duration::from_secs(172_800))
        );
        assert_eq!(parse_duration("15"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("3w"), None);
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_ms(1_750_000_000_123), "2025-06-15T15:06:40.123Z");
    }
}
