//! What a sender reads when the relay cannot give it the local server's answer: one
//! [`IngressError`] per reason, its HTTP status, and the single JSON writer that turns it into
//! `{"error": "<sentence>"}`.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// Why a request to the relay got no answer from a local server.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// No client ever claimed this tunnel.
    #[error("unknown tunnel")]
    UnknownTunnel,
    /// The path is not one the relay serves.
    #[error("no such path on this relay; webhooks go to /t/{{tunnel}}/…")]
    NotFound,
    /// The body is over `--max-body`.
    #[error("request body is larger than this relay's limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The sender stopped sending its body.
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    /// The body arrived slower than `--min-body-rate` after its grace.
    #[error("the request body arrived slower than this relay's minimum of {rate} bytes a second (--min-body-rate); send the whole body right after the headers")]
    BodyTooSlow {
        /// `--min-body-rate`, bytes a second.
        rate: u64,
    },
    /// The tunnel is known but no client is connected.
    #[error("the client for tunnel {0} is offline; start `illumitunnel listen --tunnel {0}` and send again")]
    Offline(String),
    /// The tunnel's offline queue reached a limit; the sentence names it and what to do.
    #[error("{0}")]
    QueueFull(String),
    /// The offline queue could not be written.
    #[error("the relay could not queue this delivery for tunnel {0} while its client is offline; send again later")]
    QueueUnavailable(String),
    /// A cluster node that has not yet read the cluster's tunnels, presence and heartbeats.
    #[error("this relay node is starting and has not yet read the cluster's tunnels; send again in a second")]
    Starting,
    /// The client did not answer within `--response-timeout`.
    #[error("the client for tunnel {tunnel} did not answer within {timeout:?}")]
    Timeout {
        /// The tunnel.
        tunnel: String,
        /// `--response-timeout`.
        timeout: Duration,
    },
    /// The client could not reach the local server; the message names the cause.
    #[error("{0}")]
    Failed(String),
    /// The client's session ended before it answered.
    #[error("the client for tunnel {0} disconnected before answering")]
    ClientGone(String),
    /// The client answered something the relay cannot pass on.
    #[error("the client for tunnel {tunnel} sent an invalid answer: {reason}")]
    BadAnswer {
        /// The tunnel.
        tunnel: String,
        /// What was wrong.
        reason: String,
    },
    /// A request to the client websocket that is not a websocket upgrade.
    #[error("expected a websocket upgrade; this path is for `illumitunnel listen`")]
    NotWebsocket,
    /// A method no webhook sender uses (e.g. `CONNECT`, `TRACE`).
    #[error(
        "method {0} is not accepted; webhooks use POST, PUT, PATCH, DELETE, GET, HEAD or OPTIONS"
    )]
    MethodNotAllowed(String),
    /// A path the relay refuses to pass on (encoded slash or backslash, `..;`).
    #[error("path refused: {0}; send the webhook to a plain /t/{{tunnel}}/… path")]
    BadPath(&'static str),
    /// Request line and headers over `--max-header-bytes`.
    #[error("request line and headers are larger than this relay's limit of {limit} bytes")]
    HeadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The relay holds as many bodies and answers as its memory budget allows, or this
    /// sender's share of it while the budget is past half full.
    #[error("the relay is busy with other requests ({limit} bytes of bodies and answers in flight, --max-inflight-bytes); send again in a few seconds")]
    Busy {
        /// `--max-inflight-bytes`.
        limit: usize,
    },
    /// A client websocket upgrade without a valid token.
    #[error("the relay did not accept the client token; pass --token (or ILLUMITUNNEL_TOKEN) with a token from the relay's tokens file")]
    Unauthorized,
    /// A client websocket upgrade from an address that failed too many token checks lately.
    #[error("too many failed client token checks from this address; wait {} s, and check the client's --token (or ILLUMITUNNEL_TOKEN)", retry_secs(*retry_after))]
    TooManyTokenFailures {
        /// When the address may try again.
        retry_after: Duration,
    },
}

