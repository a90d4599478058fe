//! The controller at scale, on the test control plane: Runs of thousands of trivial tasks, and
//! the same number of Jobs created directly as the baseline.
//!
//! - `scale_1000` (part of the normal test run): a layered run of 1,000 tasks must succeed with
//!   one Job per task; prints its row of the table below.
//! - `scale_benchmark` (ignored): for each size, one after another, each in its own namespace
//!   with its own kubelet simulator: `bare-jobs` (N Jobs running `true`, created directly with
//!   [`IN_FLIGHT`] requests in flight, timed until all are Complete), `flat` (a Run of N
//!   independent tasks) and `layered` (layers of [`WIDTH`], each task depending on two of the
//!   layer before), each ork run with its own `ork controller`; and, when asked for, `fan-out`
//!   (a Run of one task fanning out over N items, N at most 10,000, each instance's Job running
//!   `true`). Build the controller in release mode for meaningful numbers:
//!
//! ```text
//! cargo test --release --test scale -- --ignored --nocapture
//! ORK_SCALE_SIZES=1000 cargo test --release --test scale -- --ignored --nocapture
//! ORK_SCALE_SIZES=10000 ORK_SCALE_SHAPES=bare,flat cargo test --release --test scale -- --ignored --nocapture
//! ORK_SCALE_SIZES=10000 ORK_SCALE_SHAPES=bare,fan-out cargo test --release --test scale -- --ignored --nocapture
//! ```
//!
//! Environment:
//! - `ORK_SCALE_SIZES`: task counts, comma-separated (default `1000,10000`).
//! - `ORK_SCALE_SHAPES`: any of `bare`, `flat`, `layered`, `fan-out` (default the first three; `bare` always
//!   runs first for a size, so the others can be compared with it).
//! - `ORK_SCALE_CONTROLLER`: the `ork` binary to run as the controller (default: the one Cargo
//!   built for this test, so a release binary under `cargo test --release`).
//! - `ORK_SCALE_LOG_DIR`: keep each controller's log there, as `controller-SHAPE-N.log`
//!   (default: a temporary directory, removed afterwards); `ORK_LOG` sets what it logs.
//! - `ORK_SCALE_TIMEOUT_SECS`: how long one run may take before it is reported as timed out
//!   (default 120 s + 100 ms per task).
//!
//! The table's columns, per run:
//! - `wall`: from creating the Run (the first Job, for bare Jobs) until a watch sees it finished
//!   (the last Job Complete).
//! - `vs bare`: bare-Jobs time / this run's time for the same N (1.00x = as fast as bare Jobs;
//!   shown only for a run that Succeeded).
//! - `requests/task`: the controller's API requests by verb (`ork_api_requests_total`, all
//!   results), from just before the Run is created until the controller has gone quiet after it
//!   finished, divided by N; `bytes/task` likewise from `ork_api_request_bytes_total`.
//! - `largest`: the largest Run or RunShard (when that resource exists) at any moment, as a
//!   watch delivers it, re-serialised as compact JSON.
//! - `reconcile`: p50/p99 of `ork_reconcile_duration_seconds{kind="run"}` over the run,
//!   interpolated linearly within the histogram's buckets (`>10000` when past the last bound).
//! - `Pod done -> Job`: from a task's last parent Pod seen Succeeded to the task's Job seen,
//!   as one watcher sees both (layered runs only).
//! - `peak RSS`: the controller's `VmHWM` just before it is stopped.
//! - `phase (reason)`: the Run's final phase, the reason of its `Succeeded` condition and its
//!   progress; a timed-out run says so.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use ork::api::{Run, Workflow};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::cluster;
use support::env::install_crds;
use support::kubelet::{Kubelet, KubeletHandle};
use tokio::task::JoinHandle;

/// Tasks per layer of a layered run.
const WIDTH: usize = 100;
/// Create requests in flight at once for the bare-Jobs baseline.
const IN_FLIGHT: usize = 32;
/// How often waits look again.
const POLL: Duration = Duration::from_millis(100);
/// Setting up one run (controller ready, workflow valid, watches listed) takes at most this.
const SETUP_LIMIT: Duration = Duration::from_secs(120);
/// After a run, the controller's request counters must stop moving within this.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// A namespace holding 10,000 Jobs and Pods is gone within this.
const CLEANUP_LIMIT: Duration = Duration::from_secs(900);

/// The tests of this binary load the control plane heavily: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_1000() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let client = client_with_crds().await;
    let row = measure_ork(&client, Shape::Layered, 1000, None).await;
    print_table(std::slice::from_ref(&row));
    assert_eq!(
        (row.phase.as_str(), row.reason.as_str()),
        ("Succeeded", "Succeeded"),
        "{}",
        row.outcome
    );
    assert_eq!(row.jobs, 1000, "one Job per task");
    assert_eq!(row.job_tasks, 1000, "every task has its Job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes of heavy load on the test control plane; see the module doc"]
async fn scale_benchmark() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let client = client_with_crds().await;
    let (sizes, shapes) = (sizes(), shapes());
    println!(
        "scale benchmark: sizes {sizes:?}, shapes {:?}, controller {}",
        shapes.iter().map(|s| s.name()).collect::<Vec<_>>(),
        controller_binary().display()
    );
    let mut rows = Vec::new();
    for &n in &sizes {
        let mut bare = None;
        for &shape in &shapes {
            let row = match shape {
                Shape::Bare => measure_bare(&client, n).await,
                Shape::Flat | Shape::Layered | Shape::FanOut => {
                    measure_ork(&client, shape, n, bare).await
                }
            };
            if shape == Shape::Bare {
                bare = row.wall;
            }
            print_table(std::slice::from_ref(&row));
            rows.push(row);
        }
    }
    println!("\nAll runs:");
    print_table(&rows);
}

