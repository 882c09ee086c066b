//! One connection's two halves, run concurrently in one task: the reader decodes what the
//! relay sends, puts chunked request bodies back together (bounded by `--max-body` and by how
//! many may be partial at once) and hands complete deliveries to [`delivery`](super::delivery);
//! the writer sends whatever the session queued for the relay, in batches, and pings. The
//! first half to end ends the connection, with a phrase that says why.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use illumitunnel::delivery::RequestRecord;
use illumitunnel::protocol::{ClientMessage, RelayMessage};
use illumitunnel::reassembly::{declared_length, Reassembler, ReassemblyError};
use illumitunnel::DeliveryId;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use super::connect::Ws;
use super::delivery::{Arrived, Connection, Outbound};

/// Messages written before one flush.
const MAX_WRITE_BATCH: usize = 256;
/// Request bodies arriving in chunks at the same time; a relay that starts more gets
/// `Rejected` for the extra ones. With `--max-body` this bounds what a relay can make the
/// client hold in partial bodies.
pub const MAX_PARTIALS: usize = 64;

/// Serves one connection until it drops or `shutdown`; returns the cause as a phrase.
pub async fn serve(
    ws: Ws,
    connection: Connection,
    outbound: &mut mpsc::Receiver<Outbound>,
    keepalive: Duration,
    max_body: usize,
    shutdown: &CancellationToken,
) -> String {
    let (mut sink, stream) = ws.split();
    let started = Instant::now();
    let last_seen = AtomicU64::new(0);
    let generation = connection.generation();
    // Ends this connection's redelivery worker with the connection.
    let _ended = connection.ended().drop_guard();
    tokio::select! {
        cause = read_half(stream, &connection, max_body, &last_seen, started) => cause,
        cause = write_half(&mut sink, outbound, generation, keepalive, &last_seen, started) => cause,
        _ = shutdown.cancelled() => {
            // A close frame tells the relay this client left on purpose, so a queued delivery
            // it was sending does not count against that delivery.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(None))).await;
            "shutting down".into()
        }
    }
}

/// Longest a client leaving spends on its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

async fn read_half(
    mut stream: futures_util::stream::SplitStream<Ws>,
    connection: &Connection,
    max_body: usize,
    last_seen: &AtomicU64,
    started: Instant,
) -> String {
    let mut partial: Reassembler<DeliveryId, Arrived> = Reassembler::new(max_body, MAX_PARTIALS);
    loop {
        // `StreamExt::next` is cancel-safe, so racing this loop against the writer loses nothing.
        let msg = match stream.next().await {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => return format!("connection to relay lost: {e}"),
            None => return "the relay closed the connection".into(),
        };
        last_seen.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let buf = match msg {
            Message::Binary(buf) => buf,
            Message::Close(_) => return "the relay closed the connection".into(),
            _ => continue,
        };
        let decoded = match RelayMessage::decode(&buf) {
            Ok(m) => m,
            Err(err) => {
                tracing::warn!(%err, "ignored a message from the relay this client cannot read");
                continue;
            }
        };
        match decoded {
            request @ RelayMessage::Request { .. } => {
                if let Some(end) = on_request(request, &mut partial, connection, max_body).await {
                    return end;
                }
            }
            RelayMessage::RequestChunk { id, data, end } => match partial.push(&id, &data, end) {
                Ok(Some((mut head, body))) => {
                    head.request.body = body;
                    connection.arrive(head).await;
                }
                Ok(None) => {}
                Err(err) => reject(connection, id, &err, max_body).await,
            },
            RelayMessage::Cancel { id } => {
                partial.cancel(&id);
            }
            RelayMessage::DeadLettered { id, reason } => {
                connection.dead_lettered(id, reason).await;
            }
            RelayMessage::Welcome { .. } | RelayMessage::Refused { .. } => {
                tracing::debug!("ignored a handshake message during the session");
            }
        }
    }
}

/// A delivery's head (and maybe its whole body) arrived: whole ones go to the connection,
/// others wait for their chunks. `Some` ends the connection with that sentence.
async fn on_request(
    request: RelayMessage,
    partial: &mut Reassembler<DeliveryId, Arrived>,
    connection: &Connection,
    max_body: usize,
) -> Option<String> {
    let RelayMessage::Request {
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
    } = request
    else {
        return None;
    };
    let declared = illumitunnel::headers::get(&headers, "content-length").and_then(declared_length);
    let head = Arrived {
        id: id.clone(),
        received_at_ms: i64::try_from(received_at_ms).unwrap_or(i64::MAX),
        answer,
        redelivery,
        request: RequestRecord {
            method,
            path,
            query,
            headers,
            body: Bytes::new(),
        },
    };
    let started = if end {
        partial.check_whole(&body).map(|()| {
            let mut arrived = head;
            arrived.request.body = body;
            Some(arrived)
        })
    } else {
        partial
            .begin(id.clone(), head, &body, declared)
            .map(|()| None)
    };
    match started {
        Ok(Some(arrived)) => connection.arrive(arrived).await,
        Ok(None) => {}
        Err(ReassemblyError::Duplicate) => {
            return Some(format!(
                "the relay sent delivery {id} twice at once, which it must not; reconnecting"
            ))
        }
        Err(err) => reject(connection, id, &err, max_body).await,
    }
    None
}

/// Tells the relay this client cannot take a delivery, and why.
async fn reject(connection: &Connection, id: DeliveryId, err: &ReassemblyError, max_body: usize) {
    let message = match err {
        ReassemblyError::TooLarge { .. } => format!(
            "the request body is over this client's --max-body of {max_body} bytes; raise --max-body on illumitunnel listen"
        ),
        other => format!("this client refused the delivery: {other}"),
    };
    tracing::warn!(delivery = %id, %message, "rejected a delivery");
    connection
        .send(ClientMessage::Rejected { id, message })
        .await;
}

async fn write_half(
    sink: &mut futures_util::stream::SplitSink<Ws, Message>,
    outbound: &mut mpsc::Receiver<Outbound>,
    generation: u64,
    keepalive: Duration,
    last_seen: &AtomicU64,
    started: Instant,
) -> String {
    let mut ping = tokio::time::interval(keepalive);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let lost = |e: tungstenite::Error| format!("connection to relay lost: {e}");
    loop {
        tokio::select! {
            // `mpsc::Receiver::recv` is cancel-safe: a message is never lost to the ping branch.
            next = outbound.recv() => {
                let Some(first) = next else {
                    return "the client is shutting down".into();
                };
                let mut pending = Some(first);
                let mut written = 0;
                while let Some(out) = pending.take() {
                    // Answers for a connection that has since dropped mean nothing to this one.
                    if out.generation == 0 || out.generation == generation {
                        if let Err(e) = sink.feed(Message::Binary(out.message.encode())).await {
                            return lost(e);
                        }
                        written += 1;
                    }
                    if written < MAX_WRITE_BATCH {
                        pending = outbound.try_recv().ok();
                    }
                }
                if let Err(e) = sink.flush().await {
                    return lost(e);
                }
            }
            _ = ping.tick() => {
                let silent_ms = (started.elapsed().as_millis() as u64)
                    .saturating_sub(last_seen.load(Ordering::Relaxed));
                if silent_ms > 2 * keepalive.as_millis() as u64 {
                    return format!(
                        "the relay was silent for {:.0} s",
                        Duration::from_millis(silent_ms).as_secs_f64()
                    );
                }
                if let Err(e) = sink.send(Message::Ping(Vec::new())).await {
                    return lost(e);
                }
            }
        }
    }
}
