//! A client for IllumiChat's documented webhook API: `GET`/`POST /api/webhooks`,
//! `PATCH`/`DELETE /api/webhooks/{id}`, with `Authorization: Bearer TOKEN`.
//!
//! IllumiChat documents the requests but not the answers, so this accepts what such APIs
//! usually return: a list as `[...]`, `{"data": [...]}` or `{"webhooks": [...]}`, one webhook as
//! an object with `id` or `{"data": {...}}`, and an empty body where there is nothing to say.
//! The token is sent and nothing else: it is never printed or logged.

use std::time::Duration;

use bytes::Bytes;
use illumitunnel::delivery::RequestRecord;
use illumitunnel::Token;
use serde_json::{json, Value};

use crate::cli::ApiArgs;
use crate::forward::{Forwarder, Target};
use crate::usage::UsageError;

/// How long one API call may take.
const API_TIMEOUT: Duration = Duration::from_secs(15);

/// Why an API call failed; each Display is the sentence the user reads.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 or 403.
    #[error("IllumiChat rejected the API token; check ILLUMICHAT_TOKEN or --api-token")]
    Unauthorized,
    /// 404 for a webhook id.
    #[error("no IllumiChat webhook with id {0}; list them with illumitunnel webhooks list")]
    NotFound(String),
    /// No answer at all.
    #[error("could not reach IllumiChat at {base}: {cause}; check --api-base or your network")]
    Network {
        /// `--api-base`.
        base: String,
        /// What went wrong.
        cause: String,
    },
    /// Any other non-2xx answer.
    #[error("IllumiChat answered {status}{detail}; try again, or check the request")]
    Status {
        /// HTTP status.
        status: u16,
        /// `: message` from the answer, when it has one.
        detail: String,
    },
    /// A 2xx answer this client cannot read.
    #[error("IllumiChat answered in an unexpected shape ({0}); check --api-base")]
    Unreadable(String),
}

/// One webhook as IllumiChat lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// Its id.
    pub id: String,
    /// Where IllumiChat delivers.
    pub url: String,
    /// Subscribed event types.
    pub events: Vec<String>,
    /// Whether deliveries are on (`None` when the answer did not say).
    pub active: Option<bool>,
    /// The object as IllumiChat sent it, for `--json`.
    pub raw: Value,
}

impl Webhook {
    fn from_value(v: &Value) -> Option<Webhook> {
        let obj = v.as_object()?;
        let id = match obj.get("id")? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        Some(Webhook {
            id,
            url: obj
                .get("url")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            events: obj
                .get("events")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            active: obj.get("active").and_then(Value::as_bool),
            raw: v.clone(),
        })
    }
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is masked by its own Debug.
        write!(
            f,
            "Api {{ base: {:?}, token: {:?} }}",
            self.base, self.token
        )
    }
}

/// A signed-in client for one API base.
#[derive(Clone)]
pub struct Api {
    forwarder: Forwarder,
    base: String,
    token: Token,
}

impl Api {
    /// Checks `--api-base` and that a token was given.
    pub fn new(args: &ApiArgs) -> Result<Api, UsageError> {
        let token = args
            .api_token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(Token::new)
            .ok_or_else(|| {
                UsageError(
                    "missing IllumiChat API token; set ILLUMICHAT_TOKEN or pass --api-token TOKEN"
                        .into(),
                )
            })?;
        if token.expose().chars().any(|c| c.is_control()) {
            return Err(UsageError(
                "the IllumiChat API token contains characters a header cannot carry; check ILLUMICHAT_TOKEN or --api-token".into(),
            ));
        }
        let base = args.api_base.trim().trim_end_matches('/').to_string();
        let target = Target::parse(&base).map_err(|_| {
            UsageError(format!(
                "invalid --api-base {base:?}; pass a URL such as https://beta.illumichat.com"
            ))
        })?;
        Ok(Api {
            forwarder: Forwarder::through_proxies(target).with_timeout(API_TIMEOUT),
            base,
            token,
        })
    }

