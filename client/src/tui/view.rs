//! Drawing the inspector: `render(app, frame)` borrows the state immutably and builds widgets for
//! the visible rows only. `areas` is the one layout both drawing and mouse hit-testing use.

mod details;
mod header;
mod help;
mod list;

use ratatui::layout::{Alignment, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::app::{App, Mode, Tab};
use super::text::escape;

/// The smallest terminal the inspector draws in.
pub const MIN_SIZE: (u16, u16) = (80, 24);

/// Where each part of the screen goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    /// URL, connection state, counts.
    pub header: Rect,
    /// The list, with its title line and column names.
    pub list: Rect,
    /// The list's rows only.
    pub list_rows: Rect,
    /// The details, tab line first, when open.
    pub details: Option<Rect>,
    /// Keys, messages, the filter prompt.
    pub footer: Rect,
}

/// Splits the screen.
pub fn areas(area: Rect, details_open: bool) -> Areas {
    let header = Rect {
        height: area.height.min(2),
        ..area
    };
    let footer = Rect {
        y: area.bottom().saturating_sub(1),
        height: area.height.min(1),
        ..area
    };
    let middle_y = header.bottom();
    let middle_h = footer.y.saturating_sub(middle_y);
    let list_h = if details_open {
        (middle_h * 2 / 5).max(6).min(middle_h)
    } else {
        middle_h
    };
    let list = Rect::new(area.x, middle_y, area.width, list_h);
    let list_rows = Rect::new(
        area.x,
        middle_y + list_h.min(2),
        area.width,
        list_h.saturating_sub(2),
    );
    let details = details_open.then(|| {
        Rect::new(
            area.x,
            list.bottom(),
            area.width,
            middle_h.saturating_sub(list_h),
        )
    });
    Areas {
        header,
        list,
        list_rows,
        details,
        footer,
    }
}

/// The tab under column `x` of the details' tab line.
pub fn tab_at(x: u16) -> Option<Tab> {
    let mut start = 0u16;
    for (i, tab) in Tab::ALL.into_iter().enumerate() {
        let width = details::tab_label(i, tab).chars().count() as u16;
        if x >= start && x < start + width {
            return Some(tab);
        }
        start += width + 1;
    }
    None
}

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
