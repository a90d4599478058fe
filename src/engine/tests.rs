//! Tests of the engine against the contract in `docs/api.md`, driven by a fake clock: a fixed base
//! timestamp plus offsets. The first part walks scenarios step by step; the second part runs
//! random DAGs with random outcomes (proptest) and checks the invariants of the contract.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::api::{ConditionStatus, RunPhase, TaskPhase, TaskStatus, WorkflowSpec};
use crate::compile::{Dag, TaskId, bind_params, compile};

// ---- fake clock ----

fn t0() -> Timestamp {
    "2026-11-26T03:00:00Z".parse().unwrap()
}

/// `secs` seconds after the base time.
fn at(secs: f64) -> Timestamp {
    t0() + SignedDuration::from_secs_f64(secs)
}

/// `ms` milliseconds after the base time.
fn at_ms(ms: i64) -> Timestamp {
    t0() + SignedDuration::from_millis(ms)
}

// ---- building runs ----

/// Compiles a workflow spec written as JSON. Every task gets `command: [true]` and the defaults
/// get an image unless the spec sets them, so tests only spell out what they are about.
fn compile_spec(mut spec: Value) -> Arc<Dag> {
    let obj = spec.as_object_mut().expect("spec is an object");
    obj.entry("defaults")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .unwrap()
        .entry("image")
        .or_insert_with(|| json!("busybox"));
    for list in ["tasks", "finally"] {
        let Some(tasks) = obj.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for task in tasks {
            task.as_object_mut()
                .unwrap()
                .entry("command")
                .or_insert_with(|| json!(["true"]));
        }
    }
    let spec: WorkflowSpec = serde_json::from_value(spec).expect("spec deserializes");
    match compile(&spec, "spec") {
        Ok(dag) => Arc::new(dag),
        Err(problems) => {
            let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
            panic!("test spec does not compile: {}", all.join("; "))
        }
    }
}

/// An action with task names instead of ids, for readable assertions.
#[derive(Clone, Debug, PartialEq)]
enum Act {
    Start(String, u32),
    Kill(String, u32, KillReason),
}

fn start(task: &str, attempt: u32) -> Act {
    Act::Start(task.into(), attempt)
}

fn kill(task: &str, attempt: u32, reason: KillReason) -> Act {
    Act::Kill(task.into(), attempt, reason)
}

fn exited(code: i32, output: &str) -> Outcome {
    Outcome::Exited {
        code,
        output: output.as_bytes().to_vec(),
    }
}

/// An engine plus bookkeeping: every event goes through here, and the invariants that hold at
/// all times (parallelism cap, dependencies succeeded before a start) are checked after each.
struct Harness {
    engine: Engine,
    dag: Arc<Dag>,
    /// Latest launch of each task.
    launches: BTreeMap<TaskId, Launch>,
}

impl Harness {
    fn new(spec: Value) -> Self {
        Self::with_params(spec, &[])
    }

    fn with_params(spec: Value, params: &[(&str, &str)]) -> Self {
        let dag = compile_spec(spec);
        let values: BTreeMap<String, String> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let bound = bind_params(&dag, &values, "spec.params").expect("params bind");
        Self {
            engine: Engine::new(Arc::clone(&dag), bound),
            dag,
            launches: BTreeMap::new(),
        }
    }

    /// A task's or an instance's (`TASK[INDEX]`) slot.
    fn id(&self, name: &str) -> TaskId {
        self.dag
            .id(name)
            .or_else(|| {
                (self.dag.len()..self.engine.slots())
                    .map(|i| TaskId(i as u32))
                    .find(|&slot| self.engine.slot_name(slot) == name)
            })
            .unwrap_or_else(|| panic!("no task {name}"))
    }

    fn name(&self, id: TaskId) -> String {
        self.engine.slot_name(id)
    }

    /// Takes the queued actions, checking each against the invariants.
    fn acts(&mut self) -> Vec<Act> {
        let cap = self.dag.parallelism().unwrap_or(u32::MAX);
        assert!(self.engine.running() <= cap, "parallelism {cap} exceeded");
        let running = (0..self.engine.slots())
            .map(|i| TaskId(i as u32))
            .filter(|&slot| {
                self.engine.task_status(slot).phase == TaskPhase::Running
                    && self.engine.task_status(slot).instances.is_none()
            })
            .count();
        assert_eq!(running as u32, self.engine.running(), "running tally");
        let mut out = Vec::new();
        for action in self.engine.take_actions() {
            match action {
                Action::Start(launch) => {
                    let def = launch.definition();
                    let all_succeeded =
                        self.dag.task(def).trigger == crate::compile::Trigger::AllSucceeded;
                    for &parent in self.dag.parents(def) {
                        let status = self.engine.task_status(parent);
                        let done = match status.phase {
                            TaskPhase::Succeeded => true,
                            TaskPhase::Skipped => {
                                !all_succeeded || status.reason.as_deref() != Some("UpstreamFailed")
                            }
                            TaskPhase::Failed => {
                                !all_succeeded || self.dag.task(parent).continue_on_failure
                            }
                            TaskPhase::Cancelled => !all_succeeded,
                            TaskPhase::Pending | TaskPhase::Running => false,
                        };
                        assert!(
                            done,
                            "{} started before its dependency {} allowed it ({:?})",
                            self.name(launch.task),
                            self.name(parent),
                            status.phase
                        );
                    }
                    if self.dag.is_finally(def) {
                        for i in 0..self.dag.regular() {
                            let phase = self.engine.task_status(TaskId(i as u32)).phase;
                            assert!(
                                phase.is_final(),
                                "finally task started before the regular ones ended"
                            );
                        }
                    }
                    out.push(Act::Start(self.name(launch.task), launch.attempt));
                    self.launches.insert(launch.task, launch);
                }
                Action::Kill {
                    task,
                    attempt,
                    reason,
                    ..
                } => out.push(Act::Kill(self.name(task), attempt, reason)),
            }
        }
        out
    }

    fn start(&mut self, secs: f64) -> Vec<Act> {
        self.engine.start(at(secs));
        self.acts()
    }

    /// A report of how an attempt ended at `secs`, read at once, as drivers do: the report,
    /// then a tick at the same time, which starts what can start.
    fn report(&mut self, task: &str, attempt: u32, outcome: Outcome, secs: f64) -> Vec<Act> {
        let id = self.id(task);
        self.engine.finish_attempt(id, attempt, outcome, at(secs));
        self.engine.tick(at(secs));
        self.acts()
    }

    /// Attempt `attempt` of `task` exited 0 having written `output`.
    fn ok(&mut self, task: &str, attempt: u32, output: &str, secs: f64) -> Vec<Act> {
        self.report(task, attempt, exited(0, output), secs)
    }

    /// Attempt `attempt` of `task` exited with `code`.
    fn exit(&mut self, task: &str, attempt: u32, code: i32, secs: f64) -> Vec<Act> {
        self.report(task, attempt, exited(code, ""), secs)
    }

    fn tick(&mut self, secs: f64) -> Vec<Act> {
        self.tick_at(at(secs))
    }

    fn tick_at(&mut self, now: Timestamp) -> Vec<Act> {
        self.engine.tick(now);
        self.acts()
    }

    fn cancel(&mut self, secs: f64) -> Vec<Act> {
        self.engine.cancel(at(secs));
        self.acts()
    }

    fn wakeup(&self) -> Option<Timestamp> {
        self.engine.next_wakeup()
    }

    fn status(&self, task: &str) -> TaskStatus {
        self.engine.task_status(self.id(task))
    }

    fn phase(&self, task: &str) -> TaskPhase {
        self.status(task).phase
    }

    fn reason(&self, task: &str) -> Option<String> {
        self.status(task).reason
    }

    fn message(&self, task: &str) -> String {
        self.status(task).message.unwrap_or_default()
    }

    fn phases(&self) -> Vec<(String, TaskPhase)> {
        self.dag
            .tasks()
            .map(|(id, t)| (t.name.clone(), self.engine.task_status(id).phase))
            .collect()
    }

    /// Inputs of the latest launch of `task`.
    fn inputs(&self, task: &str) -> Vec<(String, Value)> {
        self.launches
            .get(&self.id(task))
            .unwrap_or_else(|| panic!("{task} was never launched"))
            .inputs
            .clone()
    }

    fn changes(&mut self) -> Vec<String> {
        let ids = self.engine.take_changes();
        ids.into_iter().map(|id| self.name(id)).collect()
    }

    fn condition(&self) -> (ConditionStatus, String, String) {
        let cond = self.engine.succeeded_condition();
        assert_eq!(cond.type_, "Succeeded");
        (
            cond.status,
            cond.reason.unwrap_or_default(),
            cond.message.unwrap_or_default(),
        )
    }
}

fn inputs(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[path = "flow_tests.rs"]
mod flow;

#[path = "fan_out_tests.rs"]
mod fan_out;

// ---- dependency order and data flow ----

#[test]
fn diamond_runs_in_dependency_order_and_outputs_flow_downstream() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "extract"},
        {"name": "left", "dependsOn": ["extract"],
         "inputs": [{"name": "ROWS", "fromTask": "extract", "output": "rows"}]},
        {"name": "right", "dependsOn": ["extract"],
         "inputs": [{"name": "DAY", "fromTask": "extract", "output": "day"}]},
        {"name": "load", "dependsOn": ["left", "right"], "inputs": [
            {"name": "L", "fromTask": "left", "output": "n"},
            {"name": "R", "fromTask": "right", "output": "s"},
            {"name": "META", "fromTask": "extract", "output": "meta"},
            {"name": "FLAG", "fromTask": "extract", "output": "flag"},
            {"name": "NOTHING", "fromTask": "extract", "output": "nothing"},
        ]},
    ]}));
    assert_eq!(h.engine.phase(), RunPhase::Pending);
    assert_eq!(h.acts(), []);

    assert_eq!(h.start(0.0), [start("extract", 1)]);
    assert_eq!(h.engine.phase(), RunPhase::Running);
    assert_eq!(h.inputs("extract"), []);
    let waiting = TaskPhase::Pending;
    assert_eq!(
        h.phases().into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
        [TaskPhase::Running, waiting, waiting, waiting]
    );
    assert_eq!(h.status("extract").started_at, Some(at(0.0)));

    let extract_out = r#"{"rows": 3, "day": "2026-11-26", "meta": {"a": [1, true, null]},
                          "flag": false, "nothing": null}"#;
    assert_eq!(
        h.ok("extract", 1, extract_out, 2.0),
        [start("left", 1), start("right", 1)]
    );
    // Numbers stay numbers, strings are JSON string values.
    assert_eq!(h.inputs("left"), inputs(&[("ROWS", json!(3))]));
    assert_eq!(h.inputs("right"), inputs(&[("DAY", json!("2026-11-26"))]));

    // `load` needs both sides.
    assert_eq!(h.ok("right", 1, r#"{"s": "x y"}"#, 3.0), []);
    assert_eq!(h.phase("load"), TaskPhase::Pending);
    assert_eq!(h.ok("left", 1, r#"{"n": 1.5}"#, 4.0), [start("load", 1)]);
    assert_eq!(
        h.inputs("load"),
        inputs(&[
            ("L", json!(1.5)),
            ("R", json!("x y")),
            ("META", json!({"a": [1, true, null]})),
            ("FLAG", json!(false)),
            ("NOTHING", Value::Null),
        ])
    );

    assert_eq!(h.ok("load", 1, "", 5.0), []);
    assert_eq!(h.engine.phase(), RunPhase::Succeeded);
    assert!(h.engine.is_finished());
    assert_eq!(h.wakeup(), None);

    let extract = h.status("extract");
    assert_eq!(extract.phase, TaskPhase::Succeeded);
    assert_eq!(extract.attempts, 1);
    assert_eq!(extract.exit_code, Some(0));
    assert_eq!(extract.reason.as_deref(), Some("Completed"));
    assert_eq!(extract.message, None);
    assert_eq!(extract.started_at, Some(at(0.0)));
    assert_eq!(extract.finished_at, Some(at(2.0)));
    assert_eq!(extract.outputs.unwrap()["rows"], json!(3));
    // No output written: no outputs in the status.
    assert_eq!(h.status("load").outputs, None);
    assert_eq!(h.status("load").started_at, Some(at(4.0)));

    let status = h.engine.run_status();
    assert_eq!(status.phase, Some(RunPhase::Succeeded));
    assert_eq!(status.started_at, Some(at(0.0)));
    assert_eq!(status.finished_at, Some(at(5.0)));
    assert_eq!(
        h.condition(),
        (
            ConditionStatus::True,
            "Succeeded".into(),
            "4 of 4 tasks succeeded".into()
        )
    );
}

#[test]
fn chain_starts_each_task_only_after_its_parent() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "c", "dependsOn": ["b"]},
        {"name": "b", "dependsOn": ["a"]},
        {"name": "a"},
    ]}));
    assert_eq!(h.start(0.0), [start("a", 1)]);
    assert_eq!(h.ok("a", 1, "", 1.0), [start("b", 1)]);
    assert_eq!(h.ok("b", 1, "", 2.0), [start("c", 1)]);
    assert_eq!(h.ok("c", 1, "", 3.0), []);
    assert_eq!(h.engine.phase(), RunPhase::Succeeded);
}