// ---------------------------------------------------------------------------------------------
// What to run
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Shape {
    Bare,
    Flat,
    Layered,
    FanOut,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Bare => "bare-jobs",
            Shape::Flat => "flat",
            Shape::Layered => "layered",
            Shape::FanOut => "fan-out",
        }
    }

    fn parse(text: &str) -> Option<Shape> {
        match text {
            "bare" | "bare-jobs" => Some(Shape::Bare),
            "flat" => Some(Shape::Flat),
            "layered" => Some(Shape::Layered),
            "fan-out" => Some(Shape::FanOut),
            _ => None,
        }
    }
}

fn sizes() -> Vec<usize> {
    list_from_env("ORK_SCALE_SIZES", "1000,10000", "a positive number", |s| {
        s.parse().ok().filter(|n| *n > 0)
    })
}

fn shapes() -> Vec<Shape> {
    list_from_env(
        "ORK_SCALE_SHAPES",
        "bare,flat,layered",
        "bare, flat, layered or fan-out",
        Shape::parse,
    )
}

/// A comma-separated list from `var` (or `default`), sorted, without repeats.
fn list_from_env<T: Ord>(
    var: &str,
    default: &str,
    expected: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Vec<T> {
    let text = std::env::var(var).unwrap_or_else(|_| default.to_string());
    let mut items: Vec<T> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse(s).unwrap_or_else(|| panic!("{var}: {s:?} is not {expected}")))
        .collect();
    items.sort();
    items.dedup();
    assert!(!items.is_empty(), "{var} names nothing to run");
    items
}

fn controller_binary() -> PathBuf {
    std::env::var_os("ORK_SCALE_CONTROLLER")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ork")))
}

/// How long one run of `n` tasks may take.
fn run_limit(n: usize) -> Duration {
    match std::env::var("ORK_SCALE_TIMEOUT_SECS") {
        Ok(secs) => Duration::from_secs(
            secs.parse()
                .unwrap_or_else(|_| panic!("ORK_SCALE_TIMEOUT_SECS: {secs:?} is not seconds")),
        ),
        Err(_) => Duration::from_secs(120) + Duration::from_millis(100) * n as u32,
    }
}

/// The name of task number `k`: `t<k>`, `l<layer>-t<i>` in a layered run, `p[k]` (an instance)
/// in a fan-out.
fn task_name(shape: Shape, k: usize) -> String {
    match shape {
        Shape::Layered => format!("l{}-t{}", k / WIDTH, k % WIDTH),
        Shape::FanOut => format!("p[{k}]"),
        Shape::Bare | Shape::Flat => format!("t{k}"),
    }
}

/// What task number `k` depends on: in a layered run, two neighbours of the layer before.
fn parents(shape: Shape, k: usize) -> Vec<String> {
    if shape != Shape::Layered || k < WIDTH {
        return Vec::new();
    }
    let (layer, i) = (k / WIDTH, k % WIDTH);
    let before = (layer - 1) * WIDTH;
    vec![
        task_name(shape, before + i),
        task_name(shape, before + (i + 1) % WIDTH),
    ]
}

fn workflow(name: &str, shape: Shape, n: usize) -> Value {
    if shape == Shape::FanOut {
        assert!(n <= 10_000, "a fan-out list holds at most 10,000 items");
        let items: Vec<usize> = (0..n).collect();
        return json!({
            "apiVersion": "ork.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
            "spec": {"defaults": {"image": "busybox"}, "tasks": [
                {"name": "p", "forEach": {"items": items}, "command": ["true"]},
            ]},
        });
    }
    let tasks: Vec<Value> = (0..n)
        .map(|k| {
            let mut task = json!({"name": task_name(shape, k), "command": ["true"]});
            let deps = parents(shape, k);
            if !deps.is_empty() {
                task["dependsOn"] = json!(deps);
            }
            task
        })
        .collect();
    json!({
        "apiVersion": "ork.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
        "spec": {"defaults": {"image": "busybox"}, "tasks": tasks},
    })
}

/// A Job like the controller's for a task running `true` (`src/kubernetes/job.rs`): same
/// labels, `backoffLimit`, restart policy, container name, environment and termination message
/// settings; no owner.
fn bare_job(run: &str, k: usize) -> Job {
    let task = task_name(Shape::Bare, k);
    let labels = json!({
        "ork.dev/run": run, "ork.dev/task": task, "ork.dev/attempt": "1",
        "app.kubernetes.io/managed-by": "ork",
    });
    let env = [
        ("ORK_WORKFLOW", run),
        ("ORK_RUN", run),
        ("ORK_TASK", &task),
        ("ORK_ATTEMPT", "1"),
        ("ORK_OUTPUT", "/dev/termination-log"),
        ("ORK_INPUT_JSON", "{}"),
    ]
    .map(|(name, value)| json!({"name": name, "value": value}));
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": format!("{run}.{task}.1"), "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "task", "image": "busybox", "command": ["true"], "env": env,
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                    }],
                },
            },
        },
    }))
    .expect("a Job")
}

// ---------------------------------------------------------------------------------------------
// One row of the table
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct Row {
    shape: &'static str,
    tasks: usize,
    /// `None` when the run did not finish in time.
    wall: Option<Duration>,
    /// The bare-Jobs time for the same N, if measured.
    bare: Option<Duration>,
    /// Per verb, over the run.
    requests: BTreeMap<String, f64>,
    bytes: Option<f64>,
    largest: Option<usize>,
    /// Seconds.
    reconcile: Option<(Quantile, Quantile)>,
    /// Milliseconds.
    handoff: Option<(f64, f64)>,
    peak_kib: Option<u64>,
    /// The Run's final phase and the reason of its `Succeeded` condition (`Complete` for bare
    /// Jobs), empty if never seen.
    phase: String,
    reason: String,
    /// What the last column shows.
    outcome: String,
    /// Jobs of the run after it finished, and the distinct tasks they belong to.
    jobs: usize,
    job_tasks: usize,
    /// Lines printed under the row.
    notes: Vec<String>,
}

