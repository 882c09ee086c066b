//! The inspector's state and every transition it makes, with no I/O: `App::update` takes one
//! `AppEvent` (a key, a mouse event, a resize, a clock tick, something from `listen`, the answer
//! to an earlier effect) and may return one `Effect` for the loop in `tui.rs` to run.
//!
//! The list is a window on the capture store: `rows` holds a contiguous run of the deliveries
//! matching the filter, oldest first, and `offset` is how many matching deliveries are older than
//! `rows[0]`. Only the visible rows plus a margin on each side are ever held; moving past either
//! end asks the loop for the next page.

mod effect;
pub mod state;
mod stopping;
mod tested;
mod window;

use bytes::Bytes;
use crossterm::event::{KeyEvent, MouseButton, MouseEvent, MouseEventKind};
use illumitunnel::event::EventType;
use illumitunnel::store::{Counts, Filter};
use illumitunnel::{Delivery, DeliveryId};
use ratatui::layout::{Position, Rect};
use time::UtcOffset;

pub use self::effect::{AppEvent, Effect, Page, Query, Rows};
pub use self::state::App;
use self::state::{Message, Mode, QueueProgress, Stopping, Tab};
use super::keys::{self, Action, ConfirmAction, PromptAction};
use super::{curl, layout, text};
use crate::status::{ConnectionState, ListenEvent, StoreHealth};

/// How long a footer message stays up, in ms.
const MESSAGE_MS: i64 = 5_000;
/// The fewest rows the window holds, so small screens still page in useful chunks.
const MIN_WINDOW: usize = 64;
/// The least time between two full re-reads after `listen` dropped events (they count every
/// delivery, which costs a scan of the capture store), in ms.
const SYNC_MS: i64 = 500;
/// Lines one mouse-wheel notch scrolls the details.
const WHEEL_LINES: u16 = 3;

impl App {
    /// A fresh app; call [`App::start`] and run its effect to fill the list.
    pub fn new(
        public_url: String,
        forward_to: String,
        size: (u16, u16),
        utc_offset: UtcOffset,
        now_ms: i64,
    ) -> Self {
        App {
            public_url,
            forward_to,
            web_inspector: None,
            connection: ConnectionState::Connecting,
            store_failing: None,
            dead_letters: 0,
            reconnect_at_ms: 0,
            counts: Counts::default(),
            baseline: None,
            stopping: None,
            stop_asked: false,
            queue: None,
            now_ms,
            utc_offset,
            size,
            rows: Vec::new(),
            offset: 0,
            total: 0,
            selected: 0,
            top: 0,
            paused: false,
            follow: true,
            details_open: false,
            tab: Tab::Payload,
            details_scroll: 0,
            filter: Filter::default(),
            mode: Mode::Normal,
            message: None,
            test: None,
            testing: None,
            ignored: Vec::new(),
            select_seq: None,
            max_seq_seen: 0,
            counted_through: 0,
            totaled_through: 0,
            recent: std::collections::BTreeSet::new(),
            sync_pending: false,
            last_sync_ms: i64::MIN / 2,
            dirty: true,
        }
    }

    /// The first query: counts, total and the newest page.
    pub fn start(&self) -> Effect {
        self.query(Rows::Newest(self.window_cap()), true, true)
    }

    /// Whether anything visible changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Applies one event.
    pub fn update(&mut self, event: AppEvent) -> Option<Effect> {
        if !matches!(event, AppEvent::Tick(_)) {
            self.dirty = true;
        }
        match event {
            AppEvent::Key(key) => self.on_key(key),
            AppEvent::Mouse(mouse) => self.on_mouse(mouse),
            AppEvent::Resize(w, h) => {
                self.size = (w, h);
                self.scroll_into_view();
                self.ensure_window()
            }
            AppEvent::Tick(now) => {
                self.on_tick(now);
                self.due_sync()
            }
            AppEvent::Listen(event) => self.on_listen(event),
            AppEvent::Loaded(page) => self.on_page(page),
            AppEvent::LoadFailed(err) => {
                self.say_error(format!("could not read the capture store: {err}"));
                None
            }
            AppEvent::Replayed { original, result } => {
                match result {
                    Ok(d) => {
                        let status = d
                            .status()
                            .map_or_else(|| "no answer".to_string(), |s| s.to_string());
                        let to = illumitunnel::escape::escape(&d.target);
                        self.say(format!("replayed {original} to {to} as {}: {status}", d.id));
                        self.select_seq = Some(d.seq);
                        return self.select_pending();
                    }
                    Err(err) => self.say_error(format!("replay of {} failed: {err}", original)),
                }
                None
            }
            AppEvent::Tested { original, result } => self.on_tested(original, result),
            AppEvent::Edited {
                original,
                before,
                after,
            } => self.on_edited(original, before, after),
            AppEvent::Copied { id, result } => {
                match result {
                    Ok(n) => self.say(format!(
                        "copied {} as curl to the clipboard ({n} bytes, OSC 52)",
                        id
                    )),
                    Err(err) => self.say_error(format!("could not copy: {err}")),
                }
                None
            }
        }
    }