#[test]
fn params_and_constant_inputs_are_resolved() {
    let spec = json!({
        "params": [{"name": "date", "default": "2026-01-01"}, {"name": "region"}],
        "tasks": [{"name": "a", "inputs": [
            {"name": "DAY", "fromParam": "date"},
            {"name": "REGION", "fromParam": "region"},
            {"name": "MODE", "value": "full"},
            {"name": "COUNT", "value": "3"},
        ]}],
    });
    struct Case {
        params: &'static [(&'static str, &'static str)],
        day: &'static str,
        region: &'static str,
    }
    let cases = [
        Case {
            params: &[("region", "eu")],
            day: "2026-01-01",
            region: "eu",
        },
        Case {
            params: &[("date", "2026-11-26"), ("region", "")],
            day: "2026-11-26",
            region: "",
        },
        Case {
            params: &[("date", "{\"not\": \"json\"}"), ("region", "42")],
            day: "{\"not\": \"json\"}",
            region: "42",
        },
    ];
    for case in cases {
        let mut h = Harness::with_params(spec.clone(), case.params);
        assert_eq!(h.start(0.0), [start("a", 1)]);
        // Params and constants are strings, even when they look like JSON.
        assert_eq!(
            h.inputs("a"),
            inputs(&[
                ("DAY", json!(case.day)),
                ("REGION", json!(case.region)),
                ("MODE", json!("full")),
                ("COUNT", json!("3")),
            ]),
            "params {:?}",
            case.params
        );
    }
}

// ---- retries and back-off ----

#[test]
fn retries_use_every_attempt_with_the_contract_backoff() {
    struct Case {
        name: &'static str,
        retries: Value,
        defaults: Value,
        /// Delay before attempt n+1, for n = 1..=limit.
        delays: &'static [f64],
    }
    let cases = [
        Case {
            name: "no retries",
            retries: Value::Null,
            defaults: json!({}),
            delays: &[],
        },
        Case {
            name: "limit 0",
            retries: json!({"limit": 0}),
            defaults: json!({}),
            delays: &[],
        },
        Case {
            name: "defaults 1/2/60",
            retries: json!({"limit": 3}),
            defaults: json!({}),
            delays: &[1.0, 2.0, 4.0],
        },
        Case {
            name: "capped at maxSeconds 60",
            retries: json!({"limit": 8}),
            defaults: json!({}),
            delays: &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0],
        },
        Case {
            name: "custom fractional",
            retries: json!({"limit": 4, "backoff":
                {"initialSeconds": 0.5, "factor": 3, "maxSeconds": 10}}),
            defaults: json!({}),
            delays: &[0.5, 1.5, 4.5, 10.0],
        },
        Case {
            name: "factor 1 is constant",
            retries: json!({"limit": 3, "backoff": {"initialSeconds": 5, "factor": 1}}),
            defaults: json!({}),
            delays: &[5.0, 5.0, 5.0],
        },
        Case {
            name: "zero delay",
            retries: json!({"limit": 2, "backoff": {"initialSeconds": 0}}),
            defaults: json!({}),
            delays: &[0.0, 0.0],
        },
        Case {
            name: "task limit, backoff inherited from defaults",
            retries: json!({"limit": 2}),
            defaults: json!({"retries": {"limit": 5, "backoff": {"initialSeconds": 3}}}),
            delays: &[3.0, 6.0],
        },
        Case {
            name: "defaults only",
            retries: Value::Null,
            defaults: json!({"retries": {"limit": 3,
                "backoff": {"factor": 10, "maxSeconds": 15}}}),
            delays: &[1.0, 10.0, 15.0],
        },
    ];
    for case in cases {
        let mut task = json!({"name": "a"});
        if !case.retries.is_null() {
            task["retries"] = case.retries.clone();
        }
        let mut h = Harness::new(json!({"defaults": case.defaults, "tasks": [
            task, {"name": "after", "dependsOn": ["a"]},
        ]}));
        let what = case.name;
        let attempts = case.delays.len() as u32 + 1;
        assert_eq!(h.start(0.0), [start("a", 1)], "{what}");
        let mut now = at(0.0);
        for n in 1..=attempts {
            let failed_at = now + SignedDuration::from_millis(1250);
            let code = n as i32 + 10;
            h.engine
                .finish_attempt(h.id("a"), n, exited(code, ""), failed_at);
            assert_eq!(h.acts(), [], "{what}: attempt {n}");
            let status = h.status("a");
            assert_eq!(status.attempts, n, "{what}");
            assert_eq!(status.exit_code, Some(code), "{what}");
            assert_eq!(status.reason.as_deref(), Some("Error"), "{what}");
            let message = status.message.unwrap();
            assert!(
                message.contains(&format!("attempt {n} exited with code {code}")),
                "{what}: {message}"
            );
            if n == attempts {
                assert_eq!(status.phase, TaskPhase::Failed, "{what}");
                assert_eq!(status.finished_at, Some(failed_at), "{what}");
                assert_eq!(h.wakeup(), None, "{what}");
                break;
            }
            // Waiting out the back-off: Pending, and the retry is the next wake-up.
            assert_eq!(status.phase, TaskPhase::Pending, "{what}");
            assert_eq!(status.finished_at, None, "{what}");
            let delay = SignedDuration::from_secs_f64(case.delays[n as usize - 1]);
            let due = failed_at + delay;
            assert_eq!(
                h.wakeup(),
                Some(due),
                "{what}: delay before attempt {}",
                n + 1
            );
            assert!(
                message.contains(&format!(
                    "attempt {} of {attempts} in {:.1}s",
                    n + 1,
                    delay.as_secs_f64()
                )),
                "{what}: {message}"
            );
            if !delay.is_zero() {
                let early = due - SignedDuration::from_millis(1);
                assert_eq!(h.tick_at(early), [], "{what}: tick before the retry is due");
                assert_eq!(h.phase("a"), TaskPhase::Pending, "{what}");
            }
            assert_eq!(h.tick_at(due), [start("a", n + 1)], "{what}");
            let status = h.status("a");
            assert_eq!(status.phase, TaskPhase::Running, "{what}");
            assert_eq!(status.attempts, n + 1, "{what}");
            assert_eq!(
                status.started_at,
                Some(at(0.0)),
                "first start is kept: {what}"
            );
            now = due;
        }
        assert_eq!(h.engine.phase(), RunPhase::Failed, "{what}");
        assert_eq!(h.phase("after"), TaskPhase::Skipped, "{what}");
        assert_eq!(h.status("after").attempts, 0, "{what}");
    }
}

