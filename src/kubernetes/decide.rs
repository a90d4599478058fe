//! The Run reconcile's decision: from what was observed — the Run, its definition, its Jobs
//! and Pods, what this controller did that the caches do not show yet, the time — to a
//! [`Plan`]: the status to record, the Jobs to create and to delete, the Events to send and
//! when to look again. Pure (no client, no clock), so every scenario is a table row; the
//! reconciler only carries the plan out, in this order: status first (a decision that loses
//! its write creates nothing), then Jobs, then deletions, then Events.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::definition::{Definition, Resolution};
use super::index::{Group, is_tombstone};
use super::job::build_job;
use super::names::{LABEL_ATTEMPT, LABEL_INSTANCE, LABEL_TASK, attempt_job_name};
use super::observe::{ObserveContext, job_finished, job_verdict, observe_attempt, pod_finished};
use super::state::RunState;
use crate::api::{
    Condition, ConditionStatus, Run, RunPhase, RunShardSpec, RunStatus, TaskPhase, TaskStatus,
};
use crate::compile::TaskId;
use crate::engine::{Action, AttemptOf, Engine, Outcome, instance_name};
use crate::task_env::RunIdentity;
use crate::text;

/// How long to wait before looking again when something is in flux (a predecessor's Job not
/// yet collected, a Pod result not yet seen).
const SOON: Duration = Duration::from_secs(2);
/// Even with nothing due, an unfinished run is looked at this often (a safety net).
const RESYNC: Duration = Duration::from_secs(300);
/// How often a reconcile looks at every running attempt of a run, not only at those whose Job
/// or Pods the watch showed changing: a safety net for a missed event.
const FULL_SCAN_EVERY: Duration = Duration::from_secs(30);
/// How often a rerun waiting for the run it reruns to finish looks again.
const RERUN_SOURCE_RECHECK: Duration = Duration::from_secs(3);
/// How long a Job without a Pod goes before the reason is shown (and re-read).
const NO_POD_RECHECK: Duration = Duration::from_secs(5);
/// Failed tasks named in Events by one reconcile; the rest are counted in one more.
const MAX_TASK_EVENTS: usize = 10;
/// Jobs one reconcile creates at most; the rest are made by the next ones, which follow at
/// once. Bounds the memory and the time of one reconcile.
const MAX_CREATES: usize = 250;
/// How often a large run's summary is written when only its counts changed.
const HEAD_EVERY: SignedDuration = SignedDuration::from_secs(1);
/// Running and failed tasks named in a large run's summary.
const MAX_NAMED: usize = super::layout::MAX_NAMED_TASKS;
/// A Job that ended without its Pod in the cache: after this long the Pod is taken as gone
/// and the Job's own verdict counts.
const POD_RESULT_WAIT: SignedDuration = SignedDuration::from_secs(10);

/// Settings of the decision.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long an image that cannot be pulled is waited for; `None`: for ever.
    pub image_pull_timeout: Option<SignedDuration>,
    /// How long after a timed-out attempt's deadline ork leaves the kubelet to stop it (keeping
    /// the Pod and its logs) before deleting its Job.
    pub stop_grace: SignedDuration,
    /// `ttlSecondsAfterFinished` of the Jobs: finished Jobs (and their Pods) are deleted this
    /// long after they finish; `None` keeps them until the Run is deleted.
    pub job_ttl_seconds: Option<i32>,
    /// Largest status a Run may hold, in bytes of JSON.
    pub max_status_bytes: usize,
    /// Runs of up to this many tasks keep every record in the Run's status; larger ones in
    /// RunShards.
    pub inline_tasks: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            image_pull_timeout: Some(SignedDuration::from_secs(300)),
            stop_grace: SignedDuration::from_secs(30),
            job_ttl_seconds: None,
            // etcd takes objects up to 1.5 MiB; the spec and metadata need room too.
            max_status_bytes: 1_000_000,
            inline_tasks: 1000,
        }
    }
}

/// What this controller did for the run that the caches may not show yet.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// Jobs this controller created for the run.
    pub created: HashSet<String>,
    /// Of those, the ones created a moment ago that the Job watch has not shown yet: missing
    /// from the cache, they are not lost, only not seen yet.
    pub unseen: HashSet<String>,
    /// Jobs the API server refused to create: name → its message.
    pub rejected: HashMap<String, String>,
    /// Jobs without a Pod: name → why (their latest `FailedCreate` Event).
    pub failed_create: HashMap<String, String>,
    /// PersistentVolumeClaims of the run's workspaces known to exist.
    pub claims: HashSet<String>,
}

/// Everything the decision is made from.
pub struct Observed<'a> {
    /// The Run; when no state is kept for it, its status with every task's record (joined from
    /// its RunShards when it has them).
    pub run: &'a Run,
    pub definition: &'a Resolution,
    /// Jobs labelled with the run's name, whoever owns them, by name.
    pub jobs: &'a Group<Job>,
    /// Pods labelled with the run's name, by the name of their Job.
    pub pods: &'a Group<Pod>,
    pub memory: &'a Memory,
    pub now: Timestamp,
    pub config: &'a Config,
    /// Jobs of the run whose Job or Pods the watch showed changing since the last reconcile;
    /// `None`: not known, look at every running attempt.
    pub touched: Option<&'a HashSet<String>>,
}

/// An Event to publish about the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
    /// The Job it is about, for task Events.
    pub job: Option<String>,
}

