//! The structural check the API server makes before it stores an object: every field against
//! the CRD schema generated from the API types (type, integer range, required fields, unknown
//! fields). Serde stops at the first problem; this reports all of them, each with its path, and
//! refuses what serde would quietly accept but Kubernetes would not (a mapping written as a list).

use std::sync::LazyLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;
use serde_json::{Map, Value};

use super::fields::{Step, describe, integer_range, is_whole, range_error, render, whole_number};
use crate::api::{Run, Schedule, Workflow};
use crate::problem::Problem;

/// Most problems kept for one document; the rest are counted.
pub const MAX_PROBLEMS: usize = 1_000;

static WORKFLOW: LazyLock<Option<JSONSchemaProps>> = LazyLock::new(|| schema_of(Workflow::crd()));
static RUN: LazyLock<Option<JSONSchemaProps>> = LazyLock::new(|| schema_of(Run::crd()));
static SCHEDULE: LazyLock<Option<JSONSchemaProps>> = LazyLock::new(|| schema_of(Schedule::crd()));

fn schema_of(crd: CustomResourceDefinition) -> Option<JSONSchemaProps> {
    crd.spec
        .versions
        .into_iter()
        .next()?
        .schema?
        .open_api_v3_schema
}

/// Which schema to check against.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Workflow,
    Run,
    Schedule,
}

/// Every structural problem of `object` (a Workflow, Run or Schedule document): at most [`MAX_PROBLEMS`]
/// lines, the last one counting the rest when there are more. `apiVersion`, `kind` and `metadata` are not checked
/// here: the caller checks the first two and serde the object metadata.
pub fn check(kind: Kind, object: &Map<String, Value>) -> Vec<Problem> {
    let schema = match kind {
        Kind::Workflow => WORKFLOW.as_ref(),
        Kind::Run => RUN.as_ref(),
        Kind::Schedule => SCHEDULE.as_ref(),
    };
    let Some(schema) = schema else {
        return Vec::new();
    };
    let mut walker = Walker::default();
    for (key, value) in object {
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        walker.path.push(Step::Key(key));
        match schema.properties.as_ref().and_then(|p| p.get(key)) {
            Some(field) => {
                walker.in_status = key == "status";
                walker.value(value, field);
                walker.in_status = false;
            }
            None => walker.report("unknown field".into()),
        }
        walker.path.pop();
    }
    walker.required(object, schema);
    walker.finish()
}

#[derive(Default)]
struct Walker<'v> {
    path: Vec<Step<'v>>,
    problems: Vec<Problem>,
    /// Problems found past [`MAX_PROBLEMS`].
    more: usize,
    /// Under `status`, written by ork: a manifest copied from a cluster may carry fields of a
    /// newer version, so unknown ones are not reported there.
    in_status: bool,
}

