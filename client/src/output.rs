//! Everything `illumitunnel` prints about deliveries: the one-line format, `--json` lines, the
//! `show` view, and the line screen of `listen` (banner and connection state on stderr,
//! deliveries on stdout). No other module prints a delivery. Every sender-controlled string goes
//! through the shared escaper (`illumitunnel::escape`), the one the inspector draws with; JSON
//! output spells the same characters as `\uXXXX` escapes.

use std::io::{self, Write};
use std::path::PathBuf;

use illumitunnel::escape::{escape, escape_keeping, write_json};
use illumitunnel::Delivery;
use serde_json::Value;
use time::{OffsetDateTime, UtcOffset};
use tokio::sync::{mpsc, watch};

use crate::status::{ConnectionState, ListenEvent, StoreHealth};

pub mod format;

use self::format::{fit, latency, marks};

/// Converts delivery times to the user's local time. The offset is read once at start-up,
/// while the process is still single-threaded (the only time the platform allows reading it).
#[derive(Debug, Clone, Copy)]
pub struct LocalClock {
    offset: UtcOffset,
}

impl LocalClock {
    /// The machine's current offset, or UTC when it cannot be read.
    pub fn detect() -> Self {
        LocalClock {
            offset: UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC),
        }
    }

    /// The offset this clock shows times in.
    pub fn offset(&self) -> UtcOffset {
        self.offset
    }

    /// A clock at a fixed offset.
    #[cfg(test)]
    pub fn fixed(offset: UtcOffset) -> Self {
        LocalClock { offset }
    }

    fn local(&self, ms: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            .to_offset(self.offset)
    }

    fn time_of_day(&self, ms: i64) -> String {
        let t = self.local(ms);
        format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
    }

    /// `14:30:00` when `ms` falls on the local day of `today_ms`, else `2026-12-06 14:30:00`.
    fn when(&self, ms: i64, today_ms: i64) -> String {
        let t = self.local(ms);
        if t.date() == self.local(today_ms).date() {
            self.time_of_day(ms)
        } else {
            format!("{} {}", t.date(), self.time_of_day(ms))
        }
    }
}

/// How `listen` and `events` print deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// SPEC's one-line format.
    Lines,
    /// `Delivery::summary_json`, one object a line.
    Json,
}

/// Width of the event column: the longest IllumiChat event type, `chat.message.created`.
const EVENT_WIDTH: usize = 20;
/// Width of the resource column in `events`.
const RESOURCE_WIDTH: usize = 16;
/// Width of the request column (`POST /webhooks/illumichat`) in `events`.
const REQUEST_WIDTH: usize = 28;

/// The status cell: the local answer's status, `---` for a skipped delivery, `ERR` for none.
fn status_text(d: &Delivery) -> String {
    match (d.status(), d.skipped) {
        (Some(s), _) => s.to_string(),
        (None, true) => "---".to_string(),
        (None, false) => "ERR".to_string(),
    }
}

/// What follows the marks: the link of a replay or retry (`replay of ID`) and the error.
fn tail(d: &Delivery) -> String {
    let mut out = String::new();
    if let Some(original) = &d.replay_of {
        out.push_str(&format!("  {} {original}", replay_word(d)));
    }
    if let Some(err) = &d.error {
        out.push_str("  ");
        out.push_str(&escape(err));
    }
    out
}

/// One delivery as a line:
/// `14:30:00  ticket.created        tkt_xyz789   POST /webhooks/illumichat  200  12ms`,
/// then the marks (`format::marks`), the link of a replay or retry and the error, if any. The
/// event column is as wide as the longest event type; values are shown whole (a log keeps them).
pub fn line(d: &Delivery, clock: &LocalClock) -> String {
    let event = escape(d.event.as_deref().unwrap_or("-"));
    let resource = escape(d.resource_id.as_deref().unwrap_or("-"));
    let path = shown_path(d);
    let path = escape(&path);
    let mut out = format!(
        "{}  {event:<EVENT_WIDTH$}  {resource:<12} {} {path}  {}  {}",
        clock.time_of_day(d.received_at_ms),
        escape(&d.request.method),
        status_text(d),
        latency(d.duration_us),
    );
    let marks = marks(d);
    if !marks.is_empty() {
        out.push_str("  ");
        out.push_str(&marks.join(" "));
    }
    out.push_str(&tail(d));
    out
}