/// What the reconciler carries out.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Parts of a large run's pinned definition, to create first (its first write).
    pub definition_parts: Vec<(String, RunShardSpec)>,
    /// Records that changed: task index and record.
    pub records: Vec<(usize, TaskStatus)>,
    /// The Run's status (without records when `whole` is false) when it changed.
    pub status: Option<RunStatus>,
    /// Write `status` whole, with a merge patch (a first write, or a run that cannot go on),
    /// rather than only what changed.
    pub whole: bool,
    /// Jobs to create, after the status is written.
    pub create: Vec<Job>,
    /// Names of Jobs to delete, after the status is written.
    pub delete: Vec<String>,
    /// Events, sent last.
    pub events: Vec<Note>,
    /// When to look again; `None`: only when something changes.
    pub requeue: Option<Duration>,
    /// The run is over: what is kept about it can go.
    pub finished: bool,
    /// Refused Jobs whose refusal this plan records as their attempts' outcome.
    pub recorded_refusals: Vec<String>,
    /// The run just passed the inline limit (its fan-outs made it larger): `records` holds every
    /// record, to move from the Run's status to record shards.
    pub migrate: bool,
    /// Workspace claims to make before the Jobs, each with the Jobs that need it.
    pub claims: Vec<(
        k8s_openapi::api::core::v1::PersistentVolumeClaim,
        Vec<String>,
    )>,
}

/// Decides what to do about a run. `state` is what is kept of it between reconciles: `None`
/// rebuilds it from `o.run`'s status.
pub fn decide(state: &mut Option<RunState>, o: &Observed<'_>) -> Plan {
    let children = Children::new(o);
    let old = o.run.status.clone().unwrap_or_default();
    if old.phase.is_some_and(RunPhase::is_final) {
        *state = None;
        return finished(&children, old.finished_at, o.now);
    }
    match o.definition {
        Resolution::Rejected(reason, message) => {
            held(o, &old, &children, RunPhase::Failed, reason, message)
        }
        // Cancelled before it could start: nothing ran, nothing will.
        Resolution::Waiting(..) if o.run.spec.cancel => held(
            o,
            &old,
            &children,
            RunPhase::Cancelled,
            "Cancelled",
            "the run was cancelled before it started",
        ),
        Resolution::Waiting(reason, message) => {
            held(o, &old, &children, RunPhase::Pending, reason, message)
        }
        Resolution::Ready(definition) => {
            // Before anything starts, the Run's workspaces must fit the workflow's.
            if state.is_none()
                && old.phase.is_none_or(|p| p == RunPhase::Pending)
                && let Some(message) = binding_problems(&definition.dag, &o.run.spec.workspaces)
            {
                return held(
                    o,
                    &old,
                    &children,
                    RunPhase::Failed,
                    "InvalidSpec",
                    &message,
                );
            }
            let state = state.get_or_insert_with(|| restore(o, &old, &children, definition));
            run(o, state, &children)
        }
    }
}

/// What is wrong with a Run's workspace bindings for the workflow `dag`, in one message.
fn binding_problems(
    dag: &crate::compile::Dag,
    bindings: &[crate::api::WorkspaceBinding],
) -> Option<String> {
    let mut problems: Vec<String> =
        crate::compile::check_bindings(dag, bindings, "spec.workspaces")
            .iter()
            .map(ToString::to_string)
            .collect();
    if let Some((workspace, task)) = crate::compile::unbound_required(dag, bindings) {
        problems.push(format!(
            "spec.workspaces: task {} mounts workspace {}, which the Run does not bind (and \
             the workflow does not mark optional)",
            text::quoted(&task),
            text::quoted(&workspace)
        ));
    }
    (!problems.is_empty()).then(|| text::cap_message(problems.join("; ")))
}

/// The state of a run, rebuilt from its status (every record in it).
fn restore(
    o: &Observed<'_>,
    old: &RunStatus,
    children: &Children<'_>,
    definition: &Arc<Definition>,
) -> RunState {
    let name = o.run.name_any();
    let dag = &definition.dag;
    let recorded: HashMap<&str, &TaskStatus> =
        old.tasks.iter().map(|t| (t.name.as_str(), t)).collect();
    // Once written, the layout stays; before, it follows the run's size.
    let sharded =
        old.records.is_some() || (old.tasks.is_empty() && dag.len() > o.config.inline_tasks);
    RunState::restore(
        Arc::clone(definition),
        old,
        o.run.resource_version().unwrap_or_default(),
        sharded,
        o.now,
        |of: AttemptOf| {
            let task = &dag.task(of.task).name;
            let live = children
                .owned
                .get(attempt_job_name(&name, task, of.instance, of.attempt).as_str())
                .and_then(|job| children.started(job));
            live.or_else(|| {
                let slot = of
                    .instance
                    .map_or_else(|| task.clone(), |index| instance_name(task, index));
                recorded
                    .get(slot.as_str())
                    .filter(|t| t.attempts == of.attempt)
                    .and_then(|t| t.pod_started_at)
            })
        },
    )
}

/// The run's Jobs and Pods, looked up by name: a decision costs in proportion to what it looks
/// at, not to how many Jobs the run has made.
struct Children<'a> {
    uid: &'a str,
    jobs: &'a Group<Job>,
    pods: &'a Group<Pod>,
    /// Jobs the run owns, by name.
    owned: Owned<'a>,
    /// Jobs of the run's name that another object owns (an earlier Run of the same name whose
    /// Jobs are not collected yet): never adopted, never touched.
    foreign: Foreign<'a>,
}

