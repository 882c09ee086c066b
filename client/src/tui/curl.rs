//! A delivery's request as a curl command line a POSIX shell runs unchanged, for `c`.

use illumitunnel::Delivery;

/// Headers curl sets itself from the command line; copying them would only conflict.
const SKIP: &[&str] = &["host", "content-length"];

/// `curl` resending `d` to where it was forwarded (or to `forward_to` plus its path).
pub fn command(d: &Delivery, forward_to: &str) -> String {
    let url = if d.target.is_empty() {
        let mut url = format!("{}{}", forward_to.trim_end_matches('/'), d.request.path);
        if !d.request.query.is_empty() {
            url.push('?');
            url.push_str(&d.request.query);
        }
        url
    } else {
        d.target.clone()
    };
    let body = &d.request.body;
    let text_body = std::str::from_utf8(body)
        .ok()
        .filter(|t| !t.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
    let mut out = String::new();
    if let (false, None) = (body.is_empty(), text_body) {
        // Bytes a shell string cannot hold go through printf's octal escapes.
        let octal: String = body.iter().map(|b| format!("\\0{b:03o}")).collect();
        out.push_str(&format!("printf '%b' '{octal}' | "));
    }
    out.push_str(&format!(
        "curl -X {} {}",
        quote(&d.request.method),
        quote(&url)
    ));
    for (name, value) in &d.request.headers {
        if SKIP.iter().any(|s| name.eq_ignore_ascii_case(s)) {
            continue;
        }
        let line = format!("{name}: {}", String::from_utf8_lossy(value));
        out.push_str(&format!(" -H {}", quote(&line)));
    }
    match (body.is_empty(), text_body) {
        (true, _) => {}
        (false, Some(text)) => out.push_str(&format!(" --data-binary {}", quote(text))),
        (false, None) => out.push_str(" --data-binary @-"),
    }
    out
}

/// Single-quotes `s` for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use illumitunnel::delivery::{RequestRecord, Source};
    use illumitunnel::DeliveryId;

    fn delivery(body: &'static [u8]) -> Delivery {
        let mut d = Delivery::new(
            DeliveryId::parse("abc").unwrap(),
            0,
            Source::Tunnel,
            RequestRecord {
                method: "POST".into(),
                path: "/hooks".into(),
                query: "a=1".into(),
                headers: vec![
                    ("host".into(), b"relay".to_vec()),
                    ("content-type".into(), b"application/json".to_vec()),
                    ("x-note".into(), b"it's".to_vec()),
                ],
                body: Bytes::from_static(body),
            },
        );
        d.target = String::new();
        d
    }

    #[test]
    fn text_body_is_quoted() {
        let cmd = command(&delivery(br#"{"a":"b'c"}"#), "http://localhost:3000/");
        assert_eq!(
            cmd,
            r#"curl -X 'POST' 'http://localhost:3000/hooks?a=1' -H 'content-type: application/json' -H 'x-note: it'\''s' --data-binary '{"a":"b'\''c"}'"#
        );
    }

    #[test]
    fn binary_body_goes_through_printf() {
        let mut d = delivery(&[0xff, 0x1b]);
        d.target = "http://localhost:3000/x".into();
        let cmd = command(&d, "unused");
        assert!(
            cmd.starts_with(r"printf '%b' '\0377\0033' | curl -X 'POST' 'http://localhost:3000/x'"),
            "{cmd}"
        );
        assert!(cmd.ends_with("--data-binary @-"), "{cmd}");
    }
}
