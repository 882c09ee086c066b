//! Log setup both binaries share (`illumitunnel listen` embeds this crate): so that no level,
//! `trace` included, prints a token, an `Authorization` header or a sender's secret header.
//! Two guards, because neither is enough alone:
//! - dependency targets that dump raw wire data are capped below the level that dumps it
//!   ([`WIRE_DUMP_CAPS`]): a hex dump of a frame cannot be scrubbed;
//! - every formatted line is scrubbed by `headers::redact_text` ([`Scrubbed`]), whatever wrote
//!   it: our own fields, `Debug` output of headers, the `log` records dependencies emit.

use std::borrow::Cow;
use std::io::{self, Write};

use illumitunnel::headers::redact_text;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

/// Dependency targets that print raw wire data, with the most verbose level each may log at,
/// whatever `RUST_LOG` or `ILLUMITUNNEL_LOG` asks for:
/// - `tungstenite` at `trace` prints the client's upgrade request (`authorization: Bearer …`),
///   and every frame in hex and as text: delivery headers and bodies on both sides.
/// - `hyper` at `trace` prints parsed request heads; its `tracing` feature is off in this build,
///   and the cap keeps it that way for logs if another crate turns the feature on.
pub const WIRE_DUMP_CAPS: &[(&str, LevelFilter)] = &[
    ("tungstenite", LevelFilter::DEBUG),
    ("hyper", LevelFilter::DEBUG),
];

/// How log lines look where they go.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Colours.
    pub ansi: bool,
    /// The target (module path) before each message.
    pub target: bool,
}

impl Style {
    /// For standard error: colours when it is a terminal and `NO_COLOR` is not set (a journal
    /// or a redirected log gets plain text), targets shown.
    pub fn terminal() -> Style {
        use std::io::IsTerminal as _;
        Style {
            ansi: std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            target: true,
        }
    }

    /// For a file: no colours, targets shown.
    pub fn file() -> Style {
        Style {
            ansi: false,
            target: true,
        }
    }
}

/// The filter in environment variable `var`, else `default` (e.g. `info`).
pub fn env_filter(var: &str, default: &str) -> EnvFilter {
    EnvFilter::try_from_env(var).unwrap_or_else(|_| EnvFilter::new(default))
}

/// Installs the process's subscriber (and the bridge for `log` records): `filter`, capped by
/// [`WIRE_DUMP_CAPS`], lines scrubbed and written to `writer`. False when one was already set.
pub fn init<W>(filter: EnvFilter, writer: W, style: Style) -> bool
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    subscriber(filter, writer, style).try_init().is_ok()
}

fn subscriber<W>(filter: EnvFilter, writer: W, style: Style) -> impl Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let caps = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(WIRE_DUMP_CAPS.iter().copied());
    tracing_subscriber::registry().with(filter).with(caps).with(
        tracing_subscriber::fmt::layer()
            .with_writer(Scrubbed(writer))
            .with_ansi(style.ansi)
            .with_target(style.target),
    )
}

/// A [`MakeWriter`] whose writers pass each formatted event through [`scrub`].
#[derive(Debug)]
pub struct Scrubbed<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Scrubbed<M> {
    type Writer = ScrubbedWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedWriter(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        ScrubbedWriter(self.0.make_writer_for(meta))
    }
}

/// One event's writer from [`Scrubbed`]. The fmt layer hands it a whole event in one
/// `write_all`, so a secret is never split across two writes.
#[derive(Debug)]
pub struct ScrubbedWriter<W>(W);

impl<W: Write> Write for ScrubbedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// `text` with secrets redacted (`headers::redact_text`). Colour codes between a field name and
/// its value would hide the pair from the redaction, so it reads the text without them; a line
/// that needed redacting loses its colours, every other line keeps them.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let plain = strip_colours(text);
    match redact_text(&plain) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        Cow::Owned(redacted) => Cow::Owned(redacted),
    }
}

/// `text` without SGR colour sequences (`ESC [ digits/semicolons m`).
fn strip_colours(text: &str) -> Cow<'_, str> {
    if !text.contains('\x1b') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\x1b[") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let params = after
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b';')
            .count();
        if after.as_bytes().get(params) == Some(&b'm') {
            rest = &after[params + 1..];
        } else {
            out.push_str("\x1b[");
            rest = after;
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    fn logged(style: Style, emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let subscriber = subscriber(EnvFilter::new("trace"), buffer.clone(), style);
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn trace_logs_keep_no_secret() {
        for style in [
            Style::file(),
            Style {
                ansi: true,
                target: true,
            },
        ] {
            let text = logged(style, || {
                tracing::trace!(
                    authorization = "Bearer tok-planted",
                    token = %"tok-planted",
                    delivery = "d1",
                    "connecting"
                );
                tracing::trace!(headers = ?[("x-api-key", "key-planted")], "received");
                tracing::trace!(target: "tungstenite::protocol::frame", "received frame 0x6b6579");
                tracing::debug!(target: "tungstenite::handshake::client", "Client handshake done.");
            });
            assert!(!text.contains("planted"), "{text}");
            assert!(
                !text.contains("0x6b6579"),
                "a frame dump was written: {text}"
            );
            assert!(text.contains("connecting"), "{text}");
            assert!(text.contains("Client handshake done."), "{text}");
        }
    }

    #[test]
    fn scrub_sees_through_colours_and_keeps_them_elsewhere() {
        let coloured = "\x1b[3mtoken\x1b[0m\x1b[2m=\x1b[0mtok-1 \x1b[1mdone\x1b[0m";
        assert_eq!(scrub(coloured), "token=REDACTED");
        let harmless = "\x1b[3mdelivery\x1b[0m=d1";
        assert!(matches!(scrub(harmless), Cow::Borrowed(_)));
        assert_eq!(strip_colours("a\x1b[2Kb\x1b[1;32mc"), "a\x1b[2Kbc");
    }
}
