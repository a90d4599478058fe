//! The kubelet simulator (tests/support/kubelet.rs) against a real control plane: the real Job
//! controller and garbage collector see the Pods it runs behave as on a real node.
//!
//! Needs a cluster: `ORK_TEST_KUBECONFIG`, or one started by `scripts/control-plane.sh` (see
//! tests/support/cluster.rs).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Pod, Secret,
};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tempfile::TempDir;

use support::cluster::{self, eventually};
use support::kubelet::{
    DECOY_SIDECAR_MESSAGE, DECOY_SIDECAR_NAME, ImagePull, Kubelet, KubeletHandle, LOG_FILE,
    NODE_NAME, Options, TERMINATED_REASON_ENV, image_pull,
};

/// Every wait in these tests.
const LIMIT: Duration = Duration::from_secs(60);

/// A namespace of its own with a simulator playing the node for it.
struct Setup {
    client: Client,
    namespace: String,
    kubelet: Option<KubeletHandle>,
    work: TempDir,
}

impl Setup {
    async fn new(prefix: &str) -> Setup {
        Setup::with_options(prefix, Options::default()).await
    }

    async fn with_options(prefix: &str, options: Options) -> Setup {
        let client = cluster::client().await;
        let namespace = cluster::create_test_namespace(&client, prefix).await;
        let work = tempfile::tempdir().expect("work dir");
        let kubelet = Kubelet::start_with(
            client.clone(),
            &namespace,
            work.path().join("kubelet"),
            options,
        );
        Setup {
            client,
            namespace,
            kubelet: Some(kubelet),
            work,
        }
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn create_job(&self, job: Value) -> Job {
        let job: Job = serde_json::from_value(job).expect("job object");
        self.jobs()
            .create(&PostParams::default(), &job)
            .await
            .expect("create job")
    }

    async fn create_pod(&self, pod: Value) -> Pod {
        let pod: Pod = serde_json::from_value(pod).expect("pod object");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    /// Waits until the Job has a condition `kind` with status True; returns its reason.
    async fn job_condition(&self, name: &str, kind: &str) -> String {
        let jobs = self.jobs();
        eventually(
            &format!("job {name} to get condition {kind}"),
            LIMIT,
            || async {
                let job = jobs.get(name).await.ok()?;
                let conditions = job.status?.conditions?;
                conditions
                    .into_iter()
                    .find(|c| c.type_ == kind && c.status == "True")
                    .map(|c| c.reason.unwrap_or_default())
            },
        )
        .await
    }

    async fn job_pods(&self, job: &str) -> Vec<Pod> {
        self.pods()
            .list(&ListParams::default().labels(&format!("job-name={job}")))
            .await
            .expect("list pods")
            .items
    }

    /// Waits for the pod to reach phase `phase` and returns it.
    async fn pod_in_phase(&self, name: &str, phase: &str) -> Pod {
        let pods = self.pods();
        eventually(&format!("pod {name} to be {phase}"), LIMIT, || async {
            let pod = pods.get(name).await.ok()?;
            (phase_of(&pod) == phase).then_some(pod)
        })
        .await
    }

    /// Waits until `check` finds what it wants in the pod; returns it.
    async fn pod_until<T>(&self, name: &str, what: &str, check: impl Fn(&Pod) -> Option<T>) -> T {
        let pods = self.pods();
        eventually(&format!("pod {name}: {what}"), LIMIT, || async {
            let pod = pods.get(name).await.ok()?;
            check(&pod)
        })
        .await
    }

    fn kubelet(&self) -> &KubeletHandle {
        self.kubelet.as_ref().expect("kubelet")
    }

    async fn finish(mut self) {
        cluster::delete_test_namespace(&self.client, &self.namespace).await;
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.stop().await;
        }
    }
}

/// A Job running `sh -c SCRIPT` once (no retries), its output file in `$OUT`. The script goes
/// through the kubelet's `$(VAR)` expansion like any command, so the shell's `$$` is `$$$$`.
fn job(name: &str, script: &str, env: &[(&str, &str)], deadline: Option<i64>) -> Value {
    let mut env: Vec<Value> = env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    env.insert(0, json!({"name": "OUT", "value": "/dev/termination-log"}));
    let mut spec = json!({
        "backoffLimit": 0,
        "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": "busybox",
                "command": ["sh", "-c", script],
                "env": env,
                "terminationMessagePath": "/dev/termination-log",
            }],
        }},
    });
    if let Some(deadline) = deadline {
        spec["activeDeadlineSeconds"] = json!(deadline);
    }
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec})
}

fn phase_of(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn terminated(pod: &Pod) -> ContainerStateTerminated {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.clone())
        .unwrap_or_else(|| panic!("pod has no terminated container: {:?}", pod.status))
}

/// Waits for a command to write its pid into `path`.
async fn pid_from(path: &Path) -> i32 {
    eventually(&format!("a pid in {}", path.display()), LIMIT, || async {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    })
    .await
}

