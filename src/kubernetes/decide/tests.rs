//! The decision, one scenario per test: a small world holds what the API server and the caches
//! would show (the Run, its Jobs and Pods, what the controller remembers) and plays the
//! reconciler's part, recording the status a plan asks for and the Jobs it creates.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::EventType;
use serde_json::{Value, json};

use super::*;
use crate::api::{PinnedWorkflow, RunPhase, TaskPhase, TaskStatus, WorkflowSpec};
use crate::compile::{bind_params, compile};
use crate::kubernetes::definition::{Definition, Resolution};
use crate::kubernetes::state::RunState;

const RUN_UID: &str = "run-uid";

/// `secs` seconds after a fixed base time.
fn t(secs: i64) -> Timestamp {
    "2026-11-26T03:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_secs(secs)
}

fn ts(secs: i64) -> String {
    t(secs).to_string()
}

fn definition(spec: Value) -> Resolution {
    let mut spec = spec;
    let obj = spec.as_object_mut().unwrap();
    obj.entry("defaults")
        .or_insert_with(|| json!({"image": "busybox"}));
    for task in obj["tasks"].as_array_mut().unwrap() {
        task.as_object_mut()
            .unwrap()
            .entry("command")
            .or_insert_with(|| json!(["true"]));
    }
    let spec: WorkflowSpec = serde_json::from_value(spec).unwrap();
    let dag = compile(&spec, "spec.workflow").unwrap();
    let params = bind_params(&dag, &BTreeMap::new(), "spec.params").unwrap();
    Resolution::Ready(Arc::new(Definition {
        dag: Arc::new(dag),
        params,
        pinned: PinnedWorkflow {
            spec: Some(spec),
            ..PinnedWorkflow::default()
        },
        reuse: None,
    }))
}

/// What the API server and the caches show, and the reconciler's part.
struct World {
    run: Run,
    /// What the controller keeps of the run between reconciles.
    state: Option<RunState>,
    /// Record shards written, by index.
    shards: BTreeMap<u32, Vec<TaskStatus>>,
    /// Parts of a pinned definition written.
    parts: Vec<(String, crate::api::RunShardSpec)>,
    definition: Resolution,
    jobs: Vec<Arc<Job>>,
    pods: Vec<Arc<Pod>>,
    memory: Memory,
    config: Config,
    /// Jobs created but not shown in the cache yet.
    created: Vec<Job>,
    /// What the watch showed changing since the last step; `None`: look at everything.
    touched: Option<HashSet<String>>,
}

impl World {
    fn new(spec: Value) -> Self {
        let run: Run = serde_json::from_value(json!({
            "apiVersion": "ork.dev/v1alpha1", "kind": "Run",
            "metadata": {"name": "etl-1", "namespace": "team", "uid": RUN_UID, "generation": 1,
                         "resourceVersion": "1"},
            "spec": {"workflow": {"tasks": [{"name": "placeholder"}]}},
        }))
        .unwrap();
        Self {
            run,
            state: None,
            shards: BTreeMap::new(),
            parts: Vec::new(),
            definition: definition(spec),
            jobs: Vec::new(),
            pods: Vec::new(),
            memory: Memory::default(),
            config: Config::default(),
            created: Vec::new(),
            touched: None,
        }
    }

    /// The decision alone: nothing written, the state kept as it was.
    fn decide(&self, now: Timestamp) -> Plan {
        let mut state = None;
        self.decide_with(&mut state, now)
    }

    /// What a later reconcile of the run, once finished at `finished_at`, decides.
    fn decide_finished(&self, finished_at: Timestamp, now: Timestamp) -> Plan {
        let (jobs, pods) = self.groups();
        super::decide_finished(RUN_UID, &jobs, &pods, Some(finished_at), now)
    }

    /// The Jobs and Pods as the index holds them: Jobs by name, Pods by the name of their Job.
    fn groups(
        &self,
    ) -> (
        crate::kubernetes::index::Group<Job>,
        crate::kubernetes::index::Group<Pod>,
    ) {
        let mut jobs = crate::kubernetes::index::Group::new();
        for job in &self.jobs {
            jobs.entry(job.metadata.name.clone().unwrap())
                .or_insert_with(Vec::new)
                .push(Arc::clone(job));
        }
        let mut pods = crate::kubernetes::index::Group::new();
        for pod in &self.pods {
            let job = crate::kubernetes::index::job_of_pod(pod).unwrap();
            pods.entry(job)
                .or_insert_with(Vec::new)
                .push(Arc::clone(pod));
        }
        (jobs, pods)
    }

    fn decide_with(&self, state: &mut Option<RunState>, now: Timestamp) -> Plan {
        // Without a state, a large run is read back whole from its shards, as the reconciler
        // does.
        let run = if state.is_none() {
            self.assembled()
        } else {
            self.run.clone()
        };
        let (jobs, pods) = self.groups();
        decide(
            state,
            &Observed {
                run: &run,
                definition: &self.definition,
                jobs: &jobs,
                pods: &pods,
                memory: &self.memory,
                now,
                config: &self.config,
                touched: self.touched.as_ref(),
            },
        )
    }

    /// The Run with every record and its whole definition, joined from its shards.
    fn assembled(&self) -> Run {
        let mut run = self.run.clone();
        let mut shards: Vec<crate::api::RunShard> = self
            .parts
            .iter()
            .map(|(name, spec)| {
                let mut shard = crate::api::RunShard::new(name, spec.clone());
                shard.metadata.name = Some(name.clone());
                shard
            })
            .collect();
        for (k, tasks) in &self.shards {
            let spec = crate::api::RunShardSpec {
                run: "etl-1".into(),
                first: k * 64,
                tasks: tasks.clone(),
                definition: Vec::new(),
            };
            shards.push(crate::api::RunShard::new(&format!("etl-1.tasks-{k}"), spec));
        }
        crate::kubernetes::layout::assemble(&mut run, &shards).unwrap();
        run
    }

    /// A change made behind the controller's back: what it keeps is stale.
    fn touch(&mut self) {
        let version: u64 = self
            .run
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or("0")
            .parse()
            .unwrap();
        self.run.metadata.resource_version = Some((version + 1).to_string());
    }

