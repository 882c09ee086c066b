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

/// Whether a header carries a secret that may be stored but never logged or printed in logs.
pub fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(n.as_str(), "authorization" | "cookie" | "set-cookie")
        || n.starts_with("proxy-")
        || n.contains("signature")
        || n.contains("token")
        || n.contains("api-key")
        || n.contains("secret")
}

/// Replaces secret values with `REDACTED` for logs.
pub fn redact(headers: &[Header]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            let value = if is_secret(n) {
                "REDACTED".to_string()
            } else {
                String::from_utf8_lossy(v).into_owned()
            };
            (n.clone(), value)
        })
        .collect()
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

/// Encodes a header list as a compact blob (the capture store's column format):
/// `u16 count, then per header u16 name length, name, u32 value length, value`, big-endian.
pub fn encode_blob(headers: &[Header]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 6)
            .sum::<usize>()
            + 2,
    );
    crate::protocol::put_headers(&mut out, headers);
    out
}

/// Decodes a blob written by [`encode_blob`]; `None` when it is damaged.
pub fn decode_blob(blob: &[u8]) -> Option<Vec<Header>> {
    let mut reader = crate::protocol::Reader::new(blob);
    let headers = reader.headers().ok()?;
    reader.finish().ok()?;
    Some(headers)
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
    fn blob_round_trip_keeps_non_utf8() {
        let headers = vec![
            ("x-bin".to_string(), vec![0xff, 0x00, 0xfe]),
            h("a", "b"),
            h("a", "c"),
        ];
        assert_eq!(decode_blob(&encode_blob(&headers)).unwrap(), headers);
        assert!(decode_blob(&[0, 5, 1]).is_none());
    }
}