/// The process is gone: no such pid, or a zombie (exited, not yet reaped).
fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_succeeds_with_the_termination_message() {
    let started = Instant::now();
    let t = Setup::new("kubelet-sim-ok").await;
    t.create_job(job(
        "ok",
        r#"echo "{\"a\": 1}" > "$OUT"; echo to-stdout; exit 0"#,
        &[],
        None,
    ))
    .await;

    t.job_condition("ok", "Complete").await;
    let pods = t.job_pods("ok").await;
    assert_eq!(pods.len(), 1, "one pod: {pods:?}");
    let pod = &pods[0];
    assert_eq!(phase_of(pod), "Succeeded");
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(NODE_NAME)
    );
    let term = terminated(pod);
    assert_eq!(term.exit_code, 0);
    assert_eq!(term.reason.as_deref(), Some("Completed"));
    // Exactly the file's contents: the kubelet does not trim the newline `echo` wrote.
    assert_eq!(term.message.as_deref(), Some("{\"a\": 1}\n"));
    assert!(term.started_at.is_some() && term.finished_at.is_some());

    // stdout went to the container's log file.
    let kubelet = t.kubelet.as_ref().expect("kubelet");
    let dir = kubelet.container_dir(
        pod.metadata.name.as_deref().expect("name"),
        pod.metadata.uid.as_deref().expect("uid"),
        "main",
    );
    let log = std::fs::read_to_string(dir.join(LOG_FILE)).expect("log file");
    assert_eq!(log, "to-stdout\n");
    t.finish().await;
    eprintln!("took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_fails_with_the_exit_code() {
    let started = Instant::now();
    let t = Setup::new("kubelet-sim-fail").await;
    t.create_job(job("fail", "echo oops >&2; exit 3", &[], None))
        .await;

    t.job_condition("fail", "Failed").await;
    let pods = t.job_pods("fail").await;
    assert_eq!(pods.len(), 1, "one pod (backoffLimit 0): {pods:?}");
    assert_eq!(phase_of(&pods[0]), "Failed");
    let term = terminated(&pods[0]);
    assert_eq!(term.exit_code, 3);
    assert_eq!(term.reason.as_deref(), Some("Error"));
    assert_eq!(term.message, None, "nothing was written to the output file");
    t.finish().await;
    eprintln!("took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_deadline_kills_the_process_and_removes_the_pod() {
    let started = Instant::now();
    let t = Setup::new("kubelet-sim-deadline").await;
    let pid_file = t.work.path().join("deadline.pid");
    let pid_path = pid_file.to_str().expect("utf-8 path");
    t.create_job(job(
        "slow",
        r#"echo $$$$ > "$PIDFILE"; exec sleep 300"#,
        &[("PIDFILE", pid_path)],
        Some(2),
    ))
    .await;

    let pid = pid_from(&pid_file).await;
    assert!(!process_gone(pid), "pid {pid} runs");
    let reason = t.job_condition("slow", "Failed").await;
    assert_eq!(reason, "DeadlineExceeded");
    eventually(&format!("pid {pid} to be killed"), LIMIT, || async {
        process_gone(pid).then_some(())
    })
    .await;
    eventually("the job's pod to be removed", LIMIT, || async {
        t.job_pods("slow").await.is_empty().then_some(())
    })
    .await;
    t.finish().await;
    eprintln!("took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_job_kills_the_process() {
    let started = Instant::now();
    let t = Setup::new("kubelet-sim-delete").await;
    let pid_file = t.work.path().join("delete.pid");
    let pid_path = pid_file.to_str().expect("utf-8 path");
    t.create_job(job(
        "victim",
        r#"echo $$$$ > "$PIDFILE"; exec sleep 300"#,
        &[("PIDFILE", pid_path)],
        None,
    ))
    .await;

    let pid = pid_from(&pid_file).await;
    let pods = t.job_pods("victim").await;
    assert_eq!(pods.len(), 1);
    let pod_name = pods[0].metadata.name.clone().expect("pod name");
    let pod = t.pod_in_phase(&pod_name, "Running").await;
    let status = pod.status.expect("status");
    assert!(status.start_time.is_some());
    let container = &status.container_statuses.expect("container statuses")[0];
    assert!(container.ready);
    assert!(
        container
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_some_and(|r| r.started_at.is_some())
    );

    t.jobs()
        .delete("victim", &DeleteParams::background())
        .await
        .expect("delete job");
    eventually(&format!("pid {pid} to be killed"), LIMIT, || async {
        process_gone(pid).then_some(())
    })
    .await;
    let pods = t.pods();
    eventually(&format!("pod {pod_name} to disappear"), LIMIT, || async {
        matches!(pods.get_opt(&pod_name).await, Ok(None)).then_some(())
    })
    .await;
    t.finish().await;
    eprintln!("took {:?}", started.elapsed());
}

/// A bare Pod running `command` with `env`.
fn pod(name: &str, command: Option<Vec<&str>>, env: Value) -> Value {
    let mut container = json!({
        "name": "main",
        "image": "busybox",
        "env": env,
    });
    if let Some(command) = command {
        container["command"] = json!(command);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container]},
    })
}

