//! End-to-end tests of the controller against what one bad object, one refusing API server or
//! one unlucky Pod can do: each scenario on the real control plane with the kubelet simulator,
//! each asserting that the run still ends, says why, and that nothing else is held up.
//! (The decisions themselves are table-tested in `src/kubernetes/decide/tests.rs`.)

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ResourceQuota, Secret};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use ork::api::{RunPhase, TaskPhase, TaskStatus};
use serde_json::{Value, json};
use support::cluster::eventually;
use support::env::{Env, LONG, chain};

fn task<'a>(run: &'a ork::api::Run, name: &str) -> &'a TaskStatus {
    find_task(run, name).unwrap_or_else(|| panic!("no task {name} in {run:?}"))
}

fn find_task<'a>(run: &'a ork::api::Run, name: &str) -> Option<&'a TaskStatus> {
    run.status.as_ref()?.tasks.iter().find(|t| t.name == name)
}

fn inline_run(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Run", "metadata": {"name": name},
           "spec": {"workflow": spec}})
}

/// Item 1: a Job the API server refuses (here: over the namespace's Job quota) is that
/// attempt's outcome, and the run goes on and ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_api_server_refuses_fails_its_task_and_the_run_ends() {
    let env = Env::new("rejected").await;
    let quotas: Api<ResourceQuota> = Api::namespaced(env.client.clone(), &env.ns);
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "one-job"}, "spec": {"hard": {"count/jobs.batch": "1"}}}))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    // The quota is enforced once its controller has computed its status.
    eventually("the quota to be in force", LONG, || {
        let quotas = quotas.clone();
        async move {
            let q = quotas.get("one-job").await.ok()?;
            q.status?
                .hard?
                .contains_key("count/jobs.batch")
                .then_some(())
        }
    })
    .await;
    // Two independent tasks, one Job allowed: the first is made, the second refused.
    env.apply_workflow(&chain("two", &[("first", "sleep 2")]))
        .await;
    let mut workflow = chain("pair", &[("first", "sleep 2")]);
    workflow["spec"]["tasks"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "second", "command": ["true"], "retries": {"limit": 5}}));
    env.apply_workflow(&workflow).await;
    env.create_run("pair-1", "pair", json!({})).await;
    let run = env.wait_final("pair-1").await;
    let status = run.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(RunPhase::Failed));
    let tasks: Vec<&TaskStatus> = status.tasks.iter().collect();
    let refused: Vec<&&TaskStatus> = tasks
        .iter()
        .filter(|t| t.reason.as_deref() == Some("JobRejected"))
        .collect();
    assert_eq!(refused.len(), 1, "{tasks:?}");
    let refused = refused[0];
    assert_eq!(refused.phase, TaskPhase::Failed);
    assert_eq!(
        refused.attempts, 1,
        "not retried: it would be refused again"
    );
    let message = refused.message.clone().unwrap();
    assert!(message.contains("exceeded quota"), "{message}");
    let other = tasks.iter().find(|t| t.name != refused.name).unwrap();
    assert_eq!(other.phase, TaskPhase::Succeeded, "the other task ran");
    let events = env.events_about("pair-1").await;
    assert!(
        events
            .iter()
            .any(|(reason, note, _)| reason == "TaskFailed" && note.contains(&refused.name)),
        "{events:?}"
    );
    // Refused once and recorded: not a loop of creations.
    let log = std::fs::read_to_string(env.controller_log()).unwrap();
    let refusals = log.matches("the API server refused a Job").count();
    assert_eq!(refusals, 1, "{log}");
}

