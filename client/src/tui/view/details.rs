//! The details of the selected delivery, one tab at a time: Payload, Request headers, Response,
//! Raw. Every byte from the delivery goes through `text` before it becomes a span.

use illumitunnel::delivery::Source;
use illumitunnel::headers::Header;
use illumitunnel::Delivery;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

use super::list::{latency, status_cell};
use crate::regression;
use crate::tui::app::state::{App, Tab, TestView};
use crate::tui::layout::tab_label;
use crate::tui::text::{self, escape, escape_bytes, DISPLAY_LIMIT};

const DIM: Style = Style::new().fg(Color::DarkGray);
const NAME: Style = Style::new().fg(Color::Cyan);

/// Draws the tab line and the selected tab's content into `area`.
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    if area.height == 0 {
        return;
    }
    let mut spans = Vec::new();
    for (i, tab) in Tab::ALL.into_iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled("│", DIM));
        }
        let style = if tab == app.tab {
            Style::new()
                .fg(Color::Black)
                .bg(Color::Cyan)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().fg(Color::Gray).bg(Color::DarkGray)
        };
        spans.push(Span::styled(tab_label(i, tab), style));
    }
    if let Some(d) = app.selected_delivery() {
        spans.push(Span::styled(format!("  {}", d.id), DIM));
    }
    if area.width >= 100 {
        spans.push(Span::styled("  J/K scroll", DIM));
    }
    frame.render_widget(
        Paragraph::new(Line::from(spans)),
        Rect { height: 1, ..area },
    );
    let body = Rect {
        y: area.y + 1,
        height: area.height - 1,
        ..area
    };
    let lines = match app.selected_delivery() {
        Some(d) => lines(app, d),
        None => vec![Line::styled("nothing selected", DIM)],
    };
    let scroll = usize::from(app.details_scroll).min(lines.len().saturating_sub(1));
    let shown: Vec<Line> = lines
        .into_iter()
        .skip(scroll)
        .take(usize::from(body.height))
        .collect();
    frame.render_widget(Paragraph::new(shown).wrap(Wrap { trim: false }), body);
}

/// The lines of the selected tab for `d`, under the result of a `t` test of it, if any.
pub fn lines(app: &App, d: &Delivery) -> Vec<Line<'static>> {
    let mut lines = match &app.test {
        Some(test) if test.original == d.id || test.replay == d.id => test_lines(app, test),
        _ => Vec::new(),
    };
    lines.extend(match app.tab {
        Tab::Payload => payload(d),
        Tab::RequestHeaders => request(app, d),
        Tab::Response => response(d),
        Tab::Raw => raw(d),
    });
    lines
}

/// `t`'s verdict and, when the answer differs, the diff (already escaped by the renderer).
fn test_lines(app: &App, test: &TestView) -> Vec<Line<'static>> {
    let (verdict, style) = if test.report.passed() {
        ("matches", Style::new().fg(Color::Green))
    } else {
        ("differs from", Style::new().fg(Color::Red))
    };
    let mut lines = vec![Line::styled(
        format!(
            "test: the answer {verdict} the recorded one (replay {} of {})",
            test.replay, test.original
        ),
        style.add_modifier(Modifier::BOLD),
    )];
    for line in regression::render(&test.report, "", false).lines() {
        let style = if line.starts_with("- ") {
            Style::new().fg(Color::Red)
        } else if line.starts_with("+ ") {
            Style::new().fg(Color::Green)
        } else {
            Style::new()
        };
        lines.push(Line::styled(line.to_string(), style));
    }
    if let Some(regression::BodyDiff::Json { changed, .. }) = &test.report.body {
        if let Some(first) = changed.first() {
            lines.push(Line::styled(
                format!("i ignores {} for this session", escape(first)),
                NAME,
            ));
        }
    }
    if !app.ignored.is_empty() {
        lines.push(Line::styled(
            format!(
                "ignored this session; reuse with illumitunnel test {}",
                escape(&app.ignore_flags())
            ),
            NAME,
        ));
    }
    lines.push(Line::raw(""));
    lines
}

