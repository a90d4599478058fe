//! Reconciling a Workflow: compile it and report whether it is valid.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;

use super::context::Context;
use super::error::Error;
use super::invalid;
use crate::api::{Condition, ConditionStatus, Workflow, WorkflowStatus};
use crate::compile::compile;
use crate::driver::{Clock, SystemClock};
use crate::text;

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
            (
                ConditionStatus::False,
                "Invalid",
                text::cap_message(list.join("; ")),
            )
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

pub async fn reconcile(
    guard: Arc<DeserializeGuard<Workflow>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let workflow = match &guard.0 {
        Ok(workflow) => workflow,
        Err(invalid) => return invalid::report_workflow(invalid, &ctx).await,
    };
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
    // Linear, but a big workflow takes a moment: off the async threads.
    let owned = workflow.clone();
    let status = tokio::task::spawn_blocking(move || workflow_status(&owned, &old))
        .await
        .map_err(|e| Error::Internal(format!("compiling a workflow: {e}")))?;
    if Some(&status) != workflow.status.as_ref() {
        let api: Api<Workflow> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = serde_json::json!({"status": status});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(Action::await_change())
}
