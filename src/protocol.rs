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

mod wire;

use wire::{check_size, headers_len, put_bytes, put_str};
pub(crate) use wire::{put_headers, Reader};
pub use wire::{DecodeError, MAX_CHUNK, MAX_HEAD, MAX_MESSAGE};

/// Version the client sends in [`ClientMessage::Hello`]; the relay refuses any other.
pub const PROTOCOL_VERSION: u16 = 3;

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
        /// Whether this session only observes (`listen --fan-out`): it gets copies of
        /// deliveries, never the push whose answer goes to the sender.
        observer: bool,
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
                observer,
            } => {
                out.push(C_HELLO);
                out.extend_from_slice(&version.to_be_bytes());
                put_str(&mut out, tunnel);
                put_str(&mut out, claim_key);
                out.push(u8::from(*observer));
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
                        observer: false,
                    });
                }
                ClientMessage::Hello {
                    version,
                    tunnel: r.str("tunnel")?,
                    claim_key: r.str("claim_key")?,
                    observer: r.bool()?,
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
mod tests;

#[cfg(test)]
mod proptests;
