//! Reading manifests: YAML files holding one or more `Workflow` and `Run` documents.
//!
//! A file is read whole but bounded ([`MAX_FILE_BYTES`]), parsed as YAML 1.2 under budgets that
//! refuse alias bombs and runaway nesting, then each document is checked against the CRD schema
//! (every problem, each naming its field) and read into the API types. Scalars that `kubectl`
//! (YAML 1.1) would read as booleans are warned about.

mod checks;
mod fields;
mod read;
mod structure;
mod yaml;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;

use crate::api::{API_VERSION, Run, Schedule, Workflow};
use crate::problem::{Problem, Problems};
use fields::Step;

pub use checks::{duplicate_workflows, name_problems, referenced_workflow, workflow_in_namespace};
pub use read::{MAX_FILE_BYTES, MAX_FILE_SIZE_TEXT, ReadError};
pub use structure::MAX_PROBLEMS;
pub use yaml::{MAX_DEPTH, MAX_NODES};

/// A manifest document ork understands.
#[derive(Clone, Debug)]
pub enum Manifest {
    Workflow(Box<Workflow>),
    Run(Box<Run>),
    Schedule(Box<Schedule>),
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
            Manifest::Schedule(s) => ("Schedule", &s.metadata),
        };
        match (&meta.name, &meta.generate_name) {
            (Some(name), _) => format!("{kind}/{}", shown_name(name)),
            (None, Some(prefix)) => format!("{kind} (generateName {})", shown_name(prefix)),
            (None, None) => format!("{kind} (unnamed)"),
        }
    }
}

/// A name as it is when it could be an object name, otherwise quoted and bounded.
fn shown_name(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= crate::text::MAX_NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if plain {
        name.to_string()
    } else {
        crate::text::quoted(name)
    }
}

/// Why a file could not be turned into documents.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Not YAML ork accepts: a syntax error, or past a budget (too deep, too large, an alias
    /// bomb). The message says which, in the user's terms, with the line.
    #[error("{origin}: {message}")]
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

/// What a file held: its documents (or why they cannot be used), and warnings that do not
/// stop it from being used.
#[derive(Debug)]
pub struct Loaded {
    pub documents: Result<Vec<Document>, LoadError>,
    /// `FILE: FIELD: …`, e.g. values `kubectl` would read differently than ork does.
    pub warnings: Vec<String>,
}

/// Reads every document of a YAML file of at most [`MAX_FILE_BYTES`].
pub fn load_file(path: &Path) -> Loaded {
    match read::read_text(path) {
        Ok(text) => parse_text(&text, &path.display().to_string()),
        Err(e) => Loaded {
            documents: Err(LoadError::Read(e)),
            warnings: Vec::new(),
        },
    }
}

/// Parses every document of a YAML text; `name` says where it came from in messages.
pub fn parse_documents(text: &str, name: &str) -> Result<Vec<Document>, LoadError> {
    parse_text(text, name).documents
}

/// Most warnings kept for one file; the rest are counted.
pub const MAX_WARNINGS: usize = 100;

/// Parses every document of a YAML text, with warnings.
pub fn parse_text(text: &str, name: &str) -> Loaded {
    let values = match yaml::parse(text) {
        Ok(values) => values,
        Err(message) => {
            return Loaded {
                documents: Err(LoadError::Yaml {
                    origin: name.to_string(),
                    message,
                }),
                warnings: Vec::new(),
            };
        }
    };
    let several = values.len() > 1;
    let origin = |i: usize| {
        if several {
            format!("{name} (document {})", i + 1)
        } else {
            name.to_string()
        }
    };
    let warnings = yaml11_warnings(text, &origin);
    if values.is_empty() {
        return Loaded {
            documents: Err(LoadError::Empty {
                origin: name.to_string(),
            }),
            warnings,
        };
    }
    let mut documents = Vec::with_capacity(values.len());
    let mut failures = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        match parse_manifest(value) {
            Ok(manifest) => documents.push(Document {
                origin: origin(i),
                manifest,
            }),
            Err(problems) => failures.push((origin(i), problems)),
        }
    }
    let documents = if failures.is_empty() {
        Ok(documents)
    } else {
        Err(LoadError::Documents(failures))
    };
    Loaded {
        documents,
        warnings,
    }
}

