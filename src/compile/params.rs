//! Binding a run's parameter values to a workflow's declared parameters.

use std::collections::{BTreeMap, HashSet};

use super::Dag;
use crate::problem::Problems;
use crate::text::names;

/// Parameter values of one run, by index of the workflow's declared parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BoundParams(Vec<String>);

impl BoundParams {
    pub fn get(&self, index: usize) -> Option<&str> {
        self.0.get(index).map(String::as_str)
    }
}

/// Checks `values` against the declared parameters: unknown names and missing required
/// parameters are problems at `field` (e.g. `spec.params`), one for all unknown names and one
/// for all missing ones, each listing a bounded number of names. Defaults fill the rest.
/// Linear in the number of parameters.
pub fn bind_params(
    dag: &Dag,
    values: &BTreeMap<String, String>,
    field: &str,
) -> Result<BoundParams, Problems> {
    let mut problems = Problems::default();
    let declared: HashSet<&str> = dag.params().iter().map(|p| p.name.as_str()).collect();
    let unknown: Vec<&str> = values
        .keys()
        .map(String::as_str)
        .filter(|name| !declared.contains(name))
        .collect();
    if !unknown.is_empty() {
        let declares = if dag.params().is_empty() {
            "the workflow declares no parameters".to_string()
        } else {
            format!(
                "the workflow declares {}",
                names(dag.params().iter().map(|p| p.name.as_str()))
            )
        };
        problems.push(
            field,
            format!(
                "unknown {} {}; {declares}",
                plural(unknown.len(), "parameter", "parameters"),
                names(unknown.iter().copied())
            ),
        );
    }
    let mut bound = Vec::with_capacity(dag.params().len());
    let mut missing: Vec<&str> = Vec::new();
    for param in dag.params() {
        match values.get(&param.name).or(param.default.as_ref()) {
            Some(value) => bound.push(value.clone()),
            None => {
                missing.push(&param.name);
                bound.push(String::new());
            }
        }
    }
    if !missing.is_empty() {
        problems.push(
            field,
            format!(
                "required {} {} {} no value and no default",
                plural(missing.len(), "parameter", "parameters"),
                names(missing.iter().copied()),
                plural(missing.len(), "has", "have"),
            ),
        );
    }
    problems.into_result(BoundParams(bound))
}

fn plural<'a>(count: usize, one: &'a str, many: &'a str) -> &'a str {
    if count == 1 { one } else { many }
}
