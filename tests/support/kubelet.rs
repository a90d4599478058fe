//! A kubelet simulator: plays the node for the Pods of one namespace on a control plane that has
//! no kubelet (see the project's `test-control-plane.md`, "Playing the node").
//!
//! For every Pod in the namespace that is not yet bound it binds the Pod to a shared `Node`
//! object ([`NODE_NAME`]), runs EVERY container's `command` + `args` as its own local process
//! (each in its own process group), and reports the Pod's status the way a Kubernetes 1.20
//! kubelet does for `restartPolicy: Never` (the policy is not read: a container is never
//! restarted).
//!
//! # Pod status
//!
//! - `status.startTime` is set (whole seconds, UTC) when the simulator accepts the pod, right
//!   after binding it, before any image or env check, as a kubelet does. `hostIP`, `podIP` and
//!   `podIPs` are `127.0.0.1`.
//! - Conditions, in the kubelet's order: `Initialized` True, `Ready` and `ContainersReady`
//!   (True while every container of the spec runs; else False with reason `ContainersNotReady`
//!   and message `containers with unready status: [a b]`, or reason `PodCompleted` once the pod
//!   Succeeded), `PodScheduled` True. `lastTransitionTime` changes only when a status flips.
//! - `containerStatuses` has one entry per container, SORTED BY NAME as a kubelet reports them
//!   (so an `istio-proxy` sidecar comes before a container named `task`); `restartCount` 0,
//!   `imageID` empty, `image` the spec's image. A container is `waiting` (`ready` false,
//!   `started` false), `running` (`ready` true, `started` true, `containerID` `sim://<pid>`) or
//!   `terminated` (`exitCode`, `reason`, `message` when not empty, `startedAt`, `finishedAt`).
//!   Before a container's process starts it is `waiting` with reason `ContainerCreating`.
//! - `phase` is the kubelet's: `Pending` while any container is waiting, `Running` once none
//!   waits and one runs, then — when all have terminated — `Succeeded` if all exited 0, else
//!   `Failed`.
//! - Statuses are written with merge patches of the `status` subresource, only when something
//!   changed; quick changes coalesce (a container that ends at once may never be seen `running`).
//!
//! # Running a container
//!
//! - Env, in the kubelet's order: `envFrom` sources first (later ones override earlier ones;
//!   `prefix` prepended; keys that are not valid env var names are skipped), then `env` in
//!   order (overriding `envFrom`). An entry with a non-empty `value` is expanded with `$(VAR)`
//!   references to everything defined before it; a `valueFrom` value is taken as it is. Then
//!   `command` and `args` are expanded from the complete env — exactly the kubelet's rules
//!   ([`ork::task_env::expand`]).
//! - `valueFrom` supports `secretKeyRef`, `configMapKeyRef` (the ConfigMap's `data`) and
//!   `fieldRef` (`metadata.name`, `metadata.namespace`, `metadata.uid`, `metadata.labels`,
//!   `metadata.annotations`, `metadata.labels['k']`, `metadata.annotations['k']` (empty when
//!   missing), `spec.nodeName` ([`NODE_NAME`]), `spec.serviceAccountName`, `status.hostIP`,
//!   `status.podIP`, `status.podIPs` (all `127.0.0.1`)); `envFrom` supports `secretRef` and
//!   `configMapRef`. Secrets and ConfigMaps are read from the pod's namespace with the
//!   simulator's client.
//! - A missing Secret/ConfigMap or key whose reference is not `optional: true` keeps the
//!   container `waiting` with reason `CreateContainerConfigError` and the kubelet's message:
//!   `secret "db" not found`, `configmap "settings" not found`,
//!   `couldn't find key password in Secret <ns>/db`, `couldn't find key mode in ConfigMap
//!   <ns>/settings`. The simulator re-checks every [`CONFIG_RETRY_PERIOD`] (the message follows
//!   the current problem) and starts the container as soon as everything resolves — however
//!   late that is, as a kubelet does. An optional reference that is missing leaves the variable
//!   (or the `envFrom` source) out.
//! - The process gets that env on top of the test process's own environment (so `PATH` works).
//!   An env value (from any source) equal to the container's `terminationMessagePath` (default
//!   `/dev/termination-log`) is replaced by the container's local file, created empty first;
//!   when the process ends, the last 4096 bytes of that file become the `message` of its
//!   `terminated` state (the kubelet's limit and the kubelet's choice of the tail). With
//!   `terminationMessagePolicy: FallbackToLogsOnError`, an empty message of a failed container
//!   is the tail of its log (80 lines, 2048 bytes).
//! - Each container has its own directory ([`KubeletHandle::container_dir`]): the working
//!   directory of its process, with its `log` ([`LOG_FILE`]: stdout and stderr together, see
//!   "Logs") and `termination-log` files.
//! - `terminated.reason`: `Completed` for exit code 0, `Error` otherwise; a process killed by a
//!   signal reports 128 + the signal number. CONVENTION (a real kubelet reports `OOMKilled`
//!   when a container hits its memory limit; nothing here runs out of memory): a container
//!   whose env has [`TERMINATED_REASON_ENV`]`=<Reason>` (e.g. `OOMKilled`) and exits non-zero
//!   is reported with that reason and its own exit code (so `exit 137` for an OOM kill).
//!
//! # Images
//!
//! There are no images: `image` is only checked, the container's `command` is run locally.
//! The check is the kubelet's, before anything else (see [`image_pull`]):
//!
//! - An image that is not a valid reference (Docker's grammar: e.g. uppercase letters in the
//!   repository part, spaces, empty) keeps the container `waiting` with reason
//!   `InvalidImageName` and message `Failed to apply default image tag "<image>": couldn't parse
//!   image reference "<image>": invalid reference format` (`invalid reference format:
//!   repository name must be lowercase` for uppercase letters). It never runs. (A 1.20 API
//!   server already rejects an empty image and one with leading or trailing whitespace.)
//! - CONVENTION: an image whose registry host ends in `.invalid` (e.g.
//!   `registry.invalid/app:1`; the host is the part before the first `/` when it contains a
//!   `.` or `:`) cannot be pulled. The container stays `waiting` and never runs: reason
//!   `ErrImagePull`, message `rpc error: code = NotFound desc = failed to pull and unpack image
//!   "<ref>": failed to resolve reference "<ref>": <ref>: not found` (`<ref>` is the image with
//!   the default tag `:latest` applied), then reason `ImagePullBackOff`, message `Back-off
//!   pulling image "<image>"`, alternating every [`IMAGE_PULL_RETRY_PERIOD`]. The phase stays
//!   `Pending` (unless the active deadline passes, below).
//!
//! # Ending a pod
//!
//! - `spec.activeDeadlineSeconds`: once the pod has been active that long since its
//!   `status.startTime` (real time, measured from the whole-second time the simulator wrote),
//!   the simulator kills every process of the pod (SIGKILL to each process group), starts
//!   nothing more, and reports what a 1.20 kubelet reports: phase `Failed`, `reason:
//!   DeadlineExceeded`, `message: Pod was active on the node longer than the specified
//!   deadline`; each container that was running `terminated` with exit code 137, reason
//!   `Error`, `finishedAt` the kill time; containers that had finished keep their state;
//!   containers still waiting (image, config) stay `waiting`. Pending pods are failed too, as
//!   a kubelet does. The value is read when the pod is accepted (a later change is ignored).
//! - A Pod the simulator took on (running or still waiting) that gets a `deletionTimestamp` has
//!   its process groups killed (SIGKILL) and is then deleted with grace period 0, as a kubelet
//!   confirms a deletion; no status is written for it after that.
//! - A pod bound to [`NODE_NAME`] that this simulator did not start (an earlier simulator's)
//!   is reported `Failed`, every container terminated with exit code 137 and reason
//!   `ContainerStatusUnknown`, as a restarted kubelet does with a lost container.
//!
//! Containers the simulator cannot run fail instead of hanging: no `command` (there are no
//! images, so no entrypoints) or a `resourceFieldRef` → `terminated` with exit code 128 and
//! reason `StartError` (after the image and Secret/ConfigMap checks); a program that cannot be
//! started (e.g. not found) → exit code 127, reason `StartError`.
//!
//! # Logs
//!
//! The simulator serves container logs as a kubelet does, so `kubectl logs` and the API's
//! `pods/log` subresource (kube's `Api::<Pod>::logs` and `log_stream`) work:
//!
//! - A container's stdout and stderr are ONE pipe (both fds are its write end), so the log has
//!   them interleaved exactly in the order written, as a container runtime's log does. The
//!   simulator copies the pipe into the container's [`LOG_FILE`] and notes when it read each
//!   line (a line's time is when the simulator read it: near enough for `timestamps` and
//!   `sinceSeconds`). When the process has exited (and the rest of its process group was
//!   killed) the simulator reads until every writer is gone — at most [`LOG_DRAIN_LIMIT`]
//!   (something that left the group may hold the pipe) — and only then reports the container
//!   `terminated`: a finished container's log is complete. A last line without `\n` counts as
//!   a line once the container has ended; until then a partial line is not served.
//! - One HTTPS server per test process ([`log_server_port`]), on `127.0.0.1` with a
//!   self-signed certificate (the test API server has no `--kubelet-certificate-authority`, so
//!   it does not verify the kubelet), running on a thread and Tokio runtime of its own (it
//!   outlives any one test's runtime). It finds a pod through a process-wide registry of the
//!   running simulators (by namespace, then pod name).
//! - The API server finds it through the Node: every simulator makes sure [`NODE_NAME`] exists
//!   with `status.addresses` `[{type: InternalIP, address: 127.0.0.1}]` and
//!   `status.daemonEndpoints.kubeletEndpoint.Port` the server's port — created with that status,
//!   or, when the Node is there already (a Node outlives test processes), its `status`
//!   subresource merge-patched, once per process. Until that is done (at most
//!   [`NODE_WAIT_LIMIT`]) the simulator binds no pod, as a kubelet runs nothing before it has
//!   registered its node: a container's log can be read as soon as it runs.
//! - `GET /containerLogs/{namespace}/{pod}/{container}` with the query parameters the API
//!   server passes on: `follow`, `tailLines`, `limitBytes`, `timestamps`, `sinceSeconds`,
//!   `sinceTime`, `previous` (others are ignored). The answer is `200`, `Content-Type:
//!   text/plain`, chunked: the lines from the `sinceSeconds`/`sinceTime` time on, only the last
//!   `tailLines` of them, each prefixed with its time (RFC 3339, 9 fractional digits, UTC, and a
//!   space, the kubelet's `RFC3339NanoFixed`) with `timestamps=true`, cut after `limitBytes`
//!   bytes (prefixes count). With `follow=true` new lines are sent as they are read until the
//!   container has terminated and everything is sent, then the response ends.
//! - Errors are plain text, with the kubelet's words: an unknown pod `404 pod "p" does not
//!   exist`; a container not in the pod's spec `404 container "c" not found in pod "p"`;
//!   `previous=true` `400 previous terminated container "c" in pod "p" not found` (containers
//!   are never restarted); a container not started yet `400 container "c" in pod "p" is waiting
//!   to start: ContainerCreating` (the API server answers that itself for a container it sees
//!   waiting); a container of a pod this simulator took over as lost (below) `404 container "c"
//!   in pod "p" has no log: the kubelet simulator did not run it`; malformed parameters `400`,
//!   out-of-range ones `422`. (The API server passes the status on, and the text as the
//!   message of a 400; a 404 gets its own message: `the server could not find the requested
//!   resource ( pods/log p)`.)
//!
//! # Opt-in (`Kubelet::start_with` and [`Options`])
//!
//! - [`Options::decoy_sidecar`]: the status also lists a container [`DECOY_SIDECAR_NAME`]
//!   (`istio-proxy`) that is NOT in the spec, as an injected sidecar appears: `running` from the
//!   pod's start until the pod's phase is terminal, then `terminated` with exit code 0, reason
//!   `Completed` and message [`DECOY_SIDECAR_MESSAGE`] (`{"sidecar": true}`). It plays no part
//!   in the phase or the conditions. Sorted by name, it comes before a container named `task`:
//!   a controller that takes the first container status reads the decoy.
//!
//! API errors are logged to stderr and retried with back-off; nothing here panics on them.
//! Set `ORK_KUBELET_SIM_VERBOSE=1` to also log every bind, start and exit, image and config
//! problem, deadline kill, reason convention and log request.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use http::StatusCode;
use hyper::body::Bytes;
use k8s_openapi::api::core::v1::{
    Binding, ConfigMap, Container, EnvVarSource, Node, ObjectReference, Pod, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::PrivatePkcs8KeyDer;

/// Name of the `Node` every simulator binds its Pods to (shared; created once, AlreadyExists is
/// fine).
pub const NODE_NAME: &str = "ork-sim-node";

/// The address reported as `hostIP` and `podIP` (the processes run on this machine).
pub const POD_IP: &str = "127.0.0.1";

/// The kubelet's default `terminationMessagePath`.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// The kubelet reads at most this many bytes (the end) of the termination message file.
pub const MAX_TERMINATION_MESSAGE_BYTES: u64 = 4096;

/// File names inside a container's directory (see [`KubeletHandle::container_dir`]): the
/// container's log (stdout and stderr interleaved as written) and its termination message.
pub const LOG_FILE: &str = "log";
pub const TERMINATION_MESSAGE_FILE: &str = "termination-log";

/// How long the simulator goes on reading a container's output once its process group is gone
/// (whatever left the group may hold the pipe open).
pub const LOG_DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// How long a pod waits, before it is bound, for the Node to point at the log server.
pub const NODE_WAIT_LIMIT: Duration = Duration::from_secs(30);

/// Exit code reported when the container could not be started at all (no command, unsupported
/// env source), and for a pod the simulator lost track of.
pub const START_ERROR_EXIT_CODE: i32 = 128;
/// Exit code reported when the program could not be spawned (not found, not executable).
pub const SPAWN_ERROR_EXIT_CODE: i32 = 127;
/// Exit code of a process killed with SIGKILL (the active deadline, a lost pod).
pub const KILLED_EXIT_CODE: i32 = 137;

/// Convention: a container whose env sets this variable to a reason (e.g. `OOMKilled`) and
/// exits non-zero is reported `terminated` with that reason instead of `Error`.
pub const TERMINATED_REASON_ENV: &str = "KUBELET_SIM_TERMINATED_REASON";

/// How long an unpullable image shows `ErrImagePull`, then `ImagePullBackOff`, in turn.
pub const IMAGE_PULL_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// How often a container waiting with `CreateContainerConfigError` looks for its Secrets and
/// ConfigMaps again.
pub const CONFIG_RETRY_PERIOD: Duration = Duration::from_secs(1);

/// The pod-level `reason` and `message` of a pod failed by its `activeDeadlineSeconds`.
pub const DEADLINE_REASON: &str = "DeadlineExceeded";
pub const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// The decoy sidecar of [`Options::decoy_sidecar`]: its name, image and termination message.
pub const DECOY_SIDECAR_NAME: &str = "istio-proxy";
pub const DECOY_SIDECAR_IMAGE: &str = "docker.io/istio/proxyv2:1.9.0";
pub const DECOY_SIDECAR_MESSAGE: &str = r#"{"sidecar": true}"#;

/// Behaviours a real kubelet shows only in some clusters; all off by default.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Report an injected sidecar [`DECOY_SIDECAR_NAME`] that is not in the Pod's spec (see
    /// the module doc).
    pub decoy_sidecar: bool,
}

