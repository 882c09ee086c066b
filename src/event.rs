//! IllumiChat's event model: the six event types, the envelope every delivery carries
//! (`event`, `timestamp`, `workspaceId`, `data`), and the dedup key IllumiChat documents.

pub mod samples;

use std::time::Duration;

/// How long after a failed delivery IllumiChat retries it: 1, 5 and 30 minutes ("Retry Policy");
/// after the third failed retry the delivery is marked failed.
pub const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
];

/// How long IllumiChat waits for an answer before it counts a timeout. Its reference gives no
/// number ("may time out and retry if your endpoint does not respond promptly", "more than a few
/// seconds"); 10 s is what senders of its kind use (GitHub's webhooks wait 10 s).
pub const SENDER_TIMEOUT: Duration = Duration::from_secs(10);

/// [`RETRY_DELAYS`] divided by `speed` (at least 1): `600` turns 1m, 5m, 30m into 0.1s, 0.5s, 3s.
pub fn retry_delays(speed: u32) -> [Duration; 3] {
    RETRY_DELAYS.map(|d| d / speed.max(1))
}

/// The six IllumiChat webhook event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A new message was sent in a conversation.
    ChatMessageCreated,
    /// A new chat session started.
    ChatSessionCreated,
    /// A support ticket was created.
    TicketCreated,
    /// A ticket status or assignment changed.
    TicketUpdated,
    /// A lead was captured from the widget.
    LeadCaptured,
    /// A new contact was added.
    ContactCreated,
}

impl EventType {
    /// Every event type, in the reference's order.
    pub const ALL: [EventType; 6] = [
        EventType::ChatMessageCreated,
        EventType::ChatSessionCreated,
        EventType::TicketCreated,
        EventType::TicketUpdated,
        EventType::LeadCaptured,
        EventType::ContactCreated,
    ];

    /// The wire name, e.g. `ticket.created`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ChatMessageCreated => "chat.message.created",
            EventType::ChatSessionCreated => "chat.session.created",
            EventType::TicketCreated => "ticket.created",
            EventType::TicketUpdated => "ticket.updated",
            EventType::LeadCaptured => "lead.captured",
            EventType::ContactCreated => "contact.created",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        EventType::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// The six names joined by ", ", for error messages.
    pub fn list() -> String {
        EventType::ALL.map(EventType::as_str).join(", ")
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fields of an IllumiChat envelope the tool uses; `None` fields were absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `event`, as sent (may be a type this tool does not know).
    pub event: String,
    /// `timestamp`, as sent.
    pub timestamp: Option<String>,
    /// `workspaceId`.
    pub workspace_id: Option<String>,
    /// `data.id`.
    pub resource_id: Option<String>,
}

impl Envelope {
    /// Reads the envelope from a body; `None` when it is not a JSON object with a string `event`.
    pub fn parse(body: &[u8]) -> Option<Self> {
        // Cheap pre-check so binary and non-JSON bodies cost nothing.
        let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
        if *first != b'{' {
            return None;
        }
        // serde_json does not check UTF-8 inside strings it skips: check the whole body, or a
        // body that is not JSON would pass for an envelope.
        let text = std::str::from_utf8(body).ok()?;
        // Only four fields matter: the rest of the payload is skipped, never built as a tree.
        let raw: RawEnvelope<'_> = serde_json::from_str(text).ok()?;
        Some(Envelope {
            event: raw.event?.into_owned(),
            timestamp: raw.timestamp.and_then(Scalar::into_string),
            workspace_id: raw.workspace_id.and_then(Scalar::into_string),
            resource_id: raw
                .data
                // A derived struct also reads from an array: `"data":["x"]` has no `data.id`.
                .filter(|d| d.get().trim_start().starts_with('{'))
                .and_then(|d| serde_json::from_str::<RawData<'_>>(d.get()).ok())
                .and_then(|d| d.id)
                .and_then(Scalar::into_string),
        })
    }

    /// IllumiChat's documented dedup key, `event:data.id:timestamp`, when all three are present.
    pub fn dedup_key(&self) -> Option<String> {
        Some(format!(
            "{}:{}:{}",
            self.event,
            self.resource_id.as_ref()?,
            self.timestamp.as_ref()?
        ))
    }
}

#[derive(serde::Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    event: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    timestamp: Option<Scalar<'a>>,
    #[serde(borrow, rename = "workspaceId")]
    workspace_id: Option<Scalar<'a>>,
    #[serde(borrow)]
    data: Option<&'a serde_json::value::RawValue>,
}

#[derive(serde::Deserialize)]
struct RawData<'a> {
    #[serde(borrow)]
    id: Option<Scalar<'a>>,
}

/// A field the envelope reads as text: a string (`event` must be one), or a number for ids.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Scalar<'a> {
    Text(#[serde(borrow)] std::borrow::Cow<'a, str>),
    Number(serde_json::Number),
    Other(serde::de::IgnoredAny),
}

impl Scalar<'_> {
    fn into_string(self) -> Option<String> {
        match self {
            Scalar::Text(s) => Some(s.into_owned()),
            Scalar::Number(n) => Some(n.to_string()),
            Scalar::Other(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_schedule_divides_by_speed() {
        assert_eq!(retry_delays(1), RETRY_DELAYS);
        assert_eq!(
            retry_delays(600),
            [
                Duration::from_millis(100),
                Duration::from_millis(500),
                Duration::from_secs(3)
            ]
        );
        assert_eq!(retry_delays(0), RETRY_DELAYS);
    }

    #[test]
    fn parses_the_reference_example() {
        let body = br#"{"event":"ticket.created","timestamp":"2025-06-15T14:30:00Z","workspaceId":"ws_abc123","data":{"id":"tkt_xyz789","subject":"Cannot reset my password"}}"#;
        let e = Envelope::parse(body).unwrap();
        assert_eq!(e.event, "ticket.created");
        assert_eq!(e.workspace_id.as_deref(), Some("ws_abc123"));
        assert_eq!(
            e.dedup_key().as_deref(),
            Some("ticket.created:tkt_xyz789:2025-06-15T14:30:00Z")
        );
    }

    #[test]
    fn non_envelopes_are_none() {
        assert!(Envelope::parse(b"").is_none());
        assert!(Envelope::parse(&[0xff, 0x7b]).is_none());
        assert!(Envelope::parse(b"[1,2]").is_none());
        assert!(Envelope::parse(b"{\"event\":5}").is_none());
        let odd = Envelope::parse(br#"{"event":"a\u0062","data":"text","timestamp":7}"#).unwrap();
        assert_eq!(
            (
                odd.event.as_str(),
                odd.resource_id,
                odd.timestamp.as_deref()
            ),
            ("ab", None, Some("7"))
        );
        let numeric =
            Envelope::parse(br#"{"event":"x","data":{"id":42,"nested":{"id":"no"}}}"#).unwrap();
        assert_eq!(numeric.resource_id.as_deref(), Some("42"));
        let no_id = Envelope::parse(br#"{"event":"x","timestamp":"t"}"#).unwrap();
        assert_eq!(no_id.dedup_key(), None);
    }

    #[test]
    fn event_types_round_trip() {
        for e in EventType::ALL {
            assert_eq!(EventType::parse(e.as_str()), Some(e));
        }
        assert_eq!(EventType::parse("ticket.deleted"), None);
        assert!(EventType::list().starts_with("chat.message.created, "));
    }
}
