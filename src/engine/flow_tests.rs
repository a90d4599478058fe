//! Finally tasks, conditions (`when`, `trigger`, `continueOnFailure`) and the retry policy,
//! step by step with the fake clock of the parent module.

use super::*;

impl Harness {
    /// What the latest launch of a finally task was told: `(ORK_RUN_PHASE, ORK_FAILED_TASKS)`.
    pub(super) fn told(&self, task: &str) -> (RunPhase, String) {
        let launch = &self.launches[&self.id(task)];
        let env = launch.finally.as_ref().expect("a finally launch");
        (env.run_phase, env.failed_tasks.to_string())
    }

    fn failed(&mut self, task: &str, attempt: u32, reason: &str, secs: f64) -> Vec<Act> {
        let outcome = Outcome::Failed {
            reason: reason.into(),
            message: format!("{reason} happened"),
        };
        self.report(task, attempt, outcome, secs)
    }
}

// ---- finally ----

#[test]
fn finally_tasks_run_after_success_in_their_own_order() {
    let mut h = Harness::new(json!({
        "tasks": [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}],
        "finally": [{"name": "report"}, {"name": "cleanup", "dependsOn": ["report"]}],
    }));
    assert_eq!(h.start(0.0), [start("a", 1)]);
    assert_eq!(h.ok("a", 1, "", 1.0), [start("b", 1)]);
    assert_eq!(h.ok("b", 1, "", 2.0), [start("report", 1)]);
    assert_eq!(h.told("report"), (RunPhase::Succeeded, String::new()));
    assert_eq!(h.engine.phase(), RunPhase::Running);
    assert_eq!(h.ok("report", 1, "", 3.0), [start("cleanup", 1)]);
    assert_eq!(h.ok("cleanup", 1, "", 4.0), []);
    assert_eq!(h.engine.phase(), RunPhase::Succeeded);
    let status = h.engine.run_status();
    let flags: Vec<(&str, bool)> = status
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), t.finally))
        .collect();
    assert_eq!(
        flags,
        [
            ("a", false),
            ("b", false),
            ("report", true),
            ("cleanup", true)
        ]
    );
    assert_eq!(status.finished_at, Some(at(4.0)));
}

#[test]
fn finally_tasks_see_the_failure_and_a_failed_finally_task_fails_the_run() {
    let mut h = Harness::new(json!({
        "tasks": [{"name": "a"}, {"name": "b"}, {"name": "c", "dependsOn": ["b"]}],
        "finally": [{"name": "notify"}],
    }));
    h.start(0.0);
    assert_eq!(h.exit("b", 1, 3, 1.0), []);
    assert_eq!(h.phase("c"), TaskPhase::Skipped);
    assert_eq!(h.ok("a", 1, "", 2.0), [start("notify", 1)]);
    assert_eq!(h.told("notify"), (RunPhase::Failed, "b".to_string()));
    h.ok("notify", 1, "", 3.0);
    assert_eq!(h.engine.phase(), RunPhase::Failed);
    assert_eq!(h.condition().1, "TaskFailed");

    // A finally task failing fails an otherwise good run.
    let mut h = Harness::new(json!({
        "tasks": [{"name": "a"}],
        "finally": [{"name": "notify"}],
    }));
    h.start(0.0);
    h.ok("a", 1, "", 1.0);
    h.exit("notify", 1, 1, 2.0);
    assert_eq!(h.engine.phase(), RunPhase::Failed);
    assert!(
        h.condition().2.contains("\"notify\""),
        "{:?}",
        h.condition()
    );
}