const COLUMNS: [(&str, Align); 11] = [
    ("shape", Align::Left),
    ("tasks", Align::Right),
    ("wall", Align::Right),
    ("vs bare", Align::Right),
    ("requests/task", Align::Left),
    ("bytes/task", Align::Right),
    ("largest", Align::Right),
    ("reconcile p50/p99", Align::Right),
    ("Pod done -> Job p50/p99", Align::Right),
    ("peak RSS", Align::Right),
    ("phase (reason)", Align::Left),
];

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

impl Row {
    fn cells(&self) -> [String; COLUMNS.len()] {
        let dash = || "-".to_string();
        let per_task = |x: f64| x / self.tasks as f64;
        let requests = if self.requests.is_empty() {
            dash()
        } else {
            let verbs: Vec<String> = self
                .requests
                .iter()
                .map(|(verb, n)| match per_task(*n) {
                    x if x < 0.01 => format!("{verb} {x:.4}"),
                    x => format!("{verb} {x:.2}"),
                })
                .collect();
            verbs.join(" ")
        };
        // Only a run that did all the work compares with bare Jobs.
        let vs_bare = match (self.shape, self.phase.as_str(), self.bare, self.wall) {
            ("bare-jobs", _, _, Some(_)) => "base".to_string(),
            (_, "Succeeded", Some(bare), Some(wall)) => {
                format!("{:.2}x", bare.as_secs_f64() / wall.as_secs_f64())
            }
            _ => dash(),
        };
        [
            self.shape.to_string(),
            self.tasks.to_string(),
            self.wall
                .map_or_else(dash, |w| format!("{:.1} s", w.as_secs_f64())),
            vs_bare,
            requests,
            self.bytes.map_or_else(dash, |b| bytes(per_task(b))),
            self.largest.map_or_else(dash, |b| bytes(b as f64)),
            self.reconcile
                .map_or_else(dash, |(p50, p99)| format!("{} / {} ms", p50.ms(), p99.ms())),
            self.handoff
                .map_or_else(dash, |(p50, p99)| format!("{p50:.0} / {p99:.0} ms")),
            self.peak_kib
                .map_or_else(dash, |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            self.outcome.clone(),
        ]
    }
}

fn bytes(n: f64) -> String {
    match n {
        n if n >= 1024.0 * 1024.0 => format!("{:.2} MiB", n / 1024.0 / 1024.0),
        n if n >= 1024.0 => format!("{:.1} KiB", n / 1024.0),
        n => format!("{n:.0} B"),
    }
}

/// The rows under one header, columns as wide as their widest cell, then each row's notes.
fn print_table(rows: &[Row]) {
    let cells: Vec<[String; COLUMNS.len()]> = rows.iter().map(Row::cells).collect();
    let widths: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (title, _))| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .chain([title.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |texts: Vec<&str>| {
        let padded: Vec<String> = texts
            .iter()
            .zip(&widths)
            .zip(COLUMNS.iter().map(|(_, align)| align))
            .map(|((text, width), align)| match align {
                Align::Left => format!("{text:<width$}"),
                Align::Right => format!("{text:>width$}"),
            })
            .collect();
        println!("{}", padded.join(" | ").trim_end());
    };
    println!();
    line(COLUMNS.iter().map(|(title, _)| *title).collect());
    println!(
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-")
    );
    for row in &cells {
        line(row.iter().map(String::as_str).collect());
    }
    for row in rows.iter().filter(|r| !r.notes.is_empty()) {
        println!("{} {}:", row.shape, row.tasks);
        for note in &row.notes {
            println!("  {note}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring an ork run
// ---------------------------------------------------------------------------------------------

/// What the watches of one ork run saw.
#[derive(Default)]
struct Seen {
    /// Watches past their initial list.
    ready: usize,
    /// The largest Run or RunShard so far, in bytes, and which it was.
    largest: usize,
    largest_of: String,
    /// The run's status as last seen.
    run: RunState,
    /// When the run was first seen in a final phase.
    finished: Option<Instant>,
    /// Task → when its first Job was seen.
    jobs: HashMap<String, Instant>,
    /// Task → when its Pod was first seen Succeeded.
    pods_done: HashMap<String, Instant>,
}

#[derive(Clone, Debug, Default)]
struct RunState {
    phase: String,
    reason: String,
    message: String,
    progress: String,
}

impl RunState {
    fn of(status: &Value) -> RunState {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let condition = status["conditions"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["type"] == "Succeeded"))
            .unwrap_or(&Value::Null);
        RunState {
            phase: text(&status["phase"]),
            reason: text(&condition["reason"]),
            message: text(&condition["message"]),
            progress: text(&status["progress"]),
        }
    }

    fn is_final(&self) -> bool {
        matches!(self.phase.as_str(), "Succeeded" | "Failed" | "Cancelled")
    }

    fn describe(&self) -> String {
        let mut text = format!("{} ({})", self.phase, self.reason);
        if !self.progress.is_empty() {
            text.push_str(&format!(" {} done", self.progress));
        }
        text
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One ork run of `shape` with `n` tasks in its own namespace, with its own node and
/// controller; `bare` is the bare-Jobs time for the same N.
async fn measure_ork(client: &Client, shape: Shape, n: usize, bare: Option<Duration>) -> Row {
    let name = format!("{}-{n}", shape.name());
    let rig = Rig::new(client, &format!("scale-{name}")).await;
    let workflows: Api<Workflow> = Api::namespaced(client.clone(), &rig.ns);
    let definition: Workflow =
        serde_json::from_value(workflow(&name, shape, n)).expect("a Workflow");
    // Created directly: `kubectl apply` would add a copy of it in an annotation.
    workflows
        .create(&PostParams::default(), &definition)
        .await
        .unwrap_or_else(|e| panic!("create workflow {name}: {e}"));

    let log = match std::env::var_os("ORK_SCALE_LOG_DIR") {
        Some(dir) => PathBuf::from(dir).join(format!("controller-{name}.log")),
        None => rig.work.path().join("controller.log"),
    };
    let controller = Controller::start(&controller_binary(), &rig.kubeconfig, &rig.ns, &log);
    let ready = until(SETUP_LIMIT, || {
        let controller = &controller;
        async move {
            controller
                .get("/readyz")
                .await
                .is_some_and(|(code, _)| code == 200)
        }
    })
    .await;
    assert!(ready, "controller not ready (log: {})", log.display());
    let valid = until(SETUP_LIMIT, || {
        let workflows = workflows.clone();
        let name = name.clone();
        async move { workflows.get(&name).await.is_ok_and(|w| is_valid(&w)) }
    })
    .await;
    assert!(valid, "workflow {name} not Valid (log: {})", log.display());

    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut watches = vec![spawn_watch(
        Api::<DynamicObject>::namespaced_with(client.clone(), &rig.ns, &run_resource()),
        seen.clone(),
        {
            let name = name.clone();
            move |seen, run| {
                note_size(seen, &run);
                if run.name_any() == name {
                    seen.run = RunState::of(&run.data["status"]);
                    if seen.run.is_final() && seen.finished.is_none() {
                        seen.finished = Some(Instant::now());
                    }
                }
            }
        },
    )];
    if let Some(shards) = run_shard_resource(client).await {
        watches.push(spawn_watch(
            Api::<DynamicObject>::namespaced_with(client.clone(), &rig.ns, &shards),
            seen.clone(),
            |seen, shard| note_size(seen, &shard),
        ));
    }
    if shape == Shape::Layered {
        watches.push(spawn_watch(rig.api::<Job>(), seen.clone(), |seen, job| {
            if let Some(task) = job.labels().get("ork.dev/task") {
                seen.jobs.entry(task.clone()).or_insert_with(Instant::now);
            }
        }));
        watches.push(spawn_watch(rig.api::<Pod>(), seen.clone(), |seen, pod| {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase == Some("Succeeded")
                && let Some(task) = pod.labels().get("ork.dev/task")
            {
                seen.pods_done
                    .entry(task.clone())
                    .or_insert_with(Instant::now);
            }
        }));
    }
    let want = watches.len();
    let listed = until(SETUP_LIMIT, || {
        let ready = lock(&seen).ready;
        async move { ready == want }
    })
    .await;
    assert!(listed, "the watches did not start");

    let before = controller.scrape().await.unwrap_or_default();
    let run: Run = serde_json::from_value(json!({
        "apiVersion": "ork.dev/v1alpha1", "kind": "Run",
        "metadata": {"name": name},
        "spec": {"workflowRef": {"name": name}},
    }))
    .expect("a Run");
    let created = Instant::now();
    rig.api::<Run>()
        .create(&PostParams::default(), &run)
        .await
        .unwrap_or_else(|e| panic!("create run {name}: {e}"));
    let limit = run_limit(n);
    until(limit, || {
        let finished = lock(&seen).finished.is_some();
        async move { finished }
    })
    .await;

    let after = controller.settled_scrape().await;
    let peak_kib = controller.peak_kib();
    controller.stop().await;
    for watch in &watches {
        watch.abort();
    }
    let job_tasks = task_labels(&rig.api::<Job>(), &name).await;

    let measured = OrkMeasures {
        shape,
        n,
        bare,
        created,
        limit,
        cost: after.as_ref().map(|after| after.since(&before)),
        peak_kib,
        job_tasks,
    };
    let mut row = ork_row(&measured, &lock(&seen));
    row.notes
        .push(format!("cleanup took {}", rig.teardown().await));
    if after.is_none() {
        row.notes.push(format!(
            "no metrics from the controller (log: {})",
            log.display()
        ));
    }
    row
}

/// What was measured of an ork run besides what its watches saw.
struct OrkMeasures {
    shape: Shape,
    n: usize,
    bare: Option<Duration>,
    /// When the Run was created.
    created: Instant,
    limit: Duration,
    /// The controller's metrics over the run.
    cost: Option<Scrape>,
    peak_kib: Option<u64>,
    /// The `ork.dev/task` label of each of the run's Jobs.
    job_tasks: Vec<String>,
}

fn ork_row(m: &OrkMeasures, seen: &Seen) -> Row {
    let tasks: HashSet<String> = (0..m.n).map(|k| task_name(m.shape, k)).collect();
    let cost = m.cost.as_ref();
    let mut row = Row {
        shape: m.shape.name(),
        tasks: m.n,
        wall: seen.finished.map(|at| at.duration_since(m.created)),
        bare: m.bare,
        requests: cost.map(|c| c.requests.clone()).unwrap_or_default(),
        bytes: cost.map(|c| c.bytes),
        largest: (seen.largest > 0).then_some(seen.largest),
        reconcile: cost.and_then(|c| {
            Some((
                quantile(&c.run_buckets, 0.5)?,
                quantile(&c.run_buckets, 0.99)?,
            ))
        }),
        handoff: handoff(m.shape, m.n, &seen.jobs, &seen.pods_done),
        peak_kib: m.peak_kib,
        phase: seen.run.phase.clone(),
        reason: seen.run.reason.clone(),
        outcome: seen.run.describe(),
        jobs: m.job_tasks.len(),
        job_tasks: m
            .job_tasks
            .iter()
            .filter(|t| tasks.contains(*t))
            .collect::<HashSet<_>>()
            .len(),
        notes: Vec::new(),
    };
    if seen.finished.is_none() {
        row.outcome = format!(
            "timed out after {}s: {}",
            m.limit.as_secs(),
            seen.run.describe()
        );
    }
    if seen.run.phase != "Succeeded" && !seen.run.message.is_empty() {
        row.notes.push(format!("message: {}", seen.run.message));
    }
    if seen.largest > 0 {
        row.notes.push(format!(
            "largest object: {} ({} bytes)",
            seen.largest_of, seen.largest
        ));
    }
    row.notes.push(format!("Jobs: {}", row.jobs));
    if let Some(cost) = cost.filter(|c| !c.unsuccessful.is_empty()) {
        let counts: Vec<String> = cost
            .unsuccessful
            .iter()
            .map(|(what, n)| format!("{what} {n}"))
            .collect();
        row.notes.push(format!(
            "controller requests that did not succeed: {}",
            counts.join(", ")
        ));
    }
    row
}

fn is_valid(workflow: &Workflow) -> bool {
    let status = serde_json::to_value(&workflow.status).unwrap_or_default();
    status["conditions"].as_array().is_some_and(|all| {
        all.iter()
            .any(|c| c["type"] == "Valid" && c["status"] == "True")
    })
}

fn note_size(seen: &mut Seen, object: &DynamicObject) {
    let size = serde_json::to_vec(object).map_or(0, |json| json.len());
    if size > seen.largest {
        seen.largest = size;
        let kind = object.types.as_ref().map_or("?", |t| t.kind.as_str());
        seen.largest_of = format!("{kind} {}", object.name_any());
    }
}

fn run_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("ork.dev", "v1alpha1", "Run"))
}

/// `runshards.ork.dev`, if the cluster has that resource: its served storage version.
async fn run_shard_resource(client: &Client) -> Option<ApiResource> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get_opt("runshards.ork.dev").await.ok()??;
    let versions = &crd.spec.versions;
    let version = versions
        .iter()
        .find(|v| v.storage && v.served)
        .or_else(|| versions.iter().find(|v| v.served))?;
    Some(ApiResource {
        api_version: format!("{}/{}", crd.spec.group, version.name),
        group: crd.spec.group.clone(),
        version: version.name.clone(),
        kind: crd.spec.names.kind.clone(),
        plural: crd.spec.names.plural.clone(),
    })
}

/// The `ork.dev/task` labels of the run's Jobs.
async fn task_labels(jobs: &Api<Job>, run: &str) -> Vec<String> {
    let selector = format!("ork.dev/run={run}");
    let mut params = ListParams::default().labels(&selector).limit(500);
    let mut tasks = Vec::new();
    loop {
        let page = jobs
            .list(&params)
            .await
            .unwrap_or_else(|e| panic!("list the Jobs of {run}: {e}"));
        // An instance's Job is named for the instance, as its status entry is.
        tasks.extend(page.items.iter().filter_map(|job| {
            let task = job.labels().get("ork.dev/task")?;
            Some(match job.labels().get("ork.dev/instance") {
                Some(index) => format!("{task}[{index}]"),
                None => task.clone(),
            })
        }));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return tasks,
        }
    }
}

/// p50 and p99 of the time from a task's last parent Pod seen Succeeded to its Job seen, in
/// milliseconds (nearest rank); `None` without samples (a flat run).
fn handoff(
    shape: Shape,
    n: usize,
    jobs: &HashMap<String, Instant>,
    pods_done: &HashMap<String, Instant>,
) -> Option<(f64, f64)> {
    let mut gaps: Vec<f64> = (0..n)
        .filter_map(|k| {
            let job = jobs.get(&task_name(shape, k))?;
            let last_parent = parents(shape, k)
                .iter()
                .filter_map(|p| pods_done.get(p))
                .max()?;
            Some(job.saturating_duration_since(*last_parent).as_secs_f64() * 1e3)
        })
        .collect();
    gaps.sort_by(f64::total_cmp);
    let rank = |p: f64| gaps[((gaps.len() - 1) as f64 * p).round() as usize];
    (!gaps.is_empty()).then(|| (rank(0.5), rank(0.99)))
}

// ---------------------------------------------------------------------------------------------
// Measuring bare Jobs
// ---------------------------------------------------------------------------------------------

/// What the watches of the bare-Jobs run saw.
#[derive(Default)]
struct BareSeen {
    ready: usize,
    complete: HashSet<String>,
    failed: HashSet<String>,
    last_complete: Option<Instant>,
    pods: HashSet<String>,
    last_pod: Option<Instant>,
    pods_succeeded: HashSet<String>,
    last_pod_succeeded: Option<Instant>,
}

/// N Jobs running `true`, created directly, timed until all are Complete.
async fn measure_bare(client: &Client, n: usize) -> Row {
    let name = format!("bare-{n}");
    let rig = Rig::new(client, &format!("scale-{name}")).await;
    let seen = Arc::new(Mutex::new(BareSeen::default()));
    let watches = [
        spawn_watch(rig.api::<Job>(), seen.clone(), |seen, job| {
            let conditions = job
                .status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten());
            for c in conditions.filter(|c| c.status == "True") {
                let set = match c.type_.as_str() {
                    "Complete" => &mut seen.complete,
                    "Failed" => &mut seen.failed,
                    _ => continue,
                };
                if set.insert(job.name_any()) {
                    seen.last_complete = Some(Instant::now());
                }
            }
        }),
        spawn_watch(rig.api::<Pod>(), seen.clone(), |seen, pod| {
            if seen.pods.insert(pod.name_any()) {
                seen.last_pod = Some(Instant::now());
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase == Some("Succeeded") && seen.pods_succeeded.insert(pod.name_any()) {
                seen.last_pod_succeeded = Some(Instant::now());
            }
        }),
    ];
    let want = watches.len();
    let listed = until(SETUP_LIMIT, || {
        let ready = lock(&seen).ready;
        async move { ready == want }
    })
    .await;
    assert!(listed, "the watches did not start");

    let jobs = rig.api::<Job>();
    let started = Instant::now();
    let created = futures::stream::iter(0..n)
        .map(|k| create_job(&jobs, bare_job(&name, k)))
        .buffer_unordered(IN_FLIGHT)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    let creating = started.elapsed();
    let limit = run_limit(n);
    let done = until(limit, || {
        let seen = lock(&seen);
        let over = seen.complete.len() + seen.failed.len() >= created;
        async move { over }
    })
    .await;
    for watch in &watches {
        watch.abort();
    }

    let measured = BareMeasures {
        n,
        started,
        creating,
        created,
        done,
        limit,
    };
    let mut row = bare_row(&measured, &lock(&seen));
    row.notes
        .push(format!("cleanup took {}", rig.teardown().await));
    row
}

/// What was measured of the bare-Jobs run besides what its watches saw.
struct BareMeasures {
    n: usize,
    /// When the first Job was created.
    started: Instant,
    /// How long creating them all took.
    creating: Duration,
    /// Jobs created.
    created: usize,
    /// Whether all finished in time.
    done: bool,
    limit: Duration,
}

fn bare_row(m: &BareMeasures, seen: &BareSeen) -> Row {
    let since = |at: Option<Instant>| {
        at.map_or("-".to_string(), |at| {
            format!("{:.1} s", at.duration_since(m.started).as_secs_f64())
        })
    };
    let mut outcome = format!("Complete {}/{}", seen.complete.len(), m.n);
    if !seen.failed.is_empty() {
        outcome.push_str(&format!(", Failed {}", seen.failed.len()));
    }
    if !m.done {
        outcome = format!("timed out after {}s: {outcome}", m.limit.as_secs());
    }
    Row {
        shape: Shape::Bare.name(),
        tasks: m.n,
        wall: m
            .done
            .then(|| seen.last_complete.map(|at| at.duration_since(m.started)))
            .flatten(),
        phase: if m.done && seen.failed.is_empty() {
            "Complete".to_string()
        } else {
            String::new()
        },
        outcome,
        jobs: m.created,
        job_tasks: m.created,
        notes: vec![format!(
            "{} Jobs created in {:.1} s ({:.0}/s, {IN_FLIGHT} in flight); last Pod created at \
             {}, last Pod Succeeded at {}, last Job finished at {}",
            m.created,
            m.creating.as_secs_f64(),
            m.created as f64 / m.creating.as_secs_f64(),
            since(seen.last_pod),
            since(seen.last_pod_succeeded),
            since(seen.last_complete),
        )],
        ..Row::default()
    }
}

/// Creates `job`, retrying what may pass later (throttling, server errors); whether it exists.
async fn create_job(jobs: &Api<Job>, job: Job) -> bool {
    let mut pause = Duration::from_millis(100);
    for _ in 0..10 {
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => return true,
            Err(kube::Error::Api(status)) if status.code == 409 => return true,
            Err(kube::Error::Api(status)) if status.code < 429 => {
                eprintln!("creating Job {}: {status}", job.name_any());
                return false;
            }
            Err(err) => eprintln!("creating Job {} (retrying): {err}", job.name_any()),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
    false
}

// ---------------------------------------------------------------------------------------------
// The rig: namespace, node, controller, watches, metrics
// ---------------------------------------------------------------------------------------------

async fn client_with_crds() -> Client {
    let kubeconfig = tokio::task::spawn_blocking(cluster::kubeconfig)
        .await
        .expect("find the test cluster");
    tokio::task::spawn_blocking(move || install_crds(&kubeconfig))
        .await
        .expect("install the CRDs");
    cluster::client().await
}

/// A namespace with its kubelet simulator. [`Rig::teardown`] deletes the namespace and waits
/// until it is gone; dropped without that (a failed test), it deletes it in the background.
struct Rig {
    client: Client,
    kubeconfig: PathBuf,
    ns: String,
    work: tempfile::TempDir,
    kubelet: Option<KubeletHandle>,
}

impl Rig {
    async fn new(client: &Client, prefix: &str) -> Rig {
        let kubeconfig = tokio::task::spawn_blocking(cluster::kubeconfig)
            .await
            .expect("find the test cluster");
        let ns = cluster::create_test_namespace(client, prefix).await;
        let work = tempfile::tempdir().expect("a work directory");
        let kubelet = Kubelet::start(client.clone(), &ns, work.path().join("node"));
        Rig {
            client: client.clone(),
            kubeconfig,
            ns,
            work,
            kubelet: Some(kubelet),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Deletes the namespace and waits until it is gone (the node keeps confirming Pod
    /// deletions meanwhile); says how long that took.
    async fn teardown(mut self) -> String {
        let started = Instant::now();
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        if let Err(err) = namespaces
            .delete(&self.ns, &DeleteParams::background())
            .await
        {
            eprintln!("deleting namespace {}: {err}", self.ns);
        }
        let gone = until(CLEANUP_LIMIT, || {
            let namespaces = namespaces.clone();
            let ns = self.ns.clone();
            async move { matches!(namespaces.get_opt(&ns).await, Ok(None)) }
        })
        .await;
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.stop().await;
        }
        let took = format!("{:.1} s", started.elapsed().as_secs_f64());
        if gone {
            took
        } else {
            format!("more than {took}: namespace {} is still there", self.ns)
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if self.kubelet.is_none() {
            return; // torn down
        }
        drop(self.kubelet.take());
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "namespace", &self.ns, "--wait=false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// An `ork controller` for one namespace, with its metrics port.
struct Controller {
    child: Option<Child>,
    port: u16,
}

impl Controller {
    fn start(binary: &Path, kubeconfig: &Path, ns: &str, log: &Path) -> Controller {
        let port = cluster::free_port();
        let log = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let child = Command::new(binary)
            .arg("controller")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", ns, "--log-format", "json"])
            .arg("--metrics-address")
            .arg(format!("127.0.0.1:{port}"))
            .env(
                "ORK_LOG",
                std::env::var("ORK_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("POD_NAME", "scale")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        Controller {
            child: Some(child),
            port,
        }
    }

    async fn get(&self, path: &'static str) -> Option<(u16, String)> {
        let port = self.port;
        tokio::task::spawn_blocking(move || http_get(port, path))
            .await
            .ok()?
    }

    async fn scrape(&self) -> Option<Scrape> {
        match self.get("/metrics").await? {
            (200, body) => Some(parse_metrics(&body)),
            _ => None,
        }
    }

    /// The metrics once the request counters stopped moving for a second (work the finished
    /// run left, such as Jobs finishing after a failure, counts), or after [`SETTLE_LIMIT`].
    async fn settled_scrape(&self) -> Option<Scrape> {
        let deadline = Instant::now() + SETTLE_LIMIT;
        let mut last = self.scrape().await?;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let next = self.scrape().await?;
            if next.requests == last.requests || Instant::now() >= deadline {
                return Some(next);
            }
            last = next;
        }
    }

    /// Peak resident memory so far, in KiB (Linux `VmHWM`).
    fn peak_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let exited = until(Duration::from_secs(10), || {
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            async move { exited }
        })
        .await;
        if !exited {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Watches `api`, calling `on` with each object as delivered; counts itself in `ready` once
/// its initial list is done.
fn spawn_watch<K, S>(
    api: Api<K>,
    seen: Arc<Mutex<S>>,
    on: impl Fn(&mut S, K) + Send + 'static,
) -> JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    S: Readiness + Send + 'static,
{
    tokio::spawn(async move {
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut counted = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(object) | Event::InitApply(object)) => on(&mut lock(&seen), object),
                Ok(Event::InitDone) if !counted => {
                    counted = true;
                    *lock(&seen).ready() += 1;
                }
                Ok(_) => {}
                Err(err) => eprintln!("watch error (retrying): {err}"),
            }
        }
    })
}

/// Where a watch counts itself once listed.
trait Readiness {
    fn ready(&mut self) -> &mut usize;
}

impl Readiness for Seen {
    fn ready(&mut self) -> &mut usize {
        &mut self.ready
    }
}

impl Readiness for BareSeen {
    fn ready(&mut self) -> &mut usize {
        &mut self.ready
    }
}

/// Polls `check` until it holds (true) or `limit` passes (false).
async fn until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `GET path` on a local port: `(status code, body)`, or `None` if nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((code, body))
}

// ---------------------------------------------------------------------------------------------
// The controller's metrics
// ---------------------------------------------------------------------------------------------

/// What the table takes from one `/metrics` scrape.
#[derive(Clone, Debug, Default, PartialEq)]
struct Scrape {
    /// `ork_api_requests_total` by verb, all results together.
    requests: BTreeMap<String, f64>,
    /// `ork_api_request_bytes_total`, all verbs together.
    bytes: f64,
    /// `ork_api_requests_total` that did not succeed, by `verb result` (e.g. `create 4xx`).
    unsuccessful: BTreeMap<String, f64>,
    /// `ork_reconcile_duration_seconds_bucket{kind="run"}`: (upper bound, cumulative count),
    /// ascending, `+Inf` last.
    run_buckets: Vec<(f64, f64)>,
}

fn parse_metrics(body: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, labels(rest.trim_end_matches('}'))),
            None => (series, BTreeMap::new()),
        };
        match name {
            "ork_api_requests_total" => {
                if let Some(verb) = labels.get("verb") {
                    *scrape.requests.entry(verb.to_string()).or_default() += value;
                    match labels.get("result") {
                        Some(&"2xx") | None => {}
                        Some(result) => {
                            let key = format!("{verb} {result}");
                            *scrape.unsuccessful.entry(key).or_default() += value;
                        }
                    }
                }
            }
            "ork_api_request_bytes_total" => scrape.bytes += value,
            "ork_reconcile_duration_seconds_bucket" if labels.get("kind") == Some(&"run") => {
                let bound = match labels.get("le") {
                    Some(&"+Inf") => Some(f64::INFINITY),
                    Some(le) => le.parse().ok(),
                    None => None,
                };
                if let Some(bound) = bound {
                    scrape.run_buckets.push((bound, value));
                }
            }
            _ => {}
        }
    }
    scrape.run_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    scrape
}

/// `a="x",b="y"` → `{a: x, b: y}` (label values here hold no commas or quotes).
fn labels(text: &str) -> BTreeMap<&str, &str> {
    text.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.trim(), value.trim().trim_matches('"')))
        })
        .collect()
}

