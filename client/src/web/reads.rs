//! Capture store reads for the web inspector, on blocking threads so a slow query never holds an
//! async worker, through a few kept read connections (opening one costs more than most queries);
//! and the list's cursor, an opaque token for "older than this row".

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use illumitunnel::store::{CaptureStore, StoreError};

/// Read connections kept open between requests.
const KEPT: usize = 4;

/// Reads the capture store off the async threads.
#[derive(Clone)]
pub struct Reads {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    idle: Mutex<Vec<CaptureStore>>,
}

impl Reads {
    /// Reads of the store at `path`; connections open when first needed.
    pub fn new(path: PathBuf) -> Self {
        Reads {
            inner: Arc::new(Inner {
                path,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Runs `read` on a kept connection on a blocking thread; an error is the store's sentence.
    pub async fn read<T, F>(&self, read: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&CaptureStore) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let kept = inner.idle.lock().ok().and_then(|mut idle| idle.pop());
            let store = match kept {
                Some(store) => store,
                None => CaptureStore::open(&inner.path).map_err(|e| e.to_string())?,
            };
            let result = read(&store).map_err(|e| e.to_string());
            if let Ok(mut idle) = inner.idle.lock() {
                if idle.len() < KEPT {
                    idle.push(store);
                }
            }
            result
        })
        .await
        .map_err(|e| format!("could not read the capture store: {e}"))?
    }
}

/// The cursor for the page after the row with `seq` (newest first: older rows).
pub fn cursor_after(seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("before:{seq}"))
}

/// The `seq` a cursor from [`cursor_after`] continues below, or `None` for anything else.
pub fn parse_cursor(cursor: &str) -> Option<i64> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let seq: i64 = text.strip_prefix("before:")?.parse().ok()?;
    (seq > 0).then_some(seq)
}