#[test]
fn cancel_stops_the_regular_tasks_then_runs_finally_and_a_second_stop_ends_it() {
    let mut h = Harness::new(json!({
        "tasks": [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}],
        "finally": [{"name": "cleanup"}, {"name": "after", "dependsOn": ["cleanup"]}],
    }));
    h.start(0.0);
    assert_eq!(
        h.cancel(1.0),
        [kill("a", 1, KillReason::Cancelled), start("cleanup", 1)]
    );
    assert_eq!(h.told("cleanup"), (RunPhase::Cancelled, String::new()));
    assert_eq!(h.phase("a"), TaskPhase::Cancelled);
    assert_eq!(h.phase("b"), TaskPhase::Cancelled);
    assert_eq!(h.engine.phase(), RunPhase::Running);
    let (status, reason, message) = h.condition();
    assert_eq!(status, ConditionStatus::Unknown);
    assert_eq!(reason, "CancelledRunningFinally");
    assert!(message.contains("finally"), "{message}");
    // Cancelling again (a driver does it on every reconcile) changes nothing.
    assert_eq!(h.cancel(1.5), []);
    // A late report of the killed attempt is ignored.
    assert_eq!(h.exit("a", 1, 143, 1.6), []);
    assert_eq!(h.ok("cleanup", 1, "", 2.0), [start("after", 1)]);
    assert!(h.engine.is_cancelled());

    // The second stop ends the finally tasks too.
    h.engine.abort(at(3.0));
    assert_eq!(h.acts(), [kill("after", 1, KillReason::Cancelled)]);
    assert_eq!(h.phase("after"), TaskPhase::Cancelled);
    assert_eq!(h.engine.phase(), RunPhase::Cancelled);
    assert_eq!(h.condition().1, "Cancelled");
    assert_eq!(h.engine.run_status().finished_at, Some(at(3.0)));
}

#[test]
fn a_run_cancelled_before_it_started_runs_no_finally_task() {
    let mut h = Harness::new(json!({
        "tasks": [{"name": "a"}],
        "finally": [{"name": "cleanup"}],
    }));
    assert_eq!(h.cancel(0.0), []);
    assert_eq!(h.engine.phase(), RunPhase::Cancelled);
    assert_eq!(h.phase("cleanup"), TaskPhase::Cancelled);
}

#[test]
fn finally_tasks_run_after_the_deadline_bounded_by_their_own_timeout() {
    let mut h = Harness::new(json!({
        "activeDeadlineSeconds": 10,
        "tasks": [{"name": "slow"}, {"name": "later", "dependsOn": ["slow"]}],
        "finally": [{"name": "cleanup", "timeoutSeconds": 5}],
    }));
    h.start(0.0);
    assert_eq!(
        h.tick(10.0),
        [
            kill("slow", 1, KillReason::DeadlineExceeded),
            start("cleanup", 1)
        ]
    );
    assert_eq!(h.told("cleanup"), (RunPhase::Failed, "slow".to_string()));
    assert_eq!(h.phase("slow"), TaskPhase::Failed);
    assert_eq!(h.phase("later"), TaskPhase::Cancelled);
    assert_eq!(h.condition().1, "DeadlineExceededRunningFinally");
    // The finally task has its own timeout, counted from its start.
    assert_eq!(h.wakeup(), Some(at(15.0)));
    assert_eq!(h.ok("cleanup", 1, "", 12.0), []);
    assert_eq!(h.engine.phase(), RunPhase::Failed);
    assert_eq!(h.condition().1, "DeadlineExceeded");
    assert_eq!(h.engine.run_status().finished_at, Some(at(12.0)));
}

#[test]
fn the_deadline_does_not_touch_finally_tasks_once_the_regular_ones_ended() {
    let mut h = Harness::new(json!({
        "activeDeadlineSeconds": 10,
        "tasks": [{"name": "a"}],
        "finally": [{"name": "cleanup"}],
    }));
    h.start(0.0);
    assert_eq!(h.ok("a", 1, "", 5.0), [start("cleanup", 1)]);
    assert_eq!(h.tick(20.0), []);
    assert_eq!(h.ok("cleanup", 1, "", 25.0), []);
    assert_eq!(h.engine.phase(), RunPhase::Succeeded);
}

