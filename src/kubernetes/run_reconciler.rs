//! Reconciling a Run, as a pipeline: fetch the Run and its children from the indexes, pin and
//! validate the definition, rebuild the engine from the recorded status, feed it what the Jobs
//! and Pods say, apply the Jobs it asks for, and write the status once.
//!
//! Level-triggered: every step starts from what is observed, never from why the reconcile was
//! triggered. Job names are deterministic and a Job that exists is never created again, so a
//! controller killed at any point converges without duplicates; the status write carries the
//! resourceVersion it was computed from, so a decision made on a stale view is rejected and
//! retried instead of overwriting newer results.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::controller::Context;
use super::error::Error;
use super::job::build_job;
use super::names::{FIELD_MANAGER, LABEL_ATTEMPT, LABEL_TASK, job_name};
use super::observe::{attempt_outcome, job_verdict};
use crate::api::{
    Condition, ConditionStatus, PinnedWorkflow, Run, RunPhase, RunStatus, TaskPhase, TaskStatus,
    Workflow,
};
use crate::compile::names::MAX_LABEL_LEN;
use crate::compile::{BoundParams, Dag, bind_params, compile};
use crate::driver::{Clock, SystemClock};
use crate::engine::{Action as EngineAction, Engine, KillReason, Outcome};
use crate::task_env::RunIdentity;

/// How often a run that waits for something outside ork (its Workflow) looks again.
const WAIT_RETRY: Duration = Duration::from_secs(10);
/// How soon to look again when a child was not in the cache yet.
const UNSURE_RETRY: Duration = Duration::from_secs(2);
/// Largest status a Run may hold: etcd takes objects up to 1.5 MiB, and the spec and metadata
/// need room too.
const MAX_STATUS_BYTES: usize = 1_000_000;
/// Requests one reconcile sends at once (Jobs to create or delete).
const API_CONCURRENCY: usize = 16;
/// Even with nothing due, a running run is looked at this often (a safety net, not a clock).
const RESYNC: Duration = Duration::from_secs(300);

/// A validated, pinned definition.
struct Definition {
    dag: Arc<Dag>,
    params: BoundParams,
    pinned: PinnedWorkflow,
}

