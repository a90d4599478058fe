//! Checks across documents that the API server would make when they are applied together:
//! object names, one Workflow per name and namespace, and a Run referencing a Workflow of its
//! own namespace. `ork validate` and `ork run` share them.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{Document, Manifest};
use crate::api::{Run, Workflow};
use crate::compile::names::{generate_name_error, object_name_error};
use crate::problem::Problem;
use crate::text::quoted;

/// What is wrong with the document's `metadata.name` and `metadata.generateName`. A Workflow
/// needs a name; a Run a name or a `generateName` unless `run_may_be_unnamed` (`ork run` names
/// it after its workflow).
pub fn name_problems(document: &Document, run_may_be_unnamed: bool) -> Vec<Problem> {
    let (kind, meta) = kind_and_meta(document);
    let mut problems = Vec::new();
    if let Some(name) = &meta.name
        && let Some(message) = object_name_error(kind, name)
    {
        problems.push(Problem::new("metadata.name", message));
    }
    if let Some(prefix) = &meta.generate_name
        && let Some(message) = generate_name_error(kind, prefix)
    {
        problems.push(Problem::new("metadata.generateName", message));
    }
    let unnamed = meta.name.is_none() && meta.generate_name.is_none();
    match kind {
        "Workflow" if meta.name.is_none() => {
            problems.push(Problem::new("metadata.name", "a Workflow needs a name"));
        }
        "Schedule" if meta.name.is_none() => {
            problems.push(Problem::new("metadata.name", "a Schedule needs a name"));
        }
        "Run" if unnamed && !run_may_be_unnamed => problems.push(Problem::new(
            "metadata",
            "a Run needs a name or a generateName",
        )),
        _ => {}
    }
    problems
}

fn kind_and_meta(document: &Document) -> (&'static str, &ObjectMeta) {
    match &document.manifest {
        Manifest::Workflow(w) => ("Workflow", &w.metadata),
        Manifest::Run(r) => ("Run", &r.metadata),
        Manifest::Schedule(s) => ("Schedule", &s.metadata),
    }
}

/// Workflows given more than once (same name and namespace): for each document index, the
/// problem naming every place. Without the check the first would silently win.
pub fn duplicate_workflows(documents: &[Document]) -> Vec<(usize, Problem)> {
    let mut places: HashMap<(Option<&str>, &str), Vec<usize>> = HashMap::new();
    for (i, document) in documents.iter().enumerate() {
        if let Manifest::Workflow(w) = &document.manifest
            && let Some(name) = w.metadata.name.as_deref()
        {
            let namespace = w.metadata.namespace.as_deref();
            places.entry((namespace, name)).or_default().push(i);
        }
    }
    let mut problems: Vec<(usize, Problem)> = places
        .into_iter()
        .filter(|(_, at)| at.len() > 1)
        .flat_map(|((_, name), at)| {
            let origins = crate::text::list(at.iter(), |&i| documents[i].origin.clone());
            let message = format!(
                "Workflow {} is defined {} times (in {origins}); each Workflow needs its own name",
                quoted(name),
                at.len()
            );
            at.into_iter()
                .map(move |i| (i, Problem::new("metadata.name", message.clone())))
        })
        .collect();
    problems.sort_by_key(|(i, _)| *i);
    problems
}

/// The Workflow a Run's `workflowRef` names among `documents`: `Ok(None)` when none has that
/// name, `Err` when the only ones are in another namespace (a Run may only reference a Workflow
/// in its own namespace). A document without a namespace is in whatever namespace it is
/// applied to, so it matches any.
pub fn referenced_workflow<'a>(
    run: &Run,
    documents: &'a [Document],
) -> Result<Option<(&'a Document, &'a Workflow)>, Problem> {
    let Some(reference) = &run.spec.workflow_ref else {
        return Ok(None);
    };
    workflow_in_namespace(
        "Run",
        &reference.name,
        run.metadata.namespace.as_deref(),
        documents,
    )
}

