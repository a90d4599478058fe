//! The Kubernetes client, with every request the controller makes counted by verb.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::{Method, Request};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::error::Error;

/// API verbs as Kubernetes audit logs name them, plus `apply` for server-side apply patches.
pub const VERBS: [&str; 9] = [
    "get", "list", "watch", "create", "update", "patch", "apply", "delete", "other",
];

/// Requests sent, by verb.
#[derive(Debug, Default)]
pub struct ApiCounters {
    counts: [AtomicU64; VERBS.len()],
}

impl ApiCounters {
    fn record(&self, verb: &str) {
        let i = VERBS
            .iter()
            .position(|v| *v == verb)
            .unwrap_or(VERBS.len() - 1);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// `(verb, count)` for every verb.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        VERBS
            .iter()
            .zip(&self.counts)
            .map(|(v, c)| (*v, c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// The verb of a request, from its method, path and query.
pub fn verb_of<B>(req: &Request<B>) -> &'static str {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    match *req.method() {
        Method::GET
            if query
                .split('&')
                .any(|p| p == "watch=true" || p == "watch=1") =>
        {
            "watch"
        }
        Method::GET if names_an_object(path) => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => {
            let apply = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/apply-patch"));
            if apply { "apply" } else { "patch" }
        }
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// Whether a path names one object (`…/jobs/NAME`) rather than a collection (`…/jobs`).
fn names_an_object(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] | ["apis", _, _version, rest @ ..] => rest,
        _ => return false,
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    rest.len() >= 2
}

/// A tower layer that counts each request.
#[derive(Clone)]
pub struct CountLayer(pub Arc<ApiCounters>);

impl<S> tower::Layer<S> for CountLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            counters: Arc::clone(&self.0),
        }
    }
}

/// The service made by [`CountLayer`].
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    counters: Arc<ApiCounters>,
}

impl<S, B> tower::Service<Request<B>> for Counted<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.counters.record(verb_of(&req));
        self.inner.call(req)
    }
}

/// A client from `kubeconfig`, or from the environment (in-cluster, `KUBECONFIG`, `~/.kube`).
pub async fn client(
    kubeconfig: Option<&Path>,
    counters: Arc<ApiCounters>,
) -> Result<Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
        }
        None => Config::infer()
            .await
            .map_err(|e| Error::Config(e.to_string()))?,
    };
    let builder = ClientBuilder::try_from(config).map_err(|e| Error::Config(e.to_string()))?;
    Ok(builder.with_layer(&CountLayer(counters)).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verb(method: Method, uri: &str, apply: bool) -> &'static str {
        let mut req = Request::builder().method(method).uri(uri);
        if apply {
            req = req.header("content-type", "application/apply-patch+yaml");
        }
        verb_of(&req.body(()).unwrap())
    }

    #[test]
    fn verbs() {
        let jobs = "/apis/batch/v1/namespaces/ns/jobs";
        assert_eq!(verb(Method::GET, jobs, false), "list");
        assert_eq!(
            verb(
                Method::GET,
                &format!("{jobs}?watch=true&resourceVersion=1"),
                false
            ),
            "watch"
        );
        assert_eq!(verb(Method::GET, &format!("{jobs}/j1"), false), "get");
        assert_eq!(
            verb(Method::GET, "/apis/ork.dev/v1alpha1/runs", false),
            "list"
        );
        assert_eq!(verb(Method::GET, "/api/v1/namespaces/ns", false), "get");
        assert_eq!(verb(Method::GET, "/api/v1/namespaces", false), "list");
        assert_eq!(verb(Method::PATCH, &format!("{jobs}/j1"), true), "apply");
        assert_eq!(
            verb(
                Method::PATCH,
                "/apis/ork.dev/v1alpha1/namespaces/ns/runs/r/status",
                false
            ),
            "patch"
        );
        assert_eq!(verb(Method::DELETE, &format!("{jobs}/j1"), false), "delete");
        assert_eq!(
            verb(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/ns/events",
                false
            ),
            "create"
        );
    }
}