impl Scrape {
    /// What happened between `before` and this scrape.
    fn since(&self, before: &Scrape) -> Scrape {
        let minus = |now: &BTreeMap<String, f64>, then: &BTreeMap<String, f64>| {
            now.iter()
                .map(|(key, n)| (key.clone(), n - then.get(key).unwrap_or(&0.0)))
                .filter(|(_, n)| *n > 0.0)
                .collect()
        };
        let earlier = |bound: f64| {
            before
                .run_buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0.0, |(_, n)| *n)
        };
        Scrape {
            requests: minus(&self.requests, &before.requests),
            bytes: self.bytes - before.bytes,
            unsuccessful: minus(&self.unsuccessful, &before.unsuccessful),
            run_buckets: self
                .run_buckets
                .iter()
                .map(|(bound, n)| (*bound, n - earlier(*bound)))
                .collect(),
        }
    }
}

/// A quantile read from a histogram.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Quantile {
    At(f64),
    /// Past the highest finite bound, this one: the histogram cannot say by how much.
    Above(f64),
}

impl Quantile {
    fn ms(self) -> String {
        match self {
            Quantile::At(secs) => format!("{:.1}", secs * 1e3),
            Quantile::Above(secs) => format!(">{:.0}", secs * 1e3),
        }
    }
}

