//! The controller's one HTTP port: `/healthz`, `/readyz` and `/metrics`.
//!
//! - `/healthz` answers 200 while the process runs; it never asks the API server, so a slow or
//!   unreachable API server does not get a healthy controller restarted.
//! - `/readyz` answers 200 once this replica is useful: as the leader (or without election),
//!   when every watch cache has been filled; as a standby waiting for the lease, at once, so a
//!   rolling update can proceed.
//! - `/metrics` is the Prometheus text format (see [`Metrics`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::error::Error;
use super::metrics::Metrics;

/// What `/readyz` looks at.
#[derive(Debug, Default)]
pub struct Probes {
    /// Watch caches still waiting for their first full list.
    unsynced: AtomicUsize,
    /// Caches counted by [`Probes::synced_once`], by name and instance.
    seen: std::sync::Mutex<std::collections::HashMap<&'static str, usize>>,
    /// Waiting for the leader lease: ready, but not reconciling.
    standby: AtomicBool,
    /// Watched namespaces: how many caches of each kind there are.
    expected_per_kind: AtomicUsize,
}

impl Probes {
    /// One more set of caches (one per kind) to fill: a watched namespace.
    pub fn expect_namespace(&self, kinds: usize) {
        self.unsynced.fetch_add(kinds, Ordering::SeqCst);
        self.expected_per_kind.fetch_add(1, Ordering::SeqCst);
    }

    pub fn synced(&self) {
        let _ = self
            .unsynced
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Counts one cache of kind `what` as filled, at most as many times as caches of that kind
    /// were expected: a re-list after a reconnect does not count twice.
    pub fn synced_once(&self, what: &'static str) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let count = seen.entry(what).or_default();
        *count += 1;
        if *count <= self.expected_per_kind.load(Ordering::SeqCst) {
            self.synced();
        }
    }

    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::SeqCst);
    }

    pub fn unsynced(&self) -> usize {
        self.unsynced.load(Ordering::SeqCst)
    }

    pub fn ready(&self) -> bool {
        self.standby.load(Ordering::SeqCst) || self.unsynced.load(Ordering::SeqCst) == 0
    }
}

/// Binds the port first, so a port in use stops the controller at start with a clear error.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, Error> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {address}: {e}")))?;
    if let Ok(local) = listener.local_addr() {
        info!(address = %local, "serving /healthz, /readyz and /metrics");
    }
    Ok(listener)
}

/// Serves the three endpoints until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    probes: Arc<Probes>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(error = %e, "cannot accept a connection");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let (metrics, probes) = (Arc::clone(&metrics), Arc::clone(&probes));
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = respond(&req, &metrics, &probes);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                warn!(error = %e, "HTTP connection failed");
            }
        });
    }
}

fn respond(req: &Request<Incoming>, metrics: &Metrics, probes: &Probes) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        (&Method::GET, "/readyz") if probes.ready() => {
            (StatusCode::OK, "text/plain", "ready\n".to_string())
        }
        (&Method::GET, "/readyz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("{} watch caches not filled yet\n", probes.unsynced()),
        ),
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}
