//! IllumiChat's event model: the six event types, the envelope every delivery carries
//! (`event`, `timestamp`, `workspaceId`, `data`), and the dedup key IllumiChat documents.

pub mod samples;

use serde_json::Value;

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
        let v: Value = serde_json::from_slice(body).ok()?;
        let event = v.get("event")?.as_str()?.to_string();
        let text = |v: Option<&Value>| match v {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        Some(Envelope {
            event,
            timestamp: text(v.get("timestamp")),
            workspace_id: text(v.get("workspaceId")),
            resource_id: text(v.get("data").and_then(|d| d.get("id"))),
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

#[cfg(test)]
mod tests {
    use super::*;

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