#[test]
fn a_retry_that_succeeds_clears_the_failure() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "a", "retries": {"limit": 3}},
        {"name": "b", "dependsOn": ["a"], "inputs": [{"name": "X", "fromTask": "a", "output": "x"}]},
    ]}));
    assert_eq!(h.start(0.0), [start("a", 1)]);
    assert_eq!(h.exit("a", 1, 1, 1.0), []);
    assert_eq!(h.tick(2.0), [start("a", 2)]);
    // A driver-reported failure (e.g. the pod was lost) is retried like a non-zero exit.
    let lost = Outcome::Failed {
        reason: "PodLost".into(),
        message: "node went away".into(),
    };
    assert_eq!(h.report("a", 2, lost, 3.0), []);
    assert_eq!(h.reason("a").as_deref(), Some("PodLost"));
    assert!(h.message("a").contains("node went away"));
    assert_eq!(h.wakeup(), Some(at(5.0)));
    assert_eq!(h.tick(5.0), [start("a", 3)]);
    assert_eq!(h.ok("a", 3, r#"{"x": "y"}"#, 6.0), [start("b", 1)]);
    assert_eq!(h.inputs("b"), inputs(&[("X", json!("y"))]));
    let a = h.status("a");
    assert_eq!(a.phase, TaskPhase::Succeeded);
    assert_eq!(a.attempts, 3);
    assert_eq!(a.exit_code, Some(0));
    assert_eq!(a.reason.as_deref(), Some("Completed"));
    assert_eq!(a.message, None);
    assert_eq!(a.started_at, Some(at(0.0)));
    assert_eq!(a.finished_at, Some(at(6.0)));
    assert_eq!(h.ok("b", 1, "", 7.0), []);
    assert_eq!(h.engine.phase(), RunPhase::Succeeded);
}

// ---- timeouts ----

#[test]
fn timeout_kills_at_exactly_start_plus_timeout_and_is_retried() {
    // Who notices that the last attempt ran out of time: the engine's own timer, or the driver
    // (e.g. the Pod's own deadline) reporting TimedOut first.
    for engine_notices in [true, false] {
        let what = if engine_notices {
            "engine timer"
        } else {
            "driver report"
        };
        let mut h = Harness::new(json!({"tasks": [
            {"name": "a", "timeoutSeconds": 10, "retries": {"limit": 1}},
            {"name": "b", "dependsOn": ["a"]},
        ]}));
        assert_eq!(h.start(0.0), [start("a", 1)]);
        assert_eq!(h.wakeup(), Some(at(10.0)));
        assert_eq!(h.tick(9.999), [], "{what}");
        assert_eq!(h.phase("a"), TaskPhase::Running);

        assert_eq!(h.tick(10.0), [kill("a", 1, KillReason::Timeout)], "{what}");
        // Being stopped: still Running and holding its slot until the driver says it is gone.
        let a = h.status("a");
        assert_eq!(a.phase, TaskPhase::Running);
        assert!(
            a.message
                .unwrap()
                .contains("attempt 1 exceeded its timeout of 10s; stopping it")
        );
        assert_eq!(h.engine.running(), 1);
        assert_eq!(
            h.wakeup(),
            None,
            "{what}: nothing is due until the kill is confirmed"
        );
        assert_eq!(
            h.engine.stopping().collect::<Vec<_>>(),
            [(h.id("a"), 1, at(10.0))]
        );
        h.changes();

        // The killed attempt's success after its deadline cannot count: it is the timeout.
        assert_eq!(h.ok("a", 1, r#"{"x": 1}"#, 10.5), [], "{what}");
        let a = h.status("a");
        assert_eq!(a.phase, TaskPhase::Pending);
        assert_eq!(a.reason.as_deref(), Some("Timeout"));
        assert_eq!(a.outputs, None);
        assert_eq!(a.exit_code, None);
        assert!(
            a.message
                .unwrap()
                .contains("attempt 1 exceeded its timeout of 10s")
        );
        assert_eq!(h.engine.running(), 0);
        assert_eq!(h.engine.stopping().count(), 0);

        assert_eq!(
            h.wakeup(),
            Some(at(11.5)),
            "{what}: retry 1s after the attempt was gone"
        );
        assert_eq!(h.tick(11.5), [start("a", 2)]);
        assert_eq!(
            h.wakeup(),
            Some(at(21.5)),
            "{what}: the retry gets its own timeout"
        );
        assert_eq!(h.tick(21.0), []);

        if engine_notices {
            assert_eq!(h.tick(21.5), [kill("a", 2, KillReason::Timeout)]);
            assert_eq!(h.phase("a"), TaskPhase::Running);
            // Killed: SIGTERM's exit code, after the deadline.
            assert_eq!(h.exit("a", 2, 143, 21.6), []);
        } else {
            assert_eq!(h.report("a", 2, Outcome::TimedOut, 21.4), []);
            // The engine's own timer for the attempt is now stale.
            assert_eq!(h.tick(21.5), []);
        }
        let a = h.status("a");
        assert_eq!(a.phase, TaskPhase::Failed, "{what}");
        assert_eq!(a.reason.as_deref(), Some("Timeout"), "{what}");
        assert_eq!(a.attempts, 2);
        assert_eq!(a.exit_code, None);
        assert!(
            a.message
                .unwrap()
                .contains("attempt 2 exceeded its timeout of 10s")
        );
        // A late report after the final timeout is ignored.
        assert_eq!(h.ok("a", 2, "", 22.5), [], "{what}");
        assert_eq!(h.phase("a"), TaskPhase::Failed, "{what}");
        assert_eq!(h.phase("b"), TaskPhase::Skipped);
        assert_eq!(h.engine.phase(), RunPhase::Failed);
        assert_eq!(h.wakeup(), None);
    }
}

#[test]
fn an_attempt_that_ended_before_its_deadline_keeps_its_outcome_however_late_the_report() {
    // (what happened, when it ended, what is recorded): the report is read at 12.0, after the
    // timer at 10.0 has fired.
    let cases = [
        (exited(0, r#"{"x": 1}"#), 9.0, "Completed"),
        (exited(0, r#"{"x": 1}"#), 10.0, "Completed"),
        (exited(3, ""), 9.5, "Error"),
        (exited(143, ""), 10.0, "Timeout"),
        (exited(0, ""), 10.001, "Timeout"),
        (
            Outcome::Failed {
                reason: "OOMKilled".into(),
                message: "out of memory".into(),
            },
            9.9,
            "OOMKilled",
        ),
    ];
    for (outcome, ended, reason) in cases {
        let what = format!("{outcome:?} at {ended}");
        let mut h = Harness::new(json!({"tasks": [
            {"name": "a", "timeoutSeconds": 10},
            {"name": "b", "dependsOn": ["a"]},
        ]}));
        h.start(0.0);
        // The driver read the time first, then the report that had come in meanwhile.
        assert_eq!(h.tick(12.0), [kill("a", 1, KillReason::Timeout)], "{what}");
        let id = h.id("a");
        h.engine.finish_attempt(id, 1, outcome, at(ended));
        h.engine.tick(at(12.0));
        assert_eq!(h.reason("a").as_deref(), Some(reason), "{what}");
        assert_eq!(h.status("a").finished_at, Some(at(ended)), "{what}");
        let b = if reason == "Completed" {
            TaskPhase::Running
        } else {
            TaskPhase::Skipped
        };
        assert_eq!(h.phase("b"), b, "{what}");
        if reason == "Completed" {
            assert_eq!(
                h.status("b").started_at,
                Some(at(12.0)),
                "{what}: starts when the driver acts, not when the report says"
            );
        }
    }
}

#[test]
fn reports_are_ordered_among_timers_by_when_they_happened() {
    // The run's deadline is at 10. A success at 9 read at 12 still counts, and its dependent
    // does not start: by the time it could, the deadline has passed.
    let mut h = Harness::new(json!({"activeDeadlineSeconds": 10, "tasks": [
        {"name": "a"},
        {"name": "b", "dependsOn": ["a"]},
    ]}));
    h.start(0.0);
    let id = h.id("a");
    h.engine.finish_attempt(id, 1, exited(0, ""), at(9.0));
    h.engine.tick(at(12.0));
    assert_eq!(h.acts(), [], "nothing starts after the deadline");
    assert_eq!(h.phase("a"), TaskPhase::Succeeded);
    assert_eq!(h.status("a").finished_at, Some(at(9.0)));
    assert_eq!(h.phase("b"), TaskPhase::Cancelled);
    assert_eq!(
        h.status("b").finished_at,
        Some(at(10.0)),
        "cancelled at the deadline"
    );
    assert_eq!(h.engine.phase(), RunPhase::Failed);
    assert_eq!(h.engine.run_status().finished_at, Some(at(10.0)));

    // A success read after the deadline that happened after it is too late.
    let mut h = Harness::new(json!({"activeDeadlineSeconds": 10, "tasks": [{"name": "a"}]}));
    h.start(0.0);
    let id = h.id("a");
    h.engine.finish_attempt(id, 1, exited(0, ""), at(11.0));
    h.engine.tick(at(12.0));
    assert_eq!(h.acts(), [kill("a", 1, KillReason::DeadlineExceeded)]);
    assert_eq!(h.phase("a"), TaskPhase::Failed);
    assert_eq!(h.reason("a").as_deref(), Some("DeadlineExceeded"));
}

#[test]
fn a_retry_waits_until_the_timed_out_attempt_is_gone() {
    // Parallelism 1: the timed-out attempt's slot is not free until the kill is confirmed.
    let mut h = Harness::new(json!({"parallelism": 1, "tasks": [
        {"name": "a", "timeoutSeconds": 5, "retries": {"limit": 1, "backoff": {"initialSeconds": 0}}},
        {"name": "x"},
    ]}));
    assert_eq!(h.start(0.0), [start("a", 1)]);
    assert_eq!(h.tick(5.0), [kill("a", 1, KillReason::Timeout)]);
    // Killing takes a while (SIGTERM, grace, SIGKILL): nothing else runs meanwhile.
    assert_eq!(h.tick(7.0), []);
    assert_eq!(h.engine.running(), 1);
    assert_eq!(h.exit("a", 1, 137, 8.0), [start("x", 1)]);
    assert_eq!(h.reason("a").as_deref(), Some("Timeout"));
    assert_eq!(h.ok("x", 1, "", 9.0), [start("a", 2)]);
}

#[test]
fn default_timeout_applies_and_a_finished_attempt_leaves_no_timer() {
    let mut h = Harness::new(json!({
        "defaults": {"timeoutSeconds": 100},
        "tasks": [
            {"name": "a", "retries": {"limit": 1}},
            {"name": "b", "dependsOn": ["a"], "timeoutSeconds": 5},
        ],
    }));
    assert_eq!(h.start(0.0), [start("a", 1)]);
    assert_eq!(h.wakeup(), Some(at(100.0)));
    assert_eq!(h.exit("a", 1, 1, 1.0), []);
    assert_eq!(h.wakeup(), Some(at(2.0)));
    assert_eq!(h.tick(2.0), [start("a", 2)]);
    // Attempt 1's timer (at 100) is stale: the wake-up is attempt 2's.
    assert_eq!(h.wakeup(), Some(at(102.0)));
    assert_eq!(h.ok("a", 2, "", 3.0), [start("b", 1)]);
    assert_eq!(
        h.wakeup(),
        Some(at(8.0)),
        "b's own timeout, not a's stale ones"
    );
    assert_eq!(h.ok("b", 1, "", 4.0), []);
    assert_eq!(h.wakeup(), None);
    assert_eq!(h.engine.phase(), RunPhase::Succeeded);
}

#[test]
fn no_wakeup_while_nothing_is_timed() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "a", "timeoutSeconds": 60},
        {"name": "b"},
    ]}));
    assert_eq!(h.wakeup(), None, "not started");
    h.start(0.0);
    assert_eq!(h.wakeup(), Some(at(60.0)));
    h.ok("a", 1, "", 1.0);
    assert_eq!(
        h.wakeup(),
        None,
        "b has no timeout and nothing is backing off"
    );
}

// ---- stale and bogus reports ----

#[test]
fn stale_and_bogus_reports_are_ignored() {
    #[derive(Clone, Copy, Debug)]
    enum Stage {
        /// a's attempt 1 failed, the retry is not due yet.
        Backoff,
        /// a's attempt 2 is running.
        Retrying,
    }
    let cases: &[(Stage, &str, Option<u32>, u32)] = &[
        // (stage, task, task id override, attempt)
        (Stage::Backoff, "a", None, 1),
        (Stage::Backoff, "a", None, 2),
        (Stage::Retrying, "a", None, 1),
        (Stage::Retrying, "a", None, 0),
        (Stage::Retrying, "a", None, 3),
        (Stage::Retrying, "b", None, 1),
        (Stage::Retrying, "b", None, 0),
        (Stage::Retrying, "?", Some(99), 1),
        (Stage::Retrying, "?", Some(u32::MAX), 2),
    ];
    for &(stage, task, raw_id, attempt) in cases {
        let outcomes = [
            exited(0, r#"{"x": 1}"#),
            exited(3, ""),
            Outcome::TimedOut,
            Outcome::Failed {
                reason: "Lost".into(),
                message: String::new(),
            },
        ];
        for outcome in outcomes {
            let what = format!("{stage:?}: {task} attempt {attempt} {outcome:?}");
            let mut h = Harness::new(json!({"tasks": [
                {"name": "a", "retries": {"limit": 2}, "timeoutSeconds": 30},
                {"name": "b", "dependsOn": ["a"]},
            ]}));
            h.start(0.0);
            h.exit("a", 1, 1, 1.0);
            if let Stage::Retrying = stage {
                assert_eq!(h.tick(2.0), [start("a", 2)]);
            }
            h.changes();
            let before = h.engine.run_status();
            let wakeup = h.wakeup();
            let id = raw_id.map_or_else(|| h.id(task), TaskId);
            // Before anything else falls due, so only the report itself could change anything.
            let when = if let Stage::Retrying = stage {
                2.5
            } else {
                1.5
            };
            h.engine.finish_attempt(id, attempt, outcome, at(when));
            assert_eq!(h.acts(), [], "{what}");
            assert_eq!(h.changes(), Vec::<String>::new(), "{what}");
            assert_eq!(h.engine.run_status(), before, "{what}");
            assert_eq!(h.wakeup(), wakeup, "{what}");
        }
    }
}

#[test]
fn duplicate_report_is_ignored() {
    let mut h =
        Harness::new(json!({"tasks": [{"name": "a", "retries": {"limit": 1}}, {"name": "b"}]}));
    h.start(0.0);
    assert_eq!(h.exit("a", 1, 1, 1.0), []);
    let before = h.engine.run_status();
    // The same report again (e.g. a watch replay), and a contradicting one.
    assert_eq!(h.exit("a", 1, 1, 1.1), []);
    assert_eq!(h.ok("a", 1, "", 1.2), []);
    assert_eq!(h.engine.run_status(), before);
    assert_eq!(h.ok("b", 1, "", 1.3), []);
    assert_eq!(h.ok("b", 1, "", 1.4), []);
    assert_eq!(h.engine.run_status().tasks[1].finished_at, Some(at(1.3)));
}

// ---- failure propagation ----

#[test]
fn final_failure_skips_downstream_while_independent_branches_finish() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "a"},
        {"name": "b", "dependsOn": ["a"]},
        {"name": "c", "dependsOn": ["b"]},
        {"name": "d", "dependsOn": ["c", "a"]},
        {"name": "x"},
        {"name": "y", "dependsOn": ["x"]},
        {"name": "join", "dependsOn": ["x", "b"]},
    ]}));
    assert_eq!(h.start(0.0), [start("a", 1), start("x", 1)]);
    assert_eq!(h.ok("a", 1, "", 1.0), [start("b", 1)]);
    h.changes();
    assert_eq!(h.exit("b", 1, 2, 2.0), []);
    let mut changed = h.changes();
    changed.sort();
    assert_eq!(changed, names(&["b", "c", "d", "join"]));

    let b = h.status("b");
    assert_eq!(b.phase, TaskPhase::Failed);
    assert_eq!(b.reason.as_deref(), Some("Error"));
    assert_eq!(b.exit_code, Some(2));
    assert_eq!(b.finished_at, Some(at(2.0)));
    for skipped in ["c", "d", "join"] {
        let s = h.status(skipped);
        assert_eq!(s.phase, TaskPhase::Skipped, "{skipped}");
        assert_eq!(s.reason.as_deref(), Some("UpstreamFailed"), "{skipped}");
        assert!(
            s.message.as_deref().unwrap().contains("\"b\""),
            "{skipped}: {:?}",
            s.message
        );
        assert_eq!(s.attempts, 0);
        assert_eq!(s.started_at, None);
        assert_eq!(s.finished_at, Some(at(2.0)));
        assert_eq!(s.exit_code, None);
    }
    // The independent branch keeps going.
    assert_eq!(h.engine.phase(), RunPhase::Running);
    assert_eq!(h.phase("x"), TaskPhase::Running);
    assert_eq!(h.condition().0, ConditionStatus::Unknown);

    // `join`'s other parent succeeding does not revive it.
    assert_eq!(h.ok("x", 1, "", 3.0), [start("y", 1)]);
    assert_eq!(h.phase("join"), TaskPhase::Skipped);
    assert_eq!(h.ok("y", 1, "", 4.0), []);

    assert_eq!(h.engine.phase(), RunPhase::Failed);
    let (status, reason, message) = h.condition();
    assert_eq!(status, ConditionStatus::False);
    assert_eq!(reason, "TaskFailed");
    assert_eq!(
        message,
        "task \"b\" failed: attempt 1 exited with code 2; \
         3 of 7 tasks succeeded, 1 failed, 3 skipped"
    );
    assert_eq!(h.engine.run_status().finished_at, Some(at(4.0)));
}