#[test]
fn a_finally_task_reading_what_was_not_written_is_skipped() {
    let mut h = Harness::new(json!({
        "tasks": [{"name": "a"}, {"name": "b"}],
        "finally": [
            {"name": "uses-a", "inputs": [{"name": "X", "fromTask": "a", "output": "x"}]},
            {"name": "uses-b", "inputs": [{"name": "Y", "fromTask": "b", "output": "y"}]},
        ],
    }));
    h.start(0.0);
    h.ok("a", 1, r#"{"x": 1}"#, 1.0);
    assert_eq!(h.exit("b", 1, 1, 2.0), [start("uses-a", 1)]);
    assert_eq!(h.inputs("uses-a"), inputs(&[("X", json!(1))]));
    assert_eq!(h.phase("uses-b"), TaskPhase::Skipped);
    assert_eq!(h.reason("uses-b").as_deref(), Some("InputUnresolved"));
    assert!(h.message("uses-b").contains("\"b\""));
}

#[test]
fn suspend_holds_back_regular_tasks_and_retries_but_not_finally_tasks() {
    let mut h = Harness::new(json!({
        "tasks": [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}],
        "finally": [{"name": "cleanup", "retries": {"limit": 1}}],
    }));
    h.start(0.0);
    h.engine.suspend(true, at(0.5));
    assert_eq!(h.ok("a", 1, "", 1.0), []);
    // A cancel ends the regular tasks; the finally task runs though the run is suspended.
    assert_eq!(h.cancel(2.0), [start("cleanup", 1)]);
    assert_eq!(h.exit("cleanup", 1, 1, 3.0), []);
    // Its retry waits for the resume.
    assert_eq!(h.tick(10.0), []);
    h.engine.suspend(false, at(11.0));
    assert_eq!(h.tick(11.0), [start("cleanup", 2)]);
}

// ---- conditions ----

#[test]
fn when_false_skips_one_branch_and_the_rest_goes_on() {
    let spec = json!({
        "params": [{"name": "env"}],
        "tasks": [
            {"name": "build"},
            {"name": "deploy", "dependsOn": ["build"],
             "when": [{"param": "env", "operator": "In", "values": ["prod", "staging"]}]},
            {"name": "after-deploy", "dependsOn": ["deploy"]},
            {"name": "test", "dependsOn": ["build"]},
        ],
    });
    let mut h = Harness::with_params(spec.clone(), &[("env", "dev")]);
    h.start(0.0);
    assert_eq!(
        h.ok("build", 1, "", 1.0),
        [start("test", 1), start("after-deploy", 1)]
    );
    assert_eq!(h.phase("deploy"), TaskPhase::Skipped);
    assert_eq!(h.reason("deploy").as_deref(), Some("WhenFalse"));
    assert!(
        h.message("deploy").contains("param \"env\""),
        "{}",
        h.message("deploy")
    );
    assert!(
        h.message("deploy").contains("\"dev\""),
        "{}",
        h.message("deploy")
    );
    h.ok("after-deploy", 1, "", 2.0);
    h.ok("test", 1, "", 2.0);
    assert_eq!(h.engine.phase(), RunPhase::Succeeded);

    let mut h = Harness::with_params(spec, &[("env", "prod")]);
    h.start(0.0);
    assert_eq!(
        h.ok("build", 1, "", 1.0),
        [start("deploy", 1), start("test", 1)]
    );
}

#[test]
fn when_compares_outputs_as_text() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "test"},
        {"name": "deploy", "dependsOn": ["test"], "when": [
            {"task": "test", "output": "coverage_ok", "operator": "NotIn", "values": ["false"]},
            {"task": "test", "output": "count", "operator": "In", "values": ["3"]},
            {"task": "test", "output": "mode", "operator": "In", "values": ["fast"]},
        ]},
        {"name": "missing", "dependsOn": ["test"], "when": [
            {"task": "test", "output": "nope", "operator": "NotIn", "values": ["x"]},
        ]},
        {"name": "holds-back", "dependsOn": ["test"], "when": [
            {"task": "test", "output": "coverage_ok", "operator": "In", "values": ["false"]},
        ]},
    ]}));
    h.start(0.0);
    let acts = h.ok(
        "test",
        1,
        r#"{"coverage_ok": true, "count": 3, "mode": "fast"}"#,
        1.0,
    );
    assert_eq!(acts, [start("deploy", 1)]);
    assert_eq!(h.reason("missing").as_deref(), Some("WhenFalse"));
    assert!(h.message("missing").contains("no output \"nope\""));
    assert_eq!(h.reason("holds-back").as_deref(), Some("WhenFalse"));
    assert!(h.message("holds-back").contains("when[0]"));
}

