//! Ordered raw headers as they travel and are stored: names as sent (lowercased by HTTP/2 and
//! hyper), values as raw bytes so non-UTF-8 values survive byte for byte. Also the two header
//! policies every hop shares: which headers are hop-by-hop, and which must never be logged.

/// One header line: name and raw value bytes.
pub type Header = (String, Vec<u8>);

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Whether `name` is a hop-by-hop header by itself (without looking at `Connection`).
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || starts_with_ignore_case(name, "proxy-")
}

/// Drops hop-by-hop headers, including every header named in a `Connection` header.
pub fn strip_hop_by_hop(headers: &mut Vec<Header>) {
    let named: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    headers.retain(|(n, _)| !is_hop_by_hop(n) && !named.iter().any(|c| n.eq_ignore_ascii_case(c)));
}

/// Whether a header carries a secret: stored, but never logged, and left out of exports unless
/// asked for. `Authorization`, `Cookie`, `Set-Cookie`, every `Proxy-*`, and any name containing
/// `token`, `secret`, `signature` or `key` (case-insensitive), so `X-Api-Key` and
/// `X-IllumiChat-Signature` are secrets without being listed one by one.
pub fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(n.as_str(), "authorization" | "cookie" | "set-cookie")
        || n.starts_with("proxy-")
        || ["token", "secret", "signature", "key"]
            .iter()
            .any(|word| n.contains(word))
}

/// What a redacted value reads as.
pub const REDACTED: &str = "REDACTED";

/// Replaces secret values with `REDACTED` for logs.
pub fn redact(headers: &[Header]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            let value = if is_secret(n) {
                REDACTED.to_string()
            } else {
                String::from_utf8_lossy(v).into_owned()
            };
            (n.clone(), value)
        })
        .collect()
}

/// Replaces the value of every secret header with `REDACTED`, keeping names and order; returns
/// how many it replaced.
pub fn redact_values(headers: &mut [Header]) -> usize {
    let mut count = 0;
    for (name, value) in headers.iter_mut() {
        if is_secret(name) {
            *value = REDACTED.as_bytes().to_vec();
            count += 1;
        }
    }
    count
}

/// `line` with every secret that looks like one scrubbed: the value after a secret header or
/// field name and `:` or `=` (`authorization: Bearer x`, `"x-api-key": "x"`, `token=x`), and the
/// credential after `Bearer` or `Basic`. For log lines, whatever wrote them: our own fields,
/// `Debug` output of header maps, dependencies' request dumps. It errs towards hiding too much:
/// an unquoted value runs to the end of the line or the next `,` `;` `&` `"` `\` or bracket.
pub fn redact_text(line: &str) -> std::borrow::Cow<'_, str> {
    let b = line.as_bytes();
    let mut out = String::new();
    let (mut copied, mut i) = (0, 0);
    while i < b.len() {
        if !starts_word(b, i) {
            i += 1;
            continue;
        }
        let end = i + b[i..].iter().take_while(|c| is_word_byte(**c)).count();
        let word = &line[i..end];
        let value = if is_secret(word) {
            secret_value(b, end)
        } else if word.eq_ignore_ascii_case("bearer") || word.eq_ignore_ascii_case("basic") {
            credential(b, end)
        } else {
            None
        };
        match value {
            Some((start, stop)) => {
                out.push_str(&line[copied..start]);
                out.push_str(REDACTED);
                copied = stop;
                i = stop;
            }
            None => i = end,
        }
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(line);
    }
    out.push_str(&line[copied..]);
    std::borrow::Cow::Owned(out)
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// Whether a word starts at `b[i]`; the letter of an escape such as `\n` in `Debug` output
/// belongs to the escape, so `\nauthorization` holds the word `authorization`.
fn starts_word(b: &[u8], i: usize) -> bool {
    let is_escape = |at: usize| at > 0 && b[at - 1] == b'\\' && matches!(b[at], b'n' | b'r' | b't');
    is_word_byte(b[i]) && !is_escape(i) && (i == 0 || !is_word_byte(b[i - 1]) || is_escape(i - 1))
}

