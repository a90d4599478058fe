//! Choosing what `ork run` runs: the one Run in the given documents, or a Run made up for the
//! one Workflow, with parameters from the file and the command line.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::api::{
    PinnedWorkflow, Run, RunPhase, RunSpec, RunStatus, TaskStatus, Workflow, WorkflowRef,
    WorkflowSpec,
};
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
    /// For a rerun: the name of the run it reruns and that run's task records.
    pub reuse: Option<(String, Vec<TaskStatus>)>,
    /// The directory of each workspace the workflow declares.
    pub workspaces: BTreeMap<String, super::WorkspaceDir>,
}

/// Largest `run.json` `ork run --rerun-of` reads.
pub const MAX_RUN_JSON_BYTES: u64 = 256 << 20;

/// Plans a rerun of the finished run kept in `path` (a `run.json`): its definition and params,
/// and its records to reuse.
pub fn plan_rerun(
    path: &Path,
    cli_workspaces: &[(String, std::path::PathBuf)],
) -> Result<RunPlan, Vec<String>> {
    let shown = path.display();
    let fail = |what: String| vec![format!("{shown}: {what}")];
    let file = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_RUN_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_RUN_JSON_BYTES {
        return Err(fail(format!(
            "larger than {} MiB; not a run.json written by ork run",
            MAX_RUN_JSON_BYTES >> 20
        )));
    }
    let old: Run = serde_json::from_slice(&bytes)
        .map_err(|e| fail(format!("not a Run as ork run keeps it in run.json: {e}")))?;
    let old_name = old.metadata.name.clone().unwrap_or_default();
    let Some(status) = old.status else {
        return Err(fail("the run has no status: it never ran".into()));
    };
    if !status.phase.is_some_and(RunPhase::is_final) {
        return Err(fail(
            "the run has not finished; only a finished run can be rerun".into(),
        ));
    }
    let Some(pinned) = status.workflow.filter(|p| p.spec.is_some()) else {
        return Err(fail(
            "the run keeps no workflow definition (status.workflow.spec)".into(),
        ));
    };
    let Some(spec) = pinned.spec.as_ref() else {
        return Err(fail("the run keeps no workflow definition".into()));
    };
    let base = if pinned.name.is_some() {
        "spec"
    } else {
        "spec.workflow"
    };
    let dag = compile(spec, base).map_err(|problems| {
        problems
            .iter()
            .map(|p| format!("{shown}: {p}"))
            .collect::<Vec<_>>()
    })?;
    let params = bind_params(&dag, &pinned.params, "spec.params").map_err(|problems| {
        problems
            .iter()
            .map(|p| format!("{shown}: {p}"))
            .collect::<Vec<_>>()
    })?;
    let workspaces = super::workspaces::bind(&dag, &[], cli_workspaces, &shown.to_string())?;
    let workflow_name = pinned.name.clone();
    let meta = ObjectMeta {
        generate_name: Some(generate_name_for(
            workflow_name.as_deref().unwrap_or(&old_name),
        )),
        namespace: old.metadata.namespace.clone(),
        ..ObjectMeta::default()
    };
    let run_name = name_run(&meta, None);
    let run = Run {
        metadata: ObjectMeta {
            name: Some(run_name.clone()),
            ..meta
        },
        spec: RunSpec {
            rerun_of: Some(WorkflowRef {
                name: old_name.clone(),
            }),
            ..RunSpec::default()
        },
        status: Some(RunStatus {
            workflow: Some(pinned),
            ..RunStatus::default()
        }),
    };
    Ok(RunPlan {
        identity: RunIdentity {
            workflow: workflow_name.unwrap_or_else(|| run_name.clone()),
            run: run_name,
            scheduled_time: None,
        },
        run,
        dag: Arc::new(dag),
        params,
        reuse: Some((old_name, status.tasks)),
        workspaces,
    })
}

/// Picks the run to execute from `documents` and validates it; `Err` lists every problem, one
/// line each, naming the document and the field.
pub fn plan_run(
    documents: &[Document],
    cli_params: &BTreeMap<String, String>,
    cli_workspaces: &[(String, std::path::PathBuf)],
) -> Result<RunPlan, Vec<String>> {
    check_documents(documents)?;
    let runs: Vec<(&Document, &Run)> = documents
        .iter()
        .filter_map(|d| match &d.manifest {
            Manifest::Run(r) => Some((d, r.as_ref())),
            _ => None,
        })
        .collect();
    let workflows: Vec<(&Document, &Workflow)> = documents
        .iter()
        .filter_map(|d| match &d.manifest {
            Manifest::Workflow(w) => Some((d, w.as_ref())),
            _ => None,
        })
        .collect();

    let (run_origin, mut run) = match (runs.as_slice(), workflows.as_slice()) {
        ([(doc, run)], _) => (doc.origin.clone(), (*run).clone()),
        ([], [(_, workflow)]) => ("--param".to_string(), run_for(workflow)),
        ([], [])
            if documents
                .iter()
                .any(|d| matches!(d.manifest, Manifest::Schedule(_))) =>
        {
            return Err(vec![
                "no Workflow or Run to run: a Schedule starts Runs on a cluster (`ork schedule \
                 next FILE` prints its ticks)"
                    .into(),
            ]);
        }
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
    if run.spec.rerun_of.is_some() {
        return Err(vec![format!(
            "{run_origin}: spec.rerunOf: reruns a Run on a cluster; to run a finished local run \
             again use ork run --rerun-of DIR/run.json (DIR is the run's log directory)"
        )]);
    }
    if run.spec.suspend {
        return Err(vec![format!(
            "{run_origin}: spec.suspend: suspending a run is a Kubernetes feature; ork run \
             cannot hold a run back (remove spec.suspend, or apply the Run to a cluster)"
        )]);
    }
    run.spec.params.extend(cli_params.clone());

    let (spec_origin, spec, base, pinned) = resolve_workflow(&run_origin, &run, documents)?;
    // Kept with the run, as the controller pins it: a rerun reads it back from run.json.
    let pinned_spec = spec.clone();
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
    let workspaces =
        super::workspaces::bind(&dag, &run.spec.workspaces, cli_workspaces, &run_origin)?;

    let workflow_name = pinned.name.clone();
    let run_name = name_run(&run.metadata, workflow_name.as_deref());
    // The name becomes a directory: never let one through that Kubernetes would refuse.
    if let Some(problem) = object_name_error("Run", &run_name) {
        return Err(vec![format!("{run_origin}: metadata.name: {problem}")]);
    }
    run.metadata.name = Some(run_name.clone());
    let mut pinned = pinned;
    pinned.spec = Some(pinned_spec);
    pinned.params = run.spec.params.clone();
    run.status = Some(RunStatus {
        workflow: Some(pinned),
        ..RunStatus::default()
    });
    Ok(RunPlan {
        identity: RunIdentity {
            workflow: workflow_name.unwrap_or_else(|| run_name.clone()),
            run: run_name,
            scheduled_time: None,
        },
        run,
        dag: Arc::new(dag),
        params,
        reuse: None,
        workspaces,
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
pub fn check_documents(documents: &[Document]) -> Result<(), Vec<String>> {
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
pub fn generate_name_for(workflow: &str) -> String {
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