/// Expansion of env, command and args as the kubelet does it; start errors; signals; the
/// 4096-byte limit; and stopping the simulator kills what it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_pods_expansion_start_errors_and_stop() {
    let started = Instant::now();
    let mut t = Setup::new("kubelet-sim-pods").await;
    let out = json!({"name": "OUT", "value": "/dev/termination-log"});

    // Each env value sees the ones before it; `$$` escapes; unknown names stay; command and
    // args see the whole env (including later entries); the test's PATH is inherited.
    let mut expand = pod(
        "expand",
        Some(vec!["sh", "-c"]),
        json!([
            {"name": "A", "value": "x"},
            {"name": "B", "value": "$(A)-$(C)"},
            {"name": "C", "value": "c"},
            {"name": "D", "value": "$$(A)"},
            {"name": "OUT", "value": "/dev/termination-log"},
            {"name": "ORK_OUTPUT", "value": "$(OUT)"},
        ]),
    );
    expand["spec"]["containers"][0]["args"] =
        json!([r#"printf '%s|%s|%s|%s|$(C)|$(NOPE)' "$A" "$B" "$D" "$ORK_OUTPUT" > "$OUT""#]);
    t.create_pod(expand).await;
    // A custom terminationMessagePath is what gets replaced.
    let mut custom = pod(
        "custom-path",
        Some(vec!["sh", "-c", r#"printf custom > "$MSG""#]),
        json!([{"name": "MSG", "value": "/tmp/msg"}]),
    );
    custom["spec"]["containers"][0]["terminationMessagePath"] = json!("/tmp/msg");
    t.create_pod(custom).await;
    t.create_pod(pod(
        "big",
        Some(vec![
            "sh",
            "-c",
            r#"head -c 5000 /dev/zero | tr '\0' a > "$OUT"; printf END >> "$OUT""#,
        ]),
        json!([out]),
    ))
    .await;
    t.create_pod(pod(
        "signal",
        Some(vec!["sh", "-c", "kill -TERM $$$$"]),
        json!([]),
    ))
    .await;
    t.create_pod(pod("enoent", Some(vec!["/nonexistent/program"]), json!([])))
        .await;
    t.create_pod(pod("no-command", None, json!([]))).await;
    t.create_pod(pod(
        "value-from",
        Some(vec!["true"]),
        json!([{"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}]),
    ))
    .await;
    let pid_file = t.work.path().join("stop.pid");
    t.create_pod(pod(
        "sleeper",
        Some(vec![
            "sh",
            "-c",
            r#"echo $$$$ > "$PIDFILE"; exec sleep 300"#,
        ]),
        json!([{"name": "PIDFILE", "value": pid_file.to_str().expect("utf-8 path")}]),
    ))
    .await;

    let pod = t.pod_in_phase("expand", "Succeeded").await;
    let dir = t.kubelet.as_ref().expect("kubelet").container_dir(
        "expand",
        pod.metadata.uid.as_deref().expect("uid"),
        "main",
    );
    let local_out = dir.join("termination-log");
    assert_eq!(
        terminated(&pod).message.as_deref(),
        Some(format!("x|x-$(C)|$(A)|{}|c|$(NOPE)", local_out.display()).as_str())
    );

    let term = terminated(&t.pod_in_phase("custom-path", "Succeeded").await);
    assert_eq!(term.message.as_deref(), Some("custom"));

    let term = terminated(&t.pod_in_phase("big", "Succeeded").await);
    let message = term.message.expect("message");
    assert_eq!(message.len(), 4096, "the kubelet keeps the last 4096 bytes");
    assert!(message.ends_with("aaaEND"));

    let term = terminated(&t.pod_in_phase("signal", "Failed").await);
    assert_eq!(term.exit_code, 128 + 15);

    let term = terminated(&t.pod_in_phase("enoent", "Failed").await);
    assert_eq!(term.exit_code, 127);
    assert!(
        term.message
            .as_deref()
            .is_some_and(|m| m.contains("/nonexistent/program")),
        "{term:?}"
    );

    for name in ["no-command", "value-from"] {
        let term = terminated(&t.pod_in_phase(name, "Failed").await);
        assert_eq!(term.exit_code, 128, "{name}");
        assert_eq!(term.reason.as_deref(), Some("StartError"), "{name}");
        assert!(term.message.is_some_and(|m| !m.is_empty()), "{name}");
    }

    // Stopping the simulator kills the processes it runs.
    let pid = pid_from(&pid_file).await;
    let kubelet = t.kubelet.take().expect("kubelet");
    let running: BTreeMap<String, i32> = kubelet
        .running()
        .into_iter()
        .map(|p| (p.pod_name, p.pid))
        .collect();
    assert_eq!(running, BTreeMap::from([("sleeper".to_string(), pid)]));
    kubelet.stop().await;
    eventually(&format!("pid {pid} to be killed"), LIMIT, || async {
        process_gone(pid).then_some(())
    })
    .await;

    // A new simulator finds the pod bound to its node but has no process for it: it reports
    // the pod lost (as a restarted kubelet would) instead of leaving it Running.
    t.kubelet = Some(Kubelet::start(
        t.client.clone(),
        &t.namespace,
        t.work.path().join("kubelet-2"),
    ));
    let term = terminated(&t.pod_in_phase("sleeper", "Failed").await);
    assert_eq!(term.exit_code, 137);
    assert_eq!(term.reason.as_deref(), Some("ContainerStatusUnknown"));
    t.finish().await;
    eprintln!("took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Kubelet behaviours the controller must handle
// ---------------------------------------------------------------------------------------------

fn statuses(pod: &Pod) -> Vec<ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default()
}

fn status_names(pod: &Pod) -> Vec<String> {
    statuses(pod).into_iter().map(|c| c.name).collect()
}

fn container(pod: &Pod, name: &str) -> Option<ContainerStatus> {
    statuses(pod).into_iter().find(|c| c.name == name)
}

fn waiting_of(pod: &Pod, name: &str) -> Option<ContainerStateWaiting> {
    container(pod, name)?.state?.waiting
}

fn terminated_of(pod: &Pod, name: &str) -> Option<ContainerStateTerminated> {
    container(pod, name)?.state?.terminated
}

fn running_in(pod: &Pod, name: &str) -> bool {
    container(pod, name)
        .and_then(|c| c.state)
        .is_some_and(|s| s.running.is_some())
}

/// (type, status, reason) of the pod's conditions, in order.
fn conditions(pod: &Pod) -> Vec<(String, String, Option<String>)> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status, c.reason))
        .collect()
}

fn condition(kind: &str, status: &str, reason: Option<&str>) -> (String, String, Option<String>) {
    (
        kind.to_string(),
        status.to_string(),
        reason.map(str::to_string),
    )
}

/// A container for [`pod_of`]: `sh -c SCRIPT` with its output file in `$OUT` and `env`.
fn sh(name: &str, image: &str, script: &str, env: Value) -> Value {
    let mut env = env.as_array().cloned().unwrap_or_default();
    env.insert(0, json!({"name": "OUT", "value": "/dev/termination-log"}));
    json!({
        "name": name,
        "image": image,
        "command": ["sh", "-c", script],
        "env": env,
    })
}

fn pod_of(name: &str, containers: Vec<Value>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": containers},
    })
}

fn seconds(time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> i64 {
    time.0.as_second()
}

/// A running pod past its `activeDeadlineSeconds` is killed and failed as a 1.20 kubelet does;
/// a pending one (its image cannot be pulled) is failed too; one that ends in time is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_active_deadline_kills_and_fails_the_pod() {
    let started = Instant::now();
    let t = Setup::new("kubelet-sim-pod-deadline").await;
    let pid_file = t.work.path().join("slow.pid");
    let pid_env = json!([{"name": "PIDFILE", "value": pid_file.to_str().expect("utf-8 path")}]);
    let mut slow = pod_of(
        "slow",
        vec![sh(
            "main",
            "busybox",
            r#"echo $$$$ > "$PIDFILE"; exec sleep 30"#,
            pid_env,
        )],
    );
    slow["spec"]["activeDeadlineSeconds"] = json!(2);
    let mut stuck = pod_of(
        "stuck",
        vec![sh("main", "registry.invalid/app:1", "true", json!([]))],
    );
    stuck["spec"]["activeDeadlineSeconds"] = json!(2);
    let mut quick = pod_of("quick", vec![sh("main", "busybox", "true", json!([]))]);
    quick["spec"]["activeDeadlineSeconds"] = json!(30);
    let created = Instant::now();
    t.create_pod(slow).await;
    t.create_pod(stuck).await;
    t.create_pod(quick).await;

    let pid = pid_from(&pid_file).await;
    let pod = t.pod_in_phase("slow", "Failed").await;
    let took = created.elapsed();
    assert!(took < Duration::from_secs(6), "failed after {took:?}");
    let status = pod.status.clone().expect("status");
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        status.message.as_deref(),
        Some("Pod was active on the node longer than the specified deadline")
    );
    let term = terminated_of(&pod, "main").expect("main terminated");
    assert_eq!(term.exit_code, 137);
    assert_eq!(term.reason.as_deref(), Some("Error"));
    let start = seconds(status.start_time.as_ref().expect("startTime"));
    let finished = seconds(term.finished_at.as_ref().expect("finishedAt"));
    assert!(
        (start + 2..=start + 4).contains(&finished),
        "killed at {finished}, started at {start}"
    );
    assert!(process_gone(pid), "pid {pid} was killed");
    assert_eq!(
        conditions(&pod)[1],
        condition("Ready", "False", Some("ContainersNotReady"))
    );

    // Pending (the image cannot be pulled) counts too; its container stays waiting.
    let pod = t.pod_in_phase("stuck", "Failed").await;
    let status = pod.status.clone().expect("status");
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    let waiting = waiting_of(&pod, "main").expect("main still waiting");
    assert!(
        matches!(
            waiting.reason.as_deref(),
            Some("ErrImagePull" | "ImagePullBackOff")
        ),
        "{waiting:?}"
    );

    let pod = t.pod_in_phase("quick", "Succeeded").await;
    assert_eq!(pod.status.and_then(|s| s.reason), None);
    assert!(t.kubelet().running().is_empty());
    t.finish().await;
    eprintln!("took {:?}", started.elapsed());
}

/// Docker's reference grammar as the 1.20 kubelet applies it, and the `.invalid` convention.
#[test]
fn image_references_follow_the_kubelets_rules() {
    let invalid = |image: &str, err: &str| ImagePull::Invalid {
        message: format!(
            "Failed to apply default image tag {image:?}: couldn't parse image reference \
             {image:?}: {err}"
        ),
    };
    let pullable = |reference: &str| ImagePull::Pullable {
        reference: reference.to_string(),
    };
    let unpullable = |reference: &str| ImagePull::Unpullable {
        reference: reference.to_string(),
    };
    let lowercase = "invalid reference format: repository name must be lowercase";
    let format = "invalid reference format";
    let digest = format!("sha256:{}", "a".repeat(64));
    let cases = [
        ("busybox", pullable("docker.io/library/busybox:latest")),
        ("busybox:1.36", pullable("docker.io/library/busybox:1.36")),
        ("team/app", pullable("docker.io/team/app:latest")),
        (
            "index.docker.io/team/app",
            pullable("docker.io/team/app:latest"),
        ),
        (
            "ghcr.io/org/a-b_c.d__e---f:v1.0_X",
            pullable("ghcr.io/org/a-b_c.d__e---f:v1.0_X"),
        ),
        ("localhost:5000/app", pullable("localhost:5000/app:latest")),
        (
            "Registry.Example/app",
            pullable("Registry.Example/app:latest"),
        ),
        (
            "registry.invalid/app:1",
            unpullable("registry.invalid/app:1"),
        ),
        (
            "registry.invalid/app",
            unpullable("registry.invalid/app:latest"),
        ),
        (
            "eu.registry.invalid:5000/team/app",
            unpullable("eu.registry.invalid:5000/team/app:latest"),
        ),
        (
            "registry.invalid",
            pullable("docker.io/library/registry.invalid:latest"),
        ),
        (
            "registry.invalid/App:1",
            invalid("registry.invalid/App:1", lowercase),
        ),
        ("Busybox", invalid("Busybox", lowercase)),
        ("busybox latest", invalid("busybox latest", format)),
        ("", invalid("", format)),
        (" ", invalid(" ", format)),
        (
            "registry.invalid/app:",
            invalid("registry.invalid/app:", format),
        ),
        ("app//x", invalid("app//x", format)),
        ("app..x", invalid("app..x", format)),
        ("-app", invalid("-app", format)),
        ("app:-tag", invalid("app:-tag", format)),
        ("app@sha256:abc", invalid("app@sha256:abc", format)),
        (
            &*format!("app@{digest}"),
            pullable(&format!("docker.io/library/app@{digest}")),
        ),
        (
            &*format!("app:1@{digest}"),
            pullable(&format!("docker.io/library/app:1@{digest}")),
        ),
        (
            &*format!("app@md5:{}", "a".repeat(32)),
            invalid(
                &format!("app@md5:{}", "a".repeat(32)),
                "unsupported digest algorithm",
            ),
        ),
        (
            &*format!("app@sha256:{}", "a".repeat(32)),
            invalid(
                &format!("app@sha256:{}", "a".repeat(32)),
                "invalid checksum digest length",
            ),
        ),
        (
            &*"a".repeat(64),
            invalid(
                &"a".repeat(64),
                &format!(
                    "invalid repository name ({}), cannot specify 64-byte hexadecimal strings",
                    "a".repeat(64)
                ),
            ),
        ),
    ];
    for (image, expected) in cases {
        assert_eq!(image_pull(image), expected, "image {image:?}");
    }
}

/// An image that cannot be pulled keeps the pod Pending with ErrImagePull / ImagePullBackOff in
/// turn; an invalid one with InvalidImageName; neither ever runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_images_keep_the_pod_pending_and_never_run() {
    let started = Instant::now();
    let t = Setup::new("kubelet-sim-images").await;
    let markers = t.work.path().join("markers");
    std::fs::create_dir_all(&markers).expect("markers dir");
    let touch = |name: &str| format!("touch {}", markers.join(name).to_str().expect("utf-8 path"));
    let invalid = [
        (
            "upper",
            "registry.invalid/App:1",
            "invalid reference format: repository name must be lowercase",
        ),
        ("space", "busybox latest", "invalid reference format"),
        (
            "empty-tag",
            "registry.invalid/app:",
            "invalid reference format",
        ),
    ];
    t.create_pod(pod_of(
        "unpullable",
        vec![sh(
            "main",
            "registry.invalid/app:1",
            &touch("unpullable"),
            json!([]),
        )],
    ))
    .await;
    for (name, image, _) in invalid {
        t.create_pod(pod_of(
            name,
            vec![sh("main", image, &touch(name), json!([]))],
        ))
        .await;
    }

    let pull_error = "rpc error: code = NotFound desc = failed to pull and unpack image \
        \"registry.invalid/app:1\": failed to resolve reference \"registry.invalid/app:1\": \
        registry.invalid/app:1: not found";
    let back_off = "Back-off pulling image \"registry.invalid/app:1\"";
    let waiting_with = |reason: &'static str| {
        move |pod: &Pod| {
            let waiting = waiting_of(pod, "main")?;
            (waiting.reason.as_deref() == Some(reason)).then_some((pod.clone(), waiting))
        }
    };
    let mut seen = Vec::new();
    for reason in ["ErrImagePull", "ImagePullBackOff", "ErrImagePull"] {
        let (pod, waiting) = t
            .pod_until(
                "unpullable",
                &format!("waiting {reason}"),
                waiting_with(reason),
            )
            .await;
        let message = if reason == "ErrImagePull" {
            pull_error
        } else {
            back_off
        };
        assert_eq!(waiting.message.as_deref(), Some(message));
        assert_eq!(phase_of(&pod), "Pending");
        seen.push(pod);
    }
    // Accepted by the node: startTime and the kubelet's conditions.
    let pod = &seen[0];
    assert!(
        pod.status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .is_some()
    );
    assert_eq!(
        conditions(pod),
        vec![
            condition("Initialized", "True", None),
            condition("Ready", "False", Some("ContainersNotReady")),
            condition("ContainersReady", "False", Some("ContainersNotReady")),
            condition("PodScheduled", "True", None),
        ]
    );
    let main = container(pod, "main").expect("main status");
    assert!(!main.ready);
    assert_eq!(main.restart_count, 0);

    for (name, image, err) in invalid {
        let (pod, waiting) = t
            .pod_until(
                name,
                "waiting InvalidImageName",
                waiting_with("InvalidImageName"),
            )
            .await;
        assert_eq!(
            waiting.message,
            Some(format!(
                "Failed to apply default image tag {image:?}: couldn't parse image reference \
                 {image:?}: {err}"
            )),
            "{name}"
        );
        assert_eq!(phase_of(&pod), "Pending", "{name}");
    }
    // Nothing ran: no marker, no process, and the pods are still waiting.
    assert!(t.kubelet().running().is_empty());
    let made: Vec<_> = std::fs::read_dir(&markers)
        .expect("markers dir")
        .map(|e| e.map(|e| e.file_name()))
        .collect();
    assert!(made.is_empty(), "a bad image ran: {made:?}");
    for name in ["unpullable", "upper", "space", "empty-tag"] {
        let pod = t.pods().get(name).await.expect("pod");
        assert_eq!(phase_of(&pod), "Pending", "{name}");
    }
    // A bound pod that never started is still the node's to confirm when it is deleted.
    let pods = t.pods();
    pods.delete("unpullable", &DeleteParams::default())
        .await
        .expect("delete pod");
    eventually("pod unpullable to disappear", LIMIT, || async {
        matches!(pods.get_opt("unpullable").await, Ok(None)).then_some(())
    })
    .await;
    t.finish().await;
    eprintln!("took {:?}", started.elapsed());
}

