//! One end-to-end test's world on the test control plane: its own namespace, a kubelet
//! simulator for it and an `ork controller` watching it, with helpers to drive and inspect
//! runs. Shared by the Kubernetes end-to-end test binaries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use ork::api::Run;
use serde_json::{Value, json};

use super::cluster::{self, eventually};
use super::kubelet::{Kubelet, KubeletHandle, Options};

pub const ORK: &str = env!("CARGO_BIN_EXE_ork");
pub const LONG: Duration = Duration::from_secs(120);

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// One test's world: a namespace, a node simulator and an `ork controller` for it.
pub struct Env {
    pub client: Client,
    pub ns: String,
    pub kubeconfig: PathBuf,
    pub work: tempfile::TempDir,
    pub kubelet: Option<KubeletHandle>,
    pub controller: Option<Child>,
    /// The controller's /healthz, /readyz and /metrics port.
    pub http_port: u16,
    /// Extra `ork controller` flags of this test.
    pub controller_args: Vec<String>,
}

impl Env {
    pub async fn new(prefix: &str) -> Env {
        Self::with_args(prefix, &[]).await
    }

    /// A world whose controller runs with `args` on top of the usual flags.
    pub async fn with_args(prefix: &str, args: &[&str]) -> Env {
        Self::with_node(prefix, args, Options::default()).await
    }

    /// A world whose node simulator runs with `options`.
    pub async fn with_node(prefix: &str, args: &[&str], options: Options) -> Env {
        let client = cluster::client().await;
        let kubeconfig = tokio::task::spawn_blocking(cluster::kubeconfig)
            .await
            .unwrap();
        install_crds(&kubeconfig);
        let ns = cluster::create_test_namespace(&client, prefix).await;
        let work = tempfile::tempdir().unwrap();
        let kubelet = Kubelet::start_with(client.clone(), &ns, work.path().join("node"), options);
        let mut env = Env {
            client,
            ns,
            kubeconfig,
            work,
            kubelet: Some(kubelet),
            controller: None,
            http_port: cluster::free_port(),
            controller_args: args.iter().map(|a| a.to_string()).collect(),
        };
        env.start_controller();
        env
    }

    pub fn start_controller(&mut self) {
        let args: Vec<&str> = self.controller_args.iter().map(String::as_str).collect();
        let child = self.spawn_controller(self.http_port, &args, "main");
        self.controller = Some(child);
    }

    /// An `ork controller` for this namespace, logging to the shared log, named `identity`.
    pub fn spawn_controller(&self, http_port: u16, extra: &[&str], identity: &str) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.controller_log())
            .unwrap();
        Command::new(ORK)
            .arg("controller")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--namespace", &self.ns, "--log-format", "json"])
            .arg("--metrics-address")
            .arg(format!("127.0.0.1:{http_port}"))
            .args(extra)
            .env(
                "ORK_LOG",
                std::env::var("ORK_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("POD_NAME", identity)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ork controller")
    }

    pub fn controller_log(&self) -> PathBuf {
        self.work.path().join("controller.log")
    }

    /// SIGKILL: no chance to finish anything it was doing.
    pub fn kill_controller(&mut self) {
        if let Some(mut child) = self.controller.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["-n", &self.ns])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn runs(&self) -> Api<Run> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn create_run(&self, name: &str, workflow: &str, params: Value) -> Run {
        let run: Run = serde_json::from_value(json!({
            "apiVersion": "ork.dev/v1alpha1", "kind": "Run",
            "metadata": {"name": name},
            "spec": {"workflowRef": {"name": workflow}, "params": params},
        }))
        .unwrap();
        self.runs()
            .create(&PostParams::default(), &run)
            .await
            .unwrap()
    }

    pub async fn apply_workflow(&self, manifest: &Value) {
        self.kubectl_ok(&["apply", "-f", "-"], Some(&manifest.to_string()));
    }

    pub async fn wait_final(&self, name: &str) -> Run {
        let runs = self.runs();
        let log = self.controller_log();
        eventually(
            &format!("run {name} to finish (log: {})", log.display()),
            LONG,
            || {
                let runs = runs.clone();
                async move {
                    let run = runs.get(name).await.ok()?;
                    let phase = run.status.as_ref()?.phase?;
                    phase.is_final().then_some(run)
                }
            },
        )
        .await
    }

    pub async fn wait_task_running(&self, run: &str, task: &str) {
        let runs = self.runs();
        eventually(&format!("task {task} of {run} to run"), LONG, || {
            let runs = runs.clone();
            async move {
                let run = runs.get(run).await.ok()?;
                let status = run.status?;
                status
                    .tasks
                    .iter()
                    .any(|t| t.name == task && t.phase == ork::api::TaskPhase::Running)
                    .then_some(())
            }
        })
        .await
    }

    /// Waits until `check` holds for the Run `name`, returning what it returned.
    pub async fn wait_run<T>(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&Run) -> Option<T>,
    ) -> T {
        let runs = self.runs();
        let log = self.controller_log();
        eventually(
            &format!("run {name}: {what} (log: {})", log.display()),
            LONG,
            || {
                let runs = runs.clone();
                let found = async move { runs.get(name).await.ok() };
                let check = &check;
                async move { check(&found.await?) }
            },
        )
        .await
    }

    /// The Events about object `name`, as `(reason, note, related object's name)`.
    pub async fn events_about(&self, name: &str) -> Vec<(String, String, Option<String>)> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), &self.ns);
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                (
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                    e.related.and_then(|r| r.name),
                )
            })
            .collect()
    }

    /// Peak resident memory of the controller so far, in KiB (Linux `VmHWM`).
    pub fn controller_peak_kib(&self) -> Option<u64> {
        let pid = self.controller.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The names of a run's Jobs, sorted.
    pub async fn job_names(&self, run: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .jobs_of(run)
            .await
            .iter()
            .map(|j| j.name_any())
            .collect();
        names.sort();
        names
    }

    pub async fn jobs_of(&self, run: &str) -> Vec<Job> {
        let selector = format!("ork.dev/run={run}");
        self.jobs()
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill_controller();
        drop(self.kubelet.take());
        if std::thread::panicking() {
            // Keep what explains the failure: the namespace and the controller's log.
            let kept = std::env::temp_dir().join(format!("ork-e2e-{}.log", self.ns));
            let _ = std::fs::copy(self.controller_log(), &kept);
            eprintln!(
                "kept namespace {} and controller log {}",
                self.ns,
                kept.display()
            );
            return;
        }
        // Best effort, in the background: the namespace's objects go with it.
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "namespace", &self.ns, "--wait=false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `kubectl apply --server-side` of `crds/`, once per test binary, waiting until established.
pub fn install_crds(kubeconfig: &Path) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| reinstall_crds(kubeconfig));
}