    /// The status and records a plan writes, applied as the API server would: the reconciler's
    /// own patches (record shards, then the Run's status), or a whole status.
    fn write(&mut self, plan: &Plan) {
        self.parts.extend(plan.definition_parts.iter().cloned());
        let Some(state) = self.state.as_mut() else {
            // A run that cannot go on: its whole status, records and all.
            if let Some(status) = &plan.status {
                self.run.status = Some(status.clone());
                self.touch();
            }
            return;
        };
        if state.sharded {
            let versions: HashMap<u32, String> =
                self.shards.keys().map(|k| (*k, "0".to_string())).collect();
            let updates = crate::kubernetes::layout::shard_writes(
                "etl-1",
                &state.records,
                &versions,
                &state.shard_lens,
                &plan.records,
            );
            for update in updates {
                let tasks = match update.write {
                    crate::kubernetes::layout::ShardWrite::Create(spec) => spec.tasks,
                    crate::kubernetes::layout::ShardWrite::Patch(ops) => {
                        let tasks = &self.shards[&update.shard];
                        let mut shard = json!({"metadata": {"resourceVersion": "0"},
                                               "spec": {"tasks": tasks}});
                        let ops: json_patch::Patch = serde_json::from_value(ops).unwrap();
                        json_patch::patch(&mut shard, &ops)
                            .expect("the API server takes the patch");
                        serde_json::from_value(shard["spec"]["tasks"].clone()).unwrap()
                    }
                };
                assert_eq!(tasks.len(), update.len);
                state.shard_lens.insert(update.shard, update.len);
                self.shards.insert(update.shard, tasks);
            }
        }
        let version = self
            .run
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let inline = !state.sharded && !plan.records.is_empty();
        let wrote_run = plan.status.is_some() || inline || plan.migrate;
        if plan.whole {
            if let Some(head) = &plan.status {
                let mut status = head.clone();
                if !state.sharded {
                    status.tasks = state.records.clone();
                    for (i, record) in &plan.records {
                        status.tasks[*i] = record.clone();
                    }
                }
                state.stored = status.tasks.len();
                self.run.status = Some(status);
            }
        } else if wrote_run {
            let new_head = plan.status.clone().unwrap_or_else(|| state.head.clone());
            let ops = crate::kubernetes::layout::run_patch(
                &version,
                &state.head,
                &new_head,
                (!state.sharded).then_some((state.records.as_slice(), state.stored)),
                &plan.records,
                plan.migrate,
            );
            let mut run = serde_json::to_value(&self.run).unwrap();
            let ops: json_patch::Patch = serde_json::from_value(ops).unwrap();
            json_patch::patch(&mut run, &ops).expect("the API server takes the patch");
            self.run = serde_json::from_value(run).unwrap();
            self.run.metadata.resource_version = Some(version.clone());
        }
        if wrote_run {
            let next = version.parse::<u64>().unwrap() + 1;
            self.run.metadata.resource_version = Some(next.to_string());
            state.written_at(next.to_string());
        }
        state.commit(plan.status.clone(), &plan.records);
    }

    /// A reconcile whose writes all succeed: the status is recorded and the Jobs are created
    /// (known to the controller, not yet in the cache). The state is kept only while the Run
    /// is at the version it was kept for, as the reconciler does.
    fn step(&mut self, now: Timestamp) -> Plan {
        let version = self
            .run
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let mut state = self
            .state
            .take()
            .filter(|s| s.is_current(Some(version.as_str())));
        let restored = state.is_none();
        let plan = self.decide_with(&mut state, now);
        // As the reconciler does: a rebuilt state learns the record shards as they are.
        if restored && let Some(state) = state.as_mut() {
            for (k, tasks) in &self.shards {
                state.shard_versions.insert(*k, "0".into());
                state.shard_lens.insert(*k, tasks.len());
            }
        }
        self.state = state;
        self.write(&plan);
        for job in &plan.create {
            let name = job.metadata.name.clone().unwrap();
            self.memory.created.insert(name.clone());
            self.memory.unseen.insert(name);
            self.created.push(job.clone());
        }
        for name in &plan.delete {
            self.jobs
                .retain(|j| j.metadata.name.as_deref() != Some(name));
        }
        plan
    }

    /// The Job watch catches up: created Jobs appear in the cache.
    fn show_jobs(&mut self, at: Timestamp) {
        for mut job in self.created.drain(..) {
            let name = job.metadata.name.clone().unwrap();
            job.metadata.uid = Some(format!("uid-{name}"));
            job.metadata.creation_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at));
            self.memory.unseen.remove(&name);
            self.jobs.push(Arc::new(job));
        }
    }

    fn job(&self, name: &str) -> &Job {
        self.jobs
            .iter()
            .find(|j| j.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no Job {name}"))
    }

    /// Sets the Pod of Job `job` to `status`.
    fn pod(&mut self, job: &str, status: Value) {
        let job_uid = self.job(job).metadata.uid.clone().unwrap();
        self.pods
            .retain(|p| p.metadata.name.as_deref() != Some(job));
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": job, "namespace": "team", "uid": format!("pod-{job}"),
                "labels": {"ork.dev/run": "etl-1", "job-name": job},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job,
                                     "uid": job_uid, "controller": true}]},
            "status": status,
        }))
        .unwrap();
        self.pods.push(Arc::new(pod));
    }

    fn set_job_conditions(&mut self, job: &str, conditions: Value) {
        let i = self
            .jobs
            .iter()
            .position(|j| j.metadata.name.as_deref() == Some(job))
            .unwrap();
        let mut updated = (*self.jobs[i]).clone();
        updated.status = Some(serde_json::from_value(json!({"conditions": conditions})).unwrap());
        self.jobs[i] = Arc::new(updated);
    }

    /// A task's record, wherever it is written (the Run's status, or a record shard).
    fn task(&self, name: &str) -> TaskStatus {
        if let Some(t) = self.status().tasks.iter().find(|t| t.name == name) {
            return t.clone();
        }
        self.shards
            .values()
            .flatten()
            .find(|t| t.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no task {name}"))
    }

    fn status(&self) -> &RunStatus {
        self.run.status.as_ref().expect("a recorded status")
    }

    fn phase(&self) -> RunPhase {
        self.status().phase.unwrap()
    }
}

fn names(jobs: &[Job]) -> Vec<String> {
    jobs.iter()
        .map(|j| j.metadata.name.clone().unwrap())
        .collect()
}

fn running_pod(started: i64) -> Value {
    json!({"phase": "Running", "startTime": ts(started),
           "containerStatuses": [container(json!({"running": {"startedAt": ts(started)}}))]})
}

fn succeeded_pod(started: i64, finished: i64, output: &str) -> Value {
    json!({"phase": "Succeeded", "startTime": ts(started),
           "containerStatuses": [container(json!({"terminated": {"exitCode": 0, "reason": "Completed",
               "message": output, "finishedAt": ts(finished)}}))]})
}

fn failed_pod(started: i64, finished: i64, code: i32, reason: &str) -> Value {
    json!({"phase": "Failed", "startTime": ts(started),
           "containerStatuses": [container(json!({"terminated": {"exitCode": code, "reason": reason,
               "finishedAt": ts(finished)}}))]})
}

fn waiting_pod(started: i64, reason: &str, message: &str) -> Value {
    json!({"phase": "Pending", "startTime": ts(started),
           "containerStatuses": [container(json!({"waiting": {"reason": reason, "message": message}}))]})
}

