//! Wiring: watches, indexes and the two controllers (Runs and Workflows).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{Controller, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use super::error::Error;
use super::http::{self, Probes};
use super::index::RunIndex;
use super::leader::{self, LeaderElection};
use super::metrics::Metrics;
use super::names::{LABEL_RUN, managed_selector};
use super::{run_reconciler, workflow_reconciler};
use crate::api::{Run, Workflow};
use crate::compile::{BoundParams, Dag};

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces to watch; all when empty.
    pub namespaces: Vec<String>,
    /// Runs reconciled at once (per namespace).
    pub concurrency: u16,
    /// Where to serve `/healthz`, `/readyz` and `/metrics`, if anywhere.
    pub http_address: Option<SocketAddr>,
    /// Run only while holding this lease.
    pub leader_election: Option<LeaderElection>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            concurrency: 16,
            http_address: None,
            leader_election: None,
        }
    }
}

/// Compiled pinned definitions and bound parameters, by run UID.
type CompiledRuns = HashMap<String, (Arc<Dag>, BoundParams)>;

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    jobs: Arc<RwLock<RunIndex<Job>>>,
    pods: Arc<RwLock<RunIndex<Pod>>>,
    /// Compiled pinned definitions by run UID: a run is compiled once, not on every reconcile.
    dags: Arc<Mutex<CompiledRuns>>,
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

