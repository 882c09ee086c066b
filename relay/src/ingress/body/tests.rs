use super::*;
use std::sync::Arc;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::Frame;
use tokio::sync::mpsc;

use crate::budget::{Holder, InflightBudget};
use crate::config::{DEFAULT_MIN_BODY_RATE, MIN_BODY_GRACE};

/// A body whose frames the test sends when it likes.
struct Trickle(mpsc::Receiver<Bytes>);

impl Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Sends `piece` every `every`, `times` times, then ends the body.
fn trickle(piece: &'static [u8], every: Duration, times: usize) -> Trickle {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        for _ in 0..times {
            if tx.send(Bytes::from_static(piece)).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    Trickle(rx)
}

fn rules(rate: u64) -> BodyRules {
    BodyRules {
        limit: 10 * 1024 * 1024,
        within: Duration::from_secs(25),
        rate,
        grace: MIN_BODY_GRACE,
        budget_limit: 256 * 1024 * 1024,
    }
}

fn reservation(budget: &Arc<InflightBudget>) -> Reservation {
    budget.reserve(Holder {
        sender: "203.0.113.1".parse().unwrap(),
        connection: 1,
    })
}

#[tokio::test(start_paused = true)]
async fn a_byte_every_four_seconds_is_too_slow_just_after_the_five_second_grace() {
    let budget = InflightBudget::new(256 * 1024 * 1024);
    let mut held = reservation(&budget);
    let started = tokio::time::Instant::now();
    let body = trickle(b"x", Duration::from_secs(4), 100);
    let declared = Some(8 * 1024 * 1024);
    let err = read(body, declared, rules(DEFAULT_MIN_BODY_RATE), &mut held)
        .await
        .unwrap_err();
    assert!(
        matches!(err, IngressError::BodyTooSlow { rate: 8192 }),
        "{err}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_millis(5010),
        "{took:?}"
    );
    assert_eq!(
        held.bytes(),
        2,
        "what arrived is counted, not the 8 MiB declared"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_faster_than_the_rate_passes_and_zero_turns_the_check_off() {
    let budget = InflightBudget::new(256 * 1024 * 1024);
    let mut held = reservation(&budget);
    static PIECE: [u8; 16 * 1024] = [b'y'; 16 * 1024];
    let body = trickle(&PIECE, Duration::from_secs(1), 20);
    let got = read(body, None, rules(DEFAULT_MIN_BODY_RATE), &mut held)
        .await
        .unwrap();
    assert_eq!((got.len(), held.bytes()), (20 * 16 * 1024, 20 * 16 * 1024));

    let mut held = reservation(&budget);
    let body = trickle(b"z", Duration::from_secs(4), 5);
    let got = read(body, None, rules(0), &mut held).await.unwrap();
    assert_eq!(&got[..], b"zzzzz");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_outgrows_the_budget_is_refused_as_it_arrives() {
    let budget = InflightBudget::new(1000);
    let mut held = reservation(&budget);
    static PIECE: [u8; 300] = [b'y'; 300];
    let body = trickle(&PIECE, Duration::from_millis(1), 4);
    let mut rules = rules(0);
    rules.budget_limit = 1000;
    let err = read(body, Some(1200), rules, &mut held).await.unwrap_err();
    assert!(matches!(err, IngressError::Busy { limit: 1000 }), "{err}");
    assert_eq!(held.bytes(), 900);
}

/// A body whose every frame is ready at once: a fast sender on loopback.
struct Ready {
    left: usize,
    piece: Bytes,
}

impl Body for Ready {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(self.piece.clone()))))
    }
}

#[tokio::test]
async fn a_large_body_that_is_ready_at_once_lets_other_tasks_run_between_slices() {
    // 4 MiB in 16 KiB frames, all ready: without slices the read would hold this thread (the
    // relay's only one) until the last byte; with them another task runs every 256 KiB.
    let pieces = 256;
    let body = Ready {
        left: pieces,
        piece: Bytes::from(vec![7u8; 16 * 1024]),
    };
    let budget = InflightBudget::new(256 * 1024 * 1024);
    let mut reserved = reservation(&budget);
    let (turns, other) = crate::turns::count_turns();
    let read = read(body, Some(4 << 20), rules(0), &mut reserved).await;
    other.abort();
    assert_eq!(read.unwrap().len(), 4 << 20);
    let turns = turns.load(std::sync::atomic::Ordering::SeqCst);
    // A slice is 256 KiB: the other task runs after each but the last.
    let slices = (4 << 20) / (256 * 1024);
    assert!(
        turns + 1 >= slices,
        "the other task ran {turns} times while {slices} slices were read"
    );
}
