//! End-to-end tests of run control on the test control plane with the kubelet simulator:
//! `spec.cancel` stops a run (its Jobs, Pods and processes gone), `spec.suspend` holds it
//! without stopping what runs. (The decisions are table-tested in
//! `src/kubernetes/decide/tests.rs`, the engine's rules in `src/engine/tests.rs`.)

mod support;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use ork::api::{ConditionStatus, Run, RunPhase, TaskPhase};
use serde_json::json;
use support::cluster::eventually;
use support::env::{Env, LONG, chain};

async fn patch_spec(env: &Env, run: &str, spec: serde_json::Value) {
    env.runs()
        .patch(
            run,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
        .unwrap();
}

fn phase_of(run: &Run, task: &str) -> Option<TaskPhase> {
    let status = run.status.as_ref()?;
    Some(status.tasks.iter().find(|t| t.name == task)?.phase)
}

fn suspended(run: &Run) -> Option<ConditionStatus> {
    let status = run.status.as_ref()?;
    let condition = status.conditions.iter().find(|c| c.type_ == "Suspended")?;
    Some(condition.status)
}

async fn pods_of(env: &Env, run: &str) -> Vec<Pod> {
    env.pods()
        .list(&ListParams::default().labels(&format!("ork.dev/run={run}")))
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_stops_its_job_pod_and_process_and_keeps_its_record() {
    let env = Env::new("cancel").await;
    env.apply_workflow(&chain(
        "slow",
        &[("wait", "sleep 300"), ("after", "echo never")],
    ))
    .await;
    env.create_run("slow-1", "slow", json!({})).await;
    env.wait_task_running("slow-1", "wait").await;
    let kubelet = env.kubelet.as_ref().unwrap();
    eventually("the task's process to start", LONG, || {
        let running = !kubelet.running().is_empty();
        async move { running.then_some(()) }
    })
    .await;

    patch_spec(&env, "slow-1", json!({"cancel": true})).await;
    let run = env.wait_final("slow-1").await;
    let status = run.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(RunPhase::Cancelled));
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Succeeded")
        .unwrap();
    assert_eq!(condition.status, ConditionStatus::False);
    assert_eq!(condition.reason.as_deref(), Some("Cancelled"));
    assert_eq!(phase_of(&run, "wait"), Some(TaskPhase::Cancelled));
    assert_eq!(phase_of(&run, "after"), Some(TaskPhase::Cancelled));

    let jobs = env.jobs();
    eventually("the Job, its Pod and its process to be gone", LONG, || {
        let jobs = jobs.clone();
        let env = &env;
        let idle = kubelet.running().is_empty();
        async move {
            let lp = ListParams::default().labels("ork.dev/run=slow-1");
            let j = jobs.list(&lp).await.ok()?.items.len();
            let p = pods_of(env, "slow-1").await.len();
            (j + p == 0 && idle).then_some(())
        }
    })
    .await;
    let events = env.events_about("slow-1").await;
    assert!(
        events.iter().any(|(reason, _, _)| reason == "Cancelled"),
        "{events:?}"
    );
    // The record stays, and nothing starts again.
    let run = env.runs().get("slow-1").await.unwrap();
    assert_eq!(run.status.unwrap().phase, Some(RunPhase::Cancelled));
    assert_eq!(env.job_names("slow-1").await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_run_lets_the_running_task_finish_and_starts_nothing_until_resumed() {
    let env = Env::new("suspend").await;
    env.apply_workflow(&chain(
        "held",
        &[
            ("first", "sleep 5; echo '{\"n\": 1}' > $ORK_OUTPUT"),
            ("second", "echo '{\"n\": 2}' > $ORK_OUTPUT"),
        ],
    ))
    .await;
    env.create_run("held-1", "held", json!({})).await;
    env.wait_task_running("held-1", "first").await;
    patch_spec(&env, "held-1", json!({"suspend": true})).await;
    env.wait_run("held-1", "the Suspended condition", |run| {
        (suspended(run) == Some(ConditionStatus::True)).then_some(())
    })
    .await;
    let table = env.kubectl_ok(&["get", "runs.ork.dev", "held-1"], None);
    assert!(
        table.contains("SUSPENDED") && table.contains("True"),
        "{table}"
    );

    // The running attempt finishes and is recorded; its dependent is not started.
    env.wait_run("held-1", "first to succeed", |run| {
        (phase_of(run, "first") == Some(TaskPhase::Succeeded)).then_some(())
    })
    .await;
    let run = env.runs().get("held-1").await.unwrap();
    assert_eq!(run.status.as_ref().unwrap().phase, Some(RunPhase::Running));
    assert_eq!(phase_of(&run, "second"), Some(TaskPhase::Pending));
    assert_eq!(env.job_names("held-1").await, ["held-1.first.1"]);

    patch_spec(&env, "held-1", json!({"suspend": false})).await;
    let run = env.wait_final("held-1").await;
    assert_eq!(
        run.status.as_ref().unwrap().phase,
        Some(RunPhase::Succeeded)
    );
    assert_eq!(suspended(&run), Some(ConditionStatus::False));
    assert_eq!(
        env.job_names("held-1").await,
        ["held-1.first.1", "held-1.second.1"]
    );
    let events = env.events_about("held-1").await;
    let reasons: Vec<&str> = events.iter().map(|(r, _, _)| r.as_str()).collect();
    assert!(
        reasons.contains(&"Suspended") && reasons.contains(&"Resumed"),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_still_runs_its_finally_tasks_before_it_ends() {
    let env = Env::new("cancel-finally").await;
    let mut workflow = chain("slow", &[("wait", "sleep 300"), ("after", "echo never")]);
    workflow["spec"]["finally"] = json!([{
        "name": "cleanup",
        "command": ["sh", "-c",
            "printf '{\"phase\": \"%s\", \"failed\": \"%s\"}' \"$ORK_RUN_PHASE\" \"$ORK_FAILED_TASKS\" > \"$ORK_OUTPUT\""],
    }]);
    env.apply_workflow(&workflow).await;
    env.create_run("slow-1", "slow", json!({})).await;
    env.wait_task_running("slow-1", "wait").await;

    patch_spec(&env, "slow-1", json!({"cancel": true})).await;
    let run = env.wait_final("slow-1").await;
    let status = run.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(RunPhase::Cancelled));
    assert_eq!(phase_of(&run, "wait"), Some(TaskPhase::Cancelled));
    assert_eq!(phase_of(&run, "after"), Some(TaskPhase::Cancelled));
    let cleanup = status.tasks.iter().find(|t| t.name == "cleanup").unwrap();
    assert!(cleanup.finally);
    assert_eq!(cleanup.phase, TaskPhase::Succeeded);
    assert_eq!(
        serde_json::Value::Object(cleanup.outputs.clone().unwrap()),
        json!({"phase": "Cancelled", "failed": ""})
    );
    // It started after the cancel ended the regular tasks.
    let wait = status.tasks.iter().find(|t| t.name == "wait").unwrap();
    assert!(cleanup.started_at >= wait.finished_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_created_cancelled_starts_nothing_not_even_its_finally_tasks() {
    let env = Env::new("created-cancelled").await;
    let mut workflow = chain("quick", &[("a", "echo a")]);
    workflow["spec"]["finally"] = json!([{"name": "cleanup", "command": ["sh", "-c", "echo bye"]}]);
    env.apply_workflow(&workflow).await;
    env.kubectl_ok(
        &["apply", "-f", "-"],
        Some(
            &json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Run",
                    "metadata": {"name": "quick-1"},
                    "spec": {"workflowRef": {"name": "quick"}, "cancel": true}})
            .to_string(),
        ),
    );
    let run = env.wait_final("quick-1").await;
    assert_eq!(
        run.status.as_ref().unwrap().phase,
        Some(RunPhase::Cancelled)
    );
    assert_eq!(phase_of(&run, "a"), Some(TaskPhase::Cancelled));
    assert_eq!(phase_of(&run, "cleanup"), Some(TaskPhase::Cancelled));
    let jobs = env
        .jobs()
        .list(&ListParams::default().labels("ork.dev/run=quick-1"))
        .await
        .unwrap();
    assert!(jobs.items.is_empty(), "no Job was made");
}

async fn create_rerun(env: &Env, name: &str, of: &str, extra: serde_json::Value) {
    let mut spec = json!({"rerunOf": {"name": of}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    env.kubectl_ok(
        &["apply", "-f", "-"],
        Some(
            &json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Run",
                    "metadata": {"name": name}, "spec": spec})
            .to_string(),
        ),
    );
}

fn reason_of(run: &Run) -> Option<String> {
    let status = run.status.as_ref()?;
    let condition = status.conditions.iter().find(|c| c.type_ == "Succeeded")?;
    condition.reason.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_reuses_what_succeeded_and_makes_jobs_only_for_the_rest() {
    let env = Env::new("rerun").await;
    let work = tempfile::tempdir().unwrap();
    let fixed = work.path().join("fixed");
    let gate = work.path().join("gate");
    let mut workflow = chain(
        "etl",
        &[
            ("a", r#"echo '{"v": 7}' > "$ORK_OUTPUT""#),
            ("b", &format!("test -f {}", fixed.display())),
            ("c", "true"),
        ],
    );
    workflow["spec"]["finally"] =
        json!([{"name": "report", "command": ["sh", "-c", "echo $ORK_RUN_PHASE"]}]);
    env.apply_workflow(&workflow).await;
    env.create_run("etl-1", "etl", json!({})).await;
    let first = env.wait_final("etl-1").await;
    assert_eq!(first.status.as_ref().unwrap().phase, Some(RunPhase::Failed));
    let first_version = first.metadata.resource_version.clone();

    // A rerun of a run that does not exist fails; one with a definition of its own is invalid.
    create_rerun(&env, "ghost-rerun", "no-such-run", json!({})).await;
    let ghost = env.wait_final("ghost-rerun").await;
    assert_eq!(reason_of(&ghost).as_deref(), Some("RerunSourceNotFound"));
    create_rerun(
        &env,
        "mixed-rerun",
        "etl-1",
        json!({"workflowRef": {"name": "etl"}}),
    )
    .await;
    let mixed = env.wait_final("mixed-rerun").await;
    assert_eq!(reason_of(&mixed).as_deref(), Some("InvalidSpec"));

    std::fs::write(&fixed, "").unwrap();
    create_rerun(&env, "etl-2", "etl-1", json!({})).await;
    let second = env.wait_final("etl-2").await;
    let status = second.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(RunPhase::Succeeded), "{status:#?}");
    let a = status.tasks.iter().find(|t| t.name == "a").unwrap();
    assert_eq!(a.reason.as_deref(), Some("Reused"));
    assert_eq!(a.reused_from.as_deref(), Some("etl-1"));
    assert_eq!(a.attempts, 1);
    assert_eq!(
        serde_json::Value::Object(a.outputs.clone().unwrap()),
        json!({"v": 7})
    );
    assert_eq!(phase_of(&second, "b"), Some(TaskPhase::Succeeded));
    assert_eq!(phase_of(&second, "report"), Some(TaskPhase::Succeeded));
    let mut jobs: Vec<String> = env
        .jobs_of("etl-2")
        .await
        .iter()
        .filter_map(|j| j.metadata.name.clone())
        .collect();
    jobs.sort();
    assert_eq!(jobs, ["etl-2.b.1", "etl-2.c.1", "etl-2.report.1"]);
    // The run it reran is never changed.
    let again = env.runs().get("etl-1").await.unwrap();
    assert_eq!(again.metadata.resource_version, first_version);

    // A rerun of a run still going waits for it.
    let mut slow = chain(
        "slow",
        &[(
            "wait",
            &format!("while [ ! -f {} ]; do sleep 0.1; done", gate.display()),
        )],
    );
    slow["spec"]["tasks"][0]["retries"] = json!({"limit": 0});
    env.apply_workflow(&slow).await;
    env.create_run("slow-1", "slow", json!({})).await;
    env.wait_task_running("slow-1", "wait").await;
    create_rerun(&env, "slow-2", "slow-1", json!({})).await;
    let runs = env.runs();
    eventually("the rerun to wait for the run it reruns", LONG, || {
        let runs = runs.clone();
        async move {
            let run = runs.get("slow-2").await.ok()?;
            (reason_of(&run).as_deref() == Some("RerunSourceRunning")).then_some(())
        }
    })
    .await;
    std::fs::write(&gate, "").unwrap();
    let rerun = env.wait_final("slow-2").await;
    let wait = rerun
        .status
        .as_ref()
        .unwrap()
        .tasks
        .iter()
        .find(|t| t.name == "wait")
        .unwrap()
        .clone();
    assert_eq!(wait.reason.as_deref(), Some("Reused"));
    assert!(
        env.jobs_of("slow-2").await.is_empty(),
        "nothing left to run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_under_a_running_attempt_is_retried_without_using_the_limit() {
    let env = Env::new("pod-deleted").await;
    let mut workflow = chain(
        "fragile",
        &[(
            "a",
            r#"if [ "$ORK_ATTEMPT" = 1 ]; then sleep 300; fi; echo done"#,
        )],
    );
    workflow["spec"]["tasks"][0]["retries"] = json!({"limit": 0, "backoff": {"initialSeconds": 0}});
    env.apply_workflow(&workflow).await;
    env.create_run("fragile-1", "fragile", json!({})).await;
    env.wait_task_running("fragile-1", "a").await;
    let kubelet = env.kubelet.as_ref().unwrap();
    eventually("the task's process to start", LONG, || {
        let running = !kubelet.running().is_empty();
        async move { running.then_some(()) }
    })
    .await;
    env.kubectl_ok(
        &[
            "delete",
            "pod",
            "-l",
            "ork.dev/run=fragile-1",
            "--wait=false",
        ],
        None,
    );
    let run = env.wait_final("fragile-1").await;
    let status = run.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(RunPhase::Succeeded), "{status:#?}");
    let a = status.tasks.iter().find(|t| t.name == "a").unwrap();
    assert_eq!((a.attempts, a.infra_retries), (2, 1), "{a:?}");
    let reasons: Vec<&str> = a
        .history
        .iter()
        .filter_map(|h| h.reason.as_deref())
        .collect();
    assert_eq!(reasons, ["PodDeleted", "Completed"]);
    // The first attempt's Job is stopped: it cannot run the task again with a new Pod.
    let jobs = env.jobs();
    eventually("only the second attempt's Job to be left", LONG, || {
        let jobs = jobs.clone();
        let idle = kubelet.running().is_empty();
        async move {
            let lp = ListParams::default().labels("ork.dev/run=fragile-1");
            let names: Vec<String> = jobs
                .list(&lp)
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|j| j.metadata.name)
                .collect();
            (names == ["fragile-1.a.2"] && idle).then_some(())
        }
    })
    .await;
}

/// Each new field's problems, on the cluster: what the schema cannot hold is refused by the API
/// server naming the field; what only the validator sees makes the Workflow `Valid=False` and
/// its Run `InvalidSpec`, with nothing run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_new_fields_are_refused_or_reported_and_nothing_runs() {
    let env = Env::new("invalid-flow").await;
    let task = |extra: serde_json::Value| {
        let mut t = json!({"name": "t", "command": ["touch", "/nonexistent/ran"]});
        if let (Some(t), Some(extra)) = (t.as_object_mut(), extra.as_object()) {
            t.extend(extra.clone());
        }
        t
    };
    let workflow = |name: &str, tasks: serde_json::Value, finally: serde_json::Value| {
        json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
               "spec": {"defaults": {"image": "busybox"}, "params": [{"name": "env", "default": "x"}],
                        "tasks": tasks, "finally": finally}})
    };
    // Refused by the API server's schema.
    for (bad, field) in [
        (json!({"trigger": "Sometimes"}), "trigger"),
        (
            json!({"when": [{"param": "env", "operator": "Equals", "values": ["a"]}]}),
            "operator",
        ),
        (
            json!({"when": [{"param": "env", "operator": "In", "values": []}]}),
            "values",
        ),
        (
            json!({"retries": {"limit": 1, "retryOn": ["Crash"]}}),
            "retryOn",
        ),
        (
            json!({"retries": {"limit": 1, "exitCodes": [300]}}),
            "exitCodes",
        ),
    ] {
        let manifest = workflow("refused", json!([task(bad)]), json!([]));
        let out = env.kubectl(&["apply", "-f", "-"], Some(&manifest.to_string()));
        assert!(!out.status.success(), "{field} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(field), "{field}: {stderr}");
    }
    // Reported by the validator.
    let cases = [
        (
            "when-not-upstream",
            json!([{"name": "a", "command": ["true"]},
                   task(json!({"when": [{"task": "a", "output": "k", "operator": "In", "values": ["1"]}]}))]),
            json!([]),
            "not upstream",
        ),
        (
            "depends-on-finally",
            json!([task(json!({"dependsOn": ["f"]}))]),
            json!([{"name": "f", "command": ["true"]}]),
            "depends on finally task",
        ),
        (
            "finally-on-regular",
            json!([task(json!({}))]),
            json!([{"name": "f", "command": ["true"], "dependsOn": ["t"]}]),
            "depends on regular task",
        ),
        (
            "when-no-subject",
            json!([task(json!({"when": [{"operator": "In", "values": ["a"]}]}))]),
            json!([]),
            "exactly one of param or task",
        ),
    ];
    for (name, tasks, finally, expect) in cases {
        env.apply_workflow(&workflow(name, tasks, finally)).await;
        let workflows: kube::Api<ork::api::Workflow> =
            kube::Api::namespaced(env.client.clone(), &env.ns);
        let message = eventually(&format!("{name} to be found invalid"), LONG, || {
            let workflows = workflows.clone();
            async move {
                let wf = workflows.get(name).await.ok()?;
                let valid = wf
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Valid")?;
                (valid.status == ConditionStatus::False).then_some(valid.message?)
            }
        })
        .await;
        assert!(message.contains(expect), "{name}: {message}");
        let run = format!("{name}-1");
        env.create_run(&run, name, json!({})).await;
        let done = env.wait_final(&run).await;
        let status = done.status.unwrap();
        assert_eq!(status.phase, Some(RunPhase::Failed), "{name}");
        assert_eq!(status.conditions[0].reason.as_deref(), Some("InvalidSpec"));
        assert!(env.jobs_of(&run).await.is_empty(), "{name}: nothing ran");
    }
}
