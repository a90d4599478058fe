//! Choosing what `ork run` runs: the one Run in the given documents, or a Run made up for the
//! one Workflow, with parameters from the file and the command line.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::{PinnedWorkflow, Run, RunSpec, RunStatus, Workflow, WorkflowRef, WorkflowSpec};
use crate::compile::names::{MAX_LABEL_LEN, object_name_error};
use crate::compile::{BoundParams, Dag, bind_params, compile};
use crate::manifest::{
    Document, Manifest, duplicate_workflows, name_problems, referenced_workflow,
};
use crate::task_env::RunIdentity;
use crate::text::quoted;

/// Everything needed to start a run.
#[derive(Debug)]
pub struct RunPlan {
    /// The Run object, named, with the merged parameters and the pinned workflow in its status.
    pub run: Run,
    pub dag: Arc<Dag>,
    pub params: BoundParams,
    pub identity: RunIdentity,
}

/// Picks the run to execute from `documents` and validates it; `Err` lists every problem, one
/// line each, naming the document and the field.
pub fn plan_run(
    documents: &[Document],
    cli_params: &BTreeMap<String, String>,
) -> Result<RunPlan, Vec<String>> {
    check_documents(documents)?;
    let runs: Vec<(&Document, &Run)> = documents
        .iter()
        .filter_map(|d| match &d.manifest {
            Manifest::Run(r) => Some((d, r.as_ref())),
            Manifest::Workflow(_) => None,
        })
        .collect();
    let workflows: Vec<(&Document, &Workflow)> = documents
        .iter()
        .filter_map(|d| match &d.manifest {
            Manifest::Workflow(w) => Some((d, w.as_ref())),
            Manifest::Run(_) => None,
        })
        .collect();

    let (run_origin, mut run) = match (runs.as_slice(), workflows.as_slice()) {
        ([(doc, run)], _) => (doc.origin.clone(), (*run).clone()),
        ([], [(_, workflow)]) => ("--param".to_string(), run_for(workflow)),
        ([], []) => return Err(vec!["no Workflow or Run to run".into()]),
        ([], several) => {
            return Err(vec![format!(
                "{} workflows given ({}); add a Run naming the one to run",
                several.len(),
                crate::text::list(several, |(d, _)| d.describe())
            )]);
        }
        (several, _) => {
            return Err(vec![format!(
                "{} runs given ({}); ork run runs one at a time",
                several.len(),
                crate::text::list(several, |(d, _)| d.describe())
            )]);
        }
    };
    if run.spec.suspend {
        return Err(vec![format!(
            "{run_origin}: spec.suspend: suspending a run is a Kubernetes feature; ork run \
             cannot hold a run back (remove spec.suspend, or apply the Run to a cluster)"
        )]);
    }
    run.spec.params.extend(cli_params.clone());

    let (spec_origin, spec, base, pinned) = resolve_workflow(&run_origin, &run, documents)?;
    let dag = compile(spec, base).map_err(|problems| {
        problems
            .iter()
            .map(|p| format!("{spec_origin}: {p}"))
            .collect::<Vec<_>>()
    })?;
    // The local runner has no Secrets or ConfigMaps to read `valueFrom` from: say so up front.
    let origin = spec_origin.as_str();
    let unsupported: Vec<String> = dag
        .tasks()
        .flat_map(|(_, task)| {
            task.env
                .iter()
                .filter(|e| e.value_from.is_some())
                .map(move |e| {
                    format!(
                        "{origin}: task {}: env {} uses valueFrom, which only the \
                         Kubernetes controller can resolve",
                        quoted(&task.name),
                        quoted(&e.name)
                    )
                })
        })
        .collect();
    if !unsupported.is_empty() {
        return Err(unsupported);
    }
    let params = bind_params(&dag, &run.spec.params, "spec.params").map_err(|problems| {
        problems
            .iter()
            .map(|p| format!("{run_origin}: {p}"))
            .collect::<Vec<_>>()
    })?;

    let workflow_name = pinned.name.clone();
    let run_name = name_run(&run.metadata, workflow_name.as_deref());
    // The name becomes a directory: never let one through that Kubernetes would refuse.
    if let Some(problem) = object_name_error("Run", &run_name) {
        return Err(vec![format!("{run_origin}: metadata.name: {problem}")]);
    }
    run.metadata.name = Some(run_name.clone());
    run.status = Some(RunStatus {
        workflow: Some(pinned),
        ..RunStatus::default()
    });
    Ok(RunPlan {
        identity: RunIdentity {
            workflow: workflow_name.unwrap_or_else(|| run_name.clone()),
            run: run_name,
        },
        run,
        dag: Arc::new(dag),
        params,
    })
}