enum Pinning {
    Ready(Box<Definition>),
    /// The run can never start: `(reason, message)`.
    Rejected(&'static str, String),
    /// Something the run needs does not exist yet.
    Waiting(&'static str, String),
}

pub async fn reconcile(run: Arc<Run>, ctx: Arc<Context>) -> Result<Action, Error> {
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
    let runs: Api<Run> = Api::namespaced(ctx.client.clone(), &namespace);
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let old = run.status.clone().unwrap_or_default();
    let now = SystemClock.now();

    // ---- fetch: the run's children, from the watch-fed indexes ----
    let jobs = ctx.jobs_of(&namespace, &name);
    let pods = ctx.pods_of(&namespace, &name);
    // A Job of this name owned by someone else is an earlier Run of the same name that the
    // garbage collector has not removed yet: never adopted, never overwritten.
    let jobs_by_name: HashMap<&str, &Job> = jobs
        .iter()
        .filter_map(|j| Some((j.metadata.name.as_deref()?, j.as_ref())))
        .collect();
    let pods_by_job: HashMap<&str, Vec<&Pod>> = pods.iter().fold(HashMap::new(), |mut map, pod| {
        if let Some(job_uid) = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.as_str())
        {
            map.entry(job_uid).or_default().push(pod.as_ref());
        }
        map
    });
    let pods_of = |job: &Job| -> Vec<&Pod> {
        job.metadata
            .uid
            .as_deref()
            .and_then(|uid| pods_by_job.get(uid))
            .cloned()
            .unwrap_or_default()
    };

    if old.phase.is_some_and(RunPhase::is_final) {
        delete_leftovers(&jobs_api, &jobs, &pods, &old, &uid).await?;
        ctx.forget(&uid);
        return Ok(Action::await_change());
    }

    // ---- validate: pin the definition the first time, then always use the pinned one ----
    let definition = match pin(&run, &old, &ctx, &namespace, &uid).await? {
        Pinning::Ready(definition) => definition,
        Pinning::Rejected(reason, message) => {
            let status = held_status(&run, &old, RunPhase::Failed, reason, &message, now);
            if status != old {
                write_status(&runs, &run, &status).await?;
                publish(&ctx, &run, EventType::Warning, reason, &message).await;
            }
            return Ok(Action::await_change());
        }
        Pinning::Waiting(reason, message) => {
            let status = held_status(&run, &old, RunPhase::Pending, reason, &message, now);
            if status != old {
                write_status(&runs, &run, &status).await?;
            }
            return Ok(Action::requeue(WAIT_RETRY));
        }
    };
    let identity = RunIdentity {
        workflow: definition
            .pinned
            .name
            .clone()
            .unwrap_or_else(|| name.clone()),
        run: name.clone(),
    };

    // ---- build: the engine as recorded, then what the children say ----
    let dag = Arc::clone(&definition.dag);
    let mut engine = Engine::restore(
        Arc::clone(&dag),
        definition.params,
        &old,
        now,
        |task, attempt| {
            let job = jobs_by_name.get(job_name(&name, &dag.task(task).name, attempt).as_str())?;
            let created = job.metadata.creation_timestamp.as_ref()?;
            owned_by(job, &uid).then_some(created.0)
        },
    );
    if engine.phase() == RunPhase::Pending {
        engine.start(now);
    }
    let mut unsure = false;
    for recorded in old.tasks.iter().filter(|t| t.phase == TaskPhase::Running) {
        let Some(task) = dag.id(&recorded.name) else {
            continue;
        };
        let attempt = recorded.attempts;
        let job_name = job_name(&name, &recorded.name, attempt);
        match jobs_by_name.get(job_name.as_str()) {
            Some(job) if !owned_by(job, &uid) => {
                // A Job of an earlier Run of the same name, not yet garbage-collected.
                unsure = true;
            }
            Some(job) => {
                let mut outcome = attempt_outcome(job, &pods_of(job));
                if outcome.is_none() && job_finished(job) {
                    // The Job's verdict came before its Pod's result: read the Pods afresh.
                    let selector = format!("job-name={job_name}");
                    let fresh = pods_api
                        .list(&ListParams::default().labels(&selector))
                        .await?;
                    let fresh: Vec<&Pod> = fresh
                        .items
                        .iter()
                        .filter(|p| {
                            p.owner_references()
                                .iter()
                                .any(|o| Some(&o.uid) == job.metadata.uid.as_ref())
                        })
                        .collect();
                    outcome = attempt_outcome(job, &fresh).or_else(|| job_verdict(job));
                }
                if let Some(outcome) = outcome {
                    engine.finish_attempt(task, attempt, outcome, now);
                }
            }
            None => {
                // The cache may simply lag behind a Job created a moment ago: ask the API server.
                if jobs_api.get_opt(&job_name).await?.is_some() {
                    unsure = true;
                } else {
                    let message =
                        format!("Job {job_name} disappeared while attempt {attempt} was running");
                    let outcome = Outcome::Failed {
                        reason: "JobLost".into(),
                        message,
                    };
                    engine.finish_attempt(task, attempt, outcome, now);
                }
            }
        }
    }
    engine.tick(now);

    // ---- apply: the Jobs the engine asked for ----
    let owner = run.controller_owner_ref(&()).ok_or_else(|| Error::NoUid {
        kind: "Run",
        name: name.clone(),
    })?;
    let mut kills = Vec::new();
    let mut creates = Vec::new();
    let mut name_taken = false;
    for action in engine.take_actions() {
        match action {
            EngineAction::Start(launch) => {
                let task = dag.task(launch.task);
                let job_name = job_name(&name, &task.name, launch.attempt);
                match jobs_by_name.get(job_name.as_str()) {
                    // made by an earlier reconcile whose status write did not land
                    Some(job) if owned_by(job, &uid) => {}
                    Some(_) => name_taken = true,
                    None => creates.push(build_job(&owner, &namespace, &identity, task, &launch)),
                }
            }
            // A Job stops itself at its activeDeadlineSeconds and stays for inspection.
            EngineAction::Kill {
                reason: KillReason::Timeout,
                ..
            } => {}
            EngineAction::Kill { task, attempt, .. } => {
                kills.push(job_name(&name, &dag.task(task).name, attempt));
            }
        }
    }
    let applies: Vec<_> = creates
        .into_iter()
        .map(|job| {
            let api = jobs_api.clone();
            async move {
                let name = job.metadata.name.clone().unwrap_or_default();
                let params = PatchParams::apply(FIELD_MANAGER).force();
                api.patch(&name, &params, &Patch::Apply(&job))
                    .await
                    .map(drop)
            }
        })
        .collect();
    stream::iter(applies)
        .buffer_unordered(API_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    if name_taken {
        // Record nothing until the earlier Run's Jobs are gone; then this decision is remade.
        return Ok(Action::requeue(UNSURE_RETRY));
    }

    // ---- status: one write, only when something changed ----
    let mut status = engine.run_status();
    status.workflow = Some(definition.pinned);
    status.observed_generation = run.metadata.generation;
    let size = serde_json::to_vec(&status).map_or(0, |bytes| bytes.len());
    if size > MAX_STATUS_BYTES {
        // One object holds the whole status; past etcd's limit every write would fail and the
        // run would hang. Stop it with a status that fits and says why.
        let message = format!(
            "the run's status would be {size} bytes, over the {MAX_STATUS_BYTES} a Run may hold \
             (tasks, outputs and the pinned definition together); split the workflow or write \
             smaller outputs"
        );
        let status = held_status(
            &run,
            &old,
            RunPhase::Failed,
            "StatusTooLarge",
            &message,
            now,
        );
        write_status(&runs, &run, &status).await?;
        publish(&ctx, &run, EventType::Warning, "StatusTooLarge", &message).await;
        return Ok(Action::await_change());
    }
    if status != old {
        write_status(&runs, &run, &status).await?;
        announce(&ctx, &run, &old, &status).await;
    }

    // ---- stop what the recorded status says is over: only after it is recorded ----
    let deletes: Vec<_> = kills
        .into_iter()
        .map(|name| {
            let api = jobs_api.clone();
            async move { delete_job(&api, &name).await }
        })
        .collect();
    stream::iter(deletes)
        .buffer_unordered(API_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    delete_leftovers(&jobs_api, &jobs, &pods, &status, &uid).await?;

    if engine.is_finished() {
        ctx.forget(&uid);
        return Ok(Action::await_change());
    }
    let mut wait = engine
        .next_wakeup()
        .and_then(|at| Duration::try_from(at.duration_since(now)).ok())
        .unwrap_or(RESYNC)
        .min(RESYNC);
    if unsure {
        wait = wait.min(UNSURE_RETRY);
    }
    Ok(Action::requeue(wait.max(Duration::from_millis(10))))
}

/// The run's definition: the pinned copy once there is one, else the Workflow (or the inline
/// spec) as it is now, validated and compiled.
async fn pin(
    run: &Run,
    status: &RunStatus,
    ctx: &Context,
    namespace: &str,
    uid: &str,
) -> Result<Pinning, Error> {
    let name = run.name_any();
    if name.len() > MAX_LABEL_LEN {
        return Ok(Pinning::Rejected(
            "InvalidSpec",
            format!(
                "metadata.name: run names are limited to {MAX_LABEL_LEN} characters, as they \
                 label the run's Jobs and Pods"
            ),
        ));
    }
    let recorded = status.workflow.as_ref().filter(|p| p.spec.is_some());
    if let Some(pinned) = recorded
        && let Some((dag, params)) = ctx.cached(uid)
    {
        return Ok(Pinning::Ready(Box::new(Definition {
            dag,
            params,
            pinned: pinned.clone(),
        })));
    }
    let (pinned, base) = match (recorded, &run.spec.workflow_ref, &run.spec.workflow) {
        (Some(pinned), _, _) => {
            let base = if pinned.name.is_some() {
                "spec"
            } else {
                "spec.workflow"
            };
            (pinned.clone(), base)
        }
        (None, Some(reference), None) => {
            let workflows: Api<Workflow> = Api::namespaced(ctx.client.clone(), namespace);
            match workflows.get_opt(&reference.name).await? {
                Some(workflow) => (
                    PinnedWorkflow {
                        name: Some(reference.name.clone()),
                        generation: workflow.metadata.generation,
                        spec: Some(workflow.spec),
                        params: run.spec.params.clone(),
                    },
                    "spec",
                ),
                None => {
                    return Ok(Pinning::Waiting(
                        "WorkflowNotFound",
                        format!(
                            "Workflow {:?} does not exist in namespace {namespace}",
                            reference.name
                        ),
                    ));
                }
            }
        }
        (None, None, Some(inline)) => (
            PinnedWorkflow {
                name: None,
                generation: None,
                spec: Some(inline.clone()),
                params: run.spec.params.clone(),
            },
            "spec.workflow",
        ),
        (None, _, _) => {
            return Ok(Pinning::Rejected(
                "InvalidSpec",
                "spec: exactly one of workflowRef or workflow must be set".into(),
            ));
        }
    };
    let Some(spec) = pinned.spec.as_ref() else {
        return Ok(Pinning::Rejected(
            "InvalidSpec",
            "no workflow definition".into(),
        ));
    };
    let origin = match &pinned.name {
        Some(workflow) => format!("Workflow {workflow}: "),
        None => String::new(),
    };
    let dag = match compile(spec, base) {
        Ok(dag) => Arc::new(dag),
        Err(problems) => {
            let list: Vec<String> = problems.iter().map(|p| format!("{origin}{p}")).collect();
            return Ok(Pinning::Rejected("InvalidSpec", list.join("; ")));
        }
    };
    // The parameters are pinned with the definition: editing spec.params later changes nothing.
    let params = match bind_params(&dag, &pinned.params, "spec.params") {
        Ok(params) => params,
        Err(problems) => {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Ok(Pinning::Rejected("InvalidSpec", list.join("; ")));
        }
    };
    // Cache only a definition that is already recorded: a first pin whose status write loses
    // a race may be re-read from a newer Workflow.
    if recorded.is_some() {
        ctx.remember(uid, Arc::clone(&dag), params.clone());
    }
    Ok(Pinning::Ready(Box::new(Definition {
        dag,
        params,
        pinned,
    })))
}

fn succeeded_condition(
    old: &RunStatus,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Condition {
    let previous = old.conditions.iter().find(|c| c.type_ == "Succeeded");
    let unchanged =
        previous.is_some_and(|c| c.status == status && c.reason.as_deref() == Some(reason));
    Condition {
        type_: "Succeeded".into(),
        status,
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: if unchanged {
            previous.and_then(|c| c.last_transition_time)
        } else {
            Some(now)
        },
        observed_generation: None,
    }
}

/// The status of a run that cannot go on: `Failed` for good (a bad definition), or `Pending`
/// while something it needs is missing.
fn held_status(
    run: &Run,
    old: &RunStatus,
    phase: RunPhase,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> RunStatus {
    let condition = if phase == RunPhase::Failed {
        ConditionStatus::False
    } else {
        ConditionStatus::Unknown
    };
    RunStatus {
        phase: Some(phase),
        finished_at: if phase.is_final() {
            old.finished_at.or(Some(now))
        } else {
            old.finished_at
        },
        observed_generation: run.metadata.generation,
        conditions: vec![succeeded_condition(old, condition, reason, message, now)],
        ..old.clone()
    }
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

/// Deletes the Jobs of attempts that `status` records as over while their Pod may still run:
/// superseded by a later attempt, stopped by the run's deadline, or left running by a run that
/// ended without them — e.g. after a
/// crash between recording the stop and deleting the Job. Judged from the recorded status only,
/// so a stale view errs towards keeping a Job.
async fn delete_leftovers(
    api: &Api<Job>,
    jobs: &[Arc<Job>],
    pods: &[Arc<Pod>],
    status: &RunStatus,
    uid: &str,
) -> Result<(), Error> {
    // A timed-out attempt's Job stops itself (activeDeadlineSeconds).
    const STOPPED: [&str; 1] = ["DeadlineExceeded"];
    let recorded: HashMap<&str, &TaskStatus> =
        status.tasks.iter().map(|t| (t.name.as_str(), t)).collect();
    for job in jobs {
        let (Some(task), Some(attempt)) = (
            label(job.as_ref(), LABEL_TASK),
            label(job.as_ref(), LABEL_ATTEMPT).and_then(|a| a.parse::<u32>().ok()),
        ) else {
            continue;
        };
        let Some(record) = recorded.get(task) else {
            continue;
        };
        // A Job with a deadline stops by itself; it stays, for inspection.
        let stops_itself = job
            .spec
            .as_ref()
            .is_some_and(|s| s.active_deadline_seconds.is_some());
        let superseded = record.attempts > attempt && !stops_itself;
        // A run that ended (e.g. StatusTooLarge) records nothing more: stop what still runs.
        let orphaned = status.phase.is_some_and(RunPhase::is_final) && !record.phase.is_final();
        let over = superseded
            || orphaned
            || (record.attempts == attempt
                && record.phase.is_final()
                && record
                    .reason
                    .as_deref()
                    .is_some_and(|r| STOPPED.contains(&r)));
        let job_name = job.name_any();
        let pod_done = pods
            .iter()
            .any(|p| label(p.as_ref(), "job-name") == Some(job_name.as_str()) && pod_terminated(p));
        if over
            && owned_by(job, uid)
            && !job_finished(job)
            && !pod_done
            && job.metadata.deletion_timestamp.is_none()
        {
            delete_job(api, &job_name).await?;
        }
    }
    Ok(())
}

fn pod_terminated(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed")
}

async fn delete_job(api: &Api<Job>, name: &str) -> Result<(), Error> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn owned_by(job: &Job, uid: &str) -> bool {
    job.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

fn job_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

fn label<'a, K: Resource + ?Sized>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta().labels.as_ref()?.get(key).map(String::as_str)
}

/// Kubernetes Events for what changed: the run starting and ending, tasks failing for good.
async fn announce(ctx: &Context, run: &Run, old: &RunStatus, new: &RunStatus) {
    let message = new
        .conditions
        .iter()
        .find(|c| c.type_ == "Succeeded")
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    let was = old.phase.unwrap_or(RunPhase::Pending);
    let is = new.phase.unwrap_or(RunPhase::Pending);
    if was == RunPhase::Pending && is != RunPhase::Pending {
        let text = format!("started {} tasks", new.tasks.len());
        publish(ctx, run, EventType::Normal, "Started", &text).await;
    }
    let before: HashMap<&str, (TaskPhase, u32)> = old
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), (t.phase, t.attempts)))
        .collect();
    for task in &new.tasks {
        let was = before.get(task.name.as_str()).copied();
        ctx.metrics.task_changed(was, (task.phase, task.attempts));
        if task.phase == TaskPhase::Failed && was.map(|w| w.0) != Some(TaskPhase::Failed) {
            let text = format!(
                "task {} failed: {}",
                task.name,
                task.message.as_deref().unwrap_or("no detail")
            );
            publish(ctx, run, EventType::Warning, "TaskFailed", &text).await;
        }
    }
    if is.is_final() && !was.is_final() {
        let (kind, reason) = match is {
            RunPhase::Succeeded => (EventType::Normal, "Succeeded"),
            RunPhase::Cancelled => (EventType::Normal, "Cancelled"),
            _ => (EventType::Warning, "Failed"),
        };
        info!(run = %run.name_any(), phase = ?is, "{message}");
        publish(ctx, run, kind, reason, &message).await;
    }
}

/// Best effort: a lost Event must not fail the reconcile.
async fn publish(ctx: &Context, run: &Run, type_: EventType, reason: &str, note: &str) {
    let event = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &run.object_ref(&())).await {
        warn!(run = %run.name_any(), error = %e, "cannot publish event");
    }
}
