//! Fan-out on the controller, beyond the scenarios both drivers share (`tests/scenarios.rs`):
//! the schema's bounds, and a controller killed twice during a fan-out that moves its run's
//! records to shards, which must converge with exactly one Job and one Pod per instance attempt.

mod support;

use kube::api::ListParams;
use ork::api::RunPhase;
use serde_json::{Value, json};
use support::cluster::eventually;
use support::env::{Env, LONG};

fn workflow(name: &str, for_each: Value) -> Value {
    json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
    "spec": {"defaults": {"image": "busybox"}, "tasks": [
        {"name": "a", "command": ["true"]},
        {"name": "p", "dependsOn": ["a"], "forEach": for_each,
         "command": ["sh", "-c", r#"sleep 0.3; echo "{\"v\": $ORK_ITEM}" > "$ORK_OUTPUT""#]},
        {"name": "sum", "dependsOn": ["p"],
         "inputs": [{"name": "V", "fromTask": "p", "output": "v"}],
         "command": ["sh", "-c", r#"echo "{\"v\": $V}" > "$ORK_OUTPUT""#]},
    ]}})
}

/// Pods of `run` whose phase is Succeeded.
async fn succeeded_pods(env: &Env, run: &str) -> usize {
    let list = env
        .pods()
        .list(&ListParams::default().labels(&format!("ork.dev/run={run}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_during_a_fan_out_converges_with_one_job_per_attempt() {
    // At most 20 records inline: the run moves to record shards when p fans out.
    let mut env = Env::with_args("fan-out-restart", &["--inline-tasks", "20"]).await;
    let out = env.kubectl(
        &["apply", "-f", "-"],
        Some(&workflow("refused", json!({"items": [1], "parallelism": 0})).to_string()),
    );
    assert!(!out.status.success(), "forEach.parallelism 0 accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("parallelism"));

    let items: Vec<u32> = (0..60).collect();
    env.apply_workflow(&workflow("fan", json!({"items": items, "parallelism": 10})))
        .await;
    env.create_run("fan-1", "fan", json!({})).await;
    // Killed once the records are in shards and instances run.
    env.wait_run("fan-1", "the records to move to shards", |run| {
        run.status.as_ref()?.records.as_ref().map(|_| ())
    })
    .await;
    eventually("instances to run", LONG, || async {
        (succeeded_pods(&env, "fan-1").await >= 3).then_some(())
    })
    .await;
    env.kill_controller();
    let before = succeeded_pods(&env, "fan-1").await;
    eventually("an instance to finish with no controller", LONG, || async {
        (succeeded_pods(&env, "fan-1").await > before).then_some(())
    })
    .await;
    env.start_controller();
    // Killed again halfway.
    eventually("half the instances to finish", LONG, || async {
        (succeeded_pods(&env, "fan-1").await >= 30).then_some(())
    })
    .await;
    env.kill_controller();
    env.start_controller();

    env.wait_final("fan-1").await;
    let run = ork::kubernetes::get::full_run(&env.client, &env.ns, "fan-1")
        .await
        .unwrap();
    let status = run.status.unwrap();
    assert_eq!(
        status.phase,
        Some(RunPhase::Succeeded),
        "{:?}",
        status.conditions
    );
    assert_eq!(status.tasks.len(), 63);
    for task in &status.tasks {
        let expected = if task.name == "p" { 0 } else { 1 };
        assert_eq!(task.attempts, expected, "{}", task.name);
    }
    let sum = status.tasks.iter().find(|t| t.name == "sum").unwrap();
    assert_eq!(sum.outputs.as_ref().unwrap()["v"], json!(items));
    let mut jobs = env.job_names("fan-1").await;
    jobs.sort();
    let mut expected: Vec<String> = (0..60).map(|i| format!("fan-1.p.{i}-1")).collect();
    expected.extend(["fan-1.a.1".to_string(), "fan-1.sum.1".to_string()]);
    expected.sort();
    assert_eq!(jobs, expected, "one Job per attempt");
    assert_eq!(succeeded_pods(&env, "fan-1").await, 62, "one Pod per Job");
}

/// A record shard of the run that exists before the controller makes it (a move to shards cut
/// short, a create whose answer was lost) is taken over and rewritten, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_shard_left_behind_is_rewritten_when_the_run_moves_to_shards() {
    let env = Env::with_args("fan-out-shard-left", &["--inline-tasks", "20"]).await;
    let gate = env.work.path().join("go");
    let mut manifest = workflow("fan", json!({"items": (0..30).collect::<Vec<u32>>()}));
    manifest["spec"]["tasks"][0]["command"] = json!([
        "sh",
        "-c",
        format!("while [ ! -e {} ]; do sleep 0.05; done", gate.display())
    ]);
    env.apply_workflow(&manifest).await;
    let run = env.create_run("fan-2", "fan", json!({})).await;
    let owner = json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Run", "name": "fan-2",
                       "uid": run.metadata.uid.clone().unwrap(), "controller": true});
    let left = json!({"apiVersion": "ork.dev/v1alpha1", "kind": "RunShard",
        "metadata": {"name": "fan-2.tasks-0", "labels": {"ork.dev/run": "fan-2"},
                     "ownerReferences": [owner]},
        "spec": {"run": "fan-2", "first": 0, "tasks": [{"name": "junk", "phase": "Failed"}]}});
    env.kubectl_ok(&["create", "-f", "-"], Some(&left.to_string()));
    std::fs::write(&gate, "").unwrap();

    env.wait_final("fan-2").await;
    let run = ork::kubernetes::get::full_run(&env.client, &env.ns, "fan-2")
        .await
        .unwrap();
    let status = run.status.unwrap();
    assert_eq!(
        status.phase,
        Some(RunPhase::Succeeded),
        "{:?}",
        status.conditions
    );
    let names: Vec<&str> = status.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(&names[..4], ["a", "p", "sum", "p[0]"]);
    assert_eq!(names.len(), 33);
    let sum = status.tasks.iter().find(|t| t.name == "sum").unwrap();
    assert_eq!(
        sum.outputs.as_ref().unwrap()["v"].as_array().unwrap().len(),
        30
    );
}