#[test]
fn a_skip_is_not_a_failure_downstream() {
    let mut h = Harness::new(json!({
        "params": [{"name": "go", "default": "no"}],
        "tasks": [
            {"name": "gate", "when": [{"param": "go", "operator": "In", "values": ["yes"]}]},
            {"name": "plain", "dependsOn": ["gate"]},
            {"name": "reader", "dependsOn": ["gate"],
             "inputs": [{"name": "V", "fromTask": "gate", "output": "v"}]},
            {"name": "after-reader", "dependsOn": ["reader"]},
        ],
    }));
    assert_eq!(h.start(0.0), [start("plain", 1), start("after-reader", 1)]);
    assert_eq!(h.reason("gate").as_deref(), Some("WhenFalse"));
    assert_eq!(h.reason("reader").as_deref(), Some("UpstreamSkipped"));
    assert!(h.message("reader").contains("\"gate\""));
}

#[test]
fn any_failed_runs_only_on_a_failure_and_does_not_rescue_the_run() {
    let spec = json!({"tasks": [
        {"name": "a"},
        {"name": "b"},
        {"name": "on-failure", "dependsOn": ["a", "b"], "trigger": "AnyFailed"},
        {"name": "always", "dependsOn": ["a", "b"], "trigger": "AllDone"},
    ]});
    let mut h = Harness::new(spec.clone());
    h.start(0.0);
    assert_eq!(h.exit("a", 1, 1, 1.0), []);
    assert_eq!(
        h.ok("b", 1, "", 2.0),
        [start("on-failure", 1), start("always", 1)]
    );
    h.ok("on-failure", 1, "", 3.0);
    h.ok("always", 1, "", 3.0);
    assert_eq!(h.engine.phase(), RunPhase::Failed);
    assert_eq!(h.condition().1, "TaskFailed");

    let mut h = Harness::new(spec);
    h.start(0.0);
    h.ok("a", 1, "", 1.0);
    assert_eq!(h.ok("b", 1, "", 2.0), [start("always", 1)]);
    assert_eq!(h.reason("on-failure").as_deref(), Some("TriggerNotMet"));
    h.ok("always", 1, "", 3.0);
    assert_eq!(h.engine.phase(), RunPhase::Succeeded);
}

#[test]
fn continue_on_failure_lets_dependents_run_and_the_run_succeed() {
    let mut h = Harness::new(json!({
        "tasks": [
            {"name": "lint", "continueOnFailure": true},
            {"name": "build", "dependsOn": ["lint"]},
            {"name": "alert", "dependsOn": ["lint"], "trigger": "AnyFailed"},
        ],
        "finally": [{"name": "notify"}],
    }));
    h.start(0.0);
    assert_eq!(
        h.exit("lint", 1, 2, 1.0),
        [start("build", 1), start("alert", 1)]
    );
    assert_eq!(h.phase("lint"), TaskPhase::Failed);
    h.ok("build", 1, "", 2.0);
    assert_eq!(h.ok("alert", 1, "", 2.0), [start("notify", 1)]);
    assert_eq!(h.told("notify"), (RunPhase::Succeeded, "lint".to_string()));
    h.ok("notify", 1, "", 3.0);
    assert_eq!(h.engine.phase(), RunPhase::Succeeded);
    assert_eq!(h.engine.task_counts().failed, 1);
}

// ---- retry policy ----

#[test]
fn only_listed_exit_codes_and_kinds_are_retried() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "flaky", "retries": {"limit": 3, "exitCodes": [75],
                                      "backoff": {"initialSeconds": 1}}},
    ]}));
    h.start(0.0);
    assert_eq!(h.exit("flaky", 1, 75, 0.5), []);
    assert_eq!(h.tick(1.5), [start("flaky", 2)]);
    assert_eq!(h.exit("flaky", 2, 1, 2.0), []);
    assert_eq!(h.phase("flaky"), TaskPhase::Failed);
    assert_eq!(h.status("flaky").attempts, 2);
    // A timeout is not retried when retryOn names Error only.
    let mut h = Harness::new(json!({"tasks": [
        {"name": "slow", "timeoutSeconds": 1,
         "retries": {"limit": 3, "retryOn": ["Error"]}},
    ]}));
    h.start(0.0);
    let killed = h.tick(1.0);
    assert_eq!(killed, [kill("slow", 1, KillReason::Timeout)]);
    assert_eq!(h.report("slow", 1, Outcome::TimedOut, 1.2), []);
    assert_eq!(h.phase("slow"), TaskPhase::Failed);
    assert_eq!(h.reason("slow").as_deref(), Some("Timeout"));
}