/// The simulator. Start one per namespace with [`Kubelet::start`] or [`Kubelet::start_with`].
pub struct Kubelet;

impl Kubelet {
    /// Starts simulating the node for the Pods in `namespace` with the default [`Options`].
    /// Must be called inside a Tokio runtime. Per-container files go under `work_dir` (created
    /// if missing). The simulator runs until the handle is stopped or dropped; both kill every
    /// process it started.
    pub fn start(client: Client, namespace: &str, work_dir: PathBuf) -> KubeletHandle {
        Kubelet::start_with(client, namespace, work_dir, Options::default())
    }

    /// [`Kubelet::start`] with opt-in behaviours.
    pub fn start_with(
        client: Client,
        namespace: &str,
        work_dir: PathBuf,
        options: Options,
    ) -> KubeletHandle {
        let shared = Arc::new(Shared {
            pods: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client.clone(), namespace),
            nodes: Api::all(client),
            namespace: namespace.to_string(),
            work_dir,
            options,
            verbose: verbose(),
            state: Mutex::new(State::default()),
        });
        register(&shared);
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

/// A process the simulator is running for a pod's container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningProcess {
    pub pod_name: String,
    pub pod_uid: String,
    pub container_name: String,
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

    pub fn options(&self) -> &Options {
        &self.shared.options
    }

    /// The directory holding a pod's container directories.
    pub fn pod_dir(&self, pod_name: &str, pod_uid: &str) -> PathBuf {
        pod_dir(&self.shared.work_dir, pod_name, pod_uid)
    }

    /// The directory of one container: its process's working directory, with its [`LOG_FILE`]
    /// and [`TERMINATION_MESSAGE_FILE`].
    pub fn container_dir(&self, pod_name: &str, pod_uid: &str, container: &str) -> PathBuf {
        self.pod_dir(pod_name, pod_uid).join(container)
    }