/// `kubectl apply --server-side` of `crds/`, now, waiting until established.
pub fn reinstall_crds(kubeconfig: &Path) {
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let crds = repo("crds");
    kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        crds.to_str().unwrap(),
    ]);
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/runs.ork.dev",
        "crd/workflows.ork.dev",
        "crd/schedules.ork.dev",
    ]);
}

/// What must be the same between the local runner and the cluster: per task, phase, attempts,
/// reason, exit code, outputs, whether it is a finally task, infrastructure retries and how each
/// attempt ended; and the run's phase and reason.
pub fn essence(run: &Value) -> Value {
    let status = &run["status"];
    let tasks: BTreeMap<String, Value> = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                json!([
                    t["phase"],
                    t["attempts"],
                    t["reason"],
                    t["exitCode"],
                    t["outputs"],
                    t["finally"],
                    t["infraRetries"],
                    t["history"].as_array().map(|h| h
                        .iter()
                        .map(|e| json!([e["attempt"], e["exitCode"], e["reason"]]))
                        .collect::<Vec<_>>()),
                ]),
            )
        })
        .collect();
    json!({
        "phase": status["phase"],
        "reason": status["conditions"][0]["reason"],
        "tasks": tasks,
    })
}

pub fn chain(name: &str, tasks: &[(&str, &str)]) -> Value {
    let mut previous: Option<&str> = None;
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|(task, script)| {
            let mut t = json!({"name": task, "command": ["sh", "-c", script]});
            if let Some(p) = previous {
                t["dependsOn"] = json!([p]);
            }
            previous = Some(task);
            t
        })
        .collect();
    json!({
        "apiVersion": "ork.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
        "spec": {"defaults": {"image": "busybox"}, "tasks": tasks},
    })
}

/// A kubeconfig for `user` of the test control plane's token file (`ork-test-user`,
/// `ork-viewer`: users whose rights come only from the RBAC a test binds), written to `to`.
pub fn kubeconfig_as(admin: &Path, to: &Path, user: &str) {
    let tokens = std::fs::read_to_string(admin.parent().unwrap().join("pki/tokens.csv")).unwrap();
    let token_of = |user: &str| {
        tokens
            .lines()
            .find(|l| l.split(',').nth(1) == Some(user))
            .and_then(|l| l.split(',').next())
            .unwrap_or_else(|| panic!("no {user} in tokens.csv: restart the control plane"))
            .to_string()
    };
    let config = std::fs::read_to_string(admin)
        .unwrap()
        .replace(&token_of("ork-admin"), &token_of(user));
    std::fs::write(to, config).unwrap();
}
