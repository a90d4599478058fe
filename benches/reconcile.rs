//! The Run reconcile's decision, without an API server: how much work one event costs at 1,000
//! and at 10,000 tasks. A layered run (layers of 100, each task depending on two of the layer
//! before) is driven to the end: every step, ten running tasks' Pods finish, and the decision
//! that follows is timed (observing the run's Jobs and Pods, feeding the engine, the records
//! and summary that changed, the Jobs to create). Writes are taken as done.
//!
//! `cargo bench --bench reconcile`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use ork::api::{PinnedWorkflow, Run, WorkflowSpec};
use ork::compile::{bind_params, compile};
use ork::kubernetes::decide::{Config, Memory, Observed, Plan, decide};
use ork::kubernetes::definition::{Definition, Resolution};
use ork::kubernetes::index::Group;
use ork::kubernetes::state::RunState;
use serde_json::json;

const WIDTH: usize = 100;
const FINISHED_PER_STEP: usize = 10;

fn main() {
    println!(
        "decision per event (10 Pods finished), layered runs of width {WIDTH}, release build:"
    );
    println!(
        "{:>7} {:>7} {:>12} {:>12} {:>12} {:>14}",
        "tasks", "layout", "p50", "p99", "mean", "records/step"
    );
    for tasks in [1_000, 10_000] {
        for inline in [true, false] {
            if inline && tasks > 1_000 {
                continue;
            }
            let (mut times, written) = drive(tasks, inline);
            times.sort();
            let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
            let mean = times.iter().sum::<Duration>() / times.len() as u32;
            println!(
                "{:>7} {:>7} {:>12?} {:>12?} {:>12?} {:>14.1}",
                tasks,
                if inline { "inline" } else { "shards" },
                pct(0.5),
                pct(0.99),
                mean,
                written
            );
        }
    }
}

/// Drives one run to the end; the time of each decision, and records written per decision.
fn drive(tasks: usize, inline: bool) -> (Vec<Duration>, f64) {
    let spec_tasks: Vec<_> = (0..tasks)
        .map(|i| {
            let (layer, k) = (i / WIDTH, i % WIDTH);
            let mut t = json!({"name": format!("l{layer}-t{k}"), "command": ["true"]});
            if layer > 0 {
                t["dependsOn"] = json!([
                    format!("l{}-t{k}", layer - 1),
                    format!("l{}-t{}", layer - 1, (k + 1) % WIDTH)
                ]);
            }
            t
        })
        .collect();
    let spec: WorkflowSpec =
        serde_json::from_value(json!({"defaults": {"image": "i"}, "tasks": spec_tasks})).unwrap();
    let dag = compile(&spec, "spec").unwrap();
    let params = bind_params(&dag, &BTreeMap::new(), "spec.params").unwrap();
    let definition = Resolution::Ready(Arc::new(Definition {
        dag: Arc::new(dag),
        params,
        pinned: PinnedWorkflow {
            spec: Some(spec),
            ..PinnedWorkflow::default()
        },
        reuse: None,
    }));
    let run: Run = serde_json::from_value(json!({
        "apiVersion": "ork.dev/v1alpha1", "kind": "Run",
        "metadata": {"name": "big", "namespace": "ns", "uid": "u", "resourceVersion": "1"},
        "spec": {"workflowRef": {"name": "big"}},
    }))
    .unwrap();
    let config = Config {
        inline_tasks: if inline { tasks } else { 0 },
        max_status_bytes: usize::MAX,
        ..Config::default()
    };
    let mut jobs: Group<Job> = Group::new();
    let mut pods: Group<Pod> = Group::new();
    let mut memory = Memory::default();
    let mut state: Option<RunState> = None;
    let mut now: Timestamp = "2026-11-26T03:00:00Z".parse().unwrap();
    let mut running: Vec<String> = Vec::new();
    let mut times = Vec::new();
    let mut written = 0usize;
    loop {
        let observed = Observed {
            run: &run,
            definition: &definition,
            jobs: &jobs,
            pods: &pods,
            memory: &memory,
            now,
            config: &config,
            touched: None,
        };
        let started = Instant::now();
        let plan: Plan = decide(&mut state, &observed);
        times.push(started.elapsed());
        written += plan.records.len();
        let Some(s) = state.as_mut() else { break };
        s.commit(plan.status.clone(), &plan.records);
        if plan.finished || s.engine.is_finished() {
            break;
        }
        // The Jobs appear at once, each with a running Pod.
        for job in plan.create {
            let name = job.metadata.name.clone().unwrap();
            memory.created.insert(name.clone());
            let mut job = job;
            job.metadata.uid = Some(format!("uid-{name}"));
            jobs.insert(name.clone(), vec![Arc::new(job)]);
            pods.insert(name.clone(), vec![Arc::new(pod(&name, "Running", now))]);
            running.push(name);
        }
        // Ten of the oldest running attempts finish.
        now += SignedDuration::from_millis(100);
        for name in running.drain(..FINISHED_PER_STEP.min(running.len())) {
            pods.insert(name.clone(), vec![Arc::new(pod(&name, "Succeeded", now))]);
        }
    }
    (times, written as f64 / times_len(tasks))
}

fn times_len(tasks: usize) -> f64 {
    (tasks / FINISHED_PER_STEP) as f64
}

fn pod(job: &str, phase: &str, at: Timestamp) -> Pod {
    let state = if phase == "Running" {
        json!({"running": {"startedAt": at}})
    } else {
        json!({"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": at}})
    };
    serde_json::from_value(json!({
        "metadata": {"name": job, "namespace": "ns", "labels": {"ork.dev/run": "big"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job,
                                 "uid": format!("uid-{job}"), "controller": true}]},
        "status": {"phase": phase, "startTime": at,
            "containerStatuses": [{"name": "task", "image": "i", "imageID": "", "ready": false,
                                   "restartCount": 0, "state": state}]},
    }))
    .unwrap()
}
