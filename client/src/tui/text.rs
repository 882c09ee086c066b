//! Attacker-controlled bytes turned into lines that are safe to draw, every string through the
//! shared escaper (`illumitunnel::escape`, the same one line and JSON output use). JSON is
//! re-indented in its own key order and coloured; other text is shown line by line; anything
//! that is not UTF-8 is a hex dump.

pub use illumitunnel::escape::{escape, escape_bytes};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};

/// Bodies longer than this are shown cut, so a 10 MiB payload costs a frame no more than this.
pub const DISPLAY_LIMIT: usize = 256 * 1024;

const KEY: Style = Style::new().fg(Color::Cyan);
const STRING: Style = Style::new().fg(Color::Green);
const NUMBER: Style = Style::new().fg(Color::Magenta);
const LITERAL: Style = Style::new().fg(Color::Yellow);
const DIM: Style = Style::new().fg(Color::DarkGray);

/// A body as lines: JSON re-indented and coloured, text line by line, binary as a hex dump.
pub fn body_lines(body: &[u8]) -> Vec<Line<'static>> {
    if body.is_empty() {
        return vec![Line::styled("(empty body)", DIM)];
    }
    let shown = &body[..body.len().min(DISPLAY_LIMIT)];
    let mut lines = if is_json(shown) {
        json_lines(shown)
    } else {
        match std::str::from_utf8(shown) {
            Ok(text) => text_lines(text),
            // A cut in the middle of a character is still text.
            Err(e) if shown.len() < body.len() && e.error_len().is_none() => {
                text_lines(&String::from_utf8_lossy(&shown[..e.valid_up_to()]))
            }
            Err(_) => hex_lines(shown),
        }
    };
    if shown.len() < body.len() {
        lines.push(Line::styled(
            format!(
                "… {} more bytes not shown; `illumitunnel show ID` prints all of it",
                body.len() - shown.len()
            ),
            DIM,
        ));
    }
    lines
}

/// `text` cut to `width` terminal columns, ending in `…` when it was cut.
pub fn ellipsize(text: &str, width: usize) -> String {
    if Span::raw(text).width() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out = prefix(text, width - 1);
    out.push('…');
    out
}

/// The longest start of `text` that fits in `width` columns.
pub fn prefix(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = Span::raw(c.to_string()).width();
        if used + w > width {
            break;
        }
        out.push(c);
        used += w;
    }
    out
}

/// Whether `body` is one complete JSON value.
pub fn is_json(body: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// Text split into lines (a CR before LF dropped), each escaped.
pub fn text_lines(text: &str) -> Vec<Line<'static>> {
    text.split('\n')
        .map(|l| Line::raw(escape(l.strip_suffix('\r').unwrap_or(l)).into_owned()))
        .collect()
}

/// A classic hex dump: offset, 16 bytes in hex, the printable ASCII beside them.
pub fn hex_lines(bytes: &[u8]) -> Vec<Line<'static>> {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(i, chunk)| {
            let mut hex = String::with_capacity(49);
            for (j, b) in chunk.iter().enumerate() {
                if j == 8 {
                    hex.push(' ');
                }
                hex.push_str(&format!("{b:02x} "));
            }
            let ascii: String = chunk
                .iter()
                .map(|&b| {
                    if b.is_ascii_graphic() || b == b' ' {
                        char::from(b)
                    } else {
                        '.'
                    }
                })
                .collect();
            Line::from(vec![
                Span::styled(format!("{:08x}  ", i * 16), DIM),
                Span::raw(format!("{hex:<49} ")),
                Span::styled(format!("|{ascii}|"), DIM),
            ])
        })
        .collect()
}

/// Re-indents valid JSON two spaces a level, keeping its key order and number spelling.
pub fn json_lines(json: &[u8]) -> Vec<Line<'static>> {
    let text = String::from_utf8_lossy(json);
    JsonPrinter::default().print(&text)
}

#[derive(Default)]
struct JsonPrinter {
    lines: Vec<Line<'static>>,
    current: Vec<Span<'static>>,
    depth: usize,
}