    /// The processes running right now, by pod name, then container name.
    pub fn running(&self) -> Vec<RunningProcess> {
        let state = self.shared.lock();
        let mut out: Vec<RunningProcess> = state
            .pods
            .iter()
            .flat_map(|(uid, slot)| {
                slot.pids.iter().map(|(container, pid)| RunningProcess {
                    pod_name: slot.name.clone(),
                    pod_uid: uid.clone(),
                    container_name: container.clone(),
                    pid: *pid,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.pod_name, &a.container_name).cmp(&(&b.pod_name, &b.container_name)));
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
        unregister(&self.shared);
        {
            let mut state = self.shared.lock();
            state.stopped = true;
            for slot in state.pods.values_mut() {
                for (_, pid) in std::mem::take(&mut slot.pids) {
                    kill_group(pid);
                }
                slot.wake.send_replace(());
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
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    nodes: Api<Node>,
    namespace: String,
    work_dir: PathBuf,
    options: Options,
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
    /// The names of the pod's containers (its spec's).
    containers: Vec<String>,
    /// The logs of the containers started so far, by container name.
    logs: BTreeMap<String, Arc<ContainerLog>>,
    /// The running processes (each also a process group), by container name.
    pids: BTreeMap<String, i32>,
    /// The pod got a deletionTimestamp (or vanished): stop, then delete it with grace 0.
    deleting: bool,
    /// The pod's task has ended; a later deletion is handled by the watch loop.
    done: bool,
    /// When the pod's active deadline killed it: nothing starts any more.
    halted_at: Option<String>,
    /// Signalled when `deleting`, `halted_at` or the simulator's `stopped` change, so that the
    /// pod's waits end at once (the sender's drop, when the slot goes, signals too).
    wake: watch::Sender<()>,
}

impl Slot {
    fn new(pod: &Pod, name: String, done: bool) -> Slot {
        Slot {
            name,
            containers: pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .map(|c| c.name.clone())
                .collect(),
            logs: BTreeMap::new(),
            pids: BTreeMap::new(),
            deleting: false,
            done,
            halted_at: None,
            wake: watch::Sender::new(()),
        }
    }

    fn kill_all(&self) {
        for pid in self.pids.values() {
            kill_group(*pid);
        }
    }
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

    /// Whether the pod's tasks should give up without reporting: the pod is being deleted, is
    /// gone, or the simulator is stopping.
    fn abandoned(&self, uid: &str) -> bool {
        let state = self.lock();
        state.stopped || state.pods.get(uid).is_none_or(|slot| slot.deleting)
    }

    /// Whether a container of the pod may still start: not abandoned, deadline not passed.
    fn may_start(&self, uid: &str) -> bool {
        let state = self.lock();
        !state.stopped
            && state
                .pods
                .get(uid)
                .is_some_and(|slot| !slot.deleting && slot.halted_at.is_none())
    }

    /// When the pod's active deadline killed it, if it did.
    fn halted_at(&self, uid: &str) -> Option<String> {
        self.lock().pods.get(uid).and_then(|s| s.halted_at.clone())
    }

    fn subscribe(&self, uid: &str) -> Option<watch::Receiver<()>> {
        self.lock().pods.get(uid).map(|slot| slot.wake.subscribe())
    }
}

/// Whether `ORK_KUBELET_SIM_VERBOSE` asks for every step to be logged.
fn verbose() -> bool {
    std::env::var_os("ORK_KUBELET_SIM_VERBOSE").is_some_and(|v| v != "0")
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

/// A time as Kubernetes writes it: whole seconds.
fn whole_seconds(t: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// Current time as Kubernetes writes it (RFC 3339, whole seconds, UTC).
fn now() -> String {
    whole_seconds(jiff::Timestamp::now()).to_string()
}

/// Go's `%q` of a string (what the kubelet's messages quote names with).
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if c.is_control() && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
                shared.info(format!(
                    "pod {name} is being deleted: killing pids {:?}",
                    slot.pids
                ));
                slot.kill_all();
                slot.wake.send_replace(());
            }
            // A running task deletes the pod itself once its processes are gone.
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
            state.pods.insert(uid.clone(), Slot::new(&pod, name, false));
            tasks.spawn(run_pod(shared.clone(), pod));
        }
        None if node == NODE_NAME && !terminal => {
            // Bound to our node by someone else (an earlier simulator in this namespace): its
            // process is unknown, so report it lost, as a restarted kubelet would.
            state.pods.insert(uid.clone(), Slot::new(&pod, name, true));
            tasks.spawn(fail_lost(shared.clone(), pod));
        }
        None => {}
    }
}

/// The pod is gone from the API server: stop its process, forget it.
fn on_gone(shared: &Shared, uid: &str) {
    let mut state = shared.lock();
    // Dropping the slot wakes the pod's tasks.
    if let Some(slot) = state.pods.remove(uid)
        && !slot.pids.is_empty()
    {
        shared.info(format!(
            "pod {} is gone: killing pids {:?}",
            slot.name, slot.pids
        ));
        slot.kill_all();
    }
}

/// Makes sure the Node exists and points at this process's log server (see "Logs"): creates it
/// with its status, or patches the status of the one that is there (once per process).
async fn ensure_node(shared: Arc<Shared>) {
    let port = match log_server_port() {
        Ok(port) => Some(port),
        Err(err) => {
            shared.warn(format!("no log server, so no container logs: {err}"));
            None
        }
    };
    let mut status = json!({"addresses": [{"type": "InternalIP", "address": POD_IP}]});
    if let Some(port) = port {
        status["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": port}});
    }
    let node: Node = match serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "labels": {"kubernetes.io/hostname": NODE_NAME, "ork.dev/kubelet-simulator": "true"},
        },
        // Nodes take their status on create.
        "status": status,
    })) {
        Ok(node) => node,
        Err(err) => {
            shared.warn(format!("cannot build the Node object: {err}"));
            return;
        }
    };
    let pointed = || port.is_none() || NODE_POINTED.load(Ordering::SeqCst);
    let mut backoff = Backoff::new();
    loop {
        match shared.nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {
                shared.info(format!("created node {NODE_NAME} (logs on port {port:?})"));
                if port.is_some() {
                    NODE_POINTED.store(true, Ordering::SeqCst);
                }
                return;
            }
            Err(err) if api_code(&err) == Some(409) => {
                if pointed() {
                    return;
                }
                let patch = json!({ "status": status });
                match shared
                    .nodes
                    .patch_status(NODE_NAME, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        shared.info(format!("node {NODE_NAME}: logs on port {port:?}"));
                        NODE_POINTED.store(true, Ordering::SeqCst);
                        return;
                    }
                    // Deleted meanwhile: create it again.
                    Err(err) if api_code(&err) == Some(404) => {}
                    Err(err) => shared.warn(format!(
                        "patching the status of node {NODE_NAME} (retrying): {err}"
                    )),
                }
            }
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
    run_pod_inner(&shared, pod, &name, &uid).await;
    // Whatever happened, the task is over: a deletion seen from now on is the loop's to confirm.
    let delete = {
        let mut state = shared.lock();
        let stopped = state.stopped;
        match state.pods.get_mut(&uid) {
            Some(slot) => {
                slot.done = true;
                slot.pids.clear();
                slot.deleting && !stopped
            }
            None => false,
        }
    };
    if delete {
        delete_now(shared, name, uid).await;
    }
}

/// A container's new state, from its task to the pod's task.
type Update = (usize, ContainerState);

/// Binds the pod, runs one task per container and reports the pod's status whenever it changes,
/// until every container task has ended (all terminated, or the deadline stopped them) or the
/// pod is abandoned. Returns once every container task has ended.
async fn run_pod_inner(shared: &Arc<Shared>, pod: Pod, name: &str, uid: &str) {
    node_registered(shared, uid).await;
    if !bind(shared, name, uid).await {
        return;
    }
    let Some(mut wake) = shared.subscribe(uid) else {
        return;
    };
    let accepted = jiff::Timestamp::now();
    let started_at = whole_seconds(accepted).to_string();
    // The deadline counts from `startTime` as written (whole seconds), as a kubelet's does.
    let deadline = active_deadline(&pod).map(|seconds| {
        let written_ago = Duration::from_nanos(accepted.subsec_nanosecond().max(0) as u64);
        tokio::time::Instant::now() + Duration::from_secs(seconds).saturating_sub(written_ago)
    });
    let pod = Arc::new(pod);
    let mut view = PodView::new(&pod, &started_at, shared.options.decoy_sidecar);

    let (tx, mut updates) = mpsc::unbounded_channel::<Update>();
    let mut containers = JoinSet::new();
    for index in 0..view.containers.len() {
        containers.spawn(run_container(ContainerTask {
            shared: shared.clone(),
            pod: pod.clone(),
            index,
            uid: uid.to_string(),
            dir: pod_dir(&shared.work_dir, name, uid).join(&view.containers[index].name),
            tx: tx.clone(),
            wake: wake.clone(),
        }));
    }
    drop(tx);

    let mut open = true;
    let mut halted = false;
    let mut reported: Option<Value> = None;
    loop {
        while let Ok((index, state)) = updates.try_recv() {
            view.set(index, state);
        }
        if shared.abandoned(uid) {
            break;
        }
        let finished = containers.is_empty();
        // After the deadline only the final status is written: the kubelet's first word on it
        // is the failed pod with its killed containers.
        if finished || !halted {
            let status = view.status();
            if reported.as_ref() != Some(&status) {
                patch_status(shared, name, uid, &status).await;
                reported = Some(status);
            }
        }
        if finished {
            break;
        }
        tokio::select! {
            update = updates.recv(), if open => match update {
                Some((index, state)) => view.set(index, state),
                None => open = false,
            },
            Some(joined) = containers.join_next() => {
                if let Err(err) = joined
                    && err.is_panic()
                {
                    shared.warn(format!("pod {name}: a container task panicked: {err}"));
                }
            }
            () = sleep_until(deadline), if !halted => {
                halted = true;
                halt(shared, name, uid);
                view.fail(DEADLINE_REASON, DEADLINE_MESSAGE);
            }
            _ = wake.changed() => {}
        }
    }
    // The containers' tasks end once the pod is abandoned (their processes are killed).
    while containers.join_next().await.is_some() {}
}