/// A Run of `workflow` with no parameters of its own.
fn run_for(workflow: &Workflow) -> Run {
    let name = workflow
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "run".into());
    Run {
        metadata: ObjectMeta {
            generate_name: Some(generate_name_for(&name)),
            namespace: workflow.metadata.namespace.clone(),
            ..ObjectMeta::default()
        },
        spec: RunSpec {
            workflow_ref: Some(WorkflowRef { name }),
            workflow: None,
            params: BTreeMap::new(),
            ..RunSpec::default()
        },
        status: None,
    }
}

/// Names and cross-document rules of every document given (see [`crate::manifest`]'s checks):
/// a bad name anywhere in the file is refused, as `ork validate` and `kubectl apply` would.
fn check_documents(documents: &[Document]) -> Result<(), Vec<String>> {
    let mut errors: Vec<String> = documents
        .iter()
        .flat_map(|doc| {
            name_problems(doc, true)
                .into_iter()
                .map(move |p| format!("{}: {p}", doc.origin))
        })
        .collect();
    errors.extend(
        duplicate_workflows(documents)
            .into_iter()
            .map(|(i, p)| format!("{}: {p}", documents[i].origin)),
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The spec a run executes: `(origin, spec, field prefix, pinned)`.
fn resolve_workflow<'a>(
    run_origin: &str,
    run: &'a Run,
    documents: &'a [Document],
) -> Result<(String, &'a WorkflowSpec, &'static str, PinnedWorkflow), Vec<String>> {
    match (&run.spec.workflow_ref, &run.spec.workflow) {
        (Some(reference), None) => match referenced_workflow(run, documents) {
            Ok(Some((doc, workflow))) => Ok((
                doc.origin.clone(),
                &workflow.spec,
                "spec",
                PinnedWorkflow {
                    name: Some(reference.name.clone()),
                    generation: workflow.metadata.generation,
                    spec: None,
                    params: BTreeMap::new(),
                },
            )),
            Ok(None) => Err(vec![format!(
                "{run_origin}: spec.workflowRef.name: no Workflow named {} among the given \
                 documents",
                quoted(&reference.name)
            )]),
            Err(problem) => Err(vec![format!("{run_origin}: {problem}")]),
        },
        (None, Some(inline)) => Ok((
            run_origin.to_string(),
            inline,
            "spec.workflow",
            PinnedWorkflow::default(),
        )),
        _ => Err(vec![format!(
            "{run_origin}: spec: exactly one of workflowRef or workflow must be set"
        )]),
    }
}

/// `WORKFLOW-`, the name cut so that the dash and the five characters added still fit a Run
/// name, and so that no part of the name ends with '.' or '-'.
fn generate_name_for(workflow: &str) -> String {
    let mut name: String = workflow.chars().take(MAX_LABEL_LEN - 6).collect();
    while name.ends_with(['.', '-']) {
        name.pop();
    }
    format!("{name}-")
}

/// `metadata.name`, or `generateName` (else the workflow's name and a dash) plus five random
/// characters, as the API server does.
fn name_run(meta: &ObjectMeta, workflow: Option<&str>) -> String {
    if let Some(name) = &meta.name {
        return name.clone();
    }
    let prefix = meta
        .generate_name
        .clone()
        .unwrap_or_else(|| generate_name_for(workflow.unwrap_or("run")));
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bits = RandomState::new().hash_one(std::time::SystemTime::now());
    let suffix: String = (0..5)
        .map(|_| {
            let c = ALPHABET[(bits % ALPHABET.len() as u64) as usize] as char;
            bits /= ALPHABET.len() as u64;
            c
        })
        .collect();
    format!("{prefix}{suffix}")
}
