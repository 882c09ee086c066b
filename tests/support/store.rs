//! A capture store filled ahead of a test: many forwarded deliveries written straight into it.

use std::path::Path;

use illumitunnel::delivery::{RequestRecord, ResponseRecord, Source};
use illumitunnel::store::CaptureStore;
use illumitunnel::{Delivery, DeliveryId};

use super::illumichat_samples;

/// Adds `count` deliveries forwarded to `forward_path` and answered 200 to the store at `path`,
/// oldest first, ten milliseconds apart, the newest `age_ms` before now.
pub fn fill_store(path: &Path, count: usize, forward_path: &str, age_ms: i64) {
    let mut store = CaptureStore::open(path).expect("open the store");
    let samples = illumichat_samples();
    let now = illumitunnel::now_ms();
    let mut made = 0;
    while made < count {
        let mut batch: Vec<Delivery> = (made..(made + 1_000).min(count))
            .map(|i| {
                let (_, id, body) = &samples[i % samples.len()];
                let body = body.replace(id, &format!("{id}_{i}"));
                let request = RequestRecord {
                    method: "POST".into(),
                    path: forward_path.into(),
                    query: String::new(),
                    headers: vec![("content-type".into(), b"application/json".to_vec())],
                    body: body.into(),
                };
                let received = now - age_ms - (count - i) as i64 * 10;
                // Generated ids are random past the millisecond: a hundred a millisecond collide.
                let id = DeliveryId::parse(&format!("{received:011x}{i:05x}")).expect("an id");
                let mut d = Delivery::new(id, received, Source::Tunnel, request);
                d.target = format!("http://127.0.0.1:3000{forward_path}");
                d.duration_us = 1_500;
                d.response = Some(ResponseRecord {
                    status: 200,
                    headers: vec![("content-type".into(), b"application/json".to_vec())],
                    body: bytes::Bytes::from_static(br#"{"received":true}"#),
                });
                d
            })
            .collect();
        made += batch.len();
        store.insert_batch(&mut batch).expect("insert a batch");
    }
}
