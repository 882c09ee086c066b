//! The capture store writer's work for `n` deliveries of the 1.5 KB envelope, `batch` a
//! transaction, on a fresh store: what the `capture-store` thread of `listen` does per commit
//! (envelope parse in `Delivery::new`, duplicate check, insert). For instruction counts:
//! `valgrind --tool=callgrind --toggle-collect='*insert_all*' target/profiling/examples/store_insert /tmp/s.db 20000 150`
//! and for syscalls `strace -c -f` on the same command.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use illumitunnel::delivery::{RequestRecord, ResponseRecord, Source};
use illumitunnel::store::CaptureStore;
use illumitunnel::{Delivery, DeliveryId};
use illumitunnel_bench::payload;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: store_insert STORE_PATH DELIVERIES BATCH";
    let path: PathBuf = args.next().context(usage)?.into();
    let n: usize = args.next().context(usage)?.parse().context(usage)?;
    let batch: usize = args.next().context(usage)?.parse().context(usage)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    let mut store = CaptureStore::open(&path)?;
    let headers = payload::request_headers();
    let requests: Vec<(DeliveryId, RequestRecord)> = (0..n)
        .map(|i| {
            let id = DeliveryId::parse(&format!("dlv{i:010}")).context("id")?;
            let request = RequestRecord {
                method: "POST".into(),
                path: "/webhooks/illumichat".into(),
                query: String::new(),
                headers: headers.clone(),
                body: payload::envelope(),
            };
            Ok((id, request))
        })
        .collect::<Result<_>>()?;
    let started = Instant::now();
    insert_all(&mut store, requests, batch)?;
    let took = started.elapsed();
    eprintln!(
        "{n} deliveries, {batch} a transaction: {:.1} µs each, {} bytes on disk",
        took.as_secs_f64() * 1e6 / n.max(1) as f64,
        std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
    );
    Ok(())
}

#[inline(never)]
fn insert_all(
    store: &mut CaptureStore,
    requests: Vec<(DeliveryId, RequestRecord)>,
    batch: usize,
) -> Result<()> {
    let now = illumitunnel::now_ms();
    let mut rows = Vec::with_capacity(batch);
    for (id, request) in requests {
        let mut d = Delivery::new(id, now, Source::Tunnel, request);
        d.tunnel = Some("peersbench".into());
        d.target = "http://127.0.0.1:3000/webhooks/illumichat".into();
        d.response = Some(ResponseRecord {
            status: 200,
            headers: vec![("content-type".to_string(), b"application/json".to_vec())],
            body: Bytes::from_static(br#"{"received":true}"#),
        });
        d.duration_us = 350;
        rows.push(d);
        if rows.len() == batch {
            store.insert_batch(&mut rows)?;
            rows.clear();
        }
    }
    if !rows.is_empty() {
        store.insert_batch(&mut rows)?;
    }
    Ok(())
}
