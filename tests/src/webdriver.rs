//! A small W3C WebDriver client driving Debian's headless Chromium through chromedriver,
//! for the dashboard's browser tests.
//!
//! Written here rather than taken from fantoccini or thirtyfour: both bring their own
//! hyper/TLS stacks (native-tls/OpenSSL or a second rustls set-up) for what is a dozen
//! JSON calls to a driver on 127.0.0.1; reqwest, already in the tree, does them.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{block_on, free_port};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver and one headless Chromium session; both end when this is dropped.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
    http: reqwest::Client,
    /// chromedriver's log: removed at the end unless the test failed.
    log: PathBuf,
}

/// Where Debian puts them (`scripts/install-deps` installs chromium and chromium-driver).
fn tool(name: &str) -> PathBuf {
    let p = PathBuf::from("/usr/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: scripts/install-deps (Debian packages chromium, chromium-driver)",
        p.display()
    );
    p
}

impl Browser {
    pub fn start() -> Browser {
        Browser::start_in_zone("UTC")
    }

    /// A browser whose local time zone is `tz` (an IANA name: the `TZ` of chromedriver and
    /// so of Chromium), to tell the page's UTC times from the browser's.
    pub fn start_in_zone(tz: &str) -> Browser {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("chromedriver-{port}.log"));
        let driver = Command::new(tool("chromedriver"))
            .env("TZ", tz)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        // Ready when /status answers ready (polled; chromedriver starts in ~100 ms).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let url = format!("{base}/status");
            let ready = block_on(async {
                let r = http.get(&url).send().await.ok()?;
                r.json::<Value>().await.ok()
            })
            .and_then(|v| v["value"]["ready"].as_bool())
            .unwrap_or(false);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50)); // polling a process that starts
        }
        let profile = tempfile::Builder::new()
            .prefix("chromium")
            .tempdir()
            .unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": tool("chromium").display().to_string(),
                // The flags the machine's notes name: without the background-networking
                // ones Chromium keeps trying the (closed) network.
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1400,1000",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            _profile: profile,
            http,
            log,
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        b
    }

    /// One WebDriver command; returns its `value`, panics on a WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{}", self.base, path);
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let http = self.http.clone();
        let v: Value = block_on(async move {
            let mut r = http.request(m, &url);
            if let Some(b) = body {
                r = r.json(&b);
            }
            r.send().await.unwrap().json().await.unwrap()
        });
        let value = v["value"].clone();
        if let Some(e) = value.get("error") {
            panic!("WebDriver {method} {path}: {e}: {}", value["message"]);
        }
        value
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })));
    }

    /// Resizes the window (a phone's width: 430).
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.call(
            "POST",
            &self.s("/window/rect"),
            Some(json!({ "width": width, "height": height })),
        );
    }

    pub fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element matching a CSS selector (panics when there is none).
    pub fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT].as_str().unwrap().to_owned()
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/click")),
            Some(json!({})),
        );
    }

    /// Clears a field and types `text` into it.
    pub fn fill(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/clear")),
            Some(json!({})),
        );
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/value")),
            Some(json!({ "text": text })),
        );
    }

    pub fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call("GET", &self.s(&format!("/element/{e}/text")), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Accepts the open `confirm()` dialog.
    pub fn accept_dialog(&self) {
        self.call("POST", &self.s("/alert/accept"), Some(json!({})));
    }

    /// The `textContent` of the first element matching `css`, hidden or not ("" when
    /// none; [`Browser::text`] is the rendered text of one that must exist).
    pub fn text_content(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// The dashboard's newest view's time (`body.dataset.generated`, ms; 0 before one).
    pub fn view_generated(&self) -> i64 {
        self.js("return Number(document.body.dataset.generated);", json!([]))
            .as_i64()
            .unwrap_or(0)
    }

    /// Types `text` into the open `prompt()` and accepts it.
    pub fn answer_prompt(&self, text: &str) {
        self.call(
            "POST",
            &self.s("/alert/text"),
            Some(json!({ "text": text })),
        );
        self.call("POST", &self.s("/alert/accept"), Some(json!({})));
    }

    /// Dismisses the open `confirm()` dialog (its Cancel).
    pub fn dismiss_dialog(&self) {
        self.call("POST", &self.s("/alert/dismiss"), Some(json!({})));
    }

    /// The page's cookies as `name=value; ...` (to fetch what the page links to as the
    /// logged-in user).
    pub fn cookie_header(&self) -> String {
        let v = self.call("GET", &self.s("/cookie"), None);
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{}={}",
                    c["name"].as_str().unwrap(),
                    c["value"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Saves a PNG screenshot of the window.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self.call("GET", &self.s("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Polls `f` (a page query) until it gives `Some`, or panics naming `what`.
    pub fn wait<T>(&self, what: &str, within: Duration, f: impl FnMut(&Browser) -> Option<T>) -> T {
        self.wait_explained(what, within, f, |_| String::new())
    }

    /// [`Browser::wait`], and on failure the panic also shows `explain` (what the page
    /// showed instead).
    pub fn wait_explained<T>(
        &self,
        what: &str,
        within: Duration,
        mut f: impl FnMut(&Browser) -> Option<T>,
        explain: impl Fn(&Browser) -> String,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the page never showed {what} within {within:?}; it showed:\n{}",
                    explain(self)
                );
            }
            std::thread::sleep(Duration::from_millis(200)); // polling the page
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.base, self.session);
            let http = self.http.clone();
            let _ = block_on(async move { http.delete(&url).send().await });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
