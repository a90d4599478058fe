//! The engine's state machine.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value};

use super::outcome::{Outcome, parse_output};
use crate::api::MAX_FAN_OUT;
use crate::api::{AttemptRecord, RunPhase, TaskPhase, TaskStatus};
use crate::compile::{
    BoundParams, CompiledTask, Dag, InputSource, ItemSource, TaskId, Trigger, WhenSubject,
};

/// Failures outside the task, retried without using the retry limit.
pub const INFRA_REASONS: [&str; 5] = ["Evicted", "Preempted", "PodDeleted", "JobLost", "NodeLost"];
/// Most retries per task after failures outside it.
pub const MAX_INFRA_RETRIES: u32 = 5;
/// Most attempts kept in a task's history (the latest).
pub const MAX_HISTORY: usize = 10;
/// Longest `ORK_FAILED_TASKS` value, in bytes; past it the list ends with `…(N more)`.
pub const MAX_FAILED_TASKS_BYTES: usize = 4096;
/// Longest array of a fan-out task's outputs given to a reader, in bytes of JSON: the most an
/// environment variable can hold.
pub const MAX_GATHERED_BYTES: usize = crate::task_env::MAX_EXPANDED_BYTES;
/// Most fan-out instances in one run, all fan-out tasks together: past it a fan-out fails with
/// `FanOutTooLarge`, so no run can make the engine hold an unbounded number of tasks.
pub const MAX_RUN_INSTANCES: usize = 50_000;

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Start attempt `attempt` of a task.
    Start(Launch),
    /// Stop a running attempt. After a run deadline or a cancellation the engine has already
    /// recorded the attempt's end; after a timeout the attempt stays Running, holding its
    /// parallelism slot, until the driver reports it gone (see [`Engine::finish_attempt`]).
    Kill {
        task: TaskId,
        attempt: u32,
        reason: KillReason,
        /// When the engine decided to stop it: the attempt's deadline for a timeout.
        at: Timestamp,
    },
}

/// Everything a driver needs to start one attempt, beyond the compiled task itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub task: TaskId,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Resolved inputs, in declaration order.
    pub inputs: Vec<(String, Value)>,
    /// For a finally task: what the regular tasks came to.
    pub finally: Option<FinallyEnv>,
    /// For an instance of a fan-out task: which one it is.
    pub instance: Option<Instance>,
}

/// Which attempt of which slot: what a driver needs to find the attempt's own record and
/// executor (its Job, say) without the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptOf {
    pub slot: TaskId,
    /// The workflow task the slot runs.
    pub task: TaskId,
    /// For an instance of a fan-out task: its index.
    pub instance: Option<u32>,
    pub attempt: u32,
}

/// One instance of a fan-out task.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// The fan-out task.
    pub task: TaskId,
    /// 0-based (`ORK_ITEM_INDEX`).
    pub index: u32,
    /// `ORK_ITEM`.
    pub item: Value,
}

impl Launch {
    /// The workflow task this attempt runs.
    pub fn definition(&self) -> TaskId {
        self.instance.as_ref().map_or(self.task, |i| i.task)
    }

    /// The name of what runs, as the status has it: the task's, or `TASK[INDEX]`.
    pub fn name(&self, dag: &Dag) -> String {
        let task = &dag.task(self.definition()).name;
        match &self.instance {
            Some(instance) => instance_name(task, instance.index),
            None => task.clone(),
        }
    }
}

/// What a finally task is told about the regular tasks (`ORK_RUN_PHASE`, `ORK_FAILED_TASKS`).
#[derive(Clone, Debug, PartialEq)]
pub struct FinallyEnv {
    /// Succeeded, Failed (also after the run deadline) or Cancelled.
    pub run_phase: RunPhase,
    /// Comma-separated names of the regular tasks whose phase is Failed.
    pub failed_tasks: Arc<str>,
}

/// How the regular tasks were ended before they all finished by themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ending {
    Cancelled,
    DeadlineExceeded,
}

/// Why a running attempt is being stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillReason {
    /// The attempt ran past its `timeoutSeconds`.
    Timeout,
    /// The run ran past its `activeDeadlineSeconds`.
    DeadlineExceeded,
    /// The run was cancelled.
    Cancelled,
}

/// Where a task is in its life; finer than the status phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// Waiting for dependencies.
    Blocked,
    /// All dependencies succeeded; waiting in the ready queue for a slot.
    Queued,
    /// Waiting out the back-off before the next attempt.
    Backoff,
    Running,
    /// A fan-out task whose instances are running or waiting: it ends when they all have.
    FannedOut,
    /// Final: see the phase.
    Done,
}

/// A fan-out task once its list is known: its instances are the slots `first..first + count`.
#[derive(Clone, Debug)]
pub(super) struct FanOut {
    pub(super) items: Arc<[Value]>,
    pub(super) first: u32,
    /// Instances not final yet.
    pub(super) left: u32,
    /// Instances with a running attempt.
    pub(super) running: u32,
    /// Instances ready to start but held back by `forEach.parallelism`, lowest first.
    pub(super) held: BTreeSet<TaskId>,
    /// Instances that failed for good, and the first of them.
    pub(super) failed: u32,
    pub(super) first_failed: Option<TaskId>,
    /// The first instance cancelled.
    pub(super) first_cancelled: Option<TaskId>,
    /// The task's inputs, resolved once for all its instances (they cannot change once the
    /// task is decided).
    pub(super) inputs: Option<Vec<(String, Value)>>,
}

impl FanOut {
    pub(super) fn slots(&self) -> impl Iterator<Item = TaskId> + use<> {
        (self.first..self.first + self.items.len() as u32).map(TaskId)
    }
}

/// Everything recorded about one task.
#[derive(Clone, Debug)]
pub(super) struct TaskState {
    pub(super) stage: Stage,
    pub(super) phase: TaskPhase,
    pub(super) attempts: u32,
    pub(super) started_at: Option<Timestamp>,
    pub(super) finished_at: Option<Timestamp>,
    pub(super) exit_code: Option<i32>,
    pub(super) reason: Option<String>,
    pub(super) message: Option<String>,
    pub(super) outputs: Option<Map<String, Value>>,
    /// When the next attempt is due, while backing off.
    pub(super) retry_at: Option<Timestamp>,
    /// The running attempt's deadline, once it has passed: the attempt is being stopped and
    /// its end, when the driver reports it, is a timeout unless it succeeded in time.
    pub(super) stopping: Option<Timestamp>,
    /// The running attempt's deadline, while its timer runs.
    pub(super) timeout_at: Option<Timestamp>,
    /// Dependencies that are not final yet.
    pub(super) waiting_on: u32,
    /// Retries after failures outside the task (not counted against the retry limit).
    pub(super) infra_retries: u32,
    /// The latest attempts, oldest first, the running one last.
    pub(super) history: VecDeque<AttemptRecord>,
    /// For a task reused by a rerun: the run whose attempt produced its result.
    pub(super) reused_from: Option<String>,
    pub(super) dirty: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKind {
    RunDeadline,
    AttemptTimeout,
    RetryDue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at: Timestamp,
    kind: TimerKind,
    task: TaskId,
    attempt: u32,
}

/// Counts of tasks by outcome, kept up to date so run-level answers are O(1).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Tally {
    pub(super) running: u32,
    pub(super) succeeded: u32,
    pub(super) failed: u32,
    pub(super) skipped: u32,
    pub(super) cancelled: u32,
    /// Fan-out tasks whose instances are going on.
    pub(super) fanned: u32,
}