fn container(state: Value) -> Value {
    json!({"name": "task", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": state})
}

fn reasons(plan: &Plan) -> Vec<&'static str> {
    plan.events.iter().map(|e| e.reason).collect()
}

// ---- creating Jobs: status first, never twice, never lost for lack of a look ----

#[test]
fn the_first_reconcile_records_the_start_then_creates_the_first_jobs() {
    let mut w = World::new(
        json!({"tasks": [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}, {"name": "c"}]}),
    );
    let plan = w.step(t(0));
    let status = plan.status.as_ref().expect("a status to record");
    assert_eq!(status.phase, Some(RunPhase::Running));
    assert_eq!(names(&plan.create), ["etl-1.a.1", "etl-1.c.1"]);
    assert_eq!(w.task("a").phase, TaskPhase::Running);
    assert_eq!(w.task("a").job, None, "not made yet");
    assert_eq!(w.task("b").phase, TaskPhase::Pending);
    assert_eq!(reasons(&plan), ["Started"]);
    assert!(plan.delete.is_empty());
    assert!(plan.requeue.is_some());
}

#[test]
fn a_job_created_but_not_yet_in_the_cache_is_neither_made_again_nor_lost() {
    let mut w = World::new(json!({"tasks": [{"name": "a"}]}));
    w.step(t(0));
    let plan = w.step(t(1));
    assert!(plan.create.is_empty(), "{:?}", names(&plan.create));
    assert_eq!(w.task("a").phase, TaskPhase::Running);
    assert!(
        plan.status.is_none() && plan.records.is_empty(),
        "no write just to say the Job exists"
    );
    w.show_jobs(t(1));
    let plan = w.step(t(2));
    assert!(plan.create.is_empty() && plan.status.is_none() && plan.records.is_empty());
    // The link is written with the record's next change.
    w.pod("etl-1.a.1", succeeded_pod(1, 2, ""));
    w.step(t(3));
    assert_eq!(w.task("a").job.as_deref(), Some("etl-1.a.1"));
    assert_eq!(w.task("a").pod_started_at, Some(t(1)));
}

#[test]
fn a_recorded_attempt_whose_job_was_never_made_gets_it_made_not_lost() {
    // The controller stopped between recording the start and creating the Job.
    let mut w =
        World::new(json!({"tasks": [{"name": "a", "inputs": [{"name": "X", "value": "1"}]}]}));
    let first = w.decide(t(0));
    w.run.status = first.status.clone();
    let plan = w.step(t(5));
    assert_eq!(
        names(&plan.create),
        ["etl-1.a.1"],
        "the same attempt, made now"
    );
    assert_eq!(
        plan.create[0], first.create[0],
        "exactly the Job decided first"
    );
    assert_eq!(w.task("a").attempts, 1);
    assert_eq!(w.task("a").phase, TaskPhase::Running);
}

#[test]
fn a_job_that_disappears_after_it_was_seen_is_a_lost_attempt() {
    let mut w = World::new(json!({"tasks": [{"name": "a", "retries": {"limit": 1}}]}));
    w.step(t(0));
    w.show_jobs(t(0));
    w.step(t(1));
    w.jobs.clear();
    let plan = w.step(t(2));
    let a = w.task("a");
    assert_eq!(a.reason.as_deref(), Some("JobLost"));
    assert!(a.message.unwrap().contains("etl-1.a.1 disappeared"));
    assert_eq!(a.phase, TaskPhase::Pending, "retried");
    assert!(plan.create.is_empty(), "not before the back-off");
    let plan = w.step(t(3));
    assert_eq!(names(&plan.create), ["etl-1.a.2"]);
}

#[test]
fn a_job_deleted_before_any_reconcile_saw_it_is_lost_too() {
    // Made by this controller, shown by the watch and deleted between two reconciles: the
    // status never recorded it, the memory did.
    let mut w = World::new(json!({"tasks": [{"name": "a"}]}));
    w.step(t(0));
    w.created.clear();
    w.memory.unseen.clear();
    let plan = w.step(t(1));
    assert!(plan.create.is_empty(), "not made again");
    assert_eq!(w.task("a").reason.as_deref(), Some("JobLost"));
}

#[test]
fn outputs_flow_downstream_and_the_run_ends() {
    let mut w = World::new(json!({"tasks": [
        {"name": "a"},
        {"name": "b", "dependsOn": ["a"], "inputs": [{"name": "ROWS", "fromTask": "a", "output": "rows"}]},
    ]}));
    w.step(t(0));
    w.show_jobs(t(0));
    w.pod("etl-1.a.1", succeeded_pod(1, 3, r#"{"rows": 7}"#));
    let plan = w.step(t(4));
    assert_eq!(w.task("a").phase, TaskPhase::Succeeded);
    assert_eq!(
        w.task("a").finished_at,
        Some(t(3)),
        "when the container ended"
    );
    assert_eq!(w.task("a").outputs.unwrap()["rows"], 7);
    assert_eq!(names(&plan.create), ["etl-1.b.1"]);
    let env =
        serde_json::to_value(&plan.create[0]).unwrap()["spec"]["template"]["spec"]["containers"][0]
            ["env"]
            .clone();
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "ROWS" && e["value"] == "7")
    );
    w.show_jobs(t(4));
    w.pod("etl-1.b.1", succeeded_pod(5, 6, ""));
    let plan = w.step(t(7));
    assert_eq!(w.phase(), RunPhase::Succeeded);
    assert_eq!(w.status().finished_at, Some(t(6)));
    assert_eq!(reasons(&plan), ["Succeeded"]);
    assert!(plan.finished);
    assert_eq!(plan.requeue, None);
}

// ---- API errors become outcomes ----

#[test]
fn a_job_the_api_server_refuses_fails_its_task_for_good_and_the_run_goes_on() {
    let mut w = World::new(json!({"tasks": [
        {"name": "a", "retries": {"limit": 3}},
        {"name": "b", "dependsOn": ["a"]},
        {"name": "c"},
    ]}));
    w.step(t(0));
    // The creation of a's Job was refused; c's went through.
    w.memory.created.remove("etl-1.a.1");
    w.memory.unseen.remove("etl-1.a.1");
    w.created
        .retain(|j| j.metadata.name.as_deref() != Some("etl-1.a.1"));
    w.memory.rejected.insert(
        "etl-1.a.1".into(),
        "Job.batch \"etl-1.a.1\" is invalid: spec.template.spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit (422 Invalid)".into(),
    );
    let plan = w.step(t(1));
    let a = w.task("a");
    assert_eq!(a.phase, TaskPhase::Failed);
    assert_eq!(a.reason.as_deref(), Some("JobRejected"));
    assert_eq!(a.attempts, 1, "not retried: it would be refused again");
    assert!(
        a.message
            .unwrap()
            .contains("must be less than or equal to cpu limit")
    );
    assert_eq!(w.task("b").phase, TaskPhase::Skipped);
    assert_eq!(
        w.task("c").phase,
        TaskPhase::Running,
        "the independent branch goes on"
    );
    assert!(plan.create.is_empty());
    let failed: Vec<&Note> = plan
        .events
        .iter()
        .filter(|e| e.reason == "TaskFailed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].note.contains("\"a\""));
    w.show_jobs(t(1));
    w.pod("etl-1.c.1", succeeded_pod(2, 3, ""));
    w.step(t(4));
    assert_eq!(w.phase(), RunPhase::Failed);
}

// ---- what is stopped ----