/// The owned Jobs of a run, by name.
struct Owned<'a> {
    uid: &'a str,
    jobs: &'a Group<Job>,
}

impl<'a> Owned<'a> {
    fn get(&self, name: &str) -> Option<&'a Job> {
        self.jobs
            .get(name)?
            .iter()
            .map(Arc::as_ref)
            .find(|job| controller_uid(*job) == Some(self.uid))
    }

    fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Names of Jobs another object owns.
struct Foreign<'a> {
    uid: &'a str,
    jobs: &'a Group<Job>,
}

impl Foreign<'_> {
    fn contains(&self, name: &str) -> bool {
        self.jobs.get(name).is_some_and(|jobs| {
            jobs.iter()
                .any(|job| controller_uid(job.as_ref()) != Some(self.uid))
        })
    }
}

/// Every Job of the run with UID `uid` that may still run something: what a run that will
/// record nothing more (finished, or unreadable) stops.
pub fn active_jobs(uid: &str, jobs: &Group<Job>, pods: &Group<Pod>) -> Vec<String> {
    Children::of(uid, jobs, pods).active_jobs(|_| true)
}

/// How long after a run finished its later reconciles leave Jobs that still look active: a
/// Job whose Pod ended just before the run did may not show it in the cache yet, and deleting
/// it would lose a succeeded attempt's logs. (The reconcile that finishes a run stops at once
/// what its records say still runs.)
pub const FINISHED_GRACE: SignedDuration = SignedDuration::from_secs(5);

/// What is left to do about a run that finished at `finished_at`: stop whatever of it still
/// runs, once [`FINISHED_GRACE`] has passed. Needs neither its definition nor its records, so a
/// reconcile of a finished run reads nothing.
pub fn decide_finished(
    uid: &str,
    jobs: &Group<Job>,
    pods: &Group<Pod>,
    finished_at: Option<Timestamp>,
    now: Timestamp,
) -> Plan {
    finished(&Children::of(uid, jobs, pods), finished_at, now)
}

fn finished(children: &Children<'_>, finished_at: Option<Timestamp>, now: Timestamp) -> Plan {
    let active = children.active_jobs(|_| true);
    let settled = finished_at.map_or(now, |at| later(at, FINISHED_GRACE));
    if settled > now && !active.is_empty() {
        return Plan {
            finished: true,
            requeue: Some(until(settled, now)),
            ..Plan::default()
        };
    }
    Plan {
        delete: active,
        finished: true,
        ..Plan::default()
    }
}

impl<'a> Children<'a> {
    fn new(o: &Observed<'a>) -> Self {
        let uid = o.run.metadata.uid.as_deref().unwrap_or_default();
        Self::of(uid, o.jobs, o.pods)
    }

    fn of(uid: &'a str, jobs: &'a Group<Job>, pods: &'a Group<Pod>) -> Self {
        Self {
            uid,
            jobs,
            pods,
            owned: Owned { uid, jobs },
            foreign: Foreign { uid, jobs },
        }
    }

