//! The delivery list: one row a delivery, newest at the bottom, built for the visible rows only.

use illumitunnel::Delivery;
use ratatui::layout::{Alignment, Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};
use ratatui::Frame;

pub use crate::output::format::latency;
use crate::tui::app::state::App;
use crate::tui::text::{ellipsize, escape};

/// Terminals at least this wide get milliseconds, longer ids and full markers.
const WIDE: u16 = 120;

/// Draws the list block into `area`; rows go into `rows_area`.
pub fn render(app: &App, frame: &mut Frame, area: Rect, rows_area: Rect) {
    frame.render_widget(block(app), area);
    let wide = area.width >= WIDE;
    let columns = Columns::new(area.width, wide);
    let widths = [
        Constraint::Length(1),
        Constraint::Length(if wide { 12 } else { 8 }),
        Constraint::Length(columns.event as u16),
        Constraint::Length(columns.resource as u16),
        Constraint::Fill(1),
        Constraint::Length(3),
        Constraint::Length(7),
        // Narrow: the first marker and how many more, e.g. `trigger+1`.
        Constraint::Length(if wide { 14 } else { 9 }),
    ];
    let dim = Style::new().fg(Color::DarkGray);
    // Times are local when the offset could be read, else UTC, and the column says which.
    let time = if app.utc_offset.is_utc() {
        "time UTC"
    } else {
        "time"
    };
    let names = [
        "", time, "event", "resource", "request", "st", "latency", "marks",
    ];
    let header = Row::new(names).style(dim.add_modifier(Modifier::BOLD));
    let table_area = Rect {
        y: rows_area.y.saturating_sub(1),
        height: rows_area.height + 1,
        ..rows_area
    };
    if app.total == 0 {
        frame.render_widget(
            Table::new(Vec::<Row>::new(), widths).header(header),
            table_area,
        );
        frame.render_widget(empty_hint(app), rows_area);
        return;
    }
    let rows = app.visible_rows().map(|(index, d)| {
        let selected = index == app.selected;
        let row = match d {
            Some(d) => row(app, d, selected, &columns),
            None => Row::new(["", "…"]).style(dim),
        };
        if selected {
            row.style(
                Style::new()
                    .bg(Color::DarkGray)
                    .add_modifier(Modifier::BOLD),
            )
        } else {
            row
        }
    });
    frame.render_widget(Table::new(rows, widths).header(header), table_area);
}

fn block(app: &App) -> Block<'static> {
    let mut title = format!(" deliveries {}/{} ", app.selected + 1, app.total);
    if app.total == 0 {
        title = " deliveries ".to_string();
    }
    let state = if app.paused {
        Span::styled(" paused (p resumes) ", Style::new().fg(Color::Yellow))
    } else if app.is_following() {
        Span::styled(" following ", Style::new().fg(Color::Green))
    } else {
        Span::styled(" scrolled (G newest) ", Style::new().fg(Color::Yellow))
    };
    let mut block = Block::new()
        .borders(Borders::TOP)
        .border_style(Style::new().fg(Color::DarkGray))
        .title(Line::from(vec![
            Span::styled(title, Style::new().add_modifier(Modifier::BOLD)),
            state,
        ]));
    if let Some(label) = app.filter_label() {
        block = block.title(
            Line::styled(
                format!(" filter: {} (esc clears) ", escape(label)),
                Style::new().fg(Color::Cyan),
            )
            .alignment(Alignment::Right),
        );
    }
    block
}

fn empty_hint(app: &App) -> Paragraph<'static> {
    let dim = Style::new().fg(Color::DarkGray);
    let lines = match app.filter_label() {
        Some(label) => vec![
            Line::raw(""),
            Line::raw(format!("no deliveries match “{}”", escape(label))),
            Line::styled("esc clears the filter", dim),
        ],
        None if app.public_url.is_empty() => vec![
            Line::raw(""),
            Line::raw("no deliveries yet; the tunnel URL shows here once the relay answers"),
        ],
        None => vec![
            Line::raw(""),
            Line::raw("no deliveries yet: send a webhook to"),
            Line::styled(
                escape(&app.public_url).into_owned(),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Line::styled(
                "or try `illumitunnel trigger ticket.created` in another terminal",
                dim,
            ),
        ],
    };
    Paragraph::new(lines).alignment(Alignment::Center)
}

/// The widths of the columns whose text is cut with `…` when longer.
struct Columns {
    wide: bool,
    event: usize,
    resource: usize,
    request: usize,
}

impl Columns {
    fn new(width: u16, wide: bool) -> Self {
        let (event, resource) = (20, if wide { 18 } else { 10 });
        // Marker, time, status, latency and marks, plus one space between the eight columns.
        let fixed = 1 + if wide { 12 } else { 8 } + 3 + 7 + if wide { 14 } else { 9 } + 7;
        Columns {
            wide,
            event,
            resource,
            request: usize::from(width).saturating_sub(fixed + event + resource),
        }
    }
}

fn row<'a>(app: &App, d: &'a Delivery, selected: bool, columns: &Columns) -> Row<'a> {
    let wide = columns.wide;
    let dim = Style::new().fg(Color::DarkGray);
    let time = time_of_day(app, d.received_at_ms, wide);
    let event = d
        .event
        .as_deref()
        .map_or_else(|| "-".to_string(), |e| ellipsize(&escape(e), columns.event));
    let resource = d.resource_id.as_deref().map_or_else(
        || "-".to_string(),
        |r| ellipsize(&escape(r), columns.resource),
    );
    let request = ellipsize(
        &format!("{} {}", escape(&d.request.method), escape(&d.request.path)),
        columns.request,
    );
    let (status, status_style) = status_cell(d);
    let latency = if d.skipped || d.response.is_none() && d.duration_us == 0 {
        String::new()
    } else {
        latency(d.duration_us)
    };
    Row::new(vec![
        Span::styled(
            if selected { "›" } else { " " },
            Style::new().fg(Color::Cyan),
        ),
        Span::styled(time, dim),
        Span::raw(event),
        Span::raw(resource),
        Span::raw(request),
        Span::styled(status, status_style),
        Span::raw(format!("{latency:>7}")),
        Span::styled(markers(d, wide), Style::new().fg(Color::Magenta)),
    ])
}

fn time_of_day(app: &App, ms: i64, wide: bool) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(app.utc_offset);
    let (h, m, s) = t.to_hms();
    if wide {
        format!("{h:02}:{m:02}:{s:02}.{:03}", t.millisecond())
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// The status text and its colour by class.
pub fn status_cell(d: &Delivery) -> (String, Style) {
    match d.status() {
        _ if d.skipped => ("-".to_string(), Style::new().fg(Color::Blue)),
        None => (
            "ERR".to_string(),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        Some(s) => {
            let color = match s {
                200..=299 => Color::Green,
                300..=399 => Color::Cyan,
                400..=499 => Color::Yellow,
                _ => Color::Red,
            };
            (s.to_string(), Style::new().fg(color))
        }
    }
}

fn markers(d: &Delivery, wide: bool) -> String {
    // The same marks, in the same order, as `events` prints.
    let marks = crate::output::format::marks(d);
    if !wide && marks.len() > 1 {
        return format!("{}+{}", marks[0], marks.len() - 1);
    }
    marks.join(" ")
}