/// Env from Secrets, ConfigMaps and the pod's fields: a missing source keeps the container
/// waiting (CreateContainerConfigError, the kubelet's messages), and it starts once the source
/// is there; values take part in `$(VAR)` expansion in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_from_secrets_and_config_maps_waits_until_they_exist() {
    let started = Instant::now();
    let t = Setup::new("kubelet-sim-env").await;
    let ns = t.namespace.clone();
    let secret_ref = |name: &str, key: &str, optional: bool| json!({"secretKeyRef": {"name": name, "key": key, "optional": optional}});
    let config_ref = |name: &str, key: &str, optional: bool| json!({"configMapKeyRef": {"name": name, "key": key, "optional": optional}});
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let script = r#"printf '%s\n' "dsn=$DSN" "name=$NAME" "ns=$NS" "uid=$POD_UID" "app=$APP" \
        "node=$NODE" "ip=$IP" "overridden=$CFG_OVERRIDDEN" "opt=${OPT-unset}" \
        "opt_key=${OPT_KEY-unset}" "cfg=$$(env | grep '^CFG_' | cut -d= -f1 | sort | tr '\n' ,)" \
        "host=$host" "digits=$$(env | grep -c '^1st=')" \
        > "$OUT""#;
    let mut main = sh(
        "main",
        "busybox",
        script,
        json!([
            {"name": "NAME", "valueFrom": field("metadata.name")},
            {"name": "NS", "valueFrom": field("metadata.namespace")},
            {"name": "POD_UID", "valueFrom": field("metadata.uid")},
            {"name": "APP", "valueFrom": field("metadata.labels['app']")},
            {"name": "NODE", "valueFrom": field("spec.nodeName")},
            {"name": "IP", "valueFrom": field("status.podIP")},
            {"name": "PASSWORD", "valueFrom": secret_ref("db", "password", false)},
            {"name": "MODE", "valueFrom": config_ref("settings", "mode", false)},
            {"name": "OPT", "valueFrom": secret_ref("nope", "x", true)},
            {"name": "OPT_KEY", "valueFrom": config_ref("settings", "nope", true)},
            {"name": "DSN", "value": "$(MODE)://$(S_user):$(PASSWORD)@$(CFG_host)/$(NAME)$(LATER)"},
            {"name": "CFG_OVERRIDDEN", "value": "from-env"},
            {"name": "LATER", "value": "x"},
        ]),
    );
    main["envFrom"] = json!([
        {"configMapRef": {"name": "settings"}},
        {"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
        {"secretRef": {"name": "missing", "optional": true}},
        {"secretRef": {"name": "db"}, "prefix": "S_"},
    ]);
    let mut pod = pod_of("env", vec![main]);
    pod["metadata"]["labels"] = json!({"app": "demo"});
    let uid = t.create_pod(pod).await.metadata.uid.expect("uid");

    let config_error = |message: String| {
        move |pod: &Pod| {
            let waiting = waiting_of(pod, "main")?;
            (waiting.reason.as_deref() == Some("CreateContainerConfigError")
                && waiting.message.as_deref() == Some(message.as_str()))
            .then(|| pod.clone())
        }
    };
    let pod = t
        .pod_until(
            "env",
            "waiting for the ConfigMap",
            config_error(r#"configmap "settings" not found"#.to_string()),
        )
        .await;
    assert_eq!(phase_of(&pod), "Pending");
    assert!(
        pod.status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .is_some()
    );

    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings"},
        "data": {"host": "db.local", "mode": "postgres", "OVERRIDDEN": "from-envFrom",
                 "1st": "skipped"},
    }))
    .expect("configmap object");
    Api::<ConfigMap>::namespaced(t.client.clone(), &ns)
        .create(&PostParams::default(), &config_map)
        .await
        .expect("create configmap");
    t.pod_until(
        "env",
        "waiting for the Secret",
        config_error(r#"secret "db" not found"#.to_string()),
    )
    .await;

    let secrets = Api::<Secret>::namespaced(t.client.clone(), &ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "stringData": {"user": "u"},
    }))
    .expect("secret object");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    t.pod_until(
        "env",
        "waiting for the Secret's key",
        config_error(format!("couldn't find key password in Secret {ns}/db")),
    )
    .await;
    assert!(t.kubelet().running().is_empty(), "nothing runs yet");

    secrets
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "s3cret"}})),
        )
        .await
        .expect("add the key");
    let pod = t.pod_in_phase("env", "Succeeded").await;
    let term = terminated_of(&pod, "main").expect("main terminated");
    let expected = [
        "dsn=postgres://u:s3cret@db.local/env$(LATER)".to_string(),
        "name=env".to_string(),
        format!("ns={ns}"),
        format!("uid={uid}"),
        "app=demo".to_string(),
        format!("node={NODE_NAME}"),
        "ip=127.0.0.1".to_string(),
        "overridden=from-env".to_string(),
        "opt=unset".to_string(),
        "opt_key=unset".to_string(),
        "cfg=CFG_1st,CFG_OVERRIDDEN,CFG_host,CFG_mode,".to_string(),
        "host=db.local".to_string(),
        "digits=0".to_string(),
    ];
    assert_eq!(term.message, Some(expected.join("\n") + "\n"));
    t.finish().await;
    eprintln!("took {:?}", started.elapsed());
}

