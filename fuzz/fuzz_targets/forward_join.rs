//! The client's origin guard: how a relay-given path and query are joined to `--forward-to`.
//! The joiner lives in the client binary crate (`client/src/forward.rs`, a private module of
//! `main.rs`), so this target compiles that file as it is; nothing is copied.
//!
//! Invariants, for any `--forward-to` that parses and any path and query the relay sends:
//! the URI has the `--forward-to` scheme and authority; its path is the `--forward-to` path or
//! lies below it, with no `.`/`..` segment (plain or `%2e`-encoded) left to climb out; its
//! query starts with the `--forward-to` query; and its text form re-parses to the same origin,
//! path and query.
#![no_main]
#![allow(dead_code, unused_imports)]

use libfuzzer_sys::fuzz_target;

#[path = "../../client/src/forward.rs"]
mod forward;

/// One case, read from the fuzzer's bytes so seeds can be written by hand:
/// `flags, port_hi, port_lo, forward_tail NUL path NUL query`. Flags: bit 0 https, bits 1-2
/// the host, bit 3 an explicit port.
#[derive(Debug)]
struct Input<'a> {
    scheme: &'static str,
    host: &'static str,
    port: Option<u16>,
    /// Path and query of `--forward-to`, appended after the authority.
    forward_tail: &'a str,
    /// What the relay sends.
    path: &'a str,
    query: &'a str,
}

impl<'a> Input<'a> {
    fn read(data: &'a [u8]) -> Option<Self> {
        let (&[flags, hi, lo], rest) = data.split_first_chunk::<3>()?;
        let text = std::str::from_utf8(rest).ok()?;
        let mut parts = text.splitn(3, '\0');
        Some(Input {
            scheme: if flags & 1 == 0 { "http" } else { "https" },
            host: ["127.0.0.1", "localhost", "[::1]", "app.internal"][usize::from(flags >> 1 & 3)],
            port: (flags & 8 != 0).then_some(u16::from_be_bytes([hi, lo])),
            forward_tail: parts.next().unwrap_or_default(),
            path: parts.next().unwrap_or_default(),
            query: parts.next().unwrap_or_default(),
        })
    }
}

fn percent_decoded(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn is_dot_segment(seg: &str) -> bool {
    let lower = seg.to_ascii_lowercase().replace("%2e", ".");
    lower == "." || lower == ".."
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::read(data) else {
        return;
    };
    let port = input.port.map(|p| format!(":{p}")).unwrap_or_default();
    let forward_to = format!(
        "{}://{}{port}{}",
        input.scheme, input.host, input.forward_tail
    );
    let Ok(target) = forward::Target::parse(&forward_to) else {
        return;
    };
    // What the target kept, read back from its text form.
    let shown: http::Uri = target
        .to_string()
        .parse()
        .expect("a target's text form parses");
    let base_path = shown.path().to_string();
    let base_query = shown.query().unwrap_or_default().to_string();

    let uri = target.uri_for(input.path, input.query);
    assert_eq!(uri.scheme(), shown.scheme(), "{input:?} -> {uri}");
    assert_eq!(uri.authority(), shown.authority(), "{input:?} -> {uri}");
    let path = uri.path();
    let below = if base_path == "/" {
        Some(path.strip_prefix('/').unwrap_or(path))
    } else if path == base_path {
        Some("")
    } else {
        path.strip_prefix(base_path.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
    };
    let below = below.unwrap_or_else(|| panic!("{input:?}: {path:?} is not under {base_path:?}"));
    assert!(
        !below.split('/').any(is_dot_segment),
        "{input:?}: {path:?} keeps a dot segment below {base_path:?}"
    );
    // The joiner percent-encodes the whole query, the `--forward-to` part included (`{` →
    // `%7B`), which a server decodes to the same text: compare decoded forms.
    let query = uri.query().unwrap_or_default();
    assert!(
        percent_decoded(query).starts_with(&percent_decoded(&base_query)),
        "{input:?}: query {query:?} lost the --forward-to query {base_query:?}"
    );
    let reparsed: http::Uri = uri.to_string().parse().expect("the joined URI re-parses");
    assert_eq!(reparsed.authority(), uri.authority());
    assert_eq!(reparsed.path(), uri.path());
    assert_eq!(reparsed.query(), uri.query());
});