#[test]
fn run_message_names_the_first_task_that_failed() {
    let mut h = Harness::new(json!({"tasks": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}));
    h.start(0.0);
    h.exit("b", 1, 7, 1.0);
    h.exit("a", 1, 8, 2.0);
    h.ok("c", 1, "", 3.0);
    assert_eq!(h.engine.phase(), RunPhase::Failed);
    let (_, reason, message) = h.condition();
    assert_eq!(reason, "TaskFailed");
    assert!(
        message.starts_with("task \"b\" failed: attempt 1 exited with code 7;"),
        "{message}"
    );
    assert!(
        message.ends_with("1 of 3 tasks succeeded, 2 failed"),
        "{message}"
    );
}

#[test]
fn a_task_with_many_failed_parents_is_skipped_once() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "p1"}, {"name": "p2"},
        {"name": "mid", "dependsOn": ["p1", "p2"]},
        {"name": "leaf", "dependsOn": ["mid", "p1", "p2"]},
    ]}));
    h.start(0.0);
    h.exit("p1", 1, 1, 1.0);
    h.exit("p2", 1, 1, 2.0);
    let s = h.engine.run_status();
    assert_eq!(h.engine.phase(), RunPhase::Failed);
    assert_eq!(s.tasks[2].phase, TaskPhase::Skipped);
    assert!(s.tasks[3].message.as_deref().unwrap().contains("\"p1\""));
    assert_eq!(
        s.tasks[3].finished_at,
        Some(at(1.0)),
        "not re-skipped by p2"
    );
    assert!(
        h.engine
            .summary()
            .ends_with("0 of 4 tasks succeeded, 2 failed, 2 skipped")
    );
}

// ---- parallelism ----

#[test]
fn parallelism_caps_running_tasks_and_slots_refill_in_order() {
    let tasks: Vec<Value> = (0..6).map(|i| json!({"name": format!("t{i}")})).collect();
    for cap in [None, Some(1), Some(2), Some(3), Some(6), Some(10)] {
        let mut spec = json!({"tasks": tasks});
        if let Some(cap) = cap {
            spec["parallelism"] = json!(cap);
        }
        let mut h = Harness::new(spec);
        let first = cap.unwrap_or(u32::MAX).min(6);
        let expect: Vec<Act> = (0..first).map(|i| start(&format!("t{i}"), 1)).collect();
        assert_eq!(h.start(0.0), expect, "cap {cap:?}");
        assert_eq!(h.engine.running(), first);
        for i in 0..6u32 {
            let next = i + first;
            let expect: Vec<Act> = if next < 6 {
                vec![start(&format!("t{next}"), 1)]
            } else {
                vec![]
            };
            assert_eq!(
                h.ok(&format!("t{i}"), 1, "", f64::from(i + 1)),
                expect,
                "cap {cap:?} after t{i}"
            );
            assert!(h.engine.running() <= first);
        }
        assert_eq!(h.engine.phase(), RunPhase::Succeeded, "cap {cap:?}");
    }
}

#[test]
fn backing_off_task_frees_its_slot_and_waits_for_one_to_retry() {
    let mut h = Harness::new(json!({"parallelism": 1, "tasks": [
        {"name": "a", "retries": {"limit": 1}},
        {"name": "b"},
        {"name": "c", "dependsOn": ["a"]},
    ]}));
    assert_eq!(h.start(0.0), [start("a", 1)]);
    assert_eq!(h.exit("a", 1, 1, 1.0), [start("b", 1)]);
    assert_eq!(h.wakeup(), Some(at(2.0)));
    // Retry due, but the only slot is taken: a waits in the queue, no further wake-up.
    assert_eq!(h.tick(2.0), []);
    assert_eq!(h.phase("a"), TaskPhase::Pending);
    assert_eq!(h.wakeup(), None);
    assert_eq!(h.ok("b", 1, "", 5.0), [start("a", 2)]);
    assert_eq!(h.ok("a", 2, "", 6.0), [start("c", 1)]);
    assert_eq!(h.ok("c", 1, "", 7.0), []);
    assert_eq!(h.engine.phase(), RunPhase::Succeeded);
}

#[test]
fn input_unresolved_does_not_take_a_slot() {
    let mut h = Harness::new(json!({"parallelism": 1, "tasks": [
        {"name": "a"},
        {"name": "b", "dependsOn": ["a"], "inputs": [{"name": "X", "fromTask": "a", "output": "x"}]},
        {"name": "c", "dependsOn": ["a"]},
    ]}));
    assert_eq!(h.start(0.0), [start("a", 1)]);
    // b cannot resolve its input and fails without starting; c gets the slot at once.
    assert_eq!(h.ok("a", 1, "{}", 1.0), [start("c", 1)]);
    assert_eq!(h.phase("b"), TaskPhase::Failed);
}

// ---- run deadline ----

#[test]
fn run_deadline_kills_running_cancels_waiting_and_fails_the_run() {
    let mut h = Harness::new(json!({"activeDeadlineSeconds": 30, "tasks": [
        {"name": "a"},
        {"name": "b", "dependsOn": ["a"]},
        {"name": "c", "retries": {"limit": 3}},
        {"name": "d"},
        {"name": "e", "timeoutSeconds": 100},
    ]}));
    // The deadline counts from start, not from construction.
    assert_eq!(
        h.start(5.0),
        [start("a", 1), start("c", 1), start("d", 1), start("e", 1)]
    );
    assert_eq!(h.wakeup(), Some(at(35.0)));
    assert_eq!(h.ok("d", 1, "", 6.0), []);
    assert_eq!(h.exit("c", 1, 1, 33.0), []);
    assert_eq!(h.tick(34.0), [start("c", 2)]);
    assert_eq!(h.exit("c", 1 + 1, 1, 34.5), []);
    // The retry would be due at 36.5: the deadline comes first.
    assert_eq!(h.wakeup(), Some(at(35.0)));
    assert_eq!(h.tick(34.999), []);
    assert_eq!(h.engine.phase(), RunPhase::Running);
    h.changes();

    assert_eq!(
        h.tick(35.0),
        [
            kill("a", 1, KillReason::DeadlineExceeded),
            kill("e", 1, KillReason::DeadlineExceeded),
        ]
    );
    let mut changed = h.changes();
    changed.sort();
    assert_eq!(changed, names(&["a", "b", "c", "e"]));
    assert_eq!(
        h.phases(),
        [
            ("a".into(), TaskPhase::Failed),
            ("b".into(), TaskPhase::Cancelled),
            ("c".into(), TaskPhase::Cancelled),
            ("d".into(), TaskPhase::Succeeded),
            ("e".into(), TaskPhase::Failed),
        ]
    );
    for task in ["a", "b", "c", "e"] {
        assert_eq!(
            h.reason(task).as_deref(),
            Some("DeadlineExceeded"),
            "{task}"
        );
        assert_eq!(h.status(task).finished_at, Some(at(35.0)), "{task}");
        assert!(h.message(task).contains("deadline of 30s"), "{task}");
    }
    assert_eq!(h.reason("d").as_deref(), Some("Completed"));
    assert_eq!(h.status("c").attempts, 2);
    assert_eq!(h.engine.running(), 0);
    assert_eq!(h.engine.phase(), RunPhase::Failed);
    let (status, reason, message) = h.condition();
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::False, "DeadlineExceeded")
    );
    assert!(message.contains("deadline"), "{message}");
    assert!(
        message.ends_with("1 of 5 tasks succeeded, 2 failed, 2 cancelled"),
        "{message}"
    );
    assert_eq!(h.engine.run_status().finished_at, Some(at(35.0)));

    // Nothing happens any more.
    assert_eq!(h.wakeup(), None);
    let before = h.engine.run_status();
    assert_eq!(h.ok("a", 1, "", 35.5), []);
    assert_eq!(h.tick(1000.0), []);
    h.engine.cancel(at(1001.0));
    h.engine.start(at(1002.0));
    assert_eq!(h.acts(), []);
    assert_eq!(h.changes(), Vec::<String>::new());
    assert_eq!(h.engine.run_status(), before);
}

#[test]
fn run_deadline_with_nothing_running_fails_the_run_without_a_failed_task() {
    let mut h = Harness::new(json!({"activeDeadlineSeconds": 10, "tasks": [
        {"name": "a", "retries": {"limit": 1, "backoff": {"initialSeconds": 30}}},
        {"name": "b", "dependsOn": ["a"]},
    ]}));
    h.start(0.0);
    h.exit("a", 1, 1, 1.0);
    assert_eq!(h.wakeup(), Some(at(10.0)));
    assert_eq!(h.tick(10.0), []);
    assert_eq!(
        h.phases(),
        [
            ("a".into(), TaskPhase::Cancelled),
            ("b".into(), TaskPhase::Cancelled)
        ]
    );
    assert_eq!(h.engine.phase(), RunPhase::Failed);
    let (status, reason, message) = h.condition();
    assert_eq!(status, ConditionStatus::False);
    assert_eq!(reason, "DeadlineExceeded");
    assert_eq!(
        message,
        "the run's deadline was exceeded; 0 of 2 tasks succeeded, 2 cancelled"
    );
}

#[test]
fn run_deadline_fires_before_a_timeout_due_at_the_same_instant() {
    let mut h = Harness::new(json!({"activeDeadlineSeconds": 10, "tasks": [
        {"name": "a", "timeoutSeconds": 10, "retries": {"limit": 1}},
    ]}));
    h.start(0.0);
    assert_eq!(h.tick(10.0), [kill("a", 1, KillReason::DeadlineExceeded)]);
    assert_eq!(h.reason("a").as_deref(), Some("DeadlineExceeded"));
    assert_eq!(h.engine.phase(), RunPhase::Failed);
}

