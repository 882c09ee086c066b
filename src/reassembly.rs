//! Chunk reassembly: a body that crosses the link as a head message and then chunks (see
//! [`protocol`](crate::protocol)) is put back together here, keyed by its delivery, and bounded
//! both per body (`max_body`) and in how many bodies may be partial at once (`max_partials`).
//! The other side of the link decides sizes, so nothing it declares is allocated beyond the
//! bound, and whoever holds a [`Reassembler`] can never be made to hold more than
//! `max_partials × max_body` bytes of partial bodies.

use std::collections::HashMap;
use std::hash::Hash;

use bytes::{Bytes, BytesMut};

/// Why a partial body was refused; the partial is dropped in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassemblyError {
    /// The body grew (or was declared to grow) past the bound.
    #[error("body over the limit of {limit} bytes")]
    TooLarge {
        /// The bound, in bytes.
        limit: usize,
    },
    /// Too many bodies were partial at the same time.
    #[error("more than {limit} bodies arriving at once")]
    TooManyPartials {
        /// The bound on partial bodies.
        limit: usize,
    },
    /// A head arrived for a key that already has a partial body.
    #[error("a second head for a body that is still arriving")]
    Duplicate,
}

/// A body still arriving, with the head it belongs to.
struct Partial<H> {
    head: H,
    body: BytesMut,
}

/// Partial bodies by key, each bounded by `max_body`, at most `max_partials` at once.
pub struct Reassembler<K, H> {
    partial: HashMap<K, Partial<H>>,
    max_body: usize,
    max_partials: usize,
}

/// A `Content-Length` value as a size, if it is one.
pub fn declared_length(value: &[u8]) -> Option<usize> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

impl<K: Eq + Hash, H> Reassembler<K, H> {
    /// An empty reassembler with these bounds.
    pub fn new(max_body: usize, max_partials: usize) -> Self {
        Reassembler {
            partial: HashMap::new(),
            max_body,
            max_partials,
        }
    }

    /// The bound on one body, in bytes.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// How many bodies are partial now.
    pub fn len(&self) -> usize {
        self.partial.len()
    }

    /// Whether no body is partial.
    pub fn is_empty(&self) -> bool {
        self.partial.is_empty()
    }

    /// Checks a complete body (a head with `end` set) against the bound.
    pub fn check_whole(&self, body: &[u8]) -> Result<(), ReassemblyError> {
        if body.len() > self.max_body {
            return Err(ReassemblyError::TooLarge {
                limit: self.max_body,
            });
        }
        Ok(())
    }

    /// Starts a body with its head and first bytes. `declared` (a `Content-Length`) sizes the
    /// buffer so a large body is not copied as it grows, but never beyond `max_body`; a
    /// declared size over the bound is refused up front.
    pub fn begin(
        &mut self,
        key: K,
        head: H,
        first: &[u8],
        declared: Option<usize>,
    ) -> Result<(), ReassemblyError> {
        if self.partial.contains_key(&key) {
            self.partial.remove(&key);
            return Err(ReassemblyError::Duplicate);
        }
        self.check_whole(first)?;
        if declared.is_some_and(|n| n > self.max_body) {
            return Err(ReassemblyError::TooLarge {
                limit: self.max_body,
            });
        }
        if self.partial.len() >= self.max_partials {
            return Err(ReassemblyError::TooManyPartials {
                limit: self.max_partials,
            });
        }
        let capacity = declared.unwrap_or(0).min(self.max_body).max(first.len());
        let mut body = BytesMut::with_capacity(capacity);
        body.extend_from_slice(first);
        self.partial.insert(key, Partial { head, body });
        Ok(())
    }

    /// Adds a chunk. `Ok(None)` while more is due, `Ok(Some((head, body)))` on the last chunk;
    /// a chunk for a key with no partial body (cancelled, or already refused) is `Ok(None)`.
    pub fn push(
        &mut self,
        key: &K,
        data: &[u8],
        end: bool,
    ) -> Result<Option<(H, Bytes)>, ReassemblyError> {
        let Some(p) = self.partial.get_mut(key) else {
            return Ok(None);
        };
        if p.body.len().saturating_add(data.len()) > self.max_body {
            self.partial.remove(key);
            return Err(ReassemblyError::TooLarge {
                limit: self.max_body,
            });
        }
        p.body.extend_from_slice(data);
        if !end {
            return Ok(None);
        }
        Ok(self.partial.remove(key).map(|p| (p.head, p.body.freeze())))
    }

