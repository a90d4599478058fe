//! What the dashboard's page is sent: a run's summary for the list, and a run's whole view (its
//! tasks, its graph, the buttons the user may press). Pure: built from a Run and what the
//! user's RBAC allows, so the shapes are tested without a server.

use jiff::Timestamp;
use serde::Serialize;

use crate::api::{Run, RunPhase, TaskStatus};
use crate::drawing::Layout;

/// One row of the runs list.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub namespace: String,
    pub name: String,
    pub workflow: String,
    pub phase: Option<RunPhase>,
    pub progress: Option<String>,
    pub created_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub suspended: bool,
}

/// The run's own fields on its page.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunHeader {
    #[serde(flatten)]
    pub summary: RunSummary,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub duration: Option<String>,
}

/// Which buttons work: the run's state and the user's rights both allow them.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Actions {
    pub cancel: bool,
    pub suspend: bool,
    pub resume: bool,
    pub rerun: bool,
}

/// What the user may do to the runs of a namespace (from RBAC, or everything for a local run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rights {
    /// `patch` on runs: cancel, suspend, resume.
    pub patch: bool,
    /// `create` on runs: rerun.
    pub create: bool,
    /// Whether the driver can suspend at all (`ork run` cannot).
    pub suspend: bool,
}

/// A run's page.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RunView {
    pub run: RunHeader,
    pub tasks: Vec<TaskStatus>,
    /// Sent with the first view only; live updates leave it out (`null`).
    pub graph: Option<Layout>,
    pub actions: Actions,
}

fn suspended(run: &Run) -> bool {
    run.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Suspended" && c.status == crate::api::ConditionStatus::True)
    })
}

pub fn summary(run: &Run) -> RunSummary {
    let status = run.status.as_ref();
    RunSummary {
        namespace: run.metadata.namespace.clone().unwrap_or_default(),
        name: run.metadata.name.clone().unwrap_or_default(),
        workflow: crate::kubernetes::run_commands::workflow_of(run),
        phase: status.and_then(|s| s.phase),
        progress: status.and_then(|s| s.progress.clone()),
        created_at: run.metadata.creation_timestamp.as_ref().map(|t| t.0),
        finished_at: status.and_then(|s| s.finished_at),
        suspended: suspended(run),
    }
}

/// The buttons of `run` for a user with `rights`.
pub fn actions(run: &Run, rights: Rights) -> Actions {
    let phase = run.status.as_ref().and_then(|s| s.phase);
    let ended = phase.is_some_and(RunPhase::is_final);
    let is_suspended = suspended(run) || run.spec.suspend;
    Actions {
        cancel: rights.patch && !ended && !run.spec.cancel,
        suspend: rights.patch && rights.suspend && !ended && !is_suspended,
        resume: rights.patch && rights.suspend && !ended && is_suspended,
        rerun: rights.create && ended,
    }
}

/// `run`'s page; `graph` is the layout, on the first view only.
pub fn run_view(run: &Run, rights: Rights, graph: Option<Layout>) -> RunView {
    let status = run.status.as_ref();
    RunView {
        run: RunHeader {
            summary: summary(run),
            message: status.and_then(|s| s.message().map(str::to_string)),
            started_at: status.and_then(|s| s.started_at),
            duration: status.and_then(|s| s.duration.clone()),
        },
        tasks: status.map(|s| s.tasks.clone()).unwrap_or_default(),
        graph,
        actions: actions(run, rights),
    }
}

/// Record `task` of `run` and the attempt whose log is asked for (`attempt`, else its latest):
/// 404 when there is no such task or the attempt has not started.
pub fn attempt_of<'a>(
    run: &'a Run,
    task: &str,
    attempt: Option<u32>,
) -> Result<(&'a TaskStatus, u32), super::ApiError> {
    let record = run
        .status
        .as_ref()
        .and_then(|s| s.tasks.iter().find(|t| t.name == task))
        .ok_or_else(|| super::ApiError::new(404, format!("the run has no task \"{task}\"")))?;
    let number = attempt.unwrap_or(record.attempts);
    if number == 0 || number > record.attempts {
        return Err(super::ApiError::new(
            404,
            format!("task \"{task}\" has no attempt {number} yet"),
        ));
    }
    Ok((record, number))
}

/// The layout of `run`'s pinned workflow; `None` before the controller has pinned one (or if
/// it does not compile, which the run's own status then says).
pub fn graph_of(run: &Run) -> Option<Layout> {
    let spec = run
        .status
        .as_ref()
        .and_then(|s| s.workflow.as_ref())
        .and_then(|w| w.spec.as_ref())
        .or(run.spec.workflow.as_ref())?;
    let dag = crate::compile::compile(spec, "spec").ok()?;
    crate::drawing::layout(&dag).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Condition, ConditionStatus, RunStatus};

    fn run(phase: Option<RunPhase>, suspended: bool) -> Run {
        let mut run: Run = serde_json::from_value(serde_json::json!({
            "apiVersion": "ork.dev/v1alpha1", "kind": "Run",
            "metadata": {"name": "r", "namespace": "ns", "labels": {"ork.dev/workflow": "wf"}},
            "spec": {"workflow": {"defaults": {"image": "i"},
                     "tasks": [{"name": "a", "command": ["true"]},
                               {"name": "b", "dependsOn": ["a"], "command": ["true"]}]}},
        }))
        .unwrap();
        let mut status = RunStatus {
            phase,
            ..RunStatus::default()
        };
        if suspended {
            status.conditions.push(Condition {
                type_: "Suspended".into(),
                status: ConditionStatus::True,
                reason: None,
                message: None,
                last_transition_time: None,
                observed_generation: None,
            });
        }
        run.status = Some(status);
        run
    }

    #[test]
    fn buttons_follow_the_runs_state_and_the_users_rights() {
        let all = Rights {
            patch: true,
            create: true,
            suspend: true,
        };
        let running = actions(&run(Some(RunPhase::Running), false), all);
        assert_eq!(
            running,
            Actions {
                cancel: true,
                suspend: true,
                resume: false,
                rerun: false
            }
        );
        let held = actions(&run(Some(RunPhase::Running), true), all);
        assert!(held.resume && !held.suspend);
        let ended = actions(&run(Some(RunPhase::Failed), false), all);
        assert_eq!(
            ended,
            Actions {
                rerun: true,
                ..Actions::default()
            }
        );
        let reader = Rights::default();
        assert_eq!(
            actions(&run(Some(RunPhase::Running), false), reader),
            Actions::default()
        );
        let local = Rights {
            patch: true,
            ..Rights::default()
        };
        let local_running = actions(&run(Some(RunPhase::Running), false), local);
        assert!(local_running.cancel && !local_running.suspend && !local_running.rerun);
    }

    #[test]
    fn a_view_has_the_graph_of_the_runs_definition() {
        let r = run(Some(RunPhase::Running), false);
        let view = run_view(&r, Rights::default(), graph_of(&r));
        assert_eq!(view.run.summary.workflow, "wf");
        let graph = view.graph.unwrap();
        assert_eq!(graph.nodes.len(), 2);
        assert_eq!(
            (graph.edges[0].from.as_str(), graph.edges[0].to.as_str()),
            ("a", "b")
        );
        let json = serde_json::to_value(run_view(&r, Rights::default(), None)).unwrap();
        assert_eq!(json["run"]["name"], "r");
        assert_eq!(json["run"]["phase"], "Running");
        assert!(json["graph"].is_null());
    }
}