#[test]
fn late_tick_fires_everything_that_is_due() {
    let mut h = Harness::new(json!({"activeDeadlineSeconds": 50, "tasks": [
        {"name": "a", "timeoutSeconds": 5},
        {"name": "b", "timeoutSeconds": 7},
    ]}));
    h.start(0.0);
    // A driver that oversleeps: both timeouts fire in one tick, then the deadline later.
    assert_eq!(
        h.tick(20.0),
        [
            kill("a", 1, KillReason::Timeout),
            kill("b", 1, KillReason::Timeout)
        ]
    );
    assert_eq!(h.engine.running(), 2, "until their ends are reported");
    assert_eq!(h.exit("a", 1, 143, 20.1), []);
    assert_eq!(h.exit("b", 1, 143, 20.2), []);
    assert_eq!(h.reason("a").as_deref(), Some("Timeout"));
    assert_eq!(h.engine.phase(), RunPhase::Failed);
    assert_eq!(
        h.engine.succeeded_condition().reason.as_deref(),
        Some("TaskFailed")
    );
}

// ---- cancellation ----

#[test]
fn cancel_kills_running_and_cancels_everything_unfinished() {
    let mut h = Harness::new(json!({"activeDeadlineSeconds": 100, "tasks": [
        {"name": "a"},
        {"name": "b", "dependsOn": ["a"], "timeoutSeconds": 50},
        {"name": "c", "dependsOn": ["b"]},
        {"name": "d", "retries": {"limit": 2}},
    ]}));
    h.start(0.0);
    h.ok("a", 1, "", 1.0);
    h.exit("d", 1, 1, 1.5);
    h.changes();
    assert_eq!(h.cancel(5.0), [kill("b", 1, KillReason::Cancelled)]);
    let mut changed = h.changes();
    changed.sort();
    assert_eq!(changed, names(&["b", "c", "d"]));
    assert_eq!(
        h.phases(),
        [
            ("a".into(), TaskPhase::Succeeded),
            ("b".into(), TaskPhase::Cancelled),
            ("c".into(), TaskPhase::Cancelled),
            ("d".into(), TaskPhase::Cancelled),
        ]
    );
    for task in ["b", "c", "d"] {
        assert_eq!(h.reason(task).as_deref(), Some("Cancelled"), "{task}");
        assert_eq!(h.status(task).finished_at, Some(at(5.0)));
    }
    assert_eq!(h.engine.phase(), RunPhase::Cancelled);
    assert_eq!(h.engine.running(), 0);
    assert_eq!(
        h.condition(),
        (
            ConditionStatus::False,
            "Cancelled".into(),
            "the run was cancelled; 1 of 4 tasks succeeded, 3 cancelled".into()
        )
    );
    assert_eq!(h.engine.run_status().finished_at, Some(at(5.0)));
    assert_eq!(h.wakeup(), None);

    let before = h.engine.run_status();
    assert_eq!(h.cancel(6.0), []);
    assert_eq!(h.ok("b", 1, "", 7.0), []);
    assert_eq!(h.tick(500.0), []);
    assert_eq!(h.start(600.0), []);
    assert_eq!(h.changes(), Vec::<String>::new());
    assert_eq!(h.engine.run_status(), before);
}

#[test]
fn cancel_before_start_and_after_the_end() {
    let mut h = Harness::new(json!({"tasks": [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}]}));
    assert_eq!(h.cancel(1.0), []);
    assert_eq!(h.engine.phase(), RunPhase::Cancelled);
    assert_eq!(h.changes(), names(&["a", "b"]));
    assert_eq!(h.phase("a"), TaskPhase::Cancelled);
    assert_eq!(h.engine.started_at(), None);
    assert_eq!(h.start(2.0), [], "a cancelled run never starts");
    assert_eq!(h.engine.started_at(), None);

    let mut h = Harness::new(json!({"tasks": [{"name": "a"}]}));
    h.start(0.0);
    h.ok("a", 1, "", 1.0);
    let before = h.engine.run_status();
    assert_eq!(h.cancel(2.0), []);
    assert_eq!(h.engine.phase(), RunPhase::Succeeded);
    assert_eq!(h.engine.run_status(), before);
}

#[test]
fn cancel_after_a_task_failed_for_good_still_cancels_the_run() {
    // Found by the property test: cancelling wins over an earlier failure.
    let mut h = Harness::new(json!({"tasks": [{"name": "a"}, {"name": "b"}]}));
    h.start(0.0);
    h.exit("a", 1, 1, 1.0);
    assert_eq!(h.engine.phase(), RunPhase::Running);
    assert_eq!(h.cancel(2.0), [kill("b", 1, KillReason::Cancelled)]);
    assert_eq!(h.engine.phase(), RunPhase::Cancelled);
    assert_eq!(h.phase("a"), TaskPhase::Failed);
    assert_eq!(h.reason("a").as_deref(), Some("Error"));
    assert_eq!(h.phase("b"), TaskPhase::Cancelled);
    let (status, reason, message) = h.condition();
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::False, "Cancelled")
    );
    assert_eq!(
        message,
        "the run was cancelled; 0 of 2 tasks succeeded, 1 failed, 1 cancelled"
    );
}

#[test]
fn deadline_after_a_task_failed_for_good() {
    let mut h = Harness::new(json!({"activeDeadlineSeconds": 10, "tasks": [
        {"name": "a"}, {"name": "b"},
    ]}));
    h.start(0.0);
    h.exit("a", 1, 1, 1.0);
    assert_eq!(h.tick(10.0), [kill("b", 1, KillReason::DeadlineExceeded)]);
    assert_eq!(h.engine.phase(), RunPhase::Failed);
    assert_eq!(h.reason("a").as_deref(), Some("Error"));
    assert_eq!(h.reason("b").as_deref(), Some("DeadlineExceeded"));
    let (status, reason, message) = h.condition();
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::False, "DeadlineExceeded")
    );
    assert_eq!(
        message,
        "the run's deadline was exceeded; 0 of 2 tasks succeeded, 2 failed"
    );
}

// ---- outputs ----