/// Every container runs as its own process with its own env; statuses are sorted by name; the
/// phase comes from all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_container_runs_and_statuses_are_sorted_by_name() {
    let started = Instant::now();
    let t = Setup::new("kubelet-sim-containers").await;
    let go = t.work.path().join("go");
    let go_env = json!([
        {"name": "ROLE", "value": "zeta"},
        {"name": "GO", "value": go.to_str().expect("utf-8 path")},
    ]);
    t.create_pod(pod_of(
        "two",
        vec![
            sh(
                "zeta",
                "busybox",
                r#"while [ ! -e "$GO" ]; do sleep 0.05; done; printf "$ROLE" > "$OUT"; exit 3"#,
                go_env,
            ),
            sh(
                "alpha",
                "busybox",
                r#"printf "$ROLE" > "$OUT""#,
                json!([{"name": "ROLE", "value": "alpha"}]),
            ),
        ],
    ))
    .await;
    t.create_pod(pod_of(
        "both-ok",
        vec![
            sh("b", "busybox", "true", json!([])),
            sh("a", "busybox", "true", json!([])),
        ],
    ))
    .await;

    let pod = t
        .pod_until("two", "alpha done, zeta running", |pod| {
            (terminated_of(pod, "alpha").is_some() && running_in(pod, "zeta")).then(|| pod.clone())
        })
        .await;
    assert_eq!(status_names(&pod), ["alpha", "zeta"]);
    assert_eq!(phase_of(&pod), "Running");
    let alpha = terminated_of(&pod, "alpha").expect("alpha");
    assert_eq!(
        (
            alpha.exit_code,
            alpha.reason.as_deref(),
            alpha.message.as_deref()
        ),
        (0, Some("Completed"), Some("alpha"))
    );
    // `both-ok`'s containers end at once, but may still be draining their logs: wait for them.
    t.pod_in_phase("both-ok", "Succeeded").await;
    let running: Vec<(String, String)> = t
        .kubelet()
        .running()
        .into_iter()
        .map(|p| (p.pod_name, p.container_name))
        .collect();
    assert_eq!(running, [("two".to_string(), "zeta".to_string())]);

    std::fs::write(&go, b"").expect("write the go file");
    let pod = t.pod_in_phase("two", "Failed").await;
    assert_eq!(status_names(&pod), ["alpha", "zeta"]);
    let zeta = terminated_of(&pod, "zeta").expect("zeta");
    assert_eq!(
        (
            zeta.exit_code,
            zeta.reason.as_deref(),
            zeta.message.as_deref()
        ),
        (3, Some("Error"), Some("zeta"))
    );
    assert_eq!(
        pod.status.and_then(|s| s.reason),
        None,
        "no pod-level reason"
    );

    let pod = t.pod_in_phase("both-ok", "Succeeded").await;
    assert_eq!(status_names(&pod), ["a", "b"]);
    assert_eq!(
        conditions(&pod)[1..3],
        [
            condition("Ready", "False", Some("PodCompleted")),
            condition("ContainersReady", "False", Some("PodCompleted")),
        ]
    );
    t.finish().await;
    eprintln!("took {:?}", started.elapsed());
}