    /// Rows in the list area: index among matching deliveries, and the delivery if loaded.
    pub fn visible_rows(&self) -> impl Iterator<Item = (u64, Option<&Delivery>)> {
        let end = (self.top + self.list_height() as u64).min(self.total);
        (self.top..end).map(move |i| (i, self.row(i)))
    }

    /// The selected delivery, if loaded.
    pub fn selected_delivery(&self) -> Option<&Delivery> {
        if self.total == 0 {
            return None;
        }
        self.row(self.selected)
    }

    /// Whether new deliveries move the selection.
    pub fn is_following(&self) -> bool {
        self.follow && !self.paused
    }

    /// Seconds until the next connection attempt, rounded up.
    pub fn reconnect_in_secs(&self) -> u64 {
        let ms = (self.reconnect_at_ms - self.now_ms).max(0);
        (ms as u64).div_ceil(1000)
    }

    /// The applied filter as the user typed it.
    pub fn filter_label(&self) -> Option<&str> {
        self.filter.event.as_deref().or(self.filter.text.as_deref())
    }

    /// Rows held in memory (the window), for tests and benchmarks.
    #[cfg(test)]
    pub fn held_rows(&self) -> usize {
        self.rows.len()
    }

    fn say(&mut self, text: String) {
        self.message = Some(Message {
            text,
            is_error: false,
            until_ms: self.now_ms + MESSAGE_MS,
        });
    }

    fn say_error(&mut self, text: String) {
        self.message = Some(Message {
            text,
            is_error: true,
            until_ms: self.now_ms + MESSAGE_MS,
        });
    }

    fn on_tick(&mut self, now: i64) {
        let before = (self.reconnect_in_secs(), self.stopping_in_secs());
        self.now_ms = now;
        if self.message.as_ref().is_some_and(|m| m.until_ms <= now) {
            self.message = None;
            self.dirty = true;
        }
        if (self.stopping.is_some()
            || matches!(self.connection, ConnectionState::Reconnecting { .. }))
            && before != (self.reconnect_in_secs(), self.stopping_in_secs())
        {
            self.dirty = true;
        }
    }

    /// The store read a dropped-events notice asked for, at most every `SYNC_MS`.
    fn due_sync(&mut self) -> Option<Effect> {
        if !self.sync_pending || self.now_ms - self.last_sync_ms < SYNC_MS {
            return None;
        }
        self.sync_pending = false;
        self.last_sync_ms = self.now_ms;
        self.dirty = true;
        let rows = if self.is_following() {
            Rows::Newest(self.window_cap())
        } else {
            Rows::Nothing
        };
        Some(self.query(rows, true, true))
    }

    fn on_listen(&mut self, event: ListenEvent) -> Option<Effect> {
        match event {
            ListenEvent::Connection(state) => {
                match &state {
                    ConnectionState::Reconnecting { in_secs, .. } => {
                        self.reconnect_at_ms = self.now_ms + (in_secs.max(0.0) * 1000.0) as i64;
                    }
                    ConnectionState::Connected {
                        queued,
                        expired,
                        dead_letters,
                    } => {
                        self.dead_letters = *dead_letters;
                        self.queue = (*queued > 0 || *expired > 0).then_some(QueueProgress {
                            expected: *queued,
                            arrived: 0,
                            expired: *expired,
                        });
                    }
                    _ => {}
                }
                self.connection = state;
                None
            }
            // A pending selection is made by at most one of them.
            ListenEvent::Deliveries(deliveries) => deliveries
                .into_iter()
                .fold(None, |effect, d| effect.or(self.on_delivery(d))),
            ListenEvent::Draining { deliveries, up_to } => {
                self.stopping = Some(Stopping {
                    deliveries,
                    until_ms: self.now_ms + up_to.as_millis() as i64,
                });
                None
            }
            // Counted when it reaches the client, as the relay counts it sent, so the header
            // clears when the relay goes live, even for one recorded before (never shown again).
            ListenEvent::QueuedArrived => {
                if let Some(q) = &mut self.queue {
                    q.arrived = (q.arrived + 1).min(q.expected);
                }
                None
            }
            // Re-read on the next tick: a burst of these costs one store read, not one each.
            ListenEvent::StoreChanged => {
                self.sync_pending = true;
                None
            }
            ListenEvent::DeadLettered { id, reason } => {
                self.dead_letters = self.dead_letters.saturating_add(1);
                self.say_error(format!(
                    "the relay set delivery {id} aside as a dead letter: {reason}"
                ));
                self.dirty = true;
                None
            }
            ListenEvent::Store(health) => {
                self.store_failing = match health {
                    StoreHealth::Failing(sentence) => Some(sentence),
                    StoreHealth::Recovered => None,
                };
                self.dirty = true;
                None
            }
        }
    }

