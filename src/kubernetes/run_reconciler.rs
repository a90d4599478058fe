//! Reconciling a Run: observe (the Run, its definition, its Jobs and Pods from the watch-fed
//! caches), decide ([`decide`], pure), then carry the plan out — the status first, carrying
//! the resourceVersion it was computed from, so a decision made on a stale view is refused
//! (409) before it has created anything; then the Jobs, with a plain create; then deletions;
//! then Events.
//!
//! Level-triggered: every step starts from what is observed, never from why the reconcile was
//! triggered. Job names are deterministic and a Job that exists is never created again, so a
//! controller killed at any point converges without duplicates.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::Event as KubeEvent;
use kube::{Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::context::Context;
use super::decide::{Note, Observed, Plan, decide, decide_finished};
use super::definition::{Resolution, resolve};
use super::error::{Error, api_code};
use super::invalid;
use super::layout;
use super::names::{LABEL_MANAGED_BY, LABEL_RUN, MANAGED_BY, attempt_job_name};
use super::state::RunState;
use crate::api::{Run, RunPhase, RunShard, RunShardSpec, RunStatus, TaskPhase};
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
    // A finished run (its cached copy keeps no records or definition) only has its Jobs
    // stopped: nothing is read or resolved for it.
    if run
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(RunPhase::is_final)
    {
        ctx.forget(&uid);
        let finished_at = run.status.as_ref().and_then(|s| s.finished_at);
        let now = SystemClock.now();
        let plan = ctx.with_children(&namespace, &name, |jobs, pods| {
            decide_finished(&uid, jobs, pods, finished_at, now)
        });
        return execute(plan, run, &namespace, &uid, None, &ctx).await;
    }

    // ---- observe ----
    // What is kept of the run, if it is still what the API server has.
    let version = run.metadata.resource_version.as_deref();
    let mut state = ctx.take_state(&uid).filter(|s| {
        let current = s.is_current(version);
        if !current {
            debug!(run = %name, seen = ?version, kept = %s.resource_version, "the run changed; rebuilding its state");
        }
        current
    });
    // Without it, a large run's records and pinned tasks are read back from its RunShards.
    let mut shard_versions = HashMap::new();
    let assembled;
    let observed = match (&state, run.status.as_ref().and_then(|s| s.records.as_ref())) {
        (None, Some(_)) => {
            let (full, versions) = read_shards(run, &namespace, &uid, &ctx).await?;
            shard_versions = versions;
            assembled = full;
            &assembled
        }
        _ => run,
    };
    let definition = match &state {
        Some(state) => Resolution::Ready(Arc::clone(&state.definition)),
        None => resolve(observed, &ctx).await?,
    };
    // What this controller remembers first, the caches after: a Job it made and has seen in
    // the watch is then in the cache read here, unless it is gone.
    let mut memory = ctx.memory(&uid);
    if let Some(state) = &state {
        read_failed_creates(&ctx, run, state).await;
    }
    memory.failed_create = ctx.failed_creates(&uid);
    let now = SystemClock.now();

    // ---- decide ----
    let restored = state.is_none();
    // Taken before the caches are read: what the watch shows from now on is marked again.
    let touched = ctx.take_touched(&namespace, &name);
    let plan = ctx.with_children(&namespace, &name, |jobs, pods| {
        decide(
            &mut state,
            &Observed {
                run: observed,
                definition: &definition,
                jobs,
                pods,
                memory: &memory,
                now,
                config: &ctx.config,
                touched: Some(&touched),
            },
        )
    });
    if restored && let Some(state) = state.as_mut() {
        for (k, (version, len)) in shard_versions {
            state.shard_versions.insert(k, version);
            state.shard_lens.insert(k, len);
        }
    }

    // ---- act ----
    let result = execute(plan, run, &namespace, &uid, state.as_mut(), &ctx).await;
    // Kept only when every write went through: otherwise it is rebuilt from what was written.
    if let (Ok(_), Some(state)) = (&result, state)
        && !state.engine.is_finished()
    {
        ctx.keep_state(&uid, state);
    }
    result
}

/// A large run with every record and its whole pinned definition, joined from its RunShards,
/// and the resourceVersions of its record shards.
async fn read_shards(
    run: &Run,
    namespace: &str,
    uid: &str,
    ctx: &Context,
) -> Result<(Run, HashMap<u32, (String, usize)>), Error> {
    let api: Api<RunShard> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!("{LABEL_RUN}={}", run.name_any());
    let listed = api.list(&ListParams::default().labels(&selector)).await?;
    let ours: Vec<RunShard> = listed
        .items
        .into_iter()
        .filter(|s| controlled_by(s, uid))
        .collect();
    let mut full = run.clone();
    layout::assemble(&mut full, &ours).map_err(Error::Internal)?;
    let name = run.name_any();
    let versions = ours
        .iter()
        .filter_map(|s| {
            let shard_name = s.metadata.name.as_deref()?;
            let k = shard_name
                .strip_prefix(&format!("{name}.tasks-"))?
                .parse::<u32>()
                .ok()?;
            Some((
                k,
                (s.metadata.resource_version.clone()?, s.spec.tasks.len()),
            ))
        })
        .collect();
    Ok((full, versions))
}