/// The state of one run, advanced by events.
#[derive(Debug)]
pub struct Engine {
    pub(super) dag: Arc<Dag>,
    pub(super) params: BoundParams,
    /// One entry per slot: the workflow's tasks (in its order, the finally tasks last), then
    /// fan-out instances in the order their tasks fanned out.
    pub(super) tasks: Vec<TaskState>,
    /// For each slot past the workflow's tasks: its fan-out task and index.
    pub(super) instance_of: Vec<(TaskId, u32)>,
    /// Fan-out tasks whose lists are known.
    pub(super) fans: HashMap<TaskId, FanOut>,
    /// For a rerun: the previous run's instance records of fan-out tasks whose upstream was
    /// reused, by task and index, with the run they came from.
    reusable: HashMap<TaskId, (HashMap<u32, TaskStatus>, String)>,
    /// Tasks ready to start: regular tasks and every retry (held back while suspended).
    ready: VecDeque<TaskId>,
    /// First attempts of finally tasks (never held back by a suspend).
    ready_finally: VecDeque<TaskId>,
    /// Regular tasks not final yet: the finally tasks start when it reaches 0.
    pub(super) regular_left: u32,
    /// Tasks Failed without `continueOnFailure`, regular ones first: they fail the run.
    pub(super) blocking_failures: u32,
    pub(super) regular_blocking_failures: u32,
    /// Set when the run was cancelled or its deadline ended the regular tasks.
    pub(super) ending: Option<Ending>,
    /// Whether the ending stopped regular tasks (it came before they all ended).
    pub(super) stopped_regular: bool,
    /// What finally tasks are told, fixed when they are released.
    finally_env: Option<FinallyEnv>,
    /// Tasks that became final and whose dependents have not been told yet.
    settled: Vec<TaskId>,
    timers: BinaryHeap<Reverse<Timer>>,
    pub(super) tally: Tally,
    /// Tasks with a running attempt (also while it is being stopped), for drivers that look at
    /// running attempts only: O(running), not O(tasks).
    pub(super) running: BTreeSet<TaskId>,
    /// Tasks whose running attempt passed its timeout and is being stopped.
    pub(super) stopping_tasks: BTreeSet<TaskId>,
    /// Tasks that failed for good, in the order they did.
    pub(super) failed: Vec<TaskId>,
    pub(super) phase: RunPhase,
    /// CamelCase reason of the final phase, e.g. `TaskFailed`.
    pub(super) reason: Option<&'static str>,
    pub(super) started_at: Option<Timestamp>,
    pub(super) finished_at: Option<Timestamp>,
    /// When the run's phase last changed, for the condition.
    pub(super) transitioned_at: Option<Timestamp>,
    /// The first task that failed for good, named in the run's message.
    pub(super) first_failure: Option<TaskId>,
    /// Whether the run is suspended (no attempt starts) and since when; `None` if it never was.
    pub(super) suspension: Option<(bool, Timestamp)>,
    actions: Vec<Action>,
    changed: Vec<TaskId>,
}

impl Engine {
    /// A run of `dag` that has not started.
    pub fn new(dag: Arc<Dag>, params: BoundParams) -> Self {
        let tasks = dag
            .tasks()
            .map(|(id, _)| TaskState::new(dag.parents(id).len() as u32))
            .collect();
        let regular_left = dag.regular() as u32;
        Self {
            dag,
            params,
            tasks,
            instance_of: Vec::new(),
            fans: HashMap::new(),
            reusable: HashMap::new(),
            ready: VecDeque::new(),
            ready_finally: VecDeque::new(),
            regular_left,
            blocking_failures: 0,
            regular_blocking_failures: 0,
            ending: None,
            stopped_regular: false,
            finally_env: None,
            settled: Vec::new(),
            timers: BinaryHeap::new(),
            tally: Tally::default(),
            running: BTreeSet::new(),
            stopping_tasks: BTreeSet::new(),
            failed: Vec::new(),
            phase: RunPhase::Pending,
            reason: None,
            started_at: None,
            finished_at: None,
            transitioned_at: None,
            first_failure: None,
            suspension: None,
            actions: Vec::new(),
            changed: Vec::new(),
        }
    }

    pub fn dag(&self) -> &Arc<Dag> {
        &self.dag
    }

    /// Number of slots: the workflow's tasks and the fan-out instances made so far.
    pub fn slots(&self) -> usize {
        self.tasks.len()
    }

    /// The workflow task a slot runs: the slot itself, or an instance's fan-out task.
    pub fn definition(&self, slot: TaskId) -> TaskId {
        definition_of(&self.dag, &self.instance_of, slot)
    }

    /// The compiled task a slot runs.
    pub fn task_def(&self, slot: TaskId) -> &CompiledTask {
        self.dag.task(self.definition(slot))
    }

    /// For an instance: its fan-out task and index.
    pub fn instance(&self, slot: TaskId) -> Option<(TaskId, u32)> {
        let i = slot.index().checked_sub(self.dag.len())?;
        self.instance_of.get(i).copied()
    }

    /// The slot of instance `index` of fan-out task `task`, once the task has fanned out.
    pub fn instance_slot(&self, task: TaskId, index: u32) -> Option<TaskId> {
        let fan = self.fans.get(&task)?;
        (index < fan.items.len() as u32).then_some(TaskId(fan.first + index))
    }

    /// Which attempt `attempt` of `slot` is, for a driver.
    pub fn attempt_of(&self, slot: TaskId, attempt: u32) -> AttemptOf {
        AttemptOf {
            slot,
            task: self.definition(slot),
            instance: self.instance(slot).map(|(_, index)| index),
            attempt,
        }
    }

    /// The name a slot has in the status: the task's, or `TASK[INDEX]` for an instance.
    pub fn slot_name(&self, slot: TaskId) -> String {
        match self.instance(slot) {
            None => self.dag.task(slot).name.clone(),
            Some((task, index)) => instance_name(&self.dag.task(task).name, index),
        }
    }

    /// Whether a slot is a finally task or an instance of one.
    pub fn is_finally_slot(&self, slot: TaskId) -> bool {
        self.dag.is_finally(self.definition(slot))
    }

    pub fn phase(&self) -> RunPhase {
        self.phase
    }

    /// Whether the run reached a final phase.
    pub fn is_finished(&self) -> bool {
        self.phase.is_final()
    }

    /// Number of attempts currently running.
    pub fn running(&self) -> u32 {
        self.tally.running
    }

    /// Starts the run: tasks without dependencies become ready.
    pub fn start(&mut self, now: Timestamp) {
        if self.phase != RunPhase::Pending {
            return;
        }
        self.phase = RunPhase::Running;
        self.started_at = Some(now);
        self.transitioned_at = Some(now);
        if let Some(deadline) = self.dag.active_deadline() {
            self.push_timer(later(now, deadline), TimerKind::RunDeadline, TaskId(0), 0);
        }
        // Tasks reused by a rerun are final already: their dependents are told first.
        self.propagate(now);
        for i in 0..self.dag.regular() {
            let state = &self.tasks[i];
            if state.stage == Stage::Blocked && state.waiting_on == 0 {
                self.resolve(TaskId(i as u32), now);
            }
        }
        self.propagate(now);
        self.schedule(now);
    }

    /// Before the run starts, reuses what a previous run of the same definition achieved (a
    /// rerun): a regular task that Succeeded there, and every task upstream of it too, is
    /// Succeeded without running. It keeps its outputs, attempt count and times, with reason
    /// `Reused` and `reusedFrom` naming the run whose attempt produced the result — `from`, or
    /// the one the previous record names along a chain of reruns. Finally tasks always run
    /// again. Linear in the size of the workflow.
    pub fn reuse(&mut self, previous: &[TaskStatus], from: &str) {
        if self.phase != RunPhase::Pending {
            return;
        }
        let by_name: HashMap<&str, &TaskStatus> =
            previous.iter().map(|t| (t.name.as_str(), t)).collect();
        let dag = Arc::clone(&self.dag);
        let regular = dag.regular();
        // Kahn's order over the regular tasks (their dependents are regular too).
        let mut left: Vec<u32> = (0..regular)
            .map(|i| dag.parents(TaskId(i as u32)).len() as u32)
            .collect();
        let mut order: Vec<TaskId> = (0..regular as u32)
            .map(TaskId)
            .filter(|id| left[id.index()] == 0)
            .collect();
        let mut reused = vec![false; regular];
        let mut next = 0;
        while let Some(&id) = order.get(next) {
            next += 1;
            let name = dag.task(id).name.as_str();
            let upstream_reused = dag.parents(id).iter().all(|p| reused[p.index()]);
            let old = by_name
                .get(name)
                .filter(|t| t.phase == TaskPhase::Succeeded && !t.finally);
            if dag.task(id).for_each.is_some() && upstream_reused {
                // Its instances that succeeded are reused, the others run again.
                let instances: HashMap<u32, TaskStatus> = (0..old_instances(by_name.get(name)))
                    .filter_map(|i| {
                        let old = by_name.get(instance_name(name, i).as_str())?;
                        (old.phase == TaskPhase::Succeeded).then(|| (i, (*old).clone()))
                    })
                    .collect();
                if old.is_some() && self.reuse_fan_out(id, &instances, from) {
                    reused[id.index()] = true;
                } else {
                    self.reusable.insert(id, (instances, from.to_string()));
                }
            } else if let Some(old) = old
                && upstream_reused
            {
                reused[id.index()] = true;
                self.reuse_one(id, old, from);
            }
            for &child in dag.children(id) {
                left[child.index()] -= 1;
                if left[child.index()] == 0 {
                    order.push(child);
                }
            }
        }
    }

