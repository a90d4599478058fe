//! Reconciling a Run: observe (the Run, its definition, its Jobs and Pods from the watch-fed
//! caches), decide ([`decide`], pure), then carry the plan out — the status first, carrying
//! the resourceVersion it was computed from, so a decision made on a stale view is refused
//! (409) before it has created anything; then the Jobs, with a plain create; then deletions;
//! then Events.
//!
//! Level-triggered: every step starts from what is observed, never from why the reconcile was
//! triggered. Job names are deterministic and a Job that exists is never created again, so a
//! controller killed at any point converges without duplicates.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::Event as KubeEvent;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::context::Context;
use super::decide::{Memory, Note, Observed, Plan, decide};
use super::definition::resolve;
use super::error::{Error, api_code};
use super::invalid;
use crate::api::{Run, RunStatus, TaskPhase};
use crate::driver::{Clock, SystemClock};
use crate::text;

/// Requests one reconcile sends at once (Jobs to create or delete).
const API_CONCURRENCY: usize = 16;
/// Jobs without a Pod whose reason is read in one reconcile.
const MAX_EVENT_READS: usize = 4;
/// How long the reason a Job has no Pod is trusted before it is read again.
const FAILED_CREATE_TTL: Duration = Duration::from_secs(30);
/// A Job without a Pod for this long has its Events read for the reason.
const NO_POD_PATIENCE: jiff::SignedDuration = jiff::SignedDuration::from_secs(5);

pub async fn reconcile(
    guard: Arc<DeserializeGuard<Run>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let run = match &guard.0 {
        Ok(run) => run,
        Err(invalid) => return invalid::report_run(invalid, &ctx).await,
    };
    let name = run.name_any();
    let namespace = run.namespace().ok_or_else(|| Error::NoNamespace {
        kind: "Run",
        name: name.clone(),
    })?;
    let uid = run.uid().unwrap_or_default();
    if run.metadata.deletion_timestamp.is_some() {
        ctx.forget(&uid);
        return Ok(Action::await_change());
    }
    ctx.wait_synced().await;

    // ---- observe ----
    let definition = resolve(run, &ctx).await?;
    // What this controller remembers first, the caches after: a Job it made and has seen in
    // the watch is then in the cache read here, unless it is gone.
    let mut memory = ctx.memory(&uid);
    let jobs = ctx.jobs_of(&namespace, &name);
    let pods = ctx.pods_of(&namespace, &name);
    read_failed_creates(&ctx, run, &jobs, &pods).await;
    memory.failed_create = ctx.failed_creates(&uid);
    let now = SystemClock.now();

    // ---- decide ----
    let plan = decide(&Observed {
        run,
        definition: &definition,
        jobs: &jobs,
        pods: &pods,
        memory: &memory,
        now,
        config: &ctx.config,
    });

    // ---- act ----
    execute(plan, run, &namespace, &uid, &memory, &ctx).await
}

/// Carries out a plan: status, creations, deletions, Events, in that order.
async fn execute(
    plan: Plan,
    run: &Run,
    namespace: &str,
    uid: &str,
    memory: &Memory,
    ctx: &Context,
) -> Result<Action, Error> {
    let runs: Api<Run> = Api::namespaced(ctx.client.clone(), namespace);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let old = run.status.clone().unwrap_or_default();
    if let Some(status) = &plan.status {
        match write_status(&runs, run, status).await {
            Ok(()) => {}
            Err(e) if permanent(&e) => return status_refused(&runs, run, &e, ctx).await,
            Err(e) => return Err(e),
        }
        count_tasks(ctx, run, &old, status);
        // Rejections now recorded as the attempts' outcomes are not needed any more.
        let running: std::collections::HashSet<&str> = status
            .tasks
            .iter()
            .filter(|t| t.phase == TaskPhase::Running)
            .filter_map(|t| t.job.as_deref())
            .collect();
        let creating: std::collections::HashSet<&str> = plan
            .create
            .iter()
            .filter_map(|j| j.metadata.name.as_deref())
            .collect();
        ctx.keep_rejections(uid, |job| running.contains(job) || creating.contains(job));
    }

    // Only once the status that asks for them is recorded.
    let mut again = plan.requeue;
    let mut soon = |d: Duration| again = Some(again.map_or(d, |a| a.min(d)));
    // Owned futures: a stream of futures borrowing from here would not be `Send`.
    let creations: Vec<_> = plan
        .create
        .iter()
        .map(|job| {
            let (api, job, uid) = (jobs.clone(), job.clone(), uid.to_string());
            async move { create_job(&api, &job, &uid).await }
        })
        .collect();
    let outcomes: Vec<Created> = stream::iter(creations)
        .buffer_unordered(API_CONCURRENCY)
        .collect()
        .await;
    let mut transient = None;
    for outcome in outcomes {
        match outcome {
            Created::Ok(name) => ctx.created(uid, &name),
            Created::NameTaken => soon(Duration::from_secs(2)),
            Created::Rejected(name, message) => {
                warn!(run = %run.name_any(), job = %name, %message, "the API server refused a Job");
                ctx.rejected(uid, &name, message);
                // Recorded as the attempt's outcome by the next reconcile, at once.
                soon(Duration::ZERO);
            }
            Created::Failed(e) => transient = Some(e),
        }
    }
    if !memory.rejected.is_empty() {
        soon(Duration::ZERO);
    }

    let deletions: Vec<_> = plan
        .delete
        .iter()
        .map(|name| {
            let (api, name) = (jobs.clone(), name.clone());
            async move { delete_job(&api, &name).await }
        })
        .collect();
    let deletions: Vec<Result<(), Error>> = stream::iter(deletions)
        .buffer_unordered(API_CONCURRENCY)
        .collect()
        .await;
    for result in deletions {
        if let Err(e) = result {
            transient = Some(e);
        }
    }

    // Last, so an Event never announces what did not happen.
    for note in &plan.events {
        publish(ctx, run, note).await;
    }
    if let Some(e) = transient {
        return Err(e);
    }
    if plan.finished {
        ctx.forget(uid);
    }
    Ok(match again {
        Some(wait) => Action::requeue(wait),
        None => Action::await_change(),
    })
}

