//! Drawing the inspector: `render(app, frame)` borrows the state immutably and builds widgets for
//! the visible rows only, in the areas `layout` gives (the same ones mouse hit-testing uses).

mod details;
mod header;
mod help;
mod list;

use ratatui::layout::{Alignment, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::app::state::{App, Mode};
use super::layout::{areas, MIN_SIZE};
use super::text::escape;

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        render_too_small(frame, area);
        return;
    }
    let areas = areas(area, app.details_open);
    header::render(app, frame, areas.header);
    list::render(app, frame, areas.list, areas.list_rows);
    if let Some(details_area) = areas.details {
        details::render(app, frame, details_area);
    }
    render_footer(app, frame, areas.footer);
    if app.mode == Mode::Help {
        help::render(frame, area);
    }
}

fn render_too_small(frame: &mut Frame, area: Rect) {
    let y = area.height / 2;
    let lines = vec![
        Line::styled(
            format!("terminal too small (need {}×{})", MIN_SIZE.0, MIN_SIZE.1),
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        Line::raw(format!("now {}×{}; q quits", area.width, area.height)),
    ];
    let text_area = Rect {
        y: area.y + y.saturating_sub(1),
        height: area.height.saturating_sub(y.saturating_sub(1)),
        ..area
    };
    frame.render_widget(
        Paragraph::new(lines).alignment(Alignment::Center),
        text_area,
    );
}

const KEY_HINTS: &[(&str, &str)] = &[
    ("↑↓", "move"),
    ("⏎", "details"),
    ("tab", "tabs"),
    ("r", "replay"),
    ("t", "test"),
    ("e", "edit"),
    ("c", "copy"),
    ("/", "filter"),
    ("p", "pause"),
    ("?", "help"),
    ("q", "quit"),
];

fn render_footer(app: &App, frame: &mut Frame, area: Rect) {
    let key = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
    if let Some(stopping) = app.stopping_line() {
        let line = Line::styled(
            stopping,
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        );
        frame.render_widget(Paragraph::new(line), area);
        return;
    }
    let line = match (&app.mode, &app.message) {
        (Mode::Filter(input), _) => Line::from(vec![
            Span::styled("/", key),
            Span::raw(escape(input).into_owned()),
            Span::styled("█", Style::new().fg(Color::Gray)),
            Span::styled(
                "  event type or text · ⏎ apply · esc clear",
                Style::new().fg(Color::DarkGray),
            ),
        ]),
        (Mode::Confirm(id), _) => Line::styled(
            format!("body unchanged; replay {id} as it is? (y/n)"),
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        (_, Some(message)) => {
            let color = if message.is_error {
                Color::Red
            } else {
                Color::Green
            };
            Line::styled(escape(&message.text).into_owned(), Style::new().fg(color))
        }
        _ => {
            let mut spans = Vec::new();
            for (k, what) in KEY_HINTS {
                // 80 columns hold the rest; `?` lists these two as well.
                if (*k == "tab" || *k == "t") && area.width < 100 {
                    continue;
                }
                spans.push(Span::styled(*k, key));
                spans.push(Span::raw(format!(" {what}  ")));
            }
            Line::from(spans)
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}
