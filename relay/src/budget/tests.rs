use super::*;

fn holder(sender: &str, connection: u64) -> Holder {
    Holder {
        sender: sender.parse().unwrap(),
        connection,
    }
}

#[test]
fn bytes_are_counted_as_they_arrive_and_come_back_on_drop() {
    let budget = InflightBudget::new(800);
    let mut a = budget.reserve(holder("203.0.113.1", 1));
    assert_eq!(budget.used(), 0, "an empty reservation holds nothing");
    a.grow(50).unwrap();
    a.grow(50).unwrap();
    assert_eq!((a.bytes(), budget.used()), (100, 100));
    let mut b = budget.reserve(holder("203.0.113.2", 2));
    b.grow(100).unwrap();
    assert_eq!(
        budget.held_by(Key::Sender("203.0.113.2".parse().unwrap())),
        100
    );
    assert_eq!(budget.held_by(Key::Connection(1)), 100);
    drop(a);
    assert_eq!(budget.used(), 100);
    assert_eq!(budget.held_by(Key::Connection(1)), 0);
    drop(b);
    assert_eq!(budget.used(), 0);
    assert_eq!(
        budget.reserve(holder("203.0.113.3", 3)).grow(usize::MAX),
        Err(OverBudget)
    );
}

#[test]
fn thirty_two_slow_bodies_declaring_much_leave_the_budget_to_others() {
    let budget = InflightBudget::new(256);
    let slow: Vec<Reservation> = (0..32)
        .map(|i| {
            let mut r = budget.reserve(holder("198.51.100.9", i));
            r.grow(1).unwrap();
            r
        })
        .collect();
    let mut other = budget.reserve(holder("203.0.113.1", 100));
    other.grow(32).unwrap();
    assert_eq!(budget.used(), 64);
    drop(slow);
}

#[test]
fn past_half_full_a_key_over_its_eighth_is_refused_first() {
    // Share 100 of 800; half is 400.
    let budget = InflightBudget::new(800);
    let mut hog = budget.reserve(holder("198.51.100.9", 1));
    let mut other = budget.reserve(holder("203.0.113.1", 2));
    other.grow(10).unwrap();
    hog.grow(390).unwrap();
    assert_eq!(
        hog.grow(1),
        Err(OverBudget),
        "over its share past half full"
    );
    // The sender's other connection is refused too: the address is over its share.
    let mut hog2 = budget.reserve(holder("198.51.100.9", 3));
    assert_eq!(hog2.grow(1), Err(OverBudget));
    // Senders within their share still get the rest of the budget.
    let mut fair: Vec<Reservation> = (0..4)
        .map(|i| budget.reserve(holder(&format!("203.0.113.{}", 10 + i), 10 + i)))
        .collect();
    for r in &mut fair {
        r.grow(100).unwrap();
    }
    assert_eq!(budget.used(), 800);
    assert_eq!(other.grow(1), Err(OverBudget), "never past the limit");
    drop(fair);
    drop(hog);
    hog2.grow(100).unwrap();
}

#[test]
fn one_http2_connection_is_one_key_whatever_its_streams() {
    let budget = InflightBudget::new(800);
    let _quiet = budget.reserve(holder("203.0.113.1", 2));
    let mut streams: Vec<Reservation> = (0..32)
        .map(|_| budget.reserve(holder("198.51.100.9", 7)))
        .collect();
    let mut granted = 0;
    for stream in &mut streams {
        if stream.grow(25).is_ok() {
            granted += 25;
        }
    }
    assert_eq!(
        granted, 400,
        "a connection over its share stops at half the budget"
    );
    assert_eq!(budget.held_by(Key::Connection(7)), 400);
}

#[test]
fn alone_one_request_may_use_the_whole_budget() {
    let budget = InflightBudget::new(800);
    let mut only = budget.reserve(holder("203.0.113.1", 1));
    only.grow(800).unwrap();
    drop(only);
    // With a second request in flight, the first stops at half.
    let mut first = budget.reserve(holder("203.0.113.1", 1));
    let _second = budget.reserve(holder("203.0.113.2", 2));
    first.grow(400).unwrap();
    assert_eq!(first.grow(1), Err(OverBudget));
}

#[test]
fn mapped_ipv4_is_the_same_sender() {
    let budget = InflightBudget::new(800);
    let mut a = budget.reserve(holder("203.0.113.1", 1));
    a.grow(10).unwrap();
    assert_eq!(
        budget.held_by(Key::Sender("203.0.113.1".parse().unwrap())),
        10
    );
    let mut b = budget.reserve(holder("::ffff:203.0.113.1", 2));
    b.grow(10).unwrap();
    assert_eq!(
        budget.held_by(Key::Sender("203.0.113.1".parse().unwrap())),
        20
    );
}

#[tokio::test]
async fn an_answer_is_held_until_its_last_piece_is_taken() {
    use http_body_util::BodyExt;
    let budget = InflightBudget::new(1 << 20);
    let mut reservation = budget.reserve(holder("203.0.113.1", 1));
    let answer = Bytes::from(vec![7u8; ANSWER_PIECE * 2 + 5]);
    reservation.grow(answer.len()).unwrap();
    let mut body = AnswerBody::held(answer.clone(), reservation);
    assert_eq!(body.size_hint().exact(), Some(answer.len() as u64));
    let mut got = Vec::new();
    for expected in [ANSWER_PIECE, ANSWER_PIECE, 5] {
        assert_eq!(budget.used(), answer.len(), "held while pieces are left");
        let piece = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(piece.len(), expected);
        got.extend_from_slice(&piece);
    }
    assert_eq!(budget.used(), 0, "given back with the last piece");
    assert!(body.is_end_stream());
    assert!(body.frame().await.is_none());
    assert_eq!(got, answer);
    // Dropped unread (the connection went away): given back too.
    let mut reservation = budget.reserve(holder("203.0.113.1", 1));
    reservation.grow(10).unwrap();
    drop(AnswerBody::held(
        Bytes::from_static(b"0123456789"),
        reservation,
    ));
    assert_eq!(budget.used(), 0);
}
