//! The wire format's primitives: size limits, length-prefixed strings, bytes and headers, and a
//! bounds-checked [`Reader`] that turns any malformed input into a [`DecodeError`].

use bytes::Bytes;

use crate::delivery::DeliveryId;
use crate::headers::Header;

/// Largest body slice carried by one message.
pub const MAX_CHUNK: usize = 64 * 1024;

/// Largest encoded head (method, path, query, headers) a message may carry.
pub const MAX_HEAD: usize = 128 * 1024;

/// Largest websocket message either side accepts: one head plus one chunk, with room for framing.
pub const MAX_MESSAGE: usize = MAX_HEAD + MAX_CHUNK + 1024;

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

pub(super) fn check_size(buf: &[u8]) -> Result<(), DecodeError> {
    if buf.is_empty() {
        return Err(DecodeError::Empty);
    }
    if buf.len() > MAX_MESSAGE {
        return Err(DecodeError::TooLarge("message"));
    }
    Ok(())
}

pub(super) fn headers_len(headers: &[Header]) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 6)
        .sum::<usize>()
        + 2
}

pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    // Strings are bounded by MAX_HEAD long before u16::MAX; truncate rather than corrupt.
    let len = s.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

pub(super) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
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

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let slice = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidValue("bool")),
        }
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub(crate) fn str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u16()? as usize;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8(field))
    }

    pub(crate) fn id(&mut self) -> Result<DeliveryId, DecodeError> {
        let s = self.str("id")?;
        DeliveryId::parse(&s).ok_or(DecodeError::InvalidValue("id"))
    }

    pub(crate) fn body(&mut self) -> Result<Bytes, DecodeError> {
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
