//! Loopback benchmark of illumitunnel: a local target, the release relay and client as real
//! processes, and an in-process sender, measuring beside a direct (sender → target) baseline
//! in the same run. The bench target `tunnel` (`cargo bench -p illumitunnel-bench`) drives it
//! and prints a markdown table of every figure against its SPEC target.
//!
//! # Layout
//! - [`proc`]: child processes stopped by PID, CPU ticks and memory from `/proc`
//! - [`target`]: the in-process HTTP target answering `200 {"received":true}`
//! - [`load`]: the sender: fixed concurrency for a fixed time, keep-alive or not, plain or TLS
//! - [`cluster`]: the cluster's NATS hop beside a single relay and the direct path
//! - [`stack`]: starting relay + client pairs, a lone relay, and bore
//! - [`inspector`]: `listen` with its terminal inspector in a pseudo-terminal
//! - [`idle`]: thousands of idle websocket sessions held against the relay
//! - [`slow`]: idle and slow ingress sockets (silent, partial request line or preface, TLS then silence)
//! - [`payload`]: the 1.5 KB IllumiChat envelope, a large body, a filled capture store
//! - [`hostile`]: slow sockets and a heavy tunnel beside measured ones, with and without
//! - [`slow_body`]: the declared-size / slow-body attacker beside another tunnel, with and without
//! - [`report`]: the result table

pub mod cluster;
pub mod hostile;
pub mod idle;
pub mod inspector;
pub mod load;
pub mod payload;
pub mod proc;
pub mod report;
pub mod slow;
pub mod slow_body;
pub mod stack;
pub mod target;
