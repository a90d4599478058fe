//! The Kubernetes client, with every request the controller makes counted by verb and result.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::error::Error;
use super::metrics::Metrics;

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

/// A tower layer that counts each request by verb and result.
#[derive(Clone)]
pub struct CountLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for CountLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            metrics: Arc::clone(&self.0),
        }
    }
}

/// The service made by [`CountLayer`].
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<Request<B>> for Counted<S>
where
    B: hyper::body::Body,
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let verb = verb_of(&req);
        // What a write sends: the bodies ork builds are in memory, so their size is known.
        let hint = req.body().size_hint();
        self.metrics
            .request_bytes(verb, hint.exact().unwrap_or(hint.lower()));
        let metrics = Arc::clone(&self.metrics);
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await;
            let result = match &response {
                Ok(r) if r.status().is_success() => "2xx",
                // The client errors a controller meets in normal work, and 403 (a missing RBAC
                // rule), are told apart.
                Ok(r) if r.status() == 403 => "403",
                Ok(r) if r.status() == 404 => "404",
                Ok(r) if r.status() == 409 => "409",
                Ok(r) if r.status().is_client_error() => "4xx",
                Ok(r) if r.status().is_server_error() => "5xx",
                Ok(_) => "other",
                Err(_) => "error",
            };
            metrics.request(verb, result);
            response
        })
    }
}

/// A client from `kubeconfig`, or from the environment (in-cluster, `KUBECONFIG`, `~/.kube`).
pub async fn client(kubeconfig: Option<&Path>, metrics: Arc<Metrics>) -> Result<Client, Error> {
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
    Ok(builder.with_layer(&CountLayer(metrics)).build())
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
