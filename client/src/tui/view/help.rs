//! The key help, drawn over the screen with `?`.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

const KEYS: &[(&str, &str)] = &[
    ("↑ ↓  k j", "select the delivery above / below"),
    ("PgUp PgDn", "one screen up / down"),
    ("g  G", "oldest / newest (G follows again)"),
    ("⏎", "open / close the details"),
    ("tab  1-4", "next details tab / a tab by number"),
    ("J K  ⇧↑ ⇧↓", "scroll the details"),
    ("r", "replay the selected delivery"),
    ("t", "test it: replay, compare with the recorded answer"),
    ("i", "in a test diff: ignore the first changed field"),
    ("e", "edit the body in $VISUAL/$EDITOR, then replay"),
    ("c", "copy as curl (OSC 52 clipboard)"),
    ("/", "a new filter: event type or text; esc clears"),
    ("p", "pause / resume following the newest"),
    ("mouse", "wheel scrolls, click selects"),
    ("q  ctrl-c", "stop (waits for deliveries); twice: quit now"),
];

const MARKS: &str = "marks: retry N = Nth try after failed answers · dup = already \
    delivered · replay · trigger · skipped by --events · queued while offline";

/// Draws the help box centred in `area`.
pub fn render(frame: &mut Frame, area: Rect) {
    let width = 64.min(area.width);
    let height = (KEYS.len() as u16 + 7).min(area.height);
    let popup = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    let key = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:<12}"), key),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::styled(MARKS, Style::new().fg(Color::DarkGray)));
    lines.push(Line::styled(
        "any key closes this help",
        Style::new().fg(Color::DarkGray),
    ));
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .block(Block::new().borders(Borders::ALL).title(" keys ")),
        popup,
    );
}