    /// Reuses a fan-out task that succeeded, with all its instances, if each of them is in
    /// `instances` and its list is the same again.
    fn reuse_fan_out(
        &mut self,
        id: TaskId,
        instances: &HashMap<u32, TaskStatus>,
        from: &str,
    ) -> bool {
        let Ok(items) = self.items(id) else {
            return false;
        };
        if items.len() != instances.len() || self.room_for(items.len()).is_err() {
            return false;
        }
        let inputs = self.resolve_inputs(id).ok();
        let first = self.add_instances(id, items, inputs);
        let mut group = TaskStatus {
            phase: TaskPhase::Succeeded,
            ..TaskStatus::pending(self.dag.task(id).name.as_str())
        };
        for (i, old) in (0..instances.len() as u32).filter_map(|i| Some((i, instances.get(&i)?))) {
            group.started_at = group.started_at.min(old.started_at).or(old.started_at);
            group.finished_at = group.finished_at.max(old.finished_at);
            group.reused_from = group.reused_from.take().or_else(|| old.reused_from.clone());
            self.reuse_one(TaskId(first + i), old, from);
        }
        self.reuse_one(id, &group, from);
        true
    }

    fn reuse_one(&mut self, id: TaskId, old: &TaskStatus, from: &str) {
        let origin = old.reused_from.clone().unwrap_or_else(|| from.to_string());
        let state = &mut self.tasks[id.index()];
        state.attempts = old.attempts;
        state.started_at = old.started_at;
        state.exit_code = old.exit_code;
        state.outputs = old.outputs.clone();
        state.infra_retries = old.infra_retries;
        state.reused_from = Some(origin.clone());
        let finished = old
            .finished_at
            .or(old.started_at)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let message = format!("reused the result of run {origin:?}");
        self.close(id, TaskPhase::Succeeded, "Reused", message, finished);
        self.tasks[id.index()].finished_at = old.finished_at;
    }

    /// Records how attempt `attempt` of `task` ended, at `at`: when it really ended (e.g. the
    /// container's `finishedAt`), which may be earlier than when the driver noticed. Timers due
    /// by then fire first, so the order of events is the order in which they happened: a task
    /// that succeeded before its timeout succeeded, whenever its report arrives, and one that
    /// ran past it timed out. Nothing starts here: new attempts start in [`tick`](Self::tick),
    /// at the driver's present time, so nothing starts after the run's deadline.
    ///
    /// Reports about attempts the engine has already closed (killed by the run deadline or a
    /// cancellation, superseded) are ignored. The report of an attempt being stopped for its
    /// timeout is the confirmation that it is gone: only then is the timeout recorded, the
    /// parallelism slot freed and the retry's back-off started.
    pub fn finish_attempt(&mut self, task: TaskId, attempt: u32, outcome: Outcome, at: Timestamp) {
        // A timer due at the very instant of the report comes after it: the attempt ended in
        // time.
        self.fire_timers_before(at);
        let Some(state) = self.tasks.get(task.index()) else {
            return;
        };
        if state.stage != Stage::Running || state.attempts != attempt {
            return;
        }
        let stopping = state.stopping;
        self.leave_running(task);
        self.tasks[task.index()].stopping = None;
        let outcome = match (stopping, outcome) {
            (None, outcome) => outcome,
            // It ended by itself before its deadline; the report came late.
            (Some(deadline), outcome) if at <= deadline && !looks_killed(&outcome) => outcome,
            (Some(_), _) => Outcome::TimedOut,
        };
        let now = at;
        match outcome {
            Outcome::Exited { code: 0, output } => match parse_output(&output) {
                Ok(outputs) => {
                    self.end_history(task, Some(0), "Completed", now);
                    self.succeed(task, outputs, now)
                }
                Err(message) => {
                    self.attempt_failed(task, Some(0), "InvalidOutput", message, now, false)
                }
            },
            Outcome::Exited { code, .. } => {
                let message = format!("attempt {attempt} exited with code {code}");
                self.attempt_failed(task, Some(code), "Error", message, now, false)
            }
            Outcome::TimedOut => {
                let message = self.timeout_message(task, attempt);
                self.attempt_failed(task, None, "Timeout", message, now, false)
            }
            Outcome::Terminated {
                code,
                reason,
                message,
            } => self.attempt_failed(task, Some(code), &reason, message, now, false),
            Outcome::Failed { reason, message } => {
                self.attempt_failed(task, None, &reason, message, now, false)
            }
            Outcome::Refused { reason, message } => {
                self.attempt_failed(task, None, &reason, message, now, true)
            }
        }
        self.propagate(now);
        self.settle(now);
    }

    /// Fires every timer due at `now` (attempt timeouts, retries, the run deadline), then starts
    /// what can start.
    pub fn tick(&mut self, now: Timestamp) {
        self.fire_timers_before(later(now, SignedDuration::from_nanos(1)));
        self.propagate(now);
        self.schedule(now);
    }

    /// Fires the timers due before `end`, each at its own time, in time order. Starts nothing.
    fn fire_timers_before(&mut self, end: Timestamp) {
        while let Some(Reverse(timer)) = self.timers.peek().copied() {
            if timer.at >= end || self.is_finished() {
                break;
            }
            self.timers.pop();
            if !self.is_live(&timer) {
                continue; // stale: the attempt already ended
            }
            match timer.kind {
                TimerKind::RunDeadline => {
                    self.deadline_exceeded(timer.at);
                    self.propagate(timer.at);
                    self.settle(timer.at);
                }
                TimerKind::AttemptTimeout => {
                    // The attempt keeps its slot until the driver reports it gone.
                    self.actions.push(Action::Kill {
                        task: timer.task,
                        attempt: timer.attempt,
                        reason: KillReason::Timeout,
                        at: timer.at,
                    });
                    self.mark_stopping(timer.task, timer.attempt, timer.at);
                    self.mark(timer.task);
                }
                TimerKind::RetryDue => {
                    // Retries wait in the queue a suspend holds back, finally tasks' too.
                    self.tasks[timer.task.index()].stage = Stage::Queued;
                    self.ready.push_back(timer.task);
                }
            }
        }
    }

