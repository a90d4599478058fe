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
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use tempfile::TempDir;

use support::cluster::{self, eventually};
use support::kubelet::{Kubelet, KubeletHandle, NODE_NAME};

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
        let client = cluster::client().await;
        let namespace = cluster::create_test_namespace(&client, prefix).await;
        let work = tempfile::tempdir().expect("work dir");
        let kubelet = Kubelet::start(client.clone(), &namespace, work.path().join("kubelet"));
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

    // stdout went to the pod's file.
    let kubelet = t.kubelet.as_ref().expect("kubelet");
    let dir = kubelet.pod_dir(
        pod.metadata.name.as_deref().expect("name"),
        pod.metadata.uid.as_deref().expect("uid"),
    );
    let stdout = std::fs::read_to_string(dir.join("stdout")).expect("stdout file");
    assert_eq!(stdout, "to-stdout\n");
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
        json!([{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
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
    let dir = t
        .kubelet
        .as_ref()
        .expect("kubelet")
        .pod_dir("expand", pod.metadata.uid.as_deref().expect("uid"));
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
