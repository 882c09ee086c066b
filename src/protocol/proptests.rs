//! Property tests for the codec and the envelope reader: every message survives
//! encode → decode (non-UTF-8 header values and bodies up to [`MAX_CHUNK`] included), and no
//! byte string makes a decoder or [`Envelope::parse`] panic. The cargo-fuzz targets in
//! `fuzz/` search the same space for much longer; these keep the properties in `cargo test`.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::event::Envelope;

/// A body: mostly short and shrinkable, sometimes up to a full [`MAX_CHUNK`] slice (filled
/// from a seed, since drawing 64 KiB byte by byte would dominate the run time).
fn body() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        3 => vec(any::<u8>(), 0..64).prop_map(Bytes::from),
        1 => (0..=MAX_CHUNK, any::<u64>()).prop_map(|(len, seed)| Bytes::from(filled(len, seed))),
        1 => Just(Bytes::from(vec![0xff; MAX_CHUNK])),
    ]
}

/// `len` pseudo-random bytes from `seed` (xorshift64*), never all valid UTF-8 for long bodies.
fn filled(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

fn id() -> impl Strategy<Value = DeliveryId> {
    "[0-9a-z_-]{1,64}".prop_map(|s| DeliveryId::parse(&s).expect("the pattern is an id"))
}

/// Any text, control and multi-byte characters included.
fn text() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| s.chars().take(200).collect())
}

/// Headers as they travel: names are text, values raw bytes (often not UTF-8).
fn headers() -> impl Strategy<Value = Vec<Header>> {
    vec((text(), vec(any::<u8>(), 0..96)), 0..8)
}

fn refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        Just(Refusal::Unauthorized),
        Just(Refusal::TunnelNameInvalid),
        Just(Refusal::TunnelTaken),
        Just(Refusal::VersionMismatch),
    ]
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (any::<u16>(), text(), text(), any::<bool>()).prop_map(
            |(v, tunnel, claim_key, observer)| {
                // Mostly the current version, whose fields all travel.
                let version = if v % 4 == 0 { v } else { PROTOCOL_VERSION };
                ClientMessage::Hello {
                    version,
                    tunnel,
                    claim_key,
                    observer,
                }
            }
        ),
        (id(), any::<u16>(), headers(), body(), any::<bool>()).prop_map(
            |(id, status, headers, body, end)| ClientMessage::Response {
                id,
                status,
                headers,
                body,
                end,
            }
        ),
        (id(), body(), any::<bool>()).prop_map(|(id, data, end)| ClientMessage::ResponseChunk {
            id,
            data,
            end
        }),
        (id(), text()).prop_map(|(id, message)| ClientMessage::Failed { id, message }),
        id().prop_map(|id| ClientMessage::Recorded { id }),
        (id(), text()).prop_map(|(id, message)| ClientMessage::NotRecorded { id, message }),
        (id(), text()).prop_map(|(id, message)| ClientMessage::Rejected { id, message }),
    ]
}

