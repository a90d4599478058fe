//! Wiring: watches, indexes and the two controllers (Runs and Workflows).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::PredicateConfig;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{Controller, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::watch;
use tracing::{info, warn};

use super::context::{Backoff, Context};
use super::decide::Config;
use super::error::Error;
use super::http::{self, Probes};
use super::index::{RunIndex, job_of_pod, pod_tombstone, slim_job, slim_pod, slim_run};
use super::leader::{self, LeaderElection};
use super::metrics::Metrics;
use super::names::{LABEL_RUN, LABEL_SCHEDULE, managed_selector};
use super::schedule_reconciler::{ScheduleClock, ScheduleContext};
use super::{run_reconciler, schedule_reconciler, workflow_reconciler};
use crate::api::{Run, Schedule, Workflow};

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
    /// How runs are carried out (image pull timeout, Job TTL, …).
    pub run: Config,
    /// The time Schedules tick by (real, unless a test speeds it up).
    pub schedule_clock: ScheduleClock,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            concurrency: 16,
            http_address: None,
            leader_election: None,
            run: Config::default(),
            schedule_clock: ScheduleClock::default(),
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
        let watch_settings = WatchSettings {
            concurrency: settings.concurrency,
            run: settings.run.clone(),
            schedule_clock: settings.schedule_clock,
        };
        let controllers = namespaces.into_iter().map(move |ns| {
            watch_namespace(
                client.clone(),
                ns,
                watch_settings.clone(),
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
    settings: WatchSettings,
    metrics: Arc<Metrics>,
    probes: Arc<Probes>,
    shutdown: impl std::future::Future<Output = ()> + Clone + Send + Sync + 'static,
) -> Result<(), Error> {
    let ns = namespace.as_deref();
    // Runs, Workflows, Schedules, Jobs and Pods must each be listed once before this replica is
    // ready.
    probes.expect_namespace(5);
    let managed = watcher::Config::default().labels(&managed_selector());
    let jobs = Arc::new(RwLock::new(RunIndex::default()));
    let pods = Arc::new(RwLock::new(RunIndex::grouped_by(job_of_pod)));
    // Reconciles wait until both child caches have been filled once.
    let (synced_tx, synced_rx) = watch::channel(false);
    let synced_tx = Arc::new(synced_tx);
    let listed = Arc::new(AtomicUsize::new(0));

    let reporter = Reporter {
        controller: "ork".into(),
        instance: std::env::var("HOSTNAME").ok(),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::clone(&metrics),
        Recorder::new(client.clone(), reporter),
        settings.run.clone(),
        Arc::clone(&jobs),
        Arc::clone(&pods),
        synced_rx,
    ));

    let (job_index, job_probes, job_synced, job_listed, job_ctx, job_pods) = (
        Arc::clone(&jobs),
        Arc::clone(&probes),
        Arc::clone(&synced_tx),
        Arc::clone(&listed),
        Arc::clone(&ctx),
        Arc::clone(&pods),
    );
    let job_events = watcher::watcher(api::<Job>(&client, ns), managed.clone())
        .default_backoff()
        .modify(slim_job)
        .inspect_ok(move |event| {
            let first_list = index(&job_index, &job_probes, event);
            if let Event::Apply(job) | Event::Delete(job) | Event::InitApply(job) = event {
                touch(&job_ctx, &job.metadata, job.metadata.name.clone());
            }
            // Only once the index shows it: a reconcile reads what it remembers first and the
            // index after, so a Job marked seen is in the index it reads, unless it is gone.
            // (During a re-list the index shows nothing new until the list is complete.)
            if let Event::Apply(job) | Event::Delete(job) = event {
                mark_seen(&job_ctx, job);
            }
            // A Job gone takes what is kept of its Pods with it, tombstones included.
            if let Event::Delete(job) = event {
                forget_pods_of(&job_pods, job);
            }
            if first_list && job_listed.fetch_add(1, Ordering::SeqCst) == 1 {
                let _ = job_synced.send(true);
            }
        })
        .touched_objects();
    let (pod_index, pod_probes, pod_synced, pod_listed, pod_jobs, pod_ctx) = (
        Arc::clone(&pods),
        Arc::clone(&probes),
        Arc::clone(&synced_tx),
        Arc::clone(&listed),
        Arc::clone(&jobs),
        Arc::clone(&ctx),
    );
    let pod_events = watcher::watcher(api::<Pod>(&client, ns), managed)
        .default_backoff()
        .modify(slim_pod)
        .inspect_ok(move |event| {
            let tombstone = match event {
                Event::Delete(pod) => lost_pod(&pod_jobs, pod),
                _ => None,
            };
            let first_list = index_keeping(&pod_index, &pod_probes, event, tombstone);
            if let Event::Apply(pod) | Event::Delete(pod) | Event::InitApply(pod) = event {
                touch(&pod_ctx, &pod.metadata, job_of_pod(pod));
            }
            if first_list && pod_listed.fetch_add(1, Ordering::SeqCst) == 1 {
                let _ = pod_synced.send(true);
            }
        })
        .touched_objects();

    let config = ControllerConfig::default().concurrency(settings.concurrency);
    // Each object is read behind a guard: one that ork's types cannot hold is reported on
    // itself and skipped, instead of failing the watch for every Run in the cluster.
    let (run_store, run_writer) = reflector::store::<DeserializeGuard<Run>>();
    let (run_probes, run_ctx) = (Arc::clone(&probes), Arc::clone(&ctx));
    let run_events = watcher::watcher(
        api::<DeserializeGuard<Run>>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(slim_run)
    .reflect(run_writer)
    .inspect_ok(move |event| {
        once_listed(&run_probes, event);
        // A deleted Run is never reconciled again: drop what is kept about it here.
        if let Event::Delete(run) = event
            && let Some(uid) = run.meta().uid.as_ref()
        {
            run_ctx.forget(uid);
        }
    })
    .touched_objects();

    // A Workflow appearing or changing wakes the Runs waiting for it.
    let (wake_tx, wake_rx) =
        futures::channel::mpsc::unbounded::<ObjectRef<DeserializeGuard<Run>>>();
    let (workflow_store, workflow_writer) = reflector::store::<DeserializeGuard<Workflow>>();
    let (workflow_probes, waiting_runs) = (Arc::clone(&probes), run_store.clone());
    let workflow_events = watcher::watcher(
        api::<DeserializeGuard<Workflow>>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(workflow_writer)
    .inspect_ok(move |event| {
        once_listed(&workflow_probes, event);
        if let Event::Apply(workflow) | Event::InitApply(workflow) = event {
            for run in runs_waiting_for(&waiting_runs, workflow) {
                let _ = wake_tx.unbounded_send(run);
            }
        }
    })
    .touched_objects();
    // Schedules, woken by their own changes, by a Run of theirs changing phase, and at ticks.
    let (schedule_store, schedule_writer) = reflector::store::<DeserializeGuard<Schedule>>();
    let schedule_probes = Arc::clone(&probes);
    let schedule_events = watcher::watcher(
        api::<DeserializeGuard<Schedule>>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(schedule_writer)
    .inspect_ok(move |event| once_listed(&schedule_probes, event))
    .touched_objects();
    let scheduled_runs = watcher::watcher(
        api::<DeserializeGuard<Run>>(&client, ns),
        watcher::Config::default().labels(LABEL_SCHEDULE),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(run_phase, PredicateConfig::default());
    let schedule_ctx = Arc::new(ScheduleContext {
        ctx: Arc::clone(&ctx),
        runs: run_store.clone(),
        clock: settings.schedule_clock,
    });
    let schedules = Controller::for_stream(schedule_events, schedule_store)
        .with_config(config.clone())
        .owns_stream(scheduled_runs)
        .graceful_shutdown_on(shutdown.clone())
        .run(timed_schedule_reconcile, retry_schedule_later, schedule_ctx)
        .for_each(|result| {
            log_failure("schedule", result.err());
            future::ready(())
        });

    metrics.watch_runs(run_store.clone());
    let run_controller = Controller::for_stream(run_events, run_store);
    let workflow_controller = Controller::for_stream(workflow_events, workflow_store);
    let runs = run_controller
        .with_config(config.clone())
        .owns_stream(job_events)
        .watches_stream(pod_events, |pod: Pod| {
            let run = pod.metadata.labels.as_ref()?.get(LABEL_RUN)?.clone();
            Some(ObjectRef::new(&run).within(pod.metadata.namespace.as_deref()?))
        })
        .reconcile_on(wake_rx)
        .graceful_shutdown_on(shutdown.clone())
        .run(timed_run_reconcile, retry_later, Arc::clone(&ctx))
        .for_each(|result| {
            log_failure("run", result.err());
            future::ready(())
        });
    let workflows = workflow_controller
        .with_config(config)
        .graceful_shutdown_on(shutdown)
        .run(timed_workflow_reconcile, retry_later, Arc::clone(&ctx))
        .for_each(|result| {
            log_failure("workflow", result.err());
            future::ready(())
        });
    info!(namespace = ns.unwrap_or("(all)"), "controller started");
    future::join3(runs, workflows, schedules).await;
    info!("controller stopped");
    Ok(())
}

/// Logs a failed reconcile; a lost write race is routine, and only worth a debug line.
fn log_failure<Q: std::error::Error>(
    kind: &str,
    error: Option<kube::runtime::controller::Error<Error, Q>>,
) {
    use kube::runtime::controller::Error as ControllerError;
    match error {
        None => {}
        Some(ControllerError::ReconcilerFailed(e, object)) if e.is_conflict() => {
            tracing::debug!(%kind, %object, "lost a write race; retrying");
        }
        Some(e) => warn!(%kind, error = %e, "reconcile failed"),
    }
}

/// What every controller of this process shares, beyond the client.
#[derive(Clone)]
struct WatchSettings {
    concurrency: u16,
    run: Config,
    schedule_clock: ScheduleClock,
}

/// Runs in the Workflow's namespace that reference it and have not started: the ones its
/// appearance can wake.
fn runs_waiting_for(
    runs: &reflector::Store<DeserializeGuard<Run>>,
    workflow: &DeserializeGuard<Workflow>,
) -> Vec<ObjectRef<DeserializeGuard<Run>>> {
    let meta = workflow.meta();
    let (Some(name), Some(namespace)) = (meta.name.as_deref(), meta.namespace.as_deref()) else {
        return Vec::new();
    };
    runs.state()
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter(|run| {
            run.metadata.namespace.as_deref() == Some(namespace)
                && run
                    .spec
                    .workflow_ref
                    .as_ref()
                    .is_some_and(|r| r.name == name)
                && run
                    .status
                    .as_ref()
                    .is_none_or(|s| s.workflow.as_ref().is_none_or(|w| w.spec.is_none()))
        })
        .map(|run| ObjectRef::new(&run.name_any()).within(namespace))
        .collect()
}

/// Tells the context that the watch showed a Job this controller may have created.
fn mark_seen(ctx: &Context, job: &Job) {
    let owner = job
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    if let (Some(owner), Some(name)) = (owner, job.metadata.name.as_deref()) {
        ctx.seen(&owner.uid, name);
    }
}

/// Applies one watch event to an index; true when it completed the index's first full list.
fn index<K: Resource + Clone>(
    index: &RwLock<RunIndex<K>>,
    probes: &Probes,
    event: &Event<K>,
) -> bool {
    index_keeping(index, probes, event, None)
}

/// [`index`], keeping `tombstone` in place of a deleted object.
fn index_keeping<K: Resource + Clone>(
    index: &RwLock<RunIndex<K>>,
    probes: &Probes,
    event: &Event<K>,
    tombstone: Option<K>,
) -> bool {
    let Ok(mut index) = index.write() else {
        return false;
    };
    let first_list_done = matches!(event, Event::InitDone) && !index.listed();
    index.apply_keeping(event, tombstone);
    if first_list_done {
        probes.synced();
    }
    first_list_done
}

/// Marks a Job of a run as touched (it, or one of its Pods, changed), once the index shows it.
fn touch(ctx: &Context, meta: &ObjectMeta, job: Option<String>) {
    let run = meta.labels.as_ref().and_then(|l| l.get(LABEL_RUN));
    if let (Some(run), Some(namespace), Some(job)) = (run, meta.namespace.as_deref(), job) {
        ctx.touch(namespace, run, &job);
    }
}

/// What to keep of a deleted Pod: a tombstone when it was deleted before it showed a result
/// while its Job lives on (not when ork stopped the attempt by deleting the Job).
fn lost_pod(jobs: &RwLock<RunIndex<Job>>, pod: &Pod) -> Option<Pod> {
    let run = pod.metadata.labels.as_ref()?.get(LABEL_RUN)?;
    let namespace = pod.metadata.namespace.as_deref()?;
    let job = job_of_pod(pod)?;
    let alive = jobs.read().ok()?.has_live(namespace, run, &job);
    alive.then(|| pod_tombstone(pod)).flatten()
}

/// Forgets the Pods kept for a Job that is gone.
fn forget_pods_of(pods: &RwLock<RunIndex<Pod>>, job: &Job) {
    let meta = &job.metadata;
    let (Some(run), Some(namespace), Some(name)) = (
        meta.labels.as_ref().and_then(|l| l.get(LABEL_RUN)),
        meta.namespace.as_deref(),
        meta.name.as_deref(),
    ) else {
        return;
    };
    if let Ok(mut pods) = pods.write() {
        pods.drop_group(namespace, run, name);
    }
}

/// Counts a cache as filled at its first complete list (later re-lists do not count again).
fn once_listed<K>(probes: &Probes, event: &Event<K>) {
    if matches!(event, Event::InitDone) {
        probes.synced_once(std::any::type_name::<K>());
    }
}

async fn timed_run_reconcile(
    run: Arc<DeserializeGuard<Run>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let key = object_key(run.as_ref());
    let result = run_reconciler::reconcile(run, Arc::clone(&ctx)).await;
    ctx.metrics
        .reconciled("run", result.is_ok(), started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

async fn timed_workflow_reconcile(
    workflow: Arc<DeserializeGuard<Workflow>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let key = object_key(workflow.as_ref());
    let result = workflow_reconciler::reconcile(workflow, Arc::clone(&ctx)).await;
    ctx.metrics
        .reconciled("workflow", result.is_ok(), started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

async fn timed_schedule_reconcile(
    schedule: Arc<DeserializeGuard<Schedule>>,
    sctx: Arc<ScheduleContext>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let key = object_key(schedule.as_ref());
    let result = schedule_reconciler::reconcile(schedule, Arc::clone(&sctx)).await;
    sctx.ctx
        .metrics
        .reconciled("schedule", result.is_ok(), started.elapsed());
    if result.is_ok() {
        sctx.ctx.succeeded(&key);
    }
    result
}

fn retry_schedule_later(
    schedule: Arc<DeserializeGuard<Schedule>>,
    error: &Error,
    sctx: Arc<ScheduleContext>,
) -> Action {
    retry_later(schedule, error, Arc::clone(&sctx.ctx))
}

/// What a schedule needs to hear about its Runs: a phase change (not every status write).
fn run_phase(guard: &DeserializeGuard<Run>) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let run = guard.0.as_ref().ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    run.status.as_ref().and_then(|s| s.phase).hash(&mut hasher);
    run.spec.cancel.hash(&mut hasher);
    Some(hasher.finish())
}

fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{}/{}/{}",
        K::kind(&()),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// A failed reconcile is retried with a back-off of its own per object: soon after losing a
/// write race, later and later after anything else (throttling, a server error, the network),
/// never in a fixed loop. A success starts the back-off over.
fn retry_later<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = object_key(obj.as_ref());
    let backoff = if error.is_conflict() {
        Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_secs(5),
        }
    } else {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    };
    let delay = ctx.failed(&key, backoff);
    if !error.is_conflict() {
        warn!(object = %key, error = %error, retry_in = ?delay, "reconcile failed");
    }
    Action::requeue(delay)
}
