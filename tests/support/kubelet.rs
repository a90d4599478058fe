//! A kubelet simulator: plays the node for the Pods of one namespace on a control plane that has
//! no kubelet (see the project's `test-control-plane.md`, "Playing the node").
//!
//! For every Pod in the namespace that is not yet bound it binds the Pod to a shared `Node`
//! object, runs the FIRST container's `command` + `args` as a local process (in its own process
//! group) and reports the result in the Pod's status, the way a kubelet does:
//!
//! - the container's `env` (`value` entries only) is expanded in order with `$(VAR)` references
//!   to earlier entries, then `command` and `args` are expanded from the complete env — exactly
//!   the kubelet's rules ([`ork::task_env::expand`]);
//! - the process gets that env on top of the test process's own environment (so `PATH` works);
//! - an env value equal to the container's `terminationMessagePath` (default
//!   `/dev/termination-log`) is replaced by a per-pod local file, created empty first; when the
//!   process ends, the last 4096 bytes of that file become the `message` of the container's
//!   `terminated` state (the kubelet's limit and the kubelet's choice of the tail);
//! - stdout and stderr go to files in the pod's directory under the work dir;
//! - phase `Succeeded` for exit code 0, else `Failed`; a process killed by a signal reports
//!   128 + the signal number;
//! - a running Pod that gets a `deletionTimestamp` has its process group killed (SIGKILL) and is
//!   then deleted with grace period 0, as a kubelet confirms a deletion.
//!
//! Pods the simulator cannot run fail instead of hanging: no `command` (there are no images, so
//! no entrypoints), `valueFrom` or `envFrom` (no API lookups) → exit code 128, reason
//! `StartError`; a program that cannot be started (e.g. not found) → exit code 127, reason
//! `StartError`. Containers after the first are not run; they are reported as running while the
//! first runs and as terminated with exit code 0 when it ends.
//!
//! API errors are logged to stderr and retried with back-off; nothing here panics on them.
//! Set `ORK_KUBELET_SIM_VERBOSE=1` to also log every bind, start and exit.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Container, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::task::{JoinHandle, JoinSet};

/// Name of the `Node` every simulator binds its Pods to (shared; created once, AlreadyExists is
/// fine).
pub const NODE_NAME: &str = "ork-sim-node";

/// The kubelet's default `terminationMessagePath`.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// The kubelet reads at most this many bytes (the end) of the termination message file.
pub const MAX_TERMINATION_MESSAGE_BYTES: u64 = 4096;

/// File names inside a pod's directory (see [`KubeletHandle::pod_dir`]).
pub const STDOUT_FILE: &str = "stdout";
pub const STDERR_FILE: &str = "stderr";
pub const TERMINATION_MESSAGE_FILE: &str = "termination-log";

/// Exit code reported when the container could not be started at all (no command, unsupported
/// env source), and for a pod the simulator lost track of.
pub const START_ERROR_EXIT_CODE: i32 = 128;
/// Exit code reported when the program could not be spawned (not found, not executable).
pub const SPAWN_ERROR_EXIT_CODE: i32 = 127;

/// The simulator. Start one per namespace with [`Kubelet::start`].
pub struct Kubelet;

impl Kubelet {
    /// Starts simulating the node for the Pods in `namespace`. Must be called inside a Tokio
    /// runtime. Per-pod files go under `work_dir` (created if missing). The simulator runs until
    /// the handle is stopped or dropped; both kill every process it started.
    pub fn start(client: Client, namespace: &str, work_dir: PathBuf) -> KubeletHandle {
        let shared = Arc::new(Shared {
            pods: Api::namespaced(client.clone(), namespace),
            nodes: Api::all(client),
            namespace: namespace.to_string(),
            work_dir,
            verbose: std::env::var_os("ORK_KUBELET_SIM_VERBOSE").is_some_and(|v| v != "0"),
            state: Mutex::new(State::default()),
        });
        let task = tokio::spawn(run(shared.clone()));
        KubeletHandle {
            shared,
            task: Some(task),
        }
    }
}