#[test]
fn an_attempt_failed_from_a_live_pod_has_its_job_deleted() {
    let mut w = World::new(json!({"tasks": [{"name": "a"}]}));
    w.step(t(0));
    w.show_jobs(t(0));
    w.pod(
        "etl-1.a.1",
        waiting_pod(1, "CreateContainerConfigError", "secret \"db\" not found"),
    );
    let plan = w.step(t(2));
    assert_eq!(
        w.task("a").reason.as_deref(),
        Some("CreateContainerConfigError")
    );
    assert_eq!(
        w.task("a").message.as_deref(),
        Some("secret \"db\" not found")
    );
    assert_eq!(
        plan.delete,
        ["etl-1.a.1"],
        "so the Pod can never start later"
    );
}

#[test]
fn every_active_job_that_is_not_the_recorded_running_attempt_is_stopped() {
    let mut w =
        World::new(json!({"tasks": [{"name": "a", "retries": {"limit": 2}}, {"name": "x"}]}));
    w.step(t(0));
    w.show_jobs(t(0));
    // a's first attempt failed and the second runs; attempt 1's Job lingers, still active
    // (its Pod was recreated?); a Job for a task the run does not have; a finished old Job;
    // another Run's Job of the same run name.
    w.pod("etl-1.a.1", failed_pod(1, 2, 1, "Error"));
    w.step(t(3));
    w.step(t(4));
    w.show_jobs(t(4));
    assert_eq!(w.task("a").attempts, 2);
    w.pods.clear();
    let stray = |name: &str, task: &str, attempt: &str, owner: &str| -> Arc<Job> {
        Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}"),
            "labels": {"ork.dev/run": "etl-1", "ork.dev/task": task, "ork.dev/attempt": attempt},
            "ownerReferences": [{"apiVersion": "ork.dev/v1alpha1", "kind": "Run", "name": "etl-1", "uid": owner, "controller": true}]}})).unwrap())
    };
    w.jobs.push(stray("etl-1.gone.1", "gone", "1", RUN_UID));
    w.jobs.push(stray("etl-1.x.9", "x", "9", "another-run"));
    let plan = w.decide(t(5));
    assert_eq!(plan.delete, ["etl-1.a.1", "etl-1.gone.1"]);
    // Once finished, the old Job stays (its Pod and logs too).
    w.set_job_conditions("etl-1.a.1", json!([{"type": "Failed", "status": "True"}]));
    let plan = w.decide(t(5));
    assert_eq!(plan.delete, ["etl-1.gone.1"]);
}

#[test]
fn a_finished_run_stops_what_still_runs() {
    let mut w = World::new(json!({"tasks": [{"name": "a"}]}));
    w.step(t(0));
    w.show_jobs(t(0));
    let mut status = w.status().clone();
    status.phase = Some(RunPhase::Failed);
    w.run.status = Some(status);
    let plan = w.decide(t(1));
    assert_eq!(plan.delete, ["etl-1.a.1"]);
    assert!(plan.finished && plan.status.is_none() && plan.create.is_empty());
}

#[test]
fn a_succeeded_attempts_job_is_kept_though_it_does_not_look_complete_yet() {
    // The last task's Pod succeeded; the Job controller has not marked its Job complete yet
    // when the run finishes. The Job (and its logs) stay, on this reconcile and on a rebuilt
    // one.
    let mut w = World::new(json!({"tasks": [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}]}));
    w.step(t(0));
    w.show_jobs(t(0));
    w.pod("etl-1.a.1", succeeded_pod(1, 2, ""));
    w.step(t(3));
    w.show_jobs(t(3));
    w.pod("etl-1.b.1", succeeded_pod(4, 5, ""));
    let plan = w.step(t(6));
    assert!(plan.finished, "the run is over");
    assert!(plan.delete.is_empty(), "{:?}", plan.delete);
    // Another controller's view (rebuilt from the API) whose Pod cache has not seen b's Pod
    // end: the status says b succeeded, so its Job stays.
    w.pod("etl-1.b.1", running_pod(4));
    w.run.metadata.resource_version = Some("999".into());
    let plan = w.decide(t(7));
    assert!(plan.delete.is_empty(), "{:?}", plan.delete);
    // A later reconcile of the finished run, which reads no records, waits for the caches
    // before it stops what still looks active; past the grace it does.
    let plan = w.decide_finished(t(6), t(7));
    assert!(plan.delete.is_empty() && plan.finished);
    assert_eq!(plan.requeue, Some(Duration::from_secs(4)));
    let plan = w.decide_finished(t(6), t(11));
    assert_eq!(plan.delete, ["etl-1.b.1"]);
}

#[test]
fn a_predecessors_job_is_never_adopted_nor_taken_for_lost() {
    let mut w = World::new(json!({"tasks": [{"name": "a"}]}));
    let old: Job = serde_json::from_value(json!({"metadata": {"name": "etl-1.a.1", "namespace": "team", "uid": "old",
        "labels": {"ork.dev/run": "etl-1", "ork.dev/task": "a", "ork.dev/attempt": "1"},
        "ownerReferences": [{"apiVersion": "ork.dev/v1alpha1", "kind": "Run", "name": "etl-1", "uid": "earlier-run", "controller": true}]}})).unwrap();
    w.jobs.push(Arc::new(old));
    w.pods.clear();
    let plan = w.step(t(0));
    assert!(plan.create.is_empty(), "the name is taken: wait");
    assert!(plan.delete.is_empty(), "never touched");
    assert!(plan.requeue.unwrap() <= Duration::from_secs(2));
    let plan = w.step(t(1));
    assert!(plan.create.is_empty());
    assert_eq!(w.task("a").phase, TaskPhase::Running);
    assert_eq!(w.task("a").reason, None);
    // Collected: now it is made.
    w.jobs.clear();
    assert_eq!(names(&w.step(t(3)).create), ["etl-1.a.1"]);
}

