//! What a task sees, the same in every driver: the `ORK_*` variables, one variable per input,
//! and `$(VAR)` expansion in `command` and `args` exactly as the kubelet does it.

use serde_json::{Map, Value};

use crate::api::RunPhase;
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
    /// Finally tasks only: what the regular tasks came to.
    pub const RUN_PHASE: &str = "ORK_RUN_PHASE";
    /// Finally tasks only: the regular tasks whose phase is Failed, comma-separated.
    pub const FAILED_TASKS: &str = "ORK_FAILED_TASKS";
    /// Runs a Schedule made only: the tick, RFC 3339 in UTC.
    pub const SCHEDULED_TIME: &str = "ORK_SCHEDULED_TIME";
    /// Instances of a fan-out task only: the item (a JSON string as the bare string, anything
    /// else as JSON text).
    pub const ITEM: &str = "ORK_ITEM";
    /// Instances of a fan-out task only: the item's 0-based index.
    pub const ITEM_INDEX: &str = "ORK_ITEM_INDEX";
}

/// Identity of the run an attempt belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunIdentity {
    /// Name of the workflow (the run's own name for an inline definition).
    pub workflow: String,
    pub run: String,
    /// The tick of a Run a Schedule made (RFC 3339, UTC).
    pub scheduled_time: Option<String>,
}

/// The ork-defined part of an attempt's environment, in order: the `ORK_*` variables (with
/// `ORK_WORKSPACE_<NAME>` for each of `workspaces`, the workspaces the task sees and where),
/// then one variable per input. A driver appends the task's own `env` after these.
pub fn ork_env(
    identity: &RunIdentity,
    task: &CompiledTask,
    launch: &Launch,
    output_path: &str,
    workspaces: &[(&str, &str)],
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
    if let Some(tick) = &identity.scheduled_time {
        env.push((vars::SCHEDULED_TIME.to_string(), tick.clone()));
    }
    for (name, path) in workspaces {
        env.push((crate::api::workspace_var(name), (*path).to_string()));
    }
    if let Some(instance) = &launch.instance {
        env.push((vars::ITEM.to_string(), input_env_value(&instance.item)));
        env.push((vars::ITEM_INDEX.to_string(), instance.index.to_string()));
    }
    if let Some(finally) = &launch.finally {
        let phase = match finally.run_phase {
            RunPhase::Succeeded => "Succeeded",
            RunPhase::Cancelled => "Cancelled",
            _ => "Failed",
        };
        env.push((vars::RUN_PHASE.to_string(), phase.to_string()));
        env.push((
            vars::FAILED_TASKS.to_string(),
            finally.failed_tasks.to_string(),
        ));
    }
    env.extend(
        launch
            .inputs
            .iter()
            .map(|(name, value)| (name.clone(), input_env_value(value))),
    );
    env
}

/// Why an attempt's ork-defined environment cannot be passed to a process: a variable (an
/// item, an input) longer than one environment variable may be, named instead of left to the
/// kernel's "Argument list too long".
pub fn oversized_var(env: &[(String, String)]) -> Option<String> {
    let (name, value) = env
        .iter()
        .find(|(_, value)| value.len() > MAX_EXPANDED_BYTES)?;
    Some(format!(
        "{name} is {} bytes, more than the {MAX_EXPANDED_BYTES} one environment variable may hold",
        value.len()
    ))
}

/// A JSON string is passed as the bare string; any other value as its JSON text.
pub fn input_env_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Longest expanded `command`/`args` entry or env value, in bytes: Linux refuses a single
/// argument or environment string longer than this (`MAX_ARG_STRLEN`, 32 pages of 4 KiB).
pub const MAX_EXPANDED_BYTES: usize = 128 * 1024;

/// One piece of an expanded string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'i, T> {
    /// Text copied from the input as it is (including references to unknown names).
    Text(&'i str),
    /// The value of a variable the input refers to.
    Value(T),
}

