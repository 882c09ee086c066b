//! A Delivery is one request that came through a tunnel (or was replayed or triggered) together
//! with the local server's answer. This module holds its id, the records the capture store
//! keeps, and the JSON shape `--json` output and exports share.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::headers::Header;

/// Identifies one delivery: 24 lowercase hex digits (13 random, then 11 of milliseconds), unique
/// across relay restarts and cluster nodes. The random part comes first so that a few characters
/// name a delivery: in a store of 100,000 almost every 6-character prefix is unique (ids that
/// began with the time shared their first 8 to 10 characters with every delivery of the same
/// minutes). Ids are not ordered by time; the capture store orders by arrival (`seq`). Ids made
/// before this layout (time first) stay valid: an id is any text `parse` accepts.
/// A redelivery from the offline queue keeps its id, which is how the client spots it.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct DeliveryId(String);

impl DeliveryId {
    /// A fresh id: 13 random hex digits, then 11 hex digits of Unix milliseconds.
    ///
    /// 20 random bits were too few: at 30 deliveries a millisecond (c=32 on loopback) two ids
    /// met about every 2 s, and the relay's second waiter for an id replaced the first, whose
    /// sender then saw the session gone (its delivery queued, the tunnel draining behind it)
    /// while the client's store ignored the second row. 52 bits make that ~1e-13 a millisecond.
    pub fn generate() -> Self {
        let ms = crate::now_ms() as u64 & 0xfff_ffff_ffff;
        let r: u64 = rand::random::<u64>() & 0xf_ffff_ffff_ffff;
        DeliveryId(format!("{r:013x}{ms:011x}"))
    }

    /// Accepts 1..=64 characters of `[0-9a-z_-]`; anything else is not an id.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-' || b == b'_');
        ok.then(|| DeliveryId(s.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client token. Its `Debug` and `Display` never show the secret.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// Wraps a token string.
    pub fn new(s: impl Into<String>) -> Self {
        Token(s.into())
    }

    /// The secret itself, for sending and comparing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MASKED")
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MASKED")
    }
}

/// How a delivery came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Sent to the public URL and carried by the relay.
    Tunnel,
    /// Re-sent from the capture store (`replay`, `r`, `e`).
    Replay,
    /// Made up by `trigger`.
    Trigger,
}

impl Source {
    /// Column value in the capture store.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Tunnel => "tunnel",
            Source::Replay => "replay",
            Source::Trigger => "trigger",
        }
    }

    /// Parses a column value; unknown values read as `Tunnel`.
    pub fn parse(s: &str) -> Self {
        match s {
            "replay" => Source::Replay,
            "trigger" => Source::Trigger,
            _ => Source::Tunnel,
        }
    }
}

/// The request as it reached the client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path the local server saw: the forward target's path joined with what the sender put
    /// after `/t/{tunnel}`; replays send it to the same origin as-is.
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    /// Headers in arrival order, raw values.
    pub headers: Vec<Header>,
    /// Body bytes, exact.
    pub body: Bytes,
}

/// The local server's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseRecord {
    /// HTTP status.
    pub status: u16,
    /// Headers in arrival order, raw values.
    pub headers: Vec<Header>,
    /// Body bytes, exact.
    pub body: Bytes,
}

/// Everything the capture store keeps about one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Position in the capture store (0 until stored); newer deliveries have larger values.
    pub seq: i64,
    /// Unique id.
    pub id: DeliveryId,
    /// When the relay (or the client, for replays and triggers) received it, Unix ms.
    pub received_at_ms: i64,
    /// Tunnel it came through, if any.
    pub tunnel: Option<String>,
    /// How it came to be.
    pub source: Source,
    /// The delivery this one replays.
    pub replay_of: Option<DeliveryId>,
    /// Whether it waited in the relay's offline queue.
    pub queued: bool,
    /// IllumiChat event type from the envelope.
    pub event: Option<String>,
    /// `data.id` from the envelope.
    pub resource_id: Option<String>,
    /// IllumiChat's dedup key `event:data.id:timestamp`.
    pub dedup_key: Option<String>,
    /// Whether an earlier delivery had the same dedup key and was delivered (answered 2xx
    /// within IllumiChat's timeout, or skipped): a true duplicate. Set by the store on insert.
    pub duplicate: bool,
    /// IllumiChat's retry number: every earlier delivery with the same dedup key failed (no
    /// answer, a non-2xx, or slower than its timeout), so this is its Nth retry. Set by the
    /// store on insert; `None` for first attempts, duplicates and rows stored before it existed.
    pub retry: Option<u32>,
    /// Whether `--events` filtered it out (recorded, answered 200, not forwarded).
    pub skipped: bool,
    /// URL it was forwarded to (empty when skipped).
    pub target: String,
    /// The request.
    pub request: RequestRecord,
    /// The local server's answer, when there was one.
    pub response: Option<ResponseRecord>,
    /// Why there was no answer.
    pub error: Option<String>,
    /// Time from forwarding to the complete answer, microseconds.
    pub duration_us: i64,
}

impl Delivery {
    /// A new record for `request`, with event fields filled from its body.
    pub fn new(
        id: DeliveryId,
        received_at_ms: i64,
        source: Source,
        request: RequestRecord,
    ) -> Self {
        let envelope = crate::event::Envelope::parse(&request.body);
        Delivery {
            seq: 0,
            id,
            received_at_ms,
            tunnel: None,
            source,
            replay_of: None,
            queued: false,
            event: envelope.as_ref().map(|e| e.event.clone()),
            resource_id: envelope.as_ref().and_then(|e| e.resource_id.clone()),
            dedup_key: envelope.as_ref().and_then(|e| e.dedup_key()),
            duplicate: false,
            retry: None,
            skipped: false,
            target: String::new(),
            request,
            response: None,
            error: None,
            duration_us: 0,
        }
    }

