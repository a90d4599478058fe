//! The in-memory database of the local runner: the Run object, updated one changed task at a
//! time, with an optional watcher (the terminal progress display) told about every change.

use std::sync::{Arc, Mutex};

use crate::api::{Run, RunStatus, TaskStatus};
use crate::compile::TaskId;
use crate::driver::{Database, DriverError};
use crate::engine::Engine;

/// Told about every recorded change, like a watch on the API server.
pub trait Watcher: Send {
    fn task_changed(&mut self, before: &TaskStatus, after: &TaskStatus);
    fn run_changed(&mut self, status: &RunStatus);
}

/// Keeps the Run in memory.
pub struct MemoryDatabase {
    run: Run,
    watcher: Option<Arc<Mutex<dyn Watcher>>>,
}

impl MemoryDatabase {
    /// Starts from `run` with every task of `engine` in its initial state.
    pub fn new(mut run: Run, engine: &Engine, watcher: Option<Arc<Mutex<dyn Watcher>>>) -> Self {
        let mut status = engine.run_status();
        status.observed_generation = run.metadata.generation;
        status.workflow = run.status.as_ref().and_then(|s| s.workflow.clone());
        run.status = Some(status);
        Self { run, watcher }
    }

    /// The Run as recorded so far.
    pub fn run(&self) -> &Run {
        &self.run
    }

    pub fn into_run(self) -> Run {
        self.run
    }
}

impl Database for MemoryDatabase {
    async fn record(&mut self, engine: &Engine, changed: &[TaskId]) -> Result<(), DriverError> {
        let status = self.run.status.get_or_insert_with(RunStatus::default);
        let mut watcher = match &self.watcher {
            Some(w) => Some(
                w.lock()
                    .map_err(|_| DriverError::Database("watcher poisoned".into()))?,
            ),
            None => None,
        };
        // Fan-out instances made since the last record, each Pending until it is applied.
        while status.tasks.len() < engine.slots() {
            let slot = TaskId(status.tasks.len() as u32);
            status.tasks.push(TaskStatus {
                finally: engine.is_finally_slot(slot),
                ..TaskStatus::pending(engine.slot_name(slot))
            });
        }
        for &id in changed {
            let after = engine.task_status(id);
            let slot = status
                .tasks
                .get_mut(id.index())
                .ok_or_else(|| DriverError::Database(format!("no task #{} in the run", id.0)))?;
            if let Some(w) = watcher.as_deref_mut() {
                w.task_changed(slot, &after);
            }
            *slot = after;
        }
        let head = engine.run_status_head();
        let phase_changed = status.phase != head.phase;
        status.phase = head.phase;
        status.started_at = head.started_at;
        status.finished_at = head.finished_at;
        status.conditions = head.conditions;
        status.progress = head.progress;
        status.task_counts = head.task_counts;
        status.duration = head.duration;
        if phase_changed && let Some(w) = watcher.as_deref_mut() {
            w.run_changed(status);
        }
        Ok(())
    }
}
