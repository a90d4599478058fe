//! A real headless Chromium driven through WebDriver (`chromedriver`, via the `fantoccini`
//! client), for the tests of the web dashboard.
//!
//! [`Browser::start`] runs `chromedriver --port=FREE` as a child process (its own process group,
//! killed with everything it started when the `Browser` is dropped), waits until it is ready and
//! opens a session with `/usr/bin/chromium` headless on a fresh temporary profile. The helpers
//! find elements by CSS selector and panic with a message saying what was expected and what the
//! page showed; waits poll against a time limit and save a screenshot when they time out.
//! Screenshots go to `target/test-artifacts/NAME.png`.
//!
//! The browser's console (`console.error`, uncaught exceptions, failed loads) is read through
//! chromedriver's log endpoint (`goog:loggingPrefs` `{"browser": "ALL"}`): see
//! [`Browser::console_errors`].
//!
//! Needs the Debian packages `chromium` and `chromium-driver`, installed by
//! `scripts/control-plane.sh install` (`ORK_TEST_CHROMEDRIVER` / `ORK_TEST_CHROMIUM` point at
//! other binaries). Tests using a `Browser` fail, never skip, when they are missing.

use std::future::Future;
use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use super::cluster::free_port;

/// The chromedriver binary (found on PATH unless `ORK_TEST_CHROMEDRIVER` names another).
pub const CHROMEDRIVER: &str = "chromedriver";
/// The browser chromedriver starts (unless `ORK_TEST_CHROMIUM` names another).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// What to run when they are missing.
pub const INSTALL_HINT: &str = "run `sudo scripts/control-plane.sh install` (installs the Debian packages chromium and chromium-driver)";

/// How long chromedriver may take to answer /status, and the session to open.
const STARTUP_LIMIT: Duration = Duration::from_secs(60);
/// Pause between two polls of a wait.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Limit of one plain HTTP request to chromedriver (status, logs).
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
];

/// One entry of the browser's console log.
#[derive(Clone, Debug)]
pub struct ConsoleEntry {
    /// `SEVERE` (errors), `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    /// `console-api`, `javascript` (uncaught exceptions), `network`, ...
    pub source: String,
    pub message: String,
}

