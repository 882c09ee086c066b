//! Suite files for `suite save` and `test --suite`: JSON Lines, one delivery a line with the
//! request to send and the response the handler gave when it was captured. A suite is meant to
//! be committed beside the handler's code, so each line is built from fixed-order fields (a
//! re-save of the same deliveries writes the same bytes) and carries the format's `version`.
//!
//! ```text
//! {"version":1,"id":"0196…","event":"ticket.created","resource_id":"tkt_1","request":{"method":"POST","path":"/webhooks/illumichat","query":"","headers":[["content-type","application/json"]],"body":"{…}"},"expected":{"status":200,"body":"{\"received\":true}"}}
//! ```
//! Bodies are text when they are UTF-8, else `body_base64`; a header value that is not UTF-8 is
//! written as `[name, base64, "base64"]`. Nothing here reads a clock or a file.

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::delivery::{Delivery, DeliveryId, RequestRecord, ResponseRecord, Source};
use crate::headers::Header;

/// The suite format this build writes, and the newest it reads.
pub const SUITE_VERSION: u32 = 1;

/// One delivery of a suite: what to send and what the handler answered then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The captured delivery's id.
    pub id: DeliveryId,
    /// IllumiChat event type, when the body is an envelope.
    pub event: Option<String>,
    /// `data.id` of the envelope.
    pub resource_id: Option<String>,
    /// The request, as the handler received it.
    pub request: RequestRecord,
    /// The recorded answer (status and body; headers are not compared and not kept).
    pub expected: ResponseRecord,
}

/// A suite line that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {cause}")]
pub struct SuiteError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub cause: String,
}

impl Case {
    /// The case for a delivery with a recorded answer; `None` when there was no answer.
    pub fn from_delivery(d: &Delivery) -> Option<Case> {
        let response = d.response.as_ref()?;
        Some(Case {
            id: d.id.clone(),
            event: d.event.clone(),
            resource_id: d.resource_id.clone(),
            request: d.request.clone(),
            expected: ResponseRecord {
                status: response.status,
                headers: Vec::new(),
                body: response.body.clone(),
            },
        })
    }

    /// The case as a stored-looking delivery (its request, its expected answer), so a suite
    /// runs through the same code as deliveries from the capture store.
    pub fn into_delivery(self) -> Delivery {
        let mut d = Delivery::new(self.id, 0, Source::Tunnel, self.request);
        d.event = self.event.or(d.event);
        d.resource_id = self.resource_id.or(d.resource_id);
        d.response = Some(self.expected);
        d
    }

    /// The case as one suite line, without the newline.
    pub fn to_line(&self) -> String {
        let line = Line {
            version: SUITE_VERSION,
            id: self.id.as_str().to_string(),
            event: self.event.clone(),
            resource_id: self.resource_id.clone(),
            request: LineRequest {
                method: self.request.method.clone(),
                path: self.request.path.clone(),
                query: self.request.query.clone(),
                headers: self.request.headers.iter().map(header_out).collect(),
                body: Body::of(&self.request.body),
            },
            expected: LineResponse {
                status: self.expected.status,
                body: Body::of(&self.expected.body),
            },
        };
        crate::escape::json_string(&line)
    }
}

/// Every case of a suite file's text, in file order; blank lines are allowed.
pub fn parse(text: &str) -> Result<Vec<Case>, SuiteError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_line(l).map_err(|cause| SuiteError { line: i + 1, cause }))
        .collect()
}

fn parse_line(text: &str) -> Result<Case, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| format!("not a suite entry: {e}"))?;
    if line.version == 0 {
        return Err("version 0 is not a suite format version; save the suite again".into());
    }
    if line.version > SUITE_VERSION {
        return Err(format!(
            "suite format version {} is newer than this illumitunnel reads ({SUITE_VERSION}); upgrade illumitunnel",
            line.version
        ));
    }
    let id = DeliveryId::parse(&line.id)
        .ok_or_else(|| format!("id {:?} is not a delivery id", line.id))?;
    let headers = line
        .request
        .headers
        .into_iter()
        .map(header_in)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Case {
        id,
        event: line.event,
        resource_id: line.resource_id,
        request: RequestRecord {
            method: line.request.method,
            path: line.request.path,
            query: line.request.query,
            headers,
            body: line.request.body.bytes("request")?,
        },
        expected: ResponseRecord {
            status: line.expected.status,
            headers: Vec::new(),
            body: line.expected.body.bytes("expected")?,
        },
    })
}

// The serialized shape: field order here is the order in the file.

#[derive(Serialize, Deserialize)]
struct Line {
    version: u32,
    id: String,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    resource_id: Option<String>,
    request: LineRequest,
    expected: LineResponse,
}

#[derive(Serialize, Deserialize)]
struct LineRequest {
    method: String,
    path: String,
    #[serde(default)]
    query: String,
    #[serde(default)]
    headers: Vec<Vec<String>>,
    #[serde(flatten)]
    body: Body,
}

