//! A Run's definition: the pinned copy once there is one, else the Workflow (or the inline
//! spec) as it is now, validated and compiled. Compiling is the one step whose cost grows with
//! the workflow, so it runs off the async threads (which renew the leader lease and answer the
//! probes) and its result is kept per run.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;
use kube::core::DeserializeGuard;

use super::context::Context;
use super::error::Error;
use crate::api::{PinnedWorkflow, Run, RunPhase, TaskStatus, Workflow};
use crate::compile::names::object_name_error;
use crate::compile::{BoundParams, Dag, bind_params, compile};
use crate::text;

/// A validated, pinned definition.
#[derive(Debug)]
pub struct Definition {
    pub dag: Arc<Dag>,
    pub params: BoundParams,
    pub pinned: PinnedWorkflow,
    /// For a rerun that has not started: what the run it reruns achieved.
    pub reuse: Option<Reuse>,
}

/// The records of the finished run a rerun reuses.
#[derive(Debug)]
pub struct Reuse {
    /// Name of that run.
    pub from: String,
    pub tasks: Vec<TaskStatus>,
}

/// What a run can be given to run.
#[derive(Debug)]
pub enum Resolution {
    Ready(Arc<Definition>),
    /// The run can never start: `(reason, message)`.
    Rejected(&'static str, String),
    /// Something the run needs does not exist yet: `(reason, message)`.
    Waiting(&'static str, String),
}

/// The definition `run` executes, from the pinned copy in its status when there is one.
pub async fn resolve(run: &Run, ctx: &Context) -> Result<Resolution, Error> {
    let name = run.name_any();
    if let Some(problem) = object_name_error("Run", &name) {
        return Ok(Resolution::Rejected(
            "InvalidSpec",
            format!("metadata.name: {problem}"),
        ));
    }
    let uid = run.uid().unwrap_or_default();
    let status = run.status.as_ref();
    let recorded = status
        .and_then(|s| s.workflow.as_ref())
        .filter(|p| p.spec.is_some());
    if recorded.is_some()
        && let Some(definition) = ctx.compiled(&uid)
    {
        return Ok(Resolution::Ready(definition));
    }
    if recorded.is_none()
        && let Some(source) = &run.spec.rerun_of
    {
        return rerun_source(run, &source.name, ctx).await;
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
            let namespace = run.namespace().unwrap_or_default();
            tracing::debug!(run = %name, workflow = %reference.name, "reading the workflow");
            // Read behind a guard: a Workflow ork cannot read rejects this run, it does not
            // fail every reconcile of it.
            let workflows: Api<DeserializeGuard<Workflow>> =
                Api::namespaced(ctx.client.clone(), &namespace);
            match workflows
                .get_opt(&reference.name)
                .await?
                .map(|guard| guard.0.ok())
            {
                Some(None) => {
                    return Ok(Resolution::Rejected(
                        "InvalidSpec",
                        format!(
                            "Workflow {} cannot be read; its Valid condition says why",
                            text::quoted(&reference.name)
                        ),
                    ));
                }
                Some(Some(workflow)) => (
                    PinnedWorkflow {
                        name: Some(reference.name.clone()),
                        generation: workflow.metadata.generation,
                        spec: Some(workflow.spec),
                        params: run.spec.params.clone(),
                    },
                    "spec",
                ),
                None => {
                    return Ok(Resolution::Waiting(
                        "WorkflowNotFound",
                        format!(
                            "Workflow {} does not exist in namespace {namespace}; the run starts \
                             when it is created",
                            text::quoted(&reference.name)
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
            return Ok(Resolution::Rejected(
                "InvalidSpec",
                "spec: exactly one of workflowRef or workflow must be set".into(),
            ));
        }
    };
    let is_recorded = recorded.is_some();
    // Compiling is linear but can take a noticeable time for a big workflow: off the async
    // threads. Only a definition already recorded is kept: a first pin whose status write loses
    // a race may be read again from a newer Workflow.
    let compiled = tokio::task::spawn_blocking(move || compile_pinned(pinned, base))
        .await
        .map_err(|e| Error::Internal(format!("compiling a workflow: {e}")))?;
    match compiled {
        Ok(definition) => {
            let definition = Arc::new(definition);
            if is_recorded {
                ctx.remember(&uid, Arc::clone(&definition));
            }
            Ok(Resolution::Ready(definition))
        }
        Err(message) => Ok(Resolution::Rejected("InvalidSpec", message)),
    }
}

/// Validates and compiles a pinned definition with its parameters; `Err` is the message naming
/// every problem.
fn compile_pinned(pinned: PinnedWorkflow, base: &str) -> Result<Definition, String> {
    let Some(spec) = pinned.spec.as_ref() else {
        return Err("no workflow definition".into());
    };
    let origin = match &pinned.name {
        Some(workflow) => format!("Workflow {}: ", text::quoted(workflow)),
        None => String::new(),
    };
    let dag = compile(spec, base).map_err(|problems| {
        let list: Vec<String> = problems.iter().map(|p| format!("{origin}{p}")).collect();
        text::cap_message(list.join("; "))
    })?;
    // The parameters are pinned with the definition: editing spec.params later changes nothing.
    let params = bind_params(&dag, &pinned.params, "spec.params").map_err(|problems| {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        text::cap_message(list.join("; "))
    })?;
    Ok(Definition {
        dag: Arc::new(dag),
        params,
        pinned,
        reuse: None,
    })
}

/// The definition of a rerun: the pinned definition and params of the finished run it names,
/// with that run's records to reuse. The run it names is only read.
async fn rerun_source(run: &Run, source: &str, ctx: &Context) -> Result<Resolution, Error> {
    if run.spec.workflow_ref.is_some() || run.spec.workflow.is_some() || !run.spec.params.is_empty()
    {
        return Ok(Resolution::Rejected(
            "InvalidSpec",
            "spec.rerunOf: a rerun takes its definition and params from the run it reruns; \
             remove workflowRef, workflow and params"
                .into(),
        ));
    }
    let shown = text::quoted(source);
    if source == run.name_any() {
        return Ok(Resolution::Rejected(
            "InvalidSpec",
            "spec.rerunOf: a run cannot rerun itself".into(),
        ));
    }
    let namespace = run.namespace().unwrap_or_default();
    let runs: Api<DeserializeGuard<Run>> = Api::namespaced(ctx.client.clone(), &namespace);
    let old = match runs.get_opt(source).await?.map(|guard| guard.0.ok()) {
        None => {
            return Ok(Resolution::Rejected(
                "RerunSourceNotFound",
                format!("spec.rerunOf: Run {shown} does not exist in namespace {namespace}"),
            ));
        }
        Some(None) => {
            return Ok(Resolution::Rejected(
                "InvalidSpec",
                format!("spec.rerunOf: Run {shown} cannot be read"),
            ));
        }
        Some(Some(old)) => old,
    };
    let status = old.status.as_ref();
    if !status.and_then(|s| s.phase).is_some_and(RunPhase::is_final) {
        return Ok(Resolution::Waiting(
            "RerunSourceRunning",
            format!("Run {shown} has not finished; the rerun starts when it has"),
        ));
    }
    // A large run keeps its records and pinned tasks in RunShards.
    let old = if status.is_some_and(|s| s.records.is_some()) {
        super::get::full_run(&ctx.client, &namespace, source).await?
    } else {
        old
    };
    let Some(status) = old.status else {
        return Ok(Resolution::Rejected(
            "InvalidSpec",
            format!("spec.rerunOf: Run {shown} has no status"),
        ));
    };
    let Some(pinned) = status.workflow.filter(|p| p.spec.is_some()) else {
        return Ok(Resolution::Rejected(
            "InvalidSpec",
            format!("spec.rerunOf: Run {shown} never started: it has no definition to rerun"),
        ));
    };
    let base = if pinned.name.is_some() {
        "spec"
    } else {
        "spec.workflow"
    };
    let from = source.to_string();
    let tasks = status.tasks;
    let compiled = tokio::task::spawn_blocking(move || compile_pinned(pinned, base))
        .await
        .map_err(|e| Error::Internal(format!("compiling a workflow: {e}")))?;
    Ok(match compiled {
        Ok(mut definition) => {
            definition.reuse = Some(Reuse { from, tasks });
            Resolution::Ready(Arc::new(definition))
        }
        Err(message) => Resolution::Rejected("InvalidSpec", message),
    })
}
