//! `ork submit`: a new Run on the cluster, from a manifest file or a Workflow already there.
//!
//! A file is checked here first, as `ork validate` would, so a typo is said before anything is
//! created. A Workflow in the file travels inline in the Run (as Argo submits a workflow): the
//! user needs no right to create Workflows, and the run is pinned to exactly what was submitted.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};

use super::names::LABEL_WORKFLOW;
use super::run_commands::{CommandError, explain};
use crate::api::{Run, RunSpec, WorkflowRef};
use crate::compile::{bind_params, compile};
use crate::local::{check_documents, generate_name_for};
use crate::manifest::{Document, Manifest, referenced_workflow};
use crate::text::quoted;

/// What to submit.
pub enum Source<'a> {
    /// The documents of a manifest file: one Run, or one Workflow.
    Documents(&'a [Document]),
    /// A Workflow of the namespace, by name.
    Workflow(&'a str),
}

/// The Run to create for `source`, with `params` over its own. Problems are in the user's terms,
/// each naming the document it is about.
pub fn submission(source: Source, params: &BTreeMap<String, String>) -> Result<Run, Vec<String>> {
    let documents = match source {
        Source::Workflow(name) => {
            return Ok(Run {
                metadata: ObjectMeta {
                    generate_name: Some(generate_name_for(name)),
                    ..ObjectMeta::default()
                },
                spec: RunSpec {
                    workflow_ref: Some(WorkflowRef { name: name.into() }),
                    params: params.clone(),
                    ..RunSpec::default()
                },
                status: None,
            });
        }
        Source::Documents(documents) => documents,
    };
    check_documents(documents)?;
    let runs: Vec<(&Document, &Run)> = documents
        .iter()
        .filter_map(|d| match &d.manifest {
            Manifest::Run(run) => Some((d, run.as_ref())),
            _ => None,
        })
        .collect();
    let workflows: Vec<&Document> = documents
        .iter()
        .filter(|d| matches!(d.manifest, Manifest::Workflow(_)))
        .collect();
    let (origin, mut run) = match (runs.as_slice(), workflows.as_slice()) {
        ([(doc, run)], _) => (doc.origin.clone(), (*run).clone()),
        ([], [doc]) => {
            let Manifest::Workflow(workflow) = &doc.manifest else {
                return Err(vec!["no Workflow or Run to submit".into()]);
            };
            let name = workflow.metadata.name.clone().unwrap_or_default();
            let run = Run {
                metadata: ObjectMeta {
                    generate_name: Some(generate_name_for(&name)),
                    namespace: workflow.metadata.namespace.clone(),
                    labels: workflow_label(&name),
                    ..ObjectMeta::default()
                },
                spec: RunSpec {
                    workflow: Some(workflow.spec.clone()),
                    ..RunSpec::default()
                },
                status: None,
            };
            (doc.origin.clone(), run)
        }
        ([], []) => return Err(vec!["no Workflow or Run to submit".into()]),
        ([], several) => {
            return Err(vec![format!(
                "{} workflows given ({}); add a Run naming the one to submit",
                several.len(),
                crate::text::list(several, |d| d.describe())
            )]);
        }
        (several, _) => {
            return Err(vec![format!(
                "{} runs given ({}); ork submit submits one at a time",
                several.len(),
                crate::text::list(several, |(d, _)| d.describe())
            )]);
        }
    };
    if run.spec.rerun_of.is_some() {
        if !params.is_empty() {
            return Err(vec![format!(
                "{origin}: spec.rerunOf: a rerun takes the params of the run it reruns; drop \
                 --param"
            )]);
        }
        return Ok(with_name(run));
    }
    run.spec.params.extend(params.clone());
    // A Workflow of the same file travels inline: the cluster may not have it.
    match referenced_workflow(&run, documents) {
        Ok(Some((_, workflow))) => {
            let name = run.spec.workflow_ref.take().map(|r| r.name);
            run.spec.workflow = Some(workflow.spec.clone());
            if let Some(name) = name {
                if let Some(label) = workflow_label(&name) {
                    run.metadata.labels.get_or_insert_default().extend(label);
                }
                if run.metadata.name.is_none() && run.metadata.generate_name.is_none() {
                    run.metadata.generate_name = Some(generate_name_for(&name));
                }
            }
        }
        Ok(None) => {}
        Err(problem) => return Err(vec![format!("{origin}: {problem}")]),
    }
    if let Some(spec) = &run.spec.workflow {
        let dag = compile(spec, "spec.workflow").map_err(|problems| {
            problems
                .iter()
                .map(|p| format!("{origin}: {p}"))
                .collect::<Vec<_>>()
        })?;
        bind_params(&dag, &run.spec.params, "spec.params").map_err(|problems| {
            problems
                .iter()
                .map(|p| format!("{origin}: {p}"))
                .collect::<Vec<_>>()
        })?;
    }
    Ok(with_name(run))
}

/// The label naming the Workflow an inline run came from; none for a name longer than a label
/// value may be (63 characters): the run is no worse off, `ork list` shows it `(inline)`.
fn workflow_label(name: &str) -> Option<BTreeMap<String, String>> {
    (name.len() <= crate::compile::names::MAX_LABEL_LEN)
        .then(|| BTreeMap::from([(LABEL_WORKFLOW.to_string(), name.to_string())]))
}

/// A Run needs a name or a `generateName`: the workflow's name and a dash, as Argo does.
fn with_name(mut run: Run) -> Run {
    if run.metadata.name.is_none() && run.metadata.generate_name.is_none() {
        let base = run
            .spec
            .workflow_ref
            .as_ref()
            .or(run.spec.rerun_of.as_ref())
            .map_or("run", |r| r.name.as_str())
            .to_string();
        run.metadata.generate_name = Some(generate_name_for(&base));
    }
    run.status = None;
    run
}

/// Creates `run` in its own namespace, else `namespace` (when `chosen`, the user's `-n`, a Run
/// naming another namespace is refused, as kubectl does); returns its name.
pub async fn create(
    client: &Client,
    namespace: &str,
    chosen: bool,
    mut run: Run,
) -> Result<String, CommandError> {
    let namespace = match run.metadata.namespace.clone() {
        Some(own) if !chosen => own,
        _ => namespace.to_string(),
    };
    let namespace = namespace.as_str();
    if let Some(own) = run.metadata.namespace.as_deref()
        && own != namespace
    {
        return Err(CommandError(format!(
            "the Run says namespace {} but -n says namespace {}: drop one",
            quoted(own),
            quoted(namespace)
        )));
    }
    run.metadata.namespace = Some(namespace.to_string());
    let shown = run
        .metadata
        .name
        .clone()
        .or(run.metadata.generate_name.clone())
        .unwrap_or_default();
    let runs: Api<Run> = Api::namespaced(client.clone(), namespace);
    let made = runs
        .create(&PostParams::default(), &run)
        .await
        .map_err(|e| {
            if let kube::Error::Api(status) = &e
                && status.code == 404
            {
                return CommandError(
                    "the cluster has no runs.ork.dev resource: install ork's CRDs (ork crds | \
                 kubectl apply --server-side -f -)"
                        .into(),
                );
            }
            explain(e, "create", &shown, namespace)
        })?;
    Ok(made.metadata.name.unwrap_or(shown))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_documents;

    fn docs(yaml: &str) -> Vec<Document> {
        parse_documents(yaml, "f.yaml").unwrap()
    }

    const DIAMOND: &str = "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {name: diamond}\n\
        spec:\n  params: [{name: who, default: x}]\n  defaults: {image: busybox}\n  tasks:\n  \
        - {name: a, command: [echo, $(params.who)]}\n";

    #[test]
    fn a_workflow_travels_inline_with_the_params() {
        let run = submission(
            Source::Documents(&docs(DIAMOND)),
            &BTreeMap::from([("who".into(), "y".into())]),
        )
        .unwrap();
        assert_eq!(run.metadata.generate_name.as_deref(), Some("diamond-"));
        assert!(run.spec.workflow.is_some() && run.spec.workflow_ref.is_none());
        assert_eq!(run.spec.params["who"], "y");
        assert_eq!(run.metadata.labels.unwrap()[LABEL_WORKFLOW], "diamond");
    }

    #[test]
    fn a_run_naming_a_workflow_of_the_file_takes_it_inline() {
        let yaml = format!(
            "{DIAMOND}---\napiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {{name: r1}}\n\
             spec: {{workflowRef: {{name: diamond}}}}\n"
        );
        let run = submission(Source::Documents(&docs(&yaml)), &BTreeMap::new()).unwrap();
        assert_eq!(run.metadata.name.as_deref(), Some("r1"));
        assert!(run.spec.workflow.is_some() && run.spec.workflow_ref.is_none());
    }

    #[test]
    fn a_run_naming_a_workflow_elsewhere_keeps_the_reference() {
        let yaml = "apiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {generateName: x-}\n\
                    spec: {workflowRef: {name: on-cluster}}\n";
        let run = submission(Source::Documents(&docs(yaml)), &BTreeMap::new()).unwrap();
        assert_eq!(run.spec.workflow_ref.unwrap().name, "on-cluster");
        assert_eq!(run.metadata.generate_name.as_deref(), Some("x-"));
    }

    #[test]
    fn problems_are_said_before_anything_is_created() {
        let unknown = submission(
            Source::Documents(&docs(DIAMOND)),
            &BTreeMap::from([("nope".into(), "1".into())]),
        )
        .unwrap_err();
        assert!(unknown.join("\n").contains("nope"), "{unknown:?}");
        let two = format!("{DIAMOND}---\n{}", DIAMOND.replace("diamond", "other"));
        let several = submission(Source::Documents(&docs(&two)), &BTreeMap::new()).unwrap_err();
        assert!(several[0].contains("2 workflows"), "{several:?}");
        let by_name = submission(Source::Workflow("etl"), &BTreeMap::new()).unwrap();
        assert_eq!(by_name.spec.workflow_ref.unwrap().name, "etl");
        assert_eq!(by_name.metadata.generate_name.as_deref(), Some("etl-"));
        let long = "w".repeat(100);
        let yaml = DIAMOND.replace("diamond", &long);
        let run = submission(Source::Documents(&docs(&yaml)), &BTreeMap::new()).unwrap();
        assert!(
            run.metadata.labels.is_none(),
            "a label value has at most 63 characters"
        );
    }
}
