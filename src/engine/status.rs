//! The engine's state as API status: what drivers persist and users read.

use jiff::Timestamp;

use super::state::{Ending, Engine};

/// Reason of the `Succeeded` condition (Unknown) while the finally tasks run after a cancel.
pub const CANCELLED_RUNNING_FINALLY: &str = "CancelledRunningFinally";
/// Reason of the `Succeeded` condition (Unknown) while the finally tasks run after the run
/// deadline.
pub const DEADLINE_RUNNING_FINALLY: &str = "DeadlineExceededRunningFinally";
use crate::api::{Condition, ConditionStatus, RunPhase, RunStatus, TaskCounts, TaskStatus};
use crate::compile::TaskId;

impl Engine {
    /// Status of one task. O(1) apart from copying its outputs.
    pub fn task_status(&self, id: TaskId) -> TaskStatus {
        let state = &self.tasks[id.index()];
        TaskStatus {
            name: self.slot_name(id),
            phase: state.phase,
            attempts: state.attempts,
            started_at: state.started_at,
            finished_at: state.finished_at,
            exit_code: state.exit_code,
            reason: state.reason.clone(),
            message: state.message.clone(),
            outputs: state.outputs.clone(),
            next_attempt_at: state.retry_at,
            job: None,
            pod_started_at: None,
            finally: self.is_finally_slot(id),
            infra_retries: state.infra_retries,
            // A single attempt says it all in the task's own fields; a task backing off keeps
            // its history so a restored engine knows when the attempt ended.
            history: if state.history.len() > 1 || state.retry_at.is_some() {
                state.history.iter().cloned().collect()
            } else {
                Vec::new()
            },
            reused_from: state.reused_from.clone(),
            instances: self.fans.get(&id).map(|fan| fan.items.len() as u32),
        }
    }

    /// The run-level part of the status (phase, times, condition), without the task list.
    pub fn run_status_head(&self) -> RunStatus {
        RunStatus {
            phase: Some(self.phase),
            started_at: self.started_at,
            finished_at: self.finished_at,
            conditions: [Some(self.succeeded_condition()), self.suspended_condition()]
                .into_iter()
                .flatten()
                .collect(),
            progress: Some(format!("{}/{}", self.tally.succeeded, self.tasks.len())),
            task_counts: Some(self.task_counts()),
            duration: match (self.started_at, self.finished_at) {
                (Some(start), Some(end)) => Some(human_duration(end.duration_since(start))),
                _ => None,
            },
            ..RunStatus::default()
        }
    }

    /// Tasks by phase. O(1).
    pub fn task_counts(&self) -> TaskCounts {
        let t = &self.tally;
        let finished = t.succeeded + t.failed + t.skipped + t.cancelled;
        // A fan-out task whose instances go on is running, though no attempt of its own is.
        let running = t.running + t.fanned;
        TaskCounts {
            pending: (self.tasks.len() as u32).saturating_sub(finished + running),
            running,
            succeeded: t.succeeded,
            failed: t.failed,
            skipped: t.skipped,
            cancelled: t.cancelled,
        }
    }

    /// The whole status, every task included. O(tasks): for snapshots, not for every event.
    pub fn run_status(&self) -> RunStatus {
        RunStatus {
            tasks: (0..self.tasks.len())
                .map(|i| self.task_status(TaskId(i as u32)))
                .collect(),
            ..self.run_status_head()
        }
    }

    /// The `Succeeded` condition: Unknown until the run ends, then True or False.
    pub fn succeeded_condition(&self) -> Condition {
        let (status, reason) = match self.phase {
            RunPhase::Pending => (ConditionStatus::Unknown, "Pending"),
            RunPhase::Running => (
                ConditionStatus::Unknown,
                match self.ending {
                    None => "Running",
                    Some(Ending::Cancelled) => CANCELLED_RUNNING_FINALLY,
                    Some(Ending::DeadlineExceeded) => DEADLINE_RUNNING_FINALLY,
                },
            ),
            RunPhase::Succeeded => (ConditionStatus::True, "Succeeded"),
            RunPhase::Failed | RunPhase::Cancelled => {
                (ConditionStatus::False, self.reason.unwrap_or("Failed"))
            }
        };
        Condition {
            type_: "Succeeded".into(),
            status,
            reason: Some(reason.into()),
            message: Some(self.summary()),
            last_transition_time: self.transitioned_at,
            observed_generation: None,
        }
    }

    /// The `Suspended` condition, once the run has been suspended: True while it is, False
    /// (reason `Resumed`) after.
    pub fn suspended_condition(&self) -> Option<Condition> {
        let (on, since) = self.suspension?;
        let (status, reason, message) = if on {
            (
                ConditionStatus::True,
                "Suspended",
                "spec.suspend is true: no new attempt starts; running ones go on",
            )
        } else {
            (
                ConditionStatus::False,
                "Resumed",
                "spec.suspend was set back to false",
            )
        };
        Some(Condition {
            type_: "Suspended".into(),
            status,
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: Some(since),
            observed_generation: None,
        })
    }

    /// One line on where the run stands, e.g. `task "load" failed: ...; 3 of 5 tasks succeeded`.
    pub fn summary(&self) -> String {
        let t = &self.tally;
        let total = self.tasks.len();
        let mut parts = vec![format!("{} of {total} tasks succeeded", t.succeeded)];
        for (count, what) in [
            (t.running, "running"),
            (t.failed, "failed"),
            (t.skipped, "skipped"),
            (t.cancelled, "cancelled"),
        ] {
            if count > 0 {
                parts.push(format!("{count} {what}"));
            }
        }
        let counts = parts.join(", ");
        match (self.phase, self.reason, self.first_failure) {
            (RunPhase::Pending, _, _) => format!("waiting to start; {total} tasks"),
            (_, Some("DeadlineExceeded"), _) => {
                format!("the run's deadline was exceeded; {counts}")
            }
            (RunPhase::Cancelled, _, _) => format!("the run was cancelled; {counts}"),
            (RunPhase::Running, _, _) if self.ending == Some(Ending::Cancelled) => {
                format!("the run was cancelled; running its finally tasks; {counts}")
            }
            (RunPhase::Running, _, _) if self.ending == Some(Ending::DeadlineExceeded) => {
                format!("the run's deadline was exceeded; running its finally tasks; {counts}")
            }
            (RunPhase::Running, _, _) if self.is_suspended() => {
                format!("suspended: no new attempt starts; {counts}")
            }
            (RunPhase::Failed, _, Some(task)) => {
                let state = &self.tasks[task.index()];
                format!(
                    "task {:?} failed: {}; {counts}",
                    self.dag.task(task).name,
                    state.message.as_deref().unwrap_or("no detail")
                )
            }
            _ => counts,
        }
    }

    /// When the run started, if it has.
    pub fn started_at(&self) -> Option<Timestamp> {
        self.started_at
    }
}

/// `850ms`, `9s`, `2m3s`, `1h2m`: short, for a printer column.
pub fn human_duration(d: jiff::SignedDuration) -> String {
    let ms = d.as_millis().max(0);
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}