/// Item 2: an attempt failed from a live Pod (a missing Secret) has its Job deleted, so the
/// Pod can never start later when the Secret appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_cannot_start_is_stopped_for_good() {
    let env = Env::new("config").await;
    let marker = env.work.path().join("ran");
    let mut workflow = chain(
        "needs-secret",
        &[("use", &format!("touch {}", marker.display()))],
    );
    workflow["spec"]["tasks"][0]["env"] = json!([{"name": "PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]);
    env.apply_workflow(&workflow).await;
    env.create_run("needs-secret-1", "needs-secret", json!({}))
        .await;
    let run = env.wait_final("needs-secret-1").await;
    let used = task(&run, "use");
    assert_eq!(used.phase, TaskPhase::Failed);
    assert_eq!(used.reason.as_deref(), Some("CreateContainerConfigError"));
    assert!(used.message.clone().unwrap().contains("db"), "{used:?}");
    eventually("the attempt's Job to be deleted", LONG, || {
        let jobs = env.jobs();
        async move {
            jobs.get_opt("needs-secret-1.use.1")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    // The Secret appears: nothing runs.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "db"},
        "stringData": {"password": "x"}}))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await; // what must not happen gets its chance
    assert!(!marker.exists(), "the task ran after its run was over");
}

/// Item 3: an image that cannot be pulled shows why while it waits, then fails the attempt
/// after the configured time; a Job that cannot make its Pod says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_never_start_say_why_and_an_unpullable_image_fails_in_bounded_time() {
    let env = Env::with_args("never", &["--image-pull-timeout", "8"]).await;
    let workflow = json!({
        "apiVersion": "ork.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "stuck"},
        "spec": {"defaults": {"image": "busybox"}, "tasks": [
            {"name": "pull", "image": "registry.invalid/app:1", "command": ["true"]},
            {"name": "account", "command": ["true"], "serviceAccountName": "no-such-account"},
        ]},
    });
    env.apply_workflow(&workflow).await;
    env.create_run("stuck-1", "stuck", json!({})).await;
    env.wait_run("stuck-1", "the image to be waited for", |run| {
        let pull = find_task(run, "pull")?.message.clone()?;
        pull.contains("waiting for its image").then_some(())
    })
    .await;
    env.wait_run("stuck-1", "the Job without a Pod to say why", |run| {
        let account = find_task(run, "account")?.message.clone()?;
        account.contains("cannot create its Pod").then_some(())
    })
    .await;
    let run = env
        .wait_run("stuck-1", "the image pull to give up", |run| {
            (find_task(run, "pull")?.phase == TaskPhase::Failed).then(|| run.clone())
        })
        .await;
    let pull = task(&run, "pull");
    assert!(
        matches!(
            pull.reason.as_deref(),
            Some("ErrImagePull" | "ImagePullBackOff")
        ),
        "{pull:?}"
    );
    assert!(
        pull.message.clone().unwrap().contains("within 8s"),
        "{pull:?}"
    );
    let account = task(&run, "account").message.clone().unwrap();
    assert!(account.contains("no-such-account"), "{account}");
}

/// Item 4: two controllers racing on one namespace (no leader election): whichever loses a
/// status write creates nothing; every attempt gets exactly one Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_controllers_create_nothing_the_status_does_not_know() {
    let mut env = Env::new("race").await;
    let second = env.spawn_controller(support::cluster::free_port(), &[], "second");
    let tasks: Vec<Value> = (0..30)
        .map(|i| {
            let mut t = json!({"name": format!("t{i}"), "command": ["sh", "-c", "sleep 0.2"]});
            if i >= 10 {
                t["dependsOn"] = json!([format!("t{}", i - 10)]);
            }
            t
        })
        .collect();
    env.apply_workflow(
        &json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "raced"}, "spec": {"defaults": {"image": "busybox"}, "tasks": tasks}}),
    )
    .await;
    env.create_run("raced-1", "raced", json!({})).await;
    let run = env.wait_final("raced-1").await;
    let mut second = second;
    let _ = second.kill();
    let _ = second.wait();
    env.kill_controller();
    assert_eq!(
        run.status.as_ref().unwrap().phase,
        Some(RunPhase::Succeeded)
    );
    let jobs = env.job_names("raced-1").await;
    assert_eq!(jobs.len(), 30, "one Job per attempt: {jobs:?}");
    for t in &run.status.as_ref().unwrap().tasks {
        assert_eq!(t.attempts, 1, "{t:?}");
    }
}