/// How a delivery with `replay_of` names its link: `trigger --retries` records its retries as
/// triggered deliveries of the first attempt, everything else is a replay.
pub fn replay_word(d: &Delivery) -> &'static str {
    if d.source == illumitunnel::delivery::Source::Trigger {
        "retry of"
    } else {
        "replay of"
    }
}

/// The path the local server saw (forward path included), else the path below the tunnel.
fn shown_path(d: &Delivery) -> String {
    d.target
        .parse::<http::Uri>()
        .ok()
        .filter(|u| u.authority().is_some())
        .map(|u| u.path().to_string())
        .unwrap_or_else(|| d.request.path.clone())
}

/// Writes one delivery to `out` in `format`.
pub fn write_delivery(
    out: &mut impl Write,
    d: &Delivery,
    format: Format,
    clock: &LocalClock,
) -> io::Result<()> {
    match format {
        Format::Lines => writeln!(out, "{}", line(d, clock)),
        Format::Json => {
            d.write_summary_json(&mut *out)?;
            writeln!(out)
        }
    }
}

/// The `events` listing. Lines: a header row, then one row a delivery in fixed columns (id,
/// time, or date and time when not on the local day of `now_ms`, event, resource, request,
/// status, latency, marks), values wider than their column cut with `…`, then the link of a
/// replay or retry and the error. JSON: `Delivery::summary_json`, one object a line.
pub fn write_listing(
    out: &mut impl Write,
    deliveries: &[Delivery],
    format: Format,
    clock: &LocalClock,
    now_ms: i64,
) -> io::Result<()> {
    if format == Format::Json {
        for d in deliveries {
            d.write_summary_json(&mut *out)?;
            writeln!(out)?;
        }
        return out.flush();
    }
    let whens: Vec<String> = deliveries
        .iter()
        .map(|d| clock.when(d.received_at_ms, now_ms))
        .collect();
    let when_width = whens.iter().map(String::len).max().unwrap_or(0).max(4);
    let id_width = deliveries
        .iter()
        .map(|d| d.id.as_str().len())
        .max()
        .unwrap_or(0)
        .max(2);
    let row = |cells: [&str; 8]| {
        format!(
            "{}  {}  {}  {}  {}  {}  {:>7}  {}",
            fit(cells[0], id_width),
            fit(cells[1], when_width),
            fit(cells[2], EVENT_WIDTH),
            fit(cells[3], RESOURCE_WIDTH),
            fit(cells[4], REQUEST_WIDTH),
            fit(cells[5], 6),
            cells[6],
            cells[7]
        )
    };
    let header = row([
        "ID", "TIME", "EVENT", "RESOURCE", "REQUEST", "STATUS", "LATENCY", "MARKS",
    ]);
    writeln!(out, "{}", header.trim_end())?;
    for (d, when) in deliveries.iter().zip(&whens) {
        let request = format!("{} {}", d.request.method, shown_path(d));
        let line = row([
            d.id.as_str(),
            when,
            &escape(d.event.as_deref().unwrap_or("-")),
            &escape(d.resource_id.as_deref().unwrap_or("-")),
            &escape(&request),
            &status_text(d),
            &latency(d.duration_us),
            &marks(d).join(" "),
        ]);
        writeln!(out, "{}{}", line.trim_end(), tail(d))?;
    }
    out.flush()
}

