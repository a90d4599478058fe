//! Binding a run's parameter values to a workflow's declared parameters.

use std::collections::BTreeMap;

use super::Dag;
use crate::problem::Problems;

/// Parameter values of one run, by index of the workflow's declared parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BoundParams(Vec<String>);

impl BoundParams {
    pub fn get(&self, index: usize) -> Option<&str> {
        self.0.get(index).map(String::as_str)
    }
}

/// Checks `values` against the declared parameters: unknown names and missing required
/// parameters are problems at `field` (e.g. `spec.params`). Defaults fill the rest.
pub fn bind_params(
    dag: &Dag,
    values: &BTreeMap<String, String>,
    field: &str,
) -> Result<BoundParams, Problems> {
    let mut problems = Problems::default();
    for name in values.keys() {
        if !dag.params().iter().any(|p| &p.name == name) {
            let declared: Vec<&str> = dag.params().iter().map(|p| p.name.as_str()).collect();
            let hint = if declared.is_empty() {
                "the workflow declares no parameters".to_string()
            } else {
                format!("declared: {}", declared.join(", "))
            };
            problems.push(
                format!("{field}.{name}"),
                format!("unknown parameter {name:?} ({hint})"),
            );
        }
    }
    let mut bound = Vec::with_capacity(dag.params().len());
    for param in dag.params() {
        match values.get(&param.name).or(param.default.as_ref()) {
            Some(value) => bound.push(value.clone()),
            None => {
                problems.push(
                    format!("{field}.{}", param.name),
                    format!(
                        "required parameter {:?} has no value and no default",
                        param.name
                    ),
                );
                bound.push(String::new());
            }
        }
    }
    problems.into_result(BoundParams(bound))
}