    /// When [`tick`](Self::tick) next has something to do, if ever. Exact: timers of attempts
    /// that already ended are dropped as soon as they reach the front.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        if self.is_finished() {
            return None;
        }
        self.timers.peek().map(|Reverse(t)| t.at)
    }

    /// Cancels the run: running regular attempts are killed and every unfinished regular task
    /// becomes Cancelled; then the finally tasks run, and the run ends Cancelled. Calling it
    /// again changes nothing (a Kubernetes driver applies `spec.cancel` on every reconcile);
    /// see [`abort`](Self::abort) to stop the finally tasks too.
    pub fn cancel(&mut self, now: Timestamp) {
        if self.is_finished() || self.ending.is_some() {
            return;
        }
        self.ending = Some(Ending::Cancelled);
        self.transitioned_at = Some(now);
        if self.phase == RunPhase::Pending {
            // Nothing ran, and nothing will: not even the finally tasks.
            self.stop_all(
                true,
                now,
                KillReason::Cancelled,
                "Cancelled",
                "the run was cancelled",
            );
            self.finish_run(RunPhase::Cancelled, "Cancelled", now);
            return;
        }
        self.stop_all(
            false,
            now,
            KillReason::Cancelled,
            "Cancelled",
            "the run was cancelled",
        );
        self.propagate(now);
        self.schedule(now);
    }

    /// Cancels the run and stops its finally tasks too (a second Ctrl-C): everything unfinished
    /// ends Cancelled and the run ends now.
    pub fn abort(&mut self, now: Timestamp) {
        if self.is_finished() {
            return;
        }
        self.cancel(now);
        if self.is_finished() {
            return;
        }
        self.stop_all(
            true,
            now,
            KillReason::Cancelled,
            "Cancelled",
            "the run was cancelled before its finally tasks ended",
        );
        self.finish_run(RunPhase::Cancelled, "Cancelled", now);
    }

    /// Whether the run was cancelled (it may still be running its finally tasks).
    pub fn is_cancelled(&self) -> bool {
        self.ending == Some(Ending::Cancelled)
    }

    /// Suspends (`true`) or resumes (`false`) the run at `now`. While suspended no attempt
    /// starts — neither a queued task nor a retry whose back-off has ended — while running
    /// attempts go on and their ends are recorded; the run's deadline keeps counting. What was
    /// held back starts at the next [`tick`](Self::tick) after a resume. A finished run stays
    /// as it is.
    pub fn suspend(&mut self, suspended: bool, now: Timestamp) {
        if self.is_finished() || self.is_suspended() == suspended {
            return;
        }
        self.suspension = Some((suspended, now));
    }

    /// Whether no attempt may start now because the run is suspended.
    pub fn is_suspended(&self) -> bool {
        self.suspension.is_some_and(|(on, _)| on)
    }

    /// Records that the running attempt passed its deadline `at` and is being stopped.
    pub(super) fn mark_stopping(&mut self, task: TaskId, attempt: u32, at: Timestamp) {
        let seconds = self.task_def(task).timeout.map_or(0, |d| d.as_secs());
        self.stopping_tasks.insert(task);
        let state = &mut self.tasks[task.index()];
        state.stopping = Some(at);
        state.timeout_at = None;
        state.message = Some(format!(
            "attempt {attempt} exceeded its timeout of {seconds}s; stopping it"
        ));
    }

    /// Attempts past their timeout that the driver has not reported gone yet, with their
    /// deadlines: a driver that keeps no state of its own (Kubernetes) stops these.
    pub fn stopping(&self) -> impl Iterator<Item = (TaskId, u32, Timestamp)> + '_ {
        self.stopping_tasks.iter().filter_map(|&id| {
            let state = &self.tasks[id.index()];
            Some((id, state.attempts, state.stopping?))
        })
    }

    /// Running attempts, `(task, attempt)`, in task order.
    pub fn running_attempts(&self) -> impl Iterator<Item = (TaskId, u32)> + '_ {
        self.running
            .iter()
            .map(|&id| (id, self.tasks[id.index()].attempts))
    }

    /// Tasks that failed for good, in the order they did.
    pub fn failed_tasks(&self) -> &[TaskId] {
        &self.failed
    }

    /// Actions queued since the last call, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Tasks whose status changed since the last call, each once.
    pub fn take_changes(&mut self) -> Vec<TaskId> {
        for id in &self.changed {
            self.tasks[id.index()].dirty = false;
        }
        std::mem::take(&mut self.changed)
    }

    // ---- transitions ----

    /// Queues a task whose trigger and `when` hold.
    pub(super) fn enqueue(&mut self, task: TaskId) {
        self.tasks[task.index()].stage = Stage::Queued;
        if self.is_finally_slot(task) {
            self.ready_finally.push_back(task);
        } else {
            self.ready.push_back(task);
        }
    }

    /// Starts ready tasks while the parallelism cap allows: first attempts of finally tasks
    /// always, everything else only while the run is not suspended.
    fn schedule(&mut self, now: Timestamp) {
        let cap = self.dag.parallelism().unwrap_or(u32::MAX);
        while self.phase == RunPhase::Running && self.tally.running < cap {
            let task = match self.ready_finally.pop_front() {
                Some(task) => task,
                None if self.is_suspended() => break,
                None => match self.ready.pop_front() {
                    Some(task) => task,
                    None => break,
                },
            };
            if self.tasks[task.index()].stage != Stage::Queued {
                continue; // ended while it waited (an instance held back, then stopped)
            }
            if let Some((group, _)) = self.instance(task)
                && let Some(fan) = self.fans.get_mut(&group)
                && fan.running
                    >= self
                        .dag
                        .task(group)
                        .for_each
                        .as_ref()
                        .and_then(|f| f.parallelism)
                        .unwrap_or(u32::MAX)
            {
                fan.held.insert(task);
                continue;
            }
            match self.resolve_inputs(task) {
                Ok(inputs) => self.launch(task, inputs, now),
                // A finally task cannot count on any task having succeeded.
                Err(message) if self.is_finally_slot(task) => {
                    self.close(task, TaskPhase::Skipped, "InputUnresolved", message, now)
                }
                Err(message) => self.fail_for_good(task, None, "InputUnresolved", message, now),
            }
            self.propagate(now);
        }
        self.settle(now);
    }

    /// Ends the run at `now` once every task is final, and drops stale timers.
    fn settle(&mut self, now: Timestamp) {
        if self.phase == RunPhase::Running && self.finished_tasks() == self.tasks.len() as u32 {
            let (phase, reason) = match self.ending {
                Some(Ending::Cancelled) => (RunPhase::Cancelled, "Cancelled"),
                Some(Ending::DeadlineExceeded) => (RunPhase::Failed, "DeadlineExceeded"),
                None if self.blocking_failures > 0 => (RunPhase::Failed, "TaskFailed"),
                None => (RunPhase::Succeeded, "Succeeded"),
            };
            self.finish_run(phase, reason, now);
        }
        self.prune_timers();
    }

    /// Tells the dependents of every task that became final, deciding each dependent whose
    /// dependencies are now all final; starts the finally tasks once the regular ones are all
    /// final. Each task is settled once, so this is linear over a run.
    pub(super) fn propagate(&mut self, now: Timestamp) {
        let dag = Arc::clone(&self.dag);
        while let Some(task) = self.settled.pop() {
            // A failure decides an AllSucceeded dependent at once: it cannot run any more.
            let blocks = !self.counts_as_done(task);
            for &child in dag.children(task) {
                let state = &mut self.tasks[child.index()];
                state.waiting_on -= 1;
                let releasable = !dag.is_finally(child) || self.regular_left == 0;
                let decided = state.waiting_on == 0
                    || (blocks && dag.task(child).trigger == Trigger::AllSucceeded);
                if decided && state.stage == Stage::Blocked && releasable {
                    self.resolve(child, now);
                }
            }
            if self.regular_left == 0 && self.finally_env.is_none() {
                self.release_finally(now);
            }
        }
    }

    /// The regular tasks are all final: fixes what finally tasks are told and decides every
    /// finally task without finally dependencies.
    fn release_finally(&mut self, now: Timestamp) {
        self.restore_finally();
        for i in self.dag.regular()..self.dag.len() {
            let state = &self.tasks[i];
            if state.stage == Stage::Blocked && state.waiting_on == 0 {
                self.resolve(TaskId(i as u32), now);
            }
        }
    }

    /// Fixes what the finally tasks are told, once the regular tasks are all final: what they
    /// came to, and the failed ones in declaration order.
    pub(super) fn restore_finally(&mut self) {
        if self.regular_left > 0 {
            return;
        }
        // A cancel that came after the regular tasks ended does not change what they came to.
        let run_phase = match self.ending.filter(|_| self.stopped_regular) {
            Some(Ending::Cancelled) => RunPhase::Cancelled,
            Some(Ending::DeadlineExceeded) => RunPhase::Failed,
            None if self.regular_blocking_failures > 0 => RunPhase::Failed,
            None => RunPhase::Succeeded,
        };
        let regular = self.dag.regular();
        let mut failed: Vec<TaskId> = self
            .failed
            .iter()
            .copied()
            .filter(|id| id.index() < regular)
            .collect();
        failed.sort_unstable();
        let names: Vec<&str> = failed
            .iter()
            .map(|&id| self.dag.task(id).name.as_str())
            .collect();
        self.finally_env = Some(FinallyEnv {
            run_phase,
            failed_tasks: failed_list(&names).into(),
        });
    }

    /// Decides a task whose dependencies are all final: skipped (its trigger or `when` does
    /// not hold, or it reads a skipped task), or queued to run.
    pub(super) fn resolve(&mut self, task: TaskId, now: Timestamp) {
        if let Some((reason, message)) = self.skip_reason(task) {
            self.close(task, TaskPhase::Skipped, reason, message, now);
        } else if self.dag.task(task).for_each.is_some() {
            self.fan_out(task, now);
        } else {
            self.enqueue(task);
        }
    }

    /// Whether a final task lets an `AllSucceeded` dependent run: it succeeded, was skipped for
    /// a reason other than a failure upstream, or failed with `continueOnFailure`.
    fn counts_as_done(&self, task: TaskId) -> bool {
        let state = &self.tasks[task.index()];
        match state.phase {
            TaskPhase::Succeeded => true,
            TaskPhase::Skipped => state.reason.as_deref() != Some("UpstreamFailed"),
            TaskPhase::Failed => self.dag.task(task).continue_on_failure,
            _ => false,
        }
    }

    /// Why a task whose dependencies are all final does not run, if it does not: its trigger
    /// first, then its `when`, then an input read from a skipped task.
    fn skip_reason(&self, task: TaskId) -> Option<(&'static str, String)> {
        let dag = &self.dag;
        let def = dag.task(task);
        let parents = dag.parents(task);
        let phase = |id: TaskId| self.tasks[id.index()].phase;
        match def.trigger {
            Trigger::AllSucceeded => {
                for &parent in parents {
                    let state = &self.tasks[parent.index()];
                    if state.stage != Stage::Done {
                        continue; // decided early, on another dependency's failure
                    }
                    if !self.counts_as_done(parent) {
                        // Name the task that failed, through skipped ones.
                        let message = match (state.phase, &state.message) {
                            (TaskPhase::Skipped, Some(message)) => message.clone(),
                            _ => format!("upstream task {:?} failed", dag.task(parent).name),
                        };
                        return Some(("UpstreamFailed", message));
                    }
                }
            }
            Trigger::AllDone => {}
            Trigger::AnyFailed => {
                if !parents.iter().any(|&p| phase(p) == TaskPhase::Failed) {
                    let message = "trigger AnyFailed: no dependency failed".to_string();
                    return Some(("TriggerNotMet", message));
                }
            }
        }
        for (j, when) in def.when.iter().enumerate() {
            let text = match &when.subject {
                WhenSubject::Param(i) => self.params.get(*i).unwrap_or("").to_string(),
                WhenSubject::Task { task: from, output } => {
                    let state = &self.tasks[from.index()];
                    let from_name = &dag.task(*from).name;
                    if state.phase == TaskPhase::Skipped {
                        let message =
                            format!("when[{j}] reads task {from_name:?}, which was skipped");
                        return Some(("UpstreamSkipped", message));
                    }
                    match self.output_of(*from, output) {
                        Ok(value) => crate::task_env::input_env_value(&value),
                        Err(missing) => {
                            let message = format!("when[{j}]: {}", missing.without_keys());
                            return Some(("WhenFalse", message));
                        }
                    }
                }
            };
            if when.values.contains(&text) == when.negated {
                let subject = match &when.subject {
                    WhenSubject::Param(i) => format!(
                        "param {:?}",
                        dag.params().get(*i).map_or("", |p| p.name.as_str())
                    ),
                    WhenSubject::Task { task: from, output } => {
                        format!("output {output:?} of task {:?}", dag.task(*from).name)
                    }
                };
                let operator = if when.negated { "NotIn" } else { "In" };
                let message = format!(
                    "when[{j}] does not hold: {subject} is {}, not {operator} [{}]",
                    crate::text::quoted(&crate::text::cap(text, 256)),
                    crate::text::cap(when.values.join(", "), 256)
                );
                return Some(("WhenFalse", message));
            }
        }
        for input in &def.inputs {
            if let InputSource::Task { task: from, .. } = &input.source
                && phase(*from) == TaskPhase::Skipped
            {
                let message = format!(
                    "input {:?} reads task {:?}, which was skipped",
                    input.name,
                    dag.task(*from).name
                );
                return Some(("UpstreamSkipped", message));
            }
        }
        if let Some(ItemSource::Task { task: from, .. }) = def.for_each.as_ref().map(|f| &f.source)
            && phase(*from) == TaskPhase::Skipped
        {
            let message = format!(
                "forEach reads task {:?}, which was skipped",
                dag.task(*from).name
            );
            return Some(("UpstreamSkipped", message));
        }
        None
    }

    /// Output `key` of task `from`; a fan-out task's is the array of its instances' values, in
    /// item order.
    fn output_of(&self, from: TaskId, key: &str) -> Result<Value, Missing> {
        let missing = |slot: TaskId| {
            let keys = self.tasks[slot.index()]
                .outputs
                .as_ref()
                .map(|o| o.keys().map(String::as_str).collect::<Vec<_>>().join(", "));
            Missing::Key {
                who: match self.instance(slot) {
                    Some(_) => format!("instance {:?}", self.slot_name(slot)),
                    None => format!("task {:?}", self.dag.task(slot).name),
                },
                key: key.to_string(),
                keys: keys
                    .filter(|k| !k.is_empty())
                    .unwrap_or_else(|| "none".into()),
            }
        };
        let Some(fan) = self.fans.get(&from) else {
            let outputs = self.tasks[from.index()].outputs.as_ref();
            return outputs
                .and_then(|o| o.get(key))
                .cloned()
                .ok_or_else(|| missing(from));
        };
        let mut values = Vec::with_capacity(fan.items.len());
        let mut bytes = 0;
        for slot in fan.slots() {
            let outputs = self.tasks[slot.index()].outputs.as_ref();
            let value = outputs
                .and_then(|o| o.get(key))
                .ok_or_else(|| missing(slot))?;
            bytes += value.to_string().len() + 1;
            if bytes > MAX_GATHERED_BYTES {
                return Err(Missing::TooLong {
                    who: format!("task {:?}", self.dag.task(from).name),
                    key: key.to_string(),
                });
            }
            values.push(value.clone());
        }
        Ok(Value::Array(values))
    }

    fn launch(&mut self, task: TaskId, inputs: Vec<(String, Value)>, now: Timestamp) {
        let timeout = self.task_def(task).timeout;
        let finally = if self.is_finally_slot(task) {
            self.finally_env.clone()
        } else {
            None
        };
        let instance = self.item(task);
        if let Some((group, _)) = self.instance(task)
            && let Some(fan) = self.fans.get_mut(&group)
        {
            fan.running += 1;
        }
        let state = &mut self.tasks[task.index()];
        state.stage = Stage::Running;
        state.phase = TaskPhase::Running;
        state.attempts += 1;
        state.retry_at = None;
        state.timeout_at = None;
        state.started_at.get_or_insert(now);
        let attempt = state.attempts;
        if state.history.len() >= MAX_HISTORY {
            state.history.pop_front();
        }
        state.history.push_back(AttemptRecord {
            attempt,
            exit_code: None,
            reason: None,
            started_at: Some(now),
            finished_at: None,
        });
        self.tally.running += 1;
        self.running.insert(task);
        if let Some(timeout) = timeout {
            self.set_timeout(task, attempt, Some(later(now, timeout)));
        }
        self.mark(task);
        self.actions.push(Action::Start(Launch {
            task,
            attempt,
            inputs,
            finally,
            instance,
        }));
    }

    /// An instance's fan-out task, index and item.
    fn item(&self, slot: TaskId) -> Option<Instance> {
        let (task, index) = self.instance(slot)?;
        let item = self.fans.get(&task)?.items.get(index as usize)?.clone();
        Some(Instance { task, index, item })
    }

    /// A running attempt of `slot` is over: its slots in the run's and its fan-out's
    /// parallelism are free, and an instance held back by the latter may go.
    fn leave_running(&mut self, slot: TaskId) {
        self.tally.running -= 1;
        self.running.remove(&slot);
        self.stopping_tasks.remove(&slot);
        if let Some((group, _)) = self.instance(slot)
            && let Some(fan) = self.fans.get_mut(&group)
        {
            fan.running -= 1;
            if let Some(next) = fan.held.pop_first() {
                if self.dag.is_finally(group) {
                    self.ready_finally.push_front(next);
                } else {
                    self.ready.push_front(next);
                }
            }
        }
    }

    /// A fan-out task whose dependencies allow it to run: its list is read and one instance
    /// per item is queued; an empty list succeeds at once, a bad one fails the task.
    fn fan_out(&mut self, task: TaskId, now: Timestamp) {
        let finally = self.dag.is_finally(task);
        let inputs = match self.resolve_inputs(task) {
            Ok(inputs) => inputs,
            Err(message) if finally => {
                return self.close(task, TaskPhase::Skipped, "InputUnresolved", message, now);
            }
            Err(message) => {
                return self.fail_for_good(task, None, "InputUnresolved", message, now);
            }
        };
        let items = match self.items(task).and_then(|items| {
            self.room_for(items.len())?;
            Ok(items)
        }) {
            Ok(items) => items,
            Err((reason, message)) => return self.fail_for_good(task, None, reason, message, now),
        };
        let count = items.len() as u32;
        let first = self.add_instances(task, items, Some(inputs));
        let state = &mut self.tasks[task.index()];
        state.started_at = Some(now);
        if count == 0 {
            let message = "forEach: the list is empty".to_string();
            return self.close(task, TaskPhase::Succeeded, "Completed", message, now);
        }
        state.stage = Stage::FannedOut;
        state.phase = TaskPhase::Running;
        self.tally.fanned += 1;
        self.mark(task);
        let reusable = self.reusable.remove(&task);
        for slot in (first..first + count).map(TaskId) {
            let index = slot.0 - first;
            match reusable
                .as_ref()
                .and_then(|(old, from)| Some((old.get(&index)?, from)))
            {
                Some((old, from)) => self.reuse_one(slot, old, from),
                None => {
                    self.enqueue(slot);
                    self.mark(slot);
                }
            }
        }
    }

    /// Appends the instance slots of `task`, one per item, and records its fan-out with its
    /// resolved inputs; returns the first slot.
    pub(super) fn add_instances(
        &mut self,
        task: TaskId,
        items: Arc<[Value]>,
        inputs: Option<Vec<(String, Value)>>,
    ) -> u32 {
        let first = self.tasks.len() as u32;
        let count = items.len() as u32;
        for index in 0..count {
            let mut state = TaskState::new(0);
            state.stage = Stage::Queued;
            self.tasks.push(state);
            self.instance_of.push((task, index));
        }
        self.fans.insert(
            task,
            FanOut {
                items,
                first,
                left: count,
                running: 0,
                held: BTreeSet::new(),
                failed: 0,
                first_failed: None,
                first_cancelled: None,
                inputs,
            },
        );
        first
    }

    /// Whether the run can take `count` more instances.
    pub(super) fn room_for(&self, count: usize) -> Result<(), (&'static str, String)> {
        let made = self.instance_of.len();
        if made + count > MAX_RUN_INSTANCES {
            return Err((
                "FanOutTooLarge",
                format!(
                    "forEach: {count} more instances would make {} in the run, at most \
                     {MAX_RUN_INSTANCES} are allowed",
                    made + count
                ),
            ));
        }
        Ok(())
    }

    /// The items of fan-out task `task`, read from where its `forEach` says.
    pub(super) fn items(&self, task: TaskId) -> Result<Arc<[Value]>, (&'static str, String)> {
        let Some(for_each) = &self.dag.task(task).for_each else {
            return Ok(Arc::from([]));
        };
        let (value, what) = match &for_each.source {
            ItemSource::Items(items) => return Ok(Arc::clone(items)),
            ItemSource::Param(i) => {
                let name = self.dag.params().get(*i).map_or("", |p| p.name.as_str());
                let text = self.params.get(*i).unwrap_or("");
                (Value::String(text.to_string()), format!("param {name:?}"))
            }
            ItemSource::Task { task: from, output } => {
                let value = self
                    .output_of(*from, output)
                    .map_err(|missing| ("InvalidFanOut", format!("forEach: {missing}")))?;
                let from_name = &self.dag.task(*from).name;
                (value, format!("output {output:?} of task {from_name:?}"))
            }
        };
        list_items(value, &what)
    }

    /// The launch of `task`'s current attempt, for a driver that must start it again (its Job
    /// was recorded but never made): the same inputs, resolved from the recorded outputs.
    pub fn relaunch(&self, task: TaskId) -> Option<Launch> {
        let state = self.tasks.get(task.index())?;
        if state.stage != Stage::Running {
            return None;
        }
        let inputs = self.resolve_inputs(task).ok()?;
        let finally = if self.is_finally_slot(task) {
            Some(self.finally_env.clone()?)
        } else {
            None
        };
        Some(Launch {
            task,
            attempt: state.attempts,
            inputs,
            finally,
            instance: self.item(task),
        })
    }

    pub(super) fn resolve_inputs(&self, task: TaskId) -> Result<Vec<(String, Value)>, String> {
        if let Some((group, _)) = self.instance(task)
            && let Some(inputs) = self.fans.get(&group).and_then(|fan| fan.inputs.as_ref())
        {
            return Ok(inputs.clone());
        }
        let def = self.task_def(task);
        let mut resolved = Vec::with_capacity(def.inputs.len());
        for input in &def.inputs {
            let value = match &input.source {
                InputSource::Value(v) => Value::String(v.clone()),
                InputSource::Param(i) => Value::String(self.params.get(*i).unwrap_or("").into()),
                InputSource::Task { task: from, output } => self
                    .output_of(*from, output)
                    .map_err(|missing| format!("input {:?}: {missing}", input.name))?,
            };
            resolved.push((input.name.clone(), value));
        }
        Ok(resolved)
    }

    fn succeed(&mut self, task: TaskId, outputs: Map<String, Value>, now: Timestamp) {
        let state = &mut self.tasks[task.index()];
        state.exit_code = Some(0);
        state.outputs = (!outputs.is_empty()).then_some(outputs);
        self.close(task, TaskPhase::Succeeded, "Completed", String::new(), now);
        self.tasks[task.index()].message = None;
    }

    /// Fills in how the running attempt ended, in its history entry.
    fn end_history(&mut self, task: TaskId, exit_code: Option<i32>, reason: &str, now: Timestamp) {
        let state = &mut self.tasks[task.index()];
        let attempt = state.attempts;
        if let Some(entry) = state.history.back_mut().filter(|e| e.attempt == attempt) {
            entry.exit_code = exit_code;
            entry.reason = Some(reason.into());
            entry.finished_at = Some(now);
        }
    }

    /// An attempt failed: retry after the back-off if the policy says so, otherwise fail for
    /// good. A failure outside the task is retried without using the limit, up to
    /// [`MAX_INFRA_RETRIES`] times; `refused` (the attempt can never run as asked) is never
    /// retried.
    fn attempt_failed(
        &mut self,
        task: TaskId,
        exit_code: Option<i32>,
        reason: &str,
        message: String,
        now: Timestamp,
        refused: bool,
    ) {
        self.end_history(task, exit_code, reason, now);
        let def = self.task_def(task);
        let retry = def.retry;
        let state = &self.tasks[task.index()];
        let attempts = state.attempts;
        let infra = INFRA_REASONS.contains(&reason) && state.infra_retries < MAX_INFRA_RETRIES;
        let counted = attempts.saturating_sub(state.infra_retries);
        let wanted = match reason {
            _ if refused => false,
            _ if infra => true,
            "Timeout" => def.retry_on.timeout,
            _ => {
                def.retry_on.error
                    && (def.retry_on.exit_codes.is_empty()
                        || exit_code.is_some_and(|c| def.retry_on.exit_codes.contains(&c)))
            }
        };
        if !wanted || (!infra && counted >= retry.max_attempts()) {
            return self.fail_for_good(task, exit_code, reason, message, now);
        }
        let delay = retry.delay_after(counted.max(1));
        let due = later(now, delay);
        let state = &mut self.tasks[task.index()];
        if infra {
            state.infra_retries += 1;
        }
        state.stage = Stage::Backoff;
        state.phase = TaskPhase::Pending;
        state.retry_at = Some(due);
        state.exit_code = exit_code;
        state.reason = Some(reason.into());
        state.message = Some(if infra {
            format!(
                "{message}; retrying outside the retry limit ({} of {MAX_INFRA_RETRIES}) in {:.1}s",
                state.infra_retries,
                delay.as_secs_f64()
            )
        } else {
            format!(
                "{message}; attempt {} of {} in {:.1}s",
                counted + 1,
                retry.max_attempts(),
                delay.as_secs_f64()
            )
        });
        self.push_timer(due, TimerKind::RetryDue, task, attempts);
        self.mark(task);
    }

    /// The task failed for good; its dependents are decided as their triggers say.
    fn fail_for_good(
        &mut self,
        task: TaskId,
        exit_code: Option<i32>,
        reason: &str,
        message: String,
        now: Timestamp,
    ) {
        self.close(task, TaskPhase::Failed, reason, message, now);
        self.tasks[task.index()].exit_code = exit_code;
    }

    /// The run's deadline passed: running regular attempts are killed and fail, the rest of
    /// the regular tasks is cancelled; then the finally tasks run. Once the regular tasks are
    /// all final, the deadline no longer applies.
    fn deadline_exceeded(&mut self, now: Timestamp) {
        if self.ending.is_some() || self.regular_left == 0 {
            return;
        }
        self.ending = Some(Ending::DeadlineExceeded);
        self.transitioned_at = Some(now);
        let seconds = self.dag.active_deadline().map_or(0, |d| d.as_secs());
        let message = format!("the run's deadline of {seconds}s was exceeded");
        self.stop_all(
            false,
            now,
            KillReason::DeadlineExceeded,
            "DeadlineExceeded",
            &message,
        );
    }

    /// Ends every unfinished regular task (and finally task, with `finally`): running ones are
    /// killed (Failed on a deadline, Cancelled on cancellation), waiting ones become Cancelled;
    /// a fan-out task ends with its last instance. Visits each slot once.
    fn stop_all(
        &mut self,
        finally: bool,
        now: Timestamp,
        kill: KillReason,
        reason: &str,
        message: &str,
    ) {
        // Starts the driver has not carried out yet are dropped, not undone with a kill.
        let mut unstarted = BTreeSet::new();
        let (dag, instance_of) = (&self.dag, &self.instance_of);
        let in_scope =
            |slot: TaskId| finally || !dag.is_finally(definition_of(dag, instance_of, slot));
        self.actions.retain(|action| match action {
            Action::Start(launch) if in_scope(launch.task) => {
                unstarted.insert((launch.task, launch.attempt));
                false
            }
            _ => true,
        });
        let slots: Vec<TaskId> = (0..self.tasks.len() as u32)
            .map(TaskId)
            .filter(|&slot| in_scope(slot))
            .collect();
        for task in slots {
            let i = task.index();
            let state = &self.tasks[i];
            let phase = match state.stage {
                Stage::Done | Stage::FannedOut => continue,
                Stage::Running => {
                    let attempts = state.attempts;
                    self.leave_running(task);
                    if unstarted.contains(&(task, attempts)) {
                        // It never started: it is not an attempt.
                        let state = &mut self.tasks[i];
                        state.attempts -= 1;
                        state.history.pop_back();
                        if state.attempts == 0 {
                            state.started_at = None;
                        }
                    } else {
                        self.actions.push(Action::Kill {
                            task,
                            attempt: attempts,
                            reason: kill,
                            at: now,
                        });
                        self.end_history(task, None, reason, now);
                    }
                    if kill == KillReason::DeadlineExceeded {
                        TaskPhase::Failed
                    } else {
                        TaskPhase::Cancelled
                    }
                }
                Stage::Blocked | Stage::Queued | Stage::Backoff => TaskPhase::Cancelled,
            };
            self.stopped_regular |= !self.is_finally_slot(task);
            self.close(task, phase, reason, message.to_string(), now);
        }
        let tasks = &self.tasks;
        self.ready.retain(|t| !tasks[t.index()].is_done());
        self.ready_finally.retain(|t| !tasks[t.index()].is_done());
        for fan in self.fans.values_mut() {
            fan.held.retain(|t| !tasks[t.index()].is_done());
        }
    }

    /// Moves a task to a final phase, counts it, and queues its dependents to be told.
    fn close(
        &mut self,
        task: TaskId,
        phase: TaskPhase,
        reason: &str,
        message: String,
        now: Timestamp,
    ) {
        let state = &mut self.tasks[task.index()];
        let fanned_out = state.stage == Stage::FannedOut;
        state.stage = Stage::Done;
        state.retry_at = None;
        state.stopping = None;
        state.timeout_at = None;
        state.phase = phase;
        state.finished_at = Some(now);
        state.reason = Some(reason.into());
        state.message = Some(message);
        if fanned_out {
            self.tally.fanned -= 1;
        }
        if let Some((group, _)) = self.instance(task) {
            return self.close_instance(group, task, phase, now);
        }
        let regular = task.index() < self.dag.regular();
        match phase {
            TaskPhase::Failed => {
                self.tally.failed += 1;
                self.failed.push(task);
                if !self.dag.task(task).continue_on_failure {
                    self.blocking_failures += 1;
                    self.regular_blocking_failures += u32::from(regular);
                    self.first_failure.get_or_insert(task);
                }
            }
            TaskPhase::Skipped => self.tally.skipped += 1,
            TaskPhase::Cancelled => self.tally.cancelled += 1,
            TaskPhase::Succeeded => self.tally.succeeded += 1,
            TaskPhase::Pending | TaskPhase::Running => {}
        }
        if regular {
            self.regular_left -= 1;
        }
        self.settled.push(task);
        self.mark(task);
    }

    /// Counts an instance that became final; the fan-out task ends with its last instance:
    /// Failed if one failed for good, else Cancelled if one was, else Succeeded.
    fn close_instance(&mut self, group: TaskId, slot: TaskId, phase: TaskPhase, now: Timestamp) {
        match phase {
            TaskPhase::Failed => self.tally.failed += 1,
            TaskPhase::Skipped => self.tally.skipped += 1,
            TaskPhase::Cancelled => self.tally.cancelled += 1,
            TaskPhase::Succeeded => self.tally.succeeded += 1,
            TaskPhase::Pending | TaskPhase::Running => {}
        }
        self.mark(slot);
        let Some(fan) = self.fans.get_mut(&group) else {
            return;
        };
        fan.left -= 1;
        match phase {
            TaskPhase::Failed => {
                fan.failed += 1;
                fan.first_failed.get_or_insert(slot);
            }
            TaskPhase::Cancelled => {
                fan.first_cancelled.get_or_insert(slot);
            }
            _ => {}
        }
        if fan.left == 0 && self.tasks[group.index()].stage == Stage::FannedOut {
            self.end_fan_out(group, now);
        }
    }

    /// Ends a fan-out task whose instances are all final.
    pub(super) fn end_fan_out(&mut self, group: TaskId, now: Timestamp) {
        let Some(fan) = self.fans.get(&group) else {
            return;
        };
        let count = fan.items.len();
        let (failed, first_failed, first_cancelled) =
            (fan.failed, fan.first_failed, fan.first_cancelled);
        let told = |engine: &Self, slot: TaskId| {
            let state = &engine.tasks[slot.index()];
            (
                state.reason.clone().unwrap_or_default(),
                state.message.clone().unwrap_or_default(),
            )
        };
        let (phase, reason, message) = if let Some(first) = first_failed {
            let (reason, message) = told(self, first);
            let message = format!(
                "{failed} of {count} instances failed; {}: {message}",
                self.slot_name(first)
            );
            (TaskPhase::Failed, reason, message)
        } else if let Some(first) = first_cancelled {
            let (reason, message) = told(self, first);
            (TaskPhase::Cancelled, reason, message)
        } else {
            let message = format!("{count} instances succeeded");
            (TaskPhase::Succeeded, "Completed".to_string(), message)
        };
        self.close(group, phase, &reason, message, now);
    }

    fn finish_run(&mut self, phase: RunPhase, reason: &'static str, now: Timestamp) {
        self.phase = phase;
        self.reason = Some(reason);
        self.finished_at = Some(now);
        self.transitioned_at = Some(now);
        self.timers.clear();
        self.settled.clear();
    }

    fn finished_tasks(&self) -> u32 {
        let t = &self.tally;
        t.succeeded + t.failed + t.skipped + t.cancelled
    }

    fn timeout_message(&self, task: TaskId, attempt: u32) -> String {
        let seconds = self.task_def(task).timeout.map_or(0, |d| d.as_secs());
        format!("attempt {attempt} exceeded its timeout of {seconds}s and was killed")
    }

    /// Whether a timer still matters: the attempt it was set for has not ended yet.
    fn is_live(&self, timer: &Timer) -> bool {
        let stage = match timer.kind {
            // The deadline bounds the regular tasks only, once.
            TimerKind::RunDeadline => return self.regular_left > 0 && self.ending.is_none(),
            TimerKind::AttemptTimeout => Stage::Running,
            TimerKind::RetryDue => Stage::Backoff,
        };
        let state = &self.tasks[timer.task.index()];
        let current = match timer.kind {
            TimerKind::AttemptTimeout => state.timeout_at == Some(timer.at),
            _ => true,
        };
        current
            && state.attempts == timer.attempt
            && state.stage == stage
            && state.stopping.is_none()
    }

    /// Sets (or with `None` clears) the deadline of the running attempt `attempt` of `task`.
    pub(super) fn set_timeout(&mut self, task: TaskId, attempt: u32, at: Option<Timestamp>) {
        let state = &mut self.tasks[task.index()];
        if state.timeout_at == at {
            return;
        }
        state.timeout_at = at;
        if let Some(at) = at {
            self.push_timer(at, TimerKind::AttemptTimeout, task, attempt);
        }
    }

    /// The driver says when attempt `attempt` of `task` really started running (`None`: not
    /// yet): its timeout counts from there. A Kubernetes driver counts from the Pod's start, as
    /// the kubelet counts the Pod's own deadline; until then no timeout runs. Ignored for an
    /// attempt that is not running or is being stopped.
    pub fn attempt_started(&mut self, task: TaskId, attempt: u32, since: Option<Timestamp>) {
        let Some(state) = self.tasks.get(task.index()) else {
            return;
        };
        if state.stage != Stage::Running || state.attempts != attempt || state.stopping.is_some() {
            return;
        }
        let Some(timeout) = self.task_def(task).timeout else {
            return;
        };
        self.set_timeout(task, attempt, since.map(|s| later(s, timeout)));
    }

    /// Drops stale timers from the front of the heap so [`next_wakeup`](Self::next_wakeup) is
    /// exact. Each timer is popped once, so this is amortised O(log n) per timer.
    fn prune_timers(&mut self) {
        while let Some(Reverse(timer)) = self.timers.peek() {
            if self.is_live(timer) {
                break;
            }
            self.timers.pop();
        }
    }

    pub(super) fn push_timer(
        &mut self,
        at: Timestamp,
        kind: TimerKind,
        task: TaskId,
        attempt: u32,
    ) {
        self.timers.push(Reverse(Timer {
            at,
            kind,
            task,
            attempt,
        }));
    }

    fn mark(&mut self, task: TaskId) {
        let state = &mut self.tasks[task.index()];
        if !state.dirty {
            state.dirty = true;
            self.changed.push(task);
        }
    }
}