#[test]
fn failures_outside_the_task_are_retried_without_using_the_limit() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "a", "retries": {"limit": 0, "backoff": {"initialSeconds": 1}}},
    ]}));
    h.start(0.0);
    let mut now = 0.0;
    for attempt in 1..=5 {
        now += 1.0;
        assert_eq!(h.failed("a", attempt, "PodDeleted", now), []);
        assert_eq!(h.phase("a"), TaskPhase::Pending);
        assert_eq!(h.status("a").infra_retries, attempt);
        now += 1.0;
        assert_eq!(h.tick(now), [start("a", attempt + 1)]);
    }
    // The sixth is one too many: the limit (0 retries) decides.
    h.failed("a", 6, "Evicted", now + 1.0);
    let a = h.status("a");
    assert_eq!(a.phase, TaskPhase::Failed);
    assert_eq!((a.attempts, a.infra_retries), (6, 5));
    let reasons: Vec<&str> = a
        .history
        .iter()
        .filter_map(|e| e.reason.as_deref())
        .collect();
    assert_eq!(
        reasons,
        [
            "PodDeleted",
            "PodDeleted",
            "PodDeleted",
            "PodDeleted",
            "PodDeleted",
            "Evicted"
        ]
    );

    // An ordinary error after an infrastructure retry still has the whole limit.
    let mut h = Harness::new(json!({"tasks": [
        {"name": "a", "retries": {"limit": 1, "backoff": {"initialSeconds": 1}}},
    ]}));
    h.start(0.0);
    h.failed("a", 1, "JobLost", 1.0);
    assert_eq!(h.tick(2.0), [start("a", 2)]);
    h.exit("a", 2, 1, 3.0);
    assert_eq!(h.tick(4.0), [start("a", 3)]);
    assert!(h.message("a").is_empty() || h.phase("a") == TaskPhase::Running);
    h.exit("a", 3, 1, 5.0);
    assert_eq!(h.phase("a"), TaskPhase::Failed);
}

#[test]
fn history_keeps_the_latest_attempts() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "a", "retries": {"limit": 20, "backoff": {"initialSeconds": 0}}},
    ]}));
    h.start(0.0);
    assert!(
        h.status("a").history.is_empty(),
        "one running attempt is the task itself"
    );
    for attempt in 1..=12 {
        let now = attempt as f64;
        h.exit("a", attempt, attempt as i32, now);
        h.tick(now);
    }
    let history = h.status("a").history;
    assert_eq!(history.len(), MAX_HISTORY);
    let attempts: Vec<u32> = history.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, (4..=13).collect::<Vec<_>>());
    let last = history.last().unwrap();
    assert_eq!((last.finished_at, last.reason.as_deref()), (None, None));
    assert_eq!(history[0].exit_code, Some(4));
    assert_eq!(history[0].started_at, Some(at(3.0)));
    assert_eq!(history[0].finished_at, Some(at(4.0)));
}

// ---- random runs ----

/// One random task: dependencies (on earlier tasks), trigger, `continueOnFailure`, and whether
/// its `when` (on a param) holds, if it has one.
#[derive(Clone, Debug)]
struct RandomTask {
    deps: Vec<usize>,
    trigger: u8,
    continues: bool,
    when: Option<bool>,
}

fn random_tasks() -> impl Strategy<Value = Vec<RandomTask>> {
    proptest::collection::vec(
        (
            proptest::collection::vec(any::<bool>(), 7),
            0u8..3,
            any::<bool>(),
            proptest::option::of(any::<bool>()),
        ),
        1..7,
    )
    .prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, (edges, trigger, continues, when))| RandomTask {
                deps: (0..i).filter(|&j| edges[j]).collect(),
                trigger,
                continues,
                when,
            })
            .collect()
    })
}