#[test]
fn a_status_over_the_limit_starts_nothing_and_fails_the_run() {
    let mut w = World::new(json!({"tasks": [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}]}));
    w.config.max_status_bytes = 1500;
    w.step(t(0));
    w.show_jobs(t(0));
    w.pod(
        "etl-1.a.1",
        succeeded_pod(1, 2, &format!(r#"{{"k": "{}"}}"#, "x".repeat(2000))),
    );
    let plan = w.step(t(3));
    assert_eq!(w.phase(), RunPhase::Failed);
    let condition = &w.status().conditions[0];
    assert_eq!(condition.reason.as_deref(), Some("StatusTooLarge"));
    assert!(plan.create.is_empty(), "b is not started");
    assert_eq!(reasons(&plan), ["StatusTooLarge"]);
}

// ---- timeouts and the order of time ----

#[test]
fn the_timeout_counts_from_the_pods_start_and_the_kubelet_gets_to_stop_it_first() {
    let mut w = World::new(json!({"tasks": [{"name": "a", "timeoutSeconds": 10}]}));
    w.step(t(0));
    w.show_jobs(t(0));
    // Waiting for a node for 5s does not count.
    w.pod("etl-1.a.1", running_pod(5));
    let plan = w.step(t(14));
    assert_eq!(w.task("a").phase, TaskPhase::Running);
    assert!(
        plan.requeue.unwrap() <= Duration::from_secs(1),
        "{:?}",
        plan.requeue
    );
    let plan = w.step(t(16));
    let a = w.task("a");
    assert_eq!(a.phase, TaskPhase::Running, "until it is really gone");
    assert!(
        a.message
            .unwrap()
            .contains("exceeded its timeout of 10s; stopping it")
    );
    assert!(
        plan.delete.is_empty(),
        "the kubelet stops it (keeping its logs)"
    );
    assert_eq!(
        plan.requeue,
        Some(Duration::from_secs(29)),
        "until the grace is over"
    );
    // The kubelet did its part: the Pod failed for its deadline.
    w.pod(
        "etl-1.a.1",
        json!({"phase": "Failed", "reason": "DeadlineExceeded", "startTime": ts(5),
               "containerStatuses": [container(json!({"terminated": {"exitCode": 137, "reason": "Error", "finishedAt": ts(15)}}))]}),
    );
    let plan = w.step(t(17));
    assert_eq!(w.task("a").reason.as_deref(), Some("Timeout"));
    assert_eq!(w.task("a").finished_at, Some(t(15)));
    assert!(plan.delete.is_empty());
}

#[test]
fn a_pod_that_outlives_its_deadline_and_the_grace_gets_its_job_deleted() {
    let mut w = World::new(json!({"tasks": [{"name": "a", "timeoutSeconds": 10}]}));
    w.step(t(0));
    w.show_jobs(t(0));
    w.pod("etl-1.a.1", running_pod(0));
    assert!(w.step(t(39)).delete.is_empty());
    assert_eq!(w.step(t(40)).delete, ["etl-1.a.1"]);
    // Deleted: the Job and Pod go; the attempt is a timeout.
    w.jobs.clear();
    w.pods.clear();
    w.step(t(41));
    assert_eq!(w.task("a").reason.as_deref(), Some("Timeout"));
    assert_eq!(w.phase(), RunPhase::Failed);
}

#[test]
fn a_success_just_before_the_deadline_read_after_it_is_a_success() {
    let mut w = World::new(json!({"tasks": [{"name": "a", "timeoutSeconds": 10}]}));
    w.step(t(0));
    w.show_jobs(t(0));
    w.pod("etl-1.a.1", succeeded_pod(0, 9, r#"{"ok": true}"#));
    w.step(t(12));
    assert_eq!(w.task("a").phase, TaskPhase::Succeeded);
    assert_eq!(w.task("a").outputs.unwrap()["ok"], true);
}

#[test]
fn nothing_starts_after_the_run_deadline_and_times_are_true() {
    let mut w = World::new(json!({"activeDeadlineSeconds": 10, "tasks": [
        {"name": "a"}, {"name": "b", "dependsOn": ["a"]},
    ]}));
    w.step(t(0));
    w.show_jobs(t(0));
    w.pod("etl-1.a.1", succeeded_pod(1, 9, ""));
    let plan = w.step(t(12));
    assert!(plan.create.is_empty(), "{:?}", names(&plan.create));
    assert_eq!(w.task("a").phase, TaskPhase::Succeeded);
    assert_eq!(w.task("a").finished_at, Some(t(9)));
    assert_eq!(w.task("b").phase, TaskPhase::Cancelled);
    assert_eq!(w.phase(), RunPhase::Failed);
    assert_eq!(w.status().finished_at, Some(t(10)));
    assert_eq!(
        w.status().conditions[0].reason.as_deref(),
        Some("DeadlineExceeded")
    );
}

// ---- what the status and Events say ----

#[test]
fn each_failed_task_gets_its_own_event_naming_it_and_its_job() {
    let mut w = World::new(json!({"tasks": [{"name": "a"}, {"name": "c"}]}));
    w.step(t(0));
    w.show_jobs(t(0));
    w.pod("etl-1.a.1", failed_pod(1, 2, 3, "Error"));
    w.pod("etl-1.c.1", failed_pod(1, 2, 137, "OOMKilled"));
    let plan = w.step(t(3));
    let failed: Vec<&Note> = plan
        .events
        .iter()
        .filter(|e| e.reason == "TaskFailed")
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(failed[0].note.contains("\"a\"") && failed[0].note.contains("exited with code 3"));
    assert_eq!(failed[0].job.as_deref(), Some("etl-1.a.1"));
    assert!(failed[1].note.contains("\"c\"") && failed[1].note.contains("OOMKilled"));
    assert_eq!(failed[1].job.as_deref(), Some("etl-1.c.1"));
    assert!(failed.iter().all(|e| e.type_ == EventType::Warning));
    let c = w.task("c");
    assert_eq!(c.reason.as_deref(), Some("OOMKilled"));
    assert_eq!(c.exit_code, Some(137));
    assert!(c.message.unwrap().contains("ran out of memory"));
    assert_eq!(reasons(&plan).last(), Some(&"Failed"));
}

#[test]
fn failure_events_are_bounded() {
    let tasks: Vec<Value> = (0..50).map(|i| json!({"name": format!("t{i}")})).collect();
    let mut w = World::new(json!({"tasks": tasks}));
    w.step(t(0));
    w.show_jobs(t(0));
    for i in 0..50 {
        w.pod(&format!("etl-1.t{i}.1"), failed_pod(1, 2, 1, "Error"));
    }
    let plan = w.step(t(3));
    let failed: Vec<&Note> = plan
        .events
        .iter()
        .filter(|e| e.reason == "TaskFailed")
        .collect();
    assert_eq!(failed.len(), 11);
    assert!(
        failed[10].note.starts_with("40 more tasks failed"),
        "{}",
        failed[10].note
    );
}

#[test]
fn why_an_attempt_has_not_started_is_in_the_tasks_message() {
    let mut w = World::new(json!({"tasks": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}));
    w.step(t(0));
    w.show_jobs(t(0));
    w.pod(
        "etl-1.a.1",
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
               "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient cpu."}]}),
    );
    w.pod(
        "etl-1.b.1",
        waiting_pod(
            1,
            "ImagePullBackOff",
            "Back-off pulling image \"x.invalid/y\"",
        ),
    );
    w.memory.failed_create.insert(
        "etl-1.c.1".into(),
        "pods \"etl-1.c.1-abc\" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=0, limited: pods=0".into(),
    );
    let plan = w.step(t(20));
    assert_eq!(
        w.task("a").message.as_deref(),
        Some("waiting for a node: 0/1 nodes are available: 1 Insufficient cpu.")
    );
    assert!(
        w.task("b")
            .message
            .unwrap()
            .starts_with("waiting for its image (ImagePullBackOff")
    );
    assert!(
        w.task("c")
            .message
            .unwrap()
            .starts_with("the Job cannot create its Pod: pods")
    );
    assert!(plan.requeue.unwrap() <= NO_POD_RECHECK);
    // Five minutes on, the image still cannot be pulled: the attempt fails.
    w.step(t(301));
    assert_eq!(w.task("b").phase, TaskPhase::Failed);
    assert_eq!(w.task("b").reason.as_deref(), Some("ImagePullBackOff"));
    assert_eq!(w.task("a").phase, TaskPhase::Running, "a node may come");
}

