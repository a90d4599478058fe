//! End-to-end tests of the Kubernetes driver on a real control plane (etcd, kube-apiserver,
//! kube-controller-manager with the real Job controller and garbage collector), with the
//! kubelet simulator running each container as a local process and the `ork controller`
//! binary as the controller. Each test has its own namespace, controller and simulator.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use ork::api::{RunPhase, Workflow};
use serde_json::{Value, json};
use support::cluster::{self, eventually};
use support::env::{Env, LONG, ORK, chain, essence, repo};

/// The final Run of `ork run FILE --output json` on this machine.
fn local_run(file: &Path) -> Value {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(ORK)
        .args([
            "run",
            file.to_str().unwrap(),
            "--output",
            "json",
            "--work-dir",
        ])
        .arg(work.path())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).expect("ork run prints the final Run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_run_on_the_cluster_as_they_run_locally() {
    let env = Env::new("examples").await;
    // (file, run name, the outcome kubectl waits for)
    let examples = [
        ("hello.yaml", "hello-1", "Succeeded"),
        ("diamond.yaml", "diamond-1", "Succeeded"),
        ("failing-branch.yaml", "failing-branch-1", "Succeeded=False"),
        ("retries.yaml", "retries-1", "Succeeded"),
        ("timeout.yaml", "timeout-1", "Succeeded=False"),
        ("finally.yaml", "finally-1", "Succeeded=False"),
        ("conditions.yaml", "conditions-1", "Succeeded"),
        ("retry-policy.yaml", "retry-policy-1", "Succeeded"),
        ("cancel.yaml", "cancel-1", "Succeeded=False"),
        ("rerun.yaml", "rerun-1", "Succeeded=False"),
        ("fan-out.yaml", "fan-out-1", "Succeeded"),
        ("pod-settings.yaml", "pod-settings-1", "Succeeded"),
    ];
    for (file, run, _) in &examples {
        let path = repo(&format!("examples/{file}"));
        env.kubectl_ok(&["apply", "-f", path.to_str().unwrap()], None);
        let workflow = run.trim_end_matches("-1");
        env.create_run(run, workflow, json!({})).await;
    }
    // A Run with generateName (params.yaml) needs `kubectl create`.
    let params = repo("examples/params.yaml");
    let created = env.kubectl_ok(
        &["create", "-f", params.to_str().unwrap(), "-o", "name"],
        None,
    );
    let params_run = created
        .lines()
        .find_map(|l| l.strip_prefix("run.ork.dev/"))
        .expect("kubectl created the Run")
        .to_string();

    for (file, run, condition) in &examples {
        let out = env.kubectl(
            &[
                "wait",
                &format!("--for=condition={condition}"),
                "--timeout=120s",
                &format!("run/{run}"),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "kubectl wait for {run} ({file}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = serde_json::to_value(env.wait_final(run).await).unwrap();
        let local = local_run(&repo(&format!("examples/{file}")));
        assert_eq!(
            essence(&cluster),
            essence(&local),
            "{file}: cluster vs local"
        );
    }
    let cluster = serde_json::to_value(env.wait_final(&params_run).await).unwrap();
    assert_eq!(
        essence(&cluster),
        essence(&local_run(&params)),
        "params.yaml"
    );

    // One Job per attempt, with the contract's shape.
    let jobs = env.jobs_of("retries-1").await;
    let mut names: Vec<String> = jobs.iter().map(|j| j.name_any()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "retries-1.after.1",
            "retries-1.third-time-lucky.1",
            "retries-1.third-time-lucky.2",
            "retries-1.third-time-lucky.3"
        ]
    );
    let job = &jobs[0];
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let owner = &job.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("Run", Some(true)));
    for label in [
        "ork.dev/run",
        "ork.dev/task",
        "ork.dev/attempt",
        "app.kubernetes.io/managed-by",
    ] {
        assert!(job.labels().contains_key(label), "{label}");
    }
    // The timeout is the Pod's own deadline, counted from the Pod's start.
    let timeout_job = env.jobs().get("timeout-1.too-slow.1").await.unwrap();
    let timeout_spec = timeout_job.spec.unwrap();
    assert_eq!(timeout_spec.active_deadline_seconds, None);
    assert_eq!(
        timeout_spec.template.spec.unwrap().active_deadline_seconds,
        Some(1)
    );

    // `kubectl get` shows the printer columns.
    let table = env.kubectl_ok(&["get", "runs.ork.dev"], None);
    assert!(
        table.contains("PHASE") && table.contains("PROGRESS"),
        "{table}"
    );
    assert!(
        table.contains("diamond-1") && table.contains("4/4"),
        "{table}"
    );
    let table = env.kubectl_ok(&["get", "workflows.ork.dev"], None);
    assert!(
        table.contains("TASKS") && table.contains("VALID"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_run_converges_without_duplicates() {
    let mut env = Env::new("restart").await;
    let write = |v: &str| format!("sleep 1; echo '{{\"v\": \"{v}\"}}' > $ORK_OUTPUT");
    let (a, b, c) = (write("a"), write("b"), write("c"));
    env.apply_workflow(&chain("steps", &[("a", &a), ("b", &b), ("c", &c)]))
        .await;
    env.create_run("steps-1", "steps", json!({})).await;
    env.wait_task_running("steps-1", "b").await;
    // The status is written before the Job is created, so wait for b's Pod too: a controller
    // killed between the two is a different scenario (the restart creates the Job).
    let pods = env.pods();
    eventually("b's pod to exist", LONG, || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("ork.dev/task=b"))
                .await
                .ok()?;
            (!list.items.is_empty()).then_some(())
        }
    })
    .await;
    env.kill_controller();
    // b finishes while no controller is running; the simulator reports it to the API server.
    eventually("b's pod to finish without a controller", LONG, || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("ork.dev/task=b"))
                .await
                .ok()?;
            let phase = list.items.first()?.status.as_ref()?.phase.clone()?;
            (phase == "Succeeded").then_some(())
        }
    })
    .await;
    env.start_controller();
    let run = env.wait_final("steps-1").await;
    let status = run.status.unwrap();
    assert_eq!(status.phase, Some(RunPhase::Succeeded));
    for task in &status.tasks {
        assert_eq!(task.attempts, 1, "{}", task.name);
        assert_eq!(task.outputs.as_ref().unwrap()["v"], task.name.as_str());
    }
    let names = env.job_names("steps-1").await;
    assert_eq!(
        names,
        ["steps-1.a.1", "steps-1.b.1", "steps-1.c.1"],
        "one Job per attempt"
    );
    // Every Job made exactly one Pod: nothing was started twice.
    let pods = env
        .pods()
        .list(&ListParams::default().labels("ork.dev/run=steps-1"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_run_removes_its_jobs_and_pods() {
    let env = Env::new("delete").await;
    env.apply_workflow(&chain("long", &[("wait", "sleep 300")]))
        .await;
    env.create_run("long-1", "long", json!({})).await;
    env.wait_task_running("long-1", "wait").await;
    let kubelet = env.kubelet.as_ref().unwrap();
    eventually("the task's process to start", LONG, || {
        let running = !kubelet.running().is_empty();
        async move { running.then_some(()) }
    })
    .await;
    env.kubectl_ok(&["delete", "run.ork.dev", "long-1", "--wait=false"], None);
    let (jobs, pods) = (env.jobs(), env.pods());
    eventually("the run's Jobs and Pods to be gone", LONG, || {
        let (jobs, pods) = (jobs.clone(), pods.clone());
        async move {
            let lp = ListParams::default().labels("ork.dev/run=long-1");
            let j = jobs.list(&lp).await.ok()?.items.len();
            let p = pods.list(&lp).await.ok()?.items.len();
            (j + p == 0).then_some(())
        }
    })
    .await;
    eventually("the task's process to be killed", LONG, || {
        let idle = kubelet.running().is_empty();
        async move { idle.then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_keeps_the_definition_it_started_with() {
    let env = Env::new("pinned").await;
    let first = chain(
        "evolving",
        &[
            ("a", "sleep 2; echo '{\"v\": 1}' > $ORK_OUTPUT"),
            ("b", "true"),
        ],
    );
    env.apply_workflow(&first).await;
    env.create_run("evolving-1", "evolving", json!({})).await;
    env.wait_task_running("evolving-1", "a").await;
    let second = chain(
        "evolving",
        &[
            ("a", "echo '{\"v\": 2}' > $ORK_OUTPUT"),
            ("b", "true"),
            ("c", "true"),
        ],
    );
    env.apply_workflow(&second).await;
    let run = env.wait_final("evolving-1").await;
    let status = run.status.unwrap();
    assert_eq!(status.phase, Some(RunPhase::Succeeded));
    let names: Vec<&str> = status.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["a", "b"],
        "the edit's new task is not part of the running run"
    );
    assert_eq!(status.tasks[0].outputs.as_ref().unwrap()["v"], 1);
    assert_eq!(status.workflow.as_ref().unwrap().generation, Some(1));
    // Deleting the Workflow does not touch a finished or running run either; a new run uses
    // the new definition.
    env.create_run("evolving-2", "evolving", json!({})).await;
    let second_run = env.wait_final("evolving-2").await.status.unwrap();
    assert_eq!(second_run.tasks.len(), 3);
    assert_eq!(second_run.workflow.unwrap().generation, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_workflows_are_reported_not_run() {
    let env = Env::new("invalid").await;
    let bad = json!({
        "apiVersion": "ork.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "bad"},
        "spec": {"defaults": {"image": "busybox"}, "tasks": [
            {"name": "a", "command": ["true"], "dependsOn": ["b"]},
            {"name": "b", "command": ["true"], "dependsOn": ["a"]},
            {"name": "c", "command": ["true"], "dependsOn": ["ghost"]},
        ]},
    });
    env.apply_workflow(&bad).await;
    let workflows: Api<Workflow> = Api::namespaced(env.client.clone(), &env.ns);
    let condition = eventually("the Valid condition", LONG, || {
        let workflows = workflows.clone();
        async move {
            let wf = workflows.get("bad").await.ok()?;
            wf.status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Valid")
        }
    })
    .await;
    assert_eq!(condition.status, ork::api::ConditionStatus::False);
    let message = condition.message.unwrap();
    assert!(
        message.contains("dependency cycle") && message.contains("\"ghost\""),
        "{message}"
    );
    let out = env.kubectl_ok(
        &[
            "wait",
            "--for=condition=Valid=False",
            "--timeout=60s",
            "workflow.ork.dev/bad",
        ],
        None,
    );
    assert!(out.contains("condition met"), "{out}");

    env.create_run("bad-1", "bad", json!({})).await;
    let run = env.wait_final("bad-1").await;
    let status = run.status.unwrap();
    assert_eq!(status.phase, Some(RunPhase::Failed));
    assert_eq!(status.conditions[0].reason.as_deref(), Some("InvalidSpec"));
    assert!(env.jobs_of("bad-1").await.is_empty(), "nothing ran");

    // Unknown parameters are an error too; a missing Workflow keeps the run waiting.
    env.apply_workflow(&chain("fine", &[("a", "true")])).await;
    env.create_run("fine-1", "fine", json!({"nope": "1"})).await;
    let status = env.wait_final("fine-1").await.status.unwrap();
    assert_eq!(status.conditions[0].reason.as_deref(), Some("InvalidSpec"));
    assert!(
        status.conditions[0]
            .message
            .as_deref()
            .unwrap()
            .contains("\"nope\"")
    );
    env.create_run("later-1", "later", json!({})).await;
    let runs = env.runs();
    let reason = eventually("the run to wait for its Workflow", LONG, || {
        let runs = runs.clone();
        async move {
            let run = runs.get("later-1").await.ok()?;
            run.status?.conditions.first()?.reason.clone()
        }
    })
    .await;
    assert_eq!(reason, "WorkflowNotFound");
    env.apply_workflow(&chain("later", &[("a", "true")])).await;
    let status = env.wait_final("later-1").await.status.unwrap();
    assert_eq!(status.phase, Some(RunPhase::Succeeded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_runs_of_one_workflow_do_not_interfere() {
    let env = Env::new("parallel").await;
    let script = "sleep 0.5; echo \"{\\\"run\\\": \\\"$ORK_RUN\\\"}\" > $ORK_OUTPUT";
    env.apply_workflow(&chain("twin", &[("a", script), ("b", script)]))
        .await;
    env.create_run("twin-1", "twin", json!({})).await;
    env.create_run("twin-2", "twin", json!({})).await;
    for run in ["twin-1", "twin-2"] {
        let status = env.wait_final(run).await.status.unwrap();
        assert_eq!(status.phase, Some(RunPhase::Succeeded), "{run}");
        for task in &status.tasks {
            assert_eq!(task.outputs.as_ref().unwrap()["run"], run);
        }
        assert_eq!(env.jobs_of(run).await.len(), 2, "{run}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_disappears_is_a_failed_attempt() {
    let env = Env::new("lost").await;
    let mut workflow = chain(
        "fragile",
        &[("t", "if [ \"$ORK_ATTEMPT\" = 1 ]; then sleep 300; fi")],
    );
    workflow["spec"]["defaults"]["retries"] = json!({"limit": 1, "backoff": {"initialSeconds": 0}});
    env.apply_workflow(&workflow).await;
    env.create_run("fragile-1", "fragile", json!({})).await;
    env.wait_task_running("fragile-1", "t").await;
    env.jobs()
        .delete("fragile-1.t.1", &DeleteParams::background())
        .await
        .unwrap();
    let status = env.wait_final("fragile-1").await.status.unwrap();
    assert_eq!(status.phase, Some(RunPhase::Succeeded));
    assert_eq!(
        status.tasks[0].attempts, 2,
        "the lost attempt counted and was retried"
    );
}

/// A 200-task DAG (10 layers of 20, each task depending on two of the layer before) of trivial
/// tasks. Checks the result and prints what the controller cost: API requests per task by verb,
/// the time from a task's Pod finishing to its dependents' Jobs appearing (p50/p99, as seen by
/// one watcher), and the controller's peak memory. Run alone for clean numbers:
/// `cargo test --test kubernetes two_hundred -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tasks_and_what_they_cost() {
    use futures::StreamExt;
    use kube::runtime::watcher;
    use std::collections::HashMap;
    use std::time::Instant;

    const LAYERS: usize = 10;
    const WIDTH: usize = 20;
    let mut env = Env::new("scale").await;
    let name = |l: usize, i: usize| format!("l{l}-t{i}");
    let mut tasks = Vec::new();
    let mut parents_of: HashMap<String, Vec<String>> = HashMap::new();
    for l in 0..LAYERS {
        for i in 0..WIDTH {
            let mut task = json!({"name": name(l, i), "command": ["true"]});
            if l > 0 {
                let deps = vec![name(l - 1, i), name(l - 1, (i + 1) % WIDTH)];
                task["dependsOn"] = json!(deps);
                parents_of.insert(name(l, i), deps);
            }
            tasks.push(task);
        }
    }
    env.apply_workflow(&json!({
        "apiVersion": "ork.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "wide"},
        "spec": {"defaults": {"image": "busybox"}, "tasks": tasks},
    }))
    .await;

    // One watcher sees Jobs appear and Pods finish, so both times come from the same clock.
    let seen = std::sync::Arc::new(std::sync::Mutex::new((
        HashMap::<String, Instant>::new(), // task -> its Job first seen
        HashMap::<String, Instant>::new(), // task -> its Pod first seen finished
    )));
    let task_of = |labels: Option<&BTreeMap<String, String>>| labels?.get("ork.dev/task").cloned();
    let (jobs_seen, pods_seen) = (seen.clone(), seen.clone());
    let jobs_watch =
        watcher::watcher(env.jobs(), watcher::Config::default()).for_each(move |event| {
            if let Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job)) = event
                && let Some(task) = task_of(job.metadata.labels.as_ref())
            {
                jobs_seen
                    .lock()
                    .unwrap()
                    .0
                    .entry(task)
                    .or_insert_with(Instant::now);
            }
            futures::future::ready(())
        });
    let pods_watch =
        watcher::watcher(env.pods(), watcher::Config::default()).for_each(move |event| {
            if let Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = event
                && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
                && let Some(task) = task_of(pod.metadata.labels.as_ref())
            {
                pods_seen
                    .lock()
                    .unwrap()
                    .1
                    .entry(task)
                    .or_insert_with(Instant::now);
            }
            futures::future::ready(())
        });
    let watches = tokio::spawn(async move { futures::future::join(jobs_watch, pods_watch).await });

    let started = Instant::now();
    env.create_run("wide-1", "wide", json!({})).await;
    let run = env.wait_final("wide-1").await;
    let took = started.elapsed();
    let status = run.status.unwrap();
    assert_eq!(
        status.phase,
        Some(RunPhase::Succeeded),
        "{:?}",
        status.conditions
    );
    assert_eq!(
        env.jobs_of("wide-1").await.len(),
        LAYERS * WIDTH,
        "one Job per task"
    );

    let pid = env.controller.as_ref().map(|c| c.id()).unwrap();
    let peak_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    // SIGTERM: the controller shuts down gracefully and logs the requests it made.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut child = env.controller.take().unwrap();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    watches.abort();
    let log = std::fs::read_to_string(env.controller_log()).unwrap();
    let requests = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|l| l["fields"]["requests"].as_str().map(String::from))
        .expect("the controller logs its API requests at shutdown");

    let (jobs_at, pods_at) = {
        let seen = seen.lock().unwrap();
        (seen.0.clone(), seen.1.clone())
    };
    let mut gaps: Vec<f64> = parents_of
        .iter()
        .filter_map(|(task, parents)| {
            let job = jobs_at.get(task)?;
            let last_parent = parents.iter().filter_map(|p| pods_at.get(p)).max()?;
            Some(job.saturating_duration_since(*last_parent).as_secs_f64() * 1e3)
        })
        .collect();
    gaps.sort_by(f64::total_cmp);
    let pct = |p: f64| gaps[((gaps.len() - 1) as f64 * p).round() as usize];
    let tasks = (LAYERS * WIDTH) as f64;
    println!("200-task DAG ({LAYERS} layers of {WIDTH}) on the test control plane:");
    println!("  run took {:.1}s", took.as_secs_f64());
    println!("  controller API requests: {requests}");
    for pair in requests.split_whitespace() {
        if let Some((verb, n)) = pair.split_once('=') {
            let n: f64 = n.parse().unwrap_or(0.0);
            println!("    {verb:<7} {:>6.2} per task", n / tasks);
        }
    }
    println!(
        "  Pod finished -> dependent Job created: p50 {:.0} ms, p99 {:.0} ms ({} samples)",
        pct(0.5),
        pct(0.99),
        gaps.len()
    );
    println!("  controller peak RSS: {} KiB", peak_kib);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_deadline_stops_running_jobs() {
    let env = Env::new("deadline").await;
    let mut workflow = chain("slow", &[("wait", "sleep 300"), ("after", "true")]);
    workflow["spec"]["activeDeadlineSeconds"] = json!(2);
    env.apply_workflow(&workflow).await;
    env.create_run("slow-1", "slow", json!({})).await;
    let status = env.wait_final("slow-1").await.status.unwrap();
    assert_eq!(status.phase, Some(RunPhase::Failed));
    assert_eq!(
        status.conditions[0].reason.as_deref(),
        Some("DeadlineExceeded")
    );
    assert_eq!(status.tasks[0].reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(status.tasks[1].phase, ork::api::TaskPhase::Cancelled);
    let kubelet = env.kubelet.as_ref().unwrap();
    let jobs = env.jobs();
    eventually(
        "the running Job to be deleted and its process killed",
        LONG,
        || {
            let jobs = jobs.clone();
            let idle = kubelet.running().is_empty();
            async move {
                let left = jobs
                    .list(&ListParams::default().labels("ork.dev/run=slow-1"))
                    .await
                    .ok()?;
                (idle && left.items.is_empty()).then_some(())
            }
        },
    )
    .await;
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

/// The value of an unlabelled metric, or of the first sample whose labels contain `labels`.
fn metric(body: &str, name: &str, labels: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(name)
                && l[name.len()..].starts_with([' ', '{'])
                && (labels.is_empty() || l.contains(labels))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let env = Env::new("metrics").await;
    let port = env.http_port;
    eventually("/readyz to answer 200", LONG, || {
        let ready = http_get(port, "/readyz").is_some_and(|(code, _)| code == 200);
        async move { ready.then_some(()) }
    })
    .await;
    assert_eq!(http_get(port, "/healthz").map(|(c, _)| c), Some(200));
    assert_eq!(http_get(port, "/nope").map(|(c, _)| c), Some(404));
    env.apply_workflow(&chain("measured", &[("a", "true"), ("b", "exit 1")]))
        .await;
    env.create_run("measured-1", "measured", json!({})).await;
    env.wait_final("measured-1").await;
    let body = eventually("the run's tasks in /metrics", LONG, || {
        let body = http_get(port, "/metrics").map(|(_, b)| b);
        async move {
            let body = body?;
            (metric(&body, "ork_tasks_finished_total", "result=\"failed\"")? >= 1.0).then_some(body)
        }
    })
    .await;
    assert_eq!(
        metric(&body, "ork_tasks_finished_total", "result=\"succeeded\""),
        Some(1.0)
    );
    assert_eq!(metric(&body, "ork_tasks_started_total", ""), Some(2.0));
    assert_eq!(metric(&body, "ork_runs", "phase=\"Failed\""), Some(1.0));
    assert_eq!(metric(&body, "ork_jobs_in_flight", ""), Some(0.0));
    assert_eq!(metric(&body, "ork_leader", ""), Some(1.0));
    assert!(metric(&body, "ork_reconciles_total", "kind=\"run\",outcome=\"ok\"").unwrap() >= 1.0);
    assert!(
        metric(
            &body,
            "ork_reconcile_duration_seconds_count",
            "kind=\"workflow\""
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        metric(
            &body,
            "ork_api_requests_total",
            "verb=\"create\",result=\"2xx\""
        )
        .unwrap()
            >= 2.0
    );
    assert!(
        body.contains("# TYPE ork_reconcile_duration_seconds histogram"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_leader_dies() {
    let mut env = Env::new("leader").await;
    env.kill_controller();
    let lease = [
        "--leader-elect",
        "--lease-name",
        "ork-test",
        "--lease-seconds",
        "3",
    ];
    let mut lease_args: Vec<&str> = lease.to_vec();
    lease_args.extend(["--lease-namespace", env.ns.as_str()]);
    let ports = [cluster::free_port(), cluster::free_port()];
    let mut replicas: Vec<Option<Child>> = vec![
        Some(env.spawn_controller(ports[0], &lease_args, "replica-a")),
        Some(env.spawn_controller(ports[1], &lease_args, "replica-b")),
    ];
    let leader_of = |ports: &[u16]| -> Vec<bool> {
        ports
            .iter()
            .map(|p| {
                http_get(*p, "/metrics")
                    .and_then(|(_, b)| metric(&b, "ork_leader", ""))
                    .is_some_and(|v| v == 1.0)
            })
            .collect()
    };
    let leader = eventually("one replica to lead", LONG, || {
        let leading = leader_of(&ports);
        async move {
            (leading.iter().filter(|l| **l).count() == 1)
                .then(|| leading.iter().position(|l| *l).unwrap())
        }
    })
    .await;
    let standby = 1 - leader;
    assert_eq!(
        http_get(ports[standby], "/readyz").map(|(c, _)| c),
        Some(200),
        "a standby is ready"
    );

    let step = |v: &str| format!("sleep 1; echo '{{\"v\": \"{v}\"}}' > $ORK_OUTPUT");
    let (a, b, c) = (step("a"), step("b"), step("c"));
    env.apply_workflow(&chain("relay", &[("a", &a), ("b", &b), ("c", &c)]))
        .await;
    env.create_run("relay-1", "relay", json!({})).await;
    env.wait_task_running("relay-1", "b").await;
    if let Some(mut child) = replicas[leader].take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let killed = std::time::Instant::now();
    eventually("the standby to take over", LONG, || {
        let leads = leader_of(&ports[standby..=standby])[0];
        async move { leads.then_some(()) }
    })
    .await;
    let failover = killed.elapsed();
    let status = env.wait_final("relay-1").await.status.unwrap();
    assert_eq!(status.phase, Some(RunPhase::Succeeded));
    for task in &status.tasks {
        assert_eq!(task.attempts, 1, "{}", task.name);
    }
    let names = env.job_names("relay-1").await;
    assert_eq!(
        names,
        ["relay-1.a.1", "relay-1.b.1", "relay-1.c.1"],
        "no duplicate Jobs"
    );
    println!(
        "leader killed -> standby leading after {:.1}s (lease 3s)",
        failover.as_secs_f64()
    );
    for child in replicas.iter_mut().flatten() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_run_never_adopts_its_predecessors_jobs() {
    let env = Env::new("recreate").await;
    let marker = env.work.path().join("ran-once");
    let script = format!(
        "if [ -e {m} ]; then echo '{{\"n\": 2}}' > $ORK_OUTPUT; else touch {m}; echo '{{\"n\": 1}}' > $ORK_OUTPUT; fi",
        m = marker.display()
    );
    env.apply_workflow(&chain("twice", &[("a", &script)])).await;
    env.create_run("twice-1", "twice", json!({})).await;
    let first = env.wait_final("twice-1").await.status.unwrap();
    assert_eq!(first.tasks[0].outputs.as_ref().unwrap()["n"], 1);
    // Orphan the Jobs, as a garbage collector that has not caught up would leave them.
    env.kubectl_ok(
        &["delete", "run.ork.dev", "twice-1", "--cascade=orphan"],
        None,
    );
    let runs = env.runs();
    eventually("the first Run to be gone", LONG, || {
        let runs = runs.clone();
        async move { runs.get_opt("twice-1").await.ok()?.is_none().then_some(()) }
    })
    .await;
    env.create_run("twice-1", "twice", json!({})).await;
    // The name of its first Job is taken: it waits rather than adopting the old result.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = env.runs().get("twice-1").await.unwrap();
    let phase = waiting.status.as_ref().and_then(|s| s.phase);
    assert!(
        !phase.is_some_and(RunPhase::is_final),
        "must not finish on the old Job: {phase:?}"
    );
    env.jobs()
        .delete(
            &ork::kubernetes::names::job_name("twice-1", "a", 1),
            &DeleteParams::background(),
        )
        .await
        .unwrap();
    let second = env.wait_final("twice-1").await.status.unwrap();
    assert_eq!(second.phase, Some(RunPhase::Succeeded));
    assert_eq!(
        second.tasks[0].outputs.as_ref().unwrap()["n"],
        2,
        "ran anew"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_too_large_for_one_object_fails_the_run_instead_of_hanging() {
    let env = Env::new("huge").await;
    // 300 tasks with ~4 KB of output each: about 1.2 MB of status, over the 1 MB limit.
    let script =
        "printf '{\"pad\": \"%s\"}' \"$(head -c 3900 /dev/zero | tr '\\0' x)\" > $ORK_OUTPUT";
    let tasks: Vec<Value> = (0..300)
        .map(|i| json!({"name": format!("t{i}"), "command": ["sh", "-c", script]}))
        .collect();
    env.apply_workflow(&json!({
        "apiVersion": "ork.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "huge"},
        "spec": {"defaults": {"image": "busybox"}, "parallelism": 40, "tasks": tasks},
    }))
    .await;
    env.create_run("huge-1", "huge", json!({})).await;
    let status = env.wait_final("huge-1").await.status.unwrap();
    assert_eq!(status.phase, Some(RunPhase::Failed));
    let condition = &status.conditions[0];
    assert_eq!(condition.reason.as_deref(), Some("StatusTooLarge"));
    assert!(
        condition.message.as_deref().unwrap().contains("bytes"),
        "{condition:?}"
    );
    let kubelet = env.kubelet.as_ref().unwrap();
    eventually("what was still running to be stopped", LONG, || {
        let idle = kubelet.running().is_empty();
        async move { idle.then_some(()) }
    })
    .await;
}

/// A run past the inline limit keeps its records in RunShards, every object small at every
/// moment; a controller killed in the middle converges with one Job per task and every result;
/// `ork get` shows the whole run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_run_survives_a_controller_restart() {
    const LAYERS: usize = 20;
    const WIDTH: usize = 100;
    let mut env = Env::new("large").await;
    let mut tasks = Vec::new();
    for layer in 0..LAYERS {
        for i in 0..WIDTH {
            let mut task = json!({"name": format!("l{layer}-t{i}"),
                "command": ["sh", "-c", format!("echo '{{\"n\": {i}}}' > $ORK_OUTPUT")]});
            if layer > 0 {
                task["dependsOn"] = json!([
                    format!("l{}-t{i}", layer - 1),
                    format!("l{}-t{}", layer - 1, (i + 1) % WIDTH)
                ]);
            }
            tasks.push(task);
        }
    }
    env.apply_workflow(
        &json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "big"}, "spec": {"defaults": {"image": "busybox"}, "tasks": tasks}}),
    )
    .await;
    // Every object the watch sees, at every moment: never near etcd's limit.
    let largest = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watcher = {
        let largest = std::sync::Arc::clone(&largest);
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
            env.client.clone(),
            &env.ns,
            &kube::api::ApiResource::erase::<ork::api::RunShard>(&()),
        );
        let runs: Api<kube::api::DynamicObject> = Api::namespaced_with(
            env.client.clone(),
            &env.ns,
            &kube::api::ApiResource::erase::<ork::api::Run>(&()),
        );
        tokio::spawn(async move {
            use futures::StreamExt;
            let shards = kube::runtime::watcher(api, Default::default()).boxed();
            let runs = kube::runtime::watcher(runs, Default::default()).boxed();
            let mut both = futures::stream::select(shards, runs);
            while let Some(event) = both.next().await {
                if let Ok(
                    kube::runtime::watcher::Event::Apply(o)
                    | kube::runtime::watcher::Event::InitApply(o),
                ) = event
                {
                    let size = serde_json::to_vec(&o).map_or(0, |b| b.len());
                    largest.fetch_max(size, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    env.create_run("big-1", "big", json!({})).await;
    let total = (LAYERS * WIDTH) as u32;
    env.wait_run("big-1", "to get half way", |run| {
        let counts = run.status.as_ref()?.task_counts?;
        (counts.succeeded >= total / 2).then_some(())
    })
    .await;
    env.kill_controller();
    env.start_controller();
    let run = env.wait_final("big-1").await;
    watcher.abort();
    let status = run.status.as_ref().unwrap();
    assert_eq!(
        status.phase,
        Some(RunPhase::Succeeded),
        "{:?}",
        status.conditions
    );
    assert!(status.tasks.is_empty(), "the records are in RunShards");
    assert_eq!(status.task_counts.unwrap().succeeded, total);
    assert_eq!(status.records.as_ref().unwrap().shards, total.div_ceil(64));
    let jobs = env.job_names("big-1").await;
    assert_eq!(jobs.len(), total as usize, "one Job per task");
    let largest = largest.load(std::sync::atomic::Ordering::Relaxed);
    println!("largest Run or RunShard seen: {largest} bytes");
    assert!(largest < 700 * 1024, "{largest} bytes");

    // `ork get` joins the records back.
    let out = Command::new(ORK)
        .args([
            "get",
            "run/big-1",
            "-n",
            &env.ns,
            "-o",
            "json",
            "--kubeconfig",
        ])
        .arg(&env.kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full: Value = serde_json::from_slice(&out.stdout).unwrap();
    let records = full["status"]["tasks"].as_array().unwrap();
    assert_eq!(records.len(), total as usize);
    assert!(
        records
            .iter()
            .all(|t| t["phase"] == "Succeeded" && t["attempts"] == 1)
    );
    assert_eq!(records[WIDTH + 7]["outputs"]["n"], 7);
    assert_eq!(
        full["status"]["workflow"]["spec"]["tasks"]
            .as_array()
            .unwrap()
            .len(),
        total as usize,
        "the whole pinned definition"
    );
}

/// The Pod settings of a task reach its Pod exactly as given, merged with the defaults field by
/// field; ork's own labels, environment and termination message stay ork's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_settings_reach_the_pods_exactly_as_given() {
    let env = Env::new("pod-settings").await;
    let text = std::fs::read_to_string(repo("examples/pod-settings.yaml")).unwrap();
    let mut manifest: Value = serde_saphyr::from_str(&text).unwrap();
    // A label ork sets itself: the task cannot override it.
    manifest["spec"]["defaults"]["pod"]["labels"]["app.kubernetes.io/managed-by"] =
        json!("someone");
    env.apply_workflow(&manifest).await;
    env.create_run("pod-settings-1", "pod-settings", json!({}))
        .await;
    let run = env.wait_final("pod-settings-1").await;
    assert_eq!(run.status.unwrap().phase, Some(RunPhase::Succeeded));

    let pod_of = |task: &'static str| {
        let pods = env.pods();
        let selector = format!("ork.dev/run=pod-settings-1,ork.dev/task={task}");
        async move {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .unwrap();
            assert_eq!(list.items.len(), 1, "{task}: one Pod");
            serde_json::to_value(&list.items[0]).unwrap()
        }
    };
    let prepare = pod_of("prepare").await;
    let train = pod_of("train").await;
    for pod in [&prepare, &train] {
        let spec = &pod["spec"];
        assert_eq!(spec["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
        assert_eq!(
            spec["securityContext"],
            json!({"runAsNonRoot": true, "runAsUser": 1000, "fsGroup": 2000})
        );
        let labels = &pod["metadata"]["labels"];
        assert_eq!(labels["team"], "data");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "ork");
        assert_eq!(
            pod["metadata"]["annotations"]["example.com/owner"],
            "data-platform"
        );
        let container = &spec["containers"][0];
        assert_eq!(container["terminationMessagePath"], "/dev/termination-log");
        assert!(
            container["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "ORK_TASK")
        );
    }
    assert_eq!(
        prepare["spec"]["tolerations"][0],
        json!({"key": "batch", "operator": "Exists", "effect": "NoSchedule"})
    );
    // The task's list replaces the default's (the API server adds its own not-ready and
    // unreachable tolerations after it).
    assert_eq!(
        train["spec"]["tolerations"][0],
        json!({"key": "gpu", "operator": "Exists"})
    );
    assert!(
        !train["spec"]["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "batch")
    );
    assert_eq!(train["metadata"]["labels"]["stage"], "train");
    assert_eq!(prepare["metadata"]["labels"].get("stage"), None);
    let container = &train["spec"]["containers"][0];
    assert_eq!(
        container["securityContext"],
        json!({"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false})
    );
    let volume = train["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "credentials")
        .cloned()
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], "training-credentials");
    assert!(
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "credentials"
                && m["mountPath"] == "/var/run/credentials"
                && m["readOnly"] == true)
    );
}