/// With the option, an injected `istio-proxy` that is not in the spec is reported before `task`:
/// running while the pod runs, then terminated with its own message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoy_sidecar_comes_first_with_the_option() {
    let started = Instant::now();
    let t = Setup::with_options(
        "kubelet-sim-sidecar",
        Options {
            decoy_sidecar: true,
        },
    )
    .await;
    let go = t.work.path().join("go");
    let mut job = job(
        "with-sidecar",
        r#"while [ ! -e "$GO" ]; do sleep 0.05; done; echo '{"task": 1}' > "$OUT""#,
        &[("GO", go.to_str().expect("utf-8 path"))],
        None,
    );
    job["spec"]["template"]["spec"]["containers"][0]["name"] = json!("task");
    t.create_job(job).await;

    let pod_name = eventually("the job's pod", LIMIT, || async {
        t.job_pods("with-sidecar")
            .await
            .first()?
            .metadata
            .name
            .clone()
    })
    .await;
    let pod = t
        .pod_until(&pod_name, "task running", |pod| {
            running_in(pod, "task").then(|| pod.clone())
        })
        .await;
    assert_eq!(status_names(&pod), [DECOY_SIDECAR_NAME, "task"]);
    assert!(running_in(&pod, DECOY_SIDECAR_NAME));
    assert_eq!(
        conditions(&pod)[1],
        condition("Ready", "True", None),
        "the decoy is not in the spec"
    );

    std::fs::write(&go, b"").expect("write the go file");
    t.job_condition("with-sidecar", "Complete").await;
    let pod = t.pod_in_phase(&pod_name, "Succeeded").await;
    assert_eq!(status_names(&pod), [DECOY_SIDECAR_NAME, "task"]);
    let decoy = terminated(&pod);
    assert_eq!(
        (
            decoy.exit_code,
            decoy.reason.as_deref(),
            decoy.message.as_deref()
        ),
        (0, Some("Completed"), Some(DECOY_SIDECAR_MESSAGE))
    );
    let task = terminated_of(&pod, "task").expect("task");
    assert_eq!(task.message.as_deref(), Some("{\"task\": 1}\n"));
    t.finish().await;
    eprintln!("took {:?}", started.elapsed());
}