#[test]
fn a_run_that_can_never_start_fails_with_a_bounded_message() {
    let mut w = World::new(json!({"tasks": [{"name": "a"}]}));
    w.definition = Resolution::Rejected("InvalidSpec", "x".repeat(100_000));
    let plan = w.step(t(0));
    assert_eq!(w.phase(), RunPhase::Failed);
    let message = w.status().conditions[0].message.clone().unwrap();
    assert!(message.len() <= crate::text::MAX_MESSAGE_BYTES);
    assert_eq!(reasons(&plan), ["InvalidSpec"]);
    assert!(plan.events[0].note.len() <= crate::text::MAX_MESSAGE_BYTES);
    assert!(plan.finished);
    // Nothing more to say the second time.
    assert!(w.step(t(1)).status.is_none());
}

#[test]
fn a_run_waiting_for_its_workflow_is_pending_and_woken_by_the_workflow() {
    let mut w = World::new(json!({"tasks": [{"name": "a"}]}));
    w.definition =
        Resolution::Waiting("WorkflowNotFound", "Workflow \"etl\" does not exist".into());
    let plan = w.step(t(0));
    assert_eq!(w.phase(), RunPhase::Pending);
    assert_eq!(
        w.status().conditions[0].reason.as_deref(),
        Some("WorkflowNotFound")
    );
    assert_eq!(plan.requeue, Some(RESYNC), "no polling; only a safety net");
    assert!(plan.events.is_empty());
}

// ---- runs past the inline limit ----

#[test]
fn a_large_run_keeps_its_records_in_shards_and_a_summary_in_its_status() {
    let tasks: Vec<Value> = (0..150).map(|i| json!({"name": format!("t{i}")})).collect();
    let mut w = World::new(json!({"tasks": tasks}));
    w.config.inline_tasks = 100;
    let plan = w.step(t(0));
    assert_eq!(plan.definition_parts.len(), 1);
    assert_eq!(plan.create.len(), 150);
    let status = w.status().clone();
    assert!(status.tasks.is_empty(), "no records in the Run");
    let layout = status.records.as_ref().expect("says where the records are");
    assert_eq!((layout.shards, layout.tasks_per_shard), (3, 64));
    assert_eq!(layout.definition, [plan.definition_parts[0].0.clone()]);
    assert!(
        status
            .workflow
            .as_ref()
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .tasks
            .is_empty()
    );
    assert_eq!(status.running_tasks.len(), 20, "named, up to a bound");
    assert_eq!(status.task_counts.unwrap().running, 150);
    assert_eq!(w.shards.len(), 3);
    assert_eq!(w.shards[&2].len(), 150 - 128);

    // One task ends: one record is written, and the summary.
    w.show_jobs(t(0));
    w.pod("etl-1.t70.1", succeeded_pod(1, 2, r#"{"n": 70}"#));
    w.pod("etl-1.t3.1", failed_pod(1, 2, 1, "Error"));
    let plan = w.step(t(3));
    let written: Vec<usize> = plan.records.iter().map(|(i, _)| *i).collect();
    assert_eq!(written, [3, 70]);
    let status = w.status();
    assert_eq!(status.task_counts.unwrap().succeeded, 1);
    assert_eq!(status.failed_tasks, ["t3"]);
    assert_eq!(w.task("t70").outputs.unwrap()["n"], 70);

    // A restart: the state is rebuilt from the shards and goes on where it was.
    w.state = None;
    let plan = w.step(t(4));
    assert!(plan.create.is_empty(), "nothing made again");
    assert!(
        plan.records.is_empty() && plan.status.is_none(),
        "nothing to write"
    );
    for i in (0..150).filter(|i| *i != 3 && *i != 70) {
        w.pod(&format!("etl-1.t{i}.1"), succeeded_pod(1, 5, ""));
    }
    w.step(t(6));
    assert_eq!(w.phase(), RunPhase::Failed);
    assert_eq!(w.status().task_counts.unwrap().succeeded, 149);
}

#[test]
fn only_the_records_that_changed_are_written() {
    let tasks: Vec<Value> = (0..50).map(|i| json!({"name": format!("t{i}")})).collect();
    let mut w = World::new(json!({"tasks": tasks}));
    let first = w.step(t(0));
    assert!(first.whole, "the first write is whole");
    w.show_jobs(t(0));
    w.pod("etl-1.t7.1", succeeded_pod(1, 2, ""));
    let plan = w.step(t(3));
    assert!(!plan.whole);
    let written: Vec<usize> = plan.records.iter().map(|(i, _)| *i).collect();
    assert_eq!(written, [7]);
    assert_eq!(w.status().tasks.len(), 50);
    assert_eq!(w.task("t7").phase, TaskPhase::Succeeded);
}

#[test]
fn a_watch_cache_one_write_behind_keeps_the_state() {
    let mut w = World::new(json!({"tasks": [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}]}));
    w.step(t(0));
    w.show_jobs(t(0));
    // A stray Job of the run: only a state rebuilt from the API looks at every Job.
    let stray: Job = serde_json::from_value(json!({"metadata": {"name": "etl-1.gone.1",
        "namespace": "team", "uid": "uid-stray",
        "labels": {"ork.dev/run": "etl-1", "ork.dev/task": "gone", "ork.dev/attempt": "1"},
        "ownerReferences": [{"apiVersion": "ork.dev/v1alpha1", "kind": "Run", "name": "etl-1",
                             "uid": RUN_UID, "controller": true}]}}))
    .unwrap();
    w.jobs.push(Arc::new(stray));
    // The cache still shows the Run as it was before that write: nothing else has happened.
    w.run.metadata.resource_version = Some("1".into());
    let plan = w.step(t(1));
    assert!(plan.create.is_empty(), "nothing made again");
    assert!(
        plan.delete.is_empty(),
        "kept, not rebuilt: {:?}",
        plan.delete
    );
    // A version the controller did not write: rebuilt from the API, every Job looked at.
    w.run.metadata.resource_version = Some("999".into());
    let plan = w.step(t(2));
    assert_eq!(plan.delete, ["etl-1.gone.1"], "rebuilt");
}

#[test]
fn thousands_of_tasks_ready_at_once_get_their_jobs_in_batches_none_twice() {
    let tasks: Vec<Value> = (0..600).map(|i| json!({"name": format!("t{i}")})).collect();
    let mut w = World::new(json!({"tasks": tasks}));
    w.config.inline_tasks = 100;
    let mut made = std::collections::HashSet::new();
    let mut batches = Vec::new();
    for step in 0..5 {
        let plan = w.step(t(step));
        batches.push(plan.create.len());
        for name in names(&plan.create) {
            assert!(made.insert(name.clone()), "{name} made twice");
        }
        if plan.create.len() == MAX_CREATES {
            assert_eq!(
                plan.requeue,
                Some(Duration::ZERO),
                "the rest follow at once"
            );
        }
    }
    assert_eq!(batches, [250, 250, 100, 0, 0]);
    assert_eq!(w.status().task_counts.unwrap().running, 600);
    assert!(
        (0..600).all(|i| w.task(&format!("t{i}")).attempts == 1),
        "one attempt each"
    );
}

#[test]
fn a_large_runs_summary_is_written_at_most_every_second_when_only_counts_move() {
    let tasks: Vec<Value> = (0..150).map(|i| json!({"name": format!("t{i}")})).collect();
    let mut w = World::new(json!({"tasks": tasks}));
    w.config.inline_tasks = 100;
    let ms = |n: i64| t(0) + SignedDuration::from_millis(n);
    w.step(ms(0));
    w.show_jobs(ms(0));
    w.pod("etl-1.t5.1", succeeded_pod(0, 0, ""));
    let plan = w.step(ms(400));
    assert_eq!(plan.records.len(), 1, "the record is written at once");
    assert!(plan.status.is_none(), "the counts wait");
    let wait = plan.requeue.unwrap();
    assert!(wait <= Duration::from_millis(600), "{wait:?}");
    assert_eq!(w.status().task_counts.unwrap().succeeded, 0);
    let plan = w.step(ms(1000));
    assert!(plan.records.is_empty());
    assert_eq!(w.status().task_counts.unwrap().succeeded, 1);
    // A failure is not held back: the summary names it at once.
    w.pod("etl-1.t6.1", failed_pod(0, 1, 1, "Error"));
    let plan = w.step(ms(1100));
    assert!(plan.status.is_some());
    assert_eq!(w.status().failed_tasks, ["t6"]);
}

/// Sets `spec.suspend` / `spec.cancel` as `kubectl patch` would: a new version of the Run.
fn set_spec(w: &mut World, suspend: bool, cancel: bool) {
    w.run.spec.suspend = suspend;
    w.run.spec.cancel = cancel;
    w.touch();
}

fn condition<'a>(status: &'a RunStatus, type_: &str) -> Option<&'a crate::api::Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[test]
fn a_cancel_stops_the_running_jobs_and_ends_the_run_cancelled() {
    let mut w = World::new(json!({"tasks": [
        {"name": "a"}, {"name": "b", "dependsOn": ["a"]}, {"name": "c"},
    ]}));
    w.step(t(0));
    w.show_jobs(t(0));
    w.pod("etl-1.c.1", succeeded_pod(0, 1, ""));
    w.pod("etl-1.a.1", running_pod(0));
    w.step(t(2));
    set_spec(&mut w, false, true);
    let plan = w.step(t(3));
    assert_eq!(w.phase(), RunPhase::Cancelled);
    assert_eq!(plan.delete, ["etl-1.a.1"], "the running attempt's Job goes");
    assert!(plan.create.is_empty());
    assert_eq!(w.task("a").phase, TaskPhase::Cancelled);
    assert_eq!(w.task("b").phase, TaskPhase::Cancelled);
    assert_eq!(
        w.task("c").phase,
        TaskPhase::Succeeded,
        "what finished stays"
    );
    let succeeded = condition(w.status(), "Succeeded").unwrap();
    assert_eq!(succeeded.status, ConditionStatus::False);
    assert_eq!(succeeded.reason.as_deref(), Some("Cancelled"));
    assert!(
        reasons(&plan).contains(&"Cancelled"),
        "{:?}",
        reasons(&plan)
    );
    assert!(plan.finished);
    // Setting it back changes nothing.
    set_spec(&mut w, false, false);
    let plan = w.step(t(4));
    assert_eq!(w.phase(), RunPhase::Cancelled);
    assert!(plan.create.is_empty() && plan.status.is_none());
}

