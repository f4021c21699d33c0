//! A minimal W3C WebDriver client over chromedriver's HTTP API, enough to drive the web page
//! in a real headless Chromium: navigate, find, click, type, answer prompts, run a script,
//! take screenshots. Uses `CHROME` and `CHROMEDRIVER` from scripts/test.sh.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process with one browser session; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium at 1920×1080 (or `size`).
    pub fn start(size: (u32, u32)) -> Browser {
        let chrome = super::env_or_fail("CHROME");
        let chromedriver = super::env_or_fail("CHROMEDRIVER");
        let port = super::free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {chromedriver}: {e}"));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        super::wait_http_ok(&format!("{base}/status"), Duration::from_secs(20));
        let profile = tempfile::tempdir().unwrap().keep();
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chrome,
                    // The flags this sandbox needs: no GPU, no network beyond loopback. The
                    // page must run as a control-room screen in front does: Chrome may treat a
                    // headless window as backgrounded or occluded and then throttle its timers
                    // and pause animation frames (the overview's 10 s refresh and its render).
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                        "--disable-background-timer-throttling",
                        "--disable-backgrounding-occluded-windows",
                        "--disable-renderer-backgrounding",
                        format!("--window-size={},{}", size.0, size.1),
                        format!("--user-data-dir={}", profile.display()),
                    ]
                }
            }}
        });
        let resp: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let session = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {resp}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            http,
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp: Value = req.send().unwrap().json().unwrap();
        if let Some(err) = resp["value"].get("error") {
            panic!("webdriver {path}: {err} {}", resp["value"]["message"]);
        }
        resp["value"].clone()
    }

    fn try_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Option<Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp: Value = req.send().ok()?.json().ok()?;
        if resp["value"].get("error").is_some() {
            return None;
        }
        Some(resp["value"].clone())
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })));
    }

    /// Elements matching a CSS selector (possibly none).
    pub fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.call(
            reqwest::Method::POST,
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT_KEY].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until at least one element matches `css`; returns the first.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find_all(css).into_iter().next() {
                return e;
            }
            if Instant::now() > deadline {
                let html = self.script("return document.body.innerHTML.slice(0, 3000)", json!([]));
                panic!("no element {css:?} within {timeout:?}; page: {html}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `count(css)` satisfies `ok`.
    pub fn wait_count(&self, css: &str, timeout: Duration, ok: impl Fn(usize) -> bool) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.find_all(css).len();
            if ok(n) {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "{css:?}: count {n} never satisfied the condition"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The visible text of an element.
    pub fn text(&self, element: &str) -> String {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Text of the first element matching `css` (None if there is none), read in one script
    /// call so a live re-render between find and read cannot make it stale.
    pub fn text_of(&self, css: &str) -> Option<String> {
        let v = self.script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
            json!([css]),
        );
        v.as_str().map(String::from)
    }

    /// Clicks the first element matching `css` from a timer, so a `prompt()` it opens does
    /// not block the script call; returns whether an element was found.
    pub fn click_css(&self, css: &str) -> bool {
        self.script(
            "const e = document.querySelector(arguments[0]); if (!e) return false; setTimeout(() => e.click(), 0); return true",
            json!([css]),
        )
        .as_bool()
        .unwrap_or(false)
    }

    /// Clicks an element.
    pub fn click(&self, element: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    /// Types into an element.
    pub fn type_text(&self, element: &str, text: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Answers an open `prompt()` with `text` and accepts it (waits for it to open).
    pub fn answer_prompt(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self
            .try_call(reqwest::Method::GET, "/alert/text", None)
            .is_none()
        {
            assert!(Instant::now() < deadline, "no prompt opened");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.call(
            reqwest::Method::POST,
            "/alert/text",
            Some(json!({ "text": text })),
        );
        self.call(reqwest::Method::POST, "/alert/accept", Some(json!({})));
    }

    /// Runs a synchronous script and returns its result.
    pub fn script(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Runs an async script (`arguments[arguments.length - 1]` is the callback).
    pub fn script_async(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Saves a PNG screenshot of the viewport to `path` (directories are created).
    pub fn screenshot(&self, path: &std::path::Path) {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