/// Waits until the Node points at this process's log server (see "Logs"), as a kubelet
/// registers its node before it runs anything: so the logs of a running container can be read
/// at once. Gives up after [`NODE_WAIT_LIMIT`] (the API server is not answering), or at once if
/// there is no log server.
async fn node_registered(shared: &Shared, uid: &str) {
    let deadline = tokio::time::Instant::now() + NODE_WAIT_LIMIT;
    while !NODE_POINTED.load(Ordering::SeqCst) && log_server_port().is_ok() {
        if shared.abandoned(uid) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            shared.warn(format!(
                "node {NODE_NAME} does not point at the log server after {NODE_WAIT_LIMIT:?}; \
                 running pods all the same"
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn active_deadline(pod: &Pod) -> Option<u64> {
    let seconds = pod.spec.as_ref()?.active_deadline_seconds?;
    Some(seconds.max(0) as u64)
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The active deadline passed: kill every process of the pod, start nothing more.
fn halt(shared: &Shared, name: &str, uid: &str) {
    let at = now();
    let mut state = shared.lock();
    let Some(slot) = state.pods.get_mut(uid) else {
        return;
    };
    shared.info(format!(
        "pod {name}: active deadline exceeded: killing pids {:?}",
        slot.pids
    ));
    slot.halted_at = Some(at);
    slot.kill_all();
    slot.wake.send_replace(());
}

/// What one container's task needs.
struct ContainerTask {
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    /// Index in the pod's `spec.containers`.
    index: usize,
    uid: String,
    dir: PathBuf,
    tx: mpsc::UnboundedSender<Update>,
    wake: watch::Receiver<()>,
}

impl ContainerTask {
    fn container(&self) -> Option<&Container> {
        self.pod.spec.as_ref()?.containers.get(self.index)
    }

    fn report(&self, state: ContainerState) {
        // The pod's task is gone only when the pod is abandoned: nothing to report then.
        let _ = self.tx.send((self.index, state));
    }

    fn info(&self, container: &str, msg: impl AsRef<str>) {
        let pod = self.pod.metadata.name.as_deref().unwrap_or_default();
        self.shared
            .info(format!("pod {pod} container {container}: {}", msg.as_ref()));
    }

    /// Waits `period`, or less if the pod's slot changes. False if the container must give up:
    /// the pod is abandoned or its deadline passed.
    async fn pause(&mut self, period: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            _ = self.wake.changed() => {}
        }
        self.shared.may_start(&self.uid)
    }
}

/// One container: the image check, the env (waiting for Secrets and ConfigMaps), the process.
async fn run_container(mut task: ContainerTask) {
    let Some(container) = task.container().cloned() else {
        return;
    };
    let name = container.name.as_str();
    let image = container.image.as_deref().unwrap_or_default();
    match image_pull(image) {
        ImagePull::Pullable { .. } => {}
        ImagePull::Invalid { message } => {
            task.info(name, format!("InvalidImageName: {message}"));
            task.report(ContainerState::waiting("InvalidImageName", message));
            while task.pause(Duration::from_secs(3600)).await {}
            return;
        }
        ImagePull::Unpullable { reference } => {
            task.info(
                name,
                format!("image {reference} cannot be pulled: ErrImagePull and ImagePullBackOff"),
            );
            let pull_error = format!(
                "rpc error: code = NotFound desc = failed to pull and unpack image {q}: \
                 failed to resolve reference {q}: {reference}: not found",
                q = go_quote(&reference)
            );
            let back_off = format!("Back-off pulling image {}", go_quote(image));
            loop {
                task.report(ContainerState::waiting("ErrImagePull", pull_error.clone()));
                if !task.pause(IMAGE_PULL_RETRY_PERIOD).await {
                    return;
                }
                task.report(ContainerState::waiting(
                    "ImagePullBackOff",
                    back_off.clone(),
                ));
                if !task.pause(IMAGE_PULL_RETRY_PERIOD).await {
                    return;
                }
            }
        }
    }

    let term_file = task.dir.join(TERMINATION_MESSAGE_FILE);
    if let Err(err) =
        std::fs::create_dir_all(&task.dir).and_then(|()| std::fs::write(&term_file, b""))
    {
        let message = format!("cannot create {}: {err}", term_file.display());
        task.report(ContainerState::start_error(START_ERROR_EXIT_CODE, message));
        return;
    }
    let mut last_problem = String::new();
    let prepared = loop {
        if !task.shared.may_start(&task.uid) {
            return;
        }
        match prepare(&task.shared, &task.pod, &container, &term_file).await {
            Ok(prepared) => break prepared,
            Err(NotReady::Config(message)) => {
                if message != last_problem {
                    task.info(name, format!("CreateContainerConfigError: {message}"));
                    task.report(ContainerState::waiting(
                        "CreateContainerConfigError",
                        message.clone(),
                    ));
                    last_problem = message;
                }
                if !task.pause(CONFIG_RETRY_PERIOD).await {
                    return;
                }
            }
            Err(NotReady::Start(message)) => {
                task.info(name, format!("cannot start: {message}"));
                task.report(ContainerState::start_error(START_ERROR_EXIT_CODE, message));
                return;
            }
        }
    };
    if !last_problem.is_empty() {
        task.info(name, "its Secrets and ConfigMaps are there now");
    }
    run_process(&task, &container, &prepared, &term_file).await;
}

/// Starts the container's process, reports it running, waits for it and reports its end.
async fn run_process(
    task: &ContainerTask,
    container: &Container,
    prepared: &Prepared,
    term_file: &Path,
) {
    let name = container.name.as_str();
    let shared = &task.shared;
    // The output: one pipe for stdout and stderr (so the log has them in the order written),
    // copied into the log file.
    let output = ContainerLog::create(&task.dir).and_then(|(log, recorder)| {
        let (reader, writer) = std::io::pipe()?;
        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;
        Ok((log, recorder, reader, writer))
    });
    let (log, mut recorder, mut output, writer) = match output {
        Ok(output) => output,
        Err(err) => {
            let message = format!("cannot set up the container's log: {err}");
            task.info(name, &message);
            task.report(ContainerState::start_error(START_ERROR_EXIT_CODE, message));
            return;
        }
    };
    // Spawn under the lock, so that a deletion, a deadline or a stop either comes first (no
    // process) or sees the pid (and kills it).
    let spawned = {
        let mut state = shared.lock();
        if state.stopped {
            return;
        }
        let Some(slot) = state.pods.get_mut(&task.uid) else {
            return;
        };
        if slot.deleting || slot.halted_at.is_some() {
            return;
        }
        slot.logs.insert(name.to_string(), log);
        // Also when the spawn fails: the container then has an empty log.
        let result = spawn(prepared, &task.dir, writer);
        if let Ok(child) = &result
            && let Some(pid) = child.id()
        {
            slot.pids.insert(name.to_string(), pid as i32);
        }
        result
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            let message = format!("failed to start {:?}: {err}", prepared.program);
            task.info(name, &message);
            task.report(ContainerState::start_error(SPAWN_ERROR_EXIT_CODE, message));
            return;
        }
    };
    let pid = child.id().map(|p| p as i32).unwrap_or_default();
    task.info(name, format!("started pid {pid}: {:?}", prepared.argv()));
    let container_id = format!("sim://{pid}");
    let started_at = now();
    task.report(ContainerState::Running {
        started_at: started_at.clone(),
        container_id: container_id.clone(),
    });

    let mut buffer = vec![0; 64 * 1024];
    let mut open = true;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            read = output.read(&mut buffer), if open => match read {
                Ok(0) => open = false, // every writer closed its end; the process may go on
                Ok(n) => recorder.record(&buffer[..n]),
                Err(err) => {
                    shared.warn(format!("container {name}: reading its output: {err}"));
                    open = false;
                }
            },
        }
    };
    kill_group(pid); // Whatever the process left behind in its group, as a container's end does.
    if let Some(slot) = shared.lock().pods.get_mut(&task.uid) {
        slot.pids.remove(name);
    }
    // The rest of the output, until every writer is gone (or whatever left the group and holds
    // the pipe has had LOG_DRAIN_LIMIT): the log is complete before the container is reported
    // terminated.
    let drain_until = tokio::time::Instant::now() + LOG_DRAIN_LIMIT;
    while open {
        match tokio::time::timeout_at(drain_until, output.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => recorder.record(&buffer[..n]),
            Ok(Ok(_)) => open = false,
            Ok(Err(err)) => {
                shared.warn(format!("container {name}: reading its output: {err}"));
                open = false;
            }
            Err(_) => {
                shared.warn(format!(
                    "container {name}: its output is still open {LOG_DRAIN_LIMIT:?} after it \
                     ended (a process outside its group?); the log ends here"
                ));
                open = false;
            }
        }
    }
    drop(output);
    recorder.finish();
    if shared.abandoned(&task.uid) {
        return;
    }
    let exit_code = match status {
        Ok(status) => exit_code(status),
        Err(err) => {
            shared.warn(format!("container {name}: waiting for pid {pid}: {err}"));
            START_ERROR_EXIT_CODE
        }
    };
    task.info(name, format!("pid {pid} exited with {exit_code}"));
    let mut message = read_tail(term_file, MAX_TERMINATION_MESSAGE_BYTES);
    if message.is_empty()
        && exit_code != 0
        && container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
    {
        message = log_tail(&task.dir);
    }
    let mut finished_at = now();
    let reason = if exit_code == 0 {
        "Completed".to_string()
    } else if let Some(killed_at) = shared.halted_at(&task.uid) {
        finished_at = killed_at;
        "Error".to_string()
    } else if let Some(reason) = prepared
        .env_value(TERMINATED_REASON_ENV)
        .filter(|r| !r.is_empty())
    {
        task.info(
            name,
            format!("reason {reason} from {TERMINATED_REASON_ENV}"),
        );
        reason.to_string()
    } else {
        "Error".to_string()
    };
    task.report(ContainerState::Terminated(Terminated {
        exit_code,
        reason,
        message,
        started_at,
        finished_at,
        container_id: Some(container_id),
    }));
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
    let started_at = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map_or_else(|| at.clone(), |t| t.0.to_string());
    let mut view = PodView::new(&pod, &started_at, shared.options.decoy_sidecar);
    for index in 0..view.containers.len() {
        let mut lost = ContainerState::start_error(
            KILLED_EXIT_CODE,
            "the kubelet simulator has no process for this pod (started by an earlier simulator?)"
                .to_string(),
        );
        if let ContainerState::Terminated(t) = &mut lost {
            t.reason = "ContainerStatusUnknown".to_string();
            t.started_at = started_at.clone();
        }
        view.set(index, lost);
    }
    // This task is `done` from the start, so report without the `abandoned` check.
    let status = view.status();
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
// Env and processes
// ---------------------------------------------------------------------------------------------

/// What to run for a container, after the kubelet's resolution and expansion.
#[derive(Debug)]
struct Prepared {
    program: String,
    args: Vec<String>,
    /// Sorted by name.
    env: Vec<(String, String)>,
    /// Volume directories the process sees read-only.
    read_only: Vec<PathBuf>,
}

impl Prepared {
    fn argv(&self) -> Vec<&str> {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect()
    }

    fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a container cannot start yet (or ever).
enum NotReady {
    /// A Secret or ConfigMap (or a key) is missing: `CreateContainerConfigError`, retried.
    Config(String),
    /// Something the simulator cannot do: `StartError`, final.
    Start(String),
}

/// Applies the kubelet's rules (see the module doc): the env from its sources, each `value`
/// expanded from the entries before it; then `command` and `args` expanded from the whole env.
/// An env value equal to the termination message path becomes `term_file`.
async fn prepare(
    shared: &Shared,
    pod: &Pod,
    container: &Container,
    term_file: &Path,
) -> Result<Prepared, NotReady> {
    let term_path = container
        .termination_message_path
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_TERMINATION_MESSAGE_PATH);
    let term_file = term_file.to_string_lossy();
    let mounts = volume_mounts(shared, pod, container).map_err(NotReady::Start)?;
    let localize = |value: String| {
        if value == term_path {
            return term_file.to_string();
        }
        let trimmed = value.trim_end_matches('/');
        match mounts.iter().find(|m| m.path == trimmed) {
            Some(mount) => mount.dir.to_string_lossy().into_owned(),
            None => value,
        }
    };
    let mut sources = Sources::new(shared);
    let mut env: HashMap<String, String> = HashMap::new();

    for from in container.env_from.iter().flatten() {
        let entries = if let Some(source) = &from.config_map_ref {
            match sources.config_map(&source.name).await? {
                Some(map) => map.data.clone().unwrap_or_default(),
                None if source.optional == Some(true) => continue,
                None => return Err(config_map_not_found(&source.name)),
            }
        } else if let Some(source) = &from.secret_ref {
            match sources.secret(&source.name).await? {
                Some(secret) => secret_data(secret),
                None if source.optional == Some(true) => continue,
                None => return Err(secret_not_found(&source.name)),
            }
        } else {
            continue;
        };
        let prefix = from.prefix.as_deref().unwrap_or_default();
        for (key, value) in entries {
            let name = format!("{prefix}{key}");
            if is_env_var_name(&name) {
                env.insert(name, localize(value));
            } else {
                shared.info(format!(
                    "pod {} container {}: envFrom key {name:?} skipped: not a valid env var name",
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    container.name
                ));
            }
        }
    }

    for var in container.env.iter().flatten() {
        let literal = var.value.as_deref().unwrap_or_default();
        let value = if !literal.is_empty() {
            ork::task_env::expand(literal, |n| env.get(n).map(String::as_str))
        } else if let Some(source) = &var.value_from {
            match value_from(&mut sources, pod, &var.name, source).await? {
                Some(value) => value,
                None => continue, // optional and missing
            }
        } else {
            String::new()
        };
        env.insert(var.name.clone(), localize(value));
    }

    if container.command.as_ref().is_none_or(|c| c.is_empty()) {
        return Err(NotReady::Start(format!(
            "container {:?} has no command: the kubelet simulator has no images, so no entrypoints",
            container.name
        )));
    }
    let lookup = |n: &str| env.get(n).map(String::as_str);
    let mut argv: Vec<String> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(|s| ork::task_env::expand(s, lookup))
        .collect();
    let program = argv.remove(0);
    let mut env: Vec<(String, String)> = env.into_iter().collect();
    env.sort();
    Ok(Prepared {
        program,
        args: argv,
        env,
        read_only: mounts
            .into_iter()
            .filter(|m| m.read_only)
            .map(|m| m.dir)
            .collect(),
    })
}

/// A volume the container mounts, as the simulator provides it: a real directory.
struct Mount {
    /// Where the Pod asks for it (no trailing `/`).
    path: String,
    dir: PathBuf,
    read_only: bool,
}

/// The container's mounts of `persistentVolumeClaim` volumes (one directory per claim, shared
/// by every Pod of the namespace, as a claim's volume is) and `emptyDir` volumes (one per Pod),
/// each directory made now. Other volumes are not provided.
fn volume_mounts(shared: &Shared, pod: &Pod, container: &Container) -> Result<Vec<Mount>, String> {
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .cloned()
        .unwrap_or_default();
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let Some(volume) = volumes.iter().find(|v| v.name == mount.name) else {
            continue;
        };
        let dir = if let Some(claim) = &volume.persistent_volume_claim {
            shared.work_dir.join("claims").join(&claim.claim_name)
        } else if volume.empty_dir.is_some() {
            shared
                .work_dir
                .join("empty-dirs")
                .join(uid)
                .join(&volume.name)
        } else {
            continue;
        };
        std::fs::create_dir_all(&dir).map_err(|e| {
            format!(
                "volume {:?}: cannot create {}: {e}",
                volume.name,
                dir.display()
            )
        })?;
        mounts.push(Mount {
            path: mount.mount_path.trim_end_matches('/').to_string(),
            dir,
            read_only: mount.read_only == Some(true),
        });
    }
    Ok(mounts)
}

/// The value of one `valueFrom`; `None` when an optional reference is missing.
async fn value_from(
    sources: &mut Sources<'_>,
    pod: &Pod,
    var: &str,
    source: &EnvVarSource,
) -> Result<Option<String>, NotReady> {
    let namespace = &sources.shared.namespace;
    if let Some(field) = &source.field_ref {
        return field_value(pod, &field.field_path)
            .map(Some)
            .ok_or_else(|| {
                NotReady::Start(format!(
                    "env {var:?}: fieldRef {:?} is not supported by the kubelet simulator",
                    field.field_path
                ))
            });
    }
    if let Some(key_ref) = &source.secret_key_ref {
        let optional = key_ref.optional == Some(true);
        let Some(secret) = sources.secret(&key_ref.name).await? else {
            return if optional {
                Ok(None)
            } else {
                Err(secret_not_found(&key_ref.name))
            };
        };
        return match secret_data(secret).remove(&key_ref.key) {
            Some(value) => Ok(Some(value)),
            None if optional => Ok(None),
            None => Err(NotReady::Config(format!(
                "couldn't find key {} in Secret {namespace}/{}",
                key_ref.key, key_ref.name
            ))),
        };
    }
    if let Some(key_ref) = &source.config_map_key_ref {
        let optional = key_ref.optional == Some(true);
        let Some(map) = sources.config_map(&key_ref.name).await? else {
            return if optional {
                Ok(None)
            } else {
                Err(config_map_not_found(&key_ref.name))
            };
        };
        return match map.data.as_ref().and_then(|d| d.get(&key_ref.key)) {
            Some(value) => Ok(Some(value.clone())),
            None if optional => Ok(None),
            None => Err(NotReady::Config(format!(
                "couldn't find key {} in ConfigMap {namespace}/{}",
                key_ref.key, key_ref.name
            ))),
        };
    }
    Err(NotReady::Start(format!(
        "env {var:?}: this valueFrom (resourceFieldRef?) is not supported by the kubelet simulator"
    )))
}

/// The kubelet's message for a missing Secret (its cache names the resource in the singular).
fn secret_not_found(name: &str) -> NotReady {
    NotReady::Config(format!("secret {} not found", go_quote(name)))
}

fn config_map_not_found(name: &str) -> NotReady {
    NotReady::Config(format!("configmap {} not found", go_quote(name)))
}

fn secret_data(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

/// Secrets and ConfigMaps read for one container start, each read once (`None`: not found).
struct Sources<'a> {
    shared: &'a Shared,
    secrets: HashMap<String, Option<Secret>>,
    config_maps: HashMap<String, Option<ConfigMap>>,
}

impl<'a> Sources<'a> {
    fn new(shared: &'a Shared) -> Self {
        Sources {
            shared,
            secrets: HashMap::new(),
            config_maps: HashMap::new(),
        }
    }

    async fn secret(&mut self, name: &str) -> Result<Option<&Secret>, NotReady> {
        if !self.secrets.contains_key(name) {
            let found = self.shared.secrets.get_opt(name).await.map_err(|err| {
                self.shared.warn(format!("reading secret {name}: {err}"));
                NotReady::Config(format!(
                    "couldn't get secret {}/{name}: {err}",
                    self.shared.namespace
                ))
            })?;
            self.secrets.insert(name.to_string(), found);
        }
        Ok(self.secrets.get(name).and_then(Option::as_ref))
    }

    async fn config_map(&mut self, name: &str) -> Result<Option<&ConfigMap>, NotReady> {
        if !self.config_maps.contains_key(name) {
            let found = self.shared.config_maps.get_opt(name).await.map_err(|err| {
                self.shared.warn(format!("reading configmap {name}: {err}"));
                NotReady::Config(format!(
                    "couldn't get configMap {}/{name}: {err}",
                    self.shared.namespace
                ))
            })?;
            self.config_maps.insert(name.to_string(), found);
        }
        Ok(self.config_maps.get(name).and_then(Option::as_ref))
    }
}

/// A `fieldRef` as the kubelet resolves it; `None` for a path it does not know.
fn field_value(pod: &Pod, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")
            .map(str::to_string)
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => NODE_NAME.to_string(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.podIP" | "status.podIPs" => POD_IP.to_string(),
        _ => {
            if let Some(key) = subscript("metadata.labels") {
                meta.labels
                    .as_ref()
                    .and_then(|m| m.get(&key))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(key) = subscript("metadata.annotations") {
                meta.annotations
                    .as_ref()
                    .and_then(|m| m.get(&key))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return None;
            }
        }
    };
    Some(value)
}

/// The kubelet's rendering of all labels or annotations: `key="value"` lines, sorted.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Kubernetes' rule for env var names (`[-._a-zA-Z][-._a-zA-Z0-9]*`).
fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_'))
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// Starts the process in `dir`, its stdout and stderr both `output`.
fn spawn(
    prepared: &Prepared,
    dir: &Path,
    output: std::io::PipeWriter,
) -> std::io::Result<tokio::process::Child> {
    let stderr = output.try_clone()?;
    let mut command = tokio::process::Command::new(&prepared.program);
    command
        .args(&prepared.args)
        .envs(prepared.env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(stderr)
        .process_group(0);
    if !prepared.read_only.is_empty() {
        let read_only = prepared.read_only.clone();
        // SAFETY: between fork and exec only system calls are made (no allocation: the paths
        // are owned already), in the child alone.
        unsafe {
            command.pre_exec(move || read_only_mounts(&read_only));
        }
    }
    command.spawn()
}

/// In a mount namespace of the process's own: each of `dirs` bind-mounted over itself
/// read-only, so writes there fail for this process only, as with a `readOnly` volume mount.
fn read_only_mounts(dirs: &[PathBuf]) -> std::io::Result<()> {
    use nix::mount::{MsFlags, mount};
    let none: Option<&str> = None;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)?;
    for dir in dirs {
        mount(
            Some(dir.as_path()),
            dir.as_path(),
            none,
            MsFlags::MS_BIND,
            none,
        )?;
        mount(
            none,
            dir.as_path(),
            none,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            none,
        )?;
    }
    Ok(())
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
    let log = read_tail(&dir.join(LOG_FILE), 2048);
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
// Logs
// ---------------------------------------------------------------------------------------------

/// One container's log: its [`LOG_FILE`] and when each line of it was read (see "Logs").
struct ContainerLog {
    path: PathBuf,
    index: Mutex<LogIndex>,
    /// Signalled whenever lines are added or the log ends.
    changed: watch::Sender<()>,
}

#[derive(Default)]
struct LogIndex {
    /// Each line: the offset just past it (past its `\n`; the last line of an ended log may
    /// have none) and when the simulator read it.
    lines: Vec<(u64, jiff::Timestamp)>,
    /// Bytes in the file (a partial line may follow the last of `lines`).
    len: u64,
    /// The container has ended: `lines` is all there will be.
    done: bool,
}

impl ContainerLog {
    /// A new, empty log file in `dir`, and what writes it.
    fn create(dir: &Path) -> std::io::Result<(Arc<ContainerLog>, LogRecorder)> {
        let path = dir.join(LOG_FILE);
        let file = std::fs::File::create(&path)?;
        let log = Arc::new(ContainerLog {
            path,
            index: Mutex::new(LogIndex::default()),
            changed: watch::Sender::new(()),
        });
        let recorder = LogRecorder {
            log: log.clone(),
            file: Some(file),
        };
        Ok((log, recorder))
    }

    fn lock(&self) -> MutexGuard<'_, LogIndex> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes a container's output into its log. Its drop ends the log (also when the container's
/// task is aborted), so that no follower waits forever.
struct LogRecorder {
    log: Arc<ContainerLog>,
    /// `None` once the log has ended or a write failed.
    file: Option<std::fs::File>,
}

impl LogRecorder {
    fn record(&mut self, bytes: &[u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if let Err(err) = file.write_all(bytes) {
            eprintln!(
                "[kubelet-sim] writing {}: {err}; the rest of this log is lost",
                self.log.path.display()
            );
            self.file = None;
            return;
        }
        let at = jiff::Timestamp::now();
        {
            let mut index = self.log.lock();
            let start = index.len;
            let ends = bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| (start + i as u64 + 1, at));
            index.lines.extend(ends);
            index.len += bytes.len() as u64;
        }
        self.log.changed.send_replace(());
    }

    /// The container has ended: a partial last line becomes a line, nothing more comes.
    fn finish(&mut self) {
        self.file = None;
        {
            let mut index = self.log.lock();
            if index.done {
                return;
            }
            let last = index.lines.last().map_or(0, |(end, _)| *end);
            if index.len > last {
                let len = index.len;
                index.lines.push((len, jiff::Timestamp::now()));
            }
            index.done = true;
        }
        self.log.changed.send_replace(());
    }
}

impl Drop for LogRecorder {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The running simulators of this process, for the log server.
static SIMULATORS: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// Set once this process has pointed the Node at its log server.
static NODE_POINTED: AtomicBool = AtomicBool::new(false);

fn simulators() -> MutexGuard<'static, Vec<Weak<Shared>>> {
    SIMULATORS.lock().unwrap_or_else(|e| e.into_inner())
}

fn register(shared: &Arc<Shared>) {
    let mut simulators = simulators();
    simulators.retain(|s| s.strong_count() > 0);
    simulators.push(Arc::downgrade(shared));
}

fn unregister(shared: &Arc<Shared>) {
    simulators().retain(|s| s.strong_count() > 0 && !std::ptr::eq(s.as_ptr(), Arc::as_ptr(shared)));
}

/// A plain-text error answer of the log server.
type LogError = (StatusCode, String);

/// The log of a container of a pod some running simulator took on (the newest simulator of the
/// namespace first; of two pods of that name, the one not being deleted).
fn find_log(namespace: &str, pod: &str, container: &str) -> Result<Arc<ContainerLog>, LogError> {
    let candidates: Vec<Arc<Shared>> = simulators()
        .iter()
        .rev()
        .filter_map(Weak::upgrade)
        .filter(|s| s.namespace == namespace)
        .collect();
    let (q_pod, q_container) = (go_quote(pod), go_quote(container));
    for shared in candidates {
        let state = shared.lock();
        let slot = state
            .pods
            .values()
            .filter(|s| s.name == pod)
            .min_by_key(|s| s.deleting);
        let Some(slot) = slot else {
            continue;
        };
        if let Some(log) = slot.logs.get(container) {
            return Ok(log.clone());
        }
        return Err(if !slot.containers.iter().any(|c| c == container) {
            let message = format!("container {q_container} not found in pod {q_pod}");
            (StatusCode::NOT_FOUND, message)
        } else if slot.done {
            let message = format!(
                "container {q_container} in pod {q_pod} has no log: the kubelet simulator did not \
                 run it"
            );
            (StatusCode::NOT_FOUND, message)
        } else {
            let message = format!(
                "container {q_container} in pod {q_pod} is waiting to start: ContainerCreating"
            );
            (StatusCode::BAD_REQUEST, message)
        });
    }
    Err((StatusCode::NOT_FOUND, format!("pod {q_pod} does not exist")))
}

/// The port of this process's log server on `127.0.0.1`, started on first use.
pub fn log_server_port() -> Result<u16, String> {
    static SERVER: OnceLock<Result<u16, String>> = OnceLock::new();
    SERVER.get_or_init(start_log_server).clone()
}

fn start_log_server() -> Result<u16, String> {
    let tls = tls_config()?;
    let listener = std::net::TcpListener::bind((POD_IP, 0))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| format!("cannot listen on {POD_IP}: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("the log server's address: {e}"))?
        .port();
    // A runtime of its own: the server outlives the runtime of the test that started it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build the log server's runtime: {e}"))?;
    std::thread::Builder::new()
        .name("kubelet-sim-logs".to_string())
        .spawn(move || runtime.block_on(serve_logs(listener, tls)))
        .map_err(|e| format!("cannot start the log server's thread: {e}"))?;
    Ok(port)
}

/// A self-signed certificate for `127.0.0.1` (nothing verifies it), HTTP/1.1 only.
fn tls_config() -> Result<Arc<rustls::ServerConfig>, String> {
    let names = vec![
        POD_IP.to_string(),
        "localhost".to_string(),
        NODE_NAME.to_string(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot make the log server's certificate: {e}"))?;
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(vec![certified.cert.der().clone()], key.into())
        })
        .map_err(|e| format!("cannot configure the log server's TLS: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts connections until the process ends; a failed connection or request only ends itself.
async fn serve_logs(listener: std::net::TcpListener, tls: Arc<rustls::ServerConfig>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("[kubelet-sim logs] cannot serve: {err}");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                eprintln!("[kubelet-sim logs] accepting a connection: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(
                Duration::from_secs(10),
                acceptor.accept(stream),
            )
            .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    eprintln!("[kubelet-sim logs] TLS handshake: {err}");
                    return;
                }
                Err(_) => {
                    eprintln!("[kubelet-sim logs] TLS handshake: timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(serve_log_request);
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            // A client going away mid-stream is normal (a follower stopped following).
            if let Err(err) = served
                && verbose()
            {
                eprintln!("[kubelet-sim logs] connection: {err}");
            }
        });
    }
}

async fn serve_log_request(
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<LogBody>, Infallible> {
    let response = log_response(&request).unwrap_or_else(|(status, message)| {
        if verbose() {
            eprintln!(
                "[kubelet-sim logs] {} {}: {status} {message}",
                request.method(),
                request.uri()
            );
        }
        text_response(status, LogBody::Full(Some(Bytes::from(message))))
    });
    if verbose() && response.status() == StatusCode::OK {
        eprintln!(
            "[kubelet-sim logs] {} {}: 200",
            request.method(),
            request.uri()
        );
    }
    Ok(response)
}

fn text_response(status: StatusCode, body: LogBody) -> hyper::Response<LogBody> {
    let mut response = hyper::Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    response
}

/// `GET /containerLogs/{namespace}/{pod}/{container}`: checks as the kubelet does, then streams.
fn log_response(
    request: &hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<LogBody>, LogError> {
    let Some(rest) = request.uri().path().strip_prefix("/containerLogs/") else {
        return Err((StatusCode::NOT_FOUND, "404 page not found".to_string()));
    };
    if request.method() != http::Method::GET {
        let message = format!("method {} not allowed", request.method());
        return Err((StatusCode::METHOD_NOT_ALLOWED, message));
    }
    let parts: Vec<String> = rest.split('/').map(|p| percent_decode(p, false)).collect();
    let [namespace, pod, container] = parts.as_slice() else {
        let message = "expected /containerLogs/{namespace}/{pod}/{container}".to_string();
        return Err((StatusCode::NOT_FOUND, message));
    };
    let options = LogOptions::parse(request.uri().query().unwrap_or_default())?;
    let log = find_log(namespace, pod, container)?;
    if options.previous {
        let message = format!(
            "previous terminated container {} in pod {} not found",
            go_quote(container),
            go_quote(pod)
        );
        return Err((StatusCode::BAD_REQUEST, message));
    }
    let file = std::fs::File::open(&log.path).map_err(|e| {
        let message = format!("cannot open {}: {e}", log.path.display());
        (StatusCode::INTERNAL_SERVER_ERROR, message)
    })?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(stream_log(log, file, options, tx));
    Ok(text_response(StatusCode::OK, LogBody::Stream(rx)))
}

/// The kubelet's log options (`v1.PodLogOptions` as query parameters).
#[derive(Debug, Default)]
struct LogOptions {
    follow: bool,
    previous: bool,
    timestamps: bool,
    tail_lines: Option<usize>,
    limit_bytes: Option<u64>,
    since: Option<jiff::Timestamp>,
}

impl LogOptions {
    fn parse(query: &str) -> Result<LogOptions, LogError> {
        let bad = |key: &str, value: &str| {
            let message = format!("invalid value {} for {key}", go_quote(value));
            (StatusCode::BAD_REQUEST, message)
        };
        let invalid = |message: &str| (StatusCode::UNPROCESSABLE_ENTITY, message.to_string());
        let boolean = |key: &str, value: &str| match value {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            _ => Err(bad(key, value)),
        };
        let number = |key: &str, value: &str| value.parse::<i64>().map_err(|_| bad(key, value));
        let mut options = LogOptions::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value, true);
            let value = value.as_str();
            match percent_decode(key, true).as_str() {
                "follow" => options.follow = boolean("follow", value)?,
                "previous" => options.previous = boolean("previous", value)?,
                "timestamps" => options.timestamps = boolean("timestamps", value)?,
                "tailLines" => {
                    let n = number("tailLines", value)?;
                    let n = usize::try_from(n).map_err(|_| invalid("tailLines must be >= 0"))?;
                    options.tail_lines = Some(n);
                }
                "limitBytes" => {
                    let n = number("limitBytes", value)?;
                    let n = u64::try_from(n)
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| invalid("limitBytes must be >= 1"))?;
                    options.limit_bytes = Some(n);
                }
                "sinceSeconds" => {
                    let n = number("sinceSeconds", value)?;
                    if n < 1 {
                        return Err(invalid("sinceSeconds must be >= 1"));
                    }
                    since_seconds = Some(n);
                }
                "sinceTime" => {
                    let at = value
                        .parse::<jiff::Timestamp>()
                        .map_err(|_| bad("sinceTime", value))?;
                    since_time = Some(at);
                }
                _ => {}
            }
        }
        options.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "at most one of sinceTime or sinceSeconds may be set",
                ));
            }
            (Some(seconds), None) => Some(
                jiff::Timestamp::now()
                    .checked_sub(jiff::SignedDuration::from_secs(seconds))
                    .unwrap_or(jiff::Timestamp::MIN),
            ),
            (None, at) => at,
        };
        Ok(options)
    }
}

/// `%XX` escapes (and `+` for a space in a query).
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The body of a log server answer: an error's text, or the log as it is streamed.
enum LogBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for LogBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        let frame = |bytes| Ok(hyper::body::Frame::data(bytes));
        match self.get_mut() {
            LogBody::Full(bytes) => std::task::Poll::Ready(bytes.take().map(frame)),
            LogBody::Stream(rx) => rx.poll_recv(cx).map(|bytes| bytes.map(frame)),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, LogBody::Full(None))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            LogBody::Full(bytes) => {
                hyper::body::SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            LogBody::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// Sends the log's lines as `options` asks, following it if asked, until everything is sent,
/// the limit is reached, or the client is gone.
async fn stream_log(
    log: Arc<ContainerLog>,
    file: std::fs::File,
    options: LogOptions,
    tx: mpsc::Sender<Bytes>,
) {
    const CHUNK: usize = 32 * 1024;
    let mut changed = log.changed.subscribe();
    // The first line to send, and where it starts.
    let (mut next, mut offset) = {
        let index = log.lock();
        let mut first = options.since.map_or(0, |since| {
            index.lines.partition_point(|(_, at)| *at < since)
        });
        if let Some(tail) = options.tail_lines {
            first = first.max(index.lines.len().saturating_sub(tail));
        }
        let offset = first.checked_sub(1).map_or(0, |i| index.lines[i].0);
        (first, offset)
    };
    let mut budget = options.limit_bytes.unwrap_or(u64::MAX);
    loop {
        changed.borrow_and_update();
        let (lines, done) = {
            let index = log.lock();
            (
                index.lines.get(next..).unwrap_or_default().to_vec(),
                index.done,
            )
        };
        let mut chunk = Vec::new();
        for (end, at) in lines {
            let start = chunk.len();
            if options.timestamps {
                chunk.extend_from_slice(format!("{at:.9} ").as_bytes());
            }
            let line_start = chunk.len();
            chunk.resize(line_start + (end - offset) as usize, 0);
            if let Err(err) = file.read_exact_at(&mut chunk[line_start..], offset) {
                eprintln!("[kubelet-sim logs] reading {}: {err}", log.path.display());
                chunk.truncate(start);
                let _ = tx.send(Bytes::from(chunk)).await;
                return;
            }
            offset = end;
            next += 1;
            let written = (chunk.len() - start) as u64;
            if written >= budget {
                chunk.truncate(start + budget as usize);
                let _ = tx.send(Bytes::from(chunk)).await;
                return;
            }
            budget -= written;
            if chunk.len() >= CHUNK
                && tx
                    .send(Bytes::from(std::mem::take(&mut chunk)))
                    .await
                    .is_err()
            {
                return;
            }
        }
        if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
            return;
        }
        if !options.follow || done {
            return;
        }
        tokio::select! {
            _ = changed.changed() => {}
            () = tx.closed() => return,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------------

/// What pulling an image would do here (see the module doc, "Images").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImagePull {
    /// A valid reference (`reference`: normalized, default tag applied); the container runs.
    Pullable { reference: String },
    /// A valid reference on a `.invalid` registry host: `ErrImagePull` / `ImagePullBackOff`.
    Unpullable { reference: String },
    /// Not a valid reference: `InvalidImageName` with this message.
    Invalid { message: String },
}

/// The kubelet's view of `image`: Docker's reference grammar and normalization (the rules of
/// the `docker/distribution` version Kubernetes 1.20 vendors), plus the `.invalid` convention.
pub fn image_pull(image: &str) -> ImagePull {
    match normalize_image(image) {
        Err(err) => ImagePull::Invalid {
            message: format!(
                "Failed to apply default image tag {q}: couldn't parse image reference {q}: {err}",
                q = go_quote(image)
            ),
        },
        Ok((domain, reference)) => {
            let host = domain.split(':').next().unwrap_or_default();
            if host.to_ascii_lowercase().ends_with(".invalid") {
                ImagePull::Unpullable { reference }
            } else {
                ImagePull::Pullable { reference }
            }
        }
    }
}

/// `ParseNormalizedNamed` + the default tag: (registry domain, full reference) or the error.
fn normalize_image(image: &str) -> Result<(String, String), String> {
    if image.len() == 64
        && image
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(format!(
            "invalid repository name ({image}), cannot specify 64-byte hexadecimal strings"
        ));
    }
    // Docker's rule: the part before the first `/` is a registry if it looks like a host.
    let (mut domain, mut remainder) = match image.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), image.to_string()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".to_string();
    }
    if domain == "docker.io" && !remainder.contains('/') {
        remainder = format!("library/{remainder}");
    }
    let repository = remainder.split(':').next().unwrap_or_default();
    if repository.to_lowercase() != repository {
        return Err("invalid reference format: repository name must be lowercase".to_string());
    }
    let full = format!("{domain}/{remainder}");
    let Some((name, tag, digest)) = match_reference(&full) else {
        return Err(if match_reference(&full.to_lowercase()).is_some() {
            "repository name must be lowercase"
        } else {
            "invalid reference format"
        }
        .to_string());
    };
    if name.len() > 255 {
        return Err("repository name must not be more than 255 characters".to_string());
    }
    if let Some(digest) = digest {
        validate_digest(digest)?;
    }
    let reference = match (tag, digest) {
        (None, None) => format!("{name}:latest"),
        _ => full.clone(),
    };
    Ok((domain, reference))
}

/// Docker's `ReferenceRegexp`, anchored: `name[:tag][@digest]` split into its parts.
fn match_reference(s: &str) -> Option<(&str, Option<&str>, Option<&str>)> {
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (s, None),
    };
    if digest.is_some_and(|d| !is_digest(d)) {
        return None;
    }
    let last = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last..].rfind(':') {
        Some(i) => (&rest[..last + i], Some(&rest[last + i + 1..])),
        None => (rest, None),
    };
    if tag.is_some_and(|t| !is_tag(t)) || !is_name(name) {
        return None;
    }
    Some((name, tag, digest))
}

