//! How deliveries and answers travel between relay nodes and sit in the JetStream queue: a
//! small JSON head (header values in base64, since they may be any bytes) followed by the raw
//! body, or by nothing when the body went through the object store because it is larger than
//! NATS's payload limit.
//!
//! ```text
//! u32 big-endian head length | head (JSON) | body bytes
//! ```

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use illumitunnel::headers::Header;
use illumitunnel::DeliveryId;
use serde::{Deserialize, Serialize};

use crate::queue::QueuedDelivery;

/// A message between nodes or in the queue could not be read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable cluster message: {0}")]
pub struct CodecError(String);

#[derive(Serialize, Deserialize)]
struct DeliveryHead {
    id: String,
    received_at_ms: u64,
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    /// Object store name of the body, when it did not fit in the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_ref: Option<String>,
}

/// A delivery's fields without its body, and where the body is.
pub struct DeliveryFrame {
    /// The delivery; its body is empty when `body_ref` names an object.
    pub delivery: QueuedDelivery,
    /// Object store name of the body.
    pub body_ref: Option<String>,
}

/// A local server's answer, or an answer the relay made itself (202, 413, …), as the ingress
/// node gives it to the sender.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnswerHead {
    /// HTTP status.
    pub status: u16,
    /// Headers, values in base64.
    pub headers: Vec<(String, String)>,
    /// Object store name of the body, when it did not fit in the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_ref: Option<String>,
    /// How the delivery ended, as the metrics name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// Encodes `delivery`; with `body_ref` the body stays out of the message.
pub fn encode_delivery(delivery: &QueuedDelivery, body_ref: Option<String>) -> Bytes {
    let head = DeliveryHead {
        id: delivery.id.as_str().to_owned(),
        received_at_ms: delivery.received_at_ms,
        method: delivery.method.clone(),
        path: delivery.path.clone(),
        query: delivery.query.clone(),
        headers: encode_headers(&delivery.headers),
        body_ref: body_ref.clone(),
    };
    let body = if body_ref.is_some() {
        &[][..]
    } else {
        &delivery.body[..]
    };
    frame(&head, body)
}

/// Reads a message written by [`encode_delivery`].
pub fn decode_delivery(message: &Bytes) -> Result<DeliveryFrame, CodecError> {
    let (head, body): (DeliveryHead, Bytes) = unframe(message)?;
    let id = DeliveryId::parse(&head.id).ok_or_else(|| CodecError("bad delivery id".into()))?;
    Ok(DeliveryFrame {
        delivery: QueuedDelivery {
            id,
            received_at_ms: head.received_at_ms,
            method: head.method,
            path: head.path,
            query: head.query,
            headers: decode_headers(head.headers)?,
            body,
        },
        body_ref: head.body_ref,
    })
}

/// Encodes an answer; with `head.body_ref` set, `body` should be empty.
pub fn encode_answer(head: &AnswerHead, body: &[u8]) -> Bytes {
    frame(head, body)
}

/// Reads a message written by [`encode_answer`].
pub fn decode_answer(message: &Bytes) -> Result<(AnswerHead, Bytes), CodecError> {
    unframe(message)
}

/// Header pairs with values in base64, for a JSON head.
pub fn encode_headers(headers: &[Header]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| (name.clone(), STANDARD.encode(value)))
        .collect()
}

/// The inverse of [`encode_headers`].
pub fn decode_headers(headers: Vec<(String, String)>) -> Result<Vec<Header>, CodecError> {
    headers
        .into_iter()
        .map(|(name, value)| {
            STANDARD
                .decode(value)
                .map(|value| (name, value))
                .map_err(|_| CodecError("header value is not base64".into()))
        })
        .collect()
}

fn frame<T: Serialize>(head: &T, body: &[u8]) -> Bytes {
    // Serialising these plain structs to a Vec cannot fail.
    let head = serde_json::to_vec(head).unwrap_or_default();
    let mut out = BytesMut::with_capacity(4 + head.len() + body.len());
    out.put_u32(head.len() as u32);
    out.put_slice(&head);
    out.put_slice(body);
    out.freeze()
}

fn unframe<T: for<'de> Deserialize<'de>>(message: &Bytes) -> Result<(T, Bytes), CodecError> {
    let len = message
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| CodecError("shorter than its length prefix".into()))?;
    let end = 4usize
        .checked_add(len)
        .filter(|&end| end <= message.len())
        .ok_or_else(|| CodecError("head longer than the message".into()))?;
    let head = serde_json::from_slice(&message[4..end]).map_err(|e| CodecError(e.to_string()))?;
    Ok((head, message.slice(end..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(body: &'static [u8]) -> QueuedDelivery {
        QueuedDelivery {
            id: DeliveryId::generate(),
            received_at_ms: 1_700_000_000_123,
            method: "POST".into(),
            path: "/hooks".into(),
            query: "a=1".into(),
            headers: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("x-raw".into(), vec![0xff, 0x00, b'a']),
            ],
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn delivery_round_trips_byte_exact() {
        let d = delivery(b"\x00\xff{\"x\":1}");
        let decoded = decode_delivery(&encode_delivery(&d, None)).unwrap();
        assert_eq!(decoded.delivery, d);
        assert!(decoded.body_ref.is_none());
    }

    #[test]
    fn a_body_in_the_object_store_stays_out_of_the_message() {
        let d = delivery(b"large");
        let message = encode_delivery(&d, Some("obj-1".into()));
        let decoded = decode_delivery(&message).unwrap();
        assert!(decoded.delivery.body.is_empty());
        assert_eq!(decoded.body_ref.as_deref(), Some("obj-1"));
    }

    #[test]
    fn answers_round_trip() {
        let head = AnswerHead {
            status: 201,
            headers: encode_headers(&[("x".into(), vec![1, 2, 3])]),
            body_ref: None,
            outcome: None,
        };
        let (back, body) = decode_answer(&encode_answer(&head, b"ok")).unwrap();
        assert_eq!(back.status, 201);
        assert_eq!(decode_headers(back.headers).unwrap()[0].1, vec![1, 2, 3]);
        assert_eq!(&body[..], b"ok");
    }

    #[test]
    fn truncated_or_garbage_messages_are_errors() {
        for bad in [
            &b""[..],
            b"\x00\x00",
            b"\x00\x00\x00\x09{}",
            b"\x00\x00\x00\x02{]",
        ] {
            assert!(decode_delivery(&Bytes::copy_from_slice(bad)).is_err());
        }
    }
}
