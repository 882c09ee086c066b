//! The list's window on the capture store: which rows are held, which are visible, which the
//! next store read must fetch, and how live deliveries join it.

use illumitunnel::store::{Counts, Filter};
use illumitunnel::Delivery;
use ratatui::layout::Rect;

use super::effect::{Effect, Page, Query, Rows};
use super::state::App;
use super::MIN_WINDOW;

/// How many delivery events are remembered to drop one told twice.
const RECENT: usize = 4096;
use crate::tui::layout;

impl App {
    pub(super) fn row(&self, index: u64) -> Option<&Delivery> {
        let i = index.checked_sub(self.offset)?;
        self.rows.get(usize::try_from(i).ok()?)
    }

    pub(super) fn list_height(&self) -> u16 {
        let area = Rect::new(0, 0, self.size.0, self.size.1);
        layout::areas(area, self.details_open)
            .list_rows
            .height
            .max(1)
    }

    pub(super) fn window_cap(&self) -> usize {
        (self.list_height() as usize * 3).max(MIN_WINDOW)
    }

    pub(super) fn is_at_tail(&self) -> bool {
        self.offset + self.rows.len() as u64 == self.total
    }

    pub(super) fn on_delivery(&mut self, d: Delivery) -> Option<Effect> {
        if !self.recent.insert(d.seq) {
            return None;
        }
        if self.recent.len() > RECENT {
            self.recent.pop_first();
        }
        self.max_seq_seen = self.max_seq_seen.max(d.seq);
        // A store read that already counted this delivery must not count it twice.
        if d.seq > self.counted_through {
            count(&mut self.counts, &d);
        }
        if !matches(&self.filter, &d) || d.seq <= self.totaled_through {
            return self.select_pending();
        }
        let at_tail = self.is_at_tail();
        self.total += 1;
        if at_tail {
            // Events normally come in store order; a replay committed apart may not.
            let at = self.rows.partition_point(|r| r.seq < d.seq);
            self.rows.insert(at, d);
        }
        if self.is_following() || self.total == 1 {
            self.selected = self.total - 1;
            self.scroll_into_view();
        }
        self.trim();
        self.select_pending()
    }

    pub(super) fn on_page(&mut self, page: Page) -> Option<Effect> {
        if let Some(counts) = page.counts {
            // The first read is what the store held before this run.
            self.baseline.get_or_insert(counts);
            self.counts = counts;
            self.counted_through = page.bound;
        }
        if let Some(total) = page.total {
            self.total = total;
            self.totaled_through = page.bound;
        }
        self.max_seq_seen = self.max_seq_seen.max(page.bound);
        let got = page.rows.len();
        match page.rows_kind {
            Rows::Nothing => {}
            Rows::Newest(_) => {
                self.rows = page.rows;
                self.offset = self.total.saturating_sub(got as u64);
                self.selected = self.total.saturating_sub(1);
                self.follow = true;
                self.details_scroll = 0;
            }
            Rows::Oldest(_) => {
                self.rows = page.rows;
                self.offset = 0;
                self.selected = 0;
                self.top = 0;
                self.follow = self.total <= 1;
                self.details_scroll = 0;
            }
            Rows::Before { limit, .. } => {
                let mut rows = page.rows;
                rows.append(&mut self.rows);
                self.rows = rows;
                // Fewer than asked means the oldest matching delivery is now held.
                self.offset = if got < limit {
                    0
                } else {
                    self.offset.saturating_sub(got as u64)
                };
            }
            Rows::After { limit, .. } => {
                let last = self.rows.last().map_or(i64::MIN, |d| d.seq);
                self.rows
                    .extend(page.rows.into_iter().filter(|d| d.seq > last));
                if got < limit {
                    self.total = self.offset + self.rows.len() as u64;
                }
            }
        }
        if self.total > 0 && self.selected >= self.total {
            self.selected = self.total - 1;
        }
        self.scroll_into_view();
        self.trim();
        if let Some(effect) = self.select_pending() {
            return Some(effect);
        }
        self.ensure_window()
    }

    pub(super) fn select(&mut self, index: u64) -> Option<Effect> {
        if self.total == 0 {
            return None;
        }
        let index = index.min(self.total - 1);
        if index != self.selected {
            self.details_scroll = 0;
        }
        self.selected = index;
        self.follow = index == self.total - 1;
        self.scroll_into_view();
        self.ensure_window()
    }