fn random_spec(tasks: &[RandomTask]) -> Value {
    let list: Vec<Value> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let trigger = ["AllSucceeded", "AllDone", "AnyFailed"][usize::from(t.trigger)];
            let mut task = json!({
                "name": format!("t{i}"),
                "dependsOn": t.deps.iter().map(|d| format!("t{d}")).collect::<Vec<_>>(),
                "trigger": trigger,
                "continueOnFailure": t.continues,
            });
            if let Some(holds) = t.when {
                let values = if holds { ["on"] } else { ["off"] };
                task["when"] = json!([{"param": "mode", "operator": "In", "values": values}]);
            }
            task
        })
        .collect();
    json!({
        "params": [{"name": "mode", "default": "on"}],
        "tasks": list,
        "finally": [{"name": "f0"}, {"name": "f1", "dependsOn": ["f0"], "trigger": "AllDone"}],
    })
}

proptest! {
    /// Random DAGs with random triggers, `when` and `continueOnFailure`, random outcomes and
    /// maybe a cancel: a regular task runs iff its trigger and `when` hold over how its
    /// dependencies ended; nothing is left running; every finally task runs exactly once; the
    /// run's outcome follows the contract.
    #[test]
    fn a_task_runs_iff_its_trigger_holds_and_finally_runs_once(
        tasks in random_tasks(),
        outcomes in proptest::collection::vec(any::<bool>(), 16),
        cancel_at in proptest::option::of(0usize..10),
    ) {
        let mut h = Harness::new(random_spec(&tasks));
        h.start(0.0);
        let mut step = 0;
        while !h.engine.is_finished() {
            prop_assert!(step < 100, "no end");
            let now = 1.0 + step as f64;
            if cancel_at == Some(step) {
                h.cancel(now);
            }
            let running: Vec<(TaskId, u32)> = h.engine.running_attempts().collect();
            let Some(&(task, attempt)) = running.first() else {
                prop_assert!(h.engine.is_finished(), "stuck: {:?}", h.engine.run_status());
                break;
            };
            let ok = outcomes[step % outcomes.len()] || h.dag.is_finally(task);
            let name = h.name(task);
            h.report(&name, attempt, exited(if ok { 0 } else { 1 }, ""), now);
            step += 1;
        }
        let end = h.engine.run_status();
        prop_assert_eq!(h.engine.running(), 0);
        let cancelled = h.engine.is_cancelled();
        let n = tasks.len();
        let record = |i: usize| &end.tasks[i];
        for (i, task) in tasks.iter().enumerate() {
            let got = record(i);
            prop_assert!(got.phase.is_final(), "t{}: {:?}", i, got);
            if got.phase == TaskPhase::Cancelled {
                prop_assert!(cancelled);
                continue;
            }
            let parents: Vec<&TaskStatus> = task.deps.iter().map(|&d| record(d)).collect();
            let counts_as_done = |d: usize| {
                let p = record(d);
                match p.phase {
                    TaskPhase::Succeeded => true,
                    TaskPhase::Skipped => p.reason.as_deref() != Some("UpstreamFailed"),
                    TaskPhase::Failed => tasks[d].continues,
                    _ => false,
                }
            };
            let trigger = match task.trigger {
                0 => task.deps.iter().all(|&d| counts_as_done(d)),
                1 => true,
                _ => parents.iter().any(|p| p.phase == TaskPhase::Failed),
            };
            let runs = trigger && task.when != Some(false);
            let ran = got.attempts > 0;
            prop_assert_eq!(ran, runs, "t{}: {:?} after {:?}", i, got, parents);
            if !runs {
                let expected = match (trigger, task.trigger) {
                    (false, 0) => "UpstreamFailed",
                    (false, _) => "TriggerNotMet",
                    (true, _) => "WhenFalse",
                };
                prop_assert_eq!(got.reason.as_deref(), Some(expected), "t{}", i);
            }
        }
        for i in n..n + 2 {
            prop_assert_eq!(record(i).attempts, 1, "finally {:?}", record(i));
            prop_assert_eq!(record(i).phase, TaskPhase::Succeeded);
        }
        let blocking = (0..n).any(|i| record(i).phase == TaskPhase::Failed && !tasks[i].continues);
        let expected = if cancelled {
            RunPhase::Cancelled
        } else if blocking {
            RunPhase::Failed
        } else {
            RunPhase::Succeeded
        };
        prop_assert_eq!(end.phase, Some(expected));
    }
}

