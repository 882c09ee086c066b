//! The in-flight budget (`--max-inflight-bytes`): request bodies and answers the relay holds in
//! memory, across all requests. A request starts with an empty [`Reservation`] and grows it by
//! each body frame as it arrives, never by the length it declares, so a sender that declares
//! 8 MiB and sends a byte every few seconds holds a few bytes. An answer is reserved whole
//! while it is written to the sender. What does not fit is refused ([`OverBudget`]: the
//! sender gets 503 with `Retry-After`); nothing waits.
//!
//! Sharing: each reservation belongs to a sender address and a connection (one HTTP/1
//! connection or one HTTP/2 connection with all its streams). Each of those keys has a share,
//! an eighth of the budget. Bytes within a key's share come from anywhere in the budget; bytes
//! past it only from its first half: a grant that leaves a key over its share is made only
//! while the budget stays at most half full. So one address or connection can use up to half
//! the budget when the relay is quiet, and once the budget is past half full it is the keys
//! over their share that are refused first; the other half stays for keys within theirs. One
//! exception keeps a `--max-body` above half the budget usable: a request that is the only one
//! holding a reservation may grow to the whole budget.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};

use crate::conn::AnswerGuard;

/// The part of the budget one key may hold while others want bytes: `limit / SHARE_DIVISOR`.
pub const SHARE_DIVISOR: usize = 8;

/// Bytes of bodies in memory, against a limit shared between senders and connections.
pub struct InflightBudget {
    limit: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    used: usize,
    reservations: usize,
    held: HashMap<Key, usize>,
}

/// Who a reservation's bytes count against, besides the whole budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// The sender's address.
    Sender(IpAddr),
    /// One connection (all the streams of an HTTP/2 connection).
    Connection(u64),
}

/// The keys of one request: its sender's address and its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// The sender's address.
    pub sender: IpAddr,
    /// The connection's id, unique while the relay runs.
    pub connection: u64,
}

impl Holder {
    fn keys(&self) -> [Key; 2] {
        [
            Key::Sender(self.sender.to_canonical()),
            Key::Connection(self.connection),
        ]
    }
}

/// The budget cannot hold a request's bytes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget;

impl InflightBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(InflightBudget {
            limit,
            state: Mutex::new(State::default()),
        })
    }

    /// An empty reservation for one request of `holder`; grow it as bytes arrive.
    pub fn reserve(self: &Arc<Self>, holder: Holder) -> Reservation {
        self.lock().reservations += 1;
        Reservation {
            budget: self.clone(),
            holder,
            bytes: 0,
        }
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.lock().used
    }

    /// Bytes `key` holds now.
    pub fn held_by(&self, key: Key) -> usize {
        self.lock().held.get(&key).copied().unwrap_or(0)
    }

    fn share(&self) -> usize {
        self.limit / SHARE_DIVISOR
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update under this lock is a few counter changes; a panic cannot leave them torn.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn grow(&self, holder: &Holder, own: usize, more: usize) -> Result<(), OverBudget> {
        let mut state = self.lock();
        let used = state.used.checked_add(more).ok_or(OverBudget)?;
        if used > self.limit {
            return Err(OverBudget);
        }
        let keys = holder.keys();
        let over_share = keys.iter().any(|key| {
            let held = state.held.get(key).copied().unwrap_or(0);
            held.saturating_add(more) > self.share()
        });
        let alone = state.reservations == 1 && state.used == own;
        if over_share && used > self.limit / 2 && !alone {
            return Err(OverBudget);
        }
        state.used = used;
        for key in keys {
            *state.held.entry(key).or_insert(0) += more;
        }
        Ok(())
    }

    /// Ends one reservation of `holder` that held `bytes`.
    fn give_back(&self, holder: &Holder, bytes: usize) {
        let mut state = self.lock();
        state.reservations = state.reservations.saturating_sub(1);
        state.used = state.used.saturating_sub(bytes);
        for key in holder.keys() {
            if let Some(held) = state.held.get_mut(&key) {
                *held = held.saturating_sub(bytes);
                if *held == 0 {
                    state.held.remove(&key);
                }
            }
        }
    }
}

/// Bytes held for one request; given back on drop.
pub struct Reservation {
    budget: Arc<InflightBudget>,
    holder: Holder,
    bytes: usize,
}

impl Reservation {
    /// Adds `more` bytes that just arrived, or refuses them when they do not fit the budget or
    /// this request's keys are over their share while the budget is past half full.
    pub fn grow(&mut self, more: usize) -> Result<(), OverBudget> {
        if more == 0 {
            return Ok(());
        }
        self.budget.grow(&self.holder, self.bytes, more)?;
        self.bytes += more;
        Ok(())
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(&self.holder, self.bytes);
    }
}

/// Largest piece of a held answer handed to the connection at a time.
pub const ANSWER_PIECE: usize = 16 * 1024;

/// A response body. An answer from a local server is held with its [`Reservation`] and handed
/// to the connection in copied pieces of [`ANSWER_PIECE`] bytes, so the connection buffers only
/// a few small pieces while the whole answer is freed, and its bytes given back, as soon as the
/// last piece is taken (or the connection drops it).
pub enum AnswerBody {
    /// A body the relay wrote itself (errors, metrics): small, not counted.
    Plain(Full<Bytes>),
    /// A local server's answer, counted until its last piece is taken.
    Held {
        /// What is left to hand out.
        rest: Bytes,
        /// Its bytes in the budget.
        reservation: Option<Reservation>,
        /// Tells the connection each piece was taken, so an answer nobody takes is noticed.
        watch: Option<AnswerGuard>,
    },
}

impl AnswerBody {
    /// `body`, counted in the budget by `reservation` until it has been handed out.
    pub fn held(body: Bytes, reservation: Reservation) -> Self {
        AnswerBody::Held {
            rest: body,
            reservation: Some(reservation),
            watch: None,
        }
    }

    /// Reports the pieces a held answer hands out to `watch` (a plain body needs no watch).
    pub fn watched(mut self, guard: impl FnOnce() -> AnswerGuard) -> Self {
        if let AnswerBody::Held { watch, .. } = &mut self {
            *watch = Some(guard());
        }
        self
    }
}

impl From<Full<Bytes>> for AnswerBody {
    fn from(body: Full<Bytes>) -> Self {
        AnswerBody::Plain(body)
    }
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            AnswerBody::Plain(body) => Pin::new(body).poll_frame(cx),
            AnswerBody::Held {
                rest,
                reservation,
                watch,
            } => {
                if rest.is_empty() {
                    *reservation = None;
                    *watch = None;
                    return Poll::Ready(None);
                }
                if let Some(watch) = watch {
                    watch.progress();
                }
                let piece = Bytes::copy_from_slice(&rest[..rest.len().min(ANSWER_PIECE)]);
                if piece.len() == rest.len() {
                    // The last piece: free the answer and its bytes in the budget now.
                    *rest = Bytes::new();
                    *reservation = None;
                    *watch = None;
                } else {
                    let _ = rest.split_to(piece.len());
                }
                Poll::Ready(Some(Ok(Frame::data(piece))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            AnswerBody::Plain(body) => body.is_end_stream(),
            AnswerBody::Held { rest, .. } => rest.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            AnswerBody::Plain(body) => body.size_hint(),
            AnswerBody::Held { rest, .. } => SizeHint::with_exact(rest.len() as u64),
        }
    }
}

#[cfg(test)]
mod tests;