/// A running simulator. Dropping it stops the simulator and kills its processes (SIGKILL to each
/// process group); [`KubeletHandle::stop`] does the same and waits for the simulator's tasks to
/// end.
pub struct KubeletHandle {
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

/// A process the simulator is running for a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningProcess {
    pub pod_name: String,
    pub pod_uid: String,
    /// Also the process group id.
    pub pid: i32,
}

impl KubeletHandle {
    pub fn namespace(&self) -> &str {
        &self.shared.namespace
    }

    pub fn node_name(&self) -> &'static str {
        NODE_NAME
    }

    pub fn work_dir(&self) -> &Path {
        &self.shared.work_dir
    }

    /// The directory holding a pod's `stdout`, `stderr` and `termination-log` files.
    pub fn pod_dir(&self, pod_name: &str, pod_uid: &str) -> PathBuf {
        pod_dir(&self.shared.work_dir, pod_name, pod_uid)
    }

    /// The processes running right now.
    pub fn running(&self) -> Vec<RunningProcess> {
        let state = self.shared.lock();
        let mut out: Vec<RunningProcess> = state
            .pods
            .iter()
            .filter_map(|(uid, slot)| {
                slot.pid.map(|pid| RunningProcess {
                    pod_name: slot.name.clone(),
                    pod_uid: uid.clone(),
                    pid,
                })
            })
            .collect();
        out.sort_by(|a, b| a.pod_name.cmp(&b.pod_name));
        out
    }

    /// Stops the simulator: kills every process it started and waits for its tasks to end.
    pub async fn stop(mut self) {
        let task = self.task.take();
        self.shutdown();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    fn shutdown(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stopped = true;
            for slot in state.pods.values_mut() {
                if let Some(pid) = slot.pid.take() {
                    kill_group(pid);
                }
            }
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for KubeletHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn pod_dir(work_dir: &Path, pod_name: &str, pod_uid: &str) -> PathBuf {
    let short: String = pod_uid.chars().take(8).collect();
    work_dir.join(format!("{pod_name}-{short}"))
}

struct Shared {
    pods: Api<Pod>,
    nodes: Api<Node>,
    namespace: String,
    work_dir: PathBuf,
    verbose: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Set once by stop/drop: no process is started after that.
    stopped: bool,
    /// Pods this simulator has taken on, by UID, until they are gone from the API server.
    pods: HashMap<String, Slot>,
}

struct Slot {
    name: String,
    /// The running process (and process group), if any.
    pid: Option<i32>,
    /// The pod got a deletionTimestamp (or vanished): stop, then delete it with grace 0.
    deleting: bool,
    /// The pod's task has ended; a later deletion is handled by the watch loop.
    done: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn info(&self, msg: impl AsRef<str>) {
        if self.verbose {
            eprintln!("[kubelet-sim {}] {}", self.namespace, msg.as_ref());
        }
    }

    fn warn(&self, msg: impl AsRef<str>) {
        eprintln!("[kubelet-sim {}] {}", self.namespace, msg.as_ref());
    }

    /// Whether the pod's task should give up: the pod is being deleted, is gone, or the
    /// simulator is stopping.
    fn abandoned(&self, uid: &str) -> bool {
        let state = self.lock();
        state.stopped || state.pods.get(uid).is_none_or(|slot| slot.deleting)
    }
}

fn kill_group(pid: i32) {
    // Never 0 or 1: killpg(0) would hit the test process's own group.
    if pid <= 1 {
        return;
    }
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
}

fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Errors worth retrying: anything but a definite answer about the object.
fn retryable(err: &kube::Error) -> bool {
    !matches!(api_code(err), Some(400 | 403 | 404 | 405 | 409 | 410 | 422))
}

/// Back-off between retries: 100 ms doubling to 5 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(100))
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }
}