#[test]
fn a_cancel_during_a_retry_back_off_starts_nothing_more() {
    let mut w = World::new(json!({"tasks": [
        {"name": "a", "retries": {"limit": 3, "backoff": {"initialSeconds": 10}}},
    ]}));
    w.step(t(0));
    w.show_jobs(t(0));
    w.pod("etl-1.a.1", failed_pod(0, 1, 1, "Error"));
    w.step(t(2));
    assert_eq!(w.task("a").phase, TaskPhase::Pending, "backing off");
    set_spec(&mut w, false, true);
    w.step(t(3));
    let plan = w.step(t(20));
    assert!(plan.create.is_empty());
    assert_eq!(w.task("a").phase, TaskPhase::Cancelled);
    assert_eq!(w.task("a").attempts, 1);
    assert_eq!(w.phase(), RunPhase::Cancelled);
}

#[test]
fn a_run_cancelled_while_waiting_for_its_workflow_ends_cancelled() {
    let mut w = World::new(json!({"tasks": [{"name": "a"}]}));
    w.definition = Resolution::Waiting("WorkflowNotFound", "no such workflow".into());
    w.step(t(0));
    assert_eq!(w.phase(), RunPhase::Pending);
    set_spec(&mut w, false, true);
    let plan = w.step(t(1));
    assert_eq!(w.phase(), RunPhase::Cancelled);
    let succeeded = condition(w.status(), "Succeeded").unwrap();
    assert_eq!(succeeded.status, ConditionStatus::False);
    assert_eq!(reasons(&plan), ["Cancelled"]);
}

#[test]
fn a_suspended_run_starts_nothing_until_resumed_and_says_so() {
    let mut w = World::new(json!({"tasks": [
        {"name": "a"}, {"name": "b", "dependsOn": ["a"]},
    ]}));
    w.step(t(0));
    w.show_jobs(t(0));
    set_spec(&mut w, true, false);
    let plan = w.step(t(1));
    let suspended = condition(w.status(), "Suspended").expect("a Suspended condition");
    assert_eq!(suspended.status, ConditionStatus::True);
    assert_eq!(suspended.last_transition_time, Some(t(1)));
    assert_eq!(reasons(&plan), ["Suspended"]);
    // The running attempt goes on and its end is recorded; its dependent waits.
    w.pod("etl-1.a.1", succeeded_pod(0, 2, ""));
    let plan = w.step(t(3));
    assert_eq!(w.task("a").phase, TaskPhase::Succeeded);
    assert!(plan.create.is_empty(), "{:?}", names(&plan.create));
    assert_eq!(w.task("b").phase, TaskPhase::Pending);
    assert_eq!(w.phase(), RunPhase::Running);
    // A restart while suspended keeps it suspended.
    w.state = None;
    let plan = w.step(t(4));
    assert!(plan.create.is_empty());
    assert_eq!(
        condition(w.status(), "Suspended")
            .unwrap()
            .last_transition_time,
        Some(t(1))
    );
    set_spec(&mut w, false, false);
    let plan = w.step(t(5));
    assert_eq!(names(&plan.create), ["etl-1.b.1"]);
    let resumed = condition(w.status(), "Suspended").unwrap();
    assert_eq!(resumed.status, ConditionStatus::False);
    assert_eq!(resumed.reason.as_deref(), Some("Resumed"));
    assert_eq!(reasons(&plan), ["Resumed"]);
}

