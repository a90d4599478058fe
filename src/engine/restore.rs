//! Rebuilding an engine from a recorded status, so a driver that keeps state outside the
//! process (the Kubernetes controller, after a restart or on any reconcile) can continue a run.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;

use super::state::{
    AttemptOf, Ending, Engine, MAX_RUN_INSTANCES, Stage, TimerKind, instance_name, later,
};
use super::status::{CANCELLED_RUNNING_FINALLY, DEADLINE_RUNNING_FINALLY};
use crate::api::{MAX_FAN_OUT, RunPhase, RunStatus, TaskPhase, TaskStatus};
use crate::compile::{BoundParams, Dag, TaskId};

impl Engine {
    /// The engine of a run whose state was recorded as `status`.
    ///
    /// Tasks the status does not mention are Pending. A Running task's attempt timeout counts
    /// from `attempt_started(attempt)`, when the attempt really started (on Kubernetes,
    /// its Pod's start, from which the kubelet counts the Pod's own deadline, so the two
    /// agree); `None` means it has not started yet, and no timeout runs. A backing-off task
    /// retries at its recorded `nextAttemptAt`.
    pub fn restore(
        dag: Arc<Dag>,
        params: BoundParams,
        status: &RunStatus,
        now: Timestamp,
        attempt_started: impl Fn(AttemptOf) -> Option<Timestamp>,
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
            engine.fill(id, recorded);
            if engine.tasks[id.index()].stage == Stage::Done && !dag.is_finally(id) {
                engine.regular_left -= 1;
            }
        }
        // Fan-out instances, in the order their tasks fanned out (their records' order).
        let mut fanned: Vec<(usize, TaskId, u32)> = dag
            .tasks()
            .filter_map(|(id, task)| {
                let count = status.tasks[*by_name.get(task.name.as_str())?].instances?;
                let first = by_name
                    .get(instance_name(&task.name, 0).as_str())
                    .copied()
                    .unwrap_or(usize::MAX);
                Some((first, id, count))
            })
            .collect();
        fanned.sort_unstable();
        // A record cannot make the engine hold more than a run may: the counts are bounded as
        // a fan-out's are.
        let mut room = MAX_RUN_INSTANCES;
        for (_, group, count) in fanned {
            let count = count.min(MAX_FAN_OUT as u32).min(room as u32);
            room -= count as usize;
            let items = match engine.items(group) {
                Ok(items) if items.len() == count as usize => items,
                // The list cannot be read again as it was: the instances keep their records.
                _ => vec![serde_json::Value::Null; count as usize].into(),
            };
            let inputs = engine.resolve_inputs(group).ok();
            let first = engine.add_instances(group, items, inputs);
            let name = dag.task(group).name.clone();
            for index in 0..count {
                let slot = TaskId(first + index);
                let Some(recorded) = by_name
                    .get(instance_name(&name, index).as_str())
                    .map(|&i| &status.tasks[i])
                else {
                    continue;
                };
                engine.fill(slot, recorded);
                let state = &engine.tasks[slot.index()];
                let (stage, phase) = (state.stage, state.phase);
                if stage == Stage::Blocked {
                    engine.tasks[slot.index()].stage = Stage::Queued;
                }
                if let Some(fan) = engine.fans.get_mut(&group)
                    && stage == Stage::Done
                {
                    fan.left -= 1;
                    match phase {
                        TaskPhase::Failed => fan.failed += 1,
                        TaskPhase::Cancelled => {
                            fan.first_cancelled.get_or_insert(slot);
                        }
                        _ => {}
                    }
                }
            }
            // The first instance that failed, as the engine saw them end.
            let first_failed = (first..first + count)
                .map(TaskId)
                .filter(|slot| engine.tasks[slot.index()].phase == TaskPhase::Failed)
                .min_by_key(|slot| (engine.tasks[slot.index()].finished_at, *slot));
            if let Some(fan) = engine.fans.get_mut(&group) {
                fan.first_failed = first_failed;
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
        engine.suspension = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Suspended")
            .and_then(|c| {
                let on = c.status == crate::api::ConditionStatus::True;
                Some((on, c.last_transition_time?))
            });
        let reason = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Succeeded")
            .and_then(|c| c.reason.as_deref());
        engine.reason = reason.and_then(final_reason);
        engine.ending = match reason {
            Some(CANCELLED_RUNNING_FINALLY | "Cancelled") => Some(Ending::Cancelled),
            Some(DEADLINE_RUNNING_FINALLY | "DeadlineExceeded") => Some(Ending::DeadlineExceeded),
            _ => None,
        };
        // The run's message names the task that failed first.
        let mut failed: Vec<TaskId> = (0..dag.len() as u32)
            .map(TaskId)
            .filter(|id| engine.tasks[id.index()].phase == TaskPhase::Failed)
            .collect();
        failed.sort_by_key(|id| (engine.tasks[id.index()].finished_at, *id));
        engine.first_failure = failed
            .iter()
            .copied()
            .find(|id| !dag.task(*id).continue_on_failure);
        engine.failed = failed;
        if phase.is_final() {
            return engine;
        }

        for i in 0..engine.tasks.len() {
            let id = TaskId(i as u32);
            let state = &engine.tasks[i];
            let (stage, attempt) = (state.stage, state.attempts);
            if stage == Stage::Done && i < dag.len() {
                for &child in dag.children(id) {
                    engine.tasks[child.index()].waiting_on -= 1;
                }
            }
            match stage {
                Stage::Running => {
                    engine.tally.running += 1;
                    engine.running.insert(id);
                    if let Some((group, _)) = engine.instance(id)
                        && let Some(fan) = engine.fans.get_mut(&group)
                    {
                        fan.running += 1;
                    }
                    let of = engine.attempt_of(id, attempt);
                    if let (Some(timeout), Some(since)) =
                        (engine.task_def(id).timeout, attempt_started(of))
                    {
                        let at = later(since, timeout);
                        if at <= now {
                            // Already past its deadline: being stopped, as when the timer fired.
                            engine.mark_stopping(id, attempt, at);
                        } else {
                            engine.set_timeout(id, attempt, Some(at));
                        }
                    }
                }
                Stage::Backoff => {
                    let due = *engine.tasks[i].retry_at.get_or_insert(now);
                    if due <= now {
                        // Due already: it waits for a slot, as after its timer fired.
                        engine.enqueue(id);
                    } else {
                        engine.push_timer(due, TimerKind::RetryDue, id, attempt);
                    }
                }
                Stage::Queued => engine.enqueue(id),
                _ => {}
            }
        }
        if let (Some(deadline), Some(started)) = (dag.active_deadline(), status.started_at)
            && engine.regular_left > 0
            && engine.ending.is_none()
        {
            engine.push_timer(
                later(started, deadline),
                TimerKind::RunDeadline,
                TaskId(0),
                0,
            );
        }
        engine.stopped_regular = (0..engine.tasks.len() as u32).map(TaskId).any(|slot| {
            let t = &engine.tasks[slot.index()];
            !engine.is_finally_slot(slot)
                && (t.phase == TaskPhase::Cancelled
                    || t.reason.as_deref() == Some("DeadlineExceeded"))
        });
        // What the finally tasks are told is fixed by the regular tasks, all final by then.
        engine.restore_finally();
        for i in 0..dag.len() {
            let state = &engine.tasks[i];
            let releasable = i < dag.regular() || engine.regular_left == 0;
            if state.stage == Stage::Blocked && state.waiting_on == 0 && releasable {
                engine.resolve(TaskId(i as u32), now);
            }
        }
        // A fan-out task whose last instance ended before its own record was written ends now.
        let ended: Vec<TaskId> = engine
            .fans
            .iter()
            .filter(|(group, fan)| {
                fan.left == 0 && engine.tasks[group.index()].stage == Stage::FannedOut
            })
            .map(|(group, _)| *group)
            .collect();
        for group in ended {
            engine.end_fan_out(group, now);
        }
        engine.propagate(now);
        engine
    }

    /// Sets a slot's state from its record and counts it.
    fn fill(&mut self, id: TaskId, recorded: &TaskStatus) {
        let state = &mut self.tasks[id.index()];
        state.phase = recorded.phase;
        state.attempts = recorded.attempts;
        state.started_at = recorded.started_at;
        state.finished_at = recorded.finished_at;
        state.exit_code = recorded.exit_code;
        state.reason = recorded.reason.clone();
        state.message = recorded.message.clone();
        state.outputs = recorded.outputs.clone();
        state.retry_at = recorded.next_attempt_at;
        state.infra_retries = recorded.infra_retries;
        state.history = recorded.history.iter().cloned().collect();
        state.reused_from = recorded.reused_from.clone();
        if state.history.is_empty() && recorded.attempts == 1 {
            // A single attempt is not listed: it is the task's own fields.
            let done = recorded.phase.is_final();
            state.history.push_back(crate::api::AttemptRecord {
                attempt: 1,
                exit_code: recorded.exit_code.filter(|_| done),
                reason: recorded.reason.clone().filter(|_| done),
                started_at: recorded.started_at,
                finished_at: recorded.finished_at,
            });
        }
        state.stage = match recorded.phase {
            TaskPhase::Running if recorded.instances.is_some() => Stage::FannedOut,
            TaskPhase::Running if recorded.attempts > 0 => Stage::Running,
            TaskPhase::Pending if recorded.attempts > 0 => Stage::Backoff,
            TaskPhase::Pending | TaskPhase::Running => Stage::Blocked,
            _ => Stage::Done,
        };
        if state.stage == Stage::Blocked {
            // A Running entry without attempts is not something ork writes; start over.
            state.phase = TaskPhase::Pending;
        }
        if state.stage == Stage::FannedOut {
            self.tally.fanned += 1;
        }
        let instance = self.instance(id).is_some();
        let def = self.task_def(id);
        let blocking = !instance && !def.continue_on_failure;
        let regular = !self.dag.is_finally(self.definition(id));
        match recorded.phase {
            TaskPhase::Succeeded => self.tally.succeeded += 1,
            TaskPhase::Failed => {
                self.tally.failed += 1;
                if blocking {
                    self.blocking_failures += 1;
                    if regular {
                        self.regular_blocking_failures += 1;
                    }
                }
            }
            TaskPhase::Skipped => self.tally.skipped += 1,
            TaskPhase::Cancelled => self.tally.cancelled += 1,
            TaskPhase::Pending | TaskPhase::Running => {}
        }
    }
}

/// The engine's reasons are `'static`; map a recorded reason back to one of them.
fn final_reason(reason: &str) -> Option<&'static str> {
    ["Succeeded", "TaskFailed", "DeadlineExceeded", "Cancelled"]
        .into_iter()
        .find(|r| *r == reason)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use jiff::{SignedDuration, Timestamp};
    use proptest::prelude::*;
    use serde_json::json;

