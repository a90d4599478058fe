//! What a task sees, the same in every driver: the `ORK_*` variables, one variable per input,
//! and `$(VAR)` expansion in `command` and `args` exactly as the kubelet does it.

use serde_json::{Map, Value};

use crate::compile::CompiledTask;
use crate::engine::Launch;

/// Names of the variables ork sets for every task.
pub mod vars {
    pub const WORKFLOW: &str = "ORK_WORKFLOW";
    pub const RUN: &str = "ORK_RUN";
    pub const TASK: &str = "ORK_TASK";
    pub const ATTEMPT: &str = "ORK_ATTEMPT";
    pub const OUTPUT: &str = "ORK_OUTPUT";
    pub const INPUT_JSON: &str = "ORK_INPUT_JSON";
}

/// Identity of the run an attempt belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunIdentity {
    /// Name of the workflow (the run's own name for an inline definition).
    pub workflow: String,
    pub run: String,
}

/// The ork-defined part of an attempt's environment, in order: the `ORK_*` variables, then one
/// variable per input. A driver appends the task's own `env` after these.
pub fn ork_env(
    identity: &RunIdentity,
    task: &CompiledTask,
    launch: &Launch,
    output_path: &str,
) -> Vec<(String, String)> {
    let input_json: Map<String, Value> = launch.inputs.iter().cloned().collect();
    let mut env = vec![
        (vars::WORKFLOW.to_string(), identity.workflow.clone()),
        (vars::RUN.to_string(), identity.run.clone()),
        (vars::TASK.to_string(), task.name.clone()),
        (vars::ATTEMPT.to_string(), launch.attempt.to_string()),
        (vars::OUTPUT.to_string(), output_path.to_string()),
        (
            vars::INPUT_JSON.to_string(),
            Value::Object(input_json).to_string(),
        ),
    ];
    env.extend(
        launch
            .inputs
            .iter()
            .map(|(name, value)| (name.clone(), input_env_value(value))),
    );
    env
}

/// A JSON string is passed as the bare string; any other value as its JSON text.
pub fn input_env_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Expands `$(NAME)` references from `lookup` the way Kubernetes expands container commands,
/// arguments and env values: `$$` is a literal `$`, a reference to an unknown name is kept as
/// written, and a `$` that starts no reference is kept.
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match lookup(name) {
                            Some(value) => out.push_str(value),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        close + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // Keep the `$`; the next character is copied from the checkpoint.
                    out.push('$');
                    0
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<&'static str> {
        match name {
            "DAY" => Some("2026-11-26"),
            "EMPTY" => Some(""),
            _ => None,
        }
    }

    #[test]
    fn expansion_matches_kubernetes() {
        let cases = [
            ("plain", "plain"),
            ("$(DAY)", "2026-11-26"),
            ("day=$(DAY)!", "day=2026-11-26!"),
            ("$(DAY)$(DAY)", "2026-11-262026-11-26"),
            ("$$(DAY)", "$(DAY)"),
            ("$$$(DAY)", "$2026-11-26"),
            ("$$", "$"),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$(EMPTY)x", "x"),
            ("$(DAY", "$(DAY"),
            ("$DAY", "$DAY"),
            ("a$", "a$"),
            ("$", "$"),
            ("$()", "$()"),
            ("é$(DAY)é", "é2026-11-26é"),
            ("$é", "$é"),
            ("${DAY}", "${DAY}"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, env), want, "input {input:?}");
        }
    }

    #[test]
    fn input_values() {
        assert_eq!(input_env_value(&Value::String("a b".into())), "a b");
        assert_eq!(input_env_value(&serde_json::json!(3)), "3");
        assert_eq!(
            input_env_value(&serde_json::json!({"a": [1]})),
            r#"{"a":[1]}"#
        );
    }
}