/// `[domain/]component(/component)*`.
fn is_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    let path = |parts: &[&str]| !parts.is_empty() && parts.iter().all(|p| is_path_component(p));
    path(&parts) || (parts.len() > 1 && is_domain(parts[0]) && path(&parts[1..]))
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let run = i;
        while i < bytes.len() && alphanumeric(bytes[i]) {
            i += 1;
        }
        if i == run {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let separator = i;
        while i < bytes.len() && !alphanumeric(bytes[i]) {
            i += 1;
        }
        let separator = &component[separator..i];
        if !matches!(separator, "." | "_" | "__") && !separator.bytes().all(|b| b == b'-') {
            return false;
        }
    }
}

/// `host[:port]`, each host label alphanumeric with inner `-`.
fn is_domain(domain: &str) -> bool {
    let (host, port) = match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && host.split('.').all(label)
}

/// `[\w][\w.-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `algorithm:hex`: algorithm components `[A-Za-z][A-Za-z0-9]*` joined by `-_+.`, at least 32
/// hex digits.
fn is_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let component = |c: &str| {
        c.chars().next().is_some_and(|f| f.is_ascii_alphabetic())
            && c.chars().all(|ch| ch.is_ascii_alphanumeric())
    };
    algorithm.split(['-', '_', '+', '.']).all(component)
        && hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The digest library's checks once the grammar matched.