/// Current time as Kubernetes writes it (RFC 3339, whole seconds, UTC).
fn now() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// The watch loop
// ---------------------------------------------------------------------------------------------

async fn run(shared: Arc<Shared>) {
    let mut tasks = JoinSet::new();
    tasks.spawn(ensure_node(shared.clone()));

    let stream =
        watcher::watcher(shared.pods.clone(), watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    // UIDs listed since the last `Init`, to notice pods that vanished while the watch was down.
    let mut listed: Option<HashSet<String>> = None;
    while let Some(event) = stream.next().await {
        match event {
            Err(err) => shared.warn(format!("watch error (retrying): {err}")),
            Ok(Event::Init) => listed = Some(HashSet::new()),
            Ok(Event::InitApply(pod)) => {
                if let (Some(listed), Some(uid)) = (listed.as_mut(), pod.metadata.uid.as_ref()) {
                    listed.insert(uid.clone());
                }
                on_pod(&shared, pod, &mut tasks);
            }
            Ok(Event::InitDone) => {
                if let Some(listed) = listed.take() {
                    let gone: Vec<String> = shared
                        .lock()
                        .pods
                        .keys()
                        .filter(|uid| !listed.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in gone {
                        on_gone(&shared, &uid);
                    }
                }
            }
            Ok(Event::Apply(pod)) => on_pod(&shared, pod, &mut tasks),
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    on_gone(&shared, uid);
                }
            }
        }
        while let Some(result) = tasks.try_join_next() {
            if let Err(err) = result
                && err.is_panic()
            {
                shared.warn(format!("a simulator task panicked: {err}"));
            }
        }
    }
}

/// Decides what to do about a pod from its current state (level-triggered).
fn on_pod(shared: &Arc<Shared>, pod: Pod, tasks: &mut JoinSet<()>) {
    let (Some(uid), Some(name)) = (pod.metadata.uid.clone(), pod.metadata.name.clone()) else {
        return;
    };
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let terminal = phase == "Succeeded" || phase == "Failed";

    let mut state = shared.lock();
    if state.stopped {
        return;
    }
    match state.pods.get_mut(&uid) {
        Some(slot) if deleting => {
            if !slot.deleting {
                slot.deleting = true;
                if let Some(pid) = slot.pid {
                    shared.info(format!("pod {name} is being deleted: killing pid {pid}"));
                    kill_group(pid);
                }
            }
            // A running task deletes the pod itself once its process is gone.
            if slot.done {
                tasks.spawn(delete_now(shared.clone(), name, uid));
            }
        }
        Some(_) => {}
        None if deleting => {
            // Not ours to run (deleted before we bound it, or finished before we started):
            // confirm the deletion. Terminal and unbound pods are usually gone already.
            tasks.spawn(delete_now(shared.clone(), name, uid));
        }
        None if node.is_empty() => {
            state.pods.insert(
                uid.clone(),
                Slot {
                    name,
                    pid: None,
                    deleting: false,
                    done: false,
                },
            );
            tasks.spawn(run_pod(shared.clone(), pod));
        }
        None if node == NODE_NAME && !terminal => {
            // Bound to our node by someone else (an earlier simulator in this namespace): its
            // process is unknown, so report it lost, as a restarted kubelet would.
            state.pods.insert(
                uid.clone(),
                Slot {
                    name: name.clone(),
                    pid: None,
                    deleting: false,
                    done: true,
                },
            );
            tasks.spawn(fail_lost(shared.clone(), pod));
        }
        None => {}
    }
}

/// The pod is gone from the API server: stop its process, forget it.
fn on_gone(shared: &Shared, uid: &str) {
    let mut state = shared.lock();
    if let Some(slot) = state.pods.remove(uid)
        && let Some(pid) = slot.pid
    {
        shared.info(format!("pod {} is gone: killing pid {pid}", slot.name));
        kill_group(pid);
    }
}