/// The Workflow named `name` among `documents` for a `kind` object in `namespace` (see
/// [`referenced_workflow`]).
pub fn workflow_in_namespace<'a>(
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    documents: &'a [Document],
) -> Result<Option<(&'a Document, &'a Workflow)>, Problem> {
    let named: Vec<(&Document, &Workflow)> = documents
        .iter()
        .filter_map(|d| match &d.manifest {
            Manifest::Workflow(w) if w.metadata.name.as_deref() == Some(name) => {
                Some((d, w.as_ref()))
            }
            _ => None,
        })
        .collect();
    let same_namespace = |w: &Workflow| match (namespace, w.metadata.namespace.as_deref()) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    if let Some(found) = named.iter().find(|(_, w)| same_namespace(w)) {
        return Ok(Some(*found));
    }
    match named.first() {
        None => Ok(None),
        Some((_, w)) => Err(Problem::new(
            "spec.workflowRef.name",
            format!(
                "Workflow {} is in namespace {}, but this {kind} is in namespace {}: a {kind} may \
                 only reference a Workflow in its own namespace",
                quoted(name),
                quoted(w.metadata.namespace.as_deref().unwrap_or_default()),
                quoted(namespace.unwrap_or_default()),
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_documents;

    fn documents(text: &str) -> Vec<Document> {
        parse_documents(text, "f.yaml").unwrap()
    }

    fn workflow(name: &str, namespace: &str) -> String {
        format!(
            "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: {name}{namespace}}}\n\
             spec: {{tasks: [{{name: t, image: i, command: ['true']}}]}}\n"
        )
    }

    fn run(meta: &str) -> String {
        format!(
            "apiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {{{meta}}}\n\
             spec: {{workflowRef: {{name: etl}}}}\n"
        )
    }

    #[test]
    fn names_are_checked() {
        let docs = documents(&format!(
            "{}---\n{}---\n{}---\n{}",
            workflow("'../x'", ""),
            run("name: Upper"),
            run("generateName: '-x'"),
            run("namespace: a"),
        ));
        let shown: Vec<Vec<String>> = docs
            .iter()
            .map(|d| {
                name_problems(d, false)
                    .iter()
                    .map(|p| p.to_string())
                    .collect()
            })
            .collect();
        assert_eq!(
            shown[0],
            [
                "metadata.name: Workflow name \"../x\" is not valid: use lowercase letters, \
              digits, '-' and '.', starting and ending with a letter or digit"
            ]
        );
        assert!(shown[1][0].starts_with("metadata.name: Run name \"Upper\" is not valid"));
        assert!(shown[2][0].starts_with("metadata.generateName: Run generateName \"-x\""));
        assert_eq!(shown[3], ["metadata: a Run needs a name or a generateName"]);
        assert!(name_problems(&docs[3], true).is_empty());
    }

    #[test]
    fn a_workflow_given_twice_is_reported_at_both_places() {
        let docs = documents(&format!(
            "{}---\n{}---\n{}---\n{}",
            workflow("etl", ""),
            workflow("other", ""),
            workflow("etl", ""),
            workflow("etl", ", namespace: b"),
        ));
        let found: Vec<(usize, String)> = duplicate_workflows(&docs)
            .into_iter()
            .map(|(i, p)| (i, p.to_string()))
            .collect();
        let message = "metadata.name: Workflow \"etl\" is defined 2 times (in f.yaml (document \
                       1), f.yaml (document 3)); each Workflow needs its own name";
        assert_eq!(found, [(0, message.to_string()), (2, message.to_string())]);
    }

    #[test]
    fn a_run_references_a_workflow_of_its_namespace() {
        let docs = documents(&format!(
            "{}---\n{}---\n{}",
            workflow("etl", ", namespace: a"),
            run("name: r, namespace: b"),
            run("name: r, namespace: a"),
        ));
        let Manifest::Run(other) = &docs[1].manifest else {
            panic!()
        };
        let Manifest::Run(same) = &docs[2].manifest else {
            panic!()
        };
        assert_eq!(
            referenced_workflow(other, &docs).unwrap_err().to_string(),
            "spec.workflowRef.name: Workflow \"etl\" is in namespace \"a\", but this Run is in \
             namespace \"b\": a Run may only reference a Workflow in its own namespace"
        );
        let (doc, _) = referenced_workflow(same, &docs).unwrap().unwrap();
        assert_eq!(doc.origin, "f.yaml (document 1)");
        let docs = documents(&format!(
            "{}---\n{}",
            workflow("etl", ""),
            run("name: r, namespace: b")
        ));
        let Manifest::Run(any) = &docs[1].manifest else {
            panic!()
        };
        assert!(referenced_workflow(any, &docs).unwrap().is_some());
    }
}
