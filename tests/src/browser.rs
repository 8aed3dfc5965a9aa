//! A real headless Chromium (Debian's `chromium`), driven over WebDriver by `chromedriver`
//! (Debian's `chromium-driver`) through fantoccini. Each [`Browser`] runs its own
//! chromedriver on a free loopback port and its own browser with a fresh, empty profile, with
//! the flags that work as root on a machine with no network: no sandbox, no GPU, no QUIC, no
//! background networking, component updates or sync.
//!
//! Screenshots go to [`screenshots_dir`] (`target/screenshots/`, or
//! `$TENET_SCREENSHOTS` when set), one PNG per page a test names; CI keeps that folder as
//! artifacts (docs/console.md).

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

/// Where screenshots are written.
pub fn screenshots_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TENET_SCREENSHOTS") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("cannot locate the test executable");
    // target/<profile>/deps/<test> → target/screenshots
    let target = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("screenshots")
}

/// A chromedriver and the Chromium it drives; both are ended when dropped. Its calls block
/// (an internal runtime drives the WebDriver client), so tests stay plain synchronous code
/// beside the blocking HTTP client of [`crate::collector`].
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    rt: tokio::runtime::Runtime,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with an empty profile.
    pub fn start() -> Browser {
        let chromium = crate::tool("chromium")
            .get_program()
            .to_string_lossy()
            .into_owned();
        let port = free_port();
        let driver = crate::tool("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, with the browser it starts: both are ended together,
            // even when a test panics before closing the session.
            .process_group(0)
            .spawn()
            .expect("cannot start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {url}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().expect("temporary profile directory");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,1300",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": chromium, "args": args }),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the WebDriver client");
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = rt
            .block_on(
                ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&url),
            )
            .expect("cannot open a Chromium session through chromedriver");
        Browser {
            client,
            rt,
            driver,
            _profile: profile,
        }
    }

    /// Runs a WebDriver call to its end.
    pub fn run<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    /// Goes to `url`.
    pub fn goto(&self, url: &str) {
        self.run(self.client.goto(url))
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// The element matching a CSS selector (waiting for it a few seconds).
    pub fn find(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.run(self.client.find(Locator::Css(css))) {
                Ok(e) => return e,
                Err(e) if Instant::now() > deadline => {
                    let url = self.run(self.client.current_url()).map(|u| u.to_string());
                    panic!("no element {css} on {url:?}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// An attribute of the element matching a CSS selector.
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let e = self.find(css);
        self.run(e.attr(name))
            .unwrap_or_else(|err| panic!("attribute {name} of {css}: {err}"))
    }

    /// Whether an element matches (now).
    pub fn has(&self, css: &str) -> bool {
        self.run(self.client.find(Locator::Css(css))).is_ok()
    }

    /// The text of the element matching a CSS selector.
    pub fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.run(e.text())
            .unwrap_or_else(|e| panic!("text of {css}: {e}"))
    }

    /// The current path (and query).
    pub fn path(&self) -> String {
        let u = self.run(self.client.current_url()).expect("current url");
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    /// Replaces the value of an input.
    pub fn fill(&self, css: &str, value: &str) {
        let e = self.find(css);
        self.run(e.clear())
            .unwrap_or_else(|err| panic!("clear {css}: {err}"));
        self.run(e.send_keys(value))
            .unwrap_or_else(|err| panic!("type into {css}: {err}"));
    }

    /// Clicks an element.
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.run(e.click())
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Saves a PNG of the page as `<screenshots_dir>/<name>.png` and returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.run(self.client.screenshot()).expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).expect("screenshots directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Runs a script in the page and returns its value.
    pub fn js(&self, script: &str) -> serde_json::Value {
        self.run(self.client.execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    /// Waits (up to `secs`) until `f` holds, polling every 100 ms.
    pub fn wait_until(&self, secs: u64, what: &str, mut f: impl FnMut(&Browser) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f(self) {
            if Instant::now() > deadline {
                let shot = self.screenshot("timeout");
                let path = self.path();
                let text = self
                    .run(self.client.find(Locator::Css("body")))
                    .ok()
                    .and_then(|b| self.run(b.text()).ok())
                    .unwrap_or_default();
                panic!(
                    "timed out waiting for {what}; at {path} ({}):\n{text}",
                    shot.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ends the session (the driver and anything left of the browser go on drop).
    pub fn close(self) {
        let _ = self.run(self.client.clone().close());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.driver.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.driver.wait();
    }
}