async fn ensure_node(shared: Arc<Shared>) {
    let node: Node = match serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "labels": {"kubernetes.io/hostname": NODE_NAME, "ork.dev/kubelet-simulator": "true"},
        },
    })) {
        Ok(node) => node,
        Err(err) => {
            shared.warn(format!("cannot build the Node object: {err}"));
            return;
        }
    };
    let mut backoff = Backoff::new();
    loop {
        match shared.nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {
                shared.info(format!("created node {NODE_NAME}"));
                return;
            }
            Err(err) if api_code(&err) == Some(409) => return,
            Err(err) => shared.warn(format!("creating node {NODE_NAME} (retrying): {err}")),
        }
        backoff.wait().await;
    }
}

// ---------------------------------------------------------------------------------------------
// One pod
// ---------------------------------------------------------------------------------------------

async fn run_pod(shared: Arc<Shared>, pod: Pod) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    run_pod_inner(&shared, &pod, &name, &uid).await;
    // Whatever happened, the task is over: a deletion seen from now on is the loop's to confirm.
    let delete = {
        let mut state = shared.lock();
        let stopped = state.stopped;
        match state.pods.get_mut(&uid) {
            Some(slot) => {
                slot.done = true;
                slot.pid = None;
                slot.deleting && !stopped
            }
            None => false,
        }
    };
    if delete {
        delete_now(shared, name, uid).await;
    }
}

async fn run_pod_inner(shared: &Shared, pod: &Pod, name: &str, uid: &str) {
    if !bind(shared, name, uid).await {
        return;
    }
    let Some(container) = pod.spec.as_ref().and_then(|s| s.containers.first()) else {
        shared.warn(format!("pod {name} has no containers"));
        return;
    };
    let dir = pod_dir(&shared.work_dir, name, uid);
    let term_file = dir.join(TERMINATION_MESSAGE_FILE);
    let started_at = now();

    let prepared = match std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&term_file, b""))
        .map_err(|e| format!("cannot create {}: {e}", term_file.display()))
        .and_then(|()| prepare(container, &term_file))
    {
        Ok(prepared) => prepared,
        Err(message) => {
            shared.info(format!("pod {name} cannot start: {message}"));
            let outcome = Outcome::start_error(START_ERROR_EXIT_CODE, message, &started_at);
            report_terminated(shared, pod, uid, &outcome).await;
            return;
        }
    };

    // Spawn under the lock, so that a deletion or a stop either comes first (no process) or sees
    // the pid (and kills it).
    let spawned = {
        let mut state = shared.lock();
        if state.stopped || state.pods.get(uid).is_none_or(|s| s.deleting) {
            return;
        }
        let result = spawn(&prepared, &dir);
        if let Ok(child) = &result
            && let (Some(pid), Some(slot)) = (child.id(), state.pods.get_mut(uid))
        {
            slot.pid = Some(pid as i32);
        }
        result
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            let message = format!("failed to start {:?}: {err}", prepared.program);
            shared.info(format!("pod {name}: {message}"));
            let outcome = Outcome::start_error(SPAWN_ERROR_EXIT_CODE, message, &started_at);
            report_terminated(shared, pod, uid, &outcome).await;
            return;
        }
    };
    let pid = child.id().map(|p| p as i32).unwrap_or_default();
    shared.info(format!(
        "pod {name}: started pid {pid}: {:?}",
        prepared.argv()
    ));
    let container_id = format!("sim://{pid}");

    // Report Running, then wait for the process: the statuses are written in order. If the
    // report fails for good, the process still runs and its end is still reported.
    patch_status(
        shared,
        name,
        uid,
        &running_status(pod, &started_at, &container_id),
    )
    .await;
    let status = child.wait().await;
    kill_group(pid); // Whatever the process left behind in its group, as a container's end does.
    if let Some(slot) = shared.lock().pods.get_mut(uid) {
        slot.pid = None;
    }
    if shared.abandoned(uid) {
        return;
    }
    let exit_code = match status {
        Ok(status) => exit_code(status),
        Err(err) => {
            shared.warn(format!("pod {name}: waiting for pid {pid}: {err}"));
            START_ERROR_EXIT_CODE
        }
    };
    shared.info(format!("pod {name}: pid {pid} exited with {exit_code}"));
    let mut message = read_tail(&term_file, MAX_TERMINATION_MESSAGE_BYTES);
    if message.is_empty()
        && exit_code != 0
        && container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
    {
        message = log_tail(&dir);
    }
    let outcome = Outcome {
        exit_code,
        reason: if exit_code == 0 { "Completed" } else { "Error" },
        message,
        started_at,
        finished_at: now(),
        container_id: Some(container_id),
    };
    report_terminated(shared, pod, uid, &outcome).await;
}