/// `Completed` for 0, `Error` otherwise, and the `KUBELET_SIM_TERMINATED_REASON` convention for
/// a non-zero exit (how a test plays an OOM kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_reasons_follow_the_kubelet_and_the_convention() {
    let started = Instant::now();
    let t = Setup::new("kubelet-sim-reasons").await;
    let oom = json!([{"name": TERMINATED_REASON_ENV, "value": "OOMKilled"}]);
    // (pod, script, env, phase, exit code, reason)
    let cases = [
        ("oom", "exit 137", oom.clone(), "Failed", 137, "OOMKilled"),
        (
            "oom-signal",
            "kill -KILL $$$$",
            oom.clone(),
            "Failed",
            137,
            "OOMKilled",
        ),
        ("oom-but-ok", "exit 0", oom, "Succeeded", 0, "Completed"),
        ("plain-error", "exit 2", json!([]), "Failed", 2, "Error"),
        ("plain-ok", "exit 0", json!([]), "Succeeded", 0, "Completed"),
    ];
    for (name, script, env, ..) in &cases {
        t.create_pod(pod_of(
            name,
            vec![sh("main", "busybox", script, env.clone())],
        ))
        .await;
    }
    for (name, _, _, phase, exit_code, reason) in cases {
        let term = terminated(&t.pod_in_phase(name, phase).await);
        assert_eq!(
            (term.exit_code, term.reason.as_deref()),
            (exit_code, Some(reason)),
            "{name}"
        );
    }
    t.finish().await;
    eprintln!("took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Container logs (the API server's `pods/log`, proxied to the simulator's log server)
// ---------------------------------------------------------------------------------------------

/// The API error of a request that should have failed.
fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// `kubectl ARGS` with the test kubeconfig: its stdout, or `None` when there is no kubectl on
/// PATH.
async fn kubectl(args: &[&str]) -> Option<String> {
    let kubeconfig = tokio::task::spawn_blocking(cluster::kubeconfig)
        .await
        .expect("kubeconfig");
    let run = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(LIMIT, run).await {
        Err(_) => panic!("kubectl {args:?} did not finish in {LIMIT:?}"),
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("no kubectl on PATH: skipping `kubectl {}`", args.join(" "));
            return None;
        }
        Ok(result) => result.unwrap_or_else(|e| panic!("run kubectl {args:?}: {e}")),
    };
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).expect("kubectl's output is UTF-8"))
}