/// Items 6 and 7: the timeout counts from the Pod's start and the retry waits until the
/// timed-out attempt is gone; end times are the containers' own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_attempt_is_gone_before_its_retry_starts() {
    let env = Env::new("timeout").await;
    let mut workflow = chain("slow", &[("nap", "sleep 30")]);
    workflow["spec"]["tasks"][0]["timeoutSeconds"] = json!(2);
    workflow["spec"]["tasks"][0]["retries"] = json!({"limit": 1, "backoff": {"initialSeconds": 0}});
    env.apply_workflow(&workflow).await;
    env.create_run("slow-1", "slow", json!({})).await;
    let run = env.wait_final("slow-1").await;
    let nap = task(&run, "nap");
    assert_eq!(nap.phase, TaskPhase::Failed);
    assert_eq!(nap.reason.as_deref(), Some("Timeout"));
    assert_eq!(nap.attempts, 2);
    let first = env.jobs().get("slow-1.nap.1").await.unwrap();
    let second = env.jobs().get("slow-1.nap.2").await.unwrap();
    let pods = env.pods().list(&Default::default()).await.unwrap().items;
    let first_pod = pods
        .iter()
        .find(|p| p.labels().get("job-name").map(String::as_str) == Some("slow-1.nap.1"))
        .expect("the first attempt's Pod stays, with its logs");
    let ended = first_pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "task"))
        .and_then(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.clone())
        .expect("the first attempt's container ended")
        .0;
    let retried = second.metadata.creation_timestamp.unwrap().0;
    assert!(
        retried >= ended,
        "retry at {retried}, first attempt ended at {ended}"
    );
    assert_eq!(
        first
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .active_deadline_seconds,
        Some(2)
    );
}

/// Item 7: a run deadline in the middle of a chain: nothing starts after it, and the times
/// recorded are the true ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_starts_after_the_run_deadline() {
    let env = Env::new("deadline").await;
    let mut workflow = chain(
        "late",
        &[("a", "sleep 1"), ("b", "sleep 30"), ("c", "true")],
    );
    workflow["spec"]["activeDeadlineSeconds"] = json!(4);
    env.apply_workflow(&workflow).await;
    env.create_run("late-1", "late", json!({})).await;
    let run = env.wait_final("late-1").await;
    let status = run.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(RunPhase::Failed));
    assert_eq!(
        status.conditions[0].reason.as_deref(),
        Some("DeadlineExceeded")
    );
    let started = status.started_at.unwrap();
    let deadline = started + jiff::SignedDuration::from_secs(4);
    assert_eq!(
        status.finished_at,
        Some(deadline),
        "the run ended at its deadline"
    );
    assert_eq!(task(&run, "a").phase, TaskPhase::Succeeded);
    assert_eq!(task(&run, "b").reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(task(&run, "c").phase, TaskPhase::Cancelled);
    for job in env.jobs_of("late-1").await {
        let created = job.metadata.creation_timestamp.clone().unwrap().0;
        assert!(
            created <= deadline,
            "{} made at {created}, after {deadline}",
            job.name_any()
        );
    }
}

/// Item 8: every failing task has an Event of its own, naming it and its Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failed_task_has_its_own_event() {
    let env = Env::new("events").await;
    let workflow = json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Workflow",
    "metadata": {"name": "failing"}, "spec": {"defaults": {"image": "busybox"}, "tasks": [
        {"name": "one", "command": ["sh", "-c", "exit 3"]},
        {"name": "two", "command": ["sh", "-c", "exit 4"]},
    ]}});
    env.apply_workflow(&workflow).await;
    env.create_run("failing-1", "failing", json!({})).await;
    env.wait_final("failing-1").await;
    let events = eventually("both tasks' events", LONG, || {
        let env = &env;
        async move {
            let events = env.events_about("failing-1").await;
            let failed: Vec<_> = events
                .into_iter()
                .filter(|(reason, _, _)| reason == "TaskFailed")
                .collect();
            (failed.len() >= 2).then_some(failed)
        }
    })
    .await;
    for (name, job, code) in [
        ("one", "failing-1.one.1", "3"),
        ("two", "failing-1.two.1", "4"),
    ] {
        assert!(
            events
                .iter()
                .any(|(_, note, related)| note.contains(&format!("\"{name}\""))
                    && note.contains(code)
                    && related.as_deref() == Some(job)),
            "{events:?}"
        );
    }
}

