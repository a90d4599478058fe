//! `ork dashboard` and `ork run --dashboard`: a web page, served from the binary, that lists runs,
//! draws a run's DAG coloured by phase and live, shows a task's attempts and streams its logs,
//! and has cancel, suspend, resume and rerun buttons.
//!
//! The server runs on the user's machine with the user's own credentials ([`cluster`]), or over
//! the one local run ([`local`]); the page (`page/`) talks to it through a small JSON API:
//!
//! - `GET /api/context`, `GET /api/runs?namespace=NS`, `GET /api/runs/NS/NAME`;
//! - `GET /api/runs/NS/NAME/watch`: server-sent events, a `run` event per change, `gone` when
//!   the run is deleted;
//! - `GET /api/runs/NS/NAME/logs?task=T&attempt=N&follow=true`: the attempt's log as it grows;
//! - `POST /api/runs/NS/NAME/actions/cancel|suspend|resume|rerun`.
//!
//! Errors are `{"error": "…"}` with the API server's status code (403 when RBAC says no).

pub mod cluster;
pub mod local;
pub mod view;

use std::convert::Infallible;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::kubernetes::run_commands::RunCommand;
pub use cluster::ClusterSource;
pub use local::{LOCAL_NAMESPACE, LocalSource, Tee};

/// The page itself: three files, built into the binary.
const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");

/// An attempt's log, chunk by chunk.
pub type LogBody = BoxStream<'static, std::io::Result<Vec<u8>>>;

/// What the page learns first: where it is and which namespaces it may offer.
#[derive(Clone, Debug, Serialize)]
pub struct Context {
    pub mode: &'static str,
    pub namespace: String,
    /// `None` when the user may not list namespaces: the page asks for one by name.
    pub namespaces: Option<Vec<String>>,
}

/// A request the dashboard will not or cannot serve, in the user's terms.
#[derive(Debug)]
pub struct ApiError {
    pub code: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::BAD_GATEWAY);
        (code, axum::Json(serde_json::json!({"error": self.message}))).into_response()
    }
}

/// Where the runs come from.
pub enum Source {
    Cluster(ClusterSource),
    Local(LocalSource),
}

type Shared = Arc<Source>;

/// Who may use a dashboard: requests to its own address that carry its token (from the address
/// it printed, then as a cookie).
#[derive(Clone, Debug)]
pub struct Access {
    pub at: SocketAddr,
    pub token: String,
}

impl Access {
    /// A fresh random token for a server listening on `at`.
    pub fn new(at: SocketAddr) -> std::io::Result<Self> {
        use std::io::Read;
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        let token = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { at, token })
    }

    /// The address to open: it hands the page its token.
    pub fn url(&self, fragment: &str) -> String {
        format!("http://{}/?token={}{fragment}", self.at, self.token)
    }

    /// The cookie's name: one per port, as cookies do not tell ports apart.
    fn cookie(&self) -> String {
        format!("ork-dashboard-{}", self.at.port())
    }
}

/// The dashboard's routes over `source`, for the users `access` lets in.
pub fn router(source: Source, access: Access) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/style.css",
            get(|| async { page(STYLE_CSS, "text/css; charset=utf-8") }),
        )
        .route("/api/context", get(context))
        .route("/api/runs", get(runs))
        .route("/api/runs/{namespace}/{name}", get(run))
        .route("/api/runs/{namespace}/{name}/watch", get(watch))
        .route("/api/runs/{namespace}/{name}/logs", get(logs))
        .route("/api/runs/{namespace}/{name}/actions/{action}", post(act))
        .layer(axum::middleware::from_fn_with_state(access, guard))
        .with_state(Arc::new(source))
}

/// The server acts with the user's credentials, so only the user's own page may use it:
///
/// - every request needs the token ork printed: the address `/?token=…` sets it as a cookie
///   (`SameSite=Strict`, so another site's page never sends it, and `HttpOnly`), and another
///   user of this machine, who cannot read the terminal, cannot guess it;
/// - the `Host` must be the server's own address, so a site cannot read it through a name of its
///   own that resolves to this machine (DNS rebinding);
/// - a POST with another site's `Origin` is refused, and no page may frame this one
///   (clickjacking);
/// - names in the path or query must be names Kubernetes could have.
async fn guard(
    State(access): State<Access>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = match refusal(&access, &request) {
        Some(Refusal::Error(error)) => error.into_response(),
        Some(Refusal::SetCookie(location)) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, location),
                (
                    header::SET_COOKIE,
                    format!(
                        "{}={}; Path=/; HttpOnly; SameSite=Strict",
                        access.cookie(),
                        access.token
                    ),
                ),
            ],
        )
            .into_response(),
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    headers.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("frame-ancestors 'none'"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    response
}

/// What [`guard`] does instead of serving a request.
#[derive(Debug)]
enum Refusal {
    Error(ApiError),
    /// The token came in the address: keep it as a cookie and go to this place without it.
    SetCookie(String),
}