/// The span of the value after a secret name at `b[..at]`: `:` or `=` (or `,` after a quoted
/// name, as in a `Debug` tuple), spaces, then a quoted string, a bracketed list (bytes as
/// numbers) or a run up to a terminator. `None` when no separator follows.
fn secret_value(b: &[u8], mut at: usize) -> Option<(usize, usize)> {
    let quoted_name = matches!(b.get(at), Some(b'"' | b'\''));
    if quoted_name {
        at += 1;
    }
    at += b[at..].iter().take_while(|c| **c == b' ').count();
    match b.get(at) {
        Some(b':' | b'=') => {}
        Some(b',') if quoted_name => {}
        _ => return None,
    }
    at += 1;
    at += b[at..].iter().take_while(|c| **c == b' ').count();
    let span = match b.get(at) {
        Some(&quote @ (b'"' | b'\'')) => {
            let start = at + 1;
            let mut stop = start;
            while stop < b.len() && b[stop] != quote {
                stop += if b[stop] == b'\\' { 2 } else { 1 };
            }
            (start, stop.min(b.len()))
        }
        Some(b'[') => (at + 1, at + 1 + run(b, at + 1, b"]")),
        _ => (at, at + run(b, at, b"\r\n\"'\\,;&)]}")),
    };
    (span.1 > span.0).then_some(span)
}

/// The span of the credential after `Bearer` or `Basic` at `b[..at]`: spaces, then a run of
/// non-space bytes. `None` when no space follows (the word alone, as in prose).
fn credential(b: &[u8], at: usize) -> Option<(usize, usize)> {
    let spaces = b[at..].iter().take_while(|c| **c == b' ').count();
    let start = at + spaces;
    let len = run(b, start, b" \r\n\"'\\,;&)]}");
    (spaces > 0 && len > 0).then_some((start, start + len))
}

/// How many bytes from `b[at..]` precede the first of `stops`.
fn run(b: &[u8], at: usize, stops: &[u8]) -> usize {
    b[at..].iter().take_while(|c| !stops.contains(c)).count()
}

