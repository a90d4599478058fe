//! Fan-out (`forEach`): instances, their parallelism, the task's phase, gathered outputs,
//! cancel, rerun and restore, step by step and with random widths and failures.

use super::flow::record;
use super::*;

impl Harness {
    /// The item and index the latest launch of an instance was given.
    fn item(&self, instance: &str) -> (u32, Value) {
        let launch = &self.launches[&self.id(instance)];
        let i = launch.instance.as_ref().expect("an instance launch");
        (i.index, i.item.clone())
    }

    /// Instances of `task` running now.
    fn running_instances(&self, task: &str) -> usize {
        let count = self.status(task).instances.unwrap_or(0);
        (0..count)
            .filter(|i| self.phase(&format!("{task}[{i}]")) == TaskPhase::Running)
            .count()
    }
}

fn starts(names: &[&str]) -> Vec<Act> {
    names.iter().map(|n| start(n, 1)).collect()
}

#[test]
fn a_literal_list_runs_one_instance_per_item_and_gathers_outputs_in_item_order() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "process", "forEach": {"items": ["a.csv", {"k": 1}, 7]}},
        {"name": "sum", "dependsOn": ["process"],
         "inputs": [{"name": "N", "fromTask": "process", "output": "n"}]},
    ]}));
    assert_eq!(
        h.start(0.0),
        starts(&["process[0]", "process[1]", "process[2]"])
    );
    assert_eq!(h.item("process[0]"), (0, json!("a.csv")));
    assert_eq!(h.item("process[1]"), (1, json!({"k": 1})));
    assert_eq!(h.item("process[2]"), (2, json!(7)));
    let group = h.status("process");
    assert_eq!(group.phase, TaskPhase::Running);
    assert_eq!(group.instances, Some(3));
    assert_eq!(group.attempts, 0);
    assert_eq!(h.engine.task_counts().running, 4);

    // They end out of order; the reader gets item order.
    assert_eq!(h.ok("process[2]", 1, r#"{"n": 30}"#, 1.0), []);
    assert_eq!(h.ok("process[0]", 1, r#"{"n": 10}"#, 2.0), []);
    assert_eq!(h.phase("process"), TaskPhase::Running);
    assert_eq!(
        h.ok("process[1]", 1, r#"{"n": "x"}"#, 3.0),
        [start("sum", 1)]
    );
    assert_eq!(h.phase("process"), TaskPhase::Succeeded);
    assert_eq!(h.message("process"), "3 instances succeeded");
    assert_eq!(h.status("process").finished_at, Some(at(3.0)));
    assert_eq!(h.inputs("sum"), inputs(&[("N", json!([10, "x", 30]))]));
    h.ok("sum", 1, "", 4.0);
    assert_eq!(h.engine.phase(), RunPhase::Succeeded);
    assert_eq!(h.condition().2, "5 of 5 tasks succeeded");

    let names: Vec<String> = h
        .engine
        .run_status()
        .tasks
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(
        names,
        ["process", "sum", "process[0]", "process[1]", "process[2]"]
    );
}

#[test]
fn a_param_or_an_upstream_output_gives_the_list_at_run_time() {
    let spec = json!({
        "params": [{"name": "files"}],
        "tasks": [
            {"name": "by-param", "forEach": {"fromParam": "files"}},
            {"name": "list"},
            {"name": "by-output", "dependsOn": ["list"],
             "forEach": {"fromTask": "list", "output": "files", "parallelism": 1}},
            {"name": "by-text", "dependsOn": ["list"],
             "forEach": {"fromTask": "list", "output": "text"}},
        ],
    });
    let mut h = Harness::with_params(spec, &[("files", r#"["x", "y"]"#)]);
    assert_eq!(
        h.start(0.0),
        starts(&["by-param[0]", "by-param[1]", "list"])
    );
    assert_eq!(h.item("by-param[1]"), (1, json!("y")));
    assert_eq!(
        h.ok("list", 1, r#"{"files": [1, 2], "text": "[\"p\"]"}"#, 1.0),
        starts(&["by-output[0]", "by-text[0]"])
    );
    assert_eq!(h.item("by-output[0]"), (0, json!(1)));
    assert_eq!(h.item("by-text[0]"), (0, json!("p")));
    assert_eq!(h.ok("by-output[0]", 1, "", 2.0), [start("by-output[1]", 1)]);
}

#[test]
fn a_list_that_is_not_an_array_or_too_long_fails_the_task() {
    let spec = json!({
        "params": [{"name": "files"}],
        "tasks": [
            {"name": "p", "forEach": {"fromParam": "files"}},
            {"name": "after", "dependsOn": ["p"]},
        ],
    });
    for (value, reason, message) in [
        (
            "a.csv",
            "InvalidFanOut",
            r#"forEach: param "files" is not a JSON array: "a.csv""#,
        ),
        (
            r#"{"a": 1}"#,
            "InvalidFanOut",
            r#"forEach: param "files" is an object, not a JSON array"#,
        ),
        (
            "3",
            "InvalidFanOut",
            r#"forEach: param "files" is a number, not a JSON array"#,
        ),
    ] {
        let mut h = Harness::with_params(spec.clone(), &[("files", value)]);
        assert_eq!(h.start(0.0), []);
        assert_eq!(h.phase("p"), TaskPhase::Failed, "{value}");
        assert_eq!(h.reason("p").as_deref(), Some(reason));
        assert_eq!(h.message("p"), message);
        assert_eq!(h.status("p").instances, None);
        assert_eq!(h.reason("after").as_deref(), Some("UpstreamFailed"));
        assert_eq!(h.engine.phase(), RunPhase::Failed);
    }
    let long = serde_json::to_string(&vec![0; crate::api::MAX_FAN_OUT + 1]).unwrap();
    let mut h = Harness::with_params(spec.clone(), &[("files", &long)]);
    h.start(0.0);
    assert_eq!(h.reason("p").as_deref(), Some("FanOutTooLarge"));
    assert_eq!(
        h.message("p"),
        r#"forEach: param "files" has 10001 items, at most 10000 are allowed"#
    );

    // An output key that is not there.
    let mut h = Harness::new(json!({"tasks": [
        {"name": "list"},
        {"name": "p", "dependsOn": ["list"], "forEach": {"fromTask": "list", "output": "files"}},
    ]}));
    h.start(0.0);
    h.ok("list", 1, r#"{"other": 1}"#, 1.0);
    assert_eq!(h.reason("p").as_deref(), Some("InvalidFanOut"));
    assert_eq!(
        h.message("p"),
        r#"forEach: task "list" has no output "files" (its outputs: other)"#
    );
}

#[test]
fn an_empty_list_succeeds_at_once_and_gives_readers_an_empty_array() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "p", "forEach": {"items": []}},
        {"name": "after", "dependsOn": ["p"],
         "inputs": [{"name": "V", "fromTask": "p", "output": "v"}]},
    ]}));
    assert_eq!(h.start(0.0), [start("after", 1)]);
    let p = h.status("p");
    assert_eq!(
        (p.phase, p.instances, p.reason.as_deref()),
        (TaskPhase::Succeeded, Some(0), Some("Completed"))
    );
    assert_eq!(h.inputs("after"), inputs(&[("V", json!([]))]));
}

#[test]
fn for_each_parallelism_and_the_runs_parallelism_both_hold() {
    let mut h = Harness::new(json!({"parallelism": 3, "tasks": [
        {"name": "p", "forEach": {"items": [0, 1, 2, 3, 4], "parallelism": 2}},
        {"name": "other"},
    ]}));
    assert_eq!(h.start(0.0), starts(&["p[0]", "p[1]", "other"]));
    assert_eq!(h.running_instances("p"), 2);
    assert_eq!(h.ok("other", 1, "", 1.0), []);
    // A retry goes back in the queue and waits its turn.
    assert_eq!(h.exit("p[0]", 1, 1, 2.0), [start("p[2]", 1)]);
    assert_eq!(h.phase("p[0]"), TaskPhase::Failed);
    assert_eq!(h.ok("p[1]", 1, "", 3.0), [start("p[3]", 1)]);
    assert_eq!(h.ok("p[2]", 1, "", 4.0), [start("p[4]", 1)]);
    assert_eq!(h.ok("p[3]", 1, "", 5.0), []);
    assert_eq!(h.phase("p"), TaskPhase::Running);
    assert_eq!(h.ok("p[4]", 1, "", 6.0), []);
    assert_eq!(h.phase("p"), TaskPhase::Failed);
    assert_eq!(h.reason("p").as_deref(), Some("Error"));
    assert_eq!(
        h.message("p"),
        "1 of 5 instances failed; p[0]: attempt 1 exited with code 1"
    );
    assert_eq!(h.engine.phase(), RunPhase::Failed);
    assert!(
        h.condition()
            .2
            .starts_with("task \"p\" failed: 1 of 5 instances failed")
    );
}

#[test]
fn each_instance_retries_on_its_own() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "p", "forEach": {"items": ["a", "b"]},
         "retries": {"limit": 1, "backoff": {"initialSeconds": 1}}},
    ]}));
    h.start(0.0);
    assert_eq!(h.exit("p[1]", 1, 2, 1.0), []);
    assert_eq!(h.phase("p[1]"), TaskPhase::Pending);
    assert_eq!(h.tick(2.0), [start("p[1]", 2)]);
    assert_eq!(h.item("p[1]"), (1, json!("b")));
    h.ok("p[0]", 1, "", 2.5);
    h.ok("p[1]", 2, "", 3.0);
    assert_eq!(h.phase("p"), TaskPhase::Succeeded);
    assert_eq!(h.status("p[1]").attempts, 2);
    assert_eq!(h.status("p").attempts, 0);
}