impl JsonPrinter {
    fn print(mut self, text: &str) -> Vec<Line<'static>> {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b' ' | b'\t' | b'\n' | b'\r' => i += 1,
                open @ (b'{' | b'[') => {
                    let close = if open == b'{' { b'}' } else { b']' };
                    let next = skip_ws(bytes, i + 1);
                    if bytes.get(next) == Some(&close) {
                        self.push(if open == b'{' { "{}" } else { "[]" }, Style::new());
                        i = next + 1;
                    } else {
                        self.push(if open == b'{' { "{" } else { "[" }, Style::new());
                        self.depth += 1;
                        self.newline();
                        i += 1;
                    }
                }
                close @ (b'}' | b']') => {
                    self.depth = self.depth.saturating_sub(1);
                    self.newline();
                    self.push(if close == b'}' { "}" } else { "]" }, Style::new());
                    i += 1;
                }
                b',' => {
                    self.push(",", Style::new());
                    self.newline();
                    i += 1;
                }
                b':' => {
                    self.push(": ", Style::new());
                    i += 1;
                }
                b'"' => {
                    let end = string_end(bytes, i);
                    let is_key = bytes.get(skip_ws(bytes, end)) == Some(&b':');
                    let style = if is_key { KEY } else { STRING };
                    self.push(&text[i..end], style);
                    i = end;
                }
                _ => {
                    let end = bytes[i..]
                        .iter()
                        .position(|b| b",}] \t\r\n".contains(b))
                        .map_or(bytes.len(), |p| i + p);
                    let word = &text[i..end];
                    let style = if matches!(word, "true" | "false" | "null") {
                        LITERAL
                    } else {
                        NUMBER
                    };
                    self.push(word, style);
                    i = end.max(i + 1);
                }
            }
        }
        if !self.current.is_empty() {
            self.lines
                .push(Line::from(std::mem::take(&mut self.current)));
        }
        self.lines
    }

    fn push(&mut self, s: &str, style: Style) {
        if self.current.is_empty() && self.depth > 0 {
            self.current.push(Span::raw("  ".repeat(self.depth)));
        }
        self.current
            .push(Span::styled(escape(s).into_owned(), style));
    }

    fn newline(&mut self) {
        self.lines
            .push(Line::from(std::mem::take(&mut self.current)));
    }
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Index just past the string literal starting at `start` (a `"`).
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(lines: &[Line<'_>]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn json_keeps_key_order_and_indents() {
        let lines = body_lines(br#"{"z":1,"a":[true,null,"x\u001b"],"e":{},"n":-1.5e3}"#);
        assert_eq!(
            plain(&lines),
            [
                "{",
                "  \"z\": 1,",
                "  \"a\": [",
                "    true,",
                "    null,",
                "    \"x\\u001b\"",
                "  ],",
                "  \"e\": {},",
                "  \"n\": -1.5e3",
                "}",
            ]
        );
        assert_eq!(lines[1].spans[1].style, KEY);
    }

    #[test]
    fn a_cut_text_ends_in_an_ellipsis_within_its_width() {
        assert_eq!(
            ellipsize("http://localhost:3000", 30),
            "http://localhost:3000"
        );
        assert_eq!(ellipsize("http://localhost:3000", 14), "http://localh…");
        assert_eq!(ellipsize("ab", 0), "");
        assert_eq!(Span::raw(ellipsize("→→→→", 3)).width(), 3);
    }

    #[test]
    fn text_binary_and_cut_bodies() {
        assert_eq!(
            plain(&body_lines(b"line one\r\nclear\x1b[2J\0")),
            ["line one", "clear^[[2J^@"]
        );
        let hex = plain(&body_lines(&[0xff, 0x00, b'A']));
        assert_eq!(hex.len(), 1);
        assert!(hex[0].starts_with("00000000  ff 00 41"), "{}", hex[0]);
        assert!(hex[0].ends_with("|..A|"), "{}", hex[0]);
        let big = vec![b'x'; DISPLAY_LIMIT + 10];
        let lines = plain(&body_lines(&big));
        assert!(lines.last().unwrap().contains("10 more bytes"));
    }
}