/// Binds the pod to the node. False if the pod should not be run (gone, bound elsewhere,
/// deleted meanwhile, simulator stopping).
async fn bind(shared: &Shared, name: &str, uid: &str) -> bool {
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            uid: Some(uid.to_string()),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Node".to_string()),
            name: Some(NODE_NAME.to_string()),
            ..ObjectReference::default()
        },
    };
    let mut backoff = Backoff::new();
    loop {
        if shared.abandoned(uid) {
            return false;
        }
        let result: Result<Value, kube::Error> = shared
            .pods
            .create_subresource("binding", name, &PostParams::default(), &binding)
            .await;
        match result {
            Ok(_) => {
                shared.info(format!("bound pod {name} to {NODE_NAME}"));
                return true;
            }
            Err(err) if api_code(&err) == Some(409) => {
                // Already bound (perhaps by our own earlier attempt whose answer was lost), or
                // being deleted: look at the pod.
                match shared.pods.get_opt(name).await {
                    Ok(Some(current)) if current.metadata.uid.as_deref() == Some(uid) => {
                        let node = current.spec.and_then(|s| s.node_name).unwrap_or_default();
                        if node == NODE_NAME {
                            return true;
                        }
                        if !node.is_empty() || current.metadata.deletion_timestamp.is_some() {
                            shared.info(format!("not running pod {name}: {err}"));
                            return false;
                        }
                    }
                    Ok(_) => return false,
                    Err(get_err) => shared.warn(format!("reading pod {name}: {get_err}")),
                }
                shared.warn(format!("binding pod {name} (retrying): {err}"));
            }
            Err(err) if !retryable(&err) => {
                shared.warn(format!("binding pod {name}: {err}; giving up"));
                return false;
            }
            Err(err) => shared.warn(format!("binding pod {name} (retrying): {err}")),
        }
        backoff.wait().await;
    }
}

/// Patches the pod's status; retries until it succeeds. False if the pod is gone, should no
/// longer be reported on, or the API server refuses the patch for good.
async fn patch_status(shared: &Shared, name: &str, uid: &str, status: &Value) -> bool {
    let mut backoff = Backoff::new();
    loop {
        if shared.abandoned(uid) {
            return false;
        }
        match shared
            .pods
            .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
        {
            Ok(current) if current.metadata.uid.as_deref() == Some(uid) => return true,
            Ok(_) => return false, // a new pod with the same name: ours is gone
            Err(err) if api_code(&err) == Some(404) => return false,
            Err(err) if !retryable(&err) => {
                shared.warn(format!(
                    "patching the status of pod {name}: {err}; giving up"
                ));
                return false;
            }
            Err(err) => shared.warn(format!(
                "patching the status of pod {name} (retrying): {err}"
            )),
        }
        backoff.wait().await;
    }
}