#[test]
fn invalid_outputs_fail_the_attempt_and_are_retried() {
    let big = format!(r#"{{"k": "{}"}}"#, "x".repeat(MAX_OUTPUT_BYTES));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("array", b"[1, 2]".to_vec(), "an array"),
        ("number", b"3".to_vec(), "a number"),
        ("string", br#""rows""#.to_vec(), "a string"),
        ("null", b"null".to_vec(), "null"),
        ("bool", b"true".to_vec(), "a boolean"),
        ("truncated", b"{\"rows\": ".to_vec(), "not valid JSON"),
        (
            "trailing garbage",
            b"{\"a\": 1} x".to_vec(),
            "not valid JSON",
        ),
        ("two objects", b"{} {}".to_vec(), "not valid JSON"),
        (
            "not UTF-8",
            vec![b'{', b'"', 0xff, b'"', b':', b'1', b'}'],
            "not valid JSON",
        ),
        ("over 4096 bytes", big.into_bytes(), "limit is 4096"),
    ];
    for (what, output, fragment) in cases {
        for second_valid in [false, true] {
            let mut h = Harness::new(json!({"tasks": [
                {"name": "a", "retries": {"limit": 1}},
                {"name": "b", "dependsOn": ["a"]},
            ]}));
            h.start(0.0);
            let invalid = Outcome::Exited {
                code: 0,
                output: output.clone(),
            };
            assert_eq!(h.report("a", 1, invalid.clone(), 1.0), [], "{what}");
            let a = h.status("a");
            assert_eq!(a.phase, TaskPhase::Pending, "{what}: retried");
            assert_eq!(a.reason.as_deref(), Some("InvalidOutput"), "{what}");
            assert_eq!(a.exit_code, Some(0), "{what}");
            assert_eq!(a.outputs, None, "{what}");
            assert!(
                a.message.as_deref().unwrap().contains(fragment),
                "{what}: {a:?}"
            );
            assert_eq!(h.wakeup(), Some(at(2.0)), "{what}");
            assert_eq!(h.tick(2.0), [start("a", 2)], "{what}");
            if second_valid {
                assert_eq!(
                    h.ok("a", 2, r#"{"ok": true}"#, 3.0),
                    [start("b", 1)],
                    "{what}"
                );
                assert_eq!(h.status("a").outputs.unwrap()["ok"], json!(true));
            } else {
                assert_eq!(h.report("a", 2, invalid, 3.0), [], "{what}");
                let a = h.status("a");
                assert_eq!(a.phase, TaskPhase::Failed, "{what}");
                assert_eq!(a.reason.as_deref(), Some("InvalidOutput"), "{what}");
                assert_eq!(h.phase("b"), TaskPhase::Skipped, "{what}");
                assert_eq!(h.engine.phase(), RunPhase::Failed, "{what}");
            }
        }
    }
}

#[test]
fn outputs_at_the_limit_and_blank_outputs_are_valid() {
    let exact = format!(r#"{{"k":"{}"}}"#, "x".repeat(MAX_OUTPUT_BYTES - 8));
    assert_eq!(exact.len(), MAX_OUTPUT_BYTES);
    let cases: [(&str, Option<Value>); 4] = [
        ("", None),
        (" \n\t", None),
        ("{}", None),
        (
            exact.as_str(),
            Some(json!({"k": "x".repeat(MAX_OUTPUT_BYTES - 8)})),
        ),
    ];
    for (output, expect) in cases {
        let mut h = Harness::new(json!({"tasks": [{"name": "a"}]}));
        h.start(0.0);
        h.ok("a", 1, output, 1.0);
        let a = h.status("a");
        assert_eq!(a.phase, TaskPhase::Succeeded, "{output:?}");
        assert_eq!(a.outputs.map(Value::Object), expect);
    }
}

#[test]
fn nonzero_exit_ignores_whatever_output_was_written() {
    let mut h = Harness::new(json!({"tasks": [{"name": "a"}]}));
    h.start(0.0);
    h.report("a", 1, exited(1, r#"{"rows": 3}"#), 1.0);
    let a = h.status("a");
    assert_eq!(a.reason.as_deref(), Some("Error"));
    assert_eq!(a.outputs, None);
}

#[test]
fn missing_output_key_fails_the_downstream_task_without_retrying() {
    struct Case {
        upstream_output: &'static str,
        /// Which task the input reads from.
        from: &'static str,
        listed: &'static str,
    }
    let cases = [
        Case {
            upstream_output: r#"{"rows": 3, "day": "x"}"#,
            from: "a",
            listed: "(its outputs: day, rows)",
        },
        Case {
            upstream_output: "",
            from: "a",
            listed: "(its outputs: none)",
        },
        Case {
            upstream_output: "{}",
            from: "root",
            listed: "(its outputs: none)",
        },
    ];
    for case in cases {
        let mut h = Harness::new(json!({"tasks": [
            {"name": "root"},
            {"name": "a", "dependsOn": ["root"]},
            {"name": "b", "dependsOn": ["a"], "retries": {"limit": 3}, "inputs": [
                {"name": "OK", "value": "v"},
                {"name": "COLS", "fromTask": case.from, "output": "cols"},
            ]},
            {"name": "c", "dependsOn": ["b"]},
            {"name": "side", "dependsOn": ["a"]},
        ]}));
        let what = case.upstream_output;
        h.start(0.0);
        h.ok("root", 1, "", 1.0);
        assert_eq!(
            h.ok("a", 1, case.upstream_output, 2.0),
            [start("side", 1)],
            "{what}: b never starts"
        );
        let b = h.status("b");
        assert_eq!(b.phase, TaskPhase::Failed, "{what}");
        assert_eq!(b.reason.as_deref(), Some("InputUnresolved"), "{what}");
        assert_eq!(b.attempts, 0, "{what}");
        assert_eq!(b.started_at, None, "{what}");
        assert_eq!(b.finished_at, Some(at(2.0)), "{what}");
        assert_eq!(b.exit_code, None, "{what}");
        let message = b.message.unwrap();
        assert_eq!(
            message,
            format!(
                "input \"COLS\": task \"{}\" has no output \"cols\" {}",
                case.from, case.listed
            )
        );
        assert_eq!(h.phase("c"), TaskPhase::Skipped, "{what}");
        // Not retried: nothing is scheduled for b.
        assert_eq!(h.wakeup(), None, "{what}");
        assert_eq!(h.tick(100.0), [], "{what}");
        assert_eq!(h.ok("side", 1, "", 101.0), [], "{what}");
        assert_eq!(h.engine.phase(), RunPhase::Failed, "{what}");
        let (_, reason, run_message) = h.condition();
        assert_eq!(reason, "TaskFailed");
        assert!(
            run_message.starts_with("task \"b\" failed: input \"COLS\""),
            "{run_message}"
        );
    }
}

// ---- status ----

#[test]
fn succeeded_condition_follows_the_run() {
    type Step = fn(&mut Harness);
    struct Case {
        name: &'static str,
        steps: Step,
        phase: RunPhase,
        status: ConditionStatus,
        reason: &'static str,
        message: &'static str,
        transitioned: Option<f64>,
    }
    let cases = [
        Case {
            name: "not started",
            steps: |_| {},
            phase: RunPhase::Pending,
            status: ConditionStatus::Unknown,
            reason: "Pending",
            message: "waiting to start; 2 tasks",
            transitioned: None,
        },
        Case {
            name: "running",
            steps: |h| {
                h.start(1.0);
            },
            phase: RunPhase::Running,
            status: ConditionStatus::Unknown,
            reason: "Running",
            message: "0 of 2 tasks succeeded, 1 running",
            transitioned: Some(1.0),
        },
        Case {
            name: "still running after a task finished",
            steps: |h| {
                h.start(1.0);
                h.ok("a", 1, "", 2.0);
            },
            phase: RunPhase::Running,
            status: ConditionStatus::Unknown,
            reason: "Running",
            message: "1 of 2 tasks succeeded, 1 running",
            transitioned: Some(1.0),
        },
        Case {
            name: "succeeded",
            steps: |h| {
                h.start(1.0);
                h.ok("a", 1, "", 2.0);
                h.ok("b", 1, "", 3.0);
            },
            phase: RunPhase::Succeeded,
            status: ConditionStatus::True,
            reason: "Succeeded",
            message: "2 of 2 tasks succeeded",
            transitioned: Some(3.0),
        },
        Case {
            name: "failed",
            steps: |h| {
                h.start(1.0);
                h.exit("a", 1, 4, 2.0);
            },
            phase: RunPhase::Failed,
            status: ConditionStatus::False,
            reason: "TaskFailed",
            message: "task \"a\" failed: attempt 1 exited with code 4; \
                      0 of 2 tasks succeeded, 1 failed, 1 skipped",
            transitioned: Some(2.0),
        },
        Case {
            name: "cancelled",
            steps: |h| {
                h.start(1.0);
                h.cancel(2.0);
            },
            phase: RunPhase::Cancelled,
            status: ConditionStatus::False,
            reason: "Cancelled",
            message: "the run was cancelled; 0 of 2 tasks succeeded, 2 cancelled",
            transitioned: Some(2.0),
        },
    ];
    for case in cases {
        let mut h =
            Harness::new(json!({"tasks": [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}]}));
        (case.steps)(&mut h);
        let what = case.name;
        assert_eq!(h.engine.phase(), case.phase, "{what}");
        let status = h.engine.run_status();
        assert_eq!(status.phase, Some(case.phase), "{what}");
        assert_eq!(status.conditions.len(), 1, "{what}");
        let cond = &status.conditions[0];
        assert_eq!(cond.type_, "Succeeded", "{what}");
        assert_eq!(cond.status, case.status, "{what}");
        assert_eq!(cond.reason.as_deref(), Some(case.reason), "{what}");
        assert_eq!(cond.message.as_deref(), Some(case.message), "{what}");
        assert_eq!(
            cond.last_transition_time,
            case.transitioned.map(at),
            "{what}"
        );
        assert_eq!(cond.observed_generation, None, "{what}");
        assert_eq!(h.engine.summary(), case.message, "{what}");
        assert_eq!(
            status.finished_at.is_some(),
            case.phase.is_final(),
            "{what}"
        );
        // The head is the same without the task list; the driver fills in the rest.
        let head = h.engine.run_status_head();
        assert_eq!(head.tasks, vec![], "{what}");
        assert_eq!(head.conditions, status.conditions, "{what}");
        assert_eq!(head.workflow, None);
        assert_eq!(head.observed_generation, None);
        let names: Vec<&str> = status.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"], "{what}");
    }
}

#[test]
fn run_status_serializes_to_the_documented_shape() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "extract"},
        {"name": "transform", "dependsOn": ["extract"], "retries": {"limit": 1}},
    ]}));
    h.start(0.0);
    h.ok("extract", 1, r#"{"rows": 3}"#, 2.0);
    h.exit("transform", 1, 1, 3.0);
    h.tick(4.0);
    h.ok("transform", 2, "", 9.0);
    let value = serde_json::to_value(h.engine.run_status()).unwrap();
    assert_eq!(
        value,
        json!({
            "phase": "Succeeded",
            "startedAt": "2026-11-26T03:00:00Z",
            "finishedAt": "2026-11-26T03:00:09Z",
            "progress": "2/2",
            "taskCounts": {"pending": 0, "running": 0, "succeeded": 2, "failed": 0, "skipped": 0, "cancelled": 0},
            "duration": "9s",
            "conditions": [{
                "type": "Succeeded",
                "status": "True",
                "reason": "Succeeded",
                "message": "2 of 2 tasks succeeded",
                "lastTransitionTime": "2026-11-26T03:00:09Z",
            }],
            "tasks": [
                {
                    "name": "extract",
                    "phase": "Succeeded",
                    "attempts": 1,
                    "startedAt": "2026-11-26T03:00:00Z",
                    "finishedAt": "2026-11-26T03:00:02Z",
                    "exitCode": 0,
                    "reason": "Completed",
                    "outputs": {"rows": 3},
                },
                {
                    "name": "transform",
                    "phase": "Succeeded",
                    "attempts": 2,
                    "startedAt": "2026-11-26T03:00:02Z",
                    "finishedAt": "2026-11-26T03:00:09Z",
                    "exitCode": 0,
                    "reason": "Completed",
                    "history": [
                        {"attempt": 1, "exitCode": 1, "reason": "Error",
                         "startedAt": "2026-11-26T03:00:02Z", "finishedAt": "2026-11-26T03:00:03Z"},
                        {"attempt": 2, "exitCode": 0, "reason": "Completed",
                         "startedAt": "2026-11-26T03:00:04Z", "finishedAt": "2026-11-26T03:00:09Z"},
                    ],
                },
            ],
        })
    );
}

#[test]
fn take_changes_reports_each_changed_task_once() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "a", "retries": {"limit": 1}},
        {"name": "b", "dependsOn": ["a"]},
        {"name": "c", "dependsOn": ["b"]},
        {"name": "x"},
    ]}));
    assert_eq!(h.changes(), Vec::<String>::new(), "new");
    h.start(0.0);
    assert_eq!(h.changes(), names(&["a", "x"]));
    assert_eq!(h.changes(), Vec::<String>::new(), "taken");
    h.exit("a", 1, 1, 1.0);
    assert_eq!(h.changes(), names(&["a"]), "back-off");
    h.tick(1.5);
    assert_eq!(h.changes(), Vec::<String>::new(), "nothing due");
    h.tick(2.0);
    assert_eq!(h.changes(), names(&["a"]), "retry started");
    // Several events before taking: each task still once.
    h.ok("a", 2, "", 3.0);
    h.ok("x", 1, "", 3.5);
    h.exit("b", 1, 1, 4.0);
    assert_eq!(h.changes(), names(&["a", "b", "x", "c"]));
    assert_eq!(h.changes(), Vec::<String>::new());
    assert_eq!(h.engine.phase(), RunPhase::Failed);
}

// ---- overflow: huge but valid durations must not panic ----

#[test]
fn huge_durations_do_not_overflow_the_clock() {
    // (what, spec, run phase after the first attempt fails)
    let cases = [
        (
            "timeoutSeconds",
            json!({"tasks": [{"name": "a", "timeoutSeconds": crate::compile::MAX_SECONDS}]}),
            RunPhase::Failed,
        ),
        (
            "activeDeadlineSeconds",
            json!({"activeDeadlineSeconds": crate::compile::MAX_SECONDS, "tasks": [{"name": "a"}]}),
            RunPhase::Failed,
        ),
        (
            "backoff",
            json!({"tasks": [{"name": "a", "retries": {"limit": 2,
                "backoff": {"initialSeconds": 1e300, "maxSeconds": 1e300}}}]}),
            RunPhase::Running,
        ),
        (
            "backoff growth",
            json!({"tasks": [{"name": "a", "retries": {"limit": 2,
                "backoff": {"initialSeconds": 1e10, "factor": 1e10, "maxSeconds": 1e300}}}]}),
            RunPhase::Running,
        ),
    ];
    for (what, spec, phase) in cases {
        let mut h = Harness::new(spec);
        assert_eq!(h.start(0.0), [start("a", 1)], "{what}");
        if let Some(wakeup) = h.wakeup() {
            assert!(wakeup > at(1e9), "{what}: {wakeup}");
        }
        assert_eq!(h.tick(1e9), [], "{what}");
        assert_eq!(h.exit("a", 1, 1, 1e9 + 1.0), [], "{what}");
        if let Some(wakeup) = h.wakeup() {
            assert!(wakeup > at(1e10), "{what}: {wakeup}");
        }
        assert_eq!(h.tick(1e10), [], "{what}");
        assert_eq!(h.engine.phase(), phase, "{what}");
    }
}

// ---- properties over random DAGs ----

/// splitmix64: proptest picks the seed, the simulated driver draws each attempt's outcome and
/// duration, and tie-breaks between simultaneous events, from it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Debug)]
struct GenTask {
    /// Indexes of dependencies, all lower than the task's own: the graph is acyclic.
    deps: Vec<usize>,
    limit: u32,
    timeout: Option<u64>,
    /// Reads output `k` of `deps[i]`, or (false) a key no task ever writes.
    input: Option<(usize, bool)>,
}

#[derive(Clone, Copy, Debug)]
enum Interrupt {
    /// `activeDeadlineSeconds`.
    Deadline(u64),
    /// `cancel()` at this many milliseconds after the start.
    Cancel(i64),
}

#[derive(Clone, Debug)]
struct GenRun {
    tasks: Vec<GenTask>,
    parallelism: Option<u32>,
    interrupt: Option<Interrupt>,
    seed: u64,
}

fn gen_task(index: usize) -> impl Strategy<Value = GenTask> {
    (
        prop::collection::vec(prop::bool::weighted(0.35), index),
        0u32..=3,
        prop::option::of(1u64..=4),
        prop::option::of((any::<prop::sample::Index>(), prop::bool::weighted(0.85))),
    )
        .prop_map(|(edges, limit, timeout, input)| {
            let deps: Vec<usize> = (0..edges.len()).filter(|&j| edges[j]).collect();
            let input = input
                .filter(|_| !deps.is_empty())
                .map(|(i, exists)| (i.index(deps.len()), exists));
            GenTask {
                deps,
                limit,
                timeout,
                input,
            }
        })
}