impl TaskState {
    /// A task that has not started, waiting on `waiting_on` dependencies.
    pub(super) fn new(waiting_on: u32) -> Self {
        Self {
            stage: Stage::Blocked,
            phase: TaskPhase::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            exit_code: None,
            reason: None,
            message: None,
            outputs: None,
            retry_at: None,
            stopping: None,
            timeout_at: None,
            waiting_on,
            infra_retries: 0,
            history: VecDeque::new(),
            reused_from: None,
            dirty: false,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }
}

/// An output a reader needs that it cannot have. `who` is `task "extract"` or
/// `instance "process[3]"`.
#[derive(Debug)]
pub(super) enum Missing {
    /// `who` did not write `key`; `keys` lists what it wrote, comma-separated, or `none`.
    Key {
        who: String,
        key: String,
        keys: String,
    },
    /// The fan-out task `who`'s instances' values of `key` together are too long to give.
    TooLong { who: String, key: String },
}

impl Missing {
    fn without_keys(&self) -> String {
        let (Self::Key { who, key, .. } | Self::TooLong { who, key }) = self;
        format!("{who} has no output {key:?}")
    }
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key { who, key, keys } => {
                write!(f, "{who} has no output {key:?} (its outputs: {keys})")
            }
            Self::TooLong { who, key } => write!(
                f,
                "output {key:?} of {who}: its instances' values come to more than \
                 {MAX_GATHERED_BYTES} bytes"
            ),
        }
    }
}