/// How one Job creation went.
enum Created {
    Ok(String),
    /// Another object's Job has the name (an earlier Run of the same name): wait for it to go.
    NameTaken,
    /// The API server refused it for good (invalid, forbidden, denied by admission).
    Rejected(String, String),
    /// Worth retrying (conflict, throttling, server error, network).
    Failed(Error),
}

/// Creates a Job; one that already exists is fine when this run owns it (an earlier reconcile
/// made it and the cache has not shown it yet), and never touched when another object does.
async fn create_job(api: &Api<Job>, job: &Job, uid: &str) -> Created {
    let name = job.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), job).await {
        Ok(_) => Created::Ok(name),
        Err(kube::Error::Api(status)) if status.code == 409 => match api.get_opt(&name).await {
            Ok(Some(existing))
                if existing
                    .owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid == uid) =>
            {
                Created::Ok(name)
            }
            Ok(Some(_)) => Created::NameTaken,
            // Gone again in between: the next reconcile creates it.
            Ok(None) => Created::NameTaken,
            Err(e) => Created::Failed(e.into()),
        },
        Err(e) => {
            let error = Error::from(e);
            if permanent(&error) {
                Created::Rejected(name, error.api_message())
            } else {
                Created::Failed(error)
            }
        }
    }
}

/// Whether an API error will not go away by retrying: a 4xx other than 409 (conflict) and
/// 429 (throttled).
fn permanent(error: &Error) -> bool {
    api_code(error).is_some_and(|code| (400..500).contains(&code) && code != 409 && code != 429)
}

/// Writes the status subresource, on condition that the Run is still the version it was
/// computed from. A merge patch: fields left out stay as they are, so the pinned definition,
/// which never changes once recorded, is sent only the first time.
async fn write_status(api: &Api<Run>, run: &Run, status: &RunStatus) -> Result<(), Error> {
    let mut body = serde_json::to_value(status).map_err(|source| Error::Encode {
        what: "the run status",
        source,
    })?;
    let pinned_before = run.status.as_ref().and_then(|s| s.workflow.as_ref());
    if pinned_before.is_some()
        && pinned_before == status.workflow.as_ref()
        && let Some(fields) = body.as_object_mut()
    {
        fields.remove("workflow");
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": run.resource_version()},
        "status": body,
    });
    api.patch_status(
        &run.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// The API server refused the status for good (a schema it breaks, say): the run fails with
/// a status small enough to be taken, saying why, instead of retrying for ever.
async fn status_refused(
    api: &Api<Run>,
    run: &Run,
    error: &Error,
    ctx: &Context,
) -> Result<Action, Error> {
    let message = text::cap_message(format!(
        "the API server refused the run's status: {}",
        error.api_message()
    ));
    warn!(run = %run.name_any(), %message, "status refused");
    let now = SystemClock.now();
    let patch = serde_json::json!({
        "status": {
            "phase": "Failed",
            "finishedAt": now,
            "conditions": [{
                "type": "Succeeded", "status": "False", "reason": "StatusRejected",
                "message": message, "lastTransitionTime": now,
            }],
        },
    });
    api.patch_status(
        &run.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    let note = Note {
        type_: kube::runtime::events::EventType::Warning,
        reason: "StatusRejected",
        note: message,
        job: None,
    };
    publish(ctx, run, &note).await;
    Ok(Action::await_change())
}

async fn delete_job(api: &Api<Job>, name: &str) -> Result<(), Error> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => {
            let error = Error::from(e);
            if permanent(&error) {
                // Retrying cannot help (e.g. a missing RBAC rule): say so, do not loop.
                warn!(job = name, error = %error, "cannot delete a Job");
                Ok(())
            } else {
                Err(error)
            }
        }
    }
}

