//! The two header lines: where webhooks go in and out, the relay connection, outcome counts.

use ratatui::layout::{Alignment, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::status::ConnectionState;
use crate::tui::app::state::App;
use crate::tui::text::{ellipsize, escape, prefix};

/// The least room the forward target keeps when the public URL is cut first.
const MIN_TARGET: usize = 16;

/// Draws the header into `area` (two lines). Whatever does not fit is cut with `…`; the
/// "local only" warning is kept and the URLs are shortened first.
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    frame.render_widget(
        Paragraph::new(first_line(app, usize::from(area.width))),
        Rect { height: 1, ..area },
    );
    if area.height < 2 {
        return;
    }
    let second = Rect {
        y: area.y + 1,
        height: 1,
        ..area
    };
    let counts = counts_line(app, area.width >= 120);
    let counts_width = counts.width() as u16;
    frame.render_widget(Paragraph::new(counts).alignment(Alignment::Right), second);
    let state = Rect {
        width: second.width.saturating_sub(counts_width + 1),
        ..second
    };
    frame.render_widget(
        Paragraph::new(fit(connection_line(app), usize::from(state.width))),
        state,
    );
}

/// The badge, the public URL, the target and, for a URL IllumiChat cannot reach, the warning.
fn first_line(app: &App, width: usize) -> Line<'static> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let dim = Style::new().fg(Color::DarkGray);
    let url = if app.public_url.is_empty() {
        "waiting for the relay…".to_string()
    } else {
        escape(&app.public_url).into_owned()
    };
    let target = escape(&app.forward_to).into_owned();
    let badge = " illumitunnel ";
    let arrow = " → ";
    let long_warning = format!("  ({})", crate::illumichat::LOCAL_ONLY);
    let warning = if crate::illumichat::is_local_only(&app.public_url) {
        let fixed = |w: &str| badge.len() + 1 + arrow.chars().count() + w.chars().count();
        let full = fixed(&long_warning) + url.chars().count() + target.chars().count();
        Some(if full <= width {
            long_warning
        } else {
            "  (local only)".to_string()
        })
    } else {
        None
    };
    let used = badge.len() + 1 + 3 + warning.as_deref().map_or(0, |w| w.chars().count());
    let room = width.saturating_sub(used);
    let (url_len, target_len) = (url.chars().count(), target.chars().count());
    // The target is cut first, down to a few columns; then the URL.
    let (url_room, target_room) = if url_len + target_len <= room {
        (url_len, target_len)
    } else {
        let target_room = target_len.min(MIN_TARGET).max(room.saturating_sub(url_len));
        (room.saturating_sub(target_room), target_room.min(room))
    };
    let mut spans = vec![
        Span::styled(badge, bold.fg(Color::Black).bg(Color::Cyan)),
        Span::raw(" "),
        Span::styled(ellipsize(&url, url_room), bold),
        Span::styled(arrow, dim),
        Span::raw(ellipsize(&target, target_room)),
    ];
    if let Some(warning) = warning {
        spans.push(Span::styled(warning, Style::new().fg(Color::Yellow)));
    }
    Line::from(spans)
}

/// `line` cut to `width` columns, ending in `…` when anything was cut.
fn fit(line: Line<'static>, width: usize) -> Line<'static> {
    if line.width() <= width || width == 0 {
        return line;
    }
    let mut spans = Vec::new();
    let mut used = 0;
    for span in line.spans {
        let w = span.width();
        if used + w < width {
            used += w;
            spans.push(span);
            continue;
        }
        // This span reaches the edge: what fits of it, and one column for the ellipsis.
        let mut cut = prefix(&span.content, width - used - 1);
        cut.push('…');
        spans.push(Span::styled(cut, span.style));
        break;
    }
    Line::from(spans)
}

fn connection_line(app: &App) -> Line<'static> {
    let (symbol, text, color) = match &app.connection {
        ConnectionState::Connecting => ("◌", "connecting…".to_string(), Color::Yellow),
        ConnectionState::Connected { .. } => ("●", "connected".to_string(), Color::Green),
        ConnectionState::Reconnecting { cause, .. } => (
            "○",
            format!(
                "reconnecting in {} s: {}",
                app.reconnect_in_secs(),
                escape(cause)
            ),
            Color::Yellow,
        ),
        ConnectionState::Refused(why) => ("✖", format!("refused: {}", escape(why)), Color::Red),
    };
    let mut spans = vec![Span::raw(" ")];
    if app.stop_asked {
        spans.push(Span::styled(
            "■ stopping · ",
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    // Nothing is acknowledged while the store fails: this goes first, where it is seen.
    if let Some(why) = &app.store_failing {
        spans.push(Span::styled(
            format!("✖ {} · ", escape(why)),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    spans.push(Span::styled(
        format!("{symbol} {text}"),
        Style::new().fg(color),
    ));
    if let (Some(q), ConnectionState::Connected { .. }) = (app.queue, &app.connection) {
        let progress = if q.arrived < q.expected {
            format!(" · catching up {}/{} queued", q.arrived, q.expected)
        } else {
            format!(" · {} queued caught up", q.expected)
        };
        spans.push(Span::raw(progress));
        if q.expired > 0 {
            spans.push(Span::styled(
                format!(" · {} expired", q.expired),
                Style::new().fg(Color::Yellow),
            ));
        }
    }
    if app.dead_letters > 0 {
        spans.push(Span::styled(
            format!(" · {} dead letters", app.dead_letters),
            Style::new().fg(Color::Red),
        ));
    }
    if let Some(url) = &app.web_inspector {
        spans.push(Span::styled(
            format!(" · web {}", escape(url)),
            Style::new().fg(Color::DarkGray),
        ));
    }
    Line::from(spans)
}

/// `this run: 3 ok · 1 err · stored 120`: what this `listen` recorded, by outcome (zeros left
/// out), then everything the capture store holds.
fn counts_line(app: &App, wide: bool) -> Line<'static> {
    let c = app.this_run();
    let dim = Style::new().fg(Color::DarkGray);
    let mut spans = vec![Span::styled("this run:", dim)];
    let parts = [
        ("ok", c.ok, Color::Green),
        ("4xx", c.client_error, Color::Yellow),
        ("5xx", c.server_error, Color::Red),
        ("err", c.failed, Color::Red),
        (
            if wide { "skipped" } else { "skip" },
            c.skipped,
            Color::Blue,
        ),
    ];
    let mut any = false;
    for (label, n, color) in parts {
        if n == 0 {
            continue;
        }
        spans.push(Span::styled(if any { " · " } else { " " }, dim));
        spans.push(Span::styled(
            format!("{n} {label}"),
            Style::new().fg(color).add_modifier(Modifier::BOLD),
        ));
        any = true;
    }
    if !any {
        spans.push(Span::styled(" none", dim));
    }
    spans.push(Span::styled(
        format!(" · stored: {} ", app.counts.total),
        dim,
    ));
    Line::from(spans)
}
