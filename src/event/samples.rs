//! Realistic sample deliveries for `trigger`: the exact documented envelope (`event`,
//! `timestamp`, `workspaceId`, `data`) with fresh ids and a fresh timestamp every call.

use serde_json::{json, Map, Value};

use super::EventType;

/// Workspace id used by samples, shaped like the reference's `ws_abc123`.
pub const SAMPLE_WORKSPACE: &str = "ws_sample01";

/// A fresh id such as `tkt_8f3a91c2d4`: the prefix, then 10 random lowercase hex digits.
pub fn fresh_id(prefix: &str) -> String {
    format!("{prefix}_{:010x}", rand::random::<u64>() & 0xff_ffff_ffff)
}

/// A sample envelope for `event`, timestamped `now` (RFC 3339, seconds, UTC as in the reference).
pub fn sample(event: EventType, now_ms: i64) -> Value {
    let ts = rfc3339_seconds(now_ms);
    let data = match event {
        EventType::ChatMessageCreated => json!({
            "id": fresh_id("msg"),
            "sessionId": fresh_id("ses"),
            "role": "user",
            "content": "Hi! I can't find the invoice for my last order.",
            "contactId": fresh_id("ct"),
            "createdAt": ts,
        }),
        EventType::ChatSessionCreated => json!({
            "id": fresh_id("ses"),
            "channel": "widget",
            "status": "active",
            "contactId": fresh_id("ct"),
            "pageUrl": "https://example.com/pricing",
            "createdAt": ts,
        }),
        EventType::TicketCreated => json!({
            "id": fresh_id("tkt"),
            "subject": "Cannot reset my password",
            "status": "open",
            "priority": "medium",
            "contactId": fresh_id("ct"),
            "createdAt": ts,
        }),
        EventType::TicketUpdated => json!({
            "id": fresh_id("tkt"),
            "subject": "Cannot reset my password",
            "status": "pending",
            "priority": "high",
            "assigneeId": fresh_id("usr"),
            "previousStatus": "open",
            "updatedAt": ts,
        }),
        EventType::LeadCaptured => json!({
            "id": fresh_id("lead"),
            "email": "jordan.lee@example.com",
            "name": "Jordan Lee",
            "company": "Northwind Traders",
            "source": "widget",
            "sessionId": fresh_id("ses"),
            "createdAt": ts,
        }),
        EventType::ContactCreated => json!({
            "id": fresh_id("ct"),
            "email": "sam.rivera@example.com",
            "name": "Sam Rivera",
            "phone": "+1-555-0134",
            "createdAt": ts,
        }),
    };
    let mut envelope = Map::new();
    envelope.insert("event".into(), Value::String(event.as_str().into()));
    envelope.insert("timestamp".into(), Value::String(ts));
    envelope.insert("workspaceId".into(), Value::String(SAMPLE_WORKSPACE.into()));
    envelope.insert("data".into(), data);
    Value::Object(envelope)
}

/// Why a `--set` could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// Not `PATH=VALUE`.
    #[error("--set {0:?} is not PATH=VALUE; write it like --set data.status=closed")]
    Syntax(String),
    /// The path crosses a value that is not an object.
    #[error("--set {0}: {1} is not an object, so it has no fields")]
    NotObject(String, String),
}

/// Applies `PATH=VALUE` (e.g. `data.customer.tier=gold`) to `payload`, creating objects on the
/// way. VALUE is taken as JSON when it parses (numbers, booleans, null, objects), else as a string.
pub fn apply_set(payload: &mut Value, assignment: &str) -> Result<(), SetError> {
    let (path, raw) = assignment
        .split_once('=')
        .filter(|(p, _)| !p.is_empty() && p.split('.').all(|s| !s.is_empty()))
        .ok_or_else(|| SetError::Syntax(assignment.to_string()))?;
    let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    let parts: Vec<&str> = path.split('.').collect();
    let mut cur = payload;
    for (i, part) in parts.iter().enumerate() {
        let here = parts[..i].join(".");
        let obj = cur.as_object_mut().ok_or_else(|| {
            SetError::NotObject(
                path.to_string(),
                if here.is_empty() {
                    "the payload".into()
                } else {
                    here
                },
            )
        })?;
        if i + 1 == parts.len() {
            obj.insert((*part).to_string(), value);
            return Ok(());
        }
        cur = obj
            .entry((*part).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    Ok(())
}

fn rfc3339_seconds(ms: i64) -> String {
    let full = crate::rfc3339_ms(ms);
    // "2025-06-15T14:30:00.123Z" → "2025-06-15T14:30:00Z", the reference's shape.
    match full.split_once('.') {
        Some((head, _)) => format!("{head}Z"),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Envelope;

    #[test]
    fn every_sample_is_a_full_envelope_with_fresh_ids() {
        for event in EventType::ALL {
            let a = sample(event, 1_750_000_000_000);
            let b = sample(event, 1_750_000_000_000);
            let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["event", "timestamp", "workspaceId", "data"]);
            assert_eq!(a["timestamp"], "2025-06-15T15:06:40Z");
            assert_ne!(
                a["data"]["id"], b["data"]["id"],
                "{event} ids must be fresh"
            );
            let env = Envelope::parse(a.to_string().as_bytes()).unwrap();
            assert_eq!(env.event, event.as_str());
            assert!(env.dedup_key().is_some());
        }
        assert!(sample(EventType::TicketCreated, 0)["data"]["id"]
            .as_str()
            .unwrap()
            .starts_with("tkt_"));
        assert!(sample(EventType::LeadCaptured, 0)["data"]["email"].is_string());
    }

    #[test]
    fn set_parses_json_values_and_nests() {
        let mut v = sample(EventType::TicketCreated, 0);
        apply_set(&mut v, "data.priority=high").unwrap();
        apply_set(&mut v, "data.count=3").unwrap();
        apply_set(&mut v, "data.vip=true").unwrap();
        apply_set(&mut v, "data.tags=[\"a\"]").unwrap();
        apply_set(&mut v, "data.customer.tier=gold").unwrap();
        apply_set(&mut v, "data.note=a=b").unwrap();
        assert_eq!(v["data"]["priority"], "high");
        assert_eq!(v["data"]["count"], 3);
        assert_eq!(v["data"]["vip"], true);
        assert_eq!(v["data"]["tags"][0], "a");
        assert_eq!(v["data"]["customer"]["tier"], "gold");
        assert_eq!(v["data"]["note"], "a=b");
    }

    #[test]
    fn set_errors_are_sentences() {
        let mut v = sample(EventType::TicketCreated, 0);
        assert!(matches!(
            apply_set(&mut v, "nothing"),
            Err(SetError::Syntax(_))
        ));
        assert!(matches!(
            apply_set(&mut v, "data..x=1"),
            Err(SetError::Syntax(_))
        ));
        let err = apply_set(&mut v, "data.subject.x=1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--set data.subject.x: data.subject is not an object, so it has no fields"
        );
    }
}
