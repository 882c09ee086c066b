//! The one escaper for text a sender controls on its way to a terminal: the inspector, line
//! output and JSON output all use it, so they cannot drift apart. Every control character (C0,
//! DEL, C1) and every invisible bidi or zero-width mark is made visible (`ESC` → `^[`, NUL →
//! `^@`, U+202E → `\u{202e}`), so a payload can never move the cursor, clear the screen or
//! reorder what the user reads. JSON output spells the same characters as `\uXXXX` escapes:
//! still valid JSON that decodes to the exact string, with nothing a terminal acts on. JUnit
//! reports go through [`xml`], which makes the same characters visible before XML escaping.

use std::borrow::Cow;
use std::io;

use serde::Serialize;

/// Whether `c` must not reach a terminal as itself: controls, bidi embeddings, overrides and
/// isolates, zero-width characters, line and paragraph separators, the BOM, and interlinear
/// annotation marks.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}')
}

fn push_escaped(out: &mut String, c: char) {
    let n = c as u32;
    if n < 0x20 {
        out.push('^');
        out.push(char::from(n as u8 + 0x40));
    } else if n == 0x7f {
        out.push_str("^?");
    } else {
        out.push_str(&format!("\\u{{{n:x}}}"));
    }
}

/// `s` with every unsafe character escaped visibly.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_keeping(s, &[])
}

/// Like [`escape`], but the characters in `keep` (say `\n` and `\t` in a body shown as text)
/// pass through.
pub fn escape_keeping<'a>(s: &'a str, keep: &[char]) -> Cow<'a, str> {
    let escaped = |c: char| is_unsafe(c) && !keep.contains(&c);
    if !s.chars().any(escaped) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if escaped(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Raw bytes as safe text: valid UTF-8 escaped like [`escape`], other bytes as `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&escape(chunk.valid()));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Writes `value` as compact JSON with every unsafe character as a `\uXXXX` escape (serde
/// already escapes C0 controls; this adds DEL, C1, bidi and zero-width characters).
pub fn write_json(out: &mut impl io::Write, value: &impl Serialize) -> io::Result<()> {
    let mut serializer = serde_json::Serializer::with_formatter(out, SafeFormatter);
    value.serialize(&mut serializer).map_err(io::Error::from)
}

/// [`write_json`] into a `String`.
pub fn json_string(value: &impl Serialize) -> String {
    let mut out = Vec::new();
    // Writing to a Vec fails only if `value` cannot be serialized, which no JSON value does.
    let _ = write_json(&mut out, value);
    String::from_utf8(out).unwrap_or_default()
}

/// `s` as XML 1.0 text or attribute content: unsafe characters made visible as [`escape`] does
/// (XML 1.0 cannot carry most controls at all), then `& < > " '` as entities. Newlines and tabs
/// are kept.
pub fn xml(s: &str) -> String {
    let visible = escape_keeping(s, &['\n', '\t']);
    let mut out = String::with_capacity(visible.len() + 8);
    for c in visible.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// serde_json's compact format, with unsafe characters in strings escaped.
struct SafeFormatter;

impl serde_json::ser::Formatter for SafeFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut rest = fragment;
        while let Some((at, c)) = rest.char_indices().find(|(_, c)| is_unsafe(*c)) {
            writer.write_all(&rest.as_bytes()[..at])?;
            // Every unsafe character is in the Basic Multilingual Plane: one escape each.
            write!(writer, "\\u{:04x}", c as u32)?;
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "a\0b\x1b[2Jc\u{202e}d\u{200b}e\u{2066}f\tg\nh\x7fi\u{9b}j";

    #[test]
    fn every_unsafe_character_is_visible() {
        assert_eq!(
            escape(HOSTILE),
            "a^@b^[[2Jc\\u{202e}d\\u{200b}e\\u{2066}f^Ig^Jh^?i\\u{9b}j"
        );
        assert_eq!(
            escape("\u{feff}\u{2028}\u{fffb}"),
            "\\u{feff}\\u{2028}\\u{fffb}"
        );
        assert!(matches!(
            escape("plain ünïcode, emoji 🙂"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_bytes(b"ok\xff\x1b\xe2\x80\xae"),
            "ok\\xff^[\\u{202e}"
        );
    }

    #[test]
    fn text_bodies_may_keep_tabs_and_newlines_only() {
        assert_eq!(
            escape_keeping(HOSTILE, &['\n', '\t']),
            "a^@b^[[2Jc\\u{202e}d\\u{200b}e\\u{2066}f\tg\nh^?i\\u{9b}j"
        );
        assert!(matches!(
            escape_keeping("a\tb\nc", &['\n', '\t']),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn xml_has_entities_and_no_control_characters() {
        assert_eq!(
            xml("<a href=\"x\">&'\u{1b}[0m\n\t\u{202e}</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;^[[0m\n\t\\u{202e}&lt;/a&gt;"
        );
    }

    #[test]
    fn json_stays_valid_and_exact_with_nothing_a_terminal_acts_on() {
        let value = serde_json::json!({ "s": HOSTILE, "k\u{202e}": [HOSTILE] });
        let text = json_string(&value);
        assert!(!text.chars().any(is_unsafe), "{text:?}");
        assert!(
            text.contains(r"c\u202ed\u200be\u2066f\tg\nh\u007fi\u009bj"),
            "{text}"
        );
        assert!(text.contains(r#""a\u0000b\u001b[2J"#), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
        assert_eq!(json_string(&"plain é"), "\"plain é\"");
    }
}
