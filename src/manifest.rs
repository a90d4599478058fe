//! Reading manifests: YAML files holding one or more `Workflow` and `Run` documents.
//!
//! Documents are parsed to JSON values first, then into the API types with two checks serde
//! alone does not give: every unknown field is reported (as `kubectl apply` does by default),
//! and type errors name the path of the field.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::{API_VERSION, Run, Workflow};
use crate::problem::{Problem, Problems};

/// A manifest document ork understands.
#[derive(Clone, Debug)]
pub enum Manifest {
    Workflow(Box<Workflow>),
    Run(Box<Run>),
}

/// A parsed document and where it came from.
#[derive(Clone, Debug)]
pub struct Document {
    /// `FILE` for a single-document file, `FILE (document N)` otherwise.
    pub origin: String,
    pub manifest: Manifest,
}

impl Document {
    /// `Workflow/etl`, `Run/etl-x7` or `Run (generateName etl-)`, for messages.
    pub fn describe(&self) -> String {
        let (kind, meta) = match &self.manifest {
            Manifest::Workflow(w) => ("Workflow", &w.metadata),
            Manifest::Run(r) => ("Run", &r.metadata),
        };
        match (&meta.name, &meta.generate_name) {
            (Some(name), _) => format!("{kind}/{name}"),
            (None, Some(prefix)) => format!("{kind} (generateName {prefix})"),
            (None, None) => format!("{kind} (unnamed)"),
        }
    }
}

/// Why a file could not be turned into documents.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: not valid YAML: {message}")]
    Yaml { origin: String, message: String },
    #[error("{origin}: no documents")]
    Empty { origin: String },
    /// Documents that parsed as YAML but do not fit the API, with every problem found.
    #[error("{}", format_documents(.0))]
    Documents(Vec<(String, Problems)>),
}

fn format_documents(docs: &[(String, Problems)]) -> String {
    let mut out = Vec::new();
    for (origin, problems) in docs {
        for problem in problems.iter() {
            out.push(format!("{origin}: {problem}"));
        }
    }
    out.join("\n")
}

/// Reads every document of a YAML file.
pub fn load_file(path: &Path) -> Result<Vec<Document>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_documents(&text, &path.display().to_string())
}

/// Parses every document of a YAML text; `name` says where it came from in messages.
pub fn parse_documents(text: &str, name: &str) -> Result<Vec<Document>, LoadError> {
    // The default budget protects against hostile input but caps a document at 250k nodes;
    // a 100k-task workflow needs more. These bounds still stop alias bombs and runaway input.
    // YAML 1.2 booleans only: an input named `N` or a value `no` stays a string.
    let options = serde_saphyr::options! {
        strict_booleans: true,
        budget: serde_saphyr::budget! {
            max_nodes: 50_000_000,
            max_events: 200_000_000,
            max_total_scalar_bytes: 1 << 30,
        },
    };
    let values: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|err| LoadError::Yaml {
            origin: name.to_string(),
            message: err.to_string(),
        })?;
    let values: Vec<Value> = values.into_iter().filter(|v| !v.is_null()).collect();
    if values.is_empty() {
        return Err(LoadError::Empty {
            origin: name.to_string(),
        });
    }
    let several = values.len() > 1;
    let mut documents = Vec::with_capacity(values.len());
    let mut failures = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let origin = if several {
            format!("{name} (document {})", i + 1)
        } else {
            name.to_string()
        };
        match parse_manifest(value) {
            Ok(manifest) => documents.push(Document { origin, manifest }),
            Err(problems) => failures.push((origin, problems)),
        }
    }
    if failures.is_empty() {
        Ok(documents)
    } else {
        Err(LoadError::Documents(failures))
    }
}

/// Turns one document into a [`Manifest`], checking `apiVersion`, `kind` and every field.
pub fn parse_manifest(value: Value) -> Result<Manifest, Problems> {
    let mut problems = Problems::default();
    let Value::Object(map) = &value else {
        problems.push(
            "",
            "a manifest must be a mapping with apiVersion, kind, metadata and spec",
        );
        return Err(problems);
    };
    let api_version = map.get("apiVersion").and_then(Value::as_str);
    let kind = map.get("kind").and_then(Value::as_str);
    if api_version != Some(API_VERSION) {
        problems.push(
            "apiVersion",
            format!("must be {API_VERSION}, got {}", show(map.get("apiVersion"))),
        );
    }
    let manifest = match kind {
        Some("Workflow") => {
            strict::<Workflow>(value, &mut problems).map(|w| Manifest::Workflow(Box::new(w)))
        }
        Some("Run") => strict::<Run>(value, &mut problems).map(|r| Manifest::Run(Box::new(r))),
        _ => {
            problems.push(
                "kind",
                format!("must be Workflow or Run, got {}", show(map.get("kind"))),
            );
            None
        }
    };
    match manifest {
        Some(manifest) if problems.is_empty() => Ok(manifest),
        _ => Err(problems),
    }
}

