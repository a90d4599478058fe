//! The local driver behind `ork run`: an in-memory database and a process executor.

mod database;
mod executor;
mod ignored;
mod plan;
mod progress;
mod workdir;
mod workspaces;

pub use database::{MemoryDatabase, Watcher};
pub use executor::{AttemptFiles, ProcessExecutor};
pub use ignored::kubernetes_only;
pub use plan::{
    MAX_RUN_JSON_BYTES, RunPlan, check_documents, generate_name_for, plan_rerun, plan_run,
};
pub use progress::{Progress, Style, summary, task_table};
pub use workdir::{check_private, create_file, default_work_dir, prepare_work_dir};
pub use workspaces::{FRESH_DIR, WorkspaceDir, bind as bind_workspaces};

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::Run;
use crate::driver::{DriverError, Scheduler, SystemClock};
use crate::engine::Engine;

/// Settings of the local runner.
#[derive(Clone, Debug)]
pub struct OrchestratorConfig {
    /// Each run gets a directory here for its tasks' stdout, stderr and output files.
    pub work_dir: PathBuf,
    /// How long a killed task gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            work_dir: default_work_dir(),
            kill_grace: Duration::from_secs(3),
        }
    }
}

impl OrchestratorConfig {
    /// Where the files of run `run` go.
    pub fn run_dir(&self, run: &str) -> PathBuf {
        self.work_dir.join(run)
    }

    /// Creates (or checks) the work directory and the run's directory in it, both private to
    /// this user; returns the run's directory.
    pub fn prepare_run_dir(&self, run: &str) -> Result<PathBuf, String> {
        prepare_work_dir(&self.work_dir)?;
        workdir::private_subdir(&self.work_dir, run)
    }
}

/// Runs `plan` on this machine until it finishes; returns the final Run. The first item of
/// `stops` cancels the run (its finally tasks still run), the second stops those too.
pub async fn run_local(
    plan: RunPlan,
    config: &OrchestratorConfig,
    watcher: Option<Arc<Mutex<dyn Watcher>>>,
    stops: impl futures::Stream<Item = ()>,
) -> Result<Run, DriverError> {
    let run_dir = config
        .prepare_run_dir(&plan.identity.run)
        .map_err(DriverError::Executor)?;
    let mut engine = Engine::new(Arc::clone(&plan.dag), plan.params);
    if let Some((from, tasks)) = &plan.reuse {
        engine.reuse(tasks, from);
    }
    let workspaces =
        workspaces::make_dirs(&plan.workspaces, &run_dir).map_err(DriverError::Executor)?;
    let database = MemoryDatabase::new(plan.run, &engine, watcher);
    let executor = ProcessExecutor::new(plan.dag, plan.identity, run_dir, config.kill_grace)
        .with_workspaces(workspaces);
    let scheduler = Scheduler {
        engine,
        database,
        executor,
        clock: SystemClock,
    };
    let (_, database) = scheduler.run(stops).await?;
    Ok(database.into_run())
}
