//! The relay ⇄ client wire protocol: one binary websocket message per [`ClientMessage`] or
//! [`RelayMessage`], encoded by hand so bodies travel as raw bytes (never base64, never
//! JSON-escaped) and decoding checks every length before it allocates.
//!
//! Every message is `tag: u8` followed by its fields, big-endian: integers fixed-width,
//! strings `u16 length + UTF-8`, byte strings `u32 length + bytes`, header lists
//! `u16 count + (u16 name length, name, u32 value length, value)*`. Deliveries are multiplexed
//! by [`DeliveryId`]; a body larger than [`MAX_CHUNK`] follows its head in `*Chunk` messages,
//! so a 10 MiB delivery never stalls the others. `docs/protocol.md` describes the exchange.

use bytes::Bytes;

use crate::delivery::DeliveryId;
use crate::headers::Header;

/// Version the client sends in [`ClientMessage::Hello`]; the relay refuses any other.
pub const PROTOCOL_VERSION: u16 = 2;

/// Largest body slice carried by one message.
pub const MAX_CHUNK: usize = 64 * 1024;

/// Largest encoded head (method, path, query, headers) a message may carry.
pub const MAX_HEAD: usize = 128 * 1024;

/// Largest websocket message either side accepts: one head plus one chunk, with room for framing.
pub const MAX_MESSAGE: usize = MAX_HEAD + MAX_CHUNK + 1024;

/// Path the relay serves the client websocket on.
pub const CONNECT_PATH: &str = "/_illumitunnel/connect";

/// Messages sent by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// First message of a session: the protocol version and the tunnel to claim.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`].
        version: u16,
        /// Tunnel name to claim.
        tunnel: String,
        /// The claim key an anonymous relay gave this client for `tunnel` (empty: none).
        claim_key: String,
    },
    /// The local server's status and headers, with the first body slice.
    Response {
        /// Delivery this answers.
        id: DeliveryId,
        /// HTTP status from the local server.
        status: u16,
        /// Response headers as the local server sent them.
        headers: Vec<Header>,
        /// First body slice (at most [`MAX_CHUNK`]).
        body: Bytes,
        /// Whether `body` is the whole body.
        end: bool,
    },
    /// A further slice of a response body.
    ResponseChunk {
        /// Delivery this belongs to.
        id: DeliveryId,
        /// Body slice (at most [`MAX_CHUNK`]).
        data: Bytes,
        /// Whether this is the last slice.
        end: bool,
    },
    /// The client could not get an answer from the local server; the relay answers 502.
    Failed {
        /// Delivery this answers.
        id: DeliveryId,
        /// Human sentence naming the cause, e.g. `connection refused to 127.0.0.1:3000`.
        message: String,
    },
    /// The delivery and its answer are committed to the client's capture store; the relay
    /// may forget it (drop it from the offline queue).
    Recorded {
        /// Delivery now safely recorded.
        id: DeliveryId,
    },
    /// A redelivery could not be committed to the capture store (disk full, permissions): the
    /// relay keeps it queued and sends it again later, without counting it against the delivery.
    NotRecorded {
        /// Delivery the client could not record.
        id: DeliveryId,
        /// Why, as a sentence.
        message: String,
    },
    /// The client cannot take this delivery at all (e.g. larger than it accepts); three in a row
    /// set a queued delivery aside as a dead letter.
    Rejected {
        /// Delivery refused.
        id: DeliveryId,
        /// Why, as a sentence.
        message: String,
    },
}

/// Why the relay refused a session; the client turns each into a sentence and exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Missing or unknown token.
    Unauthorized = 1,
    /// The tunnel name is not `[a-z0-9-]{3,40}`.
    TunnelNameInvalid = 2,
    /// Another token owns this tunnel name.
    TunnelTaken = 3,
    /// The client speaks another protocol version.
    VersionMismatch = 4,
}

impl Refusal {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Refusal::Unauthorized,
            2 => Refusal::TunnelNameInvalid,
            3 => Refusal::TunnelTaken,
            4 => Refusal::VersionMismatch,
            _ => return None,
        })
    }
}