/// Carries out a plan: status, creations, deletions, Events, in that order.
async fn execute(
    plan: Plan,
    run: &Run,
    namespace: &str,
    uid: &str,
    state: Option<&mut RunState>,
    ctx: &Context,
) -> Result<Action, Error> {
    let runs: Api<Run> = Api::namespaced(ctx.client.clone(), namespace);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let old = run.status.clone().unwrap_or_default();
    let wrote = match state {
        Some(state) => write_records(&plan, run, namespace, state, ctx).await,
        None => match &plan.status {
            Some(status) => {
                write_whole(&runs, run, run.metadata.resource_version.as_deref(), status)
                    .await
                    .map(|_| true)
            }
            None => Ok(false),
        },
    };
    let wrote = match wrote {
        Ok(true) => {
            count_tasks(ctx, run, &old, &plan);
            ctx.drop_rejections(uid, &plan.recorded_refusals);
            true
        }
        Ok(false) => false,
        Err(e) if permanent(&e) => return status_refused(&runs, run, &e, ctx).await,
        Err(e) => return Err(e),
    };
    // A Job the status does not know is stopped only by a view known to be current: a write
    // that went through proves it; without one, the Run is read again. (Another controller
    // may have recorded and made the Job after this view was taken.)
    let current = wrote
        || plan.finished
        || plan.delete.is_empty()
        || runs
            .get_metadata(&run.name_any())
            .await?
            .metadata
            .resource_version
            == run.metadata.resource_version;

    // Only once the status that asks for them is recorded.
    let mut again = plan.requeue;
    let mut soon = |d: Duration| again = Some(again.map_or(d, |a| a.min(d)));
    let mut transient = None;
    // Workspace claims before the Jobs whose Pods mount them. A Job whose claim cannot be made
    // is not created: refused for good, its attempt fails saying why; otherwise it is made by
    // a later reconcile.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let mut blocked: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for (claim, needing) in &plan.claims {
        let name = claim.metadata.name.clone().unwrap_or_default();
        match create_claim(&claims, claim, uid).await {
            Ok(()) => ctx.claim_made(uid, &name),
            Err(e) if permanent(&e) => {
                let message = format!(
                    "the API server refused the PersistentVolumeClaim {name} of its workspace: {}",
                    e.api_message()
                );
                warn!(run = %run.name_any(), claim = %name, %message, "workspace claim refused");
                for job in needing {
                    ctx.rejected(uid, job, message.clone());
                }
                blocked.extend(needing.iter().map(String::as_str));
                soon(Duration::ZERO);
            }
            Err(e) => {
                blocked.extend(needing.iter().map(String::as_str));
                transient = Some(e);
            }
        }
    }
    // Owned futures: a stream of futures borrowing from here would not be `Send`.
    let creations: Vec<_> = plan
        .create
        .iter()
        .filter(|job| !blocked.contains(job.metadata.name.as_deref().unwrap_or_default()))
        .map(|job| {
            let (api, job, uid) = (jobs.clone(), job.clone(), uid.to_string());
            async move { create_job(&api, &job, &uid).await }
        })
        .collect();
    let outcomes: Vec<Created> = stream::iter(creations)
        .buffer_unordered(API_CONCURRENCY)
        .collect()
        .await;
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

    if !current {
        debug!(run = %run.name_any(), "the run changed; its Jobs are looked at again");
        soon(Duration::ZERO);
    }
    let deletions: Vec<_> = plan
        .delete
        .iter()
        .filter(|_| current)
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

/// Whether `obj`'s controlling owner is the object with UID `uid`.
fn controlled_by<K: Resource>(obj: &K, uid: &str) -> bool {
    obj.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// Creates a workspace claim; one that exists already is fine when this run owns it (made by
/// an earlier reconcile), and an error when another object does.
async fn create_claim(
    api: &Api<PersistentVolumeClaim>,
    claim: &PersistentVolumeClaim,
    uid: &str,
) -> Result<(), Error> {
    let name = claim.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), claim).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = api.get(&name).await?;
            if controlled_by(&existing, uid) {
                Ok(())
            } else {
                Err(Error::Internal(format!(
                    "PersistentVolumeClaim {name} exists and is not this run's; waiting for it \
                     to go"
                )))
            }
        }
        Err(e) => Err(e.into()),
    }
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
            Ok(Some(existing)) if controlled_by(&existing, uid) => Created::Ok(name),
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