/// Item 11: finished Jobs can be cleaned up (`--job-ttl-seconds`); the run keeps its results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_cleaned_up_after_their_ttl() {
    let env = Env::with_args("ttl", &["--job-ttl-seconds", "1"]).await;
    env.apply_workflow(&chain("brief", &[("a", "echo '{\"n\": 1}' > $ORK_OUTPUT")]))
        .await;
    env.create_run("brief-1", "brief", json!({})).await;
    let run = env.wait_final("brief-1").await;
    assert_eq!(task(&run, "a").outputs.as_ref().unwrap()["n"], 1);
    let job = env.jobs().get("brief-1.a.1").await;
    if let Ok(job) = job {
        assert_eq!(job.spec.unwrap().ttl_seconds_after_finished, Some(1));
    }
    eventually("the finished Job to be deleted by its TTL", LONG, || {
        let jobs = env.jobs();
        async move {
            jobs.get_opt("brief-1.a.1")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    let run = env.runs().get("brief-1").await.unwrap();
    assert_eq!(
        task(&run, "a").outputs.as_ref().unwrap()["n"],
        1,
        "results stay"
    );
}

/// Item 12: a Run waiting for its Workflow starts as soon as the Workflow appears, not at the
/// next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_is_woken_by_its_workflow() {
    let env = Env::new("woken").await;
    env.create_run("early-1", "early", json!({})).await;
    env.wait_run("early-1", "to wait for its Workflow", |run| {
        let reason = run.status.as_ref()?.conditions.first()?.reason.clone()?;
        (reason == "WorkflowNotFound").then_some(())
    })
    .await;
    // Let a poll of the old kind (every 10 s) fall well out of step with the creation.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let created = Instant::now();
    env.apply_workflow(&chain("early", &[("a", "true")])).await;
    env.wait_run("early-1", "to start", |run| {
        (run.status.as_ref()?.phase? != RunPhase::Pending).then_some(())
    })
    .await;
    let took = created.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "started {took:?} after its Workflow appeared"
    );
    assert_eq!(
        env.wait_final("early-1").await.status.unwrap().phase,
        Some(RunPhase::Succeeded)
    );
}

/// The headline case: a Run the API server stores but ork cannot read (a cluster whose CRD
/// does not bound `retries.limit`) is reported on itself and skipped; every other Run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_run_is_reported_on_itself_and_holds_up_nothing() {
    let env = Env::new("unreadable").await;
    env.apply_workflow(&chain("fine", &[("a", "true")])).await;
    let bad = inline_run(
        "bad-1",
        json!({"defaults": {"image": "busybox"},
               "tasks": [{"name": "t", "command": ["true"], "retries": {"limit": 99_999_999_999u64}}]}),
    );
    // This cluster's CRD refuses the value; loosen it for a moment, as an older CRD would be.
    let created = with_loose_limit(&env, || {
        env.kubectl(&["create", "-f", "-"], Some(&bad.to_string()))
    })
    .await;
    assert!(created, "the loosened CRD took the Run");
    env.create_run("fine-1", "fine", json!({})).await;
    assert_eq!(
        env.wait_final("fine-1").await.status.unwrap().phase,
        Some(RunPhase::Succeeded),
        "the good Run is not held up"
    );
    let runs: Api<kube::api::DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &kube::api::ApiResource::erase::<ork::api::Run>(&()),
    );
    let status = eventually("the bad Run to say what is wrong", LONG, || {
        let runs = runs.clone();
        async move {
            let run = runs.get("bad-1").await.ok()?;
            let status = run.data.get("status")?.clone();
            (status["phase"] == "Failed").then_some(status)
        }
    })
    .await;
    let condition = &status["conditions"][0];
    assert_eq!(condition["reason"], "InvalidSpec");
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.contains("spec.workflow.tasks[0].retries.limit") && message.contains("4294967295"),
        "{message}"
    );
    let events = env.events_about("bad-1").await;
    assert!(
        events.iter().any(|(reason, _, _)| reason == "InvalidSpec"),
        "{events:?}"
    );
    // And with the CRD as it ships, the API server refuses such a Run up front.
    let refused = env.kubectl(
        &["create", "-f", "-"],
        Some(&inline_run("bad-2", bad["spec"]["workflow"].clone()).to_string()),
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("limit") && stderr.contains("4294967295"),
        "{stderr}"
    );
}

