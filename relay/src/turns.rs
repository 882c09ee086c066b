//! For unit tests: a task that counts how often the runtime lets it run, to show that work on
//! the relay's one thread gives way to other tasks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::task::JoinHandle;

/// Starts the counting task; abort the handle when done and read the count.
pub(crate) fn count_turns() -> (Arc<AtomicUsize>, JoinHandle<()>) {
    let turns = Arc::new(AtomicUsize::new(0));
    let counted = turns.clone();
    let task = tokio::spawn(async move {
        loop {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
        }
    });
    (turns, task)
}
