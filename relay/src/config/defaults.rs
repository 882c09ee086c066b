//! The relay's defaults and fixed limits, in one place: `--help`, `Config::default()` and the
//! docs read them from here.

use std::time::Duration;

/// Default `--listen` address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// Default `--max-body`: 10 MiB.
pub const DEFAULT_MAX_BODY: usize = 10 * 1024 * 1024;
/// Default `--response-timeout`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(25);
/// How often each side pings; a peer silent for two intervals is gone.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(10);
/// Default `--max-header-bytes`: request line and headers of one request.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Largest `--max-header-bytes`: a request head this size still fits one protocol message to
/// the client, with room for the `X-Forwarded-*` headers the relay adds.
pub const MAX_MAX_HEADER_BYTES: usize = 96 * 1024;
/// Default `--max-inflight-bytes`: request bodies held in memory across all requests.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 256 * 1024 * 1024;
/// Default `--min-body-rate`: 8 KiB a second.
pub const DEFAULT_MIN_BODY_RATE: u64 = 8 * 1024;
/// Time a body has before `--min-body-rate` applies to it.
pub const MIN_BODY_GRACE: Duration = Duration::from_secs(5);
/// Default `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default `--max-connections-per-ip`.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// Default `--idle-timeout`: an HTTP connection with no request in flight is closed after it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `--tunnel-ttl`: a tunnel whose owner has not connected for this long loses its queue.
pub const DEFAULT_TUNNEL_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Environment variable holding client tokens, separated by commas or newlines.
pub const TOKENS_ENV: &str = "ILLUMITUNNEL_RELAY_TOKENS";
/// Shortest client token in a tokens file or the environment: 22 base64url characters carry
/// 128 bits, so a token cannot be guessed through the per-address limit on failed checks.
pub const MIN_TOKEN_CHARS: usize = 22;
