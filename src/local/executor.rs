//! The process executor: each attempt is the task's `command` + `args` run as a process in a
//! process group of its own, so a timeout or cancellation kills everything it started.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use crate::compile::{Dag, TaskId};
use jiff::Timestamp;

use crate::driver::{Clock, DriverError, Executor, StatusUpdate, SystemClock};
use crate::engine::{Launch, MAX_OUTPUT_BYTES, Outcome};
use crate::task_env::{
    MAX_EXPANDED_BYTES, RunIdentity, TooLong, expand_at_most, ork_env, oversized_var,
};
use crate::text::quoted;

/// Files an attempt leaves behind in the run directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptFiles {
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// The file `ORK_OUTPUT` points at.
    pub output: PathBuf,
}

impl AttemptFiles {
    /// `<run dir>/<task>/attempt-<n>.{stdout,stderr,output.json}`.
    pub fn new(run_dir: &Path, task: &str, attempt: u32) -> Self {
        let dir = run_dir.join(task);
        let file = |suffix: &str| dir.join(format!("attempt-{attempt}.{suffix}"));
        Self {
            stdout: file("stdout"),
            stderr: file("stderr"),
            output: file("output.json"),
        }
    }
}

/// Runs attempts as local processes.
pub struct ProcessExecutor {
    dag: Arc<Dag>,
    identity: RunIdentity,
    run_dir: PathBuf,
    /// How long a killed attempt gets between SIGTERM and SIGKILL.
    kill_grace: Duration,
    /// Kill switches of live attempts.
    live: HashMap<(TaskId, u32), oneshot::Sender<()>>,
    /// Attempts started whose end has not been handed to the scheduler yet.
    pending_reports: usize,
    updates_tx: mpsc::UnboundedSender<StatusUpdate>,
    updates_rx: mpsc::UnboundedReceiver<StatusUpdate>,
    /// Each workspace's directory.
    workspaces: HashMap<String, PathBuf>,
}

impl ProcessExecutor {
    pub fn new(
        dag: Arc<Dag>,
        identity: RunIdentity,
        run_dir: PathBuf,
        kill_grace: Duration,
    ) -> Self {
        let (updates_tx, updates_rx) = mpsc::unbounded_channel();
        Self {
            dag,
            identity,
            run_dir,
            kill_grace,
            live: HashMap::new(),
            pending_reports: 0,
            updates_tx,
            updates_rx,
            workspaces: HashMap::new(),
        }
    }

    /// The directories of the run's workspaces, by name.
    pub fn with_workspaces(mut self, workspaces: HashMap<String, PathBuf>) -> Self {
        self.workspaces = workspaces;
        self
    }

    /// Prepares the files and spawns the process; `Err` is the reason the attempt can't start.
    fn spawn(&self, launch: &Launch, files: &AttemptFiles) -> Result<(Child, Pid), String> {
        let task = self.dag.task(launch.definition());
        // The task's directory is private like the run's, and no file is opened through a
        // symbolic link: a link planted there cannot redirect the writes.
        super::workdir::private_subdir(&self.run_dir, &launch.name(&self.dag))?;
        let create = |path: &Path| {
            super::workdir::create_file(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))
        };
        create(&files.output)?;
        let stdout = create(&files.stdout)?;
        let stderr = create(&files.stderr)?;

        let output_path = files.output.to_string_lossy();
        let dirs: Vec<(&str, String)> = task
            .workspaces
            .iter()
            .filter_map(|m| {
                let dir = self.workspaces.get(&m.name)?;
                Some((m.name.as_str(), dir.to_string_lossy().into_owned()))
            })
            .collect();
        let dirs: Vec<(&str, &str)> = dirs.iter().map(|(n, d)| (*n, d.as_str())).collect();
        let mut env = ork_env(&self.identity, task, launch, &output_path, &dirs);
        if let Some(why) = oversized_var(&env) {
            return Err(why);
        }
        for var in &task.env {
            if var.value_from.is_some() {
                return Err(format!(
                    "env {} uses valueFrom, which only works in Kubernetes",
                    crate::text::quoted(&var.name)
                ));
            }
            // Like the kubelet: an env value may refer to variables defined before it.
            let value = var.value.as_deref().unwrap_or("");
            let value = expand_at_most(value, MAX_EXPANDED_BYTES, |name| lookup(&env, name))
                .map_err(|TooLong| {
                    format!(
                        "env {} expands to more than {MAX_EXPANDED_BYTES} bytes, the most one \
                         environment variable may hold",
                        quoted(&var.name)
                    )
                })?;
            env.push((var.name.clone(), value));
        }
        let argv: Vec<String> = task
            .command
            .iter()
            .chain(&task.args)
            .enumerate()
            .map(|(i, arg)| {
                expand_at_most(arg, MAX_EXPANDED_BYTES, |name| lookup(&env, name)).map_err(
                    |TooLong| {
                        format!(
                            "argument {i} of the command expands to more than \
                             {MAX_EXPANDED_BYTES} bytes, the most one argument may hold"
                        )
                    },
                )
            })
            .collect::<Result<_, _>>()?;
        let Some((program, args)) = argv.split_first() else {
            return Err("the task has no command".into());
        };
        let child = Command::new(program)
            .args(args)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {program:?}: {e}"))?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
            .ok_or_else(|| format!("{program:?} exited before it could be tracked"))?;
        Ok((child, pid))
    }
}

