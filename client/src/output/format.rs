//! Short figures every view of a delivery shares, so the line output, `events`, `show` and the
//! inspector say the same thing the same way: durations (`0.4ms`, `312ms`, `15.0s`), the marks
//! (`replay`, `trigger`, `retry N`, `dup`, `skipped`, `queued`) and cells of a fixed width that
//! end in `…` when cut.

use illumitunnel::delivery::Source;
use illumitunnel::Delivery;

/// A duration in µs as a short human figure: `0.4ms` below ten milliseconds, `312ms` below a
/// second, `15.0s` from there.
pub fn latency(us: i64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.1}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.1}s", ms / 1000.0)
    }
}

/// The marks of a delivery, in the inspector's order: `replay` (re-sent from the store),
/// `trigger` (made by `illumitunnel trigger`), `retry N` (IllumiChat's Nth retry: every earlier
/// attempt with its dedup key failed), `dup` (an earlier one was delivered), `skipped` (by
/// `--events`), `queued` (waited in the relay's offline queue).
pub fn marks(d: &Delivery) -> Vec<String> {
    let mut marks = Vec::new();
    if d.source == Source::Replay || (d.replay_of.is_some() && d.source != Source::Trigger) {
        marks.push("replay".to_string());
    }
    if d.source == Source::Trigger {
        marks.push("trigger".to_string());
    }
    if let Some(n) = d.retry {
        marks.push(format!("retry {n}"));
    }
    if d.duplicate {
        marks.push("dup".to_string());
    }
    if d.skipped {
        marks.push("skipped".to_string());
    }
    if d.queued {
        marks.push("queued".to_string());
    }
    marks
}

/// `text` padded with spaces to `width` characters, or cut to `width` ending in `…`.
pub fn fit(text: &str, width: usize) -> String {
    let len = text.chars().count();
    if len <= width {
        return format!("{text}{}", " ".repeat(width - len));
    }
    if width == 0 {
        return String::new();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_reads_like_the_inspector() {
        assert_eq!(latency(400), "0.4ms");
        assert_eq!(latency(12_300), "12ms");
        assert_eq!(latency(312_000), "312ms");
        assert_eq!(latency(15_004_000), "15.0s");
    }

    #[test]
    fn fit_pads_and_cuts_with_an_ellipsis() {
        assert_eq!(fit("ticket.created", 16), "ticket.created  ");
        assert_eq!(fit("chat.message.created", 20), "chat.message.created");
        assert_eq!(fit("tkt_0123456789abcdef", 14), "tkt_012345678…");
        assert_eq!(fit("ab", 0), "");
    }
}