/// Why [`guard`] turns `request` away, if it does.
fn refusal(access: &Access, request: &axum::extract::Request) -> Option<Refusal> {
    let refuse = |code, message: &str| Some(Refusal::Error(ApiError::new(code, message)));
    let header = |name: header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let at = access.at;
    let port = at.port();
    let ours = |host: &str| {
        [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
            at.to_string(),
        ]
        .iter()
        .any(|h| h == host)
    };
    if at.ip().is_loopback() && !header(header::HOST).is_some_and(|h| ours(&h)) {
        return refuse(403, "this dashboard answers only to its own address");
    }
    let query = request.uri().query().unwrap_or_default();
    let given = |key: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    let cookie = access.cookie();
    let has_cookie = header(header::COOKIE).is_some_and(|all| {
        all.split(';')
            .filter_map(|c| c.trim().split_once('='))
            .any(|(name, value)| name == cookie && value == access.token)
    });
    if request.method() == axum::http::Method::GET
        && given("token").as_deref() == Some(&access.token)
    {
        return Some(Refusal::SetCookie(request.uri().path().to_string()));
    }
    if !has_cookie {
        return refuse(
            401,
            "open the address `ork` printed (it ends in ?token=…): this dashboard acts with \
             its user's credentials and serves only them",
        );
    }
    if request.method() != axum::http::Method::GET
        && let Some(origin) = header(header::ORIGIN)
        && origin
            .strip_prefix("http://")
            .is_none_or(|host| header(header::HOST).is_none_or(|h| h != host))
    {
        return refuse(403, "a page of another site cannot act here");
    }
    let path = request.uri().path();
    if let Some(rest) = path.strip_prefix("/api/runs/") {
        let mut parts = rest.split('/');
        let namespace = parts.next().unwrap_or_default();
        let name = parts.next().unwrap_or_default();
        let problem = crate::compile::names::dns_label_error(namespace)
            .map(|p| format!("namespace: {p}"))
            .or_else(|| crate::compile::names::object_name_error("Run", name));
        if let Some(problem) = problem {
            return refuse(400, &problem);
        }
    }
    if path == "/api/runs"
        && let Some(namespace) = given("namespace")
        && let Some(problem) = crate::compile::names::dns_label_error(&namespace)
    {
        return refuse(400, &format!("namespace {namespace:?}: {problem}"));
    }
    None
}

/// How long open pages (a live watch, a followed log) get to go once the server is told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Serves `source` on `listener` to `access` until `stop` completes (then open connections get
/// [`SHUTDOWN_GRACE`]: a live page never closes its watch by itself).
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: Source,
    access: Access,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router(source, access)).with_graceful_shutdown(async {
        let _ = stopped.await;
    });
    let deadline = async move {
        stop.await;
        let _ = stopping.send(());
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server.into_future() => served,
        () = deadline => Ok(()),
    }
}

/// Binds `address` (`HOST:PORT`; port 0 picks one), with a fresh token for its users.
pub async fn bind(address: &str) -> Result<(tokio::net::TcpListener, Access), String> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let at = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let access = Access::new(at).map_err(|e| format!("cannot make a token: {e}"))?;
    Ok((listener, access))
}

fn page(text: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    )
        .into_response()
}

async fn context(State(source): State<Shared>) -> Response {
    let context = match source.as_ref() {
        Source::Cluster(c) => c.context().await,
        Source::Local(l) => l.context(),
    };
    axum::Json(context).into_response()
}

#[derive(Deserialize)]
struct RunsQuery {
    namespace: Option<String>,
}

