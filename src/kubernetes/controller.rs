//! Wiring: watches, indexes and the two controllers (Runs and Workflows).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{Controller, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use super::error::Error;
use super::index::RunIndex;
use super::names::{LABEL_RUN, managed_selector};
use super::{run_reconciler, workflow_reconciler};
use crate::api::{Run, Workflow};
use crate::compile::{BoundParams, Dag};

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch one namespace, or all when `None`.
    pub namespace: Option<String>,
    /// Runs reconciled at once.
    pub concurrency: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            concurrency: 16,
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    jobs: Arc<RwLock<RunIndex<Job>>>,
    pods: Arc<RwLock<RunIndex<Pod>>>,
    /// Compiled pinned definitions by run UID: a run is compiled once, not on every reconcile.
    dags: Mutex<HashMap<String, (Arc<Dag>, BoundParams)>>,
    pub recorder: Recorder,
}

impl Context {
    pub(super) fn jobs_of(&self, namespace: &str, run: &str) -> Vec<Arc<Job>> {
        self.jobs
            .read()
            .map(|i| i.children(namespace, run))
            .unwrap_or_default()
    }

    pub(super) fn pods_of(&self, namespace: &str, run: &str) -> Vec<Arc<Pod>> {
        self.pods
            .read()
            .map(|i| i.children(namespace, run))
            .unwrap_or_default()
    }

    pub(super) fn cached(&self, uid: &str) -> Option<(Arc<Dag>, BoundParams)> {
        self.dags.lock().ok()?.get(uid).cloned()
    }

    pub(super) fn remember(&self, uid: &str, dag: Arc<Dag>, params: BoundParams) {
        if let Ok(mut dags) = self.dags.lock() {
            dags.insert(uid.to_string(), (dag, params));
        }
    }

    pub(super) fn forget(&self, uid: &str) {
        if let Ok(mut dags) = self.dags.lock() {
            dags.remove(uid);
        }
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs both controllers until `shutdown` completes.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let ns = settings.namespace.as_deref();
    let managed = watcher::Config::default().labels(&managed_selector());
    let jobs = Arc::new(RwLock::new(RunIndex::default()));
    let pods = Arc::new(RwLock::new(RunIndex::default()));

    let job_index = Arc::clone(&jobs);
    let job_events = watcher::watcher(api::<Job>(&client, ns), managed.clone())
        .default_backoff()
        .modify(|job| job.managed_fields_mut().clear())
        .inspect_ok(move |event| index(&job_index, event))
        .touched_objects();
    let pod_index = Arc::clone(&pods);
    let pod_events = watcher::watcher(api::<Pod>(&client, ns), managed)
        .default_backoff()
        .modify(|pod| pod.managed_fields_mut().clear())
        .inspect_ok(move |event| index(&pod_index, event))
        .touched_objects();

    let reporter = Reporter {
        controller: "ork".into(),
        instance: std::env::var("HOSTNAME").ok(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        jobs,
        pods,
        dags: Mutex::new(HashMap::new()),
        recorder: Recorder::new(client.clone(), reporter),
    });

    let (stop_runs, stop_workflows) = {
        let shared = future::FutureExt::shared(Box::pin(shutdown));
        (shared.clone(), shared)
    };
    let config = ControllerConfig::default().concurrency(settings.concurrency);
    let runs = Controller::new(api::<Run>(&client, ns), watcher::Config::default())
        .with_config(config.clone())
        .owns_stream(job_events)
        .watches_stream(pod_events, |pod: Pod| {
            let run = pod.metadata.labels.as_ref()?.get(LABEL_RUN)?.clone();
            Some(ObjectRef::<Run>::new(&run).within(pod.metadata.namespace.as_deref()?))
        })
        .graceful_shutdown_on(stop_runs)
        .run(run_reconciler::reconcile, retry_later, Arc::clone(&ctx))
        .for_each(|result| {
            if let Err(e) = result {
                warn!(error = %e, "run reconcile failed");
            }
            future::ready(())
        });
    let workflows = Controller::new(api::<Workflow>(&client, ns), watcher::Config::default())
        .with_config(config)
        .graceful_shutdown_on(stop_workflows)
        .run(
            workflow_reconciler::reconcile,
            retry_later,
            Arc::clone(&ctx),
        )
        .for_each(|result| {
            if let Err(e) = result {
                warn!(error = %e, "workflow reconcile failed");
            }
            future::ready(())
        });
    info!(namespace = ns.unwrap_or("(all)"), "controller started");
    future::join(runs, workflows).await;
    info!("controller stopped");
    Ok(())
}

fn index<K: Resource + Clone>(index: &RwLock<RunIndex<K>>, event: &Event<K>) {
    if let Ok(mut index) = index.write() {
        index.apply(event);
    }
}

/// A failed reconcile is retried: at once after losing a write race, later otherwise.
fn retry_later<K>(_obj: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action {
    if error.is_conflict() {
        Action::requeue(Duration::from_millis(50))
    } else {
        warn!(error = %error, "reconcile failed; retrying in 5s");
        Action::requeue(Duration::from_secs(5))
    }
}