/// `show`: one delivery, human-readable, or `Delivery::detail_json` on one line.
pub fn write_detail(out: &mut impl Write, d: &Delivery, json: bool) -> io::Result<()> {
    if json {
        write_json(out, &d.detail_json())?;
        return writeln!(out);
    }
    let field = |name: &str, value: &str| format!("{name:<13}{value}\n");
    let mut s = String::new();
    s += &field("id", d.id.as_str());
    s += &field("received", &illumitunnel::rfc3339_ms(d.received_at_ms));
    s += &field("event", &escape(d.event.as_deref().unwrap_or("-")));
    s += &field("resource", &escape(d.resource_id.as_deref().unwrap_or("-")));
    let mut flags = vec![d.source.as_str().to_string()];
    if let Some(n) = d.retry {
        flags.push(format!("retry {n}"));
    }
    if d.duplicate {
        flags.push("duplicate".into());
    }
    if d.queued {
        flags.push("queued".into());
    }
    if d.skipped {
        flags.push("skipped".into());
    }
    if let Some(original) = &d.replay_of {
        flags.push(format!("{} {original}", replay_word(d)));
    }
    s += &field("source", &flags.join(", "));
    if !d.target.is_empty() {
        s += &field("forwarded to", &escape(&d.target));
    }
    let outcome = match (&d.response, &d.error) {
        (Some(r), _) => format!("{} in {}", r.status, latency(d.duration_us)),
        (None, Some(e)) => format!("failed after {}: {}", latency(d.duration_us), escape(e)),
        (None, None) => "no answer".to_string(),
    };
    s += &field("outcome", &outcome);

    let r = &d.request;
    let query = if r.query.is_empty() {
        String::new()
    } else {
        format!("?{}", r.query)
    };
    s += &format!(
        "\nrequest\n  {} {}{}\n",
        escape(&r.method),
        escape(&r.path),
        escape(&query)
    );
    s += &headers_text(&r.headers);
    s += &body_text(&r.body, &r.headers);

    if let Some(resp) = &d.response {
        s += &format!("\nresponse\n  {}\n", resp.status);
        s += &headers_text(&resp.headers);
        s += &body_text(&resp.body, &resp.headers);
    }
    out.write_all(s.as_bytes())?;
    out.flush()
}

fn headers_text(headers: &[illumitunnel::headers::Header]) -> String {
    headers
        .iter()
        .map(|(n, v)| format!("  {}: {}\n", escape(n), escape(&String::from_utf8_lossy(v))))
        .collect()
}

