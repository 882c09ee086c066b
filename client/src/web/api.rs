//! The `/api/` endpoints: a page of deliveries (filters and a cursor, read from the capture store
//! a page at a time), one delivery as `show --json` prints it, its raw body, a replay with
//! optional edits, and `illumitunnel test` for given ids. Field names are those of
//! `events --json` / `show --json` / `test --json`; errors are `{"error": …}` (see `docs/api.md`).

mod params;

use bytes::Bytes;
use http::header::HeaderValue;
use http::StatusCode;
use illumitunnel::store::StoreError;
use illumitunnel::{Delivery, DeliveryId};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::reads::cursor_after;
use super::respond::{error, Reply};
use super::state::State;
use crate::regression::Pointer;
use crate::status::{ReplayEdits, ReplayRequest};

pub(super) use params::{filter_from, Query};

/// Deliveries a page holds unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 50;
/// Most deliveries one page holds.
pub(super) const MAX_LIMIT: usize = 500;
/// Most deliveries one `POST /api/test` runs.
const MAX_TEST_IDS: usize = 100;

/// `GET /api/deliveries`: newest first, `next_cursor` for the older ones (null on the last page).
pub async fn list(state: &State, query: Option<&str>) -> Reply {
    let query = Query::parse(query);
    let (filter, limit) = match filter_from(&query).and_then(|f| Ok((f, limit_from(&query)?))) {
        Ok(found) => found,
        Err(sentence) => return error(StatusCode::BAD_REQUEST, &sentence),
    };
    let page = state
        .reads
        .read(move |store| store.list_newest_summaries(&filter, limit + 1))
        .await;
    let mut page = match page {
        Ok(page) => page,
        Err(sentence) => return store_failed(&sentence),
    };
    let next_cursor = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|d| cursor_after(d.seq))
    } else {
        None
    };
    let deliveries: Vec<Value> = page.iter().map(Delivery::summary_json).collect();
    Reply::json(
        StatusCode::OK,
        &json!({ "deliveries": deliveries, "next_cursor": next_cursor }),
    )
}

fn limit_from(query: &Query) -> Result<usize, String> {
    match query.get("limit") {
        None | Some("") => Ok(DEFAULT_LIMIT),
        Some(text) => match text.parse::<usize>() {
            Ok(n @ 1..=MAX_LIMIT) => Ok(n),
            _ => Err(format!(
                "invalid limit {text:?}; pass a number from 1 to {MAX_LIMIT}"
            )),
        },
    }
}

/// `GET /api/deliveries/{id}`: `show --json`'s object, secret header values hidden unless
/// `include_secrets=true`.
pub async fn one(state: &State, id: &str, query: Option<&str>) -> Reply {
    let query = Query::parse(query);
    match find(state, id).await {
        Ok(d) => Reply::json(StatusCode::OK, &detail(d, &query)),
        Err(reply) => reply,
    }
}

/// `GET /api/deliveries/{id}/body`: the request body (`?part=response`: the response body) as
/// recorded, with its recorded content type, as an attachment (never shown as a page here).
pub async fn body(state: &State, id: &str, query: Option<&str>) -> Reply {
    let query = Query::parse(query);
    let d = match find(state, id).await {
        Ok(d) => d,
        Err(reply) => return reply,
    };
    let (headers, body) = match query.get("part") {
        None | Some("request") => (&d.request.headers, d.request.body.clone()),
        Some("response") => match &d.response {
            Some(r) => (&r.headers, r.body.clone()),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!(
                        "delivery {} has no response: the local server did not answer it",
                        d.id
                    ),
                )
            }
        },
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid part {other:?}; pass part=request or part=response"),
            )
        }
    };
    let content_type = illumitunnel::headers::get(headers, "content-type")
        .and_then(|v| HeaderValue::from_bytes(v).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    Reply::bytes(StatusCode::OK, body, content_type).attachment()
}

/// What `POST /api/deliveries/{id}/replay` may change.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    method: Option<String>,
    path: Option<String>,
    headers: Option<serde_json::Map<String, Value>>,
    body: Option<String>,
    body_base64: Option<String>,
}

/// `POST /api/deliveries/{id}/replay`: sent to the current forward target and recorded as a
/// new delivery marked replay; 201 with it.
pub async fn replay(state: &State, id: &str, body: &Bytes, query: Option<&str>) -> Reply {
    let query = Query::parse(query);
    let (edits, new_body) = match replay_edits(body) {
        Ok(found) => found,
        Err(sentence) => return error(StatusCode::BAD_REQUEST, &sentence),
    };
    let original = match find(state, id).await {
        Ok(d) => d,
        Err(reply) => return reply,
    };
    match ask_replay(state, original.id, new_body, edits).await {
        Ok(replayed) => Reply::json(StatusCode::CREATED, &detail(replayed, &query)),
        Err(sentence) => error(StatusCode::SERVICE_UNAVAILABLE, &sentence),
    }
}

fn replay_edits(body: &Bytes) -> Result<(ReplayEdits, Option<Bytes>), String> {
    let asked: ReplayBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            format!("the replay's changes are not valid JSON ({e}); send an object with any of method, path, headers, body")
        })?
    };
    let method = asked.method.map(params::method).transpose()?;
    let path = asked.path.map(params::path).transpose()?;
    let headers = match asked.headers {
        Some(map) => map
            .into_iter()
            .map(|(name, value)| params::header(name, value))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let new_body = match (asked.body, asked.body_base64) {
        (Some(_), Some(_)) => {
            return Err("body and body_base64 contradict each other; send one of them".into())
        }
        (Some(text), None) => Some(Bytes::from(text)),
        (None, Some(b64)) => {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| "body_base64 is not base64; send the body as standard base64")?;
            Some(Bytes::from(bytes))
        }
        (None, None) => None,
    };
    Ok((
        ReplayEdits {
            method,
            path,
            headers,
        },
        new_body,
    ))
}

