//! What API calls are given, checked: the query string (percent-decoded), the list's filters, and
//! a replay's method, path and headers. Each refusal is the sentence a 400 carries.

use std::str::FromStr as _;

use illumitunnel::event::EventType;
use illumitunnel::headers::is_hop_by_hop;
use illumitunnel::store::{Filter, StatusFilter};
use serde_json::Value;

use super::super::reads::parse_cursor;

/// A query string's parameters, decoded; the first of a repeated name counts.
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses `a=1&b=x%20y` (`+` is a space).
    pub fn parse(query: Option<&str>) -> Query {
        Query(
            query
                .unwrap_or_default()
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (
                        decode(&name.replace('+', " ")),
                        decode(&value.replace('+', " ")),
                    )
                })
                .collect(),
        )
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `text` with `%XX` escapes decoded (invalid ones kept as they are; invalid UTF-8 replaced).
pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The list's and the stream's filter: `event`, `status`, `since`, `q` and `cursor`.
pub fn filter_from(query: &Query) -> Result<Filter, String> {
    let given = |name: &str| query.get(name).filter(|v| !v.is_empty());
    let event = match given("event") {
        Some(event) if EventType::parse(event).is_none() => {
            return Err(format!(
                "unknown event type {event:?}; use one of {}",
                EventType::list()
            ))
        }
        event => event.map(str::to_string),
    };
    let status = match given("status") {
        Some(text) => Some(StatusFilter::parse(text).ok_or_else(|| {
            format!("invalid status {text:?}; pass 2xx, 3xx, 4xx, 5xx, err or a status such as 404")
        })?),
        None => None,
    };
    let since_ms = match given("since") {
        Some(text) => crate::commands::since_ms(Some(text)).map_err(|_| {
            format!(
                "invalid since {text:?}; write a number and a unit such as 30s, 15m, 1h30m or 7d"
            )
        })?,
        None => None,
    };
    let before_seq = match given("cursor") {
        Some(text) => Some(parse_cursor(text).ok_or_else(|| {
            "invalid cursor; pass the next_cursor of an earlier page as it was, or no cursor for the newest page".to_string()
        })?),
        None => None,
    };
    Ok(Filter {
        event,
        status,
        since_ms,
        before_seq,
        text: given("q").map(str::to_string),
        ..Filter::default()
    })
}

/// A replay's method: an HTTP token such as `PUT`.
pub fn method(text: String) -> Result<String, String> {
    match http::Method::from_bytes(text.as_bytes()) {
        Ok(_) if !text.is_empty() => Ok(text),
        _ => Err(format!(
            "invalid method {text:?}; pass an HTTP method such as POST or PUT"
        )),
    }
}

/// A replay's path: starts with `/`, optionally `?query`, nothing a request line cannot carry.
pub fn path(text: String) -> Result<String, String> {
    let valid = text.starts_with('/') && http::uri::PathAndQuery::from_str(&text).is_ok();
    if valid {
        Ok(text)
    } else {
        Err(format!(
            "invalid path {text:?}; pass a path starting with / such as /webhooks?x=1"
        ))
    }
}

/// One header edit: a string value sets it, `null` removes it; headers the replay sets itself
/// (Host, Content-Length, hop-by-hop ones) cannot be edited.
pub fn header(name: String, value: Value) -> Result<(String, Option<Vec<u8>>), String> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!(
            "invalid header name {name:?}; use letters, digits and - such as X-Request-Id"
        ));
    }
    if is_hop_by_hop(&name)
        || name.eq_ignore_ascii_case("host")
        || name.eq_ignore_ascii_case("content-length")
    {
        return Err(format!(
            "header {name} is set by the replay itself; leave it out of headers"
        ));
    }
    match value {
        Value::Null => Ok((name, None)),
        Value::String(text) if http::HeaderValue::from_str(&text).is_ok() => {
            Ok((name, Some(text.into_bytes())))
        }
        _ => Err(format!(
            "invalid value for header {name}; pass a string of visible characters, or null to remove it"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_and_filters_refuse_bad_input() {
        let q = Query::parse(Some("q=a%20b+c&status=4xx&event=&limit=5"));
        assert_eq!(q.get("q"), Some("a b c"));
        let filter = filter_from(&q).unwrap();
        assert_eq!(filter.status, Some(StatusFilter::Class(4)));
        assert_eq!(filter.event, None);
        assert_eq!(filter.text.as_deref(), Some("a b c"));
        for bad in ["cursor=zz", "status=7xx", "since=90", "event=nope"] {
            assert!(filter_from(&Query::parse(Some(bad))).is_err(), "{bad}");
        }
        let cursor = super::super::super::reads::cursor_after(42);
        let filter = filter_from(&Query::parse(Some(&format!("cursor={cursor}")))).unwrap();
        assert_eq!(filter.before_seq, Some(42));
        assert_eq!(decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn replay_edits_are_checked() {
        assert!(method("PUT".into()).is_ok());
        assert!(method("P T".into()).is_err());
        assert!(path("/a?b=1".into()).is_ok());
        assert!(path("a".into()).is_err());
        assert!(path("/a b".into()).is_err());
        assert!(header("X-A".into(), Value::String("1".into())).is_ok());
        assert_eq!(header("x-a".into(), Value::Null), Ok(("x-a".into(), None)));
        assert!(header("Host".into(), Value::String("x".into())).is_err());
        assert!(header("x a".into(), Value::String("x".into())).is_err());
        assert!(header("x-a".into(), Value::String("a\nb".into())).is_err());
        assert!(header("x-a".into(), Value::Bool(true)).is_err());
    }
}