    /// The Pods of `job` (those it owns: a Pod of an earlier Job of the same name is not).
    fn pods_of(&self, job: &Job) -> Vec<&'a Pod> {
        let (Some(name), Some(job_uid)) =
            (job.metadata.name.as_deref(), job.metadata.uid.as_deref())
        else {
            return Vec::new();
        };
        self.pods
            .get(name)
            .map(|pods| {
                pods.iter()
                    .map(Arc::as_ref)
                    .filter(|pod| controller_uid(*pod) == Some(job_uid))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// When the Pod of `job` started on a node.
    fn started(&self, job: &Job) -> Option<Timestamp> {
        self.pods_of(job)
            .iter()
            .filter_map(|p| p.status.as_ref()?.start_time.as_ref())
            .map(|t| t.0)
            .min()
    }

    /// Whether `job` may still run something: not finished, not being deleted, its Pod not
    /// finished.
    fn is_active(&self, job: &Job) -> bool {
        job.metadata.deletion_timestamp.is_none()
            && !job_finished(job)
            && !self.pods_of(job).iter().any(|p| pod_finished(p))
    }

    /// Names of the active owned Jobs for which `stop` holds, sorted. Looks at every Job of the
    /// run: for a run that ends, or one just rebuilt.
    fn active_jobs(&self, stop: impl Fn(&Job) -> bool) -> Vec<String> {
        let mut names: Vec<String> = self
            .jobs
            .values()
            .flatten()
            .filter(|job| controller_uid(job.as_ref()) == Some(self.uid))
            .filter(|job| self.is_active(job) && stop(job))
            .filter_map(|job| job.metadata.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Names of the active owned Jobs among `names` for which `stop` holds, sorted.
    fn active_among(&self, names: &HashSet<String>, stop: impl Fn(&Job) -> bool) -> Vec<String> {
        let mut found: Vec<String> = names
            .iter()
            .filter_map(|name| self.owned.get(name))
            .filter(|job| self.is_active(job) && stop(job))
            .filter_map(|job| job.metadata.name.clone())
            .collect();
        found.sort();
        found
    }
}

fn job_name_of(job: &Job) -> String {
    job.metadata.name.clone().unwrap_or_default()
}

fn controller_uid<K: Resource>(obj: &K) -> Option<&str> {
    obj.meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

fn label<'a, K: Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta().labels.as_ref()?.get(key).map(String::as_str)
}

/// A run that cannot go on: Failed for good (a bad definition) or Pending while something it
/// needs is missing.
fn held(
    o: &Observed<'_>,
    old: &RunStatus,
    children: &Children<'_>,
    phase: RunPhase,
    reason: &'static str,
    message: &str,
) -> Plan {
    let status = held_status(o.run, old, phase, reason, message, o.now);
    let changed = &status != old;
    let mut plan = Plan {
        status: changed.then_some(status),
        whole: true,
        ..Plan::default()
    };
    if phase.is_final() {
        plan.finished = true;
        plan.delete = children.active_jobs(|_| true);
        if changed {
            plan.events.push(Note {
                type_: if phase == RunPhase::Cancelled {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                reason,
                note: text::cap_message(message.to_string()),
                job: None,
            });
        }
    } else {
        // Woken when the Workflow appears; this is only a safety net. The run a rerun waits
        // for is looked at again shortly.
        plan.requeue = Some(if reason == "RerunSourceRunning" {
            RERUN_SOURCE_RECHECK
        } else {
            RESYNC
        });
    }
    plan
}

/// The status of a run that cannot go on.
fn held_status(
    run: &Run,
    old: &RunStatus,
    phase: RunPhase,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> RunStatus {
    let condition = if phase.is_final() {
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
        message: Some(text::cap_message(message.to_string())),
        last_transition_time: if unchanged {
            previous.and_then(|c| c.last_transition_time)
        } else {
            Some(now)
        },
        observed_generation: None,
    }
}

/// What one recorded running attempt's Job says.
enum Seen {
    /// It ended: how, and when.
    Ended(Outcome, Timestamp),
    /// It goes on; the reason it has not started yet, if any.
    Going(Option<String>),
    /// Its Job was recorded but never made (the controller stopped in between): make it.
    Unmade,
    /// Someone else's Job holds its name: wait.
    NameTaken,
}

/// A run with a definition: its engine fed what the Jobs and Pods say, in the order it
/// happened, then the records and summary that changed.
fn run(o: &Observed<'_>, state: &mut RunState, children: &Children<'_>) -> Plan {
    let name = o.run.name_any();
    let definition = Arc::clone(&state.definition);
    let dag = &definition.dag;
    // The Job of an attempt of a slot: a task's, or a fan-out instance's.
    let job_of = |engine: &Engine, slot: TaskId, attempt: u32| {
        let of = engine.attempt_of(slot, attempt);
        attempt_job_name(&name, &dag.task(of.task).name, of.instance, attempt)
    };
    // Said once, as the run starts: workspaces whose claim tasks may need on two nodes at once.
    let starting = state.engine.phase() == RunPhase::Pending;
    // What the Run's spec asks for now, read on every reconcile (level-triggered): a Run
    // created suspended starts nothing.
    state.engine.suspend(o.run.spec.suspend, o.now);
    if state.engine.phase() == RunPhase::Pending {
        // A Run created cancelled starts nothing, not even its finally tasks.
        if o.run.spec.cancel {
            state.engine.cancel(o.now);
        }
        if let Some(reuse) = &definition.reuse {
            state.engine.reuse(&reuse.tasks, &reuse.from);
        }
        state.engine.start(o.now);
    }
    // Slots the engine made (fan-out instances) and records stored out of place are written
    // whatever they hold.
    let mut forced: HashSet<TaskId> = state.grow().map(|i| TaskId(i as u32)).collect();
    forced.extend(state.misplaced.drain(..));

    let mut requeue: Option<Duration> = None;
    let mut soon = |d: Duration| requeue = Some(requeue.map_or(d, |r| r.min(d)));
    let mut ends: Vec<(Timestamp, TaskId, u32, Outcome)> = Vec::new();
    let mut waiting: HashMap<TaskId, String> = HashMap::new();
    let mut unmade: Vec<TaskId> = Vec::new();
    let mut recorded_refusals = Vec::new();
    // Running attempts as recorded: what their Jobs say is all that can have changed. Between
    // full scans, only those whose Job or Pods changed, whose Job is not there (yet), or whose
    // state depends on the time: the work of a reconcile follows what happened, not the run's
    // size.
    let full = state.fresh
        || o.touched.is_none()
        || state.scanned_at.is_none_or(|at| {
            o.now.duration_since(at).as_secs() >= FULL_SCAN_EVERY.as_secs() as i64
        });
    if full {
        state.scanned_at = Some(o.now);
    }
    let no_touch = HashSet::new();
    let touched = o.touched.unwrap_or(&no_touch);
    let running: Vec<(TaskId, u32)> = state
        .engine
        .running_attempts()
        .filter(|&(id, attempt)| {
            let recorded = &state.records[id.index()];
            recorded.phase == TaskPhase::Running && recorded.attempts == attempt
        })
        .filter(|&(id, attempt)| {
            if full || state.recheck.contains(&id) {
                return true;
            }
            let job = job_of(&state.engine, id, attempt);
            touched.contains(&job) || !children.owned.contains_key(job.as_str())
        })
        .collect();
    let mut recheck = HashSet::new();
    // Each attempt's timeout counts from its Pod's start, as the kubelet counts the Pod's own
    // deadline: from the Pod while it is there, else as recorded (the Pod may be gone, deleted
    // for its timeout, say); no timeout runs before the Pod starts.
    for &(id, attempt) in &running {
        let live = children
            .owned
            .get(job_of(&state.engine, id, attempt).as_str())
            .and_then(|job| children.started(job));
        let since = live.or(state.records[id.index()].pod_started_at);
        state.engine.attempt_started(id, attempt, since);
    }
    for &(id, attempt) in &running {
        let job = job_of(&state.engine, id, attempt);
        let recorded_job = state.records[id.index()].job.as_deref() == Some(job.as_str());
        match seen(o, children, attempt, recorded_job, &job) {
            Seen::Ended(outcome, at) => {
                if matches!(outcome, Outcome::Refused { .. }) {
                    recorded_refusals.push(job);
                }
                ends.push((at, id, attempt, outcome));
            }
            Seen::Going(why) => {
                if let Some(why) = why {
                    waiting.insert(id, why);
                    recheck.insert(id);
                }
                if let Some(found) = children.owned.get(job.as_str()) {
                    if children.pods_of(found).is_empty() {
                        soon(NO_POD_RECHECK);
                        recheck.insert(id);
                    }
                    if job_finished(found) {
                        // Ended, its Pod not in the cache yet.
                        soon(SOON);
                        recheck.insert(id);
                    }
                }
            }
            Seen::Unmade => unmade.push(id),
            Seen::NameTaken => {
                soon(SOON);
                recheck.insert(id);
            }
        }
    }
    state.recheck = recheck;
    // In the order things happened, each at its own time; then the present.
    ends.sort_by_key(|(at, id, attempt, _)| (*at, *id, *attempt));
    for (at, id, attempt, outcome) in ends {
        state.engine.finish_attempt(id, attempt, outcome, at);
    }
    if o.run.spec.cancel {
        state.engine.cancel(o.now);
    }
    state.engine.tick(o.now);

    let owner = o.run.controller_owner_ref(&());
    let identity = RunIdentity {
        workflow: definition
            .pinned
            .name
            .clone()
            .unwrap_or_else(|| name.clone()),
        run: name.clone(),
        scheduled_time: super::schedule_reconciler::scheduled_time(&o.run.metadata)
            .map(|tick| tick.to_string()),
    };
    let namespace = o.run.namespace().unwrap_or_default();
    let mut create = Vec::new();
    let mut launches: Vec<_> = state
        .engine
        .take_actions()
        .into_iter()
        .filter_map(|action| match action {
            Action::Start(launch) => Some(launch),
            // Stopping follows from the records and the engine's state, below.
            Action::Kill { .. } => None,
        })
        .collect();
    launches.extend(
        unmade
            .into_iter()
            .filter_map(|id| state.engine.relaunch(id)),
    );
    for launch in &launches {
        // Not running until its Pod starts.
        state
            .engine
            .attempt_started(launch.task, launch.attempt, None);
    }
    let mut unstartable = Vec::new();
    let mut claims: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    if let Some(owner) = &owner {
        for launch in &launches {
            // The rest are recorded and made by the next reconcile, at once: a run that starts
            // thousands of tasks together does not build thousands of Jobs in one go.
            if create.len() >= MAX_CREATES {
                soon(Duration::ZERO);
                break;
            }
            let job = job_of(&state.engine, launch.task, launch.attempt);
            if children.foreign.contains(job.as_str()) {
                soon(SOON);
                continue;
            }
            let task = dag.task(launch.definition());
            let mounts = super::workspaces::task_mounts(&name, task, &o.run.spec.workspaces);
            match build_job(
                owner,
                &namespace,
                &identity,
                task,
                launch,
                o.config.job_ttl_seconds,
                &mounts,
            ) {
                Ok(job) => {
                    // The workspace claims its Pod needs, made first.
                    for claim in mounts.claims {
                        if !o.memory.claims.contains(&claim) {
                            claims.entry(claim).or_default().push(job_name_of(&job));
                        }
                    }
                    create.push(job);
                }
                Err(why) => unstartable.push((launch.task, launch.attempt, why)),
            }
        }
    }
    // An attempt no Job can be made for ends at once, as a process that cannot be spawned does.
    for (id, attempt, message) in unstartable {
        let outcome = Outcome::Failed {
            reason: "StartError".into(),
            message,
        };
        state.engine.finish_attempt(id, attempt, outcome, o.now);
        state.engine.tick(o.now);
        soon(Duration::ZERO);
    }
    let claims: Vec<(
        k8s_openapi::api::core::v1::PersistentVolumeClaim,
        Vec<String>,
    )> = owner
        .as_ref()
        .map(|owner| {
            claims
                .into_iter()
                .filter_map(|(claim, jobs)| {
                    let binding = o
                        .run
                        .spec
                        .workspaces
                        .iter()
                        .find(|b| super::workspaces::claim_name(&name, &b.name) == claim)?;
                    Some((
                        super::workspaces::claim(owner, &namespace, &name, binding)?,
                        jobs,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let creating: HashSet<String> = create
        .iter()
        .filter_map(|j| j.metadata.name.clone())
        .collect();

    // ---- the records that changed: the engine's changes and what the running attempts say ----
    let stopping: HashMap<TaskId, Timestamp> = state
        .engine
        .stopping()
        .map(|(id, _, at)| (id, at))
        .collect();
    // The engine's changes, and the running attempts whose record may change with what their
    // Job says: a reason to wait, or one that is over (a running record with a message).
    // The others would differ only in their links, which wait for the record's next change.
    forced.extend(state.grow().map(|i| TaskId(i as u32)));
    let migrate = !state.sharded && state.records.len() > o.config.inline_tasks;
    if migrate {
        state.sharded = true;
        if state.written {
            // Past the inline limit: every record moves to record shards.
            forced.extend((0..state.records.len()).map(|i| TaskId(i as u32)));
        }
    }
    let migrate = migrate && state.written;
    let mut candidates: Vec<TaskId> = state.engine.take_changes();
    candidates.extend(forced.iter().copied());
    candidates.extend(
        running
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| waiting.contains_key(id) || state.records[id.index()].message.is_some()),
    );
    candidates.sort_unstable();
    candidates.dedup();
    let mut records: Vec<(usize, TaskStatus)> = Vec::new();
    for id in candidates {
        let before = &state.records[id.index()];
        let mut record = state.engine.task_status(id);
        if record.attempts > 0 {
            let job = job_of(&state.engine, id, record.attempts);
            // Recorded once it exists: a record naming a Job that was never made would take
            // it for lost after a restart.
            let exists =
                children.owned.contains_key(job.as_str()) || o.memory.unseen.contains(&job);
            let same_attempt = before.attempts == record.attempts;
            let live = children
                .owned
                .get(job.as_str())
                .and_then(|j| children.started(j));
            record.job = if exists {
                Some(job)
            } else {
                before.job.clone().filter(|_| same_attempt)
            };
            record.pod_started_at = live.or(before.pod_started_at.filter(|_| same_attempt));
            if record.phase == TaskPhase::Running
                && !stopping.contains_key(&id)
                && let Some(why) = waiting.remove(&id)
            {
                record.message = Some(why);
            }
        }
        let record = RunState::stored_record(record);
        // Which Job runs an attempt and when its Pod started are written along with the next
        // change of the record, not on their own: no write per attempt just to say so.
        if forced.contains(&id) || differs_beyond_links(&record, before) {
            records.push((id.index(), record));
        }
    }

    // ---- the summary ----
    let mut head = state.engine.run_status_head();
    for condition in &mut head.conditions {
        condition.message = condition.message.take().map(text::cap_message);
    }
    head.observed_generation = o.run.metadata.generation;
    // The pinned definition is written once, with the first status, and never again.
    head.workflow = None;
    let mut definition_parts = Vec::new();
    if !state.written {
        // The first write pins the definition: in the Run, or in parts for a large run.
        let mut pinned = definition.pinned.clone();
        if state.sharded {
            let spec = pinned.spec.clone().unwrap_or_default();
            match super::layout::split_definition(&name, &spec) {
                Ok((without_tasks, parts)) => {
                    pinned.spec = Some(without_tasks);
                    head.records = Some(super::layout::layout(
                        state.records.len(),
                        parts.iter().map(|(n, _)| n.clone()).collect(),
                    ));
                    definition_parts = parts;
                }
                Err(message) => {
                    let old = o.run.status.clone().unwrap_or_default();
                    return held(
                        o,
                        &old,
                        children,
                        RunPhase::Failed,
                        "StatusTooLarge",
                        &message,
                    );
                }
            }
        }
        head.workflow = Some(pinned);
    } else if migrate {
        // The pinned definition stays whole in the Run, where it already is.
        head.records = Some(super::layout::layout(state.records.len(), Vec::new()));
    } else {
        // As many record shards as the records (and the fan-out instances among them) fill.
        head.records = state.head.records.clone().map(|mut layout| {
            layout.shards = layout
                .shards
                .max(super::layout::shard_count(state.records.len()));
            layout
        });
    }
    if state.sharded {
        head.running_tasks = state
            .engine
            .running_attempts()
            .take(MAX_NAMED)
            .map(|(id, _)| state.engine.slot_name(id))
            .collect();
        head.failed_tasks = state
            .engine
            .failed_tasks()
            .iter()
            .take(MAX_NAMED)
            .map(|id| state.engine.slot_name(*id))
            .collect();
    } else if let Some(size) = {
        let size = state.inline_size_with(&head, &records);
        (size > o.config.max_status_bytes).then_some(size)
    } {
        let message = format!(
            "the run's status would be {size} bytes, over the {} a Run may hold (tasks, \
             outputs and the pinned definition together); split the workflow or write smaller \
             outputs",
            o.config.max_status_bytes
        );
        let old = o.run.status.clone().unwrap_or_default();
        return held(
            o,
            &old,
            children,
            RunPhase::Failed,
            "StatusTooLarge",
            &message,
        );
    }

    // ---- what to stop: judged from the records about to be written ----
    let finished = state.engine.is_finished();
    let grace = o.config.stop_grace;
    // The slot whose attempt a Job runs, from its labels.
    let slot_of = |job: &Job| -> Option<TaskId> {
        let task = dag.id(label(job, LABEL_TASK)?)?;
        match label(job, LABEL_INSTANCE) {
            None => Some(task),
            Some(index) => state.engine.instance_slot(task, index.parse().ok()?),
        }
    };
    let current = |id: TaskId| -> &TaskStatus {
        let changed = records
            .iter()
            .find(|(i, _)| *i == id.index())
            .map(|(_, r)| r);
        changed.unwrap_or(&state.records[id.index()])
    };
    // Every Job of the run when just rebuilt (what a crash may have left behind), else the Jobs
    // whose attempts just ended or are being stopped.
    let left_running: HashSet<String> = records
        .iter()
        .filter_map(|(i, _)| {
            let before = &state.records[*i];
            (before.phase == TaskPhase::Running)
                .then(|| job_of(&state.engine, TaskId(*i as u32), before.attempts))
        })
        .chain(
            stopping
                .keys()
                .map(|id| job_of(&state.engine, *id, state.records[id.index()].attempts)),
        )
        .collect();
    let stop = |job: &Job| {
        let (Some(_), Some(attempt)) = (
            label(job, LABEL_TASK),
            label(job, LABEL_ATTEMPT).and_then(|a| a.parse::<u32>().ok()),
        ) else {
            return false;
        };
        let slot = slot_of(job);
        let current = slot.map(current);
        // An attempt recorded as succeeded keeps its Job (and its logs), whatever the Job's
        // own status says yet: the Job controller marks it complete a moment after its Pod.
        if current.is_some_and(|c| c.attempts == attempt && c.phase == TaskPhase::Succeeded) {
            return false;
        }
        if finished {
            return true;
        }
        let Some(current) = current else {
            return true; // a task this run does not have
        };
        if current.phase != TaskPhase::Running || current.attempts != attempt {
            return true;
        }
        match slot.and_then(|id| stopping.get(&id)) {
            // Past its deadline: the kubelet stops it (keeping its Pod and logs); ork deletes
            // the Job only if that has not happened after a grace period.
            Some(deadline) => later(*deadline, grace) <= o.now,
            None => false,
        }
    };
    let delete = if state.fresh || finished {
        children.active_jobs(stop)
    } else {
        children.active_among(&left_running, stop)
    };
    for deadline in stopping.values() {
        let stop_at = later(*deadline, grace);
        if stop_at > o.now {
            soon(until(stop_at, o.now));
        }
    }

    // ---- Events ----
    let mut events = notes(
        &state.head,
        &head,
        &state.records,
        &records,
        &|i: usize, task: &TaskStatus| {
            task.job.clone().or_else(|| {
                let job = job_of(&state.engine, TaskId(i as u32), task.attempts);
                creating.contains(&job).then_some(job)
            })
        },
    );
    if starting {
        let warnings = crate::compile::shared_read_write_once(dag, &o.run.spec.workspaces);
        events.extend(warnings.into_iter().map(|warning| Note {
            type_: EventType::Warning,
            reason: "ReadWriteOnceShared",
            note: text::cap_message(warning),
            job: None,
        }));
    }

    if !finished {
        let next = state
            .engine
            .next_wakeup()
            .map_or(RESYNC, |at| until(at, o.now))
            .min(RESYNC);
        soon(next.max(Duration::from_millis(10)));
    }
    let whole = !state.written;
    let mut head_changed = whole || head != state.head;
    // A large run's records are written to its RunShards as they change; its summary, when
    // only its counts moved, at most every HEAD_EVERY: one write per reconcile instead of two.
    if head_changed
        && !whole
        && state.sharded
        && !finished
        && only_counts_differ(&head, &state.head)
        && let Some(due) = state.head_written_at.map(|at| later(at, HEAD_EVERY))
        && due > o.now
    {
        head_changed = false;
        soon(until(due, o.now));
    }
    if head_changed {
        state.head_written_at = Some(o.now);
    }
    Plan {
        definition_parts,
        claims,
        migrate,
        records,
        status: head_changed.then_some(head),
        whole,
        create,
        delete,
        events,
        requeue: if finished { None } else { requeue },
        finished,
        recorded_refusals,
    }
}

/// What the Job of a running attempt says. `recorded` tells whether its record names the Job
/// (it was seen once).
fn seen(
    o: &Observed<'_>,
    children: &Children<'_>,
    attempt: u32,
    recorded: bool,
    job: &str,
) -> Seen {
    if let Some(found) = children.owned.get(job) {
        let pods = children.pods_of(found);
        // Its Pod was deleted before it showed a result, the Job still there: someone deleted
        // it, or its node went away. A failure outside the task, whatever the Job does next
        // (make another Pod, or fail).
        if let Some(gone) = pods.iter().find(|p| is_tombstone(p)) {
            let outcome = Outcome::Failed {
                reason: "PodDeleted".into(),
                message: format!(
                    "Pod {} was deleted while attempt {attempt} was running",
                    gone.metadata.name.as_deref().unwrap_or("?")
                ),
            };
            return Seen::Ended(outcome, o.now);
        }
        let cx = ObserveContext {
            now: o.now,
            image_pull_timeout: o.config.image_pull_timeout,
            failed_create: o.memory.failed_create.get(job).map(String::as_str),
        };
        let observation = observe_attempt(found, &pods, cx);
        if let Some((outcome, at)) = observation.end {
            return Seen::Ended(outcome, at.map_or(o.now, |at| at.min(o.now)));
        }
        // The Job ended and its Pod is gone (or never showed): the Job's verdict, once the Pod
        // has had time to show up in the cache.
        if pods.is_empty()
            && let Some((outcome, at)) = job_verdict(found)
            && at.is_none_or(|at| o.now.duration_since(at) >= POD_RESULT_WAIT)
        {
            return Seen::Ended(outcome, o.now);
        }
        return Seen::Going(observation.waiting);
    }
    if o.memory.unseen.contains(job) {
        return Seen::Going(None);
    }
    if let Some(message) = o.memory.rejected.get(job) {
        let outcome = Outcome::Refused {
            reason: "JobRejected".into(),
            message: format!(
                "the API server refused the Job of attempt {attempt}: {}",
                text::cap(message.clone(), 4096)
            ),
        };
        return Seen::Ended(outcome, o.now);
    }
    if children.foreign.contains(job) {
        return Seen::NameTaken;
    }
    // Made once (this controller made it, or the record says so) and gone now.
    if recorded || o.memory.created.contains(job) {
        let outcome = Outcome::Failed {
            reason: "JobLost".into(),
            message: format!("Job {job} disappeared while attempt {attempt} was running"),
        };
        return Seen::Ended(outcome, o.now);
    }
    Seen::Unmade
}

/// Whether two records of a task differ in more than the Job they name and its Pod's start.
/// Field by field, without copying: it runs for every running attempt a reconcile looks at.
fn differs_beyond_links(a: &TaskStatus, b: &TaskStatus) -> bool {
    let TaskStatus {
        name,
        phase,
        attempts,
        started_at,
        finished_at,
        exit_code,
        reason,
        message,
        outputs,
        next_attempt_at,
        job: _,
        pod_started_at: _,
        finally,
        infra_retries,
        history,
        reused_from,
        instances,
    } = a;
    *name != b.name
        || *phase != b.phase
        || *attempts != b.attempts
        || *started_at != b.started_at
        || *finished_at != b.finished_at
        || *exit_code != b.exit_code
        || *reason != b.reason
        || *message != b.message
        || *outputs != b.outputs
        || *next_attempt_at != b.next_attempt_at
        || *instances != b.instances
        || *finally != b.finally
        || *infra_retries != b.infra_retries
        || *history != b.history
        || *reused_from != b.reused_from
}

/// Events for what changed: the run starting and ending, and each task that failed for good
/// (a bounded number of them, each naming its task and Job).
fn notes(
    old: &RunStatus,
    new: &RunStatus,
    before: &[TaskStatus],
    changed: &[(usize, TaskStatus)],
    job_of: &dyn Fn(usize, &TaskStatus) -> Option<String>,
) -> Vec<Note> {
    let mut notes = Vec::new();
    let was = old.phase.unwrap_or(RunPhase::Pending);
    let is = new.phase.unwrap_or(RunPhase::Pending);
    if was == RunPhase::Pending && is != RunPhase::Pending {
        let total = new.task_counts.map_or(0, |c| {
            c.pending + c.running + c.succeeded + c.failed + c.skipped + c.cancelled
        });
        notes.push(Note {
            type_: EventType::Normal,
            reason: "Started",
            note: format!("started; {total} tasks"),
            job: None,
        });
    }
    let failed: Vec<(usize, &TaskStatus)> = changed
        .iter()
        .filter(|(i, t)| t.phase == TaskPhase::Failed && before[*i].phase != TaskPhase::Failed)
        .map(|(i, t)| (*i, t))
        .collect();
    for &(i, task) in failed.iter().take(MAX_TASK_EVENTS) {
        notes.push(Note {
            type_: EventType::Warning,
            reason: "TaskFailed",
            note: text::cap_message(format!(
                "task {} failed ({}): {}",
                text::quoted(&task.name),
                task.reason.as_deref().unwrap_or("Failed"),
                task.message.as_deref().unwrap_or("no detail")
            )),
            job: job_of(i, task),
        });
    }
    if failed.len() > MAX_TASK_EVENTS {
        notes.push(Note {
            type_: EventType::Warning,
            reason: "TaskFailed",
            note: format!(
                "{} more tasks failed: {}",
                failed.len() - MAX_TASK_EVENTS,
                text::names(
                    failed[MAX_TASK_EVENTS..]
                        .iter()
                        .map(|(_, t)| t.name.as_str())
                )
            ),
            job: None,
        });
    }
    let suspended = |status: &RunStatus| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == "Suspended")
            .map(|c| c.status)
    };
    match (suspended(old), suspended(new)) {
        (was, Some(ConditionStatus::True)) if was != Some(ConditionStatus::True) => {
            notes.push(Note {
                type_: EventType::Normal,
                reason: "Suspended",
                note: "suspended: no new attempt starts until spec.suspend is false".into(),
                job: None,
            });
        }
        (Some(ConditionStatus::True), Some(ConditionStatus::False)) => notes.push(Note {
            type_: EventType::Normal,
            reason: "Resumed",
            note: "resumed".into(),
            job: None,
        }),
        _ => {}
    }
    if is.is_final() && !was.is_final() {
        let (type_, reason) = match is {
            RunPhase::Succeeded => (EventType::Normal, "Succeeded"),
            RunPhase::Cancelled => (EventType::Normal, "Cancelled"),
            _ => (EventType::Warning, "Failed"),
        };
        let message = new
            .conditions
            .iter()
            .find(|c| c.type_ == "Succeeded")
            .and_then(|c| c.message.clone())
            .unwrap_or_default();
        notes.push(Note {
            type_,
            reason,
            note: text::cap_message(message),
            job: None,
        });
    }
    notes
}

fn later(at: Timestamp, by: SignedDuration) -> Timestamp {
    at.saturating_add(by).unwrap_or(Timestamp::MAX)
}

/// Whether two summaries of a run differ only in what moves with every task (its counts,
/// progress, running tasks and the condition's message), not in anything a reader acts on:
/// phase, condition status or reason, times, failed tasks, layout.
fn only_counts_differ(a: &RunStatus, b: &RunStatus) -> bool {
    let essentials = |s: &RunStatus| RunStatus {
        task_counts: None,
        progress: None,
        running_tasks: Vec::new(),
        conditions: s
            .conditions
            .iter()
            .map(|c| Condition {
                message: None,
                ..c.clone()
            })
            .collect(),
        ..s.clone()
    };
    essentials(a) == essentials(b)
}

/// Time from `now` until `at`, zero if it has passed.
fn until(at: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or_default()
}

#[cfg(test)]
mod tests;
