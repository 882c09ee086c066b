//! `listen` with its terminal inspector in a private tmux server, for the test that runs both
//! inspectors at once.

use std::time::Instant;

use crate::support::{self, DEADLINE};

/// A private tmux server running `listen` with the terminal inspector, for the test that runs
/// both inspectors at once; killed (with `listen`) when dropped.
pub struct Terminal {
    socket: std::path::PathBuf,
}

impl Terminal {
    /// Whether tmux runs here; without it the test says so and passes, except in CI.
    pub fn available() -> bool {
        let found = std::process::Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        let in_ci = std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
        assert!(found || !in_ci, "tmux is not installed but CI is set");
        if !found {
            eprintln!("skipping: tmux is not installed");
        }
        found
    }

    /// Starts `listen ARGS` in a 160×40 terminal with `home` as its home.
    pub fn start(home: &std::path::Path, args: &[String]) -> Terminal {
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let listen = std::iter::once(support::bin("illumitunnel").display().to_string())
            .chain(args.iter().cloned())
            .map(|a| quote(&a))
            .collect::<Vec<_>>()
            .join(" ");
        let script = format!(
            "unset ILLUMITUNNEL_RELAY ILLUMITUNNEL_TOKEN ILLUMITUNNEL_RELAY_TOKENS RUST_BACKTRACE RUST_LOG\n\
             export ILLUMITUNNEL_HOME={} NO_COLOR=1\n{listen}\nexec sleep 60\n",
            quote(&home.display().to_string())
        );
        let script_path = home.join("run.sh");
        std::fs::write(&script_path, script).unwrap();
        let terminal = Terminal {
            socket: home.join("tmux.sock"),
        };
        let command = format!("sh {}", quote(&script_path.display().to_string()));
        let out = terminal.tmux(&[
            "new-session",
            "-d",
            "-s",
            "web",
            "-x",
            "160",
            "-y",
            "40",
            &command,
        ]);
        assert!(out.status.success(), "{out:?}");
        terminal
    }

    pub fn tmux(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap()
    }

    /// Polls the screen until it holds `needle`.
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_until(needle, |screen| screen.contains(needle))
    }

    /// Polls the screen until `ready` holds.
    pub fn wait_until(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let out = self.tmux(&["capture-pane", "-p", "-t", "web"]);
            let screen = String::from_utf8_lossy(&out.stdout).into_owned();
            if ready(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{what} not on screen:\n{screen}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}