    /// `GET /api/webhooks`.
    pub async fn list(&self) -> Result<Vec<Webhook>, ApiError> {
        let v = self.call("GET", "", None, None).await?;
        let list = match &v {
            Value::Array(a) => Some(a),
            Value::Object(o) => o
                .get("data")
                .or_else(|| o.get("webhooks"))
                .and_then(Value::as_array),
            _ => None,
        }
        .ok_or_else(|| ApiError::Unreadable("no list of webhooks".into()))?;
        Ok(list.iter().filter_map(Webhook::from_value).collect())
    }

    /// `POST /api/webhooks` with `url`, `events` and `active: true`.
    pub async fn create(&self, url: &str, events: &[String]) -> Result<Webhook, ApiError> {
        let body = json!({ "url": url, "events": events, "active": true });
        let v = self.call("POST", "", Some(&body), None).await?;
        one(&v).ok_or_else(|| ApiError::Unreadable("no webhook id in the answer".into()))
    }

    /// `PATCH /api/webhooks/{id}`; the updated webhook when the answer holds one.
    pub async fn update(&self, id: &str, patch: &Value) -> Result<Option<Webhook>, ApiError> {
        let v = self.call("PATCH", id, Some(patch), Some(id)).await?;
        Ok(one(&v))
    }

    /// `DELETE /api/webhooks/{id}`.
    pub async fn delete(&self, id: &str) -> Result<(), ApiError> {
        self.call("DELETE", id, None, Some(id)).await.map(|_| ())
    }

    async fn call(
        &self,
        method: &str,
        id: &str,
        body: Option<&Value>,
        for_id: Option<&str>,
    ) -> Result<Value, ApiError> {
        let path = if id.is_empty() {
            "/api/webhooks".to_string()
        } else {
            format!("/api/webhooks/{id}")
        };
        let mut headers = vec![
            (
                "authorization".to_string(),
                format!("Bearer {}", self.token.expose()).into_bytes(),
            ),
            ("accept".to_string(), b"application/json".to_vec()),
            (
                "user-agent".to_string(),
                format!("illumitunnel/{}", env!("CARGO_PKG_VERSION")).into_bytes(),
            ),
        ];
        let body = match body {
            Some(v) => {
                headers.push(("content-type".to_string(), b"application/json".to_vec()));
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let request = RequestRecord {
            method: method.into(),
            path,
            query: String::new(),
            headers,
            body,
        };
        let answer = self
            .forwarder
            .forward(&request)
            .await
            .result
            .map_err(|cause| ApiError::Network {
                base: self.base.clone(),
                cause,
            })?;
        let parsed: Option<Value> = serde_json::from_slice(&answer.body).ok();
        match answer.status {
            200..=299 => Ok(parsed.unwrap_or(Value::Null)),
            401 | 403 => Err(ApiError::Unauthorized),
            404 if for_id.is_some() => Err(ApiError::NotFound(for_id.unwrap_or_default().into())),
            status => {
                let message = parsed
                    .as_ref()
                    .and_then(|v| v.get("error").or_else(|| v.get("message")))
                    .and_then(Value::as_str)
                    .map(|m| {
                        format!(
                            ": {}",
                            m.chars().filter(|c| !c.is_control()).collect::<String>()
                        )
                    })
                    .unwrap_or_default();
                Err(ApiError::Status {
                    status,
                    detail: message,
                })
            }
        }
    }
}

/// One webhook from an answer: the object itself or `{"data": {...}}`.
fn one(v: &Value) -> Option<Webhook> {
    Webhook::from_value(v).or_else(|| v.get("data").and_then(Webhook::from_value))
}

/// How `listen` marks a webhook URL IllumiChat's servers cannot reach.
pub const LOCAL_ONLY: &str = "local only — IllumiChat cannot reach this URL";

/// Whether `url`'s host is one IllumiChat's servers can never reach: `localhost`, a loopback,
/// private (RFC 1918, IPv6 ULA), link-local, CGNAT or unspecified address. Other names are not
/// resolved: a name is taken as public.
pub fn is_local_only(url: &str) -> bool {
    let Some(host) = url.parse::<http::Uri>().ok().and_then(|u| {
        u.host().map(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        })
    }) else {
        return false;
    };
    let host = host.trim_end_matches('.');
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => is_local_v4(ip),
        Ok(std::net::IpAddr::V6(ip)) => match ip.to_ipv4_mapped() {
            Some(v4) => is_local_v4(v4),
            None => {
                let first = ip.segments()[0];
                ip.is_loopback()
                    || ip.is_unspecified()
                    || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                    || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
            }
        },
        Err(_) => false,
    }
}