    /// Local response status, if any.
    pub fn status(&self) -> Option<u16> {
        self.response.as_ref().map(|r| r.status)
    }

    /// Milliseconds from forwarding to answer.
    pub fn duration_ms(&self) -> f64 {
        (self.duration_us as f64 / 1000.0 * 100.0).round() / 100.0
    }

    /// Replaces every secret header value of the request and the response with `REDACTED`
    /// (`headers::is_secret`); returns how many it replaced.
    pub fn redact_secrets(&mut self) -> usize {
        let response = self
            .response
            .as_mut()
            .map_or(0, |r| crate::headers::redact_values(&mut r.headers));
        crate::headers::redact_values(&mut self.request.headers) + response
    }

    /// The one-object-a-line JSON of `--json` output (`listen`, `events`).
    pub fn summary_json(&self) -> Value {
        serde_json::to_value(self.summary()).unwrap_or(Value::Null)
    }

    /// Writes [`Delivery::summary_json`] to `out` without building a JSON tree first, with
    /// characters a terminal would act on as `\uXXXX` escapes (`escape::write_json`).
    pub fn write_summary_json(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        crate::escape::write_json(out, &self.summary())
    }

    fn summary(&self) -> Summary<'_> {
        Summary {
            id: self.id.as_str(),
            received_at: crate::rfc3339_ms(self.received_at_ms),
            event: self.event.as_deref(),
            resource_id: self.resource_id.as_deref(),
            method: &self.request.method,
            path: &self.request.path,
            status: self.status(),
            duration_ms: self.duration_ms(),
            duplicate: self.duplicate,
            retry: self.retry,
            skipped: self.skipped,
            queued: self.queued,
            source: self.source.as_str(),
            replay_of: self.replay_of.as_ref().map(DeliveryId::as_str),
            target: &self.target,
            error: self.error.as_deref(),
        }
    }

    /// `summary_json` plus `request` and `response` (`show --json`, `export --jsonl`).
    pub fn detail_json(&self) -> Value {
        let mut v = self.summary_json();
        let mut request = json!({
            "method": self.request.method,
            "path": self.request.path,
            "query": self.request.query,
            "headers": headers_json(&self.request.headers),
        });
        put_body(&mut request, &self.request.body);
        v["request"] = request;
        v["response"] = match &self.response {
            Some(r) => {
                let mut response =
                    json!({ "status": r.status, "headers": headers_json(&r.headers) });
                put_body(&mut response, &r.body);
                response
            }
            None => Value::Null,
        };
        v
    }
}

/// The fields of `--json` output, in order.
#[derive(serde::Serialize)]
struct Summary<'a> {
    id: &'a str,
    received_at: String,
    event: Option<&'a str>,
    resource_id: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    status: Option<u16>,
    duration_ms: f64,
    duplicate: bool,
    retry: Option<u32>,
    skipped: bool,
    queued: bool,
    source: &'static str,
    replay_of: Option<&'a str>,
    target: &'a str,
    error: Option<&'a str>,
}

/// Headers as a JSON list of `[name, value]`; a non-UTF-8 value is lossily shown.
pub fn headers_json(headers: &[Header]) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(n, v)| json!([n, String::from_utf8_lossy(v)]))
            .collect(),
    )
}

fn put_body(obj: &mut Value, body: &[u8]) {
    match std::str::from_utf8(body) {
        Ok(text) => obj["body"] = Value::String(text.to_string()),
        Err(_) => {
            obj["body_base64"] =
                Value::String(base64::engine::general_purpose::STANDARD.encode(body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_short_to_name_and_parse_back() {
        let a = DeliveryId::generate();
        assert_eq!(a.as_str().len(), 24);
        let many: std::collections::HashSet<_> =
            (0..100_000).map(|_| DeliveryId::generate()).collect();
        assert_eq!(
            many.len(),
            100_000,
            "ids made in the same milliseconds stay distinct"
        );
        // Made within the same second, they still differ in their first characters.
        let prefixes: std::collections::HashSet<_> =
            many.iter().map(|id| &id.as_str()[..8]).collect();
        assert!(prefixes.len() > 99_900, "{} of 100000", prefixes.len());
        assert_eq!(DeliveryId::parse(a.as_str()), Some(a));
        assert!(DeliveryId::parse("").is_none());
        assert!(DeliveryId::parse("../etc").is_none());
        assert!(DeliveryId::parse("ABC").is_none());
    }

    #[test]
    fn token_never_prints() {
        let t = Token::new("s3cret");
        assert_eq!(format!("{t:?} {t}"), "MASKED MASKED");
    }

    #[test]
    fn detail_json_has_text_or_base64_bodies() {
        let request = RequestRecord {
            method: "POST".into(),
            path: "/hook".into(),
            query: "a=1".into(),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: Bytes::from_static(br#"{"event":"ticket.created","timestamp":"2025-06-15T14:30:00Z","data":{"id":"tkt_1"}}"#),
        };
        let mut d = Delivery::new(
            DeliveryId::parse("abc").unwrap(),
            0,
            Source::Tunnel,
            request,
        );
        d.response = Some(ResponseRecord {
            status: 200,
            headers: vec![],
            body: Bytes::from_static(&[0xff, 0x00]),
        });
        let v = d.detail_json();
        assert_eq!(v["event"], "ticket.created");
        assert_eq!(v["resource_id"], "tkt_1");
        assert_eq!(v["received_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["request"]["headers"][0][0], "content-type");
        assert!(v["request"]["body"].as_str().unwrap().contains("tkt_1"));
        assert_eq!(v["response"]["body_base64"], "/wA=");
        assert_eq!(v["replay_of"], Value::Null);
    }
}