    /// Keeps only the partial bodies whose key `keep` accepts (e.g. answers someone still
    /// waits for); returns how many were dropped.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) -> usize {
        let before = self.partial.len();
        self.partial.retain(|key, _| keep(key));
        before - self.partial.len()
    }

    /// Drops a partial body; its head, if there was one.
    pub fn cancel(&mut self, key: &K) -> Option<H> {
        self.partial.remove(key).map(|p| p.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_chunks_make_the_body() {
        let mut r: Reassembler<u32, &str> = Reassembler::new(10, 2);
        r.begin(1, "a", b"abc", Some(7)).unwrap();
        assert_eq!(r.push(&1, b"de", false).unwrap(), None);
        let (head, body) = r.push(&1, b"fg", true).unwrap().unwrap();
        assert_eq!((head, body.as_ref()), ("a", &b"abcdefg"[..]));
        assert!(r.is_empty());
    }

    #[test]
    fn a_body_may_not_grow_past_the_bound() {
        let mut r: Reassembler<u32, ()> = Reassembler::new(10, 2);
        r.begin(1, (), b"12345", None).unwrap();
        r.push(&1, b"12345", false).unwrap();
        assert_eq!(
            r.push(&1, b"1", true),
            Err(ReassemblyError::TooLarge { limit: 10 })
        );
        assert!(r.is_empty(), "the refused body is dropped");
        assert_eq!(r.push(&1, b"1", true), Ok(None), "later chunks are ignored");
    }

    #[test]
    fn declared_sizes_past_the_bound_are_refused_before_allocating() {
        let mut r: Reassembler<u32, ()> = Reassembler::new(10, 2);
        assert_eq!(
            r.begin(1, (), b"", Some(usize::MAX)),
            Err(ReassemblyError::TooLarge { limit: 10 })
        );
        assert_eq!(
            r.begin(2, (), &[0; 11], None),
            Err(ReassemblyError::TooLarge { limit: 10 })
        );
        assert!(r.check_whole(&[0; 11]).is_err());
        assert!(r.check_whole(&[0; 10]).is_ok());
        assert!(r.is_empty());
    }

    #[test]
    fn partial_bodies_are_bounded_in_number() {
        let mut r: Reassembler<u32, ()> = Reassembler::new(10, 2);
        r.begin(1, (), b"", None).unwrap();
        r.begin(2, (), b"", None).unwrap();
        assert_eq!(
            r.begin(3, (), b"", None),
            Err(ReassemblyError::TooManyPartials { limit: 2 })
        );
        assert_eq!(r.cancel(&1), Some(()));
        r.begin(3, (), b"", None).unwrap();
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_second_head_for_the_same_key_drops_both() {
        let mut r: Reassembler<u32, ()> = Reassembler::new(10, 2);
        r.begin(1, (), b"ab", None).unwrap();
        assert_eq!(r.begin(1, (), b"cd", None), Err(ReassemblyError::Duplicate));
        assert!(r.is_empty());
    }

    #[test]
    fn content_length_values() {
        assert_eq!(declared_length(b" 42 "), Some(42));
        assert_eq!(declared_length(b"x"), None);
        assert_eq!(declared_length(b"-1"), None);
        assert_eq!(declared_length(&[0xff]), None);
    }

    #[test]
    fn retain_drops_what_nobody_waits_for() {
        let mut r: Reassembler<u32, ()> = Reassembler::new(10, 4);
        for key in 1..=3 {
            r.begin(key, (), b"ab", None).unwrap();
        }
        assert_eq!(r.retain(|key| *key == 2), 2);
        assert_eq!(r.len(), 1);
        assert_eq!(r.push(&1, b"c", true).unwrap(), None, "dropped");
        assert!(r.push(&2, b"c", true).unwrap().is_some());
    }
}