/// Deletes the pod with grace period 0 (the node's confirmation). NotFound and a UID mismatch
/// (the pod is gone) are success.
async fn delete_now(shared: Arc<Shared>, name: String, uid: String) {
    let params = DeleteParams::default()
        .grace_period(0)
        .preconditions(Preconditions {
            uid: Some(uid.clone()),
            resource_version: None,
        });
    let mut backoff = Backoff::new();
    loop {
        match shared.pods.delete(&name, &params).await {
            Ok(_) => {
                shared.info(format!("deleted pod {name}"));
                return;
            }
            Err(err) if matches!(api_code(&err), Some(404 | 409)) => return,
            Err(err) if !retryable(&err) => {
                shared.warn(format!("deleting pod {name}: {err}; giving up"));
                return;
            }
            Err(err) => shared.warn(format!("deleting pod {name} (retrying): {err}")),
        }
        backoff.wait().await;
    }
}

/// A pod bound to our node that this simulator never ran.
async fn fail_lost(shared: Arc<Shared>, pod: Pod) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let at = now();
    let mut outcome = Outcome::start_error(
        137,
        "the kubelet simulator has no process for this pod (started by an earlier simulator?)"
            .to_string(),
        &at,
    );
    outcome.reason = "ContainerStatusUnknown";
    // This task is `done` from the start, so report without the `abandoned` check.
    let status = terminated_status(&pod, &outcome);
    let mut backoff = Backoff::new();
    loop {
        match shared
            .pods
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Ok(_) => return,
            Err(err) if !retryable(&err) => return,
            Err(err) => shared.warn(format!(
                "patching the status of pod {name} (retrying): {err}"
            )),
        }
        let gone = {
            let state = shared.lock();
            state.stopped || !state.pods.contains_key(&uid)
        };
        if gone {
            return;
        }
        backoff.wait().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// What to run for a container, after the kubelet's expansion.
#[derive(Debug)]
struct Prepared {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Prepared {
    fn argv(&self) -> Vec<&str> {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect()
    }
}

/// Applies the kubelet's rules: env values in order, each expanded from the entries before it;
/// then `command` and `args` expanded from the whole env. An env value equal to the
/// termination message path becomes `term_file`.
fn prepare(container: &Container, term_file: &Path) -> Result<Prepared, String> {
    if container.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err(format!(
            "container {:?}: envFrom is not supported by the kubelet simulator",
            container.name
        ));
    }
    let term_path = container
        .termination_message_path
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_TERMINATION_MESSAGE_PATH);
    let term_file = term_file.to_string_lossy();
    let mut env: Vec<(String, String)> = Vec::new();
    let mut defined: HashMap<String, String> = HashMap::new();
    for var in container.env.iter().flatten() {
        if var.value_from.is_some() {
            return Err(format!(
                "container {:?}: env {:?} uses valueFrom, which the kubelet simulator does not support",
                container.name, var.name
            ));
        }
        let raw = var.value.as_deref().unwrap_or_default();
        let mut value = ork::task_env::expand(raw, |n| defined.get(n).map(String::as_str));
        if value == term_path {
            value = term_file.to_string();
        }
        defined.insert(var.name.clone(), value.clone());
        env.push((var.name.clone(), value));
    }
    let lookup = |n: &str| defined.get(n).map(String::as_str);
    let mut argv: Vec<String> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(|s| ork::task_env::expand(s, lookup))
        .collect();
    if container.command.as_ref().is_none_or(|c| c.is_empty()) {
        return Err(format!(
            "container {:?} has no command: the kubelet simulator has no images, so no entrypoints",
            container.name
        ));
    }
    let program = argv.remove(0);
    Ok(Prepared {
        program,
        args: argv,
        env,
    })
}

fn spawn(prepared: &Prepared, dir: &Path) -> std::io::Result<tokio::process::Child> {
    let stdout = std::fs::File::create(dir.join(STDOUT_FILE))?;
    let stderr = std::fs::File::create(dir.join(STDERR_FILE))?;
    tokio::process::Command::new(&prepared.program)
        .args(&prepared.args)
        .envs(prepared.env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
}

fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => START_ERROR_EXIT_CODE,
    }
}