#[derive(Serialize, Deserialize)]
struct LineResponse {
    status: u16,
    #[serde(flatten)]
    body: Body,
}

/// `body` when UTF-8, else `body_base64`; exactly one is written.
#[derive(Serialize, Deserialize, Default)]
struct Body {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
}

impl Body {
    fn of(bytes: &[u8]) -> Body {
        match std::str::from_utf8(bytes) {
            Ok(text) => Body {
                body: Some(text.to_string()),
                body_base64: None,
            },
            Err(_) => Body {
                body: None,
                body_base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            },
        }
    }

    fn bytes(self, what: &str) -> Result<Bytes, String> {
        match (self.body, self.body_base64) {
            (Some(text), None) => Ok(Bytes::from(text)),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Bytes::from)
                .map_err(|e| format!("{what} body_base64 is not base64: {e}")),
            (None, None) => Ok(Bytes::new()),
            (Some(_), Some(_)) => Err(format!("{what} has both body and body_base64")),
        }
    }
}

fn header_out((name, value): &Header) -> Vec<String> {
    match std::str::from_utf8(value) {
        Ok(text) => vec![name.clone(), text.to_string()],
        Err(_) => vec![
            name.clone(),
            base64::engine::general_purpose::STANDARD.encode(value),
            "base64".into(),
        ],
    }
}

fn header_in(fields: Vec<String>) -> Result<Header, String> {
    match <[String; 2]>::try_from(fields) {
        Ok([name, value]) => Ok((name, value.into_bytes())),
        Err(fields) => match <[String; 3]>::try_from(fields) {
            Ok([name, value, encoding]) if encoding == "base64" => {
                let value = base64::engine::general_purpose::STANDARD
                    .decode(value)
                    .map_err(|e| format!("header {name:?} is not base64: {e}"))?;
                Ok((name, value))
            }
            _ => Err("a header is not [name, value] or [name, base64, \"base64\"]".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(body: &'static [u8]) -> Case {
        Case {
            id: DeliveryId::parse("0196a3f2c4d11e2a").unwrap(),
            event: Some("ticket.created".into()),
            resource_id: Some("tkt_1".into()),
            request: RequestRecord {
                method: "POST".into(),
                path: "/webhooks/illumichat".into(),
                query: "a=1".into(),
                headers: vec![
                    ("content-type".into(), b"application/json".to_vec()),
                    ("x-raw".into(), vec![0xff, 0x01]),
                ],
                body: Bytes::from_static(body),
            },
            expected: ResponseRecord {
                status: 200,
                headers: Vec::new(),
                body: Bytes::from_static(b"{\"received\":true}"),
            },
        }
    }

    #[test]
    fn a_line_has_a_fixed_field_order_and_reads_back_exactly() {
        let c = case(b"{\"event\":\"ticket.created\"}");
        let line = c.to_line();
        assert_eq!(
            line,
            r#"{"version":1,"id":"0196a3f2c4d11e2a","event":"ticket.created","resource_id":"tkt_1","request":{"method":"POST","path":"/webhooks/illumichat","query":"a=1","headers":[["content-type","application/json"],["x-raw","/wE=","base64"]],"body":"{\"event\":\"ticket.created\"}"},"expected":{"status":200,"body":"{\"received\":true}"}}"#
        );
        assert_eq!(parse(&line).unwrap(), vec![c]);
    }

    #[test]
    fn binary_bodies_round_trip_byte_for_byte() {
        let c = case(&[0x00, 0xff, 0xfe, 0x1b]);
        let line = c.to_line();
        assert!(line.contains(r#""body_base64":"AP/+Gw==""#), "{line}");
        assert_eq!(parse(&line).unwrap()[0].request.body, c.request.body);
    }

    #[test]
    fn bad_lines_are_named_by_number() {
        let good = case(b"{}").to_line();
        let text = format!("{good}\n\n{good}\n{{\"version\":1}}\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.line, 4);
        assert!(err.cause.starts_with("not a suite entry"), "{err}");

        let newer = good.replace("\"version\":1", "\"version\":2");
        let err = parse(&newer).unwrap_err().to_string();
        assert!(err.starts_with("line 1: suite format version 2"), "{err}");
        let zero = good.replace("\"version\":1", "\"version\":0");
        let err = parse(&zero).unwrap_err().to_string();
        assert!(
            err.contains("version 0 is not a suite format version"),
            "{err}"
        );

        let bad_id = good.replace("0196a3f2c4d11e2a", "../x");
        assert!(parse(&bad_id)
            .unwrap_err()
            .cause
            .contains("not a delivery id"));
    }

    #[test]
    fn a_delivery_with_no_answer_is_no_case() {
        let mut d = case(b"{}").into_delivery();
        assert_eq!(Case::from_delivery(&d).unwrap().expected.status, 200);
        d.response = None;
        assert!(Case::from_delivery(&d).is_none());
    }
}