/// Whole seconds for `Retry-After`, at least 1.
fn retry_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl IngressError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            IngressError::UnknownTunnel | IngressError::NotFound => StatusCode::NOT_FOUND,
            IngressError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngressError::BodyRead(_) | IngressError::NotWebsocket | IngressError::BadPath(_) => {
                StatusCode::BAD_REQUEST
            }
            IngressError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            IngressError::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            IngressError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            IngressError::Unauthorized => StatusCode::UNAUTHORIZED,
            IngressError::TooManyTokenFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
            IngressError::BodyTimeout(_) | IngressError::BodyTooSlow { .. } => {
                StatusCode::REQUEST_TIMEOUT
            }
            IngressError::Offline(_)
            | IngressError::QueueFull(_)
            | IngressError::QueueUnavailable(_)
            | IngressError::Starting => StatusCode::SERVICE_UNAVAILABLE,
            IngressError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            IngressError::Failed(_)
            | IngressError::ClientGone(_)
            | IngressError::BadAnswer { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The JSON error response, with `Allow` on 405 and `Retry-After` on a busy 503 and a 429.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = json_error(self.status(), &self.to_string());
        let headers = response.headers_mut();
        match self {
            IngressError::MethodNotAllowed(_) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
            }
            IngressError::Busy { .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            IngressError::Starting => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(STARTING_RETRY_AFTER_SECS),
                );
            }
            IngressError::TooManyTokenFailures { retry_after } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_secs(retry_after)),
                );
            }
            _ => {}
        }
        response
    }
}

/// The methods webhook senders use, as the `Allow` header lists them.
pub const ALLOWED_METHODS: &str = "POST, PUT, PATCH, DELETE, GET, HEAD, OPTIONS";
/// `Retry-After` on a 503 from the in-flight budget, in seconds.
const RETRY_AFTER_SECS: &str = "5";
/// `Retry-After` on a 503 from a cluster node still reading the cluster, in seconds.
const STARTING_RETRY_AFTER_SECS: &str = "1";

/// `{"error": message}` with `status`: the relay's only JSON error writer.
pub fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(response: Response<Full<Bytes>>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn every_error_is_one_json_sentence() {
        let cases = [
            (IngressError::UnknownTunnel, 404, "unknown tunnel"),
            (IngressError::BodyTooLarge { limit: 10 }, 413, "request body is larger than this relay's limit of 10 bytes"),
            (IngressError::Offline("my-app".into()), 503, "the client for tunnel my-app is offline; start `illumitunnel listen --tunnel my-app` and send again"),
            (IngressError::Timeout { tunnel: "my-app".into(), timeout: Duration::from_secs(25) }, 504, "the client for tunnel my-app did not answer within 25s"),
            (IngressError::Failed("connection refused to 127.0.0.1:3000".into()), 502, "connection refused to 127.0.0.1:3000"),
            (IngressError::ClientGone("my-app".into()), 502, "the client for tunnel my-app disconnected before answering"),
            (IngressError::NotWebsocket, 400, "expected a websocket upgrade; this path is for `illumitunnel listen`"),
            (IngressError::MethodNotAllowed("CONNECT".into()), 405, "method CONNECT is not accepted; webhooks use POST, PUT, PATCH, DELETE, GET, HEAD or OPTIONS"),
            (IngressError::BadPath("encoded slash"), 400, "path refused: encoded slash; send the webhook to a plain /t/{tunnel}/… path"),
            (IngressError::HeadTooLarge { limit: 65536 }, 431, "request line and headers are larger than this relay's limit of 65536 bytes"),
            (IngressError::BodyTooSlow { rate: 8192 }, 408, "the request body arrived slower than this relay's minimum of 8192 bytes a second (--min-body-rate); send the whole body right after the headers"),
            (IngressError::Busy { limit: 100 }, 503, "the relay is busy with other requests (100 bytes of bodies and answers in flight, --max-inflight-bytes); send again in a few seconds"),
            (IngressError::TooManyTokenFailures { retry_after: Duration::from_millis(1500) }, 429, "too many failed client token checks from this address; wait 2 s, and check the client's --token (or ILLUMITUNNEL_TOKEN)"),
        ];
        for (err, status, sentence) in cases {
            let response = err.into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            assert_eq!(
                body_json(response).await,
                serde_json::json!({ "error": sentence })
            );
        }
    }

    #[test]
    fn method_and_busy_answers_say_what_to_send_and_when() {
        let response = IngressError::MethodNotAllowed("TRACE".into()).into_response();
        assert_eq!(response.headers()[header::ALLOW], ALLOWED_METHODS);
        let response = IngressError::Busy { limit: 1 }.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let response = IngressError::TooManyTokenFailures {
            retry_after: Duration::from_secs(1),
        }
        .into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let response = IngressError::Starting.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[tokio::test]
    async fn quotes_and_control_characters_stay_valid_json() {
        let response = IngressError::Failed("bad \"answer\"\n\u{1}".into()).into_response();
        assert_eq!(body_json(response).await["error"], "bad \"answer\"\n\u{1}");
    }
}