fn gen_run(interrupts: bool) -> impl Strategy<Value = GenRun> {
    let interrupt = if interrupts {
        prop_oneof![
            Just(None),
            (1u64..=12).prop_map(|s| Some(Interrupt::Deadline(s))),
            (0i64..=12_000).prop_map(|ms| Some(Interrupt::Cancel(ms))),
        ]
        .boxed()
    } else {
        Just(None).boxed()
    };
    (1usize..=8)
        .prop_flat_map(move |n| {
            let tasks: Vec<_> = (0..n).map(gen_task).collect();
            (
                tasks,
                prop::option::of(1u32..=4),
                interrupt.clone(),
                any::<u64>(),
            )
        })
        .prop_map(|(tasks, parallelism, interrupt, seed)| GenRun {
            tasks,
            parallelism,
            interrupt,
            seed,
        })
}

fn gen_spec(run: &GenRun) -> Value {
    let tasks: Vec<Value> = run
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut task = json!({
                "name": format!("t{i}"),
                "dependsOn": t.deps.iter().map(|d| format!("t{d}")).collect::<Vec<_>>(),
                "retries": {"limit": t.limit},
            });
            if let Some(timeout) = t.timeout {
                task["timeoutSeconds"] = json!(timeout);
            }
            if let Some((dep, exists)) = t.input {
                task["inputs"] = json!([{
                    "name": "IN",
                    "fromTask": format!("t{}", t.deps[dep]),
                    "output": if exists { "k" } else { "missing" },
                }]);
            }
            task
        })
        .collect();
    let mut spec = json!({ "tasks": tasks });
    if let Some(p) = run.parallelism {
        spec["parallelism"] = json!(p);
    }
    if let Some(Interrupt::Deadline(s)) = run.interrupt {
        spec["activeDeadlineSeconds"] = json!(s);
    }
    spec
}

/// One attempt as the simulated driver sees it.
#[derive(Debug)]
struct Flight {
    task: TaskId,
    attempt: u32,
    started_ms: i64,
    done_ms: i64,
    /// How it will end; `None` hangs until killed.
    outcome: Option<Outcome>,
    /// The engine killed it: its report, if it comes, is stale.
    killed: bool,
}

fn ms_of(ts: Timestamp) -> i64 {
    let ms = ts.duration_since(t0()).as_millis() as i64;
    assert_eq!(at_ms(ms), ts, "timer not on a millisecond");
    ms
}

/// Upper bound on events in one simulated run: at most 8 tasks × 4 attempts, each with a
/// handful of events (start, report, timeout, retry, stale report).
const MAX_STEPS: usize = 2_000;

struct Sim<'a> {
    run: &'a GenRun,
    engine: Engine,
    rng: Rng,
    now_ms: i64,
    flights: Vec<Flight>,
    statuses: Vec<TaskStatus>,
    /// Per task: the attempt that last failed and when, while it backs off.
    backoff: Vec<Option<(u32, i64)>>,
    cancelled_at: Option<i64>,
    stats: SimStats,
}

/// What a simulated run went through, to check the generators reach every case.
#[derive(Debug, Default)]
struct SimStats {
    kills: usize,
    stale_reports: usize,
    /// The parallelism cap was reached while some task was still pending.
    capped: bool,
    end: crate::api::RunStatus,
}

impl Sim<'_> {
    fn ids(&self) -> impl Iterator<Item = TaskId> + use<> {
        (0..self.run.tasks.len()).map(|i| TaskId(i as u32))
    }

    fn snapshot(&self) -> Vec<TaskStatus> {
        self.ids().map(|id| self.engine.task_status(id)).collect()
    }

    /// After every event: act on the engine's actions and check every invariant.
    fn after_event(&mut self) -> Result<(), TestCaseError> {
        let now = self.now_ms;
        for action in self.engine.take_actions() {
            match action {
                Action::Start(launch) => self.on_start(launch)?,
                Action::Kill {
                    task,
                    attempt,
                    reason,
                    ..
                } => {
                    self.stats.kills += 1;
                    let Some(i) = self
                        .flights
                        .iter()
                        .position(|f| f.task == task && f.attempt == attempt && !f.killed)
                    else {
                        return Err(TestCaseError::fail(format!(
                            "kill of {task:?} attempt {attempt}, which is not running"
                        )));
                    };
                    let flight = &mut self.flights[i];
                    match reason {
                        KillReason::Timeout => {
                            let timeout = self.run.tasks[task.index()].timeout;
                            prop_assert_eq!(
                                Some(now),
                                timeout.map(|t| flight.started_ms + t as i64 * 1000),
                                "timeout kill not at start + timeout"
                            );
                            // It keeps running (and its slot) until the kill takes: SIGTERM's
                            // exit a little later, unless it ends by itself at this instant.
                            if flight.outcome.is_none() || flight.done_ms > now {
                                flight.outcome = Some(exited(143, ""));
                                flight.done_ms = now + self.rng.below(1_500) as i64;
                            }
                            continue;
                        }
                        KillReason::DeadlineExceeded => {
                            let Some(Interrupt::Deadline(s)) = self.run.interrupt else {
                                return Err(TestCaseError::fail("deadline kill without deadline"));
                            };
                            prop_assert_eq!(now, s as i64 * 1000);
                        }
                        KillReason::Cancelled => prop_assert_eq!(Some(now), self.cancelled_at),
                    }
                    flight.killed = true;
                    if flight.outcome.is_none() {
                        self.flights.remove(i);
                    }
                }
            }
        }

        // Parallelism and the running count.
        let cap = self.run.parallelism.unwrap_or(u32::MAX);
        let running = self.engine.running();
        prop_assert!(running <= cap, "{running} running, parallelism {cap}");
        let live = self.flights.iter().filter(|f| !f.killed).count();
        prop_assert_eq!(live as u32, running, "live attempts vs engine");
        let now_statuses = self.snapshot();
        let running_phase = now_statuses
            .iter()
            .filter(|s| s.phase == TaskPhase::Running)
            .count();
        prop_assert_eq!(running_phase as u32, running);
        if running == cap {
            let waiting = now_statuses.iter().any(|s| s.phase == TaskPhase::Pending);
            self.stats.capped |= waiting;
        }

        // take_changes: each changed task exactly once, and nothing else.
        let changes = self.engine.take_changes();
        let reported: BTreeSet<TaskId> = changes.iter().copied().collect();
        prop_assert_eq!(reported.len(), changes.len(), "duplicate in {:?}", changes);
        let differ: BTreeSet<TaskId> = self
            .ids()
            .filter(|id| now_statuses[id.index()] != self.statuses[id.index()])
            .collect();
        prop_assert_eq!(&reported, &differ, "take_changes vs status changes");
        for id in self.ids() {
            let (before, after) = (&self.statuses[id.index()], &now_statuses[id.index()]);
            if before.phase.is_final() {
                prop_assert_eq!(before, after, "a final task changed");
            }
            if after.phase == TaskPhase::Pending && after.attempts > 0 && before != after {
                // Backing off after attempt `attempts` failed.
                self.backoff[id.index()] = Some((after.attempts, now));
            }
        }
        self.statuses = now_statuses;

        if let Some(wakeup) = self.engine.next_wakeup() {
            prop_assert!(ms_of(wakeup) >= now, "wake-up in the past");
        }
        Ok(())
    }

    fn on_start(&mut self, launch: Launch) -> Result<(), TestCaseError> {
        let now = self.now_ms;
        let id = launch.task;
        let spec = &self.run.tasks[id.index()];
        for &dep in &spec.deps {
            prop_assert_eq!(
                self.engine.task_status(TaskId(dep as u32)).phase,
                TaskPhase::Succeeded,
                "t{} started before its dependency t{} succeeded",
                id.0,
                dep
            );
        }
        let previous = self.statuses[id.index()].attempts;
        prop_assert_eq!(
            launch.attempt,
            previous + 1,
            "attempt numbers count up by one"
        );
        prop_assert!(
            launch.attempt <= spec.limit + 1,
            "more attempts than limit + 1"
        );
        prop_assert!(
            !self.flights.iter().any(|f| f.task == id && !f.killed),
            "started while an attempt is still running"
        );
        if launch.attempt > 1 {
            let Some((failed, failed_ms)) = self.backoff[id.index()] else {
                return Err(TestCaseError::fail("retry without a failed attempt"));
            };
            prop_assert_eq!(failed, launch.attempt - 1);
            // Default back-off: 1s, 2s, 4s, ... capped at 60s.
            let delay_ms = (1000i64 << (failed - 1)).min(60_000);
            if self.run.parallelism.is_none() {
                prop_assert_eq!(now, failed_ms + delay_ms, "retry not at the back-off");
            } else {
                prop_assert!(now >= failed_ms + delay_ms, "retry before the back-off");
            }
        }
        // Inputs: the upstream output `k` is the attempt number that succeeded.
        match spec.input {
            None => prop_assert_eq!(launch.inputs, vec![]),
            Some((dep, true)) => {
                let upstream = self.engine.task_status(TaskId(spec.deps[dep] as u32));
                prop_assert_eq!(
                    launch.inputs,
                    vec![("IN".to_string(), json!(upstream.attempts))]
                );
            }
            Some((_, false)) => {
                return Err(TestCaseError::fail(
                    "a task with an unresolvable input started",
                ));
            }
        }

        let ok = format!(r#"{{"k": {}}}"#, launch.attempt);
        let outcome = match self.rng.below(10) {
            0..=4 => Some(exited(0, &ok)),
            r @ 5..=6 => Some(exited(r as i32 - 4, "")),
            7 => Some(exited(0, "[1]")),
            8 => Some(Outcome::Failed {
                reason: "Lost".into(),
                message: "gone".into(),
            }),
            _ if spec.timeout.is_some() => None,
            _ => Some(exited(0, &ok)),
        };
        let duration = self.rng.below(6_000) as i64;
        self.flights.push(Flight {
            task: id,
            attempt: launch.attempt,
            started_ms: now,
            done_ms: now + duration,
            outcome,
            killed: false,
        });
        Ok(())
    }

    /// Delivers a finished flight's report.
    fn deliver(&mut self, i: usize) -> Result<(), TestCaseError> {
        let flight = self.flights.remove(i);
        let before = self.engine.run_status();
        let live = !flight.killed;
        if live {
            let status = &self.statuses[flight.task.index()];
            prop_assert_eq!(status.phase, TaskPhase::Running);
            prop_assert_eq!(status.attempts, flight.attempt);
        }
        let outcome = flight.outcome.expect("hanging flights are never delivered");
        self.engine
            .finish_attempt(flight.task, flight.attempt, outcome, at_ms(self.now_ms));
        if !live {
            self.stats.stale_reports += 1;
            prop_assert_eq!(self.engine.take_actions(), vec![], "stale report acted on");
            prop_assert_eq!(
                self.engine.take_changes(),
                vec![],
                "stale report changed status"
            );
            prop_assert_eq!(
                self.engine.run_status(),
                before,
                "stale report changed status"
            );
        }
        // As a driver does after each report: start what can start now.
        self.engine.tick(at_ms(self.now_ms));
        self.after_event()
    }
}

