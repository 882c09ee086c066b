//! The two header lines: where webhooks go in and out, the relay connection, outcome counts.

use ratatui::layout::{Alignment, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::status::ConnectionState;
use crate::tui::app::state::App;
use crate::tui::text::escape;

/// Draws the header into `area` (two lines).
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let dim = Style::new().fg(Color::DarkGray);
    let mut first = vec![
        Span::styled(" illumitunnel ", bold.fg(Color::Black).bg(Color::Cyan)),
        Span::raw(" "),
        Span::styled(escape(&app.public_url).into_owned(), bold),
        Span::styled(" → ", dim),
        Span::raw(escape(&app.forward_to).into_owned()),
    ];
    // Last on the line, so a narrow terminal still shows both URLs first.
    if crate::illumichat::is_local_only(&app.public_url) {
        first.push(Span::styled(
            format!("  ({})", crate::illumichat::LOCAL_ONLY),
            Style::new().fg(Color::Yellow),
        ));
    }
    let first = Line::from(first);
    frame.render_widget(Paragraph::new(first), Rect { height: 1, ..area });
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
    frame.render_widget(Paragraph::new(connection_line(app)), state);
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
    Line::from(spans)
}

fn counts_line(app: &App, wide: bool) -> Line<'static> {
    let c = app.counts;
    let part = |label: &'static str, n: u64, color: Color| {
        let style = if n == 0 {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new().fg(color)
        };
        [
            Span::styled(label, style),
            Span::styled(format!(" {n}  "), style.add_modifier(Modifier::BOLD)),
        ]
    };
    let mut spans = Vec::new();
    spans.extend(part("2xx", c.ok, Color::Green));
    spans.extend(part("4xx", c.client_error, Color::Yellow));
    spans.extend(part("5xx", c.server_error, Color::Red));
    spans.extend(part("err", c.failed, Color::Red));
    spans.extend(part(
        if wide { "skipped" } else { "skip" },
        c.skipped,
        Color::Blue,
    ));
    if wide {
        spans.push(Span::raw(format!("total {} ", c.total)));
    }
    Line::from(spans)
}
