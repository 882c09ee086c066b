//! A real headless Chromium for the web inspector's tests, driven through chromedriver (the
//! Debian packages `chromium` and `chromium-driver`, which `.ci/run` installs). The test starts
//! chromedriver on a free port itself and ends the browser session and then chromedriver (by
//! PID) when the [`Browser`] is dropped. Every wait polls the page with a deadline.

use std::ffi::OsStr;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tempfile::TempDir;

use super::{closed_port, poll_until, temp_dir, ChildGuard, DEADLINE};

/// The Debian packages the browser tests need.
pub const PACKAGES: &str = "chromium and chromium-driver";

/// The first file called `name` in the directories of `path` (PATH's format).
fn find_on(path: &OsStr, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Chromium and chromedriver found on `path`, or the sentence that says what to install.
pub fn tools_on(path: &OsStr) -> Result<(PathBuf, PathBuf), String> {
    let chromium = ["chromium", "chromium-browser"]
        .iter()
        .find_map(|name| find_on(path, name));
    match (chromium, find_on(path, "chromedriver")) {
        (Some(chromium), Some(driver)) => Ok((chromium, driver)),
        (chromium, driver) => Err(format!(
            "the web inspector's browser tests need headless Chromium and chromedriver \
             (found chromium: {}, chromedriver: {}): install the Debian packages {PACKAGES} \
             (apt-get install chromium chromium-driver; .ci/run does)",
            chromium.is_some(),
            driver.is_some()
        )),
    }
}

/// A headless Chromium session; the calls block on the browser's own small runtime.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    // Dropped after the session ends: chromedriver by PID, then the profile directory.
    driver: ChildGuard,
    profile: TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session of 1400×900 (the
    /// system's colour scheme dark when `dark`); fails naming the packages when either is not
    /// installed.
    pub fn start(dark: bool) -> Browser {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let (chromium, chromedriver) = tools_on(&path).unwrap_or_else(|e| panic!("{e}"));
        let port = closed_port();
        let mut cmd = Command::new(&chromedriver);
        cmd.arg(format!("--port={port}"));
        let driver = ChildGuard::spawn(cmd);
        poll_until("chromedriver to listen", DEADLINE, || {
            TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the WebDriver client");
        let profile = temp_dir();
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--window-size=1400,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if dark {
            args.push("--force-dark-mode".into());
        }
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": args,
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object literal")
        };
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let url = format!("http://127.0.0.1:{port}");
        let connecting = builder.connect(&url);
        let client = match rt.block_on(async { tokio::time::timeout(DEADLINE, connecting).await }) {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!("could not start a Chromium session: {e}"),
            Err(_) => panic!("no Chromium session within {DEADLINE:?}"),
        };
        Browser {
            rt,
            client: Some(client),
            driver,
            profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a live session")
    }

    /// Opens `url` and waits for it to load.
    pub fn goto(&self, url: &str) {
        self.rt
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns what it returns.
    pub fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.rt
            .block_on(self.client().execute(script, args))
            .unwrap_or_else(|e| panic!("run {script:?}: {e}"))
    }

    /// Polls `script` until it returns something other than `null`/`false`, for at most
    /// [`DEADLINE`]; returns that value.
    pub fn wait_js(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        poll_until(what, DEADLINE, || match self.js(script, args.clone()) {
            Value::Null | Value::Bool(false) => Err(self.page_text()),
            found => Ok(found),
        })
    }

    /// The first element matching `css`, waiting for it up to [`DEADLINE`].
    pub fn find(&self, css: &str) -> Element {
        self.rt
            .block_on(
                self.client()
                    .wait()
                    .at_most(DEADLINE)
                    .for_element(Locator::Css(css)),
            )
            .unwrap_or_else(|e| panic!("no {css} within {DEADLINE:?}: {e}\n{}", self.page_text()))
    }

    /// Clicks the first element matching `css`; when the page redraws it between the finding
    /// and the click (a stale element), finds it again, up to [`DEADLINE`].
    pub fn click(&self, css: &str) {
        poll_until(&format!("a click on {css}"), DEADLINE, || {
            let element = self.find(css);
            match self.rt.block_on(element.click()) {
                Ok(()) => Ok(()),
                Err(e) if e.to_string().contains("stale element") => Err(e.to_string()),
                Err(e) => panic!("click {css}: {e}"),
            }
        });
    }

    /// Types `keys` into the first element matching `css` (after clearing it when `clear`).
    pub fn type_into(&self, css: &str, keys: &str, clear: bool) {
        let element = self.find(css);
        self.rt
            .block_on(async {
                if clear {
                    element.clear().await?;
                }
                element.send_keys(keys).await
            })
            .unwrap_or_else(|e| panic!("type {keys:?} into {css}: {e}"));
    }

    /// What the page shows as text, for failure messages.
    pub fn page_text(&self) -> String {
        match self.rt.block_on(
            self.client()
                .execute("return document.body.innerText;", vec![]),
        ) {
            Ok(Value::String(text)) => text,
            other => format!("{other:?}"),
        }
    }

    /// Writes a PNG of the window to `path`; returns its size in bytes.
    pub fn screenshot(&self, path: &Path) -> usize {
        let png = self
            .rt
            .block_on(self.client().screenshot())
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        std::fs::write(path, &png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        png.len()
    }

    /// chromedriver's process id.
    pub fn driver_pid(&self) -> u32 {
        self.driver.pid()
    }

    /// The browser's profile directory.
    pub fn profile(&self) -> &Path {
        self.profile.path()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session quits Chromium; chromedriver is then killed by its guard.
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
    }
}

/// `target/` of this build (the test executable lives in `target/<profile>/deps/`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.ancestors()
        .nth(3)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}