    fn on_edited(
        &mut self,
        original: DeliveryId,
        before: Bytes,
        after: Result<Vec<u8>, String>,
    ) -> Option<Effect> {
        let mut after = match after {
            Ok(after) => after,
            Err(err) => {
                self.say_error(format!("editor failed: {err}; nothing sent"));
                return None;
            }
        };
        // Editors end a saved file with a newline; one the original lacked is not an edit.
        if !before.ends_with(b"\n") && after.ends_with(b"\n") {
            after.pop();
        }
        if after == before {
            self.mode = Mode::Confirm(original);
            return None;
        }
        if text::is_json(&before) {
            if let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(&after) {
                self.say_error(format!(
                    "edited body is not valid JSON ({err}); nothing sent"
                ));
                return None;
            }
        }
        self.say(format!("replaying {} with the edited body…", original));
        Some(Effect::Replay {
            original,
            body: Some(Bytes::from(after)),
        })
    }

    fn on_key(&mut self, key: KeyEvent) -> Option<Effect> {
        match self.mode.clone() {
            Mode::Normal => keys::action(key).and_then(|a| self.act(a)),
            Mode::Help => match keys::action(key) {
                Some(Action::Quit) => self.quit(),
                _ => {
                    self.mode = Mode::Normal;
                    None
                }
            },
            Mode::Filter(mut input) => match keys::prompt(key)? {
                PromptAction::Insert(c) => {
                    input.push(c);
                    self.mode = Mode::Filter(input);
                    None
                }
                PromptAction::Backspace => {
                    input.pop();
                    self.mode = Mode::Filter(input);
                    None
                }
                PromptAction::Clear => {
                    self.mode = Mode::Filter(String::new());
                    None
                }
                PromptAction::Submit => self.apply_filter(&input),
                PromptAction::Cancel => self.apply_filter(""),
                PromptAction::Quit => self.quit(),
            },
            Mode::Confirm(original) => match keys::confirm(key)? {
                ConfirmAction::Yes => {
                    self.mode = Mode::Normal;
                    self.say(format!("replaying {}…", original));
                    Some(Effect::Replay {
                        original,
                        body: None,
                    })
                }
                ConfirmAction::No => {
                    self.mode = Mode::Normal;
                    self.say("body unchanged; nothing sent".to_string());
                    None
                }
                ConfirmAction::Quit => self.quit(),
            },
        }
    }

    fn act(&mut self, action: Action) -> Option<Effect> {
        let page = self.list_height() as u64;
        match action {
            Action::Up => self.select(self.selected.saturating_sub(1)),
            Action::Down => self.select(self.selected + 1),
            Action::PageUp => self.select(self.selected.saturating_sub(page)),
            Action::PageDown => self.select(self.selected + page),
            Action::First => self.first(),
            Action::Last => self.last(),
            Action::ToggleDetails => self.set_details(!self.details_open),
            Action::NextTab | Action::PrevTab | Action::Tab(_) => self.switch_tab(action),
            Action::DetailsDown => {
                self.details_scroll = self.details_scroll.saturating_add(1);
                None
            }
            Action::DetailsUp => {
                self.details_scroll = self.details_scroll.saturating_sub(1);
                None
            }
            Action::Replay => self.replay_selected(),
            Action::Test => self.start_test(),
            Action::Ignore => self.ignore_changed(),
            Action::Edit => self.edit_selected(),
            Action::Copy => {
                let d = self.selected_delivery()?;
                Some(Effect::Copy {
                    id: d.id.clone(),
                    text: curl::command(d, &self.forward_to),
                })
            }
            // Like less and fzf, `/` starts a new filter text; the applied one stays until it is
            // replaced by ⏎ or cleared by esc.
            Action::Filter => {
                self.mode = Mode::Filter(String::new());
                None
            }
            Action::TogglePause => self.toggle_pause(),
            Action::Help => {
                self.mode = Mode::Help;
                None
            }
            Action::Back => self.back(),
            Action::Quit => self.quit(),
        }
    }