fn payload(d: &Delivery) -> Vec<Line<'static>> {
    let kind = illumitunnel::headers::get(&d.request.headers, "content-type")
        .map_or_else(|| "no content-type".to_string(), escape_bytes);
    let mut lines = vec![Line::styled(
        format!("{kind} · {} bytes", d.request.body.len()),
        DIM,
    )];
    lines.extend(text::body_lines(&d.request.body));
    lines
}

fn header_lines(headers: &[Header]) -> Vec<Line<'static>> {
    headers
        .iter()
        .map(|(name, value)| {
            Line::from(vec![
                Span::styled(escape(name).into_owned(), NAME),
                Span::raw(": "),
                Span::raw(escape_bytes(value)),
            ])
        })
        .collect()
}

fn fact(name: &str, value: String) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{name:<10} "), DIM),
        Span::raw(value),
    ])
}

fn request(app: &App, d: &Delivery) -> Vec<Line<'static>> {
    let mut lines = vec![Line::styled(
        request_line(d),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    lines.extend(header_lines(&d.request.headers));
    lines.push(Line::raw(""));
    lines.push(fact("id", d.id.to_string()));
    lines.push(fact("received", illumitunnel::rfc3339_ms(d.received_at_ms)));
    let mut source = d.source.as_str().to_string();
    if let Some(of) = &d.replay_of {
        source = format!("replay of {of}");
    } else if d.source == Source::Replay {
        source = "replay".into();
    }
    if d.queued {
        source.push_str(", waited in the relay's offline queue");
    }
    lines.push(fact("source", source));
    if let Some(event) = &d.event {
        lines.push(fact("event", escape(event).into_owned()));
    }
    if let Some(key) = &d.dedup_key {
        let dup = if d.duplicate { " (duplicate)" } else { "" };
        lines.push(fact("dedup key", format!("{}{dup}", escape(key))));
    }
    let target = if d.skipped {
        "not forwarded (skipped by --events)".to_string()
    } else if d.target.is_empty() {
        escape(&app.forward_to).into_owned()
    } else {
        escape(&d.target).into_owned()
    };
    lines.push(fact("target", target));
    lines
}

fn response(d: &Delivery) -> Vec<Line<'static>> {
    if d.skipped {
        return vec![Line::styled(
            "skipped by --events: answered 200 without forwarding",
            Style::new().fg(Color::Blue),
        )];
    }
    let Some(r) = &d.response else {
        let why = d.error.as_deref().unwrap_or("no answer");
        return vec![Line::styled(
            format!("no answer from {}: {}", escape(&d.target), escape(why)),
            Style::new().fg(Color::Red),
        )];
    };
    let (status, style) = status_cell(d);
    let reason = http::StatusCode::from_u16(r.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut lines = vec![Line::from(vec![
        Span::styled(
            format!("{status} {reason}"),
            style.add_modifier(Modifier::BOLD),
        ),
        Span::styled(format!("  in {}", latency(d.duration_us)), DIM),
    ])];
    lines.extend(header_lines(&r.headers));
    lines.push(Line::raw(""));
    lines.extend(text::body_lines(&r.body));
    lines
}

fn request_line(d: &Delivery) -> String {
    let mut target = escape(&d.request.path).into_owned();
    if !d.request.query.is_empty() {
        target.push('?');
        target.push_str(&escape(&d.request.query));
    }
    format!("{} {target} HTTP/1.1", escape(&d.request.method))
}

fn raw(d: &Delivery) -> Vec<Line<'static>> {
    let mut lines = vec![Line::raw(request_line(d))];
    lines.extend(
        d.request
            .headers
            .iter()
            .map(|(name, value)| Line::raw(format!("{}: {}", escape(name), escape_bytes(value)))),
    );
    lines.push(Line::raw(""));
    let body = &d.request.body;
    let shown = &body[..body.len().min(DISPLAY_LIMIT)];
    lines.extend(
        shown
            .split(|b| *b == b'\n')
            .map(|line| Line::raw(escape_bytes(line.strip_suffix(b"\r").unwrap_or(line)))),
    );
    if shown.len() < body.len() {
        lines.push(Line::styled(
            format!("… {} more bytes not shown", body.len() - shown.len()),
            DIM,
        ));
    }
    lines
}