/// A headless Chromium session and the chromedriver serving it.
pub struct Browser {
    client: Client,
    http: HttpClient<HttpConnector, Full<Bytes>>,
    base: String,
    session: String,
    /// Console entries read so far (the log endpoint hands each entry out once).
    console: Mutex<Vec<ConsoleEntry>>,
    driver: Child,
    /// Holds the profile (`profile/`) and chromedriver's output (`chromedriver.log`); removed
    /// after the processes are killed.
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; panics (saying how to install them)
    /// when the binaries are missing.
    pub async fn start() -> Browser {
        let driver = std::env::var_os("ORK_TEST_CHROMEDRIVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(CHROMEDRIVER));
        let chromium = std::env::var_os("ORK_TEST_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(CHROMIUM));
        Self::start_with(&driver, &chromium).await
    }

    /// [`Browser::start`] with explicit binaries.
    pub async fn start_with(chromedriver: &Path, chromium: &Path) -> Browser {
        assert!(
            chromium.is_file(),
            "the headless-browser tests need Chromium at {}, which is missing; {INSTALL_HINT}",
            chromium.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("ork-browser-")
            .tempdir()
            .expect("temporary directory for the browser");
        let profile = dir.path().join("profile");
        std::fs::create_dir(&profile).expect("browser profile directory");
        let log_path = dir.path().join("chromedriver.log");
        let log = std::fs::File::create(&log_path).expect("chromedriver log file");
        let port = free_port();
        let spawned = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("chromedriver log file"))
            .stderr(log)
            // Its own process group: dropping the Browser kills chromedriver and every browser
            // process it started at once.
            .process_group(0)
            .spawn();
        let driver = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "the headless-browser tests need `{}`, which is missing ({e}); {INSTALL_HINT}",
                chromedriver.display()
            ),
            Err(e) => panic!("cannot start `{}`: {e}", chromedriver.display()),
        };
        let base = format!("http://127.0.0.1:{port}");
        let http = HttpClient::builder(TokioExecutor::new()).build_http();
        let mut starting = Starting {
            driver: Some(driver),
            log: log_path,
        };
        starting.wait_ready(&http, &base).await;

        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": CHROMIUM_ARGS
                    .iter()
                    .map(|a| a.to_string())
                    .chain([format!("--user-data-dir={}", profile.display())])
                    .collect::<Vec<_>>(),
            },
            "goog:loggingPrefs": {"browser": "ALL"},
            "timeouts": {"pageLoad": 30_000, "script": 10_000, "implicit": 0},
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let connect = builder.connect(&base);
        let client = match tokio::time::timeout(STARTUP_LIMIT, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => starting.fail(&format!("cannot open a Chromium session: {e}")),
            Err(_) => starting.fail(&format!("no Chromium session after {STARTUP_LIMIT:?}")),
        };
        let session = match client.session_id().await {
            Ok(Some(id)) => id,
            other => starting.fail(&format!("no WebDriver session id: {other:?}")),
        };
        Browser {
            client,
            http,
            base,
            session,
            console: Mutex::new(Vec::new()),
            driver: starting.driver.take().expect("chromedriver child"),
            dir,
        }
    }

    /// The WebDriver client, for what the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Loads `url` and waits for its `load` event.
    pub async fn goto(&self, url: &str) {
        if let Err(e) = self.client.goto(url).await {
            panic!("cannot load {url}: {e}");
        }
    }

    /// The address of the page shown.
    pub async fn url(&self) -> String {
        match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(e) => panic!("cannot read the page's address: {e}"),
        }
    }

    /// Runs `script` (a function body: `return ...;` gives the value) in the page.
    pub async fn execute(&self, script: &str) -> Value {
        match self.client.execute(script, Vec::new()).await {
            Ok(value) => value,
            Err(e) => panic!("script failed: {e}\nscript: {script}"),
        }
    }

    /// Waits until an element matches `css`, polling for at most `limit`; returns the first.
    pub async fn wait_for(&self, css: &str, limit: Duration) -> Element {
        self.wait_until(
            &format!("an element matching `{css}`"),
            limit,
            || async move {
                match self.client.find_all(Locator::Css(css)).await {
                    Ok(mut found) if !found.is_empty() => Ok(found.swap_remove(0)),
                    Ok(_) => Err("no element matches".to_string()),
                    Err(e) => Err(format!("WebDriver error: {e}")),
                }
            },
        )
        .await
    }

    /// Polls `check` every 50 ms until it returns `Ok`, for at most `limit`. `Err` says what it
    /// saw instead; on timeout this panics with `what`, the last thing seen and the page's address,
    /// and saves a screenshot.
    pub async fn wait_until<T, F, Fut>(&self, what: &str, limit: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let deadline = Instant::now() + limit;
        loop {
            let seen = match check().await {
                Ok(value) => return value,
                Err(seen) => seen,
            };
            if Instant::now() >= deadline {
                let url = match self.client.current_url().await {
                    Ok(url) => url.to_string(),
                    Err(e) => format!("? ({e})"),
                };
                let shot = self
                    .try_screenshot(&format!("timeout-{}", slug(what)))
                    .await;
                panic!(
                    "timed out after {limit:?} waiting for {what}\n  last seen: {seen}\n  page: {url}\n  screenshot: {shot}"
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The rendered text of the first element matching `css`; panics if none does.
    pub async fn text(&self, css: &str) -> String {
        self.try_text(css).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Browser::text`] as a `Result` (for [`Browser::wait_until`] checks).
    pub async fn try_text(&self, css: &str) -> Result<String, String> {
        let element = self.find(css).await?;
        element
            .text()
            .await
            .map_err(|e| format!("cannot read the text of `{css}`: {e}"))
    }

    /// Attribute `name` of the first element matching `css` (`None`: the element has no such
    /// attribute); panics if no element matches.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.try_attr(css, name)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Browser::attr`] as a `Result` (for [`Browser::wait_until`] checks).
    pub async fn try_attr(&self, css: &str, name: &str) -> Result<Option<String>, String> {
        let element = self.find(css).await?;
        element
            .attr(name)
            .await
            .map_err(|e| format!("cannot read attribute `{name}` of `{css}`: {e}"))
    }

    /// Clicks the first element matching `css`; panics if none does or it cannot be clicked.
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await.unwrap_or_else(|e| panic!("{e}"));
        if let Err(e) = element.click().await {
            panic!("cannot click `{css}`: {e}");
        }
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        match self.client.find_all(Locator::Css(css)).await {
            Ok(found) => found.len(),
            Err(e) => panic!("cannot look for `{css}`: {e}"),
        }
    }

    /// Saves a screenshot of the window to `target/test-artifacts/NAME.png`, prints and returns
    /// its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = match self.client.screenshot().await {
            Ok(png) => png,
            Err(e) => panic!("cannot take screenshot {name}: {e}"),
        };
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        println!("screenshot: {}", path.display());
        path
    }

    /// Every console entry the browser has logged since the session started (all levels).
    pub async fn console(&self) -> Vec<ConsoleEntry> {
        let fresh = self.read_console().await;
        let mut all = self.console.lock().unwrap();
        all.extend(fresh);
        all.clone()
    }

    /// The messages of the console's errors (`SEVERE`: `console.error`, uncaught exceptions,
    /// failed loads) since the session started.
    pub async fn console_errors(&self) -> Vec<String> {
        self.console()
            .await
            .into_iter()
            .filter(|e| e.level == "SEVERE")
            .map(|e| e.message)
            .collect()
    }

    /// Panics listing them if the browser has logged any console error.
    pub async fn assert_no_console_errors(&self) {
        let errors = self.console_errors().await;
        assert!(
            errors.is_empty(),
            "the browser logged {} console error(s):\n  {}",
            errors.len(),
            errors.join("\n  ")
        );
    }

    /// Ends the session (Chromium quits); dropping the `Browser` then stops chromedriver.
    /// Dropping without this is fine too: everything is killed.
    pub async fn close(self) {
        let _ = tokio::time::timeout(REQUEST_LIMIT, self.client.clone().close()).await;
    }

    /// The entries logged since the last read (chromedriver hands each out once).
    async fn read_console(&self) -> Vec<ConsoleEntry> {
        let url = format!("{}/session/{}/se/log", self.base, self.session);
        let reply = request(
            &self.http,
            Method::POST,
            &url,
            Some(json!({"type": "browser"})),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot read the browser's console log: {e}"));
        let Some(entries) = reply["value"].as_array() else {
            panic!("unexpected reply to {url}: {reply}");
        };
        entries
            .iter()
            .map(|e| ConsoleEntry {
                level: e["level"].as_str().unwrap_or_default().to_string(),
                source: e["source"].as_str().unwrap_or_default().to_string(),
                message: e["message"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }

    async fn find(&self, css: &str) -> Result<Element, String> {
        match self.client.find_all(Locator::Css(css)).await {
            Ok(mut found) if !found.is_empty() => Ok(found.swap_remove(0)),
            Ok(_) => Err(format!("no element matches `{css}`")),
            Err(e) => Err(format!("cannot look for `{css}`: {e}")),
        }
    }

    async fn try_screenshot(&self, name: &str) -> String {
        match self.client.screenshot().await {
            Ok(png) => {
                let dir = artifacts_dir();
                let path = dir.join(format!("{name}.png"));
                match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, png)) {
                    Ok(()) => path.display().to_string(),
                    Err(e) => format!("cannot write {}: {e}", path.display()),
                }
            }
            Err(e) => format!("cannot take one: {e}"),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // `dir` (profile, log) is removed after this, once nothing writes to it any more.
        kill_group(&mut self.driver);
    }
}

/// chromedriver while the session opens: killed (with its group) if opening fails.
struct Starting {
    driver: Option<Child>,
    log: PathBuf,
}

impl Starting {
    /// Polls chromedriver's /status until it says ready.
    async fn wait_ready(&mut self, http: &HttpClient<HttpConnector, Full<Bytes>>, base: &str) {
        let deadline = Instant::now() + STARTUP_LIMIT;
        let url = format!("{base}/status");
        loop {
            let exited = self
                .driver
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.fail(&format!("chromedriver exited during startup ({status})"));
            }
            let seen = match request(http, Method::GET, &url, None).await {
                Ok(reply) if reply["value"]["ready"] == json!(true) => return,
                Ok(reply) => format!("not ready: {reply}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "chromedriver not ready after {STARTUP_LIMIT:?} (last: {seen})"
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn fail(&mut self, why: &str) -> ! {
        if let Some(mut child) = self.driver.take() {
            kill_group(&mut child);
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{why}\n---- last lines of chromedriver's output ----\n{}",
            tail.join("\n")
        );
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut child) = self.driver.take() {
            kill_group(&mut child);
        }
    }
}

/// SIGKILLs the process group `child` leads (chromedriver and the browser processes it
/// started) and reaps `child`.
fn kill_group(child: &mut Child) {
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
}

/// One plain-HTTP JSON request to chromedriver.
async fn request(
    http: &HttpClient<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad request to {url}: {e}"))?;
    let exchange = async {
        let reply = http.request(req).await.map_err(|e| format!("{url}: {e}"))?;
        let status = reply.status();
        let bytes = reply
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        if !status.is_success() {
            return Err(format!("{url}: HTTP {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{url}: {e}: {text}"))
    };
    tokio::time::timeout(REQUEST_LIMIT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("{url}: no answer within {REQUEST_LIMIT:?}")))
}

/// `target/test-artifacts` of the repository.
pub fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts")
}

/// `what` reduced to a file name.
fn slug(what: &str) -> String {
    let mut out = String::new();
    for c in what.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').chars().take(60).collect()
}