/// The workflow task slot `slot` runs: itself, or an instance's fan-out task
/// (`instance_of[i]` is slot `dag.len() + i`).
fn definition_of(dag: &Dag, instance_of: &[(TaskId, u32)], slot: TaskId) -> TaskId {
    match slot.index().checked_sub(dag.len()) {
        None => slot,
        Some(i) => instance_of.get(i).map_or(slot, |&(task, _)| task),
    }
}

/// The status name of instance `index` of task `task`.
pub fn instance_name(task: &str, index: u32) -> String {
    format!("{task}[{index}]")
}

/// How many instances a recorded fan-out task had (no more than a list may hold, whatever the
/// record says).
fn old_instances(record: Option<&&TaskStatus>) -> u32 {
    record
        .and_then(|r| r.instances)
        .unwrap_or(0)
        .min(MAX_FAN_OUT as u32)
}

/// A fan-out's items from `value`: a JSON array, or a string holding one.
fn list_items(value: Value, what: &str) -> Result<Arc<[Value]>, (&'static str, String)> {
    let value = match value {
        Value::String(text) => serde_json::from_str(&text).map_err(|_| {
            let shown = crate::text::quoted(&crate::text::cap(text, 256));
            (
                "InvalidFanOut",
                format!("forEach: {what} is not a JSON array: {shown}"),
            )
        })?,
        other => other,
    };
    let items = match value {
        Value::Array(items) => items,
        other => {
            let kind = match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                Value::Object(_) => "an object",
                Value::Array(_) => "an array",
            };
            return Err((
                "InvalidFanOut",
                format!("forEach: {what} is {kind}, not a JSON array"),
            ));
        }
    };
    if items.len() > MAX_FAN_OUT {
        return Err((
            "FanOutTooLarge",
            format!(
                "forEach: {what} has {} items, at most {MAX_FAN_OUT} are allowed",
                items.len()
            ),
        ));
    }
    Ok(items.into())
}

/// `a,b,c`, at most [`MAX_FAILED_TASKS_BYTES`] long: past that, the names that fit and
/// `…(N more)`.
fn failed_list(names: &[&str]) -> String {
    let mut list = String::new();
    for (i, name) in names.iter().enumerate() {
        if list.len() + name.len() + 1 > MAX_FAILED_TASKS_BYTES - 16 {
            list.push_str(&format!(",…({} more)", names.len() - i));
            break;
        }
        if i > 0 {
            list.push(',');
        }
        list.push_str(name);
    }
    list
}

/// Whether an attempt's end looks like the kill ork asked for (SIGTERM or SIGKILL, as shells
/// and the kubelet report them), rather than an end of its own.
fn looks_killed(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Exited {
            code: 137 | 143,
            ..
        } | Outcome::TimedOut
    )
}

/// `now + delay`, saturating at the end of time: a timer that far out never fires, where plain
/// addition would panic on a huge (but valid) `timeoutSeconds` or `activeDeadlineSeconds`.
pub(super) fn later(now: Timestamp, delay: SignedDuration) -> Timestamp {
    now.saturating_add(delay).unwrap_or(Timestamp::MAX)
}
