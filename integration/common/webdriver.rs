//! A real browser driven as a person would (clicks, forms): Debian's
//! chromedriver and headless chromium, spoken to over W3C WebDriver (JSON
//! over HTTP, with the test harness's HTTP client).

use std::time::Duration;

use serde_json::{json, Value};

use super::procs::{free_port, require, Proc};

/// The W3C name of an element reference in WebDriver's JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    _driver: Proc,
    base: String,
    http: awc::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// chromedriver on a free loopback port, and one headless browser session.
    pub async fn start() -> Browser {
        require("chromedriver");
        require("chromium");
        let port = free_port();
        let log = std::env::temp_dir().join(format!("chromedriver-{port}.log"));
        let mut driver =
            Proc::spawn("chromedriver", std::process::Command::new("chromedriver").arg(format!("--port={port}")), log);
        let addr = format!("127.0.0.1:{port}");
        driver.wait_until("listening", Duration::from_secs(30), || std::net::TcpStream::connect(&addr).is_ok());
        let profile = tempfile::tempdir().unwrap();
        let http = awc::Client::builder().timeout(Duration::from_secs(60)).finish();
        let mut b = Browser { _driver: driver, base: format!("http://127.0.0.1:{port}"), http, _profile: profile };
        let mut args: Vec<String> = super::browser::CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", b._profile.path().display()));
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
        }}});
        let created = b.call("POST", "/session", caps).await;
        let id = created["sessionId"].as_str().expect("a session id").to_string();
        b.base = format!("{}/session/{id}", b.base);
        b
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let req = self.http.request(method.parse().unwrap(), &url);
        let mut resp = if body.is_null() { req.send().await } else { req.send_json(&body).await }
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let v: Value = resp.json().limit(64 << 20).await.unwrap();
        assert!(resp.status().is_success(), "webdriver {method} {path}: {v}");
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url })).await;
    }

    pub async fn url(&self) -> String {
        self.call("GET", "/url", Value::Null).await.as_str().unwrap_or_default().to_string()
    }

    /// The serialised DOM of the current page.
    pub async fn source(&self) -> String {
        self.call("GET", "/source", Value::Null).await.as_str().unwrap_or_default().to_string()
    }

    async fn find(&self, css: &str) -> String {
        let found = self.call("POST", "/element", json!({ "using": "css selector", "value": css })).await;
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}")).to_string()
    }

    /// Clicks the element `css` picks (a link, a button) and waits for the page it leads to.
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.click_element(&id).await;
    }

    /// Clicks the link whose text is `text` and waits for the page it leads to.
    pub async fn click_link(&self, text: &str) {
        let found = self.call("POST", "/element", json!({ "using": "link text", "value": text })).await;
        let id = found[ELEMENT].as_str().unwrap_or_else(|| panic!("no link {text}")).to_string();
        self.click_element(&id).await;
    }

    /// A click that navigates: chromedriver may answer it before a form's
    /// POST and the redirect after it have loaded, so this waits (bounded)
    /// until the address has changed and the new document is complete.
    async fn click_element(&self, id: &str) {
        let before = self.url().await;
        self.call("POST", &format!("/element/{id}/click"), json!({})).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready =
                self.call("POST", "/execute/sync", json!({ "script": "return document.readyState", "args": [] }));
            if self.url().await != before && ready.await == "complete" {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the click on {before} led nowhere");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Types `text` into the field `css` picks.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call("POST", &format!("/element/{id}/value"), json!({ "text": text })).await;
    }

    /// A screenshot of the current page, saved as `file` (PNG).
    pub async fn screenshot(&self, file: &std::path::Path) {
        use base64::Engine;
        let png = self.call("GET", "/screenshot", Value::Null).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"));
        std::fs::write(file, bytes).unwrap();
    }

    pub async fn quit(self) {
        self.call("DELETE", "", Value::Null).await;
    }
}