/// The `q` quantile of a cumulative histogram, as Prometheus' `histogram_quantile` computes it:
/// linear within the bucket holding that rank (from 0 for the first bucket); above the highest
/// finite bound if the rank falls in `+Inf`. `None` without observations.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<Quantile> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(Quantile::Above(lower));
            }
            let within = count - below;
            if within <= 0.0 {
                return Some(Quantile::At(lower));
            }
            return Some(Quantile::At(
                lower + (bound - lower) * (rank - below) / within,
            ));
        }
        (lower, below) = (bound, count);
    }
    None
}

// ---------------------------------------------------------------------------------------------
// The harness's own pieces
// ---------------------------------------------------------------------------------------------

#[test]
fn quantiles_interpolate_within_the_bucket() {
    let inf = f64::INFINITY;
    let buckets = [(0.001, 0.0), (0.01, 10.0), (0.1, 20.0), (inf, 20.0)];
    let cases = [
        (0.25, 0.0055), // rank 5 of the 10 in (0.001, 0.01]
        (0.5, 0.01),
        (0.99, 0.0982), // rank 19.8: 9.8 of the 10 in (0.01, 0.1]
    ];
    for (q, expected) in cases {
        let Some(Quantile::At(got)) = quantile(&buckets, q) else {
            panic!("q {q}: no value within the buckets");
        };
        assert!((got - expected).abs() < 1e-12, "q {q}: {got} != {expected}");
    }
    assert_eq!(
        quantile(&[(0.0005, 4.0), (inf, 4.0)], 0.5),
        Some(Quantile::At(0.00025)),
        "the first bucket starts at 0"
    );
    assert_eq!(
        quantile(&[(0.1, 1.0), (10.0, 1.0), (inf, 5.0)], 0.99),
        Some(Quantile::Above(10.0)),
        "past the last bound: above it"
    );
    assert_eq!(Quantile::Above(10.0).ms(), ">10000");
    assert_eq!(Quantile::At(0.0123).ms(), "12.3");
    assert_eq!(quantile(&[(0.1, 0.0), (inf, 0.0)], 0.5), None);
    assert_eq!(quantile(&[], 0.5), None);
}