fn validate_digest(digest: &str) -> Result<(), String> {
    let (algorithm, hex) = digest.split_once(':').unwrap_or((digest, ""));
    let size = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("unsupported digest algorithm".to_string()),
    };
    if hex.len() != size {
        return Err("invalid checksum digest length".to_string());
    }
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("invalid checksum digest format".to_string());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Statuses
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum ContainerState {
    Waiting {
        reason: &'static str,
        message: String,
    },
    Running {
        started_at: String,
        container_id: String,
    },
    Terminated(Terminated),
}

#[derive(Clone, Debug, PartialEq)]
struct Terminated {
    exit_code: i32,
    reason: String,
    message: String,
    started_at: String,
    finished_at: String,
    container_id: Option<String>,
}

impl ContainerState {
    fn waiting(reason: &'static str, message: String) -> Self {
        ContainerState::Waiting { reason, message }
    }

    /// The container could not be started: terminated at once, reason `StartError`.
    fn start_error(exit_code: i32, message: String) -> Self {
        let at = now();
        ContainerState::Terminated(Terminated {
            exit_code,
            reason: "StartError".to_string(),
            message,
            started_at: at.clone(),
            finished_at: at,
            container_id: None,
        })
    }
}

struct ContainerView {
    name: String,
    image: String,
    state: ContainerState,
}

