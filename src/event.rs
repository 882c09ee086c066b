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
            resource_id: raw.data.and_then(|d| d.0).and_then(Scalar::into_string),
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
    data: Option<DataId<'a>>,
}

/// `data.id`, read in the same pass as the rest of the envelope (`data` is most of a payload;
/// reading it once as a raw value and again for its id scanned it twice). `None` when `data` is
/// not an object, has no `id`, or has `id` twice.
struct DataId<'a>(Option<Scalar<'a>>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for DataId<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DataIdVisitor(std::marker::PhantomData))
    }
}

struct DataIdVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> serde::de::Visitor<'de> for DataIdVisitor<'a> {
    type Value = DataId<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut id, mut twice) = (None, false);
        while let Some(IsId(is_id)) = map.next_key()? {
            if !is_id {
                map.next_value::<serde::de::IgnoredAny>()?;
            } else if id.is_some() {
                twice = true;
                map.next_value::<serde::de::IgnoredAny>()?;
            } else {
                id = Some(map.next_value::<Scalar<'a>>()?);
            }
        }
        Ok(DataId(if twice { None } else { id }))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(DataId(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(DataId(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(DataId(None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(DataId(None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(DataId(None))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(DataId(None))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(DataId(None))
    }
}

/// A key of `data`: whether it is `id` (escaped or not), without keeping it.
struct IsId(bool);

impl<'de> serde::Deserialize<'de> for IsId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = IsId;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, key: &str) -> Result<IsId, E> {
                Ok(IsId(key == "id"))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
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
    fn data_id_is_read_in_one_pass_with_the_old_answers() {
        let id = |body: &[u8]| Envelope::parse(body).map(|e| e.resource_id);
        assert_eq!(
            id(br#"{"event":"x","data":{"a":[1,{"id":2}],"\u0069d":"t1"}}"#),
            Some(Some("t1".into()))
        );
        assert_eq!(
            id(br#"{"event":"x","data":{"id":"a","id":"b"}}"#),
            Some(None)
        );
        assert_eq!(id(br#"{"event":"x","data":["id","x"]}"#), Some(None));
        assert_eq!(id(br#"{"event":"x","data":null}"#), Some(None));
        assert_eq!(id(br#"{"event":"x","data":{"id":{"deep":1}}}"#), Some(None));
        // Broken JSON inside `data` is still no envelope at all.
        assert_eq!(id(br#"{"event":"x","data":{"id":"a",}}"#), None);
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