/// Messages sent by the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayMessage {
    /// The session is accepted.
    Welcome {
        /// The tunnel this session serves.
        tunnel: String,
        /// The tunnel's public webhook URL, `{relay public URL}/t/{tunnel}`.
        public_url: String,
        /// Deliveries waiting in the offline queue, sent right after this message.
        queued: u32,
        /// Queued deliveries dropped because they outlived the queue's age limit.
        expired: u32,
        /// Queued deliveries set aside as dead letters and kept in the relay's data dir.
        dead_letters: u32,
        /// Key that lets this client re-join an anonymously claimed tunnel (empty: not needed).
        claim_key: String,
    },
    /// The session is refused; the relay closes the websocket after this.
    Refused {
        /// Why.
        reason: Refusal,
        /// A sentence for the user.
        message: String,
    },
    /// A delivery: the sender's request head with the first body slice.
    Request {
        /// Unique id, stable across redeliveries from the offline queue.
        id: DeliveryId,
        /// When the relay received it, Unix milliseconds.
        received_at_ms: u64,
        /// Whether the relay waits for this listener's answer (false for fan-out copies and
        /// answered-already queue entries).
        answer: bool,
        /// Whether the client may have seen this delivery before (from the offline queue, or
        /// re-sent after the session it first went to vanished): the client forwards
        /// redeliveries one at a time in arrival order, answers one it already recorded from
        /// its capture store, and sends `Recorded` once it is committed.
        redelivery: bool,
        /// HTTP method.
        method: String,
        /// Path below the tunnel, starting with `/` (`/t/{tunnel}` stripped).
        path: String,
        /// Raw query string without `?`, empty when none.
        query: String,
        /// End-to-end headers from the sender plus `X-Forwarded-*`.
        headers: Vec<Header>,
        /// First body slice (at most [`MAX_CHUNK`]).
        body: Bytes,
        /// Whether `body` is the whole body.
        end: bool,
    },
    /// A further slice of a request body.
    RequestChunk {
        /// Delivery this belongs to.
        id: DeliveryId,
        /// Body slice (at most [`MAX_CHUNK`]).
        data: Bytes,
        /// Whether this is the last slice.
        end: bool,
    },
    /// The relay no longer waits for this delivery's answer (sender gone or timed out).
    Cancel {
        /// Delivery cancelled.
        id: DeliveryId,
    },
    /// A queued delivery was set aside as a dead letter (it ended sessions or was rejected
    /// three times in a row); the deliveries behind it keep flowing.
    DeadLettered {
        /// The delivery set aside.
        id: DeliveryId,
        /// Why, as a sentence.
        reason: String,
    },
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended before a field did.
    #[error("message truncated")]
    Truncated,
    /// The first byte names no message this side knows.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// A field or the whole message is larger than the protocol allows.
    #[error("message too large: {0}")]
    TooLarge(&'static str),
    /// A string field is not UTF-8.
    #[error("invalid UTF-8 in {0}")]
    InvalidUtf8(&'static str),
    /// A field has a value outside its range.
    #[error("invalid value for {0}")]
    InvalidValue(&'static str),
    /// Bytes were left after the last field.
    #[error("trailing bytes after message")]
    TrailingBytes,
    /// An empty message.
    #[error("empty message")]
    Empty,
}

const C_HELLO: u8 = 1;
const C_RESPONSE: u8 = 2;
const C_RESPONSE_CHUNK: u8 = 3;
const C_FAILED: u8 = 4;
const C_RECORDED: u8 = 5;
const C_NOT_RECORDED: u8 = 6;
const C_REJECTED: u8 = 7;

const R_WELCOME: u8 = 101;
const R_REFUSED: u8 = 102;
const R_REQUEST: u8 = 103;
const R_REQUEST_CHUNK: u8 = 104;
const R_CANCEL: u8 = 105;
const R_DEAD_LETTERED: u8 = 106;

impl ClientMessage {
    /// Encodes this message as one binary websocket payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_hint());
        match self {
            ClientMessage::Hello {
                version,
                tunnel,
                claim_key,
            } => {
                out.push(C_HELLO);
                out.extend_from_slice(&version.to_be_bytes());
                put_str(&mut out, tunnel);
                put_str(&mut out, claim_key);
            }
            ClientMessage::Response {
                id,
                status,
                headers,
                body,
                end,
            } => {
                out.push(C_RESPONSE);
                put_str(&mut out, id.as_str());
                out.extend_from_slice(&status.to_be_bytes());
                put_headers(&mut out, headers);
                put_bytes(&mut out, body);
                out.push(u8::from(*end));
            }
            ClientMessage::ResponseChunk { id, data, end } => {
                out.push(C_RESPONSE_CHUNK);
                put_str(&mut out, id.as_str());
                put_bytes(&mut out, data);
                out.push(u8::from(*end));
            }
            ClientMessage::Failed { id, message } => {
                out.push(C_FAILED);
                put_str(&mut out, id.as_str());
                put_str(&mut out, message);
            }
            ClientMessage::Recorded { id } => {
                out.push(C_RECORDED);
                put_str(&mut out, id.as_str());
            }
            ClientMessage::NotRecorded { id, message } => {
                out.push(C_NOT_RECORDED);
                put_str(&mut out, id.as_str());
                put_str(&mut out, message);
            }
            ClientMessage::Rejected { id, message } => {
                out.push(C_REJECTED);
                put_str(&mut out, id.as_str());
                put_str(&mut out, message);
            }
        }
        out
    }

    /// Decodes one binary websocket payload.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        check_size(buf)?;
        let mut r = Reader::new(buf);
        let msg = match r.u8()? {
            C_HELLO => {
                let version = r.u16()?;
                if version != PROTOCOL_VERSION {
                    // Another version's layout may differ after the version field: decode only
                    // what the relay needs to refuse it with a sentence.
                    return Ok(ClientMessage::Hello {
                        version,
                        tunnel: String::new(),
                        claim_key: String::new(),
                    });
                }
                ClientMessage::Hello {
                    version,
                    tunnel: r.str("tunnel")?,
                    claim_key: r.str("claim_key")?,
                }
            }
            C_RESPONSE => ClientMessage::Response {
                id: r.id()?,
                status: r.u16()?,
                headers: r.headers()?,
                body: r.body()?,
                end: r.bool()?,
            },
            C_RESPONSE_CHUNK => ClientMessage::ResponseChunk {
                id: r.id()?,
                data: r.body()?,
                end: r.bool()?,
            },
            C_FAILED => ClientMessage::Failed {
                id: r.id()?,
                message: r.str("message")?,
            },
            C_RECORDED => ClientMessage::Recorded { id: r.id()? },
            C_NOT_RECORDED => ClientMessage::NotRecorded {
                id: r.id()?,
                message: r.str("message")?,
            },
            C_REJECTED => ClientMessage::Rejected {
                id: r.id()?,
                message: r.str("message")?,
            },
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(msg)
    }

    fn size_hint(&self) -> usize {
        match self {
            ClientMessage::Response { headers, body, .. } => 64 + headers_len(headers) + body.len(),
            ClientMessage::ResponseChunk { data, .. } => 64 + data.len(),
            _ => 128,
        }
    }
}

impl RelayMessage {
    /// Encodes this message as one binary websocket payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_hint());
        match self {
            RelayMessage::Welcome {
                tunnel,
                public_url,
                queued,
                expired,
                dead_letters,
                claim_key,
            } => {
                out.push(R_WELCOME);
                put_str(&mut out, tunnel);
                put_str(&mut out, public_url);
                out.extend_from_slice(&queued.to_be_bytes());
                out.extend_from_slice(&expired.to_be_bytes());
                out.extend_from_slice(&dead_letters.to_be_bytes());
                put_str(&mut out, claim_key);
            }
            RelayMessage::Refused { reason, message } => {
                out.push(R_REFUSED);
                out.push(*reason as u8);
                put_str(&mut out, message);
            }
            RelayMessage::Request {
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
            } => {
                out.push(R_REQUEST);
                put_str(&mut out, id.as_str());
                out.extend_from_slice(&received_at_ms.to_be_bytes());
                out.push(u8::from(*answer) | (u8::from(*redelivery) << 1));
                put_str(&mut out, method);
                put_str(&mut out, path);
                put_str(&mut out, query);
                put_headers(&mut out, headers);
                put_bytes(&mut out, body);
                out.push(u8::from(*end));
            }
            RelayMessage::RequestChunk { id, data, end } => {
                out.push(R_REQUEST_CHUNK);
                put_str(&mut out, id.as_str());
                put_bytes(&mut out, data);
                out.push(u8::from(*end));
            }
            RelayMessage::Cancel { id } => {
                out.push(R_CANCEL);
                put_str(&mut out, id.as_str());
            }
            RelayMessage::DeadLettered { id, reason } => {
                out.push(R_DEAD_LETTERED);
                put_str(&mut out, id.as_str());
                put_str(&mut out, reason);
            }
        }
        out
    }

    /// Decodes one binary websocket payload.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        check_size(buf)?;
        let mut r = Reader::new(buf);
        let msg = match r.u8()? {
            R_WELCOME => RelayMessage::Welcome {
                tunnel: r.str("tunnel")?,
                public_url: r.str("public_url")?,
                queued: r.u32()?,
                expired: r.u32()?,
                dead_letters: r.u32()?,
                claim_key: r.str("claim_key")?,
            },
            R_REFUSED => RelayMessage::Refused {
                reason: Refusal::from_u8(r.u8()?).ok_or(DecodeError::InvalidValue("refusal"))?,
                message: r.str("message")?,
            },
            R_REQUEST => {
                let id = r.id()?;
                let received_at_ms = r.u64()?;
                let flags = r.u8()?;
                if flags > 3 {
                    return Err(DecodeError::InvalidValue("flags"));
                }
                RelayMessage::Request {
                    id,
                    received_at_ms,
                    answer: flags & 1 != 0,
                    redelivery: flags & 2 != 0,
                    method: r.str("method")?,
                    path: r.str("path")?,
                    query: r.str("query")?,
                    headers: r.headers()?,
                    body: r.body()?,
                    end: r.bool()?,
                }
            }
            R_REQUEST_CHUNK => RelayMessage::RequestChunk {
                id: r.id()?,
                data: r.body()?,
                end: r.bool()?,
            },
            R_CANCEL => RelayMessage::Cancel { id: r.id()? },
            R_DEAD_LETTERED => RelayMessage::DeadLettered {
                id: r.id()?,
                reason: r.str("reason")?,
            },
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(msg)
    }

    fn size_hint(&self) -> usize {
        match self {
            RelayMessage::Request {
                headers,
                body,
                path,
                query,
                ..
            } => 64 + path.len() + query.len() + headers_len(headers) + body.len(),
            RelayMessage::RequestChunk { data, .. } => 64 + data.len(),
            _ => 128,
        }
    }
}