/// Deserializes `value`, recording unknown fields and the path of a type error as problems.
fn strict<T: DeserializeOwned>(value: Value, problems: &mut Problems) -> Option<T> {
    let mut unknown = Vec::new();
    let result = {
        let mut record = |path: serde_ignored::Path| unknown.push(field_path(&path));
        let ignored = serde_ignored::Deserializer::new(value, &mut record);
        serde_path_to_error::deserialize::<_, T>(ignored)
    };
    for path in unknown {
        // `apiVersion` and `kind` were checked above; `status` is written by ork, and a manifest
        // copied from the cluster may carry it.
        let top = path.split(['.', '[']).next().unwrap_or_default();
        if !matches!(top, "apiVersion" | "kind" | "status") {
            problems.0.push(Problem::new(path, "unknown field"));
        }
    }
    match result {
        Ok(parsed) => Some(parsed),
        Err(err) => {
            let path = err.path().to_string();
            let field = if path == "." { String::new() } else { path };
            problems
                .0
                .push(Problem::new(field, err.into_inner().to_string()));
            None
        }
    }
}

/// `spec.tasks[0].name`, the same notation as type errors.
fn field_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

fn show(value: Option<&Value>) -> String {
    match value {
        None => "nothing".into(),
        Some(v) => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(text: &str) -> Vec<String> {
        match parse_documents(text, "f.yaml") {
            Err(LoadError::Documents(docs)) => docs
                .into_iter()
                .flat_map(|(_, p)| p.0.into_iter().map(|p| p.to_string()))
                .collect(),
            other => panic!("expected document problems, got {other:?}"),
        }
    }

    #[test]
    fn parses_several_documents() {
        let text = "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {name: a}\n\
                    spec: {tasks: [{name: t, image: i, command: ['true']}]}\n---\n\
                    apiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {generateName: a-}\n\
                    spec: {workflowRef: {name: a}, params: {x: '1'}}\n";
        let docs = parse_documents(text, "f.yaml").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].describe(), "Workflow/a");
        assert_eq!(docs[0].origin, "f.yaml (document 1)");
        assert_eq!(docs[1].describe(), "Run (generateName a-)");
        let Manifest::Run(run) = &docs[1].manifest else {
            panic!("not a run")
        };
        assert_eq!(run.spec.params["x"], "1");
    }

    #[test]
    fn reports_unknown_fields_with_their_path() {
        let text = "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {name: a}\n\
                    spec: {tasks: [{name: t, image: i, command: ['true'], dependson: [x]}], bogus: 1}\n";
        assert_eq!(
            problems_of(text),
            [
                "spec.bogus: unknown field",
                "spec.tasks[0].dependson: unknown field"
            ]
        );
    }

    #[test]
    fn reports_type_errors_with_their_path() {
        let text = "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {name: a}\n\
                    spec: {tasks: [{name: t, retries: {limit: many}}]}\n";
        let problems = problems_of(text);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("spec.tasks[0].retries.limit: invalid type"),
            "{problems:?}"
        );
    }

    #[test]
    fn rejects_wrong_kind_and_version() {
        let problems = problems_of("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n");
        assert_eq!(
            problems,
            [
                "apiVersion: must be ork.dev/v1alpha1, got \"v1\"",
                "kind: must be Workflow or Run, got \"ConfigMap\""
            ]
        );
        assert_eq!(
            problems_of("- 1\n"),
            ["a manifest must be a mapping with apiVersion, kind, metadata and spec"]
        );
    }

    #[test]
    fn rejects_bad_yaml_and_empty_files() {
        assert!(matches!(
            parse_documents("a: [", "f.yaml"),
            Err(LoadError::Yaml { .. })
        ));
        assert!(matches!(
            parse_documents("", "f.yaml"),
            Err(LoadError::Empty { .. })
        ));
        assert!(matches!(
            parse_documents("---\n---\n", "f.yaml"),
            Err(LoadError::Empty { .. })
        ));
    }
}
