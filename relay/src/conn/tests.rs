use super::*;

#[test]
fn limits_count_in_all_and_per_address_and_free_on_drop() {
    let limits = ConnectionLimits::new(3, 2);
    let a: IpAddr = "203.0.113.1".parse().unwrap();
    let b: IpAddr = "203.0.113.2".parse().unwrap();
    let first = limits.admit(a).unwrap();
    let _second = limits.admit(a).unwrap();
    assert!(limits.admit(a).is_none(), "two per address");
    let mapped: IpAddr = "::ffff:203.0.113.1".parse().unwrap();
    assert!(limits.admit(mapped).is_none(), "the same address over IPv6");
    let _third = limits.admit(b).unwrap();
    assert!(limits.admit(b).is_none(), "three in all");
    assert_eq!(limits.open(), 3);
    drop(first);
    assert!(limits.admit(a).is_some());
}

#[test]
fn a_proxy_counts_in_all_and_its_senders_by_their_own_address() {
    let limits = ConnectionLimits::new(3, 2);
    let proxy: IpAddr = "127.0.0.1".parse().unwrap();
    let a: IpAddr = "203.0.113.1".parse().unwrap();
    let b: IpAddr = "203.0.113.2".parse().unwrap();
    let _direct = limits.admit(proxy).unwrap();
    let (_p1, _p2) = (limits.admit_proxy().unwrap(), limits.admit_proxy().unwrap());
    assert!(
        limits.admit_proxy().is_none(),
        "three in all, proxies included"
    );
    assert_eq!(limits.open(), 3);
    let first = limits.admit_sender(a).unwrap();
    let _second = limits.admit_sender(a).unwrap();
    assert!(limits.admit_sender(a).is_none(), "two per real sender");
    let mapped: IpAddr = "::ffff:203.0.113.1".parse().unwrap();
    assert!(limits.admit_sender(mapped).is_none());
    assert!(
        limits.admit_sender(b).is_some(),
        "another sender is not held back"
    );
    assert!(
        limits.admit_sender(proxy).is_some(),
        "the proxy's own direct connection is one"
    );
    drop(first);
    assert!(limits.admit_sender(a).is_some());
    assert_eq!(limits.open(), 3, "senders are not connections");
}

#[tokio::test(start_paused = true)]
async fn idle_watch_gives_ten_seconds_for_a_first_request_then_the_idle_timeout() {
    let activity = Activity::new();
    let idle = Duration::from_secs(60);
    let started = Instant::now();
    activity.expired(FIRST_REQUEST_TIMEOUT, idle).await;
    assert_eq!(started.elapsed(), FIRST_REQUEST_TIMEOUT);

    let activity = Activity::new();
    let guard = activity.begin();
    let watch = {
        let activity = activity.clone();
        tokio::spawn(async move { activity.expired(FIRST_REQUEST_TIMEOUT, idle).await })
    };
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(!watch.is_finished(), "a request in flight is never idle");
    let released = Instant::now();
    drop(guard);
    watch.await.unwrap();
    assert_eq!(released.elapsed(), idle);
}

#[tokio::test(start_paused = true)]
async fn a_write_nobody_reads_fails_after_the_write_timeout_and_progress_resets_it() {
    use tokio::io::AsyncWriteExt;
    let (near, far) = tokio::io::duplex(8);
    let mut io = LingerIo::new(near, Activity::new(), 0);
    let started = Instant::now();
    let err = io.write_all(&[0u8; 64]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(started.elapsed(), WRITE_TIMEOUT);
    drop(far);

    // A reader that takes 8 bytes every 9 s keeps the write alive to the end.
    let (near, mut far) = tokio::io::duplex(8);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        while got.len() < 64 {
            tokio::time::sleep(Duration::from_secs(9)).await;
            let n = far.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        got.len()
    });
    let mut io = LingerIo::new(near, Activity::new(), 0);
    io.write_all(&[1u8; 64]).await.unwrap();
    assert_eq!(reader.await.unwrap(), 64);
}

#[tokio::test(start_paused = true)]
async fn an_answer_that_takes_no_piece_for_the_write_timeout_stalls_its_connection() {
    let activity = Activity::new();
    let watch = {
        let activity = activity.clone();
        tokio::spawn(async move { activity.answer_stalled(WRITE_TIMEOUT).await })
    };
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(!watch.is_finished(), "no answer, no stall");
    let answer = activity.answering();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(9)).await;
        answer.progress();
    }
    assert!(!watch.is_finished(), "a piece every 9 s keeps it going");
    let stalled_from = Instant::now();
    watch.await.unwrap();
    assert_eq!(stalled_from.elapsed(), WRITE_TIMEOUT);
    drop(answer);
}

#[tokio::test(start_paused = true)]
async fn a_lingering_close_reads_twice_max_body_for_at_most_ten_seconds() {
    use tokio::io::AsyncWriteExt;
    let max_body = 2 * MIN_LINGER_BYTES;
    let (near, mut far) = tokio::io::duplex(64 * 1024);
    let activity = Activity::new();
    activity.linger();
    drop(LingerIo::new(near, activity, max_body));
    far.write_all(&vec![b'x'; 2 * max_body]).await.unwrap();
    let mut more = 0;
    while far.write_all(&[b'y'; 1024]).await.is_ok() {
        more += 1024;
        assert!(more <= 64 * 1024 + 1024, "read past twice --max-body");
    }

    // A sender that writes nothing more is closed after 10 s.
    let (near, mut far) = tokio::io::duplex(64 * 1024);
    let activity = Activity::new();
    activity.linger();
    let started = Instant::now();
    drop(LingerIo::new(near, activity, max_body));
    let mut buf = [0u8; 16];
    assert_eq!(far.read(&mut buf).await.unwrap(), 0);
    assert_eq!(started.elapsed(), LINGER_TIME);
}