/// Runs the controller until `shutdown` completes: the HTTP endpoints, leader election if
/// asked for, and the Run and Workflow controllers for every watched namespace.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let shutdown = future::FutureExt::shared(Box::pin(shutdown));
    let probes = Arc::new(Probes::default());
    let server = match settings.http_address {
        Some(address) => {
            let listener = http::bind(address).await?;
            Some(tokio::spawn(http::serve(
                listener,
                Arc::clone(&metrics),
                Arc::clone(&probes),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let (work_client, work_metrics, work_probes) =
        (client.clone(), Arc::clone(&metrics), Arc::clone(&probes));
    let work = |stop: future::BoxFuture<'static, ()>| {
        let (client, metrics, probes) = (work_client, work_metrics, work_probes);
        let stop = future::FutureExt::shared(stop);
        let namespaces: Vec<Option<String>> = if settings.namespaces.is_empty() {
            vec![None]
        } else {
            settings.namespaces.iter().cloned().map(Some).collect()
        };
        let controllers = namespaces.into_iter().map(move |ns| {
            watch_namespace(
                client.clone(),
                ns,
                settings.concurrency,
                Arc::clone(&metrics),
                Arc::clone(&probes),
                stop.clone(),
            )
        });
        async move {
            future::try_join_all(controllers).await?;
            Ok(())
        }
    };
    let result = match &settings.leader_election {
        Some(election) => {
            leader::lead(
                client.clone(),
                election,
                &metrics,
                &probes,
                shutdown.clone(),
                work,
            )
            .await
        }
        None => {
            metrics.set_leader(true);
            work(Box::pin(shutdown.clone())).await
        }
    };
    if let Some(server) = server {
        server.abort();
    }
    result
}

/// The Run and Workflow controllers of one namespace (or all), until `shutdown` completes.
async fn watch_namespace(
    client: Client,
    namespace: Option<String>,
    concurrency: u16,
    metrics: Arc<Metrics>,
    probes: Arc<Probes>,
    shutdown: impl std::future::Future<Output = ()> + Clone + Send + Sync + 'static,
) -> Result<(), Error> {
    let ns = namespace.as_deref();
    // Runs, Workflows, Jobs and Pods must each be listed once before this replica is ready.
    probes.expect_namespace(4);
    let managed = watcher::Config::default().labels(&managed_selector());
    let jobs = Arc::new(RwLock::new(RunIndex::default()));
    let pods = Arc::new(RwLock::new(RunIndex::default()));

    let (job_index, job_probes) = (Arc::clone(&jobs), Arc::clone(&probes));
    let job_events = watcher::watcher(api::<Job>(&client, ns), managed.clone())
        .default_backoff()
        .modify(|job| job.managed_fields_mut().clear())
        .inspect_ok(move |event| index(&job_index, &job_probes, event))
        .touched_objects();
    let (pod_index, pod_probes) = (Arc::clone(&pods), Arc::clone(&probes));
    let pod_events = watcher::watcher(api::<Pod>(&client, ns), managed)
        .default_backoff()
        .modify(|pod| pod.managed_fields_mut().clear())
        .inspect_ok(move |event| index(&pod_index, &pod_probes, event))
        .touched_objects();

    let dags = Arc::new(Mutex::new(HashMap::new()));
    let reporter = Reporter {
        controller: "ork".into(),
        instance: std::env::var("HOSTNAME").ok(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        metrics: Arc::clone(&metrics),
        jobs,
        pods,
        dags: Arc::clone(&dags),
        recorder: Recorder::new(client.clone(), reporter),
    });

    let config = ControllerConfig::default().concurrency(concurrency);
    let (run_store, run_writer) = reflector::store();
    let (run_probes, run_dags) = (Arc::clone(&probes), Arc::clone(&dags));
    let run_events = watcher::watcher(api::<Run>(&client, ns), watcher::Config::default())
        .default_backoff()
        .reflect(run_writer)
        .inspect_ok(move |event| {
            once_listed(&run_probes, event);
            // A deleted Run is never reconciled again: drop its compiled definition here.
            if let Event::Delete(run) = event
                && let (Some(uid), Ok(mut dags)) = (run.metadata.uid.as_ref(), run_dags.lock())
            {
                dags.remove(uid);
            }
        })
        .touched_objects();
    let (workflow_store, workflow_writer) = reflector::store();
    let workflow_probes = Arc::clone(&probes);
    let workflow_events =
        watcher::watcher(api::<Workflow>(&client, ns), watcher::Config::default())
            .default_backoff()
            .reflect(workflow_writer)
            .inspect_ok(move |event| once_listed(&workflow_probes, event))
            .touched_objects();
    metrics.watch_runs(run_store.clone());
    let run_controller = Controller::for_stream(run_events, run_store);
    let workflow_controller = Controller::for_stream(workflow_events, workflow_store);
    let runs = run_controller
        .with_config(config.clone())
        .owns_stream(job_events)
        .watches_stream(pod_events, |pod: Pod| {
            let run = pod.metadata.labels.as_ref()?.get(LABEL_RUN)?.clone();
            Some(ObjectRef::<Run>::new(&run).within(pod.metadata.namespace.as_deref()?))
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(timed_run_reconcile, retry_later, Arc::clone(&ctx))
        .for_each(|result| {
            if let Err(e) = result {
                warn!(error = %e, "run reconcile failed");
            }
            future::ready(())
        });
    let workflows = workflow_controller
        .with_config(config)
        .graceful_shutdown_on(shutdown)
        .run(timed_workflow_reconcile, retry_later, Arc::clone(&ctx))
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

fn index<K: Resource + Clone>(index: &RwLock<RunIndex<K>>, probes: &Probes, event: &Event<K>) {
    if let Ok(mut index) = index.write() {
        let first_list_done = matches!(event, Event::InitDone) && !index.listed();
        index.apply(event);
        if first_list_done {
            probes.synced();
        }
    }
}

/// Counts a cache as filled at its first complete list (later re-lists do not count again).
fn once_listed<K>(probes: &Probes, event: &Event<K>) {
    if matches!(event, Event::InitDone) {
        probes.synced_once(std::any::type_name::<K>());
    }
}

async fn timed_run_reconcile(run: Arc<Run>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = run_reconciler::reconcile(run, Arc::clone(&ctx)).await;
    ctx.metrics
        .reconciled("run", result.is_ok(), started.elapsed());
    result
}

async fn timed_workflow_reconcile(
    workflow: Arc<Workflow>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = workflow_reconciler::reconcile(workflow, Arc::clone(&ctx)).await;
    ctx.metrics
        .reconciled("workflow", result.is_ok(), started.elapsed());
    result
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