fn check_size(buf: &[u8]) -> Result<(), DecodeError> {
    if buf.is_empty() {
        return Err(DecodeError::Empty);
    }
    if buf.len() > MAX_MESSAGE {
        return Err(DecodeError::TooLarge("message"));
    }
    Ok(())
}

fn headers_len(headers: &[Header]) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 6)
        .sum::<usize>()
        + 2
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Strings are bounded by MAX_HEAD long before u16::MAX; truncate rather than corrupt.
    let len = s.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

pub(crate) fn put_headers(out: &mut Vec<u8>, headers: &[Header]) {
    let count = headers.len().min(u16::MAX as usize);
    out.extend_from_slice(&(count as u16).to_be_bytes());
    for (name, value) in &headers[..count] {
        put_str(out, name);
        put_bytes(out, value);
    }
}

/// A bounds-checked cursor over an encoded message.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let slice = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidValue("bool")),
        }
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u16()? as usize;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8(field))
    }

    fn id(&mut self) -> Result<DeliveryId, DecodeError> {
        let s = self.str("id")?;
        DeliveryId::parse(&s).ok_or(DecodeError::InvalidValue("id"))
    }

    fn body(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        if len > MAX_CHUNK {
            return Err(DecodeError::TooLarge("body chunk"));
        }
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }

    pub(crate) fn headers(&mut self) -> Result<Vec<Header>, DecodeError> {
        let count = self.u16()? as usize;
        // Each header takes at least 6 bytes: refuse counts the buffer cannot hold before allocating.
        if count.saturating_mul(6) > self.buf.len() - self.pos {
            return Err(DecodeError::Truncated);
        }
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            let name = self.str("header name")?;
            let len = self.u32()? as usize;
            if len > MAX_HEAD {
                return Err(DecodeError::TooLarge("header value"));
            }
            headers.push((name, self.take(len)?.to_vec()));
        }
        Ok(headers)
    }

    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// Splits a body into the first slice (for the head message) and the rest, in
