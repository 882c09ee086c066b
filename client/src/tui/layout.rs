//! The inspector's geometry: where each part of the screen goes and which tab a column of the
//! tab line falls on. Drawing (`view`) and mouse hit-testing (`app`) both use it, so a click
//! lands where the thing was drawn.

use ratatui::layout::Rect;

use super::app::state::Tab;

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
        let width = tab_label(i, tab).chars().count() as u16;
        if x >= start && x < start + width {
            return Some(tab);
        }
        start += width + 1;
    }
    None
}

/// A tab's label on the tab line.
pub fn tab_label(index: usize, tab: Tab) -> String {
    format!(" {} {} ", index + 1, tab.title())
}
