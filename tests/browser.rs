//! Self-test of the headless-browser harness (`tests/support/browser.rs`): a tiny page served
//! from this test, driven in a real headless Chromium through chromedriver.

mod support;

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::browser::{Browser, CHROMIUM};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(10);

const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>ork browser self-test</title></head>
<body>
  <h1 id="title" data-state="idle">Browser self-test</h1>
  <ul>
    <li class="item">one</li>
    <li class="item">two</li>
    <li class="item">three</li>
  </ul>
  <button id="go" type="button">Go</button>
  <p id="status" data-state="waiting">waiting</p>
  <script>
    // Changes the text a little after the click, so the harness has to wait for it.
    document.getElementById("go").addEventListener("click", () => {
      setTimeout(() => {
        const status = document.getElementById("status");
        status.textContent = "clicked";
        status.dataset.state = "done";
      }, 200);
    });
    // Appears only after load.
    setTimeout(() => {
      const late = document.createElement("p");
      late.id = "late";
      late.textContent = "late";
      document.body.appendChild(late);
    }, 300);
    console.error("self-test: deliberate console error");
    setTimeout(() => { throw new Error("self-test: deliberate uncaught error"); }, 0);
  </script>
</body>
</html>
"#;

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, kind, body) = match req.uri().path() {
        "/" => (StatusCode::OK, "text/html; charset=utf-8", PAGE),
        // No favicon, and no console error about a missing one either.
        "/favicon.ico" => (StatusCode::NO_CONTENT, "image/x-icon", ""),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found"),
    };
    let reply = Response::builder()
        .status(status)
        .header("content-type", kind)
        .body(Full::new(Bytes::from(body)))
        .expect("response");
    Ok(reply)
}

/// Serves [`PAGE`] on 127.0.0.1:0 until the test ends; returns its address.
async fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(
                http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(handle)),
            );
        }
    });
    format!("http://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_drives_a_page_in_headless_chromium() {
    let url = serve().await;
    let browser = Arc::new(Browser::start().await);
    let b = &*browser;

    b.goto(&url).await;
    assert_eq!(b.url().await, url);
    b.wait_for("#late", WAIT).await;
    assert_eq!(b.text("#title").await, "Browser self-test");
    assert_eq!(
        b.attr("#title", "data-state").await.as_deref(),
        Some("idle")
    );
    assert_eq!(b.attr("#title", "data-missing").await, None);
    assert_eq!(b.count("li.item").await, 3);
    assert_eq!(b.count(".nothing").await, 0);
    assert!(b.try_text(".nothing").await.is_err());

    assert_eq!(b.text("#status").await, "waiting");
    b.click("#go").await;
    let text = b
        .wait_until("#status to say clicked", WAIT, || async move {
            let text = b.try_text("#status").await?;
            if text == "clicked" {
                Ok(text)
            } else {
                Err(format!("#status says {text:?}"))
            }
        })
        .await;
    assert_eq!(text, "clicked");
    assert_eq!(
        b.attr("#status", "data-state").await.as_deref(),
        Some("done")
    );

    let shot = b.screenshot("browser-self-test").await;
    assert!(shot.ends_with("target/test-artifacts/browser-self-test.png"));
    let png = std::fs::read(&shot).expect("screenshot file");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");

    let errors = b
        .wait_until("both deliberate console errors", WAIT, || async move {
            let errors = b.console_errors().await;
            let has = |what: &str| errors.iter().any(|e| e.contains(what));
            if has("self-test: deliberate console error")
                && has("Uncaught Error: self-test: deliberate uncaught error")
            {
                Ok(errors)
            } else {
                Err(format!("console errors {errors:?}"))
            }
        })
        .await;
    assert_eq!(
        errors.len(),
        2,
        "only the two deliberate errors: {errors:?}"
    );
    // Reading again keeps what was read before.
    assert_eq!(b.console_errors().await, errors);

    // A wait that times out says what it waited for and what it saw, and saves a screenshot.
    let waiter = Arc::clone(&browser);
    let timed_out = tokio::spawn(async move {
        waiter.wait_for("#never", Duration::from_millis(300)).await;
    })
    .await
    .expect_err("the wait times out");
    let message = *timed_out
        .into_panic()
        .downcast::<String>()
        .expect("a panic message");
    for part in [
        "timed out after 300ms waiting for an element matching `#never`",
        "last seen: no element matches",
        &format!("page: {url}"),
        "target/test-artifacts/timeout-an-element-matching-never.png",
    ] {
        assert!(message.contains(part), "{part:?} not in: {message}");
    }

    Arc::try_unwrap(browser)
        .ok()
        .expect("the only handle left")
        .close()
        .await;
}

#[tokio::test]
#[should_panic(expected = "scripts/control-plane.sh install")]
async fn missing_chromedriver_fails_saying_how_to_install_it() {
    Browser::start_with(Path::new("/nonexistent/chromedriver"), Path::new(CHROMIUM)).await;
}
