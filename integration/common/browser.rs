//! Debian's chromium, headless, as the web page's real browser: the DOM as
//! the browser built it (`--dump-dom`) and screenshots. Each call is one
//! browser process with a fresh profile, ended when the page has loaded.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::procs::require;

/// Headless, with nothing of its own going to the network, at one window size.
pub const CHROMIUM_ARGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
];

pub struct Chromium {
    profile: tempfile::TempDir,
}

impl Chromium {
    pub fn new() -> Chromium {
        require("chromium");
        Chromium { profile: tempfile::tempdir().unwrap() }
    }

    fn command(&self) -> Command {
        let mut c = Command::new("chromium");
        c.args(CHROMIUM_ARGS)
            .arg("--hide-scrollbars")
            .arg(format!("--user-data-dir={}", self.profile.path().display()));
        c
    }

    /// The page at `url` as the browser's DOM, serialised.
    pub fn dom(&self, url: &str) -> String {
        let out = self.command().arg("--dump-dom").arg(url).output().expect("chromium runs");
        assert!(out.status.success(), "chromium --dump-dom {url}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// A screenshot of the page at `url`, saved as `file` (PNG).
    pub fn screenshot(&self, url: &str, file: &Path) {
        let out = self.command().arg(format!("--screenshot={}", file.display())).arg(url).output().unwrap();
        assert!(out.status.success(), "chromium --screenshot {url}: {}", String::from_utf8_lossy(&out.stderr));
        let png = std::fs::read(file).unwrap_or_default();
        assert!(png.starts_with(b"\x89PNG"), "no screenshot of {url}");
    }
}

/// Where a test keeps its screenshots (artifacts of the run).
pub fn artifacts(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots").join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