/// The value of the last definition of `name`, as a later definition shadows an earlier one.
fn lookup<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

impl Executor for ProcessExecutor {
    async fn start(&mut self, launch: &Launch) -> Result<(), DriverError> {
        let files = AttemptFiles::new(&self.run_dir, &launch.name(&self.dag), launch.attempt);
        let key = (launch.task, launch.attempt);
        let (kill_tx, kill_rx) = oneshot::channel();
        self.live.insert(key, kill_tx);
        self.pending_reports += 1;
        let (task, attempt) = key;
        match self.spawn(launch, &files) {
            Ok((child, pid)) => {
                let updates = self.updates_tx.clone();
                let grace = self.kill_grace;
                tokio::spawn(async move {
                    let (outcome, at) = supervise(child, pid, kill_rx, grace, &files.output).await;
                    // The receiver lives as long as the executor; nothing to do if it is gone.
                    let _ = updates.send(StatusUpdate {
                        task,
                        attempt,
                        outcome,
                        at,
                    });
                });
            }
            Err(message) => {
                let outcome = Outcome::Failed {
                    reason: "StartError".into(),
                    message,
                };
                let _ = self.updates_tx.send(StatusUpdate {
                    task,
                    attempt,
                    outcome,
                    at: SystemClock.now(),
                });
            }
        }
        Ok(())
    }

    async fn kill(&mut self, task: TaskId, attempt: u32) -> Result<(), DriverError> {
        if let Some(switch) = self.live.remove(&(task, attempt)) {
            // A send error means the attempt already ended; its report is on its way.
            let _ = switch.send(());
        }
        Ok(())
    }

    async fn next_update(&mut self) -> Option<StatusUpdate> {
        let update = self.updates_rx.recv().await?;
        self.live.remove(&(update.task, update.attempt));
        self.pending_reports = self.pending_reports.saturating_sub(1);
        Some(update)
    }

    fn active(&self) -> usize {
        self.pending_reports
    }
}

/// Waits for the attempt to end, killing its process group on request: SIGTERM, then SIGKILL
/// after `grace`. Whatever the attempt left running in its group is killed when it ends, as a
/// container's processes end with the container. Returns how it ended and when the process
/// exited.
async fn supervise(
    mut child: Child,
    group: Pid,
    kill: oneshot::Receiver<()>,
    grace: Duration,
    output: &Path,
) -> (Outcome, Timestamp) {
    let status = tokio::select! {
        status = child.wait() => status,
        _ = kill => {
            let _ = killpg(group, Signal::SIGTERM);
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    let _ = killpg(group, Signal::SIGKILL);
                    child.wait().await
                }
            }
        }
    };
    let ended = SystemClock.now();
    // ESRCH (nothing left in the group) is the common case.
    let _ = killpg(group, Signal::SIGKILL);
    let outcome = match status {
        Ok(status) => Outcome::Exited {
            code: exit_code(status),
            output: read_output(output).await,
        },
        Err(e) => Outcome::Failed {
            reason: "Error".into(),
            message: format!("cannot wait for the process: {e}"),
        },
    };
    (outcome, ended)
}

/// The exit code, or 128 + the signal number for a process killed by a signal (as shells and
/// the kubelet report it).
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Reads at most one byte more than the output limit, enough to tell an oversized output.
async fn read_output(path: &Path) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Ok(file) = tokio::fs::File::open(path).await {
        let _ = file
            .take(MAX_OUTPUT_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .await;
    }
    buf
}