    /// `Tab`, `Shift-Tab`, `1`–`4`: another details tab, opening the details.
    fn switch_tab(&mut self, action: Action) -> Option<Effect> {
        let tab = match action {
            Action::NextTab if self.details_open => self.tab.step(1),
            Action::PrevTab if self.details_open => self.tab.step(Tab::ALL.len() - 1),
            Action::Tab(n) => Tab::ALL[n.min(Tab::ALL.len() - 1)],
            _ => self.tab,
        };
        self.tab = tab;
        self.details_scroll = 0;
        self.set_details(true)
    }

    /// `r`: the selected delivery replayed as it was.
    fn replay_selected(&mut self) -> Option<Effect> {
        let id = self.selected_delivery()?.id.clone();
        self.say(format!("replaying {}…", id));
        Some(Effect::Replay {
            original: id,
            body: None,
        })
    }

    /// `e`: the selected delivery's body in the editor, then replayed; text bodies only.
    fn edit_selected(&mut self) -> Option<Effect> {
        let d = self.selected_delivery()?;
        if std::str::from_utf8(&d.request.body).is_err() {
            self.say_error("this body is binary; only text bodies can be edited".into());
            return None;
        }
        Some(Effect::Edit {
            original: d.id.clone(),
            body: d.request.body.clone(),
        })
    }

    /// `p`: pause following the newest delivery, or follow it again.
    fn toggle_pause(&mut self) -> Option<Effect> {
        self.paused = !self.paused;
        if self.paused {
            self.say("following paused; p follows the newest again".into());
            None
        } else {
            self.say("following the newest delivery".into());
            self.last()
        }
    }

    /// `Esc`: clear the filter first (as less and fzf do), then close the details.
    fn back(&mut self) -> Option<Effect> {
        if self.filter_label().is_some() {
            self.apply_filter("")
        } else if self.details_open {
            self.set_details(false)
        } else {
            None
        }
    }

    fn on_mouse(&mut self, mouse: MouseEvent) -> Option<Effect> {
        if self.mode != Mode::Normal {
            return None;
        }
        let areas = layout::areas(Rect::new(0, 0, self.size.0, self.size.1), self.details_open);
        let at = Position::new(mouse.column, mouse.row);
        let in_details = areas.details.is_some_and(|r| r.contains(at));
        match mouse.kind {
            MouseEventKind::ScrollDown if in_details => {
                self.details_scroll = self.details_scroll.saturating_add(WHEEL_LINES);
                None
            }
            MouseEventKind::ScrollUp if in_details => {
                self.details_scroll = self.details_scroll.saturating_sub(WHEEL_LINES);
                None
            }
            MouseEventKind::ScrollDown => self.select(self.selected + 1),
            MouseEventKind::ScrollUp => self.select(self.selected.saturating_sub(1)),
            MouseEventKind::Down(MouseButton::Left) => {
                if areas.list_rows.contains(at) {
                    let index = self.top + u64::from(mouse.row - areas.list_rows.y);
                    if index < self.total {
                        return self.select(index);
                    }
                } else if let Some(tabs) = areas.details.filter(|r| r.y == mouse.row) {
                    if let Some(tab) = layout::tab_at(mouse.column.saturating_sub(tabs.x)) {
                        self.tab = tab;
                        self.details_scroll = 0;
                    }
                }
                None
            }
            _ => None,
        }
    }

    fn set_details(&mut self, open: bool) -> Option<Effect> {
        if open != self.details_open {
            self.details_scroll = 0;
        }
        self.details_open = open;
        self.scroll_into_view();
        self.ensure_window()
    }

    fn apply_filter(&mut self, input: &str) -> Option<Effect> {
        let input = input.trim();
        let filter = if input.is_empty() {
            Filter::default()
        } else if EventType::parse(input).is_some() {
            Filter {
                event: Some(input.to_string()),
                ..Filter::default()
            }
        } else {
            Filter {
                text: Some(input.to_string()),
                ..Filter::default()
            }
        };
        self.mode = Mode::Normal;
        self.filter = filter;
        self.rows.clear();
        self.offset = 0;
        self.total = 0;
        self.selected = 0;
        self.top = 0;
        self.follow = true;
        self.details_scroll = 0;
        Some(self.query(Rows::Newest(self.window_cap()), true, false))
    }
}

#[cfg(test)]
mod day_tests;
#[cfg(test)]
mod tests;