fn simulate(run: &GenRun) -> Result<SimStats, TestCaseError> {
    let dag = compile_spec(gen_spec(run));
    let params = bind_params(&dag, &BTreeMap::new(), "spec.params").unwrap();
    let n = run.tasks.len();
    let mut sim = Sim {
        run,
        engine: Engine::new(Arc::clone(&dag), params),
        rng: Rng(run.seed),
        now_ms: 0,
        flights: Vec::new(),
        statuses: Vec::new(),
        backoff: vec![None; n],
        cancelled_at: None,
        stats: SimStats::default(),
    };
    sim.statuses = sim.snapshot();
    sim.engine.start(at_ms(0));
    sim.after_event()?;

    let cancel_at = match run.interrupt {
        Some(Interrupt::Cancel(ms)) => Some(ms),
        _ => None,
    };
    let mut steps = 0;
    while !sim.engine.is_finished() {
        steps += 1;
        prop_assert!(steps <= MAX_STEPS, "no end after {} events", MAX_STEPS);
        // The candidate events and their times; the earliest happens next.
        let report = (0..sim.flights.len())
            .filter(|&i| sim.flights[i].outcome.is_some())
            .min_by_key(|&i| sim.flights[i].done_ms);
        let report_ms = report.map(|i| sim.flights[i].done_ms);
        let wakeup_ms = sim.engine.next_wakeup().map(ms_of);
        let cancel_ms = cancel_at.filter(|_| sim.cancelled_at.is_none());
        let Some(next) = [report_ms, wakeup_ms, cancel_ms]
            .into_iter()
            .flatten()
            .min()
        else {
            return Err(TestCaseError::fail(format!(
                "stuck: running, nothing in flight, no wake-up: {:?}",
                sim.engine.run_status()
            )));
        };
        prop_assert!(next >= sim.now_ms, "time went backwards");
        sim.now_ms = next;
        let mut due: Vec<u8> = Vec::new();
        if report_ms == Some(next) {
            due.push(0);
        }
        if wakeup_ms == Some(next) {
            due.push(1);
        }
        if cancel_ms == Some(next) {
            due.push(2);
        }
        match due[sim.rng.below(due.len() as u64) as usize] {
            0 => sim.deliver(report.unwrap())?,
            1 => {
                sim.engine.tick(at_ms(next));
                sim.after_event()?;
            }
            _ => {
                sim.cancelled_at = Some(next);
                sim.engine.cancel(at_ms(next));
                sim.after_event()?;
            }
        }
    }

    // Late reports after the end change nothing; neither do further events.
    while let Some(i) = sim.flights.iter().position(|f| f.outcome.is_some()) {
        sim.now_ms = sim.now_ms.max(sim.flights[i].done_ms);
        sim.deliver(i)?;
    }
    let end = sim.engine.run_status();
    sim.engine.tick(at(1e6));
    sim.engine.cancel(at(1e6));
    sim.engine.start(at(1e6));
    prop_assert_eq!(sim.engine.take_actions(), vec![]);
    prop_assert_eq!(sim.engine.take_changes(), vec![]);
    prop_assert_eq!(sim.engine.run_status(), end.clone());
    prop_assert_eq!(sim.engine.next_wakeup(), None);

    check_final(run, &end)?;
    sim.stats.end = end;
    Ok(sim.stats)
}

/// The contract's properties of a finished run.
fn check_final(run: &GenRun, end: &crate::api::RunStatus) -> Result<(), TestCaseError> {
    let n = run.tasks.len();
    let phase = end.phase.unwrap();
    prop_assert!(phase.is_final());
    prop_assert!(end.finished_at.is_some());
    let reason = end.conditions[0].reason.clone().unwrap();
    let interrupted = matches!(reason.as_str(), "DeadlineExceeded" | "Cancelled");
    // Ancestors, by walking dependencies (indexes only go down, so one pass in order works).
    let mut ancestors: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    for i in 0..n {
        for &d in &run.tasks[i].deps {
            let above = ancestors[d].clone();
            ancestors[i].insert(d);
            ancestors[i].extend(above);
        }
    }
    let tasks = &end.tasks;
    let failed = |i: &usize| tasks[*i].phase == TaskPhase::Failed;
    let mut any_failed = false;
    for (i, task) in tasks.iter().enumerate() {
        let spec = &run.tasks[i];
        let what = format!("t{i}: {task:?}");
        prop_assert!(task.phase.is_final(), "{}", what);
        prop_assert!(task.finished_at.is_some(), "{}", what);
        prop_assert!(task.attempts <= spec.limit + 1, "{}", what);
        let ancestor_failed = ancestors[i].iter().any(failed);
        match task.phase {
            TaskPhase::Succeeded => {
                prop_assert_eq!(task.reason.as_deref(), Some("Completed"));
                let expect = json!({"k": task.attempts});
                prop_assert_eq!(task.outputs.clone().map(Value::Object), Some(expect));
            }
            TaskPhase::Failed => {
                any_failed = true;
                match task.reason.as_deref().unwrap() {
                    "InputUnresolved" => {
                        prop_assert_eq!(task.attempts, 0, "{}", what);
                        prop_assert!(matches!(spec.input, Some((_, false))), "{}", what);
                    }
                    "DeadlineExceeded" => prop_assert_eq!(&reason, "DeadlineExceeded"),
                    "Error" | "Timeout" | "InvalidOutput" | "Lost" => {
                        prop_assert_eq!(task.attempts, spec.limit + 1, "{}", what)
                    }
                    other => return Err(TestCaseError::fail(format!("reason {other}: {what}"))),
                }
            }
            TaskPhase::Skipped => {
                prop_assert!(
                    ancestor_failed,
                    "skipped without a failed ancestor: {}",
                    what
                );
                prop_assert_eq!(task.reason.as_deref(), Some("UpstreamFailed"));
                prop_assert_eq!(task.attempts, 0);
            }
            TaskPhase::Cancelled => {
                prop_assert!(interrupted, "cancelled in a run that was not: {}", what);
                prop_assert_eq!(task.reason.as_deref(), Some(reason.as_str()));
            }
            TaskPhase::Pending | TaskPhase::Running => unreachable!(),
        }
        if !interrupted {
            // Skipped iff some ancestor failed.
            prop_assert_eq!(
                task.phase == TaskPhase::Skipped,
                ancestor_failed,
                "{}",
                what
            );
        }
    }
    let succeeded = tasks
        .iter()
        .filter(|t| t.phase == TaskPhase::Succeeded)
        .count();
    let message = end.conditions[0].message.clone().unwrap();
    prop_assert!(
        message.contains(&format!("{succeeded} of {n} tasks succeeded")),
        "{}",
        message
    );
    match phase {
        RunPhase::Succeeded => {
            prop_assert_eq!(succeeded, n);
            prop_assert_eq!(reason.as_str(), "Succeeded");
            prop_assert_eq!(end.conditions[0].status, ConditionStatus::True);
        }
        RunPhase::Failed => {
            prop_assert!(matches!(reason.as_str(), "TaskFailed" | "DeadlineExceeded"));
            prop_assert_eq!(end.conditions[0].status, ConditionStatus::False);
        }
        RunPhase::Cancelled => {
            prop_assert!(matches!(run.interrupt, Some(Interrupt::Cancel(_))));
            prop_assert_eq!(reason.as_str(), "Cancelled");
            prop_assert_eq!(end.conditions[0].status, ConditionStatus::False);
        }
        RunPhase::Pending | RunPhase::Running => unreachable!(),
    }
    // The run is Failed iff some task failed (or, when its deadline passed, regardless);
    // cancelling wins over both.
    prop_assert_eq!(
        phase == RunPhase::Failed,
        reason != "Cancelled" && (any_failed || reason == "DeadlineExceeded"),
        "run {:?} ({}) with a failed task: {}",
        phase,
        reason,
        any_failed
    );
    if run.interrupt.is_none() {
        prop_assert!(!interrupted);
        prop_assert_eq!(phase == RunPhase::Failed, any_failed);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Random DAGs, retry limits, timeouts, parallelism and outcomes, no deadline or cancel.
    #[test]
    fn random_runs_keep_the_contract(run in gen_run(false)) {
        simulate(&run)?;
    }

    /// The same with a run deadline or a cancel at a random time.
    #[test]
    fn random_interrupted_runs_keep_the_contract(run in gen_run(true)) {
        simulate(&run)?;
    }
}

/// The generators are not vacuous: over a fixed sample, every case the properties are about
/// actually happens.
#[test]
fn random_runs_reach_every_case() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let strategy = gen_run(true);
    for _ in 0..600 {
        let run = strategy.new_tree(&mut runner).unwrap().current();
        let stats = simulate(&run).unwrap();
        let end = &stats.end;
        let mut see = |what| *seen.entry(what).or_default() += 1;
        see(match end.phase.unwrap() {
            RunPhase::Succeeded => "run Succeeded",
            RunPhase::Failed => "run Failed",
            _ => "run Cancelled",
        });
        if end.conditions[0].reason.as_deref() == Some("DeadlineExceeded") {
            see("run DeadlineExceeded");
        }
        if stats.kills > 0 {
            see("kill");
        }
        if stats.stale_reports > 0 {
            see("stale report");
        }
        if stats.capped {
            see("parallelism reached");
        }
        for task in &end.tasks {
            if task.phase == TaskPhase::Succeeded && task.attempts > 1 {
                see("succeeded on a retry");
            }
            if task.phase == TaskPhase::Skipped {
                see("Skipped");
            }
            if let Some(reason) = &task.reason
                && task.phase == TaskPhase::Failed
            {
                see(match reason.as_str() {
                    "Timeout" => "Failed Timeout",
                    "InputUnresolved" => "Failed InputUnresolved",
                    "InvalidOutput" => "Failed InvalidOutput",
                    "DeadlineExceeded" => "Failed DeadlineExceeded",
                    _ => "Failed other",
                });
            }
        }
    }
    let expected = [
        "run Succeeded",
        "run Failed",
        "run Cancelled",
        "run DeadlineExceeded",
        "kill",
        "stale report",
        "parallelism reached",
        "succeeded on a retry",
        "Skipped",
        "Failed Timeout",
        "Failed InputUnresolved",
        "Failed InvalidOutput",
        "Failed DeadlineExceeded",
        "Failed other",
    ];
    for what in expected {
        assert!(
            seen.get(what).copied().unwrap_or(0) >= 5,
            "{what} rarely seen: {seen:?}"
        );
    }
}

// ---- suspend ----

#[test]
fn a_suspended_run_starts_nothing_but_records_what_ends() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "a"},
        {"name": "b", "dependsOn": ["a"]},
        {"name": "c", "retries": {"limit": 1, "backoff": {"initialSeconds": 1}}},
    ]}));
    assert_eq!(h.start(0.0), [start("a", 1), start("c", 1)]);
    h.engine.suspend(true, at(0.5));
    assert!(h.ok("a", 1, "", 1.0).is_empty(), "b waits for the resume");
    assert!(h.exit("c", 1, 1, 1.0).is_empty());
    assert!(
        h.tick(5.0).is_empty(),
        "nor does the retry whose back-off ended"
    );
    assert_eq!(h.phase("a"), TaskPhase::Succeeded);
    let suspended = h.engine.suspended_condition().unwrap();
    assert_eq!(suspended.status, ConditionStatus::True);
    assert!(h.engine.summary().starts_with("suspended"));
    h.engine.suspend(false, at(6.0));
    let mut started = h.tick(6.0);
    started.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(started, [start("b", 1), start("c", 2)]);
    let resumed = h.engine.suspended_condition().unwrap();
    assert_eq!(resumed.status, ConditionStatus::False);
    assert_eq!(resumed.reason.as_deref(), Some("Resumed"));
    assert_eq!(resumed.last_transition_time, Some(at(6.0)));
}

#[test]
fn a_run_never_suspended_has_no_suspended_condition_and_a_resume_is_a_no_op() {
    let mut h = Harness::new(json!({"tasks": [{"name": "a"}]}));
    h.start(0.0);
    h.engine.suspend(false, at(1.0));
    assert!(h.engine.suspended_condition().is_none());
}

#[test]
fn a_cancel_before_anything_started_starts_nothing() {
    let mut h = Harness::new(json!({"tasks": [{"name": "a"}, {"name": "b"}]}));
    h.engine.start(at(0.0));
    h.engine.cancel(at(0.0));
    assert!(
        h.acts().is_empty(),
        "no start, and no kill of what never started"
    );
    assert_eq!(h.engine.phase(), RunPhase::Cancelled);
    assert_eq!(h.phase("a"), TaskPhase::Cancelled);
    assert_eq!(
        h.status("a").attempts,
        0,
        "an attempt never started is no attempt"
    );
    assert_eq!(h.status("a").started_at, None);
}