fn body_text(body: &[u8], headers: &[illumitunnel::headers::Header]) -> String {
    if body.is_empty() {
        return "\n  (empty body)\n".to_string();
    }
    let looks_json = illumitunnel::headers::get(headers, "content-type")
        .is_some_and(|ct| String::from_utf8_lossy(ct).contains("json"))
        || body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{' || *b == b'[');
    if looks_json {
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            if let Ok(pretty) = serde_json::to_string_pretty(&v) {
                return format!("\n{}\n", escape_keeping(&pretty, &['\n']));
            }
        }
    }
    match std::str::from_utf8(body) {
        Ok(text) => format!("\n{}\n", escape_keeping(text, &['\n', '\t'])),
        Err(_) => format!(
            "\n  ({} bytes of binary data; show --json prints it as body_base64)\n",
            body.len()
        ),
    }
}

/// What the line screen prints above the first connection state.
#[derive(Debug, Clone)]
pub struct Banner {
    /// `--forward-to`, as validated.
    pub forward_to: String,
    /// Capture store file.
    pub store: PathBuf,
    /// Base URL of the embedded relay, when `listen` runs one.
    pub embedded_relay: Option<String>,
    /// The web inspector's URL, when `listen` serves one.
    pub web_inspector: Option<String>,
}

/// The state line for a connection change, or `None` for states not shown as lines.
pub fn state_line(state: &ConnectionState) -> Option<String> {
    match state {
        ConnectionState::Connecting => None,
        ConnectionState::Connected {
            queued,
            expired,
            dead_letters,
        } => {
            let mut s = "connected".to_string();
            if *queued > 0 {
                s += &format!(", {queued} queued deliveries follow");
            }
            if *expired > 0 {
                s += &format!(", {expired} queued deliveries expired");
            }
            if *dead_letters > 0 {
                s += &format!(", {dead_letters} dead letters set aside in the relay's data dir");
            }
            Some(s)
        }
        ConnectionState::Reconnecting { in_secs, cause } => {
            Some(format!("reconnecting in {in_secs:.1} s: {}", escape(cause)))
        }
        // `main` prints the refusal once, as the error `listen` exits with.
        ConnectionState::Refused(_) => None,
    }
}

/// The stderr line for a queued delivery the relay set aside.
pub fn dead_letter_line(id: &illumitunnel::DeliveryId, reason: &str) -> String {
    format!(
        "the relay set delivery {id} aside as a dead letter: {}",
        escape(reason)
    )
}

/// The stderr line for a change in the capture store's health.
pub fn store_line(health: &StoreHealth) -> String {
    match health {
        StoreHealth::Failing(sentence) => escape(sentence).into_owned(),
        StoreHealth::Recovered => {
            "capture store recovered: deliveries are recorded again".to_string()
        }
    }
}

fn banner_lines(banner: &Banner, public_url: &str) -> String {
    let row = |label: &str, value: &str| format!("{label:<15}{value}\n");
    // The session checked the relay's URL; escaping here holds whatever reaches the banner.
    let mut s = row("webhook URL", &escape(public_url));
    if crate::illumichat::is_local_only(public_url) {
        s += &row(
            "",
            &format!(
                "{}; use a public relay: illumitunnel login --relay https://…",
                crate::illumichat::LOCAL_ONLY
            ),
        );
    }
    s += &row("forwarding to", &banner.forward_to);
    s += &row("capture store", &banner.store.display().to_string());
    if let Some(url) = &banner.web_inspector {
        s += &row("web inspector", url);
    }
    if let Some(url) = &banner.embedded_relay {
        s += &row(
            "relay",
            &format!("embedded at {url} (self-signed, trusted by this client)"),
        );
    }
    s
}

/// The line screen of `listen`: runs on its own thread until every sender is gone. Banner and
/// connection state go to stderr, deliveries to stdout; each burst is flushed once.
pub fn run_lines(
    mut events: mpsc::Receiver<ListenEvent>,
    public_url: watch::Receiver<Option<String>>,
    banner: Banner,
    format: Format,
    clock: LocalClock,
) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut banner_shown = false;
    while let Some(first) = events.blocking_recv() {
        let mut next = Some(first);
        while let Some(event) = next.take() {
            match event {
                ListenEvent::Deliveries(deliveries) => {
                    for d in &deliveries {
                        write_delivery(&mut out, d, format, &clock)?;
                    }
                }
                ListenEvent::Connection(state) => {
                    out.flush()?;
                    let mut err = io::stderr().lock();
                    if !banner_shown && matches!(state, ConnectionState::Connected { .. }) {
                        if let Some(url) = public_url.borrow().as_deref() {
                            let _ = err.write_all(banner_lines(&banner, url).as_bytes());
                            banner_shown = true;
                        }
                    }
                    if let Some(line) = state_line(&state) {
                        let _ = writeln!(err, "{line}");
                    }
                }
                ListenEvent::StoreChanged
                | ListenEvent::QueuedArrived
                | ListenEvent::Draining { .. } => {}
                ListenEvent::DeadLettered { id, reason } => {
                    out.flush()?;
                    let _ = writeln!(io::stderr().lock(), "{}", dead_letter_line(&id, &reason));
                }
                ListenEvent::Store(health) => {
                    out.flush()?;
                    let _ = writeln!(io::stderr().lock(), "{}", store_line(&health));
                }
            }
            next = events.try_recv().ok();
        }
        out.flush()?;
    }
    out.flush()
}

#[cfg(test)]
mod tests;
