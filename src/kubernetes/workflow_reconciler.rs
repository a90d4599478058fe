//! Reconciling a Workflow: compile it and report whether it is valid.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;

use super::controller::Context;
use super::error::Error;
use crate::api::{Condition, ConditionStatus, Workflow, WorkflowStatus};
use crate::compile::compile;
use crate::driver::{Clock, SystemClock};

/// The `Valid` condition and task count for `workflow`'s current generation.
pub fn workflow_status(workflow: &Workflow, old: &WorkflowStatus) -> WorkflowStatus {
    let (status, reason, message) = match compile(&workflow.spec, "spec") {
        Ok(dag) => (
            ConditionStatus::True,
            "Compiled",
            format!("{} tasks", dag.len()),
        ),
        Err(problems) => {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            (ConditionStatus::False, "Invalid", list.join("; "))
        }
    };
    let previous = old.conditions.iter().find(|c| c.type_ == "Valid");
    let unchanged =
        previous.is_some_and(|c| c.status == status && c.message.as_deref() == Some(&message));
    WorkflowStatus {
        observed_generation: workflow.metadata.generation,
        conditions: vec![Condition {
            type_: "Valid".into(),
            status,
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: match (unchanged, previous) {
                (true, Some(p)) => p.last_transition_time,
                _ => Some(SystemClock.now()),
            },
            observed_generation: workflow.metadata.generation,
        }],
        task_count: Some(workflow.spec.tasks.len() as u32),
    }
}

pub async fn reconcile(workflow: Arc<Workflow>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = workflow.name_any();
    let namespace = workflow.namespace().ok_or_else(|| Error::NoNamespace {
        kind: "Workflow",
        name: name.clone(),
    })?;
    let old = workflow.status.clone().unwrap_or_default();
    // Compiled already for this generation (our own status write triggers a reconcile too).
    if old.observed_generation.is_some()
        && old.observed_generation == workflow.metadata.generation
        && !old.conditions.is_empty()
    {
        return Ok(Action::await_change());
    }
    let status = workflow_status(&workflow, &old);
    if status != old {
        let api: Api<Workflow> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = serde_json::json!({"status": status});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(Action::await_change())
}