// ---- rerun ----

pub(super) fn record(name: &str, phase: TaskPhase, attempts: u32, outputs: Value) -> TaskStatus {
    let mut status: TaskStatus = serde_json::from_value(json!({
        "name": name, "phase": phase, "attempts": attempts,
        "startedAt": "2026-11-25T00:00:00Z", "finishedAt": "2026-11-25T00:00:05Z",
    }))
    .unwrap();
    status.outputs = outputs.as_object().cloned();
    status
}

#[test]
fn a_rerun_reuses_what_succeeded_with_everything_upstream_and_runs_the_rest() {
    let spec = json!({
        "tasks": [
            {"name": "a"},
            {"name": "b", "dependsOn": ["a"]},
            {"name": "c", "dependsOn": ["a"]},
            {"name": "d", "dependsOn": ["b", "c"],
             "inputs": [{"name": "B", "fromTask": "b", "output": "v"}]},
            {"name": "e", "dependsOn": ["c"], "trigger": "AllDone"},
        ],
        "finally": [{"name": "f"}],
    });
    let previous = [
        record("a", TaskPhase::Succeeded, 1, json!({"v": 1})),
        record("b", TaskPhase::Succeeded, 3, json!({"v": "from-b"})),
        record("c", TaskPhase::Failed, 2, json!(null)),
        record("d", TaskPhase::Skipped, 0, json!(null)),
        // Succeeded after a failure upstream (AllDone): not reused, c reruns.
        record("e", TaskPhase::Succeeded, 1, json!(null)),
        {
            let mut f = record("f", TaskPhase::Succeeded, 1, json!(null));
            f.finally = true;
            f
        },
    ];
    let mut h = Harness::new(spec);
    h.engine.reuse(&previous, "etl-1");
    assert_eq!(h.start(10.0), [start("c", 1)]);
    for reused in ["a", "b"] {
        let s = h.status(reused);
        assert_eq!(s.phase, TaskPhase::Succeeded, "{reused}");
        assert_eq!(s.reason.as_deref(), Some("Reused"));
        assert_eq!(s.reused_from.as_deref(), Some("etl-1"));
        assert_eq!(s.started_at, Some("2026-11-25T00:00:00Z".parse().unwrap()));
    }
    assert_eq!(h.status("b").attempts, 3);
    assert_eq!(h.ok("c", 1, "", 11.0), [start("d", 1), start("e", 1)]);
    assert_eq!(h.inputs("d"), inputs(&[("B", json!("from-b"))]));
    h.ok("d", 1, "", 12.0);
    assert_eq!(h.ok("e", 1, "", 12.0), [start("f", 1)]);
    h.ok("f", 1, "", 13.0);
    assert_eq!(h.engine.phase(), RunPhase::Succeeded);
    assert_eq!(h.condition().2, "6 of 6 tasks succeeded");

    // A rerun of the rerun names the run that produced each result.
    let again = h.engine.run_status().tasks;
    let mut h2 = Harness::new(
        json!({"tasks": [{"name": "a"}, {"name": "b", "dependsOn": ["a"]},
        {"name": "c", "dependsOn": ["a"]},
        {"name": "d", "dependsOn": ["b", "c"], "inputs": [{"name": "B", "fromTask": "b", "output": "v"}]},
        {"name": "e", "dependsOn": ["c"], "trigger": "AllDone"}], "finally": [{"name": "f"}]}),
    );
    h2.engine.reuse(&again, "etl-2");
    assert_eq!(h2.start(20.0), [start("f", 1)]);
    assert_eq!(h2.status("a").reused_from.as_deref(), Some("etl-1"));
    assert_eq!(h2.status("c").reused_from.as_deref(), Some("etl-2"));
}