/// Runs `create` while the Run CRD does not bound `retries.limit`, then restores the CRD;
/// true when `create` succeeded. Other test binaries may re-apply the CRD meanwhile: retried.
async fn with_loose_limit(env: &Env, create: impl Fn() -> std::process::Output) -> bool {
    let pointer = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/workflow/properties/tasks/items/properties/retries/properties/limit/maximum";
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(env.client.clone());
    let mut ok = false;
    for _ in 0..5 {
        let crd = crds.get("runs.ork.dev").await.unwrap();
        let value = serde_json::to_value(&crd).unwrap();
        if value.pointer(pointer).is_some() {
            let patch = json!([{"op": "remove", "path": pointer}]);
            let _ = crds
                .patch(
                    "runs.ork.dev",
                    &PatchParams::default(),
                    &Patch::<Value>::Json(serde_json::from_value(patch).unwrap()),
                )
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if create().status.success() {
            ok = true;
            break;
        }
    }
    support::env::reinstall_crds(&env.kubeconfig);
    ok
}

/// Item 10 and the headline memory case: a 368 KB Run declaring 5,000 params with 5,000
/// unknown ones fails with one bounded message, and the controller's memory stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_thousands_of_unknown_params_fails_in_bounded_memory() {
    let env = Env::new("params").await;
    let params: Vec<Value> = (0..5000)
        .map(|i| json!({"name": format!("declared_parameter_{i:05}"), "default": "x"}))
        .collect();
    let values: serde_json::Map<String, Value> = (0..5000)
        .map(|i| (format!("unknown_parameter_{i:05}"), json!("y")))
        .collect();
    let run = json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Run", "metadata": {"name": "many-1"},
        "spec": {"params": values, "workflow": {"params": params, "defaults": {"image": "busybox"},
                 "tasks": [{"name": "t", "command": ["true"]}]}}});
    let text = run.to_string();
    assert!(text.len() > 300_000, "{}", text.len());
    let out = env.kubectl(&["create", "-f", "-"], Some(&text));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = env.wait_final("many-1").await;
    let condition = &run.status.as_ref().unwrap().conditions[0];
    assert_eq!(condition.reason.as_deref(), Some("InvalidSpec"));
    let message = condition.message.clone().unwrap();
    let head: String = message.chars().take(400).collect();
    assert!(
        message.len() <= 32 * 1024,
        "{} bytes: {head}",
        message.len()
    );
    assert!(message.contains("unknown_parameter_00000"), "{head}");
    assert!(message.contains("more"), "{head}");
    let peak = env.controller_peak_kib().unwrap();
    println!("controller peak RSS with the 5,000-params Run: {peak} KiB");
    assert!(peak < 200 * 1024, "controller peak RSS {peak} KiB");
}

/// Item 9: ork reads its own container by name, so an injected sidecar listed first is not
/// taken for the task; a terminated reason such as OOMKilled reaches the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tasks_container_is_read_by_name_and_its_reason_kept() {
    let options = support::kubelet::Options {
        decoy_sidecar: true,
    };
    let env = Env::with_node("sidecar", &[], options).await;
    let workflow = json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Workflow",
    "metadata": {"name": "meshed"}, "spec": {"defaults": {"image": "busybox"}, "tasks": [
        {"name": "writes", "command": ["sh", "-c", "echo '{\"mine\": 1}' > $ORK_OUTPUT"]},
        {"name": "hungry", "command": ["sh", "-c", "exit 137"],
         "env": [{"name": support::kubelet::TERMINATED_REASON_ENV, "value": "OOMKilled"}]},
    ]}});
    env.apply_workflow(&workflow).await;
    env.create_run("meshed-1", "meshed", json!({})).await;
    let run = env.wait_final("meshed-1").await;
    let writes = task(&run, "writes");
    assert_eq!(writes.phase, TaskPhase::Succeeded);
    assert_eq!(
        writes.outputs.as_ref().map(|o| Value::Object(o.clone())),
        Some(json!({"mine": 1})),
        "the task's own output, not the sidecar's"
    );
    let hungry = task(&run, "hungry");
    assert_eq!(hungry.reason.as_deref(), Some("OOMKilled"));
    assert_eq!(hungry.exit_code, Some(137));
    assert!(
        hungry.message.clone().unwrap().contains("out of memory"),
        "{hungry:?}"
    );
}
