//! HAR 1.2 export of deliveries, for `export --har`: the request as the local server received
//! it, its response, and timings, in the format browsers' devtools and HTTP tools import.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::delivery::Delivery;
use crate::headers::Header;

/// A HAR 1.2 log holding `deliveries` in the order given.
pub fn log(deliveries: &[Delivery], creator_version: &str) -> Value {
    json!({
        "log": {
            "version": "1.2",
            "creator": { "name": "illumitunnel", "version": creator_version },
            "entries": deliveries.iter().map(entry).collect::<Vec<_>>(),
        }
    })
}

fn entry(d: &Delivery) -> Value {
    let url = if d.target.is_empty() {
        format!(
            "http://localhost{}{}",
            d.request.path,
            query_suffix(&d.request.query)
        )
    } else {
        d.target.clone()
    };
    let mut request = json!({
        "method": d.request.method,
        "url": url,
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": headers(&d.request.headers),
        "queryString": query_string(&d.request.query),
        "headersSize": -1,
        "bodySize": d.request.body.len(),
    });
    if !d.request.body.is_empty() {
        request["postData"] = post_data(&d.request.headers, &d.request.body);
    }
    let response = match &d.response {
        Some(r) => json!({
            "status": r.status,
            "statusText": status_text(r.status),
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": headers(&r.headers),
            "content": content(&r.headers, &r.body),
            "redirectURL": crate::headers::get(&r.headers, "location").map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default(),
            "headersSize": -1,
            "bodySize": r.body.len(),
        }),
        // HAR has no "no response"; status 0 is what browsers write for a failed request.
        None => json!({
            "status": 0,
            "statusText": d.error.clone().unwrap_or_default(),
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": [],
            "content": { "size": 0, "mimeType": "x-unknown" },
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": -1,
        }),
    };
    let wait = d.duration_us as f64 / 1000.0;
    json!({
        "startedDateTime": crate::rfc3339_ms(d.received_at_ms),
        "time": wait,
        "request": request,
        "response": response,
        "cache": {},
        "timings": { "send": 0, "wait": wait, "receive": 0 },
        "comment": comment(d),
    })
}

fn comment(d: &Delivery) -> String {
    let mut parts = vec![format!("illumitunnel delivery {}", d.id)];
    if let Some(event) = &d.event {
        parts.push(format!("event {event}"));
    }
    if let Some(of) = &d.replay_of {
        parts.push(format!("replay of {of}"));
    }
    if d.duplicate {
        parts.push("duplicate".into());
    }
    if d.skipped {
        parts.push("skipped".into());
    }
    parts.join("; ")
}

fn query_suffix(q: &str) -> String {
    if q.is_empty() {
        String::new()
    } else {
        format!("?{q}")
    }
}

fn headers(headers: &[Header]) -> Vec<Value> {
    headers
        .iter()
        .map(|(n, v)| json!({ "name": n, "value": String::from_utf8_lossy(v) }))
        .collect()
}

fn query_string(q: &str) -> Vec<Value> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            json!({ "name": n, "value": v })
        })
        .collect()
}

fn mime(headers: &[Header]) -> String {
    crate::headers::get(headers, "content-type")
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| "application/octet-stream".into())
}

fn post_data(h: &[Header], body: &[u8]) -> Value {
    match std::str::from_utf8(body) {
        Ok(text) => json!({ "mimeType": mime(h), "text": text }),
        // postData has no encoding field in HAR 1.2; keep the bytes recoverable in the comment.
        Err(_) => json!({
            "mimeType": mime(h),
            "text": "",
            "comment": format!("base64:{}", base64::engine::general_purpose::STANDARD.encode(body)),
        }),
    }
}

fn content(h: &[Header], body: &[u8]) -> Value {
    match std::str::from_utf8(body) {
        Ok(text) => json!({ "size": body.len(), "mimeType": mime(h), "text": text }),
        Err(_) => json!({
            "size": body.len(),
            "mimeType": mime(h),
            "text": base64::engine::general_purpose::STANDARD.encode(body),
            "encoding": "base64",
        }),
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{DeliveryId, RequestRecord, ResponseRecord, Source};
    use bytes::Bytes;

    #[test]
    fn entries_carry_request_response_and_timings() {
        let request = RequestRecord {
            method: "POST".into(),
            path: "/hook".into(),
            query: "a=1&b".into(),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: Bytes::from_static(
                br#"{"event":"lead.captured","timestamp":"t","data":{"id":"lead_1"}}"#,
            ),
        };
        let mut d = Delivery::new(
            DeliveryId::parse("abc").unwrap(),
            0,
            Source::Tunnel,
            request,
        );
        d.target = "http://127.0.0.1:3000/webhooks/hook?a=1&b".into();
        d.duration_us = 1500;
        d.response = Some(ResponseRecord {
            status: 201,
            headers: vec![],
            body: Bytes::from_static(&[0xff]),
        });
        let har = log(&[d], "0.1.0");
        let e = &har["log"]["entries"][0];
        assert_eq!(har["log"]["version"], "1.2");
        assert_eq!(
            e["request"]["url"],
            "http://127.0.0.1:3000/webhooks/hook?a=1&b"
        );
        assert_eq!(e["request"]["queryString"][1]["name"], "b");
        assert!(e["request"]["postData"]["text"]
            .as_str()
            .unwrap()
            .contains("lead_1"));
        assert_eq!(e["response"]["status"], 201);
        assert_eq!(e["response"]["content"]["encoding"], "base64");
        assert_eq!(e["time"], 1.5);
        assert!(e["comment"]
            .as_str()
            .unwrap()
            .contains("event lead.captured"));
    }
}