/// Asks `listen`'s replay server (the terminal inspector's too) for a replay.
async fn ask_replay(
    state: &State,
    original: DeliveryId,
    body: Option<Bytes>,
    edits: ReplayEdits,
) -> Result<Delivery, String> {
    let (reply, answer) = oneshot::channel();
    let request = ReplayRequest {
        original,
        body,
        edits,
        reply,
    };
    if state.replays.send(request).await.is_err() {
        return Err("listen is stopping and takes no more replays; start it again".into());
    }
    answer
        .await
        .unwrap_or_else(|_| Err("listen stopped before the replay finished; start it again".into()))
}

/// What `POST /api/test` takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBody {
    ids: Vec<String>,
    #[serde(default)]
    ignore: Vec<String>,
}

/// `POST /api/test`: each delivery sent to the handler again and its answer compared with the
/// recorded one, as `illumitunnel test --json` prints it (one object a delivery), plus counts.
pub async fn test(state: &State, body: &Bytes) -> Reply {
    let asked: TestBody = match serde_json::from_slice(body) {
        Ok(asked) => asked,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the test request is not valid JSON ({e}); send {{\"ids\": [\"ID\", …]}}"),
            )
        }
    };
    if asked.ids.is_empty() || asked.ids.len() > MAX_TEST_IDS {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "ids holds {} deliveries; send 1 to {MAX_TEST_IDS} ids",
                asked.ids.len()
            ),
        );
    }
    let ignore = match asked
        .ignore
        .iter()
        .map(|p| Pointer::parse(p))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(ignore) => ignore,
        Err(sentence) => return error(StatusCode::BAD_REQUEST, &sentence),
    };
    // Every id is looked up before anything is sent: an unknown one sends nothing.
    let mut originals = Vec::with_capacity(asked.ids.len());
    for id in &asked.ids {
        match find(state, id).await {
            Ok(d) => originals.push(d),
            Err(reply) => return reply,
        }
    }
    let mut results = Vec::with_capacity(originals.len());
    let mut passed = 0;
    for original in &originals {
        let replayed =
            match ask_replay(state, original.id.clone(), None, ReplayEdits::default()).await {
                Ok(replayed) => replayed,
                Err(sentence) => return error(StatusCode::SERVICE_UNAVAILABLE, &sentence),
            };
        let report = crate::regression::replay_report(original, &replayed, &ignore);
        passed += usize::from(report.passed());
        results.push(crate::regression::case_json(
            original, &replayed, &report, true,
        ));
    }
    let failed = results.len() - passed;
    Reply::json(
        StatusCode::OK,
        &json!({ "results": results, "passed": passed, "failed": failed }),
    )
}

/// The delivery `id` names (or uniquely starts with): 404 unknown, 400 ambiguous or malformed.
async fn find(state: &State, id: &str) -> Result<Delivery, Reply> {
    let id = params::decode(id);
    if DeliveryId::parse(&id).is_none() {
        return Err(error(
            StatusCode::NOT_FOUND,
            &format!(
                "no delivery with id {:?}; list them with GET /api/deliveries",
                id
            ),
        ));
    }
    let wanted = id.clone();
    let found = state
        .reads
        .read(move |store| match store.get(&wanted) {
            Err(StoreError::Ambiguous(_)) => Ok(Err(())),
            other => other.map(Ok),
        })
        .await;
    match found {
        Ok(Ok(Some(d))) => Ok(d),
        Ok(Ok(None)) => Err(error(
            StatusCode::NOT_FOUND,
            &format!("no delivery with id {id}; list them with GET /api/deliveries"),
        )),
        Ok(Err(())) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("{id} starts more than one delivery's id; give more of it"),
        )),
        Err(sentence) => Err(store_failed(&sentence)),
    }
}

/// `show --json`'s object; secret header values hidden unless `include_secrets=true`.
fn detail(mut d: Delivery, query: &Query) -> Value {
    if query.get("include_secrets") != Some("true") {
        d.redact_secrets();
    }
    d.detail_json()
}

fn store_failed(sentence: &str) -> Reply {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("could not read the capture store: {sentence}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_changes_are_read_from_json_and_bad_ones_refused() {
        let (edits, body) = replay_edits(&Bytes::from_static(b"  \n")).unwrap();
        assert_eq!((edits, body), (ReplayEdits::default(), None));
        let (edits, body) = replay_edits(&Bytes::from_static(
            br#"{"method":"PATCH","path":"/x?y=1","headers":{"X-A":"1","X-B":null},"body_base64":"AAEC"}"#,
        ))
        .unwrap();
        assert_eq!(edits.method.as_deref(), Some("PATCH"));
        assert_eq!(edits.path.as_deref(), Some("/x?y=1"));
        assert_eq!(
            edits.headers,
            vec![
                ("X-A".to_string(), Some(b"1".to_vec())),
                ("X-B".to_string(), None)
            ]
        );
        assert_eq!(body, Some(Bytes::from_static(&[0, 1, 2])));
        for bad in [
            r#"{"body":"a","body_base64":"YQ=="}"#,
            r#"{"body_base64":"not base64!"}"#,
            r#"{"method":""}"#,
            r#"{"path":"no-slash"}"#,
            r#"{"headers":{"Connection":"close"}}"#,
            r#"{"unknown":1}"#,
            r#"["not", "an", "object"]"#,
        ] {
            assert!(replay_edits(&Bytes::from(bad)).is_err(), "{bad}");
        }
    }
}