/// First value of `name` (case-insensitive).
pub fn get<'a>(headers: &'a [Header], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Encodes a header list as a compact blob (the column format of the capture store and the
/// relay's queue): `u16 count, then per header u16 name length, name, u32 value length, value`,
/// big-endian. It is on disk, so it has its own codec here and does not follow the wire
/// protocol's changes.
pub fn encode_blob(headers: &[Header]) -> Vec<u8> {
    let count = headers.len().min(u16::MAX as usize);
    let headers = &headers[..count];
    let mut out = Vec::with_capacity(
        headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 6)
            .sum::<usize>()
            + 2,
    );
    out.extend_from_slice(&(count as u16).to_be_bytes());
    for (name, value) in headers {
        // Names are bounded by the head limit long before u16::MAX; truncate rather than corrupt.
        let len = name.len().min(u16::MAX as usize);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&name.as_bytes()[..len]);
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// Decodes a blob written by [`encode_blob`]; `None` when it is damaged (cut short, a name
/// that is not UTF-8, or bytes left over).
pub fn decode_blob(blob: &[u8]) -> Option<Vec<Header>> {
    let mut rest = blob;
    let count = u16::from_be_bytes(take(&mut rest)?) as usize;
    // Each header takes at least 6 bytes: refuse counts the blob cannot hold before allocating.
    if count.saturating_mul(6) > rest.len() {
        return None;
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let len = u16::from_be_bytes(take(&mut rest)?) as usize;
        let name = std::str::from_utf8(take_slice(&mut rest, len)?).ok()?;
        let len = u32::from_be_bytes(take(&mut rest)?) as usize;
        headers.push((name.to_owned(), take_slice(&mut rest, len)?.to_vec()));
    }
    rest.is_empty().then_some(headers)
}

/// The next `n` bytes of `rest`, which moves past them.
fn take_slice<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

/// The next `N` bytes of `rest` as an array, for a big-endian length.
fn take<const N: usize>(rest: &mut &[u8]) -> Option<[u8; N]> {
    take_slice(rest, N)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: &str, v: &str) -> Header {
        (n.to_string(), v.as_bytes().to_vec())
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut headers = vec![
            h("Connection", "keep-alive, X-Drop-Me"),
            h("x-drop-me", "1"),
            h("Content-Type", "application/json"),
            h("Transfer-Encoding", "chunked"),
            h("Proxy-Authorization", "Basic x"),
            h("upgrade", "websocket"),
            h("X-Keep", "a"),
            h("x-keep", "b"),
        ];
        strip_hop_by_hop(&mut headers);
        assert_eq!(
            headers,
            vec![
                h("Content-Type", "application/json"),
                h("X-Keep", "a"),
                h("x-keep", "b")
            ]
        );
    }

    #[test]
    fn redacts_secrets_only() {
        let out = redact(&[
            h("Authorization", "Bearer s3cret"),
            h("X-IllumiChat-Signature", "abc"),
            h("accept", "*/*"),
        ]);
        assert_eq!(out[0].1, "REDACTED");
        assert_eq!(out[1].1, "REDACTED");
        assert_eq!(out[2].1, "*/*");
    }

    #[test]
    fn secret_names_follow_the_spec() {
        for name in [
            "Authorization",
            "cookie",
            "Set-Cookie",
            "Proxy-Authorization",
            "X-Api-Key",
            "x-access-TOKEN",
            "X-Webhook-Secret",
            "X-IllumiChat-Signature",
            "Sec-WebSocket-Key",
        ] {
            assert!(is_secret(name), "{name}");
        }
        for name in [
            "content-type",
            "accept",
            "keep-alive",
            "x-request-id",
            "host",
        ] {
            assert!(!is_secret(name), "{name}");
        }
        let mut headers = vec![h("cookie", "a=b"), h("accept", "*/*")];
        assert_eq!(redact_values(&mut headers), 1);
        assert_eq!(headers, vec![h("cookie", "REDACTED"), h("accept", "*/*")]);
    }

    #[test]
    fn redact_text_scrubs_every_shape_a_secret_is_logged_in() {
        for (line, want) in [
            (
                r#"Request: "GET /ws HTTP/1.1\r\nHost: x\r\nauthorization: Bearer tok-1\r\n\r\n""#,
                r#"Request: "GET /ws HTTP/1.1\r\nHost: x\r\nauthorization: REDACTED\r\n\r\n""#,
            ),
            (
                r#"headers: {"content-type": "a/b", "x-api-key": "k\"ey", "cookie": "s=1"}"#,
                r#"headers: {"content-type": "a/b", "x-api-key": "REDACTED", "cookie": "REDACTED"}"#,
            ),
            ("connect token=abc123 tunnel=x", "connect token=REDACTED"),
            (
                "Proxy-Authorization: Basic dXNlcg==",
                "Proxy-Authorization: REDACTED",
            ),
            ("sent Bearer abc.def to it", "sent Bearer REDACTED to it"),
            (
                "X-IllumiChat-Signature:sha256=ff; next",
                "X-IllumiChat-Signature:REDACTED; next",
            ),
        ] {
            assert_eq!(redact_text(line), want, "{line}");
        }
        for plain in [
            "could not keep the tunnel's claim key; another machine may take the name",
            "Basic",
            "token",
            "relay serving local=127.0.0.1:1",
        ] {
            assert!(
                matches!(redact_text(plain), std::borrow::Cow::Borrowed(_)),
                "{plain}"
            );
        }
    }

    #[test]
    fn blob_round_trip_keeps_non_utf8() {
        let headers = vec![
            ("x-bin".to_string(), vec![0xff, 0x00, 0xfe]),
            h("a", "b"),
            h("a", "c"),
        ];
        assert_eq!(decode_blob(&encode_blob(&headers)).unwrap(), headers);
        assert!(decode_blob(&[0, 5, 1]).is_none());
        // The on-disk layout, byte for byte: count, name length, name, value length, value.
        let blob = encode_blob(&[h("ab", "xyz")]);
        assert_eq!(blob, [0, 1, 0, 2, b'a', b'b', 0, 0, 0, 3, b'x', b'y', b'z']);
        assert!(decode_blob(&blob[..blob.len() - 1]).is_none(), "cut short");
        assert!(
            decode_blob(&[blob.as_slice(), &[0]].concat()).is_none(),
            "bytes left over"
        );
        assert!(
            decode_blob(&[0, 1, 0, 1, 0xff, 0, 0, 0, 0]).is_none(),
            "a name that is not UTF-8"
        );
    }
}