async fn runs(State(source): State<Shared>, Query(query): Query<RunsQuery>) -> Response {
    let listed = match source.as_ref() {
        Source::Cluster(c) => {
            let namespace = query.namespace.unwrap_or_else(|| c.context_namespace());
            c.runs(&namespace).await
        }
        Source::Local(l) => Ok(l.runs(query.namespace.as_deref().unwrap_or(LOCAL_NAMESPACE))),
    };
    match listed {
        Ok(runs) => axum::Json(serde_json::json!({ "runs": runs })).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn run(
    State(source): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let view = match source.as_ref() {
        Source::Cluster(c) => c.run(&namespace, &name).await,
        Source::Local(l) => l.run(&namespace, &name),
    };
    match view {
        Ok(view) => axum::Json(view).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn watch(
    State(source): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let views = match source.as_ref() {
        Source::Cluster(c) => c.watch(namespace, name).await.map(StreamExt::boxed),
        Source::Local(l) => l.watch(&namespace, &name).map(StreamExt::boxed),
    };
    let views = match views {
        Ok(views) => views,
        Err(e) => return e.into_response(),
    };
    let events = views.map(|view| {
        Ok::<_, Infallible>(match view {
            Some(view) => Event::default()
                .event("run")
                .json_data(view)
                .unwrap_or_else(|_| Event::default().event("broken").data("{}")),
            // An event without data never reaches the page.
            None => Event::default().event("gone").data("{}"),
        })
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(Deserialize)]
struct LogQuery {
    task: String,
    attempt: Option<u32>,
    #[serde(default)]
    follow: bool,
}

async fn logs(
    State(source): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    let body = match source.as_ref() {
        Source::Cluster(c) => {
            c.logs(&namespace, &name, &query.task, query.attempt, query.follow)
                .await
        }
        Source::Local(l) => l.logs(&namespace, &name, &query.task, query.attempt, query.follow),
    };
    match body {
        Ok(chunks) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
                // Tells proxies not to hold a followed log back.
                (header::HeaderName::from_static("x-accel-buffering"), "no"),
            ],
            Body::from_stream(chunks),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn act(
    State(source): State<Shared>,
    Path((namespace, name, action)): Path<(String, String, String)>,
) -> Response {
    let command = match action.as_str() {
        "cancel" => RunCommand::Cancel,
        "suspend" => RunCommand::Suspend,
        "resume" => RunCommand::Resume,
        "rerun" => RunCommand::Rerun,
        other => {
            return ApiError::new(404, format!("no action \"{other}\"")).into_response();
        }
    };
    let done = match source.as_ref() {
        Source::Cluster(c) => c.act(&namespace, &name, command).await,
        Source::Local(l) if command == RunCommand::Cancel => {
            l.cancel(&namespace, &name).map(|m| (m, None))
        }
        Source::Local(_) => Err(ApiError::new(
            400,
            format!("{action} is for runs on a cluster; ork run cannot {action}"),
        )),
    };
    match done {
        Ok((message, run)) => {
            axum::Json(serde_json::json!({"message": message, "run": run})).into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> axum::extract::Request {
        let mut builder = axum::http::Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[test]
    fn only_the_users_own_page_may_use_the_server() {
        let access = Access {
            at: "127.0.0.1:8484".parse().unwrap(),
            token: "t0k".into(),
        };
        let code = |r: &axum::extract::Request| match refusal(&access, r) {
            None => None,
            Some(Refusal::Error(e)) => Some(e.code),
            Some(Refusal::SetCookie(to)) => {
                assert_eq!(to, "/");
                Some(303)
            }
        };
        let host = ("host", "127.0.0.1:8484");
        let cookie = ("cookie", "other=1; ork-dashboard-8484=t0k");
        assert_eq!(code(&request("GET", "/api/runs", &[host, cookie])), None);
        let local = ("host", "localhost:8484");
        assert_eq!(code(&request("GET", "/api/runs", &[local, cookie])), None);
        // The printed address sets the cookie; without it (or with a wrong one) nothing is served.
        assert_eq!(code(&request("GET", "/?token=t0k", &[host])), Some(303));
        assert_eq!(code(&request("GET", "/?token=guess", &[host])), Some(401));
        assert_eq!(code(&request("GET", "/api/runs", &[host])), Some(401));
        let wrong = ("cookie", "ork-dashboard-8484=t0");
        assert_eq!(code(&request("GET", "/", &[host, wrong])), Some(401));
        // DNS rebinding: another name for this machine.
        let evil_host = ("host", "evil.example:8484");
        assert_eq!(
            code(&request("GET", "/api/runs", &[evil_host, cookie])),
            Some(403)
        );
        assert_eq!(code(&request("GET", "/", &[])), Some(403));
        // A cross-site POST carries its own Origin.
        let action = "/api/runs/ns/r/actions/cancel";
        let evil = ("origin", "http://evil.example");
        assert_eq!(
            code(&request("POST", action, &[host, cookie, evil])),
            Some(403)
        );
        let own = ("origin", "http://127.0.0.1:8484");
        assert_eq!(code(&request("POST", action, &[host, cookie, own])), None);
        // Names a Run or a namespace cannot have never reach the API server.
        assert_eq!(
            code(&request("GET", "/api/runs/NS/r", &[host, cookie])),
            Some(400)
        );
        assert_eq!(
            code(&request("GET", "/api/runs/ns/a%2Fb", &[host, cookie])),
            Some(400)
        );
        assert_eq!(
            code(&request("GET", "/api/runs/ns/ok-1/logs", &[host, cookie])),
            None
        );
        let sneaky = "/api/runs?namespace=x%2F..%2Fapi";
        assert_eq!(code(&request("GET", sneaky, &[host, cookie])), Some(400));
        // Listening on all addresses (warned about), any Host is served, with the token.
        let open = Access {
            at: "0.0.0.0:8484".parse().unwrap(),
            token: "t0k".into(),
        };
        let anywhere = request("GET", "/api/runs", &[("host", "box.lan:8484"), cookie]);
        assert!(refusal(&open, &anywhere).is_none());
    }

    #[test]
    fn tokens_are_fresh_and_the_address_carries_one() {
        let at: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (a, b) = (Access::new(at).unwrap(), Access::new(at).unwrap());
        assert_eq!(a.token.len(), 32);
        assert_ne!(a.token, b.token);
        assert_eq!(
            a.url("#/x"),
            format!("http://127.0.0.1:1/?token={}#/x", a.token)
        );
    }
}
