//! Rebuilding an engine from a recorded status, so a driver that keeps state outside the
//! process (the Kubernetes controller, after a restart or on any reconcile) can continue a run.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;

use super::state::{Engine, Stage, TimerKind, later};
use crate::api::{RunPhase, RunStatus, TaskPhase};
use crate::compile::{BoundParams, Dag, TaskId};

impl Engine {
    /// The engine of a run whose state was recorded as `status`.
    ///
    /// Tasks the status does not mention are Pending. A Running task's attempt timeout counts
    /// from `attempt_started(task, attempt)` when the driver knows it (e.g. from the Job), and
    /// from `now` otherwise; a backing-off task retries at its recorded `nextAttemptAt`.
    pub fn restore(
        dag: Arc<Dag>,
        params: BoundParams,
        status: &RunStatus,
        now: Timestamp,
        attempt_started: impl Fn(TaskId, u32) -> Option<Timestamp>,
    ) -> Engine {
        let mut engine = Engine::new(Arc::clone(&dag), params);
        let phase = status.phase.unwrap_or(RunPhase::Pending);
        if phase == RunPhase::Pending {
            return engine;
        }
        let by_name: HashMap<&str, usize> = status
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        for (id, _) in dag.tasks() {
            let Some(recorded) = by_name
                .get(dag.task(id).name.as_str())
                .map(|&i| &status.tasks[i])
            else {
                continue;
            };
            let state = &mut engine.tasks[id.index()];
            state.phase = recorded.phase;
            state.attempts = recorded.attempts;
            state.started_at = recorded.started_at;
            state.finished_at = recorded.finished_at;
            state.exit_code = recorded.exit_code;
            state.reason = recorded.reason.clone();
            state.message = recorded.message.clone();
            state.outputs = recorded.outputs.clone();
            state.retry_at = recorded.next_attempt_at;
            state.stage = match recorded.phase {
                TaskPhase::Running if recorded.attempts > 0 => Stage::Running,
                TaskPhase::Pending if recorded.attempts > 0 => Stage::Backoff,
                TaskPhase::Pending | TaskPhase::Running => Stage::Blocked,
                _ => Stage::Done,
            };
            match state.phase {
                TaskPhase::Succeeded => engine.tally.succeeded += 1,
                TaskPhase::Failed => engine.tally.failed += 1,
                TaskPhase::Skipped => engine.tally.skipped += 1,
                TaskPhase::Cancelled => engine.tally.cancelled += 1,
                TaskPhase::Pending | TaskPhase::Running => {}
            }
            if state.stage == Stage::Blocked {
                // A Running entry without attempts is not something ork writes; start over.
                state.phase = TaskPhase::Pending;
            }
        }
        engine.phase = phase;
        engine.started_at = status.started_at;
        engine.finished_at = status.finished_at;
        engine.transitioned_at = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Succeeded")
            .and_then(|c| c.last_transition_time)
            .or(status.started_at);
        engine.reason = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Succeeded")
            .and_then(|c| c.reason.as_deref())
            .and_then(final_reason);
        engine.first_failure = (0..dag.len() as u32)
            .map(TaskId)
            .find(|id| engine.tasks[id.index()].phase == TaskPhase::Failed);
        if phase.is_final() {
            return engine;
        }

        for (id, task) in dag.tasks() {
            let state = &engine.tasks[id.index()];
            let (phase, stage, attempt) = (state.phase, state.stage, state.attempts);
            if phase == TaskPhase::Succeeded {
                for &child in dag.children(id) {
                    engine.tasks[child.index()].waiting_on -= 1;
                }
            }
            match stage {
                Stage::Running => {
                    engine.tally.running += 1;
                    if let Some(timeout) = task.timeout {
                        let since = attempt_started(id, attempt).unwrap_or(now);
                        let at = later(since, timeout);
                        engine.push_timer(at, TimerKind::AttemptTimeout, id, attempt);
                    }
                }
                Stage::Backoff => {
                    let due = *engine.tasks[id.index()].retry_at.get_or_insert(now);
                    engine.push_timer(due, TimerKind::RetryDue, id, attempt);
                }
                _ => {}
            }
        }
        if let (Some(deadline), Some(started)) = (dag.active_deadline(), status.started_at) {
            engine.push_timer(
                later(started, deadline),
                TimerKind::RunDeadline,
                TaskId(0),
                0,
            );
        }
        for i in 0..dag.len() {
            let state = &engine.tasks[i];
            if state.stage == Stage::Blocked && state.waiting_on == 0 {
                engine.enqueue(TaskId(i as u32));
            }
        }
        engine
    }
}

/// The engine's reasons are `'static`; map a recorded reason back to one of them.
fn final_reason(reason: &str) -> Option<&'static str> {
    ["Succeeded", "TaskFailed", "DeadlineExceeded", "Cancelled"]
        .into_iter()
        .find(|r| *r == reason)
}