/// [`MAX_CHUNK`]-sized slices, without copying.
pub fn split_body(body: &Bytes) -> (Bytes, Vec<Bytes>) {
    let first = body.slice(..body.len().min(MAX_CHUNK));
    let mut rest = Vec::new();
    let mut pos = first.len();
    while pos < body.len() {
        let end = (pos + MAX_CHUNK).min(body.len());
        rest.push(body.slice(pos..end));
        pos = end;
    }
    (first, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> DeliveryId {
        DeliveryId::parse("0192a3b4c5d6e7f8").unwrap()
    }

    fn request(body: &[u8]) -> RelayMessage {
        RelayMessage::Request {
            id: id(),
            received_at_ms: 1_750_000_000_000,
            answer: true,
            redelivery: true,
            method: "POST".into(),
            path: "/webhooks/illumichat".into(),
            query: "a=1&b=%20".into(),
            headers: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("x-raw".into(), vec![0xff, 0xfe, 0x00, 0x80]),
                ("x-raw".into(), b"second".to_vec()),
            ],
            body: Bytes::copy_from_slice(body),
            end: true,
        }
    }

    #[test]
    fn relay_messages_round_trip() {
        let msgs = vec![
            request(b"{\"event\":\"ticket.created\"}"),
            request(&[0xff, 0x00, 0xc3, 0x28, 0x0a]),
            RelayMessage::RequestChunk {
                id: id(),
                data: Bytes::from_static(b"\x00\x01"),
                end: false,
            },
            RelayMessage::Welcome {
                tunnel: "my-app".into(),
                public_url: "https://r/t/my-app".into(),
                queued: 3,
                expired: 1,
                dead_letters: 2,
                claim_key: "k3v9x2m4p7qa".into(),
            },
            RelayMessage::Refused {
                reason: Refusal::TunnelTaken,
                message: "taken".into(),
            },
            RelayMessage::Cancel { id: id() },
            RelayMessage::DeadLettered {
                id: id(),
                reason: "it ended the session three times in a row".into(),
            },
        ];
        for msg in msgs {
            assert_eq!(RelayMessage::decode(&msg.encode()).unwrap(), msg);
        }
    }

    #[test]
    fn client_messages_round_trip() {
        let msgs = vec![
            ClientMessage::Hello {
                version: PROTOCOL_VERSION,
                tunnel: "my-app".into(),
                claim_key: String::new(),
            },
            ClientMessage::Response {
                id: id(),
                status: 418,
                headers: vec![("set-cookie".into(), vec![0xe9])],
                body: Bytes::from_static(&[0, 159, 146, 150]),
                end: false,
            },
            ClientMessage::ResponseChunk {
                id: id(),
                data: Bytes::new(),
                end: true,
            },
            ClientMessage::Failed {
                id: id(),
                message: "connection refused to 127.0.0.1:3000".into(),
            },
            ClientMessage::Recorded { id: id() },
            ClientMessage::NotRecorded {
                id: id(),
                message: "database or disk is full".into(),
            },
            ClientMessage::Rejected {
                id: id(),
                message: "request head over 128 KiB".into(),
            },
        ];
        for msg in msgs {
            assert_eq!(ClientMessage::decode(&msg.encode()).unwrap(), msg);
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let encoded = request(b"hello body").encode();
        for len in 0..encoded.len() {
            assert!(
                RelayMessage::decode(&encoded[..len]).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
        let encoded = ClientMessage::Response {
            id: id(),
            status: 200,
            headers: vec![],
            body: Bytes::from_static(b"x"),
            end: true,
        }
        .encode();
        for len in 0..encoded.len() {
            assert!(ClientMessage::decode(&encoded[..len]).is_err());
        }
    }

    #[test]
    fn unknown_type_and_wrong_direction_are_rejected() {
        assert_eq!(
            RelayMessage::decode(&[200]),
            Err(DecodeError::UnknownType(200))
        );
        let hello = ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            tunnel: "abc".into(),
            claim_key: String::new(),
        }
        .encode();
        assert_eq!(
            RelayMessage::decode(&hello),
            Err(DecodeError::UnknownType(C_HELLO))
        );
        assert_eq!(ClientMessage::decode(&[]), Err(DecodeError::Empty));
    }

    #[test]
    fn oversize_is_rejected_before_allocating() {
        assert_eq!(
            RelayMessage::decode(&vec![R_REQUEST; MAX_MESSAGE + 1]),
            Err(DecodeError::TooLarge("message"))
        );
        // A chunk claiming 4 GiB is refused from its length alone.
        let mut msg = vec![R_REQUEST_CHUNK];
        put_str(&mut msg, id().as_str());
        msg.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            RelayMessage::decode(&msg),
            Err(DecodeError::TooLarge("body chunk"))
        );
        // A header count the buffer cannot hold.
        let mut msg = vec![C_RESPONSE];
        put_str(&mut msg, id().as_str());
        msg.extend_from_slice(&200u16.to_be_bytes());
        msg.extend_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(ClientMessage::decode(&msg), Err(DecodeError::Truncated));
    }

    #[test]
    fn wrong_version_decodes_so_the_relay_can_refuse_it() {
        // Version 1's hello, byte for byte: tag, version, tunnel, and no claim key.
        let mut v1 = vec![C_HELLO, 0, 1];
        put_str(&mut v1, "my-app");
        assert_eq!(
            ClientMessage::decode(&v1),
            Ok(ClientMessage::Hello {
                version: 1,
                tunnel: String::new(),
                claim_key: String::new(),
            })
        );
        // A future version's hello with fields this side cannot know still names its version.
        let mut future = vec![C_HELLO, 0, 99, 0xde, 0xad];
        future.extend_from_slice(&[0xff; 16]);
        assert!(matches!(
            ClientMessage::decode(&future),
            Ok(ClientMessage::Hello { version: 99, .. })
        ));
    }

    #[test]
    fn trailing_bytes_and_bad_values_are_rejected() {
        let mut encoded = ClientMessage::Recorded { id: id() }.encode();
        encoded.push(0);
        assert_eq!(
            ClientMessage::decode(&encoded),
            Err(DecodeError::TrailingBytes)
        );
        let mut refused = RelayMessage::Refused {
            reason: Refusal::Unauthorized,
            message: "x".into(),
        }
        .encode();
        refused[1] = 9;
        assert_eq!(
            RelayMessage::decode(&refused),
            Err(DecodeError::InvalidValue("refusal"))
        );
        let mut hello = ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            tunnel: "ab".into(),
            claim_key: String::new(),
        }
        .encode();
        hello[5] = 0xff;
        assert_eq!(
            ClientMessage::decode(&hello),
            Err(DecodeError::InvalidUtf8("tunnel"))
        );
    }

    #[test]
    fn split_body_chunks_without_loss() {
        let body = Bytes::from(
            (0..(MAX_CHUNK * 2 + 17))
                .map(|i| i as u8)
                .collect::<Vec<_>>(),
        );
        let (first, rest) = split_body(&body);
        assert_eq!(first.len(), MAX_CHUNK);
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[1].len(), 17);
        let joined: Vec<u8> = std::iter::once(first)
            .chain(rest)
            .flat_map(|b| b.to_vec())
            .collect();
        assert_eq!(joined, body.to_vec());
        let (first, rest) = split_body(&Bytes::new());
        assert!(first.is_empty() && rest.is_empty());
    }
}

#[cfg(test)]
mod proptests;