/// `FILE: FIELD: N is read as a boolean by kubectl (YAML 1.1); quote it`, at most
/// [`MAX_WARNINGS`] and then a count.
fn yaml11_warnings(text: &str, origin: &dyn Fn(usize) -> String) -> Vec<String> {
    let found = yaml::yaml11_booleans(text);
    let mut warnings: Vec<String> = found
        .iter()
        .take(MAX_WARNINGS)
        .map(|b| format!("{}: {}", origin(b.document), b.message()))
        .collect();
    if found.len() > MAX_WARNINGS {
        warnings.push(format!(
            "… and {} more values kubectl reads as booleans",
            found.len() - MAX_WARNINGS
        ));
    }
    warnings
}

/// Turns one document into a [`Manifest`], checking `apiVersion`, `kind` and every field.
///
/// Every problem is found, not only the first: the fields are checked against the CRD schema
/// (types, integer ranges, required and unknown fields) as the API server would, then read
/// with serde for the object metadata and anything the schema does not say. The messages are
/// in the user's terms and bounded, so they can be shown as they are (also by the controller,
/// for an object the API server accepted but ork cannot read).
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
            let structure = structure::check(structure::Kind::Workflow, map);
            strict::<Workflow>(value, structure, &mut problems)
                .map(|w| Manifest::Workflow(Box::new(w)))
        }
        Some("Run") => {
            let structure = structure::check(structure::Kind::Run, map);
            strict::<Run>(value, structure, &mut problems).map(|r| Manifest::Run(Box::new(r)))
        }
        Some("Schedule") => {
            let structure = structure::check(structure::Kind::Schedule, map);
            strict::<Schedule>(value, structure, &mut problems)
                .map(|s| Manifest::Schedule(Box::new(s)))
        }
        _ => {
            problems.push(
                "kind",
                format!(
                    "must be Workflow, Run or Schedule, got {}",
                    show(map.get("kind"))
                ),
            );
            None
        }
    };
    match manifest {
        Some(manifest) if problems.is_empty() => Ok(manifest),
        _ => Err(problems),
    }
}

/// Deserializes `value`, adding to `problems` those of the structural check and what it could
/// not see: unknown fields and type errors in `metadata`, and, when it found nothing, serde's
/// own error.
fn strict<T: DeserializeOwned>(
    value: Value,
    structure: Vec<Problem>,
    problems: &mut Problems,
) -> Option<T> {
    let structure_ok = structure.is_empty();
    problems.0.extend(structure);
    let mut unknown = Vec::new();
    let result = {
        let mut record = |path: serde_ignored::Path| {
            if let Some(path) = field_path(&path)
                && (path == "metadata" || path.starts_with("metadata."))
            {
                unknown.push(path);
            }
        };
        let ignored = serde_ignored::Deserializer::new(value, &mut record);
        serde_path_to_error::deserialize::<_, T>(ignored)
    };
    for path in unknown.into_iter().take(structure::MAX_PROBLEMS) {
        problems.push(path, "unknown field");
    }
    match result {
        Ok(parsed) => Some(parsed),
        Err(err) => {
            let path = fields::render(err.path().iter().filter_map(|segment| match segment {
                Segment::Seq { index } => Some(Step::Index(*index)),
                Segment::Map { key } => Some(Step::Key(key)),
                Segment::Enum { .. } | Segment::Unknown => None,
            }));
            let in_metadata = path == "metadata" || path.starts_with("metadata.");
            if structure_ok || in_metadata {
                let (child, message) = fields::translate(&err.into_inner().to_string());
                let field = match child {
                    Some(name) => fields::child(&path, &name),
                    None => path,
                };
                problems.push(field, message);
            }
            None
        }
    }
}

/// `metadata.labels.x`, the notation of every other problem; `None` for the root.
fn field_path(path: &serde_ignored::Path) -> Option<String> {
    use serde_ignored::Path;
    let mut steps = Vec::new();
    let mut at = path;
    loop {
        match at {
            Path::Root => break,
            Path::Seq { parent, index } => {
                steps.push(Step::Index(*index));
                at = parent;
            }
            Path::Map { parent, key } => {
                steps.push(Step::Key(key));
                at = parent;
            }
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => at = parent,
        }
    }
    steps.reverse();
    (!steps.is_empty()).then(|| fields::render(steps))
}

fn show(value: Option<&Value>) -> String {
    match value {
        None => "nothing".into(),
        Some(v) => fields::describe(v),
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
        assert_eq!(
            problems[0],
            "spec.tasks[0].retries.limit: must be a whole number from 0 to 4294967295, got \"many\""
        );
    }

    #[test]
    fn rejects_wrong_kind_and_version() {
        let problems = problems_of("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n");
        assert_eq!(
            problems,
            [
                "apiVersion: must be ork.dev/v1alpha1, got \"v1\"",
                "kind: must be Workflow, Run or Schedule, got \"ConfigMap\""
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