    pub(super) fn first(&mut self) -> Option<Effect> {
        if self.offset == 0 && !self.rows.is_empty() {
            return self.select(0);
        }
        Some(self.query(Rows::Oldest(self.window_cap()), true, false))
    }

    pub(super) fn last(&mut self) -> Option<Effect> {
        if self.is_at_tail() {
            return self.select(self.total.saturating_sub(1));
        }
        Some(self.query(Rows::Newest(self.window_cap()), true, false))
    }

    /// Selects the row a replay answered with, once it is held.
    pub(super) fn select_pending(&mut self) -> Option<Effect> {
        let seq = self.select_seq?;
        let i = self.rows.iter().position(|d| d.seq == seq)?;
        self.select_seq = None;
        self.select(self.offset + i as u64)
    }

    pub(super) fn scroll_into_view(&mut self) {
        let h = self.list_height() as u64;
        if self.selected < self.top {
            self.top = self.selected;
        } else if self.selected >= self.top + h {
            self.top = self.selected + 1 - h;
        }
        self.top = self.top.min(self.total.saturating_sub(h));
    }

    /// A store read under the applied filter; `sync` also re-reads counts and the store's head.
    pub(super) fn query(&self, rows: Rows, total: bool, sync: bool) -> Effect {
        Effect::Load(Query {
            filter: self.filter.clone(),
            rows,
            total,
            counts: sync,
            sync,
            seen_seq: self.max_seq_seen,
        })
    }

    /// Asks for the rows the visible range needs and the window lacks.
    pub(super) fn ensure_window(&self) -> Option<Effect> {
        if self.total == 0 {
            return None;
        }
        let h = self.list_height() as u64;
        let want_end = (self.top + h).min(self.total);
        let margin = h as usize;
        let load = |rows| Some(self.query(rows, false, false));
        let (Some(first), Some(last)) = (self.rows.first(), self.rows.last()) else {
            return load(Rows::Newest(self.window_cap()));
        };
        let end = self.offset + self.rows.len() as u64;
        if self.top < self.offset {
            let missing = (self.offset - self.top) as usize;
            return load(Rows::Before {
                seq: first.seq,
                limit: missing + margin,
            });
        }
        if want_end > end {
            let missing = (want_end - end) as usize;
            return load(Rows::After {
                seq: last.seq,
                limit: missing + margin,
            });
        }
        None
    }

    /// Drops held rows beyond the cap, from the side farther from the visible range.
    pub(super) fn trim(&mut self) {
        let cap = self.window_cap();
        if self.rows.len() <= cap {
            return;
        }
        let h = self.list_height() as usize;
        let visible_start = usize::try_from(self.top.saturating_sub(self.offset))
            .unwrap_or(usize::MAX)
            .min(self.rows.len());
        let keep_before = (cap - h.min(cap)) / 2;
        let drop_front = visible_start
            .saturating_sub(keep_before)
            .min(self.rows.len() - cap);
        self.rows.drain(..drop_front);
        self.offset += drop_front as u64;
        self.rows.truncate(cap);
    }
}

/// Adds `d` to the outcome counts, as `CaptureStore::counts` would.
fn count(counts: &mut Counts, d: &Delivery) {
    counts.total += 1;
    if d.skipped {
        counts.skipped += 1;
        return;
    }
    match d.status() {
        None => counts.failed += 1,
        Some(s) if s >= 500 => counts.server_error += 1,
        Some(s) if s >= 400 => counts.client_error += 1,
        Some(_) => counts.ok += 1,
    }
}

/// Whether `d` passes `filter` the way the store's query would (ASCII case-insensitive text).
pub fn matches(filter: &Filter, d: &Delivery) -> bool {
    if let Some(event) = &filter.event {
        if d.event.as_deref() != Some(event.as_str()) {
            return false;
        }
    }
    let Some(needle) = filter.text.as_deref().filter(|t| !t.is_empty()) else {
        return true;
    };
    let has = |hay: &[u8]| {
        hay.len() >= needle.len()
            && hay
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    };
    d.event.as_deref().is_some_and(|e| has(e.as_bytes()))
        || d.resource_id.as_deref().is_some_and(|r| has(r.as_bytes()))
        || has(d.request.path.as_bytes())
        || d.status().is_some_and(|s| has(s.to_string().as_bytes()))
        || has(&d.request.body)
}