/// For running attempts whose Job has had no Pod for a while, reads why (the Job's latest
/// `FailedCreate` Event: a quota, an admission webhook, a missing service account), a few per
/// reconcile and each at most every [`FAILED_CREATE_TTL`].
async fn read_failed_creates(
    ctx: &Context,
    run: &Run,
    jobs: &[Arc<Job>],
    pods: &[Arc<k8s_openapi::api::core::v1::Pod>],
) {
    let uid = run.uid().unwrap_or_default();
    let now = SystemClock.now();
    let with_pods: std::collections::HashSet<&str> = pods
        .iter()
        .flat_map(|p| p.owner_references().iter().map(|o| o.uid.as_str()))
        .collect();
    let running: std::collections::HashSet<&str> = run
        .status
        .iter()
        .flat_map(|s| &s.tasks)
        .filter(|t| t.phase == TaskPhase::Running)
        .filter_map(|t| t.job.as_deref())
        .collect();
    let waiting = jobs.iter().filter(|job| {
        let name = job.metadata.name.as_deref().unwrap_or_default();
        let old_enough = job
            .metadata
            .creation_timestamp
            .as_ref()
            .is_some_and(|t| now.duration_since(t.0) >= NO_POD_PATIENCE);
        running.contains(name)
            && old_enough
            && !job
                .metadata
                .uid
                .as_deref()
                .is_some_and(|u| with_pods.contains(u))
            && !ctx.failed_create_is_fresh(&uid, name, FAILED_CREATE_TTL)
    });
    let namespace = run.namespace().unwrap_or_default();
    let events: Api<CoreEvent> = Api::namespaced(ctx.client.clone(), &namespace);
    for job in waiting.take(MAX_EVENT_READS) {
        let (Some(name), Some(job_uid)) =
            (job.metadata.name.as_deref(), job.metadata.uid.as_deref())
        else {
            continue;
        };
        let selector = format!("involvedObject.uid={job_uid},reason=FailedCreate");
        match events.list(&ListParams::default().fields(&selector)).await {
            Ok(list) => {
                let latest = list
                    .items
                    .iter()
                    .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0))
                    .and_then(|e| e.message.clone());
                if let Some(why) = latest {
                    ctx.failed_create(&uid, name, text::cap(why, 1024));
                }
            }
            Err(e) => warn!(job = name, error = %e, "cannot read the Job's events"),
        }
    }
}

/// Metrics for what a status write recorded.
fn count_tasks(ctx: &Context, run: &Run, old: &RunStatus, new: &RunStatus) {
    let before: std::collections::HashMap<&str, (TaskPhase, u32)> = old
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), (t.phase, t.attempts)))
        .collect();
    for task in &new.tasks {
        let was = before.get(task.name.as_str()).copied();
        if was != Some((task.phase, task.attempts)) {
            ctx.metrics.task_changed(was, (task.phase, task.attempts));
        }
    }
    if new.phase != old.phase
        && let Some(phase) = new.phase
        && phase.is_final()
    {
        info!(run = %run.name_any(), ?phase, "run finished");
    }
}

/// Best effort: a lost Event must not fail the reconcile. A task's Event is related to its
/// Job, so each failed task keeps an Event of its own.
pub(super) async fn publish(ctx: &Context, run: &Run, note: &Note) {
    let related = note.job.as_ref().map(|job| ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: Some(job.clone()),
        namespace: run.namespace(),
        ..ObjectReference::default()
    });
    let event = KubeEvent {
        type_: note.type_,
        reason: note.reason.into(),
        note: Some(text::cap_message(note.note.clone())),
        action: "Reconcile".into(),
        secondary: related,
    };
    if let Err(e) = ctx.recorder.publish(&event, &run.object_ref(&())).await {
        warn!(run = %run.name_any(), error = %e, "cannot publish event");
    }
}