/// Writes a whole status with a merge patch, on condition that the Run is still the version it
/// was computed from. Returns the Run as written.
async fn write_whole(
    api: &Api<Run>,
    run: &Run,
    version: Option<&str>,
    status: &RunStatus,
) -> Result<Run, Error> {
    let body = serde_json::to_value(status).map_err(|source| Error::Encode {
        what: "the run status",
        source,
    })?;
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": version},
        "status": body,
    });
    Ok(api
        .patch_status(
            &run.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?)
}

/// Writes what a plan changed of a run with a state: the parts of a large run's pinned
/// definition (first write), its changed record shards, then the Run's status — whole the first
/// time, only what changed after. Each write carries the version it was computed from. The
/// state learns what was written. Returns whether anything was.
async fn write_records(
    plan: &Plan,
    run: &Run,
    namespace: &str,
    state: &mut RunState,
    ctx: &Context,
) -> Result<bool, Error> {
    let runs: Api<Run> = Api::namespaced(ctx.client.clone(), namespace);
    let shards: Api<RunShard> = Api::namespaced(ctx.client.clone(), namespace);
    let owner = run
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Internal(format!("Run {} has no uid", run.name_any())))?;
    let uid = owner.uid.clone();
    let shard_object = |name: &str, spec: RunShardSpec| {
        let mut shard = RunShard::new(name, spec);
        shard.metadata.namespace = Some(namespace.to_string());
        shard.metadata.owner_references = Some(vec![owner.clone()]);
        shard.metadata.labels = Some(shard_labels(&run.name_any()));
        shard
    };
    for (name, spec) in &plan.definition_parts {
        match shards
            .create(&PostParams::default(), &shard_object(name, spec.clone()))
            .await
        {
            Ok(_) => {}
            // Named after its content: one of ours with that name holds the same tasks.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let existing = shards.get(name).await?;
                if !controlled_by(&existing, &uid) {
                    return Err(Error::Internal(format!(
                        "RunShard {name} belongs to another object; waiting for it to go"
                    )));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut wrote = !plan.definition_parts.is_empty();
    if state.sharded {
        // Records first: they are the truth a restart rebuilds from; the summary follows. The
        // shards are independent of each other, so they are written at once.
        let updates = layout::shard_writes(
            &run.name_any(),
            &state.records,
            &state.shard_versions,
            &state.shard_lens,
            &plan.records,
        );
        let writes: Vec<_> = updates
            .into_iter()
            .map(|update| {
                let name = layout::record_shard_name(&run.name_any(), update.shard);
                let request = match update.write {
                    layout::ShardWrite::Patch(ops) => json_patch(ops).map(ShardRequest::Patch),
                    layout::ShardWrite::Create(spec) => {
                        Ok(ShardRequest::Create(Box::new(shard_object(&name, spec))))
                    }
                };
                let (shards, uid) = (shards.clone(), uid.clone());
                async move {
                    let written = match request? {
                        ShardRequest::Patch(patch) => {
                            shards.patch(&name, &PatchParams::default(), &patch).await?
                        }
                        ShardRequest::Create(shard) => create_shard(&shards, *shard, &uid).await?,
                    };
                    Ok::<_, Error>(WrittenShard {
                        shard: update.shard,
                        version: written.metadata.resource_version,
                        len: update.len,
                    })
                }
            })
            .collect();
        let results: Vec<Result<WrittenShard, Error>> = stream::iter(writes)
            .buffer_unordered(API_CONCURRENCY)
            .collect()
            .await;
        let mut failed = None;
        for result in results {
            match result {
                Ok(written) => {
                    if let Some(version) = written.version {
                        state.shard_versions.insert(written.shard, version);
                    }
                    state.shard_lens.insert(written.shard, written.len);
                    wrote = true;
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    let written_run = if plan.whole {
        match &plan.status {
            Some(head) => {
                let mut status = head.clone();
                if !state.sharded {
                    status.tasks = state.records.clone();
                    for (i, record) in &plan.records {
                        status.tasks[*i] = record.clone();
                    }
                }
                let version = Some(state.resource_version.as_str());
                let written = write_whole(&runs, run, version, &status).await?;
                state.stored = status.tasks.len();
                Some(written)
            }
            None => None,
        }
    } else {
        let inline = !state.sharded && !plan.records.is_empty();
        match (&plan.status, inline || plan.migrate) {
            (None, false) => None,
            (head, _) => {
                let new_head = head.clone().unwrap_or_else(|| state.head.clone());
                let patch = layout::run_patch(
                    &state.resource_version,
                    &state.head,
                    &new_head,
                    (!state.sharded).then_some((state.records.as_slice(), state.stored)),
                    &plan.records,
                    plan.migrate,
                );
                Some(
                    runs.patch_status(
                        &run.name_any(),
                        &PatchParams::default(),
                        &json_patch(patch)?,
                    )
                    .await?,
                )
            }
        }
    };
    if let Some(written) = written_run {
        state.written_at(written.metadata.resource_version.unwrap_or_default());
        wrote = true;
    }
    state.commit(plan.status.clone(), &plan.records);
    Ok(wrote)
}

/// Creates a record shard. One of ours that exists already (made by a write whose answer was
/// lost, or by a move to shards cut short) is replaced whole: this one holds what is current.
async fn create_shard(api: &Api<RunShard>, shard: RunShard, uid: &str) -> Result<RunShard, Error> {
    let name = shard.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), &shard).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = api.get(&name).await?;
            if !controlled_by(&existing, uid) {
                return Err(Error::Internal(format!(
                    "RunShard {name} belongs to another object; waiting for it to go"
                )));
            }
            // A merge patch (the `patch` verb the controller has) replacing its records whole.
            let body = serde_json::json!({
                "metadata": {"resourceVersion": existing.metadata.resource_version},
                "spec": shard.spec,
            });
            Ok(api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// A record shard as written: its resourceVersion and how many records it holds now.
struct WrittenShard {
    shard: u32,
    version: Option<String>,
    len: usize,
}

/// One write of a record shard: a patch of one that exists, or the first version of a new one.
enum ShardRequest {
    Patch(Patch<()>),
    Create(Box<RunShard>),
}

fn json_patch(ops: serde_json::Value) -> Result<Patch<()>, Error> {
    let patch = serde_json::from_value(ops).map_err(|source| Error::Encode {
        what: "a JSON patch",
        source,
    })?;
    Ok(Patch::Json(patch))
}

fn shard_labels(run: &str) -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([
        (LABEL_RUN.to_string(), run.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
    ])
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
async fn read_failed_creates(ctx: &Context, run: &Run, state: &RunState) {
    let (name, namespace) = (run.name_any(), run.namespace().unwrap_or_default());
    let uid = run.uid().unwrap_or_default();
    let now = SystemClock.now();
    let dag = &state.definition.dag;
    let running: Vec<String> = state
        .engine
        .running_attempts()
        .map(|(id, attempt)| {
            let of = state.engine.attempt_of(id, attempt);
            attempt_job_name(&name, &dag.task(of.task).name, of.instance, attempt)
        })
        .collect();
    let waiting: Vec<(String, String)> = ctx.with_children(&namespace, &name, |jobs, pods| {
        running
            .iter()
            .filter_map(|job_name| {
                let job = jobs
                    .get(job_name)?
                    .iter()
                    .find(|j| controlled_by(j.as_ref(), &uid))?;
                let old_enough = job
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .is_some_and(|t| now.duration_since(t.0) >= NO_POD_PATIENCE);
                let waiting = old_enough
                    && job.metadata.deletion_timestamp.is_none()
                    && !super::observe::job_finished(job)
                    && pods.get(job_name).is_none_or(Vec::is_empty)
                    && !ctx.failed_create_is_fresh(&uid, job_name, FAILED_CREATE_TTL);
                waiting.then(|| {
                    (
                        job_name.clone(),
                        job.metadata.uid.clone().unwrap_or_default(),
                    )
                })
            })
            .take(MAX_EVENT_READS)
            .collect()
    });
    let events: Api<CoreEvent> = Api::namespaced(ctx.client.clone(), &namespace);
    for (job, job_uid) in waiting {
        let selector = format!("involvedObject.uid={job_uid},reason=FailedCreate");
        match events.list(&ListParams::default().fields(&selector)).await {
            Ok(list) => {
                let latest = list
                    .items
                    .iter()
                    .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0))
                    .and_then(|e| e.message.clone());
                if let Some(why) = latest {
                    ctx.failed_create(&uid, &job, text::cap(why, 1024));
                }
            }
            Err(e) => warn!(%job, error = %e, "cannot read the Job's events"),
        }
    }
}

/// Metrics for what a write recorded.
fn count_tasks(ctx: &Context, run: &Run, old: &RunStatus, plan: &Plan) {
    let before: HashMap<&str, (TaskPhase, u32)> = old
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), (t.phase, t.attempts)))
        .collect();
    for (_, task) in &plan.records {
        let was = before.get(task.name.as_str()).copied();
        ctx.metrics.task_changed(was, (task.phase, task.attempts));
    }
    if let Some(phase) = plan.status.as_ref().and_then(|s| s.phase)
        && phase.is_final()
        && old.phase != Some(phase)
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
