//! How long a task's env values, command and args can get once `$(VAR)` references are
//! expanded. Each env value may repeat earlier ones many times, so a few lines of manifest can
//! expand to gigabytes (`E2` = 64 × `$(E1)`, `E3` = 64 × `$(E2)`, …). The validator computes a
//! lower bound of every expanded length without building the text, and refuses what no process
//! could receive anyway.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::EnvVar;

use super::Owner;
use crate::problem::Problems;
use crate::task_env::{MAX_EXPANDED_BYTES, expanded_len, vars};

/// Where an entry of a task's environment is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EnvOrigin {
    /// `defaults.env[i]`.
    Default(usize),
    /// The task's own `env[i]`.
    Own(usize),
}

/// Variables ork sets before the task's own; their values are known only at run time.
const ORK_VARS: [&str; 8] = [
    vars::WORKFLOW,
    vars::RUN,
    vars::TASK,
    vars::ATTEMPT,
    vars::OUTPUT,
    vars::INPUT_JSON,
    vars::ITEM,
    vars::ITEM_INDEX,
];

/// One task's view, for [`check_expansions`].
pub(super) struct TaskEnv<'a> {
    /// `spec.tasks[i]`.
    pub(super) at: &'a str,
    /// `spec.defaults`.
    pub(super) defaults_at: &'a str,
    /// The task, for messages.
    pub(super) who: Owner<'a>,
    /// The task's environment in order, as the kubelet and the local runner build it after the
    /// `ORK_*` variables and the inputs.
    pub(super) env: &'a [(EnvOrigin, &'a EnvVar)],
    /// Names of the task's inputs (their values are known only at run time).
    pub(super) inputs: &'a HashSet<&'a str>,
    pub(super) command: &'a [String],
    pub(super) args: &'a [String],
}

/// Reports every env value, command and args entry of the task whose expansion is longer than
/// [`MAX_EXPANDED_BYTES`] whatever the run-time values: the `ORK_*` variables and inputs count
/// as empty, a later definition of a name shadows an earlier one, an unknown name stays as
/// written. A default entry is reported once (`defaults_reported[i]`), for the first task where
/// it is too long. Linear in the size of the task's env, command and args.
pub(super) fn check_expansions(
    task: &TaskEnv<'_>,
    defaults_reported: &mut [bool],
    problems: &mut Problems,
) {
    let too_long = |len: u64| len > MAX_EXPANDED_BYTES as u64;
    let values = task.env.iter().filter_map(|(_, var)| var.value.as_deref());
    let mut texts = values.chain(task.command.iter().chain(task.args).map(String::as_str));
    if !texts.any(|text| text.contains("$(") || too_long(text.len() as u64)) {
        // Nothing refers to a variable and nothing is too long as written: the common case.
        return;
    }
    let mut lengths: HashMap<&str, u64> =
        HashMap::with_capacity(task.inputs.len() + task.env.len());
    for &name in task.inputs {
        lengths.insert(name, 0);
    }
    let explain = |len: u64| {
        format!(
            "expands to at least {len} bytes; a single argument or environment variable may \
             hold at most {MAX_EXPANDED_BYTES}"
        )
    };
    for &(origin, var) in task.env {
        let len = var.value.as_deref().map_or(0, |value| {
            expanded_len(value, |name| {
                lengths
                    .get(name)
                    .copied()
                    .or_else(|| ORK_VARS.contains(&name).then_some(0))
            })
        });
        if too_long(len) {
            let name = crate::text::quoted(&var.name);
            match origin {
                EnvOrigin::Own(j) => problems.push(
                    format!("{}.env[{j}].value", task.at),
                    format!("{}: env {name}: {}", task.who, explain(len)),
                ),
                EnvOrigin::Default(j) if !defaults_reported[j] => {
                    defaults_reported[j] = true;
                    problems.push(
                        format!("{}.env[{j}].value", task.defaults_at),
                        format!(
                            "the defaults, for {}: env {name}: {}",
                            task.who,
                            explain(len)
                        ),
                    );
                }
                EnvOrigin::Default(_) => {}
            }
        }
        lengths.insert(var.name.as_str(), len);
    }
    let lookup = |name: &str| {
        lengths
            .get(name)
            .copied()
            .or_else(|| ORK_VARS.contains(&name).then_some(0))
    };
    for (list, entries) in [("command", task.command), ("args", task.args)] {
        for (k, entry) in entries.iter().enumerate() {
            let len = expanded_len(entry, lookup);
            if too_long(len) {
                problems.push(
                    format!("{}.{list}[{k}]", task.at),
                    format!("{}: {}", task.who, explain(len)),
                );
            }
        }
    }
}