fn relay_message() -> impl Strategy<Value = RelayMessage> {
    let request = (
        (id(), any::<u64>(), any::<bool>(), any::<bool>()),
        (text(), text(), text()),
        (headers(), body(), any::<bool>()),
    )
        .prop_map(
            |(
                (id, received_at_ms, answer, redelivery),
                (method, path, query),
                (headers, body, end),
            )| RelayMessage::Request {
                id,
                received_at_ms,
                answer,
                redelivery,
                method,
                path,
                query,
                headers,
                body,
                end,
            },
        );
    prop_oneof![
        1 => (
            text(),
            text(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            text()
        )
            .prop_map(
                |(tunnel, public_url, queued, expired, dead_letters, claim_key)| {
                    RelayMessage::Welcome {
                        tunnel,
                        public_url,
                        queued,
                        expired,
                        dead_letters,
                        claim_key,
                    }
                }
            ),
        1 => (refusal(), text()).prop_map(|(reason, message)| RelayMessage::Refused { reason, message }),
        3 => request,
        1 => (id(), body(), any::<bool>())
            .prop_map(|(id, data, end)| RelayMessage::RequestChunk { id, data, end }),
        1 => id().prop_map(|id| RelayMessage::Cancel { id }),
        1 => (id(), text()).prop_map(|(id, reason)| RelayMessage::DeadLettered { id, reason }),
    ]
}

/// A real message with some bytes overwritten and its end cut: close enough to valid that the
/// decoder walks deep into it before failing.
fn damaged(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len();
    (vec((0..len, any::<u8>()), 0..6), 0..=len).prop_map(move |(edits, keep)| {
        let mut bytes = valid.clone();
        for (at, b) in edits {
            bytes[at] = b;
        }
        bytes.truncate(keep.max(1));
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn client_messages_round_trip(msg in client_message()) {
        let back = ClientMessage::decode(&msg.encode());
        let want = match &msg {
            // Another version is decoded only as far as refusing it needs.
            ClientMessage::Hello { version, .. } if *version != PROTOCOL_VERSION => {
                ClientMessage::Hello { version: *version, tunnel: String::new(), claim_key: String::new(), observer: false }
            }
            _ => msg.clone(),
        };
        prop_assert_eq!(back, Ok(want));
    }

    #[test]
    fn relay_messages_round_trip(msg in relay_message()) {
        prop_assert_eq!(RelayMessage::decode(&msg.encode()), Ok(msg));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        let _ = ClientMessage::decode(&bytes);
        let _ = RelayMessage::decode(&bytes);
        let _ = Envelope::parse(&bytes);
    }

    #[test]
    fn damaged_client_messages_never_panic(bytes in client_message().prop_flat_map(|m| damaged(m.encode()))) {
        if let Ok(msg) = ClientMessage::decode(&bytes) {
            // Whatever still decodes is a message the codec can carry again.
            let again = ClientMessage::decode(&msg.encode());
            prop_assert_eq!(again, Ok(msg));
        }
        let _ = RelayMessage::decode(&bytes);
    }

    #[test]
    fn damaged_relay_messages_never_panic(bytes in relay_message().prop_flat_map(|m| damaged(m.encode()))) {
        if let Ok(msg) = RelayMessage::decode(&bytes) {
            prop_assert_eq!(RelayMessage::decode(&msg.encode()), Ok(msg));
        }
        let _ = ClientMessage::decode(&bytes);
    }

    #[test]
    fn json_like_bodies_never_panic(body in r#"[ \t\n]{0,2}\{("(event|timestamp|workspaceId|data|id)"|[{}\[\]":,.0-9eE+\-a-z\\ ]|\\u[0-9a-fA-F]{4}){0,80}"#) {
        if let Some(env) = Envelope::parse(body.as_bytes()) {
            // The reader only says yes to a JSON object whose `event` is a string.
            let tree: serde_json::Value = serde_json::from_str(&body).expect("accepted JSON parses");
            prop_assert_eq!(tree.get("event").and_then(|v| v.as_str()), Some(env.event.as_str()));
        }
    }
}

/// Found by the `envelope` fuzz target: invalid UTF-8 in a key serde_json skipped (inside an
/// unknown field) made a body that is not JSON read as an envelope.
#[test]
fn invalid_utf8_in_a_skipped_field_is_not_an_envelope() {
    let body = b" {\"event\":\"a\\u0062\",\"{data\":{\"id\":42,\"n\xfe\xff\xff\xefd\":{\"id\":\"no\"}},\"workspaceId\":null}";
    assert!(serde_json::from_slice::<serde_json::Value>(body).is_err());
    assert_eq!(Envelope::parse(body), None);
}

/// Found by the `envelope` fuzz target: `data` as an array read its first element as `data.id`.
#[test]
fn data_as_an_array_has_no_resource_id() {
    let env = Envelope::parse(br#"{"event":"ticket.created","data":["tkt_1"],"timestamp":"t"}"#)
        .expect("still an envelope");
    assert_eq!(env.resource_id, None);
    assert_eq!(env.dedup_key(), None);
}