/// What the simulator knows about a pod, turned into the status a kubelet writes.
struct PodView {
    started_at: String,
    /// In the spec's order.
    containers: Vec<ContainerView>,
    decoy_sidecar: bool,
    /// The pod-level `reason` and `message` when the kubelet failed the pod itself.
    failure: Option<(&'static str, &'static str)>,
    /// When the phase first was terminal (the decoy sidecar's end).
    finished_at: Option<String>,
    /// Each condition's status and since when it has it.
    conditions: HashMap<&'static str, (bool, String)>,
}

impl PodView {
    fn new(pod: &Pod, started_at: &str, decoy_sidecar: bool) -> PodView {
        let containers = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .map(|c| ContainerView {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                state: ContainerState::waiting("ContainerCreating", String::new()),
            })
            .collect();
        PodView {
            started_at: started_at.to_string(),
            containers,
            decoy_sidecar,
            failure: None,
            finished_at: None,
            conditions: HashMap::new(),
        }
    }

    fn set(&mut self, index: usize, state: ContainerState) {
        if let Some(container) = self.containers.get_mut(index) {
            container.state = state;
        }
    }

    fn fail(&mut self, reason: &'static str, message: &'static str) {
        self.failure = Some((reason, message));
    }

    /// The kubelet's `getPhase` for `restartPolicy: Never`, over the spec's containers.
    fn phase(&self) -> &'static str {
        if self.failure.is_some() {
            return "Failed";
        }
        let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
        for container in &self.containers {
            match &container.state {
                ContainerState::Waiting { .. } => waiting += 1,
                ContainerState::Running { .. } => running += 1,
                ContainerState::Terminated(t) => {
                    stopped += 1;
                    if t.exit_code == 0 {
                        succeeded += 1;
                    }
                }
            }
        }
        match () {
            () if waiting > 0 => "Pending",
            () if running > 0 => "Running",
            () if stopped > 0 && stopped == succeeded => "Succeeded",
            () if stopped > 0 => "Failed",
            () => "Pending",
        }
    }

    /// A condition, its `lastTransitionTime` kept while its status stays.
    fn condition(
        &mut self,
        kind: &'static str,
        status: bool,
        reason: Option<&str>,
        message: Option<&str>,
    ) -> Value {
        let since = match self.conditions.get(kind) {
            Some((previous, since)) if *previous == status => since.clone(),
            Some(_) => now(),
            None => self.started_at.clone(),
        };
        self.conditions.insert(kind, (status, since.clone()));
        let mut c = json!({
            "type": kind,
            "status": if status { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": since,
        });
        if let Some(reason) = reason {
            c["reason"] = json!(reason);
        }
        if let Some(message) = message {
            c["message"] = json!(message);
        }
        c
    }

    /// The pod's `status`, as a merge patch.
    fn status(&mut self) -> Value {
        let phase = self.phase();
        let terminal = phase == "Succeeded" || phase == "Failed";
        if terminal && self.finished_at.is_none() {
            self.finished_at = Some(now());
        }
        let unready: Vec<&str> = self
            .containers
            .iter()
            .filter(|c| !matches!(c.state, ContainerState::Running { .. }))
            .map(|c| c.name.as_str())
            .collect();
        let (ready, reason, message) = if unready.is_empty() {
            (true, None, None)
        } else if phase == "Succeeded" {
            (false, Some("PodCompleted"), None)
        } else {
            let message = format!("containers with unready status: [{}]", unready.join(" "));
            (false, Some("ContainersNotReady"), Some(message))
        };
        let mut statuses: Vec<Value> = self
            .containers
            .iter()
            .map(|c| container_status(&c.name, &c.image, &c.state))
            .collect();
        if self.decoy_sidecar {
            statuses.push(self.decoy_status());
        }
        statuses.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let conditions = vec![
            self.condition("Initialized", true, None, None),
            self.condition("Ready", ready, reason, message.as_deref()),
            self.condition("ContainersReady", ready, reason, message.as_deref()),
            self.condition("PodScheduled", true, None, None),
        ];
        let mut status = json!({
            "phase": phase,
            "hostIP": POD_IP,
            "podIP": POD_IP,
            "podIPs": [{"ip": POD_IP}],
            "startTime": self.started_at,
            "conditions": conditions,
            "containerStatuses": statuses,
        });
        if let Some((reason, message)) = self.failure {
            status["reason"] = json!(reason);
            status["message"] = json!(message);
        }
        json!({ "status": status })
    }

    /// The injected sidecar: running until the pod is over, then done with exit code 0.
    fn decoy_status(&self) -> Value {
        let state = match &self.finished_at {
            None => ContainerState::Running {
                started_at: self.started_at.clone(),
                container_id: "sim://istio-proxy".to_string(),
            },
            Some(finished_at) => ContainerState::Terminated(Terminated {
                exit_code: 0,
                reason: "Completed".to_string(),
                message: DECOY_SIDECAR_MESSAGE.to_string(),
                started_at: self.started_at.clone(),
                finished_at: finished_at.clone(),
                container_id: Some("sim://istio-proxy".to_string()),
            }),
        };
        container_status(DECOY_SIDECAR_NAME, DECOY_SIDECAR_IMAGE, &state)
    }
}

fn container_status(name: &str, image: &str, state: &ContainerState) -> Value {
    let mut status = json!({
        "name": name,
        "image": image,
        "imageID": "",
        "ready": false,
        "started": false,
        "restartCount": 0,
    });
    match state {
        ContainerState::Waiting { reason, message } => {
            let mut waiting = json!({ "reason": reason });
            if !message.is_empty() {
                waiting["message"] = json!(message);
            }
            status["state"] = json!({ "waiting": waiting });
        }
        ContainerState::Running {
            started_at,
            container_id,
        } => {
            status["ready"] = json!(true);
            status["started"] = json!(true);
            status["containerID"] = json!(container_id);
            status["state"] = json!({"running": {"startedAt": started_at}});
        }
        ContainerState::Terminated(t) => {
            let mut terminated = json!({
                "exitCode": t.exit_code,
                "reason": t.reason,
                "startedAt": t.started_at,
                "finishedAt": t.finished_at,
            });
            if !t.message.is_empty() {
                terminated["message"] = json!(t.message);
            }
            if let Some(id) = &t.container_id {
                terminated["containerID"] = json!(id);
                status["containerID"] = json!(id);
            }
            status["state"] = json!({ "terminated": terminated });
        }
    }
    status
}