impl<'v> Walker<'v> {
    fn report(&mut self, message: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems
                .push(Problem::new(render(self.path.iter().copied()), message));
        } else {
            self.more += 1;
        }
    }

    /// The problems, the last line counting those left out so that there are never more
    /// than [`MAX_PROBLEMS`] lines.
    fn finish(mut self) -> Vec<Problem> {
        if self.more > 0 {
            self.problems.pop();
            self.more += 1;
            let s = if self.more == 1 { "" } else { "s" };
            self.problems.push(Problem::new(
                "",
                format!("… and {} more problem{s}", self.more),
            ));
        }
        self.problems
    }

    fn value(&mut self, value: &'v Value, schema: &JSONSchemaProps) {
        if value.is_null() && schema.nullable == Some(true) {
            return;
        }
        if schema.x_kubernetes_int_or_string == Some(true) {
            // Serde reads a quantity from any number or string, as `kubectl` does.
            if !matches!(value, Value::String(_) | Value::Number(_)) {
                self.report(format!(
                    "must be a string or a number, got {}",
                    describe(value)
                ));
            }
            return;
        }
        match schema.type_.as_deref() {
            Some("object") => match value {
                Value::Object(map) => self.object(map, schema),
                other => self.report(format!("must be a mapping, got {}", describe(other))),
            },
            Some("array") => match value {
                Value::Array(items) => {
                    if let Some(JSONSchemaPropsOrArray::Schema(item)) = &schema.items {
                        for (i, entry) in items.iter().enumerate() {
                            self.path.push(Step::Index(i));
                            self.value(entry, item);
                            self.path.pop();
                        }
                    }
                }
                other => self.report(format!("must be a list, got {}", describe(other))),
            },
            Some("string") => match value {
                Value::String(text) => self.enumeration(text, schema),
                other @ (Value::Number(_) | Value::Bool(_)) => self.report(format!(
                    "must be a string, got {}; quote it",
                    describe(other)
                )),
                other => self.report(format!("must be a string, got {}", describe(other))),
            },
            Some("integer") => {
                let range = integer_range(schema.format.as_deref());
                match value {
                    Value::Number(n) if is_whole(n) => {
                        if let Some(message) = range_error(n, range) {
                            self.report(message);
                        }
                    }
                    other => self.report(format!(
                        "must be {}, got {}",
                        whole_number(range),
                        describe(other)
                    )),
                }
            }
            Some("number") if !value.is_number() => {
                self.report(format!("must be a number, got {}", describe(value)));
            }
            Some("boolean") if !value.is_boolean() => {
                self.report(format!("must be true or false, got {}", describe(value)));
            }
            _ => {}
        }
    }

    fn enumeration(&mut self, text: &str, schema: &JSONSchemaProps) {
        let Some(allowed) = &schema.enum_ else {
            return;
        };
        if !allowed.iter().any(|a| a.0.as_str() == Some(text)) {
            let names = crate::text::list(allowed.iter(), |a| match a.0.as_str() {
                Some(s) => s.to_string(),
                None => a.0.to_string(),
            });
            self.report(format!(
                "must be one of {names}, got {}",
                crate::text::quoted(text)
            ));
        }
    }

    fn object(&mut self, map: &'v Map<String, Value>, schema: &JSONSchemaProps) {
        let open = schema.x_kubernetes_preserve_unknown_fields == Some(true);
        for (key, value) in map {
            self.path.push(Step::Key(key));
            match (
                schema.properties.as_ref().and_then(|p| p.get(key)),
                &schema.additional_properties,
            ) {
                (Some(field), _) => self.value(value, field),
                (None, Some(JSONSchemaPropsOrBool::Schema(entry))) => self.value(value, entry),
                (None, Some(JSONSchemaPropsOrBool::Bool(true))) => {}
                (None, _) if open || self.in_status => {}
                (None, _) => self.report("unknown field".into()),
            }
            self.path.pop();
        }
        self.required(map, schema);
    }

    fn required(&mut self, map: &Map<String, Value>, schema: &JSONSchemaProps) {
        for name in schema.required.iter().flatten() {
            if !map.contains_key(name) {
                // The path borrows from the document; a missing field's name comes from the
                // schema, so it is rendered here rather than pushed.
                let field = super::fields::child(&render(self.path.iter().copied()), name);
                if self.problems.len() < MAX_PROBLEMS {
                    self.problems
                        .push(Problem::new(field, "required field is missing"));
                } else {
                    self.more += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(kind: Kind, yaml: &str) -> Vec<String> {
        let value: Value = serde_saphyr::from_str(yaml).unwrap();
        let Value::Object(map) = value else {
            panic!("not a mapping")
        };
        check(kind, &map).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_valid_document_has_no_problems() {
        let yaml = "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {name: a}\n\
                    spec:\n  parallelism: 2\n  tasks:\n  - name: t\n    image: i\n    \
                    command: [sh]\n    env: [{name: A, value: b}]\n    retries: {limit: 3, \
                    backoff: {factor: 1.5}}\n    resources: {limits: {cpu: 1, memory: 1Gi}}\n";
        assert_eq!(problems(Kind::Workflow, yaml), Vec::<String>::new());
    }

    #[test]
    fn reports_every_structural_problem() {
        let yaml = "spec:\n  parallelism: many\n  tasks:\n  - name: 5\n    retries: [3]\n  \
                    - name: b\n    retries: {limit: 99999999999}\n    timeoutSeconds: -5\n    \
                    command: sh\n    env: [{value: x}]\n    bogus: 1\n  - retries: {limit: 1.5}\n\
                    extra: 1\n";
        assert_eq!(
            problems(Kind::Workflow, yaml),
            [
                "extra: unknown field",
                "spec.parallelism: must be a whole number from 0 to 4294967295, got \"many\"",
                "spec.tasks[0].name: must be a string, got 5; quote it",
                "spec.tasks[0].retries: must be a mapping, got a list",
                "spec.tasks[1].bogus: unknown field",
                "spec.tasks[1].command: must be a list, got \"sh\"",
                "spec.tasks[1].env[0].name: required field is missing",
                "spec.tasks[1].retries.limit: 99999999999 is above the maximum 4294967295",
                "spec.tasks[1].timeoutSeconds: -5 is below the minimum 0",
                "spec.tasks[2].retries.limit: must be a whole number from 0 to 4294967295, got 1.5",
                "spec.tasks[2].name: required field is missing",
            ]
        );
        assert_eq!(
            problems(Kind::Workflow, "spec: {tasks: x}\n"),
            ["spec.tasks: must be a list, got \"x\""]
        );
        assert_eq!(
            problems(Kind::Workflow, "metadata: {}\n"),
            ["spec: required field is missing"]
        );
    }

    #[test]
    fn checks_runs_maps_and_status() {
        let yaml = "spec:\n  workflowRef: {name: w}\n  params: {a: 1, b: x, c: [1]}\n\
                    status:\n  phase: Bogus\n  newField: 1\n  tasks: [{name: t, phase: Running, attempts: x}]\n";
        assert_eq!(
            problems(Kind::Run, yaml),
            [
                "spec.params.a: must be a string, got 1; quote it",
                "spec.params.c: must be a string, got a list",
                "status.phase: must be one of Pending, Running, Succeeded, Failed, Cancelled, got \"Bogus\"",
                "status.tasks[0].attempts: must be a whole number from 0 to 4294967295, got \"x\"",
            ]
        );
    }

    #[test]
    fn problems_are_capped_and_counted() {
        let mut yaml = String::from("spec:\n  tasks:\n");
        for i in 0..1_500 {
            yaml.push_str(&format!("  - {{name: t{i}, bogus{i}: 1}}\n"));
        }
        let found = problems(Kind::Workflow, &yaml);
        assert_eq!(found.len(), MAX_PROBLEMS);
        assert_eq!(found[MAX_PROBLEMS - 1], "… and 501 more problems");
    }
}
