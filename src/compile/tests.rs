//! Table-driven tests of the validator and compiler: every problem it can report (exact field,
//! message naming what is involved), what a valid spec compiles to, and parameter binding.

use std::collections::BTreeMap;

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::*;
use crate::api::{Backoff, InputSpec, ParamSpec, RetryPolicy, TaskSpec, WorkflowSpec};
use crate::problem::Problem;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Parses a `WorkflowSpec` (the `spec` of a Workflow) from YAML.
fn parse(yaml: &str) -> WorkflowSpec {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("test YAML does not parse: {e}\n{yaml}"))
}

fn compiled(yaml: &str) -> Dag {
    compile(&parse(yaml), "spec")
        .unwrap_or_else(|p| panic!("expected the spec to compile, got:\n{p}\n---\n{yaml}"))
}

fn problems_of(spec: &WorkflowSpec) -> Vec<Problem> {
    match compile(spec, "spec") {
        Ok(_) => panic!("expected problems, but the spec compiled: {spec:#?}"),
        Err(problems) => problems.0,
    }
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An expected problem: its exact field, and fragments its message must contain.
type Expect = (&'static str, &'static [&'static str]);

/// Checks that `got` holds exactly the problems in `want`, in any order.
fn check_problems(case: &str, got: &[Problem], want: &[Expect]) -> Result<(), String> {
    let mut left: Vec<&Problem> = got.iter().collect();
    let mut missing = Vec::new();
    for (field, fragments) in want {
        let found = left
            .iter()
            .position(|p| p.field == *field && fragments.iter().all(|f| p.message.contains(f)));
        match found {
            Some(i) => {
                left.remove(i);
            }
            None => missing.push(format!("  {field} mentioning {fragments:?}")),
        }
    }
    if missing.is_empty() && left.is_empty() {
        return Ok(());
    }
    let unexpected: Vec<Problem> = left.into_iter().cloned().collect();
    Err(format!(
        "{case}:\n missing:\n{}\n unexpected:\n{}\n all:\n{}",
        missing.join("\n"),
        render(&unexpected),
        render(got)
    ))
}

fn assert_problems(case: &str, got: &[Problem], want: &[Expect]) {
    if let Err(e) = check_problems(case, got, want) {
        panic!("{e}");
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn task(name: &str, depends_on: &[&str]) -> TaskSpec {
    TaskSpec {
        name: name.into(),
        image: Some("busybox".into()),
        command: vec!["true".into()],
        depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
        ..TaskSpec::default()
    }
}

/// A name as quoted in a message (`"a"`), without its quotes.
fn unquote(shown: &str) -> String {
    shown
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(shown)
        .to_string()
}

fn names<'a>(dag: &'a Dag, ids: &[TaskId]) -> Vec<&'a str> {
    ids.iter().map(|&id| dag.task(id).name.as_str()).collect()
}

// ---------------------------------------------------------------------------------------------
// Every problem the validator reports

struct Case {
    name: &'static str,
    yaml: &'static str,
    want: &'static [Expect],
}

const CASES: &[Case] = &[
    // --- workflow level
    Case {
        name: "empty task list",
        yaml: "tasks: []",
        want: &[("spec.tasks", &["at least one task"])],
    },
    Case {
        name: "parallelism 0",
        yaml: "
            parallelism: 0
            tasks: [{name: a, image: i, command: [sh]}]",
        want: &[("spec.parallelism", &["at least 1"])],
    },
    Case {
        name: "activeDeadlineSeconds 0",
        yaml: "
            activeDeadlineSeconds: 0
            tasks: [{name: a, image: i, command: [sh]}]",
        want: &[("spec.activeDeadlineSeconds", &["at least 1"])],
    },
    // --- params
    Case {
        name: "param name starting with a digit",
        yaml: "
            params: [{name: ok}, {name: 2day}]
            tasks: [{name: a, image: i, command: [sh]}]",
        want: &[("spec.params[1].name", &["\"2day\"", "^[A-Za-z_][A-Za-z0-9_]*$"])],
    },
    Case {
        name: "param name with a dash",
        yaml: "
            params: [{name: the-day}]
            tasks: [{name: a, image: i, command: [sh]}]",
        want: &[("spec.params[0].name", &["\"the-day\"", "must match"])],
    },
    Case {
        name: "empty param name",
        yaml: "
            params: [{name: ''}]
            tasks: [{name: a, image: i, command: [sh]}]",
        want: &[("spec.params[0].name", &["\"\"", "must match"])],
    },
    Case {
        name: "duplicate param name",
        yaml: "
            params: [{name: date}, {name: region}, {name: date, default: x}]
            tasks: [{name: a, image: i, command: [sh]}]",
        want: &[("spec.params[2].name", &["duplicate parameter", "\"date\""])],
    },
    // --- task names
    Case {
        name: "uppercase task name",
        yaml: "tasks: [{name: Extract, image: i, command: [sh]}]",
        want: &[("spec.tasks[0].name", &["\"Extract\"", "DNS-1123"])],
    },
    Case {
        name: "underscore in task name",
        yaml: "tasks: [{name: ok, image: i, command: [sh]}, {name: a_b, image: i, command: [sh]}]",
        want: &[("spec.tasks[1].name", &["\"a_b\"", "DNS-1123"])],
    },
    Case {
        name: "task name starting with a dash",
        yaml: "tasks: [{name: -a, image: i, command: [sh]}]",
        want: &[("spec.tasks[0].name", &["\"-a\"", "DNS-1123"])],
    },
    Case {
        name: "task name ending with a dash",
        yaml: "tasks: [{name: a-, image: i, command: [sh]}]",
        want: &[("spec.tasks[0].name", &["\"a-\"", "DNS-1123"])],
    },
    Case {
        name: "dot in task name",
        yaml: "tasks: [{name: a.b, image: i, command: [sh]}]",
        want: &[("spec.tasks[0].name", &["\"a.b\"", "DNS-1123"])],
    },
    Case {
        name: "empty task name",
        yaml: "tasks: [{name: '', image: i, command: [sh]}]",
        want: &[("spec.tasks[0].name", &["task name must not be empty"])],
    },
    Case {
        name: "task name of 64 characters",
        yaml: "tasks: [{name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, \
               image: i, command: [sh]}]",
        want: &[(
            "spec.tasks[0].name",
            &["\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"", "64", "63"],
        )],
    },
    Case {
        name: "duplicate task name",
        yaml: "
            defaults: {image: i}
            tasks:
              - {name: a, command: [sh]}
              - {name: b, command: [sh]}
              - {name: a, command: [sh]}",
        want: &[("spec.tasks[2].name", &["duplicate task name \"a\"", "spec.tasks[0]"])],
    },
    Case {
        name: "a reference to a badly named task reports only the name",
        yaml: "
            defaults: {image: i}
            tasks:
              - {name: Extract, command: [sh]}
              - name: load
                command: [sh]
                dependsOn: [Extract]
                inputs: [{name: ROWS, fromTask: Extract, output: rows}]",
        want: &[("spec.tasks[0].name", &["\"Extract\"", "DNS-1123"])],
    },
    // --- dependsOn
    Case {
        name: "unknown dependsOn",
        yaml: "
            defaults: {image: i}
            tasks:
              - {name: a, command: [sh]}
              - {name: b, command: [sh], dependsOn: [a, nope]}",
        want: &[("spec.tasks[1].dependsOn[1]", &["task \"b\"", "unknown task \"nope\""])],
    },
    Case {
        name: "self dependency",
        yaml: "
            defaults: {image: i}
            tasks:
              - {name: a, command: [sh]}
              - {name: b, command: [sh], dependsOn: [a, b]}",
        want: &[("spec.tasks[1].dependsOn[1]", &["task \"b\"", "depends on itself"])],
    },
    // --- image and command
    Case {
        name: "missing image without defaults.image",
        yaml: "
            tasks:
              - {name: a, image: i, command: [sh]}
              - {name: b, command: [sh]}",
        want: &[("spec.tasks[1].image", &["task \"b\"", "no image", "defaults.image"])],
    },
    Case {
        name: "missing image with defaults but no defaults.image",
        yaml: "
            defaults: {timeoutSeconds: 5}
            tasks: [{name: a, command: [sh]}]",
        want: &[("spec.tasks[0].image", &["task \"a\"", "no image"])],
    },
    Case {
        name: "empty task image overrides defaults.image",
        yaml: "
            defaults: {image: busybox}
            tasks: [{name: a, image: '', command: [sh]}]",
        want: &[("spec.tasks[0].image", &["task \"a\"", "empty"])],
    },
    Case {
        name: "empty defaults.image is reported once, at the defaults",
        yaml: "
            defaults: {image: ''}
            tasks:
              - {name: a, command: [sh]}
              - {name: b, image: busybox, command: [sh]}
              - {name: c, command: [sh]}",
        want: &[("spec.defaults.image", &["defaults", "empty"])],
    },
    Case {
        name: "missing command",
        yaml: "
            defaults: {image: i}
            tasks:
              - {name: a, command: [sh]}
              - {name: b, args: [x]}",
        want: &[("spec.tasks[1].command", &["task \"b\"", "no command"])],
    },
    // --- timeouts
    Case {
        name: "task timeoutSeconds 0",
        yaml: "tasks: [{name: a, image: i, command: [sh], timeoutSeconds: 0}]",
        want: &[("spec.tasks[0].timeoutSeconds", &["task \"a\"", "at least 1"])],
    },
    Case {
        name: "defaults timeoutSeconds 0",
        yaml: "
            defaults: {image: i, timeoutSeconds: 0}
            tasks: [{name: a, command: [sh]}]",
        want: &[("spec.defaults.timeoutSeconds", &["defaults", "at least 1"])],
    },
    // --- retries
    Case {
        name: "negative initialSeconds",
        yaml: "
            tasks:
              - name: a
                image: i
                command: [sh]
                retries: {limit: 1, backoff: {initialSeconds: -1}}",
        want: &[(
            "spec.tasks[0].retries.backoff.initialSeconds",
            &["task \"a\"", "at least 0", "-1"],
        )],
    },
    Case {
        name: "factor below 1",
        yaml: "
            tasks:
              - name: a
                image: i
                command: [sh]
                retries: {limit: 1, backoff: {factor: 0.5}}",
        want: &[("spec.tasks[0].retries.backoff.factor", &["task \"a\"", "at least 1", "0.5"])],
    },
    Case {
        name: "negative maxSeconds",
        yaml: "
            tasks:
              - name: a
                image: i
                command: [sh]
                retries: {limit: 1, backoff: {maxSeconds: -5}}",
        want: &[("spec.tasks[0].retries.backoff.maxSeconds", &["task \"a\"", "-5"])],
    },
    Case {
        name: "infinite factor",
        yaml: "
            tasks:
              - name: a
                image: i
                command: [sh]
                retries: {limit: 1, backoff: {factor: .inf}}",
        want: &[("spec.tasks[0].retries.backoff.factor", &["task \"a\"", "inf"])],
    },
    Case {
        name: "bad backoff in defaults",
        yaml: "
            defaults:
              image: i
              retries: {limit: 1, backoff: {initialSeconds: -0.5, factor: 0}}
            tasks: [{name: a, command: [sh]}]",
        want: &[
            ("spec.defaults.retries.backoff.initialSeconds", &["defaults", "-0.5"]),
            ("spec.defaults.retries.backoff.factor", &["defaults", "at least 1"]),
        ],
    },
    // --- env
    Case {
        name: "empty env name",
        yaml: "tasks: [{name: a, image: i, command: [sh], env: [{name: OK, value: x}, {name: '', value: x}]}]",
        want: &[("spec.tasks[0].env[1].name", &["task \"a\"", "must not be empty"])],
    },
    Case {
        name: "env name with the reserved prefix",
        yaml: "tasks: [{name: a, image: i, command: [sh], env: [{name: ORK_TASK, value: x}]}]",
        want: &[("spec.tasks[0].env[0].name", &["task \"a\"", "\"ORK_TASK\"", "reserved prefix ORK_"])],
    },
    Case {
        name: "env with value and valueFrom",
        yaml: "
            tasks:
              - name: a
                image: i
                command: [sh]
                env:
                  - name: POD
                    value: x
                    valueFrom: {fieldRef: {fieldPath: metadata.name}}",
        want: &[("spec.tasks[0].env[0]", &["task \"a\"", "\"POD\"", "both value and valueFrom"])],
    },
    Case {
        name: "bad env entries in defaults",
        yaml: "
            defaults:
              image: i
              env:
                - {name: '', value: x}
                - {name: ORK_RUN, value: x}
                - {name: POD, value: x, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            tasks: [{name: a, command: [sh]}]",
        want: &[
            ("spec.defaults.env[0].name", &["the defaults", "must not be empty"]),
            ("spec.defaults.env[1].name", &["the defaults", "\"ORK_RUN\"", "reserved"]),
            ("spec.defaults.env[2]", &["the defaults", "\"POD\"", "both value and valueFrom"]),
        ],
    },
    // --- inputs: names
    Case {
        name: "input name with a dash",
        yaml: "tasks: [{name: a, image: i, command: [sh], inputs: [{name: row-count, value: '1'}]}]",
        want: &[("spec.tasks[0].inputs[0].name", &["task \"a\"", "\"row-count\"", "must match"])],
    },
    Case {
        name: "input name starting with a digit",
        yaml: "tasks: [{name: a, image: i, command: [sh], inputs: [{name: 1X, value: '1'}]}]",
        want: &[("spec.tasks[0].inputs[0].name", &["task \"a\"", "\"1X\"", "must match"])],
    },
    Case {
        name: "input name with the reserved prefix",
        yaml: "tasks: [{name: a, image: i, command: [sh], inputs: [{name: ORK_INPUT_JSON, value: '1'}]}]",
        want: &[(
            "spec.tasks[0].inputs[0].name",
            &["task \"a\"", "\"ORK_INPUT_JSON\"", "reserved prefix ORK_"],
        )],
    },
    Case {
        name: "duplicate input name",
        yaml: "
            tasks:
              - name: a
                image: i
                command: [sh]
                inputs: [{name: X, value: '1'}, {name: Y, value: '2'}, {name: X, value: '3'}]",
        want: &[("spec.tasks[0].inputs[2].name", &["task \"a\"", "duplicate input \"X\""])],
    },
    Case {
        name: "input name collides with the task's env",
        yaml: "
            tasks:
              - name: a
                image: i
                command: [sh]
                env: [{name: MODE, value: full}]
                inputs: [{name: MODE, value: delta}]",
        want: &[("spec.tasks[0].inputs[0].name", &["task \"a\"", "\"MODE\"", "collides"])],
    },
    // --- inputs: sources
    Case {
        name: "input without a source",
        yaml: "tasks: [{name: a, image: i, command: [sh], inputs: [{name: X}]}]",
        want: &[("spec.tasks[0].inputs[0]", &["task \"a\"", "\"X\"", "exactly one", "found 0"])],
    },
    Case {
        name: "input with value and fromParam",
        yaml: "
            params: [{name: p, default: d}]
            tasks: [{name: a, image: i, command: [sh], inputs: [{name: X, value: v, fromParam: p}]}]",
        want: &[("spec.tasks[0].inputs[0]", &["task \"a\"", "\"X\"", "found 2"])],
    },
    Case {
        name: "input with all three sources",
        yaml: "
            params: [{name: p, default: d}]
            defaults: {image: i}
            tasks:
              - {name: up, command: [sh]}
              - name: a
                command: [sh]
                dependsOn: [up]
                inputs: [{name: X, value: v, fromParam: p, fromTask: up, output: k}]",
        want: &[("spec.tasks[1].inputs[0]", &["task \"a\"", "\"X\"", "found 3"])],
    },
    Case {
        name: "output without fromTask",
        yaml: "tasks: [{name: a, image: i, command: [sh], inputs: [{name: X, value: v, output: rows}]}]",
        want: &[("spec.tasks[0].inputs[0].output", &["task \"a\"", "\"X\"", "without fromTask"])],
    },
    Case {
        name: "output alone",
        yaml: "tasks: [{name: a, image: i, command: [sh], inputs: [{name: X, output: rows}]}]",
        want: &[
            ("spec.tasks[0].inputs[0]", &["task \"a\"", "\"X\"", "found 0"]),
            ("spec.tasks[0].inputs[0].output", &["task \"a\"", "\"X\"", "without fromTask"]),
        ],
    },
    Case {
        name: "fromParam names an undeclared parameter",
        yaml: "
            params: [{name: date}]
            tasks: [{name: a, image: i, command: [sh], inputs: [{name: X, fromParam: day}]}]",
        want: &[(
            "spec.tasks[0].inputs[0].fromParam",
            &["task \"a\"", "\"X\"", "undeclared parameter \"day\""],
        )],
    },
    Case {
        name: "fromParam of a badly named parameter reports only the name",
        yaml: "
            params: [{name: 1day, default: x}]
            tasks: [{name: a, image: i, command: [sh], inputs: [{name: X, fromParam: 1day}]}]",
        want: &[("spec.params[0].name", &["\"1day\"", "must match"])],
    },
    Case {
        name: "fromTask names an unknown task",
        yaml: "
            tasks: [{name: a, image: i, command: [sh], inputs: [{name: X, fromTask: nope, output: k}]}]",
        want: &[(
            "spec.tasks[0].inputs[0].fromTask",
            &["task \"a\"", "\"X\"", "unknown task \"nope\""],
        )],
    },
    Case {
        name: "fromTask names the task itself",
        yaml: "
            tasks: [{name: a, image: i, command: [sh], inputs: [{name: X, fromTask: a, output: k}]}]",
        want: &[("spec.tasks[0].inputs[0].fromTask", &["task \"a\"", "\"X\"", "own output"])],
    },
    Case {
        name: "fromTask without an output key",
        yaml: "
            defaults: {image: i}
            tasks:
              - {name: a, command: [sh]}
              - {name: b, command: [sh], dependsOn: [a], inputs: [{name: X, fromTask: a}]}",
        want: &[(
            "spec.tasks[1].inputs[0].output",
            &["task \"b\"", "\"X\"", "task \"a\"", "no output key"],
        )],
    },
    Case {
        name: "fromTask with an empty output key",
        yaml: "
            defaults: {image: i}
            tasks:
              - {name: a, command: [sh]}
              - {name: b, command: [sh], dependsOn: [a], inputs: [{name: X, fromTask: a, output: ''}]}",
        want: &[("spec.tasks[1].inputs[0].output", &["task \"b\"", "\"X\"", "no output key"])],
    },
    Case {
        name: "fromTask names a sibling",
        yaml: "
            defaults: {image: i}
            tasks:
              - {name: a, command: [sh]}
              - {name: b, command: [sh], dependsOn: [a]}
              - {name: c, command: [sh], dependsOn: [a], inputs: [{name: X, fromTask: b, output: k}]}",
        want: &[(
            "spec.tasks[2].inputs[0].fromTask",
            &["task \"c\"", "\"X\"", "task \"b\"", "not upstream"],
        )],
    },
    Case {
        name: "fromTask names a downstream task",
        yaml: "
            defaults: {image: i}
            tasks:
              - {name: a, command: [sh], inputs: [{name: X, fromTask: c, output: k}]}
              - {name: b, command: [sh], dependsOn: [a]}
              - {name: c, command: [sh], dependsOn: [b]}",
        want: &[(
            "spec.tasks[0].inputs[0].fromTask",
            &["task \"a\"", "\"X\"", "task \"c\"", "not upstream"],
        )],
    },
    Case {
        name: "fromTask names an unrelated task declared earlier",
        yaml: "
            defaults: {image: i}
            tasks:
              - {name: a, command: [sh]}
              - {name: b, command: [sh], inputs: [{name: X, fromTask: a, output: k}]}",
        want: &[("spec.tasks[1].inputs[0].fromTask", &["task \"b\"", "task \"a\"", "not upstream"])],
    },
    Case {
        name: "not-upstream input is named by its own index",
        yaml: "
            defaults: {image: i}
            tasks:
              - {name: a, command: [sh]}
              - {name: b, command: [sh]}
              - name: c
                command: [sh]
                dependsOn: [a]
                inputs:
                  - {name: BAD}
                  - {name: OK, fromTask: a, output: k}
                  - {name: X, fromTask: b, output: k}",
        want: &[
            ("spec.tasks[2].inputs[0]", &["task \"c\"", "\"BAD\"", "found 0"]),
            ("spec.tasks[2].inputs[2].fromTask", &["task \"c\"", "\"X\"", "task \"b\"", "not upstream"]),
        ],
    },
    Case {
        name: "fromTask neither upstream nor naming an output key",
        yaml: "
            defaults: {image: i}
            tasks:
              - {name: a, command: [sh]}
              - {name: b, command: [sh], inputs: [{name: X, fromTask: a}]}",
        want: &[
            ("spec.tasks[1].inputs[0].output", &["task \"b\"", "\"X\"", "no output key"]),
            ("spec.tasks[1].inputs[0].fromTask", &["task \"b\"", "\"X\"", "not upstream"]),
        ],
    },
    // --- env names: Kubernetes' rule
    Case {
        name: "env name with '='",
        yaml: "tasks: [{name: a, image: i, command: [sh], env: [{name: 'A=B', value: x}]}]",
        want: &[("spec.tasks[0].env[0].name", &["task \"a\"", "env name \"A=B\" is not valid"])],
    },
    Case {
        name: "env name with a newline",
        yaml: "tasks: [{name: a, image: i, command: [sh], env: [{name: \"A\\nB\", value: x}]}]",
        want: &[("spec.tasks[0].env[0].name", &["task \"a\"", "\"A\\nB\" is not valid"])],
    },
    Case {
        name: "env name with a space",
        yaml: "tasks: [{name: a, image: i, command: [sh], env: [{name: 'A B', value: x}]}]",
        want: &[("spec.tasks[0].env[0].name", &["task \"a\"", "\"A B\" is not valid"])],
    },
    Case {
        name: "env name starting with a digit",
        yaml: "tasks: [{name: a, image: i, command: [sh], env: [{name: 1A, value: x}]}]",
        want: &[("spec.tasks[0].env[0].name", &["\"1A\"", "not starting with a digit"])],
    },
    Case {
        name: "env name starting with '..'",
        yaml: "tasks: [{name: a, image: i, command: [sh], env: [{name: ..a, value: x}]}]",
        want: &[("spec.tasks[0].env[0].name", &["\"..a\"", "must not be '.' or start with '..'"])],
    },
    Case {
        name: "bad env name in defaults",
        yaml: "
            defaults: {image: i, env: [{name: ok, value: x}, {name: 'X=1', value: x}]}
            tasks: [{name: a, command: [sh]}]",
        want: &[("spec.defaults.env[1].name", &["the defaults", "\"X=1\" is not valid"])],
    },
    // --- resources
    Case {
        name: "a word as a quantity",
        yaml: "tasks: [{name: a, image: i, command: [sh], resources: {limits: {cpu: banana}}}]",
        want: &[(
            "spec.tasks[0].resources.limits.cpu",
            &["task \"a\": \"banana\" is not a Kubernetes quantity (e.g. 500m, 2, 1Gi)"],
        )],
    },
    Case {
        name: "two decimal points and an unknown suffix",
        yaml: "
            tasks:
              - name: a
                image: i
                command: [sh]
                resources: {requests: {cpu: '1.5.5', memory: 1Zi}}",
        want: &[
            ("spec.tasks[0].resources.requests.cpu", &["\"1.5.5\" is not a Kubernetes quantity"]),
            ("spec.tasks[0].resources.requests.memory", &["\"1Zi\" is not a Kubernetes quantity"]),
        ],
    },
    Case {
        name: "negative quantity",
        yaml: "tasks: [{name: a, image: i, command: [sh], resources: {requests: {memory: '-1'}}}]",
        want: &[(
            "spec.tasks[0].resources.requests.memory",
            &["task \"a\": requests.memory -1 must not be negative"],
        )],
    },
    Case {
        name: "requests above limits",
        yaml: "
            tasks:
              - name: a
                image: i
                command: [sh]
                resources: {requests: {cpu: '2', memory: 1Gi}, limits: {cpu: '1', memory: 1G}}",
        want: &[
            ("spec.tasks[0].resources.requests.cpu", &["task \"a\": requests.cpu 2 is above limits.cpu 1"]),
            ("spec.tasks[0].resources.requests.memory", &["requests.memory 1Gi is above limits.memory 1G"]),
        ],
    },
    Case {
        name: "requests above limits by a nano",
        yaml: "
            tasks:
              - name: a
                image: i
                command: [sh]
                resources: {requests: {cpu: 1000000001n}, limits: {cpu: '1'}}",
        want: &[("spec.tasks[0].resources.requests.cpu", &["above limits.cpu 1"])],
    },
    Case {
        name: "resource name Kubernetes does not know for containers",
        yaml: "tasks: [{name: a, image: i, command: [sh], resources: {limits: {gpu: '1'}}}]",
        want: &[("spec.tasks[0].resources.limits", &["task \"a\"", "\"gpu\"", "not a container resource"])],
    },
    Case {
        name: "resource name that is not a qualified name",
        yaml: "
            tasks:
              - name: a
                image: i
                command: [sh]
                resources: {requests: {'Example.com/gpu': '1', 'a b': '1'}}",
        want: &[
            ("spec.tasks[0].resources.requests", &["\"Example.com/gpu\" is not valid"]),
            ("spec.tasks[0].resources.requests", &["\"a b\" is not valid"]),
        ],
    },
    Case {
        name: "extended resources: whole units, requests equal to limits, limits set",
        yaml: "
            tasks:
              - name: a
                image: i
                command: [sh]
                resources:
                  requests: {example.com/gpu: '1', example.com/fpga: '1', example.com/tpu: '1'}
                  limits: {example.com/gpu: '2', example.com/nic: 500m}",
        want: &[
            (
                "spec.tasks[0].resources.requests.example.com/gpu",
                &["requests.example.com/gpu 1 must equal limits.example.com/gpu 2", "overcommitted"],
            ),
            ("spec.tasks[0].resources.limits", &["example.com/fpga is requested, so limits.example.com/fpga must be set"]),
            ("spec.tasks[0].resources.limits", &["example.com/tpu is requested"]),
            ("spec.tasks[0].resources.limits.example.com/nic", &["limits.example.com/nic 500m must be a whole number"]),
        ],
    },
    Case {
        name: "hugepages: whole pages, alongside cpu or memory",
        yaml: "
            tasks:
              - name: a
                image: i
                command: [sh]
                resources: {limits: {hugepages-2Mi: 3Mi}}",
        want: &[
            ("spec.tasks[0].resources.limits.hugepages-2Mi", &["3Mi must be a whole number of hugepages-2Mi pages"]),
            ("spec.tasks[0].resources", &["hugepages need a cpu or memory request or limit"]),
        ],
    },
    Case {
        name: "resource claims",
        yaml: "tasks: [{name: a, image: i, command: [sh], resources: {claims: [{name: gpu}]}}]",
        want: &[("spec.tasks[0].resources.claims", &["task \"a\"", "claims are not supported"])],
    },
    Case {
        name: "bad resources in defaults",
        yaml: "
            defaults:
              image: i
              resources: {requests: {cpu: '2', memory: lots}, limits: {cpu: 1500m}}
            tasks: [{name: a, command: [sh]}]",
        want: &[
            ("spec.defaults.resources.requests.cpu", &["the defaults: requests.cpu 2 is above limits.cpu 1500m"]),
            ("spec.defaults.resources.requests.memory", &["the defaults: \"lots\" is not"]),
        ],
    },
    // --- service accounts
    Case {
        name: "service account name that is not a DNS subdomain",
        yaml: "tasks: [{name: a, image: i, command: [sh], serviceAccountName: Etl_Runner}]",
        want: &[(
            "spec.tasks[0].serviceAccountName",
            &["task \"a\": service account name \"Etl_Runner\" is not a DNS-1123 subdomain"],
        )],
    },
    Case {
        name: "bad service account name in defaults",
        yaml: "
            defaults: {image: i, serviceAccountName: -runner}
            tasks: [{name: a, command: [sh]}]",
        want: &[("spec.defaults.serviceAccountName", &["the defaults", "\"-runner\""])],
    },
    // --- pod settings
    Case {
        name: "labels and annotations under ork.dev/ and bad keys and values",
        yaml: "
            defaults:
              image: i
              pod: {labels: {ork.dev/run: x}, annotations: {ork.dev/note: y}}
            tasks:
              - name: a
                command: [sh]
                pod:
                  labels: {-bad: v, ok: not a value}
                  nodeSelector: {gpu: 'a/b'}
                  priorityClassName: Batch_Low
                  imagePullSecrets: [{name: ''}]",
        want: &[
            ("spec.defaults.pod.labels", &["the defaults: \"ork.dev/run\" is under ork.dev/, which is ork's own"]),
            ("spec.defaults.pod.annotations", &["the defaults: \"ork.dev/note\" is under ork.dev/"]),
            ("spec.tasks[0].pod.labels", &["task \"a\": label key \"-bad\" is not valid"]),
            ("spec.tasks[0].pod.labels", &["label \"ok\"'s value \"not a value\" is not valid"]),
            ("spec.tasks[0].pod.nodeSelector", &["node selector \"gpu\"'s value \"a/b\""]),
            ("spec.tasks[0].pod.priorityClassName", &["priority class name \"Batch_Low\""]),
            ("spec.tasks[0].pod.imagePullSecrets[0].name", &["secret name"]),
        ],
    },
    Case {
        name: "volume mounts that name no volume, or a path not allowed",
        yaml: "
            tasks:
              - name: a
                image: i
                command: [sh]
                volumes: [{name: creds, secret: {secretName: s}}, {name: creds, emptyDir: {}}, {name: Bad}]
                volumeMounts:
                  - {name: other, mountPath: /x}
                  - {name: creds, mountPath: relative}
                  - {name: creds, mountPath: /dev/termination-log}
                  - {name: creds, mountPath: /y}
                  - {name: creds, mountPath: /y/}",
        want: &[
            ("spec.tasks[0].volumes[1].name", &["volume \"creds\" is declared twice"]),
            ("spec.tasks[0].volumes[2].name", &["volume name"]),
            ("spec.tasks[0].volumeMounts[0].name", &["names \"other\", which is not one of the task's volumes"]),
            ("spec.tasks[0].volumeMounts[1].mountPath", &["\"relative\" is not absolute"]),
            ("spec.tasks[0].volumeMounts[2].mountPath", &["ork needs it"]),
            ("spec.tasks[0].volumeMounts[4].mountPath", &["two volumes are mounted at \"/y/\""]),
        ],
    },
    // --- workspaces
    Case {
        name: "workspaces declared badly or mounted wrongly",
        yaml: "
            workspaces: [{name: source}, {name: source}, {name: Bad_Name}]
            tasks:
              - name: a
                image: i
                command: [sh]
                volumes: [{name: source, emptyDir: {}}]
                workspaces:
                  - {name: source}
                  - {name: source}
                  - {name: nope}
              - name: b
                image: i
                command: [sh]
                volumes: [{name: v, emptyDir: {}}]
                volumeMounts: [{name: v, mountPath: /data}]
                workspaces: [{name: source, mountPath: data}]
              - name: c
                image: i
                command: [sh]
                volumes: [{name: v, emptyDir: {}}]
                volumeMounts: [{name: v, mountPath: /data}]
                workspaces: [{name: source, mountPath: /data/}]",
        want: &[
            ("spec.workspaces[1].name", &["workspace \"source\" is declared twice"]),
            ("spec.workspaces[2].name", &["workspace name"]),
            ("spec.tasks[0].workspaces[0].name", &["task \"a\" has a volume named \"source\" too"]),
            ("spec.tasks[0].workspaces[1].name", &["task \"a\" mounts workspace \"source\" twice"]),
            ("spec.tasks[0].workspaces[2].name", &["mounts workspace \"nope\", which the workflow does not declare"]),
            ("spec.tasks[1].workspaces[0].mountPath", &["mount path \"data\" is not absolute"]),
            ("spec.tasks[2].workspaces[0].mountPath", &["two volumes or workspaces are mounted at \"/data/\""]),
        ],
    },
];

#[test]
fn every_problem_names_its_field_and_subject() {
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|case| {
            let got = match compile(&parse(case.yaml), "spec") {
                Ok(_) => return Some(format!("{}: compiled", case.name)),
                Err(problems) => problems.0,
            };
            check_problems(case.name, &got, case.want).err()
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn what_kubernetes_accepts_compiles() {
    let dag = compiled(
        "
        defaults:
          image: i
          serviceAccountName: etl.runner-1
          env: [{name: my.env-name, value: x}, {name: _x, value: y}]
          resources: {requests: {cpu: 100m}}
        tasks:
          - name: a
            command: [sh]
            serviceAccountName: ''
            env: [{name: MY_ENV.NAME, value: x}, {name: -dash, value: y}]
            resources:
              requests:
                cpu: '1'
                memory: 1Gi
                example.com/gpu: '2'
                hugepages-2Mi: 4Mi
                ephemeral-storage: 1e9
                kubernetes.io/anything: 500m
              limits:
                cpu: 1000m
                memory: '1073741824'
                example.com/gpu: 2
                hugepages-2Mi: 4194304
                ephemeral-storage: 1G
          - name: b
            command: [sh]
            resources: {requests: {cpu: 500m, memory: ' 1Mi '}, limits: {cpu: '1'}}",
    );
    assert_eq!(dag.len(), 2);
    assert_eq!(
        dag.task(TaskId(0)).service_account_name.as_deref(),
        Some("")
    );
}

/// Env entries with values.
fn envs(pairs: &[(&str, &str)]) -> Vec<EnvVar> {
    pairs.iter().map(|(n, v)| env(n, v)).collect()
}

#[test]
fn expansions_past_the_argument_limit_are_refused() {
    let x64 = "x".repeat(64);
    // E2 is 4,096 bytes once expanded, E3 262,144: past the limit of 131,072.
    let e2 = "$(E1)".repeat(64);
    let e3 = "$(E2)".repeat(64);
    let chain = || envs(&[("E1", &x64), ("E2", &e2)]);
    let too_long = |n: u64| {
        format!(
            "expands to at least {n} bytes; a single argument or environment variable may hold at most 131072"
        )
    };
    struct ExpandCase {
        name: &'static str,
        defaults: Vec<EnvVar>,
        tasks: Vec<TaskSpec>,
        want: Vec<(String, String)>,
    }
    let with = |env: Vec<EnvVar>, args: Vec<String>| TaskSpec {
        env,
        args,
        ..task("a", &[])
    };
    let cases = vec![
        ExpandCase {
            name: "each env value may repeat the ones before it",
            defaults: vec![],
            tasks: vec![with(
                [chain(), envs(&[("E3", &e3), ("E4", "$(E3)")])].concat(),
                vec![],
            )],
            want: vec![
                ("spec.tasks[0].env[2].value".into(), too_long(262_144)),
                ("spec.tasks[0].env[3].value".into(), too_long(262_144)),
            ],
        },
        ExpandCase {
            name: "command and args are expanded from the whole environment",
            defaults: vec![],
            tasks: vec![TaskSpec {
                command: vec!["sh".into(), "$(E2)".repeat(40)],
                ..with(
                    chain(),
                    vec!["ok".into(), "$(E2)$(E2)".into(), "$(E2)".repeat(33)],
                )
            }],
            want: vec![
                ("spec.tasks[0].command[1]".into(), too_long(163_840)),
                ("spec.tasks[0].args[2]".into(), too_long(135_168)),
            ],
        },
        ExpandCase {
            name: "$$ escapes a reference",
            defaults: vec![],
            tasks: vec![with(chain(), vec!["$$(E2)".repeat(64)])],
            want: vec![],
        },
        ExpandCase {
            name: "ORK_ variables, inputs and valueFrom count as empty",
            defaults: vec![],
            tasks: vec![TaskSpec {
                inputs: vec![InputSpec {
                    name: "X".into(),
                    value: Some("v".into()),
                    ..InputSpec::default()
                }],
                env: vec![EnvVar {
                    name: "POD".into(),
                    value_from: Some(Default::default()),
                    ..EnvVar::default()
                }],
                ..with(
                    vec![],
                    vec![
                        "$(X)".repeat(40_000),
                        "$(ORK_INPUT_JSON)".repeat(10_000),
                        "$(POD)".repeat(30_000),
                    ],
                )
            }],
            want: vec![],
        },
        ExpandCase {
            name: "a reference to an unknown or later name stays as written",
            defaults: vec![],
            tasks: vec![with(
                envs(&[("B", &"$(A)".repeat(64)), ("A", &"x".repeat(100_000))]),
                vec!["$(NOPE)".repeat(20_000)],
            )],
            want: vec![("spec.tasks[0].args[0]".into(), too_long(140_000))],
        },
        ExpandCase {
            name: "a later definition shadows an earlier one",
            defaults: vec![],
            tasks: vec![with(
                envs(&[
                    ("A", &x64),
                    ("A", &"$(A)".repeat(64)),
                    ("B", &"$(A)".repeat(64)),
                ]),
                vec![],
            )],
            want: vec![("spec.tasks[0].env[2].value".into(), too_long(262_144))],
        },
        ExpandCase {
            name: "a default entry is reported once, a task's own entry per task",
            defaults: [chain(), envs(&[("E3", &e3)])].concat(),
            tasks: vec![
                with(envs(&[("OWN", &e3)]), vec![]),
                TaskSpec {
                    name: "b".into(),
                    ..with(envs(&[("OWN", &e3)]), vec![])
                },
            ],
            want: vec![
                (
                    "spec.defaults.env[2].value".into(),
                    format!(
                        "the defaults, for task \"a\": env \"E3\": {}",
                        too_long(262_144)
                    ),
                ),
                (
                    "spec.tasks[0].env[0].value".into(),
                    format!("task \"a\": env \"OWN\": {}", too_long(262_144)),
                ),
                (
                    "spec.tasks[1].env[0].value".into(),
                    format!("task \"b\": env \"OWN\": {}", too_long(262_144)),
                ),
            ],
        },
        ExpandCase {
            name: "lengths saturate instead of overflowing",
            defaults: vec![],
            tasks: vec![with(
                [env("E0", "x")]
                    .into_iter()
                    .chain(
                        (1..=12)
                            .map(|i| env(&format!("E{i}"), &format!("$(E{})", i - 1).repeat(64))),
                    )
                    .collect(),
                vec![],
            )],
            // 64^i bytes, until that passes 2^64.
            want: (3..=12)
                .map(|i| {
                    let len = 64u64.checked_pow(i).unwrap_or(u64::MAX);
                    (format!("spec.tasks[0].env[{i}].value"), too_long(len))
                })
                .collect(),
        },
    ];
    for case in cases {
        let spec = WorkflowSpec {
            defaults: Some(TaskDefaults {
                env: case.defaults,
                ..TaskDefaults::default()
            }),
            tasks: case.tasks,
            ..WorkflowSpec::default()
        };
        let got: Vec<(String, String)> = match compile(&spec, "spec") {
            Ok(_) => vec![],
            Err(problems) => problems
                .0
                .into_iter()
                .map(|p| (p.field, p.message))
                .collect(),
        };
        let got: Vec<(String, String)> = got
            .into_iter()
            .map(|(field, message)| {
                let want = case.want.iter().find(|(f, _)| *f == field);
                // Compare whole messages where the case gives them, the tail otherwise.
                match want {
                    Some((_, w)) if !w.starts_with("expands") => (field, message),
                    _ => (
                        field,
                        message.split(": ").last().unwrap_or_default().to_string(),
                    ),
                }
            })
            .collect();
        assert_eq!(got, case.want, "{}", case.name);
    }
}

#[test]
fn echoed_input_is_bounded() {
    // A 200 KB task name in 3,000 problems, a cycle of such names, inputs reading far away.
    let long = |c: char| c.to_string().repeat(200_000);
    let mut bad = task(&long('a'), &[]);
    bad.depends_on = (0..3_000).map(|i| format!("{}{i}", long('n'))).collect();
    bad.inputs = vec![InputSpec {
        name: long('I'),
        from_task: Some(long('b')),
        output: Some("k".into()),
        ..InputSpec::default()
    }];
    bad.env = vec![env(&format!("{}=", long('E')), "v")];
    bad.service_account_name = Some(long('S'));
    bad.resources = Some(ResourceRequirements {
        limits: quantities(&[(&long('r'), &long('9')), ("cpu", &long('z'))]),
        ..ResourceRequirements::default()
    });
    let cycle = [
        task(&long('c'), &[&long('d')]),
        task(&long('d'), &[&long('c')]),
    ];
    let spec = WorkflowSpec {
        params: vec![ParamSpec {
            name: long('p'),
            ..ParamSpec::default()
        }],
        tasks: [vec![bad, task(&long('b'), &[])], cycle.to_vec()].concat(),
        ..WorkflowSpec::default()
    };
    let problems = compile(&spec, "spec").unwrap_err();
    assert_eq!(problems.len(), Problems::MAX_KEPT + 1);
    for problem in problems.iter() {
        assert!(problem.to_string().len() < 600, "{problem}");
    }
    assert!(
        problems.omitted() > 2_000,
        "the 3,000 unknown dependencies are counted"
    );
    let all = problems.to_string();
    assert!(all.len() < 400_000, "{} bytes", all.len());
    assert!(all.ends_with(&format!("… and {} more problems", problems.omitted())));
}

#[test]
fn thousands_of_unknown_params_make_one_bounded_problem() {
    let declared: Vec<ParamSpec> = (0..5_000)
        .map(|i| ParamSpec {
            name: format!("declared_{i}"),
            ..ParamSpec::default()
        })
        .collect();
    let dag = compile(
        &WorkflowSpec {
            params: declared,
            tasks: vec![task("a", &[])],
            ..WorkflowSpec::default()
        },
        "spec",
    )
    .unwrap();
    let values: BTreeMap<String, String> = (0..5_000)
        .map(|i| (format!("unknown_{i:04}"), "v".to_string()))
        .collect();
    let problems = bind_params(&dag, &values, "spec.params").unwrap_err().0;
    assert_eq!(problems.len(), 2, "{}", render(&problems));
    let unknown = &problems[0];
    assert_eq!(unknown.field, "spec.params");
    assert!(
        unknown
            .message
            .starts_with(r#"unknown parameters "unknown_0000", "unknown_0001", "#),
        "{unknown}"
    );
    assert!(
        unknown.message.contains(
            r#""unknown_0019", … (4980 more); the workflow declares "declared_0", "declared_1", "#
        ),
        "{unknown}"
    );
    assert!(unknown.message.ends_with(r#""declared_19", … (4980 more)"#));
    let missing = &problems[1];
    assert_eq!(missing.field, "spec.params");
    assert!(
        missing
            .message
            .starts_with(r#"required parameters "declared_0", "#)
    );
    assert!(
        missing
            .message
            .ends_with(" … (4980 more) have no value and no default")
    );
    assert!(unknown.message.len() + missing.message.len() < 2_000);
}

#[test]
fn problems_are_prefixed_with_the_base_path() {
    let spec = parse(
        "
        defaults: {image: i, timeoutSeconds: 0}
        tasks: [{name: a, command: [sh], dependsOn: [nope]}]",
    );
    let got = compile(&spec, "spec.workflow").unwrap_err().0;
    assert_problems(
        "inline workflow",
        &got,
        &[
            ("spec.workflow.defaults.timeoutSeconds", &["at least 1"]),
            (
                "spec.workflow.tasks[0].dependsOn[0]",
                &["unknown task \"nope\""],
            ),
        ],
    );
}

#[test]
fn longest_task_name_is_accepted() {
    let name = "a".repeat(63);
    let spec = WorkflowSpec {
        tasks: vec![task(&name, &[])],
        ..WorkflowSpec::default()
    };
    let dag = compile(&spec, "spec").unwrap();
    assert_eq!(dag.id(&name), Some(TaskId(0)));
}

#[test]
fn nan_backoff_values_are_rejected() {
    let nan = RetryPolicy {
        limit: 1,
        backoff: Some(Backoff {
            initial_seconds: Some(f64::NAN),
            factor: Some(f64::NAN),
            max_seconds: Some(f64::NAN),
        }),
        ..RetryPolicy::default()
    };
    let mut spec = WorkflowSpec {
        tasks: vec![task("a", &[])],
        ..WorkflowSpec::default()
    };
    spec.tasks[0].retries = Some(nan.clone());
    spec.defaults = Some(TaskDefaults {
        retries: Some(nan),
        ..TaskDefaults::default()
    });
    assert_problems(
        "NaN backoff",
        &problems_of(&spec),
        &[
            (
                "spec.defaults.retries.backoff.initialSeconds",
                &["defaults", "NaN"],
            ),
            ("spec.defaults.retries.backoff.factor", &["defaults", "NaN"]),
            (
                "spec.defaults.retries.backoff.maxSeconds",
                &["defaults", "NaN"],
            ),
            (
                "spec.tasks[0].retries.backoff.initialSeconds",
                &["task \"a\"", "NaN"],
            ),
            (
                "spec.tasks[0].retries.backoff.factor",
                &["task \"a\"", "NaN"],
            ),
            (
                "spec.tasks[0].retries.backoff.maxSeconds",
                &["task \"a\"", "NaN"],
            ),
        ],
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let spec = parse(
        "
        params: [{name: date}, {name: date}]
        parallelism: 0
        activeDeadlineSeconds: 0
        defaults: {timeoutSeconds: 0, env: [{name: ORK_X, value: x}]}
        tasks:
          - name: Bad_Name
            command: [sh]
          - name: b
            image: i
            dependsOn: [ghost, b]
            retries: {limit: 1, backoff: {factor: 0.1}}
            inputs:
              - {name: ORK_Y, value: v}
              - {name: Z, fromParam: nope}
              - {name: W, fromTask: b, output: k}
          - {name: c, image: i, command: [sh], dependsOn: [d]}
          - {name: d, image: i, command: [sh], dependsOn: [c]}
          - {name: d, image: i, command: [sh], timeoutSeconds: 0}",
    );
    assert_problems(
        "many problems",
        &problems_of(&spec),
        &[
            ("spec.parallelism", &["at least 1"]),
            ("spec.activeDeadlineSeconds", &["at least 1"]),
            (
                "spec.params[1].name",
                &["duplicate parameter name \"date\""],
            ),
            ("spec.defaults.timeoutSeconds", &["at least 1"]),
            ("spec.defaults.env[0].name", &["\"ORK_X\""]),
            ("spec.tasks[0].name", &["\"Bad_Name\""]),
            ("spec.tasks[0].image", &["task \"Bad_Name\"", "no image"]),
            (
                "spec.tasks[1].dependsOn[0]",
                &["task \"b\"", "unknown task \"ghost\""],
            ),
            ("spec.tasks[1].dependsOn[1]", &["task \"b\"", "itself"]),
            ("spec.tasks[1].command", &["task \"b\""]),
            (
                "spec.tasks[1].retries.backoff.factor",
                &["task \"b\"", "0.1"],
            ),
            ("spec.tasks[1].inputs[0].name", &["task \"b\"", "\"ORK_Y\""]),
            (
                "spec.tasks[1].inputs[1].fromParam",
                &["task \"b\"", "\"nope\""],
            ),
            (
                "spec.tasks[1].inputs[2].fromTask",
                &["task \"b\"", "own output"],
            ),
            (
                "spec.tasks[2].dependsOn",
                &[r#"dependency cycle: "c" -> "d" -> "c""#],
            ),
            ("spec.tasks[4].name", &["duplicate task name \"d\""]),
            ("spec.tasks[4].timeoutSeconds", &["task \"d\""]),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Cycles

/// The tasks a cycle message lists, in order (each depends on the next), without the repeated
/// first task at the end.
fn cycle_in(message: &str) -> Vec<String> {
    let rest = message
        .strip_prefix("dependency cycle: ")
        .unwrap_or_else(|| panic!("not a cycle message: {message}"));
    let list = rest.split(" (each").next().unwrap();
    let mut tasks: Vec<String> = list.split(" -> ").map(unquote).collect();
    let last = tasks.pop().unwrap();
    assert_eq!(
        Some(&last),
        tasks.first(),
        "cycle does not close: {message}"
    );
    tasks
}

struct CycleCase {
    name: &'static str,
    yaml: &'static str,
    /// Field of each cycle problem, and the tasks on the cycle, each depending on the next.
    want: &'static [(&'static str, &'static [&'static str])],
}

const CYCLE_CASES: &[CycleCase] = &[
    CycleCase {
        name: "2-cycle",
        yaml: "
            - {name: a, dependsOn: [b]}
            - {name: b, dependsOn: [a]}",
        want: &[("spec.tasks[0].dependsOn", &["a", "b"])],
    },
    CycleCase {
        name: "3-cycle",
        yaml: "
            - {name: a, dependsOn: [c]}
            - {name: b, dependsOn: [a]}
            - {name: c, dependsOn: [b]}",
        want: &[("spec.tasks[0].dependsOn", &["a", "c", "b"])],
    },
    CycleCase {
        name: "3-cycle behind a valid prefix",
        yaml: "
            - {name: root}
            - {name: x, dependsOn: [root, z]}
            - {name: y, dependsOn: [x]}
            - {name: z, dependsOn: [y, root]}",
        want: &[("spec.tasks[1].dependsOn", &["x", "z", "y"])],
    },
    CycleCase {
        name: "two separate cycles",
        yaml: "
            - {name: a, dependsOn: [b]}
            - {name: b, dependsOn: [a]}
            - {name: ok}
            - {name: c, dependsOn: [d, ok]}
            - {name: d, dependsOn: [e]}
            - {name: e, dependsOn: [c]}",
        want: &[
            ("spec.tasks[0].dependsOn", &["a", "b"]),
            ("spec.tasks[3].dependsOn", &["c", "d", "e"]),
        ],
    },
    CycleCase {
        name: "tasks downstream of a cycle are not on it",
        yaml: "
            - {name: late, dependsOn: [after]}
            - {name: after, dependsOn: [a]}
            - {name: a, dependsOn: [b]}
            - {name: b, dependsOn: [a]}
            - {name: also-after, dependsOn: [b, late]}",
        want: &[("spec.tasks[2].dependsOn", &["a", "b"])],
    },
    CycleCase {
        name: "a cycle downstream of another cycle",
        yaml: "
            - {name: a, dependsOn: [c, b]}
            - {name: b, dependsOn: [a]}
            - {name: c, dependsOn: [d]}
            - {name: d, dependsOn: [c]}",
        want: &[
            ("spec.tasks[0].dependsOn", &["a", "b"]),
            ("spec.tasks[2].dependsOn", &["c", "d"]),
        ],
    },
    CycleCase {
        name: "a chain of three cycles, each upstream of the next",
        yaml: "
            - {name: a1, dependsOn: [b1, a2]}
            - {name: a2, dependsOn: [a1]}
            - {name: b1, dependsOn: [c1, b2]}
            - {name: b2, dependsOn: [b1]}
            - {name: c1, dependsOn: [c2]}
            - {name: c2, dependsOn: [c1]}",
        want: &[
            ("spec.tasks[0].dependsOn", &["a1", "a2"]),
            ("spec.tasks[2].dependsOn", &["b1", "b2"]),
            ("spec.tasks[4].dependsOn", &["c1", "c2"]),
        ],
    },
];

#[test]
fn cycles_list_exactly_the_tasks_on_them() {
    let mut failures = Vec::new();
    for case in CYCLE_CASES {
        let mut spec = parse(&format!("defaults: {{image: i}}\ntasks:{}", case.yaml));
        for t in &mut spec.tasks {
            t.command = vec!["sh".into()];
        }
        let got = problems_of(&spec);
        let got_cycles: Vec<(&str, Vec<String>)> = got
            .iter()
            .map(|p| (p.field.as_str(), cycle_in(&p.message)))
            .collect();
        let want: Vec<(&str, Vec<String>)> = case
            .want
            .iter()
            .map(|(field, tasks)| (*field, tasks.iter().map(|t| t.to_string()).collect()))
            .collect();
        if got_cycles != want {
            failures.push(format!(
                "{}: expected {want:?}, got:\n{}",
                case.name,
                render(&got)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn tasks_on_other_cycles_of_the_same_knot_are_named_too() {
    // a <-> b and b <-> c: one strongly connected knot, two cycles through b.
    let spec = WorkflowSpec {
        tasks: vec![task("a", &["b"]), task("b", &["a", "c"]), task("c", &["b"])],
        ..WorkflowSpec::default()
    };
    let got = problems_of(&spec);
    assert_eq!(got.len(), 1, "{}", render(&got));
    assert_eq!(got[0].field, "spec.tasks[0].dependsOn");
    assert_eq!(cycle_in(&got[0].message), ["a", "b"]);
    assert!(got[0].message.contains("c"), "{}", got[0].message);
}

// ---------------------------------------------------------------------------------------------
// What compiles

const FULL: &str = r#"
params:
  - {name: date, default: "2026-01-01"}
  - {name: region}
defaults:
  image: busybox:1.36
  env: [{name: LOG_LEVEL, value: info}, {name: REGION, value: eu}, {name: KEEP, value: k}]
  retries: {limit: 2, backoff: {initialSeconds: 3, factor: 4, maxSeconds: 30}}
  timeoutSeconds: 600
  resources: {requests: {cpu: 100m}}
  serviceAccountName: etl-runner
parallelism: 10
activeDeadlineSeconds: 3600
tasks:
  - name: plain
    command: [sh]
  - name: custom
    image: python:3.12-slim
    command: [python]
    args: [-c, pass]
    env: [{name: LOG_LEVEL, value: debug}, {name: OWN, value: o}]
    dependsOn: [plain]
    inputs:
      - {name: REGION, fromParam: region}
      - {name: DAY, fromParam: date}
      - {name: ROWS, fromTask: plain, output: rows}
      - {name: MODE, value: full}
    retries: {limit: 5}
    timeoutSeconds: 120
    resources: {limits: {memory: 1Gi}}
    serviceAccountName: own
  - name: own-backoff
    command: [sh]
    retries: {limit: 1, backoff: {factor: 3}}
"#;

fn quantities(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect(),
    )
}

#[test]
fn defaults_are_applied_unless_the_task_sets_the_field() {
    let dag = compiled(FULL);
    assert_eq!(dag.len(), 3);
    assert_eq!(dag.parallelism(), Some(10));
    assert_eq!(dag.active_deadline(), Some(SignedDuration::from_secs(3600)));
    assert_eq!(
        dag.params()
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["date", "region"]
    );

    let plain = dag.task(dag.id("plain").unwrap());
    assert_eq!(plain.image.as_deref(), Some("busybox:1.36"));
    assert_eq!(plain.command, ["sh"]);
    assert_eq!(
        plain.env,
        [
            env("LOG_LEVEL", "info"),
            env("REGION", "eu"),
            env("KEEP", "k")
        ]
    );
    assert_eq!(
        plain.retry,
        Retry {
            limit: 2,
            initial_seconds: 3.0,
            factor: 4.0,
            max_seconds: 30.0
        }
    );
    assert_eq!(plain.timeout, Some(SignedDuration::from_secs(600)));
    assert_eq!(
        plain.resources,
        Some(ResourceRequirements {
            requests: quantities(&[("cpu", "100m")]),
            ..ResourceRequirements::default()
        })
    );
    assert_eq!(plain.service_account_name.as_deref(), Some("etl-runner"));
    assert!(plain.inputs.is_empty());

    let custom = dag.task(TaskId(1));
    assert_eq!(custom.name, "custom");
    assert_eq!(custom.image.as_deref(), Some("python:3.12-slim"));
    assert_eq!(custom.command, ["python"]);
    assert_eq!(custom.args, ["-c", "pass"]);
    // Defaults first, minus those the task or an input overrides; then the task's own entries.
    assert_eq!(
        custom.env,
        [env("KEEP", "k"), env("LOG_LEVEL", "debug"), env("OWN", "o")]
    );
    assert_eq!(
        custom.inputs,
        [
            Input {
                name: "REGION".into(),
                source: InputSource::Param(1)
            },
            Input {
                name: "DAY".into(),
                source: InputSource::Param(0)
            },
            Input {
                name: "ROWS".into(),
                source: InputSource::Task {
                    task: TaskId(0),
                    output: "rows".into()
                }
            },
            Input {
                name: "MODE".into(),
                source: InputSource::Value("full".into())
            },
        ]
    );
    // The limit comes from the task, the backoff from the defaults.
    assert_eq!(
        custom.retry,
        Retry {
            limit: 5,
            initial_seconds: 3.0,
            factor: 4.0,
            max_seconds: 30.0
        }
    );
    assert_eq!(custom.timeout, Some(SignedDuration::from_secs(120)));
    assert_eq!(
        custom.resources,
        Some(ResourceRequirements {
            limits: quantities(&[("memory", "1Gi")]),
            ..ResourceRequirements::default()
        })
    );
    assert_eq!(custom.service_account_name.as_deref(), Some("own"));

    // A task's own backoff replaces the defaults' backoff as a whole; unset fields take the
    // contract's defaults, not the workflow defaults'.
    let own = dag.task(TaskId(2));
    assert_eq!(
        own.retry,
        Retry {
            limit: 1,
            initial_seconds: Retry::DEFAULT_INITIAL_SECONDS,
            factor: 3.0,
            max_seconds: Retry::DEFAULT_MAX_SECONDS
        }
    );

    assert_eq!(names(&dag, dag.parents(TaskId(1))), ["plain"]);
    assert_eq!(names(&dag, dag.children(TaskId(0))), ["custom"]);
    assert!(dag.parents(TaskId(2)).is_empty() && dag.children(TaskId(2)).is_empty());
}

#[test]
fn without_defaults_tasks_keep_their_own_fields() {
    let dag = compiled(
        "
        tasks:
          - {name: a, image: alpine, command: [sh], env: [{name: A, value: '1'}]}
          - {name: b, image: alpine, command: [sh], retries: {limit: 3}}",
    );
    assert_eq!(dag.parallelism(), None);
    assert_eq!(dag.active_deadline(), None);
    let a = dag.task(TaskId(0));
    assert_eq!(a.env, [env("A", "1")]);
    assert_eq!(a.retry, Retry::default());
    assert_eq!(a.timeout, None);
    assert_eq!(a.resources, None);
    assert_eq!(a.service_account_name, None);
    assert_eq!(
        dag.task(TaskId(1)).retry,
        Retry {
            limit: 3,
            ..Retry::default()
        }
    );
}

#[test]
fn an_input_drops_a_default_env_entry_of_the_same_name() {
    let dag = compiled(
        "
        defaults: {image: i, env: [{name: DAY, value: default}, {name: OTHER, value: o}]}
        tasks: [{name: a, command: [sh], inputs: [{name: DAY, value: today}]}]",
    );
    assert_eq!(dag.task(TaskId(0)).env, [env("OTHER", "o")]);
}

#[test]
fn duplicate_depends_on_entries_make_one_edge() {
    let dag = compiled(
        "
        defaults: {image: i}
        tasks:
          - {name: a, command: [sh]}
          - {name: b, command: [sh], dependsOn: [a, a]}
          - {name: c, command: [sh], dependsOn: [a, b, a, b, a]}
          - {name: d, command: [sh], dependsOn: [c, c]}",
    );
    let id = |n: &str| dag.id(n).unwrap();
    assert_eq!(names(&dag, dag.parents(id("b"))), ["a"]);
    assert_eq!(names(&dag, dag.parents(id("c"))), ["a", "b"]);
    assert_eq!(names(&dag, dag.parents(id("d"))), ["c"]);
    assert_eq!(names(&dag, dag.children(id("a"))), ["b", "c"]);
    assert_eq!(names(&dag, dag.children(id("b"))), ["c"]);
    assert_eq!(names(&dag, dag.children(id("c"))), ["d"]);
    assert!(dag.children(id("d")).is_empty());
}

#[test]
fn inputs_may_read_any_transitive_ancestor() {
    // Declared out of order, with a diamond: `sink` reaches `root` only through `left`.
    let dag = compiled(
        "
        defaults: {image: i}
        tasks:
          - name: sink
            command: [sh]
            dependsOn: [left, right]
            inputs:
              - {name: R, fromTask: root, output: k}
              - {name: M, fromTask: mid, output: k}
              - {name: L, fromTask: left, output: k}
          - {name: right, command: [sh]}
          - {name: left, command: [sh], dependsOn: [mid]}
          - {name: mid, command: [sh], dependsOn: [root]}
          - {name: root, command: [sh]}",
    );
    let sources: Vec<&str> = dag
        .task(TaskId(0))
        .inputs
        .iter()
        .map(|input| match &input.source {
            InputSource::Task { task, output } => {
                assert_eq!(output, "k");
                dag.task(*task).name.as_str()
            }
            other => panic!("unexpected source {other:?}"),
        })
        .collect();
    assert_eq!(sources, ["root", "mid", "left"]);
}

// ---------------------------------------------------------------------------------------------
// Parameter binding

#[test]
fn bind_params_applies_defaults_and_reports_bad_values() {
    let dag = compiled(
        "
        params:
          - {name: date, default: '2026-01-01'}
          - {name: region}
          - {name: mode, default: full}
        tasks: [{name: a, image: i, command: [sh]}]",
    );
    struct BindCase {
        name: &'static str,
        values: &'static [(&'static str, &'static str)],
        want: Result<&'static [&'static str], &'static [Expect]>,
    }
    let cases = [
        BindCase {
            name: "defaults fill the rest",
            values: &[("region", "eu")],
            want: Ok(&["2026-01-01", "eu", "full"]),
        },
        BindCase {
            name: "values override defaults",
            values: &[("region", "us"), ("date", "2026-11-26"), ("mode", "")],
            want: Ok(&["2026-11-26", "us", ""]),
        },
        BindCase {
            name: "required parameter missing",
            values: &[("date", "2026-11-26")],
            want: Err(&[(
                "spec.params",
                &["required parameter \"region\" has no value and no default"],
            )]),
        },
        BindCase {
            name: "unknown parameter",
            values: &[("region", "eu"), ("day", "x")],
            want: Err(&[(
                "spec.params",
                &[r#"unknown parameter "day"; the workflow declares "date", "region", "mode""#],
            )]),
        },
        BindCase {
            name: "unknown and missing together",
            values: &[("zone", "x"), ("Region", "eu")],
            want: Err(&[
                (
                    "spec.params",
                    &[r#"unknown parameters "Region", "zone"; the workflow"#],
                ),
                ("spec.params", &[r#"required parameter "region" has no"#]),
            ]),
        },
    ];
    for case in cases {
        let values: BTreeMap<String, String> = case
            .values
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match (bind_params(&dag, &values, "spec.params"), case.want) {
            (Ok(bound), Ok(want)) => {
                let got: Vec<&str> = (0..want.len()).map(|i| bound.get(i).unwrap()).collect();
                assert_eq!(got, want, "{}", case.name);
                assert_eq!(bound.get(want.len()), None, "{}", case.name);
            }
            (Err(problems), Err(want)) => assert_problems(case.name, &problems.0, want),
            (got, _) => panic!("{}: unexpected result {got:?}", case.name),
        }
    }
}

#[test]
fn bind_params_without_declared_params() {
    let dag = compiled("tasks: [{name: a, image: i, command: [sh]}]");
    assert_eq!(
        bind_params(&dag, &BTreeMap::new(), "params"),
        Ok(BoundParams::default())
    );
    let values = BTreeMap::from([("x".to_string(), "1".to_string())]);
    let problems = bind_params(&dag, &values, "params").unwrap_err();
    assert_problems(
        "no params declared",
        &problems.0,
        &[(
            "params",
            &[r#"unknown parameter "x"; the workflow declares no parameters"#],
        )],
    );
}

// ---------------------------------------------------------------------------------------------
// Scale: large graphs compile (the validator is linear; no timing is asserted here)

const BIG: usize = 100_000;

fn numbered(i: usize) -> String {
    format!("t{i}")
}

#[test]
fn a_100k_task_chain_compiles() {
    let tasks: Vec<TaskSpec> = (0..BIG)
        .map(|i| {
            let deps = if i == 0 {
                vec![]
            } else {
                vec![numbered(i - 1)]
            };
            TaskSpec {
                depends_on: deps,
                ..task(&numbered(i), &[])
            }
        })
        .collect();
    let dag = compile(
        &WorkflowSpec {
            tasks,
            ..WorkflowSpec::default()
        },
        "spec",
    )
    .unwrap();
    assert_eq!(dag.len(), BIG);
    for i in 0..BIG {
        let id = TaskId(i as u32);
        assert_eq!(dag.id(&numbered(i)), Some(id));
        let parents: &[TaskId] = if i == 0 { &[] } else { &[TaskId(i as u32 - 1)] };
        let children: &[TaskId] = if i + 1 == BIG {
            &[]
        } else {
            &[TaskId(i as u32 + 1)]
        };
        assert_eq!(dag.parents(id), parents, "parents of {i}");
        assert_eq!(dag.children(id), children, "children of {i}");
    }
}

#[test]
fn a_100k_task_fan_out_and_in_compiles() {
    // root -> 99,998 middle tasks -> sink.
    let middle: Vec<String> = (1..BIG - 1).map(numbered).collect();
    let mut tasks = vec![task("root", &[])];
    tasks.extend(middle.iter().map(|name| task(name, &["root"])));
    tasks.push(TaskSpec {
        depends_on: middle.clone(),
        ..task("sink", &[])
    });
    let dag = compile(
        &WorkflowSpec {
            tasks,
            ..WorkflowSpec::default()
        },
        "spec",
    )
    .unwrap();
    assert_eq!(dag.len(), BIG);
    let root = dag.id("root").unwrap();
    let sink = dag.id("sink").unwrap();
    let middle_ids: Vec<TaskId> = (1..BIG - 1).map(|i| TaskId(i as u32)).collect();
    assert_eq!(dag.children(root), middle_ids);
    assert_eq!(dag.parents(sink), middle_ids);
    assert!(dag.parents(root).is_empty() && dag.children(sink).is_empty());
    for &id in &middle_ids {
        assert_eq!(dag.parents(id), [root]);
        assert_eq!(dag.children(id), [sink]);
    }
}

#[test]
fn a_100k_task_cycle_is_reported_once() {
    let tasks: Vec<TaskSpec> = (0..BIG)
        .map(|i| task(&numbered(i), &[&numbered((i + BIG - 1) % BIG)]))
        .collect();
    let got = problems_of(&WorkflowSpec {
        tasks,
        ..WorkflowSpec::default()
    });
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].field, "spec.tasks[0].dependsOn");
    // t0 depends on t99999, which depends on t99998, …: the first 20, then a count.
    let message = &got[0].message;
    assert!(message.len() < 500, "{message}");
    let shown: Vec<String> = (0..20)
        .map(|k| format!("\"{}\"", numbered((BIG - k) % BIG)))
        .collect();
    let want = format!(
        "dependency cycle: {} -> … ({} more) -> \"t0\" (each task depends on the next)",
        shown.join(" -> "),
        BIG - 20
    );
    assert_eq!(message, &want);
}

fn read(name: &str, source: &str) -> InputSpec {
    InputSpec {
        name: name.into(),
        from_task: Some(source.into()),
        output: Some("k".into()),
        ..InputSpec::default()
    }
}

#[test]
fn a_100k_task_chain_whose_tasks_all_read_the_first_compiles() {
    // Every input names a transitive ancestor up to 100k tasks away.
    let tasks: Vec<TaskSpec> = (0..BIG)
        .map(|i| {
            let mut t = task(&numbered(i), &[]);
            if i > 0 {
                t.depends_on = vec![numbered(i - 1)];
                t.inputs = vec![read("FIRST", "t0")];
            }
            if i > 1 {
                t.inputs.push(read("GRANDPARENT", &numbered(i - 2)));
            }
            t
        })
        .collect();
    let dag = compile(
        &WorkflowSpec {
            tasks,
            ..WorkflowSpec::default()
        },
        "spec",
    )
    .unwrap();
    let last = dag.task(TaskId(BIG as u32 - 1));
    assert_eq!(
        last.inputs[1].source,
        InputSource::Task {
            task: TaskId(BIG as u32 - 3),
            output: "k".into()
        }
    );
}

#[test]
fn a_100k_task_chain_reading_far_upstream_compiles() {
    // Task i reads task i - 50,000: 50,000 distinct sources, each 50,000 tasks away. One task
    // reads a task downstream of it instead.
    let half = BIG / 2;
    let mut tasks: Vec<TaskSpec> = (0..BIG)
        .map(|i| {
            let mut t = task(&numbered(i), &[]);
            if i > 0 {
                t.depends_on = vec![numbered(i - 1)];
            }
            if i >= half {
                t.inputs = vec![read("FAR", &numbered(i - half))];
            }
            t
        })
        .collect();
    tasks[70_000].inputs.push(read("LATER", &numbered(90_000)));
    let got = problems_of(&WorkflowSpec {
        tasks,
        ..WorkflowSpec::default()
    });
    assert_eq!(got.len(), 1, "{}", render(&got));
    assert_eq!(got[0].field, "spec.tasks[70000].inputs[1].fromTask");
    assert!(
        got[0]
            .message
            .contains(r#"reads task "t90000", which is not upstream"#),
        "{}",
        got[0]
    );
}

#[test]
fn a_100k_task_workflow_of_barriers_reading_a_shared_task_compiles() {
    // config -> 1,000 stages of (99 parallel tasks -> barrier); every task reads config.
    const WIDTH: usize = 99;
    let mut tasks = vec![task("config", &[])];
    let mut barrier = "config".to_string();
    while tasks.len() + WIDTH < BIG {
        let stage = tasks.len();
        let workers: Vec<String> = (0..WIDTH).map(|w| format!("s{stage}-w{w}")).collect();
        for name in &workers {
            let mut t = task(name, &[&barrier]);
            t.inputs = vec![read("CONFIG", "config")];
            tasks.push(t);
        }
        barrier = format!("s{stage}-barrier");
        let mut t = task(&barrier, &[]);
        t.depends_on = workers;
        t.inputs = vec![read("CONFIG", "config")];
        tasks.push(t);
    }
    // One task that is not downstream of config at all.
    let mut stray = task("stray", &[]);
    stray.inputs = vec![read("CONFIG", "config")];
    tasks.push(stray);
    let count = tasks.len();
    let got = problems_of(&WorkflowSpec {
        tasks,
        ..WorkflowSpec::default()
    });
    let field = format!("spec.tasks[{}].inputs[0].fromTask", count - 1);
    assert_eq!(got.len(), 1, "{}", render(&got));
    assert_eq!(got[0].field, field);
    assert!(got[0].message.contains("task \"stray\""), "{}", got[0]);
}

#[test]
fn params_compile_into_the_dag() {
    let dag = compiled(
        "
        params: [{name: date, default: d, description: Day to load}]
        tasks: [{name: a, image: i, command: [sh]}]",
    );
    assert_eq!(
        dag.params(),
        [ParamSpec {
            name: "date".into(),
            default: Some("d".into()),
            description: Some("Day to load".into()),
        }]
    );
}

// ---------------------------------------------------------------------------------------------
// Cycles and input reachability against a brute-force oracle

/// `reach[i][j]`: there is a dependency path from task `i` down to task `j`.
fn transitive_closure(n: usize, edges: &[(usize, usize)]) -> Vec<Vec<bool>> {
    let mut reach = vec![vec![false; n]; n];
    for &(parent, child) in edges {
        reach[parent][child] = true;
    }
    for k in 0..n {
        let through = reach[k].clone();
        for row in reach.iter_mut().filter(|row| row[k]) {
            for (cell, &via) in row.iter_mut().zip(&through) {
                *cell |= via;
            }
        }
    }
    reach
}

/// Compiles a random graph of `n` tasks, with `(parent, child)` edges and `(consumer, source)`
/// reads, and checks the problems against the closure: on a cycle, exactly one valid cycle per
/// strongly connected group; otherwise exactly the reads of non-ancestors.
fn check_against_oracle(
    n: usize,
    edges: &[(usize, usize)],
    reads: &[(usize, usize)],
) -> Result<(), TestCaseError> {
    let name = |i: usize| format!("t{i}");
    let mut tasks: Vec<TaskSpec> = (0..n).map(|i| task(&name(i), &[])).collect();
    for &(parent, child) in edges {
        tasks[child].depends_on.push(name(parent));
    }
    let mut input_index = vec![0usize; reads.len()];
    for (k, &(consumer, source)) in reads.iter().enumerate() {
        input_index[k] = tasks[consumer].inputs.len();
        tasks[consumer]
            .inputs
            .push(read(&format!("I{k}"), &name(source)));
    }
    let spec = WorkflowSpec {
        tasks,
        ..WorkflowSpec::default()
    };
    let got = match compile(&spec, "spec") {
        Ok(_) => Vec::new(),
        Err(problems) => problems.0,
    };
    let reach = transitive_closure(n, edges);
    let id = |task: &str| -> usize { task[1..].parse().unwrap() };
    let on_cycle: Vec<usize> = (0..n).filter(|&i| reach[i][i]).collect();
    if on_cycle.is_empty() {
        let mut want: Vec<String> = reads
            .iter()
            .enumerate()
            .filter(|&(_, &(consumer, source))| !reach[source][consumer])
            .map(|(k, &(consumer, _))| {
                format!("spec.tasks[{consumer}].inputs[{}].fromTask", input_index[k])
            })
            .collect();
        want.sort();
        let mut fields: Vec<String> = got.iter().map(|p| p.field.clone()).collect();
        fields.sort();
        prop_assert_eq!(fields, want, "{}", render(&got));
        return Ok(());
    }
    // Groups: tasks on cycles, keyed by their smallest member.
    let group_of = |i: usize| {
        (0..n)
            .find(|&j| j == i || (reach[i][j] && reach[j][i]))
            .unwrap()
    };
    let mut groups: Vec<usize> = on_cycle.iter().map(|&i| group_of(i)).collect();
    groups.sort();
    groups.dedup();
    prop_assert_eq!(got.len(), groups.len(), "{}", render(&got));
    let mut seen_groups = Vec::new();
    for problem in &got {
        let cycle: Vec<usize> = cycle_in(&problem.message).iter().map(|t| id(t)).collect();
        prop_assert_eq!(
            &problem.field,
            &format!("spec.tasks[{}].dependsOn", cycle[0])
        );
        prop_assert_eq!(cycle[0], *cycle.iter().min().unwrap());
        let mut distinct = cycle.clone();
        distinct.sort();
        distinct.dedup();
        prop_assert_eq!(distinct.len(), cycle.len(), "repeated task: {}", problem);
        for (k, &t) in cycle.iter().enumerate() {
            let next = cycle[(k + 1) % cycle.len()];
            prop_assert!(
                edges.contains(&(next, t)),
                "{t} does not depend on {next}: {problem}"
            );
        }
        let group = group_of(cycle[0]);
        let mut others: Vec<usize> = match problem.message.split_once("also involve ") {
            Some((_, list)) => list.split(", ").map(|t| id(&unquote(t))).collect(),
            None => Vec::new(),
        };
        others.sort();
        let want_others: Vec<usize> = (0..n)
            .filter(|&i| reach[i][i] && group_of(i) == group && !cycle.contains(&i))
            .collect();
        prop_assert_eq!(others, want_others, "{}", problem);
        seen_groups.push(group);
    }
    seen_groups.sort();
    prop_assert_eq!(seen_groups, groups);
    Ok(())
}

/// Task count, `(parent, child)` edges and `(consumer, source)` reads.
type Graph = (usize, Vec<(usize, usize)>, Vec<(usize, usize)>);

fn random_graph() -> impl Strategy<Value = Graph> {
    (2usize..10).prop_flat_map(|n| {
        let pair = (0..n, 0..n).prop_filter("no self edges", |(a, b)| a != b);
        (
            Just(n),
            proptest::collection::vec(pair.clone(), 0..(2 * n)),
            proptest::collection::vec(pair, 0..n),
        )
    })
}

/// Acyclic: edges only from a lower to a higher index under a random renaming.
fn random_dag() -> impl Strategy<Value = Graph> {
    random_graph().prop_flat_map(|(n, edges, reads)| {
        let perm = Just((0..n).collect::<Vec<usize>>()).prop_shuffle();
        (Just(n), Just(edges), Just(reads), perm).prop_map(|(n, edges, reads, perm)| {
            let edges = edges
                .into_iter()
                .map(|(a, b)| (perm[a.min(b)], perm[a.max(b)]))
                .collect();
            (n, edges, reads)
        })
    })
}

/// Larger DAGs (65 to 200 tasks, more than one batch of 64 far sources) whose tasks read many
/// tasks far up- or downstream: each task depends on one of the five before it and now and then
/// on a far one, under a random renaming.
fn far_read_dag() -> impl Strategy<Value = Graph> {
    (65usize..200).prop_flat_map(|n| {
        (
            Just(n),
            proptest::collection::vec((1usize..=5, 0usize..1_000), n),
            proptest::collection::vec((0..n, 0..n), n..(3 * n)),
            Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
        )
            .prop_map(|(n, shape, reads, perm)| {
                let mut edges = Vec::new();
                for (i, &(back, far)) in shape.iter().enumerate().skip(1) {
                    edges.push((perm[i.saturating_sub(back)], perm[i]));
                    if far % 7 == 0 {
                        edges.push((perm[far % i], perm[i]));
                    }
                }
                // Mostly reads of a task declared before (often upstream), some the other way.
                let reads = reads
                    .into_iter()
                    .filter(|(a, b)| a != b)
                    .map(|(a, b)| {
                        let (consumer, source) = if a % 5 == 0 {
                            (a, b)
                        } else {
                            (a.max(b), a.min(b))
                        };
                        (perm[consumer], perm[source])
                    })
                    .collect();
                (n, edges, reads)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn far_reads_in_larger_dags_match_the_oracle((n, edges, reads) in far_read_dag()) {
        check_against_oracle(n, &edges, &reads)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn random_graphs_match_the_oracle((n, edges, reads) in random_graph()) {
        check_against_oracle(n, &edges, &reads)?;
    }

    #[test]
    fn random_dags_match_the_oracle((n, edges, reads) in random_dag()) {
        check_against_oracle(n, &edges, &reads)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Finally tasks, conditions and the retry policy

#[test]
fn every_problem_with_the_new_fields_is_reported_at_once() {
    let spec = parse(
        r#"
defaults: {image: busybox}
params: [{name: env}]
tasks:
  - {name: a, command: [x]}
  - name: b
    command: [x]
    dependsOn: [cleanup]
    trigger: SometimesSucceeded
    retries: {limit: 1, retryOn: [Error, Crash], exitCodes: [0, 3]}
  - name: c
    command: [x]
    when:
      - {param: env, operator: Is, values: [prod]}
      - {param: env, operator: In, values: []}
      - {param: nope, operator: In, values: [x]}
      - {operator: In, values: [x]}
      - {param: env, task: a, output: k, operator: In, values: [x]}
      - {task: a, operator: In, values: [x]}
      - {task: d, output: k, operator: In, values: [x]}
      - {task: c, output: k, operator: In, values: [x]}
      - {task: cleanup, output: k, operator: In, values: [x]}
      - {task: ghost, output: k, operator: In, values: [x]}
  - name: d
    command: [x]
    inputs: [{name: X, fromTask: cleanup, output: k}]
    retries: {limit: 1, retryOn: [Timeout], exitCodes: [3]}
finally:
  - {name: cleanup, command: [x], dependsOn: [a]}
  - {name: a, command: [x]}
  - {name: report, command: [x], dependsOn: [cleanup], inputs: [{name: Y, fromTask: d, output: k}],
     when: [{task: a, output: k, operator: NotIn, values: ["1"]}]}
"#,
    );
    let got = problems_of(&spec);
    assert_problems(
        "new fields",
        &got,
        &[
            (
                "spec.tasks[1].dependsOn[0]",
                &["task \"b\"", "finally task \"cleanup\""],
            ),
            (
                "spec.tasks[1].trigger",
                &["unknown trigger", "SometimesSucceeded", "AnyFailed"],
            ),
            (
                "spec.tasks[1].retries.retryOn[1]",
                &["\"Crash\"", "Error or Timeout"],
            ),
            ("spec.tasks[1].retries.exitCodes[0]", &["exit code 0"]),
            (
                "spec.tasks[2].when[0].operator",
                &["unknown operator", "\"Is\"", "In, NotIn"],
            ),
            ("spec.tasks[2].when[1].values", &["at least one value"]),
            (
                "spec.tasks[2].when[2].param",
                &["undeclared parameter \"nope\""],
            ),
            (
                "spec.tasks[2].when[3]",
                &["exactly one of param or task, found 0"],
            ),
            (
                "spec.tasks[2].when[4]",
                &["exactly one of param or task, found 2"],
            ),
            ("spec.tasks[2].when[5].output", &["names no output key"]),
            ("spec.tasks[2].when[5].task", &["not upstream"]),
            (
                "spec.tasks[2].when[6].task",
                &["when[6] reads task \"d\"", "not upstream"],
            ),
            ("spec.tasks[2].when[7].task", &["own output"]),
            ("spec.tasks[2].when[8].task", &["a finally task"]),
            ("spec.tasks[2].when[9].task", &["unknown task \"ghost\""]),
            ("spec.tasks[3].inputs[0].fromTask", &["a finally task"]),
            ("spec.tasks[3].retries.exitCodes", &["retryOn leaves out"]),
            (
                "spec.finally[0].dependsOn[0]",
                &["finally task \"cleanup\"", "regular task \"a\""],
            ),
            (
                "spec.finally[1].name",
                &["duplicate task name \"a\"", "spec.tasks[0]"],
            ),
        ],
    );
}

#[test]
fn finally_tasks_compile_after_the_regular_ones_and_read_them_freely() {
    let dag = compiled(
        r#"
defaults: {image: busybox}
params: [{name: env, default: prod}]
tasks:
  - {name: a, command: [x]}
  - name: b
    command: [x]
    dependsOn: [a]
    trigger: AnyFailed
    continueOnFailure: true
    when: [{task: a, output: k, operator: NotIn, values: ["false"]}, {param: env, operator: In, values: [prod]}]
    retries: {limit: 2, retryOn: [Error], exitCodes: [3, 75]}
finally:
  - {name: report, command: [x], inputs: [{name: X, fromTask: b, output: k}],
     when: [{task: a, output: k, operator: In, values: ["1"]}]}
  - {name: cleanup, command: [x], dependsOn: [report], trigger: AllDone}
"#,
    );
    assert_eq!(dag.len(), 4);
    assert_eq!(dag.regular(), 2);
    let b = dag.task(dag.id("b").unwrap());
    assert_eq!(b.trigger, crate::compile::Trigger::AnyFailed);
    assert!(b.continue_on_failure && !b.finally);
    assert_eq!(b.when.len(), 2);
    assert!(b.when[0].negated && !b.when[1].negated);
    assert_eq!(
        b.retry_on,
        crate::compile::RetryOn {
            error: true,
            timeout: false,
            exit_codes: vec![3, 75]
        }
    );
    let report = dag.id("report").unwrap();
    assert!(dag.is_finally(report) && dag.task(report).finally);
    assert!(dag.parents(report).is_empty(), "reading is not depending");
    assert_eq!(dag.parents(dag.id("cleanup").unwrap()), &[report]);
}

#[test]
fn for_each_problems_are_all_reported() {
    let many: Vec<String> = (0..=crate::api::MAX_FAN_OUT)
        .map(|i| i.to_string())
        .collect();
    let spec = parse(&format!(
        r#"
defaults: {{image: busybox}}
params: [{{name: files, default: "[]"}}]
tasks:
  - {{name: list, command: [x]}}
  - {{name: none, command: [x], forEach: {{}}}}
  - {{name: two, command: [x], forEach: {{items: [a], fromParam: files}}}}
  - {{name: zero, command: [x], forEach: {{items: [a], parallelism: 0}}}}
  - {{name: ghost-param, command: [x], forEach: {{fromParam: nope}}}}
  - {{name: no-key, command: [x], dependsOn: [list], forEach: {{fromTask: list}}}}
  - {{name: not-upstream, command: [x], forEach: {{fromTask: list, output: l}}}}
  - {{name: own, command: [x], forEach: {{fromTask: own, output: l}}}}
  - {{name: ghost-task, command: [x], forEach: {{fromTask: ghost, output: l}}}}
  - {{name: stray-output, command: [x], forEach: {{items: [a], output: l}}}}
  - {{name: too-many, command: [x], forEach: {{items: [{}]}}}}
  - {{name: reads-finally, command: [x], forEach: {{fromTask: f, output: l}}}}
finally:
  - {{name: f, command: [x], forEach: {{fromTask: list, output: l}}}}
"#,
        many.join(", ")
    ));
    let got = problems_of(&spec);
    assert_problems(
        "forEach",
        &got,
        &[
            (
                "spec.tasks[1].forEach",
                &[
                    "task \"none\"",
                    "exactly one of items, fromParam or fromTask, found 0",
                ],
            ),
            ("spec.tasks[2].forEach", &["found 2"]),
            ("spec.tasks[3].forEach.parallelism", &["at least 1"]),
            (
                "spec.tasks[4].forEach.fromParam",
                &["undeclared parameter \"nope\""],
            ),
            ("spec.tasks[5].forEach.output", &["names no output key"]),
            (
                "spec.tasks[6].forEach.fromTask",
                &["forEach reads task \"list\"", "not upstream"],
            ),
            ("spec.tasks[7].forEach.fromTask", &["own output"]),
            (
                "spec.tasks[8].forEach.fromTask",
                &["unknown task \"ghost\""],
            ),
            ("spec.tasks[9].forEach.output", &["output without fromTask"]),
            (
                "spec.tasks[10].forEach.items",
                &["10001 items", "at most 10000"],
            ),
            ("spec.tasks[11].forEach.fromTask", &["a finally task"]),
        ],
    );

    // A finally task may fan out over any regular task's output, as it may read it.
    let dag = compiled(
        r#"
defaults: {image: busybox}
tasks:
  - {name: list, command: [x]}
  - {name: p, command: [x], dependsOn: [list], forEach: {fromTask: list, output: l, parallelism: 3}}
finally:
  - {name: f, command: [x], forEach: {fromTask: list, output: l}}
"#,
    );
    let p = dag.task(dag.id("p").unwrap()).for_each.as_ref().unwrap();
    assert_eq!(p.parallelism, Some(3));
    assert_eq!(
        p.source,
        ItemSource::Task {
            task: dag.id("list").unwrap(),
            output: "l".into()
        }
    );
}