    use crate::compile::{TaskId, bind_params, compile};
    use crate::engine::{Action, Engine, KillReason, Outcome};

    /// A random DAG: task i may depend on any task before it, with a random trigger, maybe
    /// `continueOnFailure` and maybe a `when` on a param or a dependency's output; two finally
    /// tasks read the first task's output.
    fn spec(
        deps: &[Vec<bool>],
        retries: &[u32],
        timeouts: &[bool],
        flavour: &[u8],
    ) -> serde_json::Value {
        let tasks: Vec<_> = deps
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let depends: Vec<String> = (0..i)
                    .filter(|&j| row[j])
                    .map(|j| format!("t{j}"))
                    .collect();
                let mut t = json!({"name": format!("t{i}"), "image": "i", "command": ["c"],
                    "dependsOn": depends,
                    "retries": {"limit": retries[i], "backoff": {"initialSeconds": 1}}});
                if timeouts[i] {
                    t["timeoutSeconds"] = json!(5);
                }
                let f = flavour[i];
                t["trigger"] = json!(["AllSucceeded", "AllDone", "AnyFailed"][usize::from(f % 3)]);
                t["continueOnFailure"] = json!(f & 4 != 0);
                if f & 8 != 0 {
                    t["when"] = match depends.first() {
                        Some(dep) => {
                            json!([{"task": dep, "output": "k", "operator": "In", "values": ["1"]}])
                        }
                        None => json!([{"param": "p", "operator": "NotIn", "values": ["x"]}]),
                    };
                }
                t
            })
            .collect();
        json!({"tasks": tasks, "activeDeadlineSeconds": 500,
        "params": [{"name": "p", "default": "y"}],
        "finally": [
            {"name": "f0", "image": "i", "command": ["c"], "retries": {"limit": 1},
             "inputs": [{"name": "K", "fromTask": "t0", "output": "k"}]},
            {"name": "f1", "image": "i", "command": ["c"], "dependsOn": ["f0"],
             "trigger": "AllDone"},
        ]})
    }

    proptest! {
        /// A driver that keeps state outside the process rebuilds the engine from the recorded
        /// status at any moment: the rebuilt engine records the same status and, fed the same
        /// events, does exactly what the original does.
        #[test]
        fn restore_at_any_point_continues_identically(
            n in 1usize..7,
            edges in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 7), 7),
            retries in proptest::collection::vec(0u32..3, 7),
            timeouts in proptest::collection::vec(any::<bool>(), 7),
            flavour in proptest::collection::vec(0u8..16, 7),
            choices in proptest::collection::vec(0u8..7, 60),
        ) {
            let spec: crate::api::WorkflowSpec = serde_json::from_value(
                spec(&edges[..n], &retries[..n], &timeouts[..n], &flavour[..n]),
            )
            .unwrap();
            let dag = Arc::new(compile(&spec, "spec").unwrap());
            let params = bind_params(&dag, &BTreeMap::new(), "spec.params").unwrap();
            let mut now = Timestamp::from_second(1_800_000_000).unwrap();
            let mut engine = Engine::new(Arc::clone(&dag), params.clone());
            engine.start(now);
            // When each running attempt started: a Kubernetes driver reads it off the Job.
            let mut started: BTreeMap<(TaskId, u32), Timestamp> = BTreeMap::new();
            let mut running: Vec<(TaskId, u32)> = Vec::new();
            fn record(
                actions: Vec<Action>,
                now: Timestamp,
                started: &mut BTreeMap<(TaskId, u32), Timestamp>,
                running: &mut Vec<(TaskId, u32)>,
            ) {
                for action in actions {
                    match action {
                        Action::Start(l) => {
                            started.insert((l.task, l.attempt), now);
                            running.push((l.task, l.attempt));
                        }
                        // A timed-out attempt runs until its end is reported.
                        Action::Kill { reason: KillReason::Timeout, .. } => {}
                        Action::Kill { task, attempt, .. } => running.retain(|r| *r != (task, attempt)),
                    }
                }
            }
            record(engine.take_actions(), now, &mut started, &mut running);
            for choice in choices {
                if engine.is_finished() {
                    break;
                }
                let status = engine.run_status();
                let starts = started.clone();
                let mut copy = Engine::restore(Arc::clone(&dag), params.clone(), &status, now,
                    |a| starts.get(&(a.slot, a.attempt)).copied());
                prop_assert_eq!(copy.run_status(), status.clone());
                prop_assert_eq!(copy.next_wakeup(), engine.next_wakeup());

                now += SignedDuration::from_millis(700);
                let pick = running.get(choice as usize % running.len().max(1)).copied();
                match (choice, pick) {
                    (6, _) => {
                        engine.cancel(now);
                        copy.cancel(now);
                    }
                    (0..=3, Some((task, attempt))) => {
                        let outcome = match choice {
                            0 | 1 => Outcome::Exited { code: 0, output: br#"{"k": 1}"#.to_vec() },
                            2 => Outcome::Exited { code: 1, output: vec![] },
                            _ => Outcome::Failed { reason: "JobLost".into(), message: "gone".into() },
                        };
                        running.retain(|r| *r != (task, attempt));
                        engine.finish_attempt(task, attempt, outcome.clone(), now);
                        copy.finish_attempt(task, attempt, outcome, now);
                    }
                    _ => {
                        if let Some(at) = engine.next_wakeup() {
                            now = now.max(at);
                        }
                    }
                }
                engine.tick(now);
                copy.tick(now);
                let (a, b) = (engine.take_actions(), copy.take_actions());
                prop_assert_eq!(&a, &b);
                record(a, now, &mut started, &mut running);
                prop_assert_eq!(copy.run_status(), engine.run_status());
            }
        }
    }
}
