//! What every request to the web inspector shares: its address and token, the page with the
//! token in it, the capture store reads, the commit signal and the replay channel.

use std::net::SocketAddr;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::reads::Reads;
use crate::status::ReplayRequest;

/// Shared by every request.
pub struct State {
    /// Where the inspector listens (the `Host` check compares with it).
    pub addr: SocketAddr,
    /// The token `POST` calls need.
    pub token: String,
    /// The page with the token in it.
    pub index: String,
    /// Capture store reads.
    pub reads: Reads,
    /// The newest committed `seq`.
    pub committed: watch::Receiver<i64>,
    /// `listen`'s replay server.
    pub replays: mpsc::Sender<ReplayRequest>,
    /// `listen`'s shutdown, which ends live streams.
    pub shutdown: CancellationToken,
}