#[test]
fn a_retry_due_while_suspended_waits_for_the_resume() {
    let mut w = World::new(json!({"tasks": [
        {"name": "a", "retries": {"limit": 1, "backoff": {"initialSeconds": 1}}},
    ]}));
    w.step(t(0));
    w.show_jobs(t(0));
    set_spec(&mut w, true, false);
    w.pod("etl-1.a.1", failed_pod(0, 1, 1, "Error"));
    w.step(t(2));
    let plan = w.step(t(10));
    assert!(
        plan.create.is_empty(),
        "the back-off ended, but the run is suspended"
    );
    set_spec(&mut w, false, false);
    let plan = w.step(t(11));
    assert_eq!(names(&plan.create), ["etl-1.a.2"]);
}

#[test]
fn a_run_created_suspended_starts_but_makes_no_job() {
    let mut w = World::new(json!({"tasks": [{"name": "a"}]}));
    w.run.spec.suspend = true;
    let plan = w.step(t(0));
    assert!(plan.create.is_empty(), "{:?}", names(&plan.create));
    assert_eq!(w.phase(), RunPhase::Running);
    assert_eq!(w.task("a").phase, TaskPhase::Pending);
    assert_eq!(reasons(&plan), ["Started", "Suspended"]);
    set_spec(&mut w, false, false);
    let plan = w.step(t(1));
    assert_eq!(names(&plan.create), ["etl-1.a.1"]);
}

// ---- reruns ----

#[test]
fn a_rerun_records_what_it_reuses_and_makes_jobs_only_for_the_rest() {
    let mut w = World::new(json!({"tasks": [
        {"name": "a"}, {"name": "b", "dependsOn": ["a"]}, {"name": "c", "dependsOn": ["a"]}]}));
    let previous: Vec<TaskStatus> = serde_json::from_value(json!([
        {"name": "a", "phase": "Succeeded", "attempts": 2, "reason": "Completed",
         "outputs": {"k": 1}},
        {"name": "b", "phase": "Failed", "attempts": 1, "reason": "Error"},
        {"name": "c", "phase": "Succeeded", "attempts": 1, "reason": "Completed"},
    ]))
    .unwrap();
    let Resolution::Ready(definition) = &w.definition else {
        unreachable!()
    };
    w.definition = Resolution::Ready(Arc::new(Definition {
        dag: Arc::clone(&definition.dag),
        params: definition.params.clone(),
        pinned: definition.pinned.clone(),
        reuse: Some(crate::kubernetes::definition::Reuse {
            from: "etl-0".into(),
            tasks: previous,
        }),
    }));
    let plan = w.step(t(0));
    assert_eq!(names(&plan.create), ["etl-1.b.1"]);
    for reused in ["a", "c"] {
        let record = w.task(reused);
        assert_eq!(record.phase, TaskPhase::Succeeded, "{reused}");
        assert_eq!(record.reason.as_deref(), Some("Reused"));
        assert_eq!(record.reused_from.as_deref(), Some("etl-0"));
    }
    assert_eq!(w.task("a").attempts, 2);
    // Later reconciles restore from the status, which says it all.
    w.state = None;
    let plan = w.step(t(1));
    assert!(plan.create.is_empty(), "{:?}", names(&plan.create));
}

#[test]
fn a_rerun_of_a_run_still_going_waits_and_looks_again_soon() {
    let mut w = World::new(json!({"tasks": [{"name": "a"}]}));
    w.definition = Resolution::Waiting(
        "RerunSourceRunning",
        "Run \"etl-0\" has not finished".into(),
    );
    let plan = w.step(t(0));
    assert_eq!(w.phase(), RunPhase::Pending);
    assert_eq!(
        w.status().conditions[0].reason.as_deref(),
        Some("RerunSourceRunning")
    );
    assert_eq!(plan.requeue, Some(RERUN_SOURCE_RECHECK));
}

#[test]
fn a_pod_deleted_under_a_running_attempt_is_retried_outside_the_limit() {
    let mut w = World::new(json!({"tasks": [{"name": "a", "retries": {"limit": 0}}]}));
    w.step(t(0));
    w.show_jobs(t(0));
    w.pod("etl-1.a.1", running_pod(1));
    w.step(t(2));
    // The index keeps a Pod deleted before it showed a result as a tombstone.
    let last = w.pods.len() - 1;
    let tombstone =
        crate::kubernetes::index::pod_tombstone(&w.pods[last]).expect("no result: kept");
    w.pods[last] = Arc::new(tombstone);
    let plan = w.step(t(3));
    // The Job is stopped: it must not run the task again with a new Pod.
    assert_eq!(plan.delete, ["etl-1.a.1"]);
    let a = w.task("a");
    assert_eq!(a.reason.as_deref(), Some("PodDeleted"));
    assert_eq!(a.infra_retries, 1);
    assert_eq!(a.phase, TaskPhase::Pending, "retried though the limit is 0");
    let plan = w.step(t(5));
    assert_eq!(names(&plan.create), ["etl-1.a.2"]);
}

#[test]
fn between_full_scans_only_attempts_the_watch_touched_are_looked_at() {
    let mut w = World::new(json!({"tasks": [{"name": "a"}, {"name": "b"}]}));
    w.step(t(0));
    w.show_jobs(t(0));
    w.pod("etl-1.a.1", running_pod(1));
    w.pod("etl-1.b.1", running_pod(1));
    w.step(t(2));
    // From now on the watch says what changed.
    w.touched = Some(HashSet::new());
    w.pod("etl-1.a.1", succeeded_pod(1, 3, ""));
    w.pod("etl-1.b.1", succeeded_pod(1, 3, ""));
    w.step(t(4));
    assert_eq!(
        w.task("a").phase,
        TaskPhase::Running,
        "not touched: not looked at"
    );
    w.touched = Some(HashSet::from(["etl-1.a.1".to_string()]));
    w.step(t(5));
    assert_eq!(w.task("a").phase, TaskPhase::Succeeded);
    assert_eq!(w.task("b").phase, TaskPhase::Running);
    // The periodic full scan catches what the watch did not say.
    w.touched = Some(HashSet::new());
    w.step(t(2 + FULL_SCAN_EVERY.as_secs() as i64));
    assert_eq!(w.task("b").phase, TaskPhase::Succeeded);
    assert_eq!(w.phase(), RunPhase::Succeeded);
}

#[test]
fn a_job_not_made_yet_is_looked_at_whatever_the_watch_says() {
    let tasks: Vec<Value> = (0..MAX_CREATES + 5)
        .map(|i| json!({"name": format!("t{i}")}))
        .collect();
    let mut w = World::new(json!({ "tasks": tasks }));
    let plan = w.step(t(0));
    assert_eq!(plan.create.len(), MAX_CREATES);
    w.show_jobs(t(0));
    w.touched = Some(HashSet::new());
    let plan = w.step(t(1));
    assert_eq!(
        plan.create.len(),
        5,
        "the rest are made though nothing was touched"
    );
}

mod fan_out;
mod workspaces;