/// The last `max` bytes of a file (lossy UTF-8); empty if it cannot be read.
fn read_tail(path: &Path, max: u64) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > max && file.seek(SeekFrom::Start(len - max)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.take(max).read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `FallbackToLogsOnError`: the kubelet uses the last 80 lines (at most 2048 bytes) of the log.
fn log_tail(dir: &Path) -> String {
    let mut log = read_tail(&dir.join(STDOUT_FILE), 2048);
    log.push_str(&read_tail(&dir.join(STDERR_FILE), 2048));
    let lines: Vec<&str> = log.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(80)..].join("\n");
    while tail.len() > 2048 {
        let cut = tail
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| tail.len() - i <= 2048)
            .unwrap_or(tail.len());
        tail = tail[cut..].to_string();
    }
    tail
}

// ---------------------------------------------------------------------------------------------
// Statuses
// ---------------------------------------------------------------------------------------------

struct Outcome {
    exit_code: i32,
    reason: &'static str,
    message: String,
    started_at: String,
    finished_at: String,
    container_id: Option<String>,
}

impl Outcome {
    fn start_error(exit_code: i32, message: String, at: &str) -> Self {
        Outcome {
            exit_code,
            reason: "StartError",
            message,
            started_at: at.to_string(),
            finished_at: now(),
            container_id: None,
        }
    }
}

async fn report_terminated(shared: &Shared, pod: &Pod, uid: &str, outcome: &Outcome) {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    patch_status(shared, name, uid, &terminated_status(pod, outcome)).await;
}

fn containers(pod: &Pod) -> &[Container] {
    pod.spec.as_ref().map_or(&[], |s| s.containers.as_slice())
}

fn condition(kind: &str, status: bool, at: &str, reason: Option<&str>) -> Value {
    let mut c = json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": at,
    });
    if let Some(reason) = reason {
        c["reason"] = json!(reason);
    }
    c
}

fn running_status(pod: &Pod, started_at: &str, container_id: &str) -> Value {
    let statuses: Vec<Value> = containers(pod)
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": "",
                "containerID": container_id,
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": started_at}},
            })
        })
        .collect();
    json!({"status": {
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "startTime": started_at,
        "conditions": [
            condition("Initialized", true, started_at, None),
            condition("Ready", true, started_at, None),
            condition("ContainersReady", true, started_at, None),
            condition("PodScheduled", true, started_at, None),
        ],
        "containerStatuses": statuses,
    }})
}

fn terminated_status(pod: &Pod, outcome: &Outcome) -> Value {
    let statuses: Vec<Value> = containers(pod)
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut terminated = if i == 0 {
                json!({
                    "exitCode": outcome.exit_code,
                    "reason": outcome.reason,
                    "startedAt": outcome.started_at,
                    "finishedAt": outcome.finished_at,
                })
            } else {
                json!({
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": outcome.started_at,
                    "finishedAt": outcome.finished_at,
                })
            };
            if i == 0 && !outcome.message.is_empty() {
                terminated["message"] = json!(outcome.message);
            }
            let mut status = json!({
                "name": c.name,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": "",
                "ready": false,
                "started": false,
                "restartCount": 0,
                "state": {"terminated": terminated},
            });
            if let Some(id) = &outcome.container_id {
                status["containerID"] = json!(id);
                status["state"]["terminated"]["containerID"] = json!(id);
            }
            status
        })
        .collect();
    let at = &outcome.finished_at;
    json!({"status": {
        "phase": if outcome.exit_code == 0 { "Succeeded" } else { "Failed" },
        "hostIP": "127.0.0.1",
        "startTime": outcome.started_at,
        "conditions": [
            condition("Initialized", true, &outcome.started_at, None),
            condition("Ready", false, at, Some("PodCompleted")),
            condition("ContainersReady", false, at, Some("PodCompleted")),
            condition("PodScheduled", true, &outcome.started_at, None),
        ],
        "containerStatuses": statuses,
    }})
}