fn is_local_v4(ip: std::net::Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64.0.0/10
}

/// Refuses to register a URL IllumiChat cannot deliver to (a local-only host, or plain
/// `http://`), unless `--allow-private-url`.
pub fn check_registrable(url: &str, allow_private: bool) -> Result<(), UsageError> {
    if allow_private {
        return Ok(());
    }
    if is_local_only(url) {
        return Err(UsageError(format!(
            "refusing to register {url}: IllumiChat cannot reach a loopback, private or link-local address; use a public relay (--relay https://…), or pass --allow-private-url to register it anyway for testing"
        )));
    }
    if url.trim().to_ascii_lowercase().starts_with("http://") {
        return Err(UsageError(format!(
            "refusing to register {url}: IllumiChat delivers only to https:// URLs; give the relay a certificate (--acme-domain, or --tls-cert and --tls-key), or pass --allow-private-url to register it anyway for testing"
        )));
    }
    Ok(())
}

/// A webhook id is put in a URL path: only plain characters are accepted.
pub fn check_id(id: &str) -> Result<&str, UsageError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok && id != "." && id != ".." {
        Ok(id)
    } else {
        Err(UsageError(format!(
            "invalid webhook id {:?}; list ids with illumitunnel webhooks list",
            id.escape_debug().to_string()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_usual_answer_shapes() {
        let hook = json!({"id": "wh_1", "url": "https://x/t/a", "events": ["ticket.created"], "active": true});
        assert_eq!(one(&hook).unwrap().id, "wh_1");
        assert_eq!(
            one(&json!({"data": hook})).unwrap().events,
            ["ticket.created"]
        );
        assert_eq!(one(&json!({"id": 7})).unwrap().id, "7");
        assert!(one(&json!({"ok": true})).is_none());
    }

    #[test]
    fn ids_must_be_plain() {
        assert!(check_id("wh_1-a.b").is_ok());
        for bad in ["", "..", "a/b", "a?b", "a b"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_only_hosts_are_recognised() {
        for url in [
            "https://127.0.0.1:8443/t/x",
            "https://localhost/t/x",
            "https://app.localhost/t/x",
            "https://10.1.2.3/t/x",
            "https://172.20.0.1/t/x",
            "https://192.168.1.10:8443/t/x",
            "https://169.254.169.254/",
            "https://100.64.0.1/",
            "https://[::1]:8443/t/x",
            "https://[fd12:3456::1]/t/x",
            "https://[fe80::1]/t/x",
            "https://[::ffff:192.168.0.1]/",
            "https://0.0.0.0/",
        ] {
            assert!(is_local_only(url), "{url}");
        }
        for url in [
            "https://relay.example.com/t/x",
            "https://93.184.216.34/t/x",
            "https://172.32.0.1/",
            "https://[2001:db8::1]/",
            "not a url",
        ] {
            assert!(!is_local_only(url), "{url}");
        }
    }

    #[test]
    fn register_refuses_local_and_plain_http_unless_allowed() {
        let local = check_registrable("https://127.0.0.1:8443/t/x", false).unwrap_err();
        assert!(local.to_string().contains("--allow-private-url"), "{local}");
        let http = check_registrable("http://relay.example.com/t/x", false).unwrap_err();
        assert!(http.to_string().contains("only to https://"), "{http}");
        assert!(check_registrable("https://relay.example.com/t/x", false).is_ok());
        assert!(check_registrable("http://127.0.0.1/t/x", true).is_ok());
    }

    #[test]
    fn missing_token_is_a_usage_error() {
        let args = ApiArgs {
            api_base: "https://beta.illumichat.com".into(),
            api_token: None,
            allow_private_url: false,
        };
        let err = Api::new(&args).err().unwrap().to_string();
        assert!(err.contains("ILLUMICHAT_TOKEN"), "{err}");
    }
}
