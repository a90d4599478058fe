//! Fan-out on the controller: a Job per instance attempt, named and labelled after its
//! instance; records that grow with the instances (added to the Run's status, or to record
//! shards, and moved to shards when the run passes the inline limit); a rebuilt state that goes
//! on where it was.

use super::*;

/// A succeeded Pod for each of `jobs`, each writing `output(index)`.
fn succeed(w: &mut World, jobs: &[String], output: impl Fn(usize) -> String) {
    for (i, job) in jobs.iter().enumerate() {
        w.pod(job, succeeded_pod(1, 2, &output(i)));
    }
}

fn dynamic() -> Value {
    json!({"tasks": [
        {"name": "list"},
        {"name": "p", "dependsOn": ["list"],
         "forEach": {"fromTask": "list", "output": "l", "parallelism": 2}},
        {"name": "after", "dependsOn": ["p"], "inputs": [{"name": "V", "fromTask": "p", "output": "v"}]},
    ]})
}

fn env_of(job: &Job, name: &str) -> Option<String> {
    let json = serde_json::to_value(job).unwrap();
    json["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(String::from))
}

#[test]
fn each_instance_gets_its_own_job_and_record_and_the_task_ends_with_them() {
    let mut w = World::new(dynamic());
    w.step(t(0));
    w.show_jobs(t(0));
    w.pod(
        "etl-1.list.1",
        succeeded_pod(1, 2, r#"{"l": ["a", "b", "c"]}"#),
    );
    let plan = w.step(t(3));
    // Two at once, as forEach.parallelism says; named TASK.INDEX-ATTEMPT.
    assert_eq!(names(&plan.create), ["etl-1.p.0-1", "etl-1.p.1-1"]);
    let labels = plan.create[1].metadata.labels.clone().unwrap();
    assert_eq!(labels["ork.dev/task"], "p");
    assert_eq!(labels["ork.dev/instance"], "1");
    assert_eq!(env_of(&plan.create[1], "ORK_ITEM").as_deref(), Some("b"));
    assert_eq!(
        env_of(&plan.create[1], "ORK_ITEM_INDEX").as_deref(),
        Some("1")
    );
    // The instances' records follow the tasks', in the Run's status.
    let listed: Vec<&str> = w.status().tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(listed, ["list", "p", "after", "p[0]", "p[1]", "p[2]"]);
    assert_eq!(w.task("p").instances, Some(3));
    assert_eq!(w.task("p[2]").phase, TaskPhase::Pending);
    assert_eq!(
        w.status().task_counts.unwrap().running,
        3,
        "p and two instances"
    );

    w.show_jobs(t(3));
    let first = ["etl-1.p.0-1".to_string(), "etl-1.p.1-1".to_string()];
    succeed(&mut w, &first, |i| format!(r#"{{"v": {}}}"#, i + 1));
    let plan = w.step(t(4));
    assert_eq!(names(&plan.create), ["etl-1.p.2-1"]);
    assert_eq!(w.task("p[0]").job.as_deref(), Some("etl-1.p.0-1"));
    w.show_jobs(t(4));
    w.pod("etl-1.p.2-1", succeeded_pod(4, 5, r#"{"v": 3}"#));
    let plan = w.step(t(6));
    assert_eq!(w.task("p").phase, TaskPhase::Succeeded);
    assert_eq!(names(&plan.create), ["etl-1.after.1"]);
    assert_eq!(env_of(&plan.create[0], "V").as_deref(), Some("[1,2,3]"));
    w.show_jobs(t(6));
    w.pod("etl-1.after.1", succeeded_pod(6, 7, ""));
    w.step(t(8));
    assert_eq!(w.phase(), RunPhase::Succeeded);
    assert_eq!(w.status().progress.as_deref(), Some("6/6"));
}

#[test]
fn a_rebuilt_state_goes_on_mid_fan_out_with_no_job_made_twice() {
    let mut w = World::new(dynamic());
    w.step(t(0));
    w.show_jobs(t(0));
    w.pod(
        "etl-1.list.1",
        succeeded_pod(1, 2, r#"{"l": [10, 20, 30]}"#),
    );
    w.step(t(3));
    w.show_jobs(t(3));
    w.pod("etl-1.p.0-1", running_pod(3));
    w.pod("etl-1.p.1-1", succeeded_pod(3, 4, r#"{"v": 2}"#));
    // A restart: everything is read back from the status.
    w.state = None;
    let plan = w.step(t(5));
    assert_eq!(
        names(&plan.create),
        ["etl-1.p.2-1"],
        "only the instance not started yet"
    );
    assert!(
        plan.delete.is_empty(),
        "the running instance is left to run"
    );
    assert_eq!(w.task("p[1]").phase, TaskPhase::Succeeded);
    // Another writer: rebuilt again, nothing made again.
    w.touch();
    let plan = w.step(t(5));
    assert!(plan.create.is_empty(), "{:?}", names(&plan.create));
    w.show_jobs(t(5));
    w.pod("etl-1.p.0-1", succeeded_pod(3, 6, r#"{"v": 1}"#));
    w.pod("etl-1.p.2-1", succeeded_pod(5, 6, r#"{"v": 3}"#));
    let plan = w.step(t(7));
    assert_eq!(env_of(&plan.create[0], "V").as_deref(), Some("[1,2,3]"));
}

#[test]
fn a_cancel_stops_the_running_instances() {
    let mut w = World::new(dynamic());
    w.step(t(0));
    w.show_jobs(t(0));
    w.pod("etl-1.list.1", succeeded_pod(1, 2, r#"{"l": [1, 2, 3]}"#));
    w.step(t(3));
    w.show_jobs(t(3));
    w.pod("etl-1.p.0-1", running_pod(3));
    w.pod("etl-1.p.1-1", running_pod(3));
    set_spec(&mut w, false, true);
    let plan = w.step(t(4));
    assert_eq!(w.phase(), RunPhase::Cancelled);
    assert_eq!(plan.delete, ["etl-1.p.0-1", "etl-1.p.1-1"]);
    assert_eq!(w.task("p[2]").phase, TaskPhase::Cancelled);
    assert_eq!(w.task("p").phase, TaskPhase::Cancelled);
}

#[test]
fn a_failed_instance_is_retried_under_its_own_name_and_fails_the_task() {
    let mut w = World::new(json!({"tasks": [
        {"name": "p", "forEach": {"items": [1, 2]}, "retries": {"limit": 1, "backoff": {"initialSeconds": 0.0}}},
    ]}));
    let plan = w.step(t(0));
    assert_eq!(names(&plan.create), ["etl-1.p.0-1", "etl-1.p.1-1"]);
    w.show_jobs(t(0));
    w.pod("etl-1.p.0-1", succeeded_pod(0, 1, ""));
    w.pod("etl-1.p.1-1", failed_pod(0, 1, 3, "Error"));
    let plan = w.step(t(2));
    assert_eq!(names(&plan.create), ["etl-1.p.1-2"]);
    w.show_jobs(t(2));
    w.pod("etl-1.p.1-2", failed_pod(2, 3, 3, "Error"));
    let plan = w.step(t(4));
    assert_eq!(w.task("p[1]").attempts, 2);
    assert_eq!(w.task("p").phase, TaskPhase::Failed);
    assert_eq!(w.phase(), RunPhase::Failed);
    assert!(reasons(&plan).contains(&"TaskFailed"));
    let event = plan
        .events
        .iter()
        .find(|e| e.note.starts_with("task \"p[1]\""))
        .unwrap();
    assert_eq!(event.job.as_deref(), Some("etl-1.p.1-2"));
}

#[test]
fn an_item_too_long_for_the_environment_fails_its_instance_with_no_job() {
    let big = "x".repeat(200_000);
    let mut w = World::new(json!({"tasks": [{"name": "p", "forEach": {"items": [big, "small"]}}]}));
    let plan = w.step(t(0));
    assert_eq!(names(&plan.create), ["etl-1.p.1-1"]);
    let p0 = w.task("p[0]");
    assert_eq!(
        (p0.phase, p0.reason.as_deref()),
        (TaskPhase::Failed, Some("StartError"))
    );
    assert_eq!(
        p0.message.as_deref(),
        Some("ORK_ITEM is 200000 bytes, more than the 131072 one environment variable may hold")
    );
}

#[test]
fn a_run_that_fans_out_past_the_inline_limit_moves_its_records_to_shards() {
    let mut w = World::new(json!({"tasks": [
        {"name": "list"},
        {"name": "p", "dependsOn": ["list"], "forEach": {"fromTask": "list", "output": "l"}},
        {"name": "q", "dependsOn": ["p"], "forEach": {"fromTask": "p", "output": "n"}},
    ]}));
    w.config.inline_tasks = 5;
    w.step(t(0));
    assert_eq!(w.status().tasks.len(), 3, "inline while small");
    w.show_jobs(t(0));
    w.pod(
        "etl-1.list.1",
        succeeded_pod(1, 2, r#"{"l": [0, 1, 2, 3]}"#),
    );
    let plan = w.step(t(3));
    assert!(plan.migrate, "7 records: past the limit of 5");
    assert_eq!(plan.create.len(), 4);
    let status = w.status().clone();
    assert!(status.tasks.is_empty(), "no records left in the Run");
    let layout = status.records.clone().unwrap();
    assert_eq!(
        (layout.shards, layout.definition.len()),
        (1, 0),
        "the definition stays"
    );
    assert_eq!(w.shards[&0].len(), 7);
    assert_eq!(status.running_tasks, ["p[0]", "p[1]", "p[2]", "p[3]"]);

    // Then the records grow in their shard: q fans out over p's outputs.
    w.show_jobs(t(3));
    let jobs: Vec<String> = (0..4).map(|i| format!("etl-1.p.{i}-1")).collect();
    succeed(&mut w, &jobs, |i| format!(r#"{{"n": {i}}}"#));
    let plan = w.step(t(4));
    assert_eq!(plan.create.len(), 4);
    assert_eq!(w.shards[&0].len(), 11);
    assert_eq!(w.task("q[3]").phase, TaskPhase::Running);

    // A restart reads every record back from the shard, instances and all.
    w.state = None;
    let plan = w.step(t(5));
    assert!(plan.create.is_empty(), "{:?}", names(&plan.create));
    w.show_jobs(t(5));
    let jobs: Vec<String> = (0..4).map(|i| format!("etl-1.q.{i}-1")).collect();
    succeed(&mut w, &jobs, |_| String::new());
    w.step(t(6));
    assert_eq!(w.phase(), RunPhase::Succeeded);
    assert_eq!(w.status().task_counts.unwrap().succeeded, 11);
}

#[test]
fn a_run_past_the_inline_limit_from_its_start_is_sharded_from_its_first_write() {
    let items: Vec<u32> = (0..70).collect();
    let mut w = World::new(json!({"tasks": [{"name": "p", "forEach": {"items": items}}]}));
    w.config.inline_tasks = 10;
    let plan = w.step(t(0));
    assert!(plan.whole && !plan.migrate);
    assert_eq!(plan.create.len(), 70);
    assert!(w.status().tasks.is_empty());
    assert_eq!(w.status().records.as_ref().unwrap().shards, 2);
    assert_eq!((w.shards[&0].len(), w.shards[&1].len()), (64, 7));
    assert_eq!(w.task("p[69]").phase, TaskPhase::Running);
}