#[test]
fn each_instance_has_its_own_timeout_and_a_held_instance_waits_for_the_kill() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "p", "forEach": {"items": ["a", "b"], "parallelism": 1}, "timeoutSeconds": 5,
         "retries": {"limit": 1, "backoff": {"initialSeconds": 0}}},
    ]}));
    assert_eq!(h.start(0.0), [start("p[0]", 1)]);
    assert_eq!(h.tick(5.0), [kill("p[0]", 1, KillReason::Timeout)]);
    // The timed-out instance holds its place until it is gone.
    assert_eq!(h.tick(6.0), []);
    assert_eq!(h.exit("p[0]", 1, 143, 7.0), [start("p[1]", 1)]);
    assert_eq!(h.reason("p[0]").as_deref(), Some("Timeout"));
    assert_eq!(h.phase("p[0]"), TaskPhase::Pending);
    // The retry waits for p[1]: the fan-out's cap counts attempts, retries included.
    assert_eq!(h.ok("p[1]", 1, "", 8.0), [start("p[0]", 2)]);
    assert_eq!(h.ok("p[0]", 2, "", 9.0), []);
    assert_eq!(h.phase("p"), TaskPhase::Succeeded);
    assert_eq!(h.status("p[0]").attempts, 2);
}

#[test]
fn a_failed_instance_with_continue_on_failure_lets_dependents_run() {
    let spec = |cof: bool| {
        json!({"tasks": [
            {"name": "p", "forEach": {"items": [1, 2]}, "continueOnFailure": cof},
            {"name": "after", "dependsOn": ["p"]},
            {"name": "reader", "dependsOn": ["p"],
             "inputs": [{"name": "V", "fromTask": "p", "output": "v"}]},
        ]})
    };
    let mut h = Harness::new(spec(true));
    h.start(0.0);
    h.exit("p[0]", 1, 1, 1.0);
    assert_eq!(h.ok("p[1]", 1, r#"{"v": 2}"#, 2.0), [start("after", 1)]);
    assert_eq!(h.phase("p"), TaskPhase::Failed);
    // The failed instance wrote nothing: its reader cannot run.
    assert_eq!(h.reason("reader").as_deref(), Some("InputUnresolved"));
    assert_eq!(
        h.message("reader"),
        r#"input "V": instance "p[0]" has no output "v" (its outputs: none)"#
    );

    let mut h = Harness::new(spec(false));
    h.start(0.0);
    h.exit("p[0]", 1, 1, 1.0);
    assert_eq!(h.ok("p[1]", 1, "", 2.0), []);
    assert_eq!(h.reason("after").as_deref(), Some("UpstreamFailed"));
    assert_eq!(h.engine.phase(), RunPhase::Failed);
}

#[test]
fn cancel_stops_the_instances_and_finally_tasks_still_fan_out() {
    let mut h = Harness::new(json!({
        "tasks": [{"name": "p", "forEach": {"items": [1, 2, 3], "parallelism": 1}}],
        "finally": [{"name": "f", "forEach": {"items": ["x", "y"]}}],
    }));
    assert_eq!(h.start(0.0), [start("p[0]", 1)]);
    assert_eq!(
        h.cancel(1.0),
        [
            kill("p[0]", 1, KillReason::Cancelled),
            start("f[0]", 1),
            start("f[1]", 1)
        ]
    );
    for name in ["p", "p[0]", "p[1]", "p[2]"] {
        assert_eq!(h.phase(name), TaskPhase::Cancelled, "{name}");
    }
    assert_eq!(h.told("f[1]"), (RunPhase::Cancelled, String::new()));
    h.ok("f[0]", 1, "", 2.0);
    h.ok("f[1]", 1, "", 2.0);
    assert_eq!(h.engine.phase(), RunPhase::Cancelled);
    assert!(h.status("f[0]").finally);
    // A late report of the killed instance changes nothing.
    h.ok("p[0]", 1, "", 3.0);
    assert_eq!(h.phase("p[0]"), TaskPhase::Cancelled);
}

#[test]
fn the_deadline_fails_running_instances_and_the_task() {
    let mut h = Harness::new(json!({"activeDeadlineSeconds": 10, "tasks": [
        {"name": "p", "forEach": {"items": [1, 2], "parallelism": 1}},
    ]}));
    h.start(0.0);
    assert_eq!(
        h.tick(10.0),
        [kill("p[0]", 1, KillReason::DeadlineExceeded)]
    );
    assert_eq!(h.phase("p[0]"), TaskPhase::Failed);
    assert_eq!(h.phase("p[1]"), TaskPhase::Cancelled);
    assert_eq!(h.phase("p"), TaskPhase::Failed);
    assert_eq!(h.reason("p").as_deref(), Some("DeadlineExceeded"));
    assert_eq!(h.condition().1, "DeadlineExceeded");
}

#[test]
fn when_reads_a_fan_out_tasks_outputs_as_an_array() {
    let mut h = Harness::new(json!({"tasks": [
        {"name": "p", "forEach": {"items": [1, 2]}},
        {"name": "yes", "dependsOn": ["p"],
         "when": [{"task": "p", "output": "ok", "operator": "In", "values": ["[true,true]"]}]},
        {"name": "no", "dependsOn": ["p"],
         "when": [{"task": "p", "output": "ok", "operator": "In", "values": ["[true]"]}]},
        {"name": "skipped", "dependsOn": ["p"], "when": [{"param": "x", "operator": "In", "values": ["1"]}]},
        {"name": "over-skipped", "dependsOn": ["skipped"],
         "forEach": {"fromTask": "skipped", "output": "list"}},
    ], "params": [{"name": "x", "default": "0"}]}));
    h.start(0.0);
    h.ok("p[0]", 1, r#"{"ok": true}"#, 1.0);
    assert_eq!(h.ok("p[1]", 1, r#"{"ok": true}"#, 1.0), [start("yes", 1)]);
    assert_eq!(h.reason("no").as_deref(), Some("WhenFalse"));
    assert_eq!(h.reason("over-skipped").as_deref(), Some("UpstreamSkipped"));
    assert_eq!(
        h.message("over-skipped"),
        r#"forEach reads task "skipped", which was skipped"#
    );
}

#[test]
fn a_rerun_runs_only_the_instances_that_did_not_succeed() {
    let spec = json!({"tasks": [
        {"name": "list"},
        {"name": "p", "dependsOn": ["list"], "forEach": {"fromTask": "list", "output": "l"}},
        {"name": "q", "forEach": {"items": ["a"]}},
    ]});
    let mut first = Harness::new(spec.clone());
    first.start(0.0);
    first.ok("q[0]", 1, r#"{"v": 1}"#, 0.5);
    first.ok("list", 1, r#"{"l": ["a", "b", "c"]}"#, 1.0);
    first.ok("p[0]", 1, r#"{"v": 0}"#, 2.0);
    first.exit("p[1]", 1, 1, 2.0);
    first.ok("p[2]", 1, r#"{"v": 2}"#, 2.0);
    assert_eq!(first.engine.phase(), RunPhase::Failed);
    let previous = first.engine.run_status().tasks;

    let mut h = Harness::new(spec);
    h.engine.reuse(&previous, "run-1");
    assert_eq!(h.start(10.0), [start("p[1]", 1)]);
    for name in ["list", "q", "q[0]", "p[0]", "p[2]"] {
        assert_eq!(h.reason(name).as_deref(), Some("Reused"), "{name}");
        assert_eq!(h.status(name).reused_from.as_deref(), Some("run-1"));
    }
    assert_eq!(h.item("p[1]"), (1, json!("b")));
    h.ok("p[1]", 1, r#"{"v": 1}"#, 11.0);
    assert_eq!(h.engine.phase(), RunPhase::Succeeded);
    assert_eq!(h.status("q").instances, Some(1));
    let names: Vec<String> = h
        .engine
        .run_status()
        .tasks
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["list", "p", "q", "q[0]", "p[0]", "p[1]", "p[2]"]);
}

#[test]
fn a_run_holds_a_bounded_number_of_instances() {
    let items = vec![json!(0); crate::api::MAX_FAN_OUT];
    let tasks: Vec<Value> = (0..6)
        .map(|i| json!({"name": format!("p{i}"), "forEach": {"items": items}}))
        .collect();
    let mut h = Harness::new(json!({"parallelism": 1, "tasks": tasks}));
    h.start(0.0);
    assert_eq!(h.reason("p5").as_deref(), Some("FanOutTooLarge"));
    assert_eq!(
        h.message("p5"),
        "forEach: 10000 more instances would make 60000 in the run, at most 50000 are allowed"
    );
    assert_eq!(h.engine.slots(), 6 + 50_000);
}

// ---- random widths and failures, and restore at any point ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Fan-out tasks of random widths (0 and 1 included), parallelism and outcomes: each
    /// task's phase follows its instances, readers get outputs in item order, the caps hold,
    /// and an engine restored from the status at any point records the same status and, fed
    /// the same events, does what the original does. (Under the run's `parallelism` the order
    /// in which waiting tasks get a free slot is first come, first served, which a status does
    /// not record: a restored engine may pick another waiting task first.)
    #[test]
    fn fan_outs_end_right_and_restore_at_any_point(
        widths in proptest::collection::vec(0usize..5, 1..4),
        caps in proptest::collection::vec(0u32..3, 4),
        run_cap in 0u32..4,
        retries in 0u32..2,
        choices in proptest::collection::vec(0u8..8, 80),
    ) {
        let mut tasks: Vec<Value> = widths.iter().enumerate().map(|(i, &w)| {
            let mut t = json!({"name": format!("p{i}"), "forEach": {"items": (0..w).collect::<Vec<_>>()},
                "retries": {"limit": retries, "backoff": {"initialSeconds": 1}}});
            if caps[i] > 0 {
                t["forEach"]["parallelism"] = json!(caps[i]);
            }
            t
        }).collect();
        tasks.push(json!({"name": "list"}));
        tasks.push(json!({"name": "dyn", "dependsOn": ["list"],
            "forEach": {"fromTask": "list", "output": "l", "parallelism": 2}}));
        let names: Vec<String> = (0..widths.len()).map(|i| format!("p{i}")).chain(["dyn".into()]).collect();
        tasks.push(json!({"name": "sink", "dependsOn": names, "trigger": "AllDone",
            "inputs": [{"name": "V", "fromTask": "p0", "output": "v"}]}));
        let mut spec = json!({"tasks": tasks,
            "finally": [{"name": "f", "forEach": {"items": [1, 2]}}]});
        if run_cap > 0 {
            spec["parallelism"] = json!(run_cap);
        }
        let dag = compile_spec(spec);
        let params = bind_params(&dag, &BTreeMap::new(), "spec.params").unwrap();
        let mut now = at(0.0);
        let mut engine = Engine::new(Arc::clone(&dag), params.clone());
        engine.start(now);
        let mut running: Vec<(TaskId, u32)> = Vec::new();
        let mut started: BTreeMap<(TaskId, u32), Timestamp> = BTreeMap::new();
        let mut outputs: BTreeMap<TaskId, i64> = BTreeMap::new();
        let track = |actions: Vec<Action>, now: Timestamp, running: &mut Vec<(TaskId, u32)>,
                     started: &mut BTreeMap<(TaskId, u32), Timestamp>| {
            for action in actions {
                match action {
                    Action::Start(l) => {
                        started.insert((l.task, l.attempt), now);
                        running.push((l.task, l.attempt));
                    }
                    Action::Kill { reason: KillReason::Timeout, .. } => {}
                    Action::Kill { task, attempt, .. } => running.retain(|r| *r != (task, attempt)),
                }
            }
        };
        track(engine.take_actions(), now, &mut running, &mut started);
        for choice in choices {
            if engine.is_finished() {
                break;
            }
            // The caps hold.
            if run_cap > 0 {
                prop_assert!(engine.running() <= run_cap);
            }
            for (i, cap) in caps.iter().enumerate().take(widths.len()) {
                let id = dag.id(&format!("p{i}")).unwrap();
                if let (Some(fan), true) = (engine.fans.get(&id), *cap > 0) {
                    let live = fan.slots().filter(|s| engine.running.contains(s)).count();
                    prop_assert!(live as u32 <= *cap);
                }
            }
            let status = engine.run_status();
            let starts = started.clone();
            let mut copy = Engine::restore(Arc::clone(&dag), params.clone(), &status, now,
                |a| starts.get(&(a.slot, a.attempt)).copied());
            prop_assert_eq!(copy.run_status(), status.clone());
            prop_assert_eq!(copy.next_wakeup(), engine.next_wakeup());

            now += SignedDuration::from_millis(700);
            let pick = running.get(choice as usize % running.len().max(1)).copied();
            match (choice, pick) {
                (7, _) if now > at(20.0) => {
                    engine.cancel(now);
                    copy.cancel(now);
                }
                (0..=4, Some((task, attempt))) => {
                    let value = i64::from(task.0) * 10 + i64::from(attempt);
                    let outcome = match choice {
                        0..=2 => Outcome::Exited { code: 0, output: format!(r#"{{"v": {value}, "l": [1, 2, 3]}}"#).into_bytes() },
                        3 => Outcome::Exited { code: 1, output: vec![] },
                        _ => Outcome::Failed { reason: "JobLost".into(), message: "gone".into() },
                    };
                    if choice <= 2 {
                        outputs.insert(task, value);
                    }
                    running.retain(|r| *r != (task, attempt));
                    engine.finish_attempt(task, attempt, outcome.clone(), now);
                    copy.finish_attempt(task, attempt, outcome, now);
                }
                _ => {
                    if let Some(at) = engine.next_wakeup() {
                        now = now.max(at);
                    }
                }
            }
            engine.tick(now);
            copy.tick(now);
            let (a, b) = (engine.take_actions(), copy.take_actions());
            if run_cap == 0 {
                prop_assert_eq!(&a, &b);
                prop_assert_eq!(copy.run_status(), engine.run_status());
            }
            track(a, now, &mut running, &mut started);

            // Each fan-out task that ended ended as its instances say.
            for (id, fan) in &engine.fans {
                let state = &engine.tasks[id.index()];
                if state.stage != crate::engine::state::Stage::Done || state.reason.as_deref() == Some("Reused") {
                    continue;
                }
                let phases: Vec<TaskPhase> = fan.slots().map(|s| engine.tasks[s.index()].phase).collect();
                let expected = if phases.contains(&TaskPhase::Failed) {
                    TaskPhase::Failed
                } else if phases.contains(&TaskPhase::Cancelled) {
                    TaskPhase::Cancelled
                } else {
                    TaskPhase::Succeeded
                };
                prop_assert_eq!(state.phase, expected, "{}", dag.task(*id).name);
            }
        }
        // The sink read p0's instances' outputs in item order, if it ran.
        let sink = dag.id("sink").unwrap();
        let p0 = dag.id("p0").unwrap();
        if engine.tasks[sink.index()].attempts > 0 && engine.tasks[p0.index()].phase == TaskPhase::Succeeded {
            let fan = &engine.fans[&p0];
            let expected: Vec<Value> = fan.slots().map(|s| json!(outputs[&s])).collect();
            let inputs = engine.resolve_inputs(sink).unwrap();
            prop_assert_eq!(inputs, vec![("V".to_string(), Value::Array(expected))]);
        }
    }
}

#[test]
fn a_recorded_instance_count_cannot_make_the_engine_grow() {
    let spec = json!({"tasks": [{"name": "p", "forEach": {"items": [1, 2]}}]});
    let mut group = record("p", TaskPhase::Running, 0, json!(null));
    group.instances = Some(u32::MAX);
    let instance = record("p[0]", TaskPhase::Succeeded, 1, json!({"v": 1}));

    // As a rerun's source: the count is bounded, and what matches is reused.
    let mut h = Harness::new(spec.clone());
    h.engine.reuse(&[group.clone(), instance.clone()], "run-1");
    assert_eq!(h.start(0.0), [start("p[1]", 1)]);
    assert_eq!(h.reason("p[0]").as_deref(), Some("Reused"));

    // As a status to restore: at most a list's worth of instances.
    let mut status = h.engine.run_status();
    status.tasks = vec![group, instance];
    let dag = compile_spec(spec);
    let params = bind_params(&dag, &BTreeMap::new(), "spec.params").unwrap();
    let engine = Engine::restore(dag, params, &status, at(1.0), |_| None);
    assert_eq!(engine.slots(), 1 + crate::api::MAX_FAN_OUT);
}