/// Splits `input` into the pieces of its expansion, the way Kubernetes expands container
/// commands, arguments and env values: `$(NAME)` is replaced by `lookup(NAME)`, `$$` is a literal
/// `$`, a reference to an unknown name is kept as written, and a `$` that starts no reference is
/// kept. `emit` returns `false` to stop early. Linear in the length of `input`.
pub fn expansion_pieces<'i, T>(
    input: &'i str,
    lookup: impl Fn(&str) -> Option<T>,
    mut emit: impl FnMut(Piece<'i, T>) -> bool,
) {
    let bytes = input.as_bytes();
    let mut checkpoint = 0;
    let mut cursor = 0;
    // Once a `$(` has no `)` after it, no later one has either: don't search again.
    let mut closes_left = true;
    while cursor + 1 < bytes.len() {
        if bytes[cursor] != b'$' {
            cursor += 1;
            continue;
        }
        if !emit(Piece::Text(&input[checkpoint..cursor])) {
            return;
        }
        let (piece, next) = match bytes[cursor + 1] {
            b'$' => (Piece::Text(&input[cursor + 1..cursor + 2]), cursor + 2),
            b'(' => match closes_left.then(|| input[cursor + 2..].find(')')).flatten() {
                Some(offset) => {
                    let close = cursor + 2 + offset;
                    match lookup(&input[cursor + 2..close]) {
                        Some(value) => (Piece::Value(value), close + 1),
                        None => (Piece::Text(&input[cursor..=close]), close + 1),
                    }
                }
                None => {
                    closes_left = false;
                    (Piece::Text(&input[cursor..cursor + 2]), cursor + 2)
                }
            },
            // Keep the `$`; what follows is copied as text.
            _ => (Piece::Text(&input[cursor..cursor + 1]), cursor + 1),
        };
        if !emit(piece) {
            return;
        }
        cursor = next;
        checkpoint = next;
    }
    emit(Piece::Text(&input[checkpoint.min(input.len())..]));
}

/// Expands `$(NAME)` references from `lookup` the way Kubernetes expands container commands,
/// arguments and env values: `$$` is a literal `$`, a reference to an unknown name is kept as
/// written, and a `$` that starts no reference is kept.
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    expansion_pieces(input, lookup, |piece| {
        out.push_str(match piece {
            Piece::Text(text) | Piece::Value(text) => text,
        });
        true
    });
    out
}

/// The expansion would be longer than the limit given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong;

/// [`expand`], stopping as soon as the result would pass `max` bytes: references can make an
/// expansion grow exponentially (each env value may repeat earlier ones many times).
pub fn expand_at_most<'a>(
    input: &str,
    max: usize,
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> Result<String, TooLong> {
    let mut out = String::with_capacity(input.len().min(max));
    let mut fits = true;
    expansion_pieces(input, lookup, |piece| {
        let text = match piece {
            Piece::Text(text) | Piece::Value(text) => text,
        };
        fits = out.len() + text.len() <= max;
        if fits {
            out.push_str(text);
        }
        fits
    });
    if fits { Ok(out) } else { Err(TooLong) }
}

/// The length in bytes of `input` expanded, where `lookup` gives the length of each variable's
/// value; saturates instead of overflowing. With lengths that are lower bounds, so is the result.
pub fn expanded_len(input: &str, lookup: impl Fn(&str) -> Option<u64>) -> u64 {
    let mut total = 0u64;
    expansion_pieces(input, lookup, |piece| {
        let len = match piece {
            Piece::Text(text) => text.len() as u64,
            Piece::Value(len) => len,
        };
        total = total.saturating_add(len);
        true
    });
    total
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
            let len = |name: &str| env(name).map(|v| v.len() as u64);
            assert_eq!(expanded_len(input, len), want.len() as u64, "{input:?}");
            assert_eq!(expand_at_most(input, want.len(), env).as_deref(), Ok(want));
            if !want.is_empty() {
                assert_eq!(expand_at_most(input, want.len() - 1, env), Err(TooLong));
            }
        }
    }

    #[test]
    fn unclosed_references_cost_linear_time() {
        let input = "$(".repeat(500_000);
        let started = std::time::Instant::now();
        assert_eq!(expand(&input, env), input);
        assert_eq!(expanded_len(&input, |_| Some(0)), input.len() as u64);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn bounded_expansion_stops_before_allocating() {
        // E1 = 64 × "x", each next one 64 references to the previous: E6 would be 64^6 bytes.
        let mut values: Vec<(String, String)> = vec![("E1".into(), "x".repeat(64))];
        for i in 2..=6 {
            let value = format!("$(E{})", i - 1).repeat(64);
            let lookup = |name: &str| {
                values
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
            };
            match expand_at_most(&value, MAX_EXPANDED_BYTES, lookup) {
                Ok(expanded) => values.push((format!("E{i}"), expanded)),
                Err(TooLong) => {
                    assert_eq!(i, 3, "64^3 bytes is the first past the limit");
                    return;
                }
            }
        }
        panic!("the expansion was never cut");
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