/// `Api::<Pod>::logs` (and `kubectl logs`) give stdout and stderr interleaved in the order the
/// container wrote them, with the kubelet's `tailLines`, `limitBytes`, `timestamps`,
/// `sinceSeconds`/`sinceTime` and `previous`; a pod the simulator did not run has no log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_interleave_stdout_and_stderr_in_order() {
    let started = Instant::now();
    let t = Setup::new("kubelet-sim-logs").await;
    let mut script = String::new();
    let mut expected = String::new();
    for i in 1..=20 {
        script.push_str(&format!("echo out-{i}; echo err-{i} >&2; "));
        expected.push_str(&format!("out-{i}\nerr-{i}\n"));
    }
    // A last line without a newline stays so.
    script.push_str("printf last >&2");
    expected.push_str("last");
    t.create_pod(pod_of(
        "both",
        vec![sh("main", "busybox", &script, json!([]))],
    ))
    .await;
    let pod = t.pod_in_phase("both", "Succeeded").await;
    let pods = t.pods();
    let logs = |params: LogParams| {
        let pods = pods.clone();
        async move { pods.logs("both", &params).await }
    };

    assert_eq!(logs(LogParams::default()).await.expect("logs"), expected);
    let tail = LogParams {
        tail_lines: Some(3),
        ..LogParams::default()
    };
    assert_eq!(logs(tail).await.expect("tailLines"), "out-20\nerr-20\nlast");
    let limited = LogParams {
        limit_bytes: Some(9),
        ..LogParams::default()
    };
    assert_eq!(logs(limited).await.expect("limitBytes"), "out-1\nerr");
    let recent = LogParams {
        since_seconds: Some(3600),
        ..LogParams::default()
    };
    assert_eq!(logs(recent).await.expect("sinceSeconds"), expected);
    let future = LogParams {
        since_time: Some(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)),
        ..LogParams::default()
    };
    assert_eq!(logs(future).await.expect("sinceTime"), "");

    // Each line after its time (RFC 3339, nanoseconds), no earlier than the pod's start.
    let stamped = LogParams {
        timestamps: true,
        ..LogParams::default()
    };
    let stamped = logs(stamped).await.expect("timestamps");
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .expect("startTime")
        .0;
    let mut unstamped = Vec::new();
    for line in stamped.split('\n') {
        let (time, text) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("no timestamp in {line:?}"));
        assert_eq!(time.len(), "2006-01-02T15:04:05.000000000Z".len(), "{time}");
        let at: jiff::Timestamp = time.parse().unwrap_or_else(|e| panic!("{time}: {e}"));
        assert!(
            at >= start_time && at <= jiff::Timestamp::now(),
            "{at} is not between the pod's start {start_time} and now"
        );
        unstamped.push(text);
    }
    assert_eq!(unstamped.join("\n"), expected);

    // Containers are never restarted: there is no previous one.
    let previous = LogParams {
        previous: true,
        ..LogParams::default()
    };
    let status = api_error(logs(previous).await);
    assert_eq!(status.code, 400, "{status:?}");
    assert!(
        status
            .message
            .contains(r#"previous terminated container "main" in pod "both" not found"#),
        "{status:?}"
    );

    // A pod bound to the node before the simulator saw it (an earlier simulator's) has no log:
    // the simulator's 404 (the API server keeps the status, not the text, of a 404).
    let mut lost = pod_of("lost", vec![sh("main", "busybox", "echo never", json!([]))]);
    lost["spec"]["nodeName"] = json!(NODE_NAME);
    t.create_pod(lost).await;
    t.pod_in_phase("lost", "Failed").await;
    let status = api_error(pods.logs("lost", &LogParams::default()).await);
    assert_eq!(status.code, 404, "{status:?}");
    assert!(status.message.contains("pods/log lost"), "{status:?}");

    let ns = t.namespace.clone();
    if let Some(out) = kubectl(&["logs", "-n", &ns, "both"]).await {
        assert_eq!(out, expected);
        let tail = kubectl(&["logs", "-n", &ns, "both", "--tail=2"]).await;
        assert_eq!(tail.as_deref(), Some("err-20\nlast"));
    }
    t.finish().await;
    eprintln!("took {:?}", started.elapsed());
}

/// `log_stream` with `follow`: a line arrives as soon as it is written, while the container
/// still runs, and the stream ends once the container has ended and everything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_logs_streams_lines_until_the_container_ends() {
    use futures::{AsyncBufReadExt, StreamExt};

    let started = Instant::now();
    let t = Setup::new("kubelet-sim-follow").await;
    t.create_pod(pod_of(
        "slow",
        vec![sh(
            "main",
            "busybox",
            "echo first; sleep 1.5; echo second >&2",
            json!([]),
        )],
    ))
    .await;
    // The API server answers for a container it sees waiting: wait until it runs.
    t.pod_until("slow", "container main running", |pod| {
        running_in(pod, "main").then_some(())
    })
    .await;
    let follow = LogParams {
        follow: true,
        ..LogParams::default()
    };
    let stream = t
        .pods()
        .log_stream("slow", &follow)
        .await
        .expect("log stream");
    let mut lines = Box::pin(stream).lines();
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut next_line = async || {
        tokio::time::timeout_at(deadline, lines.next())
            .await
            .expect("the log stream moves on in time")
            .map(|line| line.expect("read a log line"))
    };

    assert_eq!(next_line().await.as_deref(), Some("first"));
    let first_at = Instant::now();
    let pod = t.pods().get("slow").await.expect("get pod");
    assert!(
        terminated_of(&pod, "main").is_none(),
        "the first line came only after the container ended: {:?}",
        pod.status
    );
    assert_eq!(next_line().await.as_deref(), Some("second"));
    assert!(
        first_at.elapsed() >= Duration::from_millis(500),
        "the lines came together, after {:?}",
        first_at.elapsed()
    );
    assert_eq!(
        next_line().await,
        None,
        "the stream ends after the last line"
    );
    t.pod_in_phase("slow", "Succeeded").await;

    // Following a container that has ended gives its log and ends.
    if let Some(out) = kubectl(&["logs", "-n", &t.namespace, "slow", "-f"]).await {
        assert_eq!(out, "first\nsecond\n");
    }
    t.finish().await;
    eprintln!("took {:?}", started.elapsed());
}