#[test]
fn metrics_are_read_and_differenced() {
    let scrape = |text: &str| parse_metrics(text);
    let before = scrape(
        "# HELP ork_api_requests_total Kubernetes API requests by verb and result.\n\
         ork_api_requests_total{verb=\"create\",result=\"2xx\"} 3\n\
         ork_api_requests_total{verb=\"list\",result=\"2xx\"} 4\n\
         ork_api_request_bytes_total{verb=\"create\"} 100\n\
         ork_reconcile_duration_seconds_bucket{kind=\"run\",le=\"0.001\"} 1\n\
         ork_reconcile_duration_seconds_bucket{kind=\"run\",le=\"+Inf\"} 2\n",
    );
    let after = scrape(
        "ork_api_requests_total{verb=\"create\",result=\"2xx\"} 10\n\
         ork_api_requests_total{verb=\"create\",result=\"4xx\"} 1\n\
         ork_api_requests_total{verb=\"list\",result=\"2xx\"} 4\n\
         ork_api_requests_total{verb=\"patch\",result=\"error\"} 2\n\
         ork_api_request_bytes_total{verb=\"create\"} 1100\n\
         ork_api_request_bytes_total{verb=\"patch\"} 50\n\
         ork_reconcile_duration_seconds_bucket{kind=\"workflow\",le=\"0.001\"} 9\n\
         ork_reconcile_duration_seconds_bucket{kind=\"run\",le=\"+Inf\"} 12\n\
         ork_reconcile_duration_seconds_bucket{kind=\"run\",le=\"0.001\"} 5\n\
         ork_reconcile_duration_seconds_sum{kind=\"run\"} 0.5\n",
    );
    assert_eq!(after.requests["create"], 11.0, "all results of a verb");
    assert_eq!(after.bytes, 1150.0, "all verbs");
    let cost = after.since(&before);
    assert_eq!(
        cost,
        Scrape {
            requests: BTreeMap::from([("create".into(), 8.0), ("patch".into(), 2.0)]),
            bytes: 1050.0,
            unsuccessful: BTreeMap::from([("create 4xx".into(), 1.0), ("patch error".into(), 2.0)]),
            run_buckets: vec![(0.001, 4.0), (f64::INFINITY, 10.0)],
        }
    );
}

#[test]
fn layered_tasks_depend_on_two_neighbours_of_the_layer_before() {
    let cases = [
        (Shape::Flat, 150, "t150", vec![]),
        (Shape::Layered, 99, "l0-t99", vec![]),
        (Shape::Layered, 100, "l1-t0", vec!["l0-t0", "l0-t1"]),
        (Shape::Layered, 299, "l2-t99", vec!["l1-t99", "l1-t0"]),
    ];
    for (shape, k, name, deps) in cases {
        assert_eq!(task_name(shape, k), name);
        assert_eq!(parents(shape, k), deps, "{name}");
    }
    let spec = workflow("w", Shape::Layered, 250);
    let tasks = spec["spec"]["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 250);
    assert_eq!(tasks[249]["name"], "l2-t49");
    assert_eq!(tasks[249]["dependsOn"], json!(["l1-t49", "l1-t50"]));
    assert_eq!(tasks[0].get("dependsOn"), None);
}
