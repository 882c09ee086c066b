//! The inspector's counters for this run, and `listen` stopping: the first `q` or Ctrl-C asks it
//! to stop and the inspector says what it waits for; the second quits at once.

use illumitunnel::store::Counts;

use super::effect::Effect;
use super::state::App;

impl App {
    /// Deliveries recorded since the inspector opened, by outcome.
    pub fn this_run(&self) -> Counts {
        let base = self.baseline.unwrap_or_default();
        let c = self.counts;
        Counts {
            total: c.total.saturating_sub(base.total),
            ok: c.ok.saturating_sub(base.ok),
            client_error: c.client_error.saturating_sub(base.client_error),
            server_error: c.server_error.saturating_sub(base.server_error),
            failed: c.failed.saturating_sub(base.failed),
            skipped: c.skipped.saturating_sub(base.skipped),
        }
    }

    /// Seconds `listen` still waits for deliveries being forwarded, rounded up.
    pub fn stopping_in_secs(&self) -> u64 {
        let until = self.stopping.map_or(self.now_ms, |s| s.until_ms);
        ((until - self.now_ms).max(0) as u64).div_ceil(1000)
    }

    /// What the inspector says while `listen` stops, if it does.
    pub fn stopping_line(&self) -> Option<String> {
        if !self.stop_asked {
            return None;
        }
        Some(match self.stopping {
            Some(s) if s.deliveries > 0 => format!(
                "waiting for {} {} (up to {} s); Ctrl-C again quits now",
                s.deliveries,
                if s.deliveries == 1 {
                    "delivery"
                } else {
                    "deliveries"
                },
                self.stopping_in_secs()
            ),
            _ => "stopping listen…; Ctrl-C again quits now".to_string(),
        })
    }

    /// `q` or Ctrl-C: the first stops `listen` and waits for deliveries being forwarded (the
    /// header says how many and for how long); the next quits at once.
    pub(super) fn quit(&mut self) -> Option<Effect> {
        if self.stop_asked {
            return Some(Effect::Quit);
        }
        self.stop_asked = true;
        self.say("stopping listen…".into());
        Some(Effect::Stop)
    }
}
