//! `ork watch RUN` and `ork submit --watch`: a cluster Run's progress shown as `ork run` shows a
//! local one, until the run ends.
//!
//! The Run is watched (a change wakes us at once) and read again every few seconds as well, so a
//! dropped watch only slows the display. Each read is compared with the last one; what changed is
//! handed to the same [`Watcher`] that prints a local run's progress.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::get::full_run;
use super::run_commands::CommandError;
use crate::api::{Run, TaskStatus};
use crate::local::Watcher;
use crate::text::quoted;

/// The run is read again at least this often, watch or not…
const REREAD: Duration = Duration::from_secs(2);
/// …and at most this often, however busy its watch.
const MIN_GAP: Duration = Duration::from_millis(300);
/// After this long with no status, the user is told the controller may not be running.
const NO_ANSWER: Duration = Duration::from_secs(15);

/// Task records that changed since `seen` (phase, attempts or instances), each with its record
/// before (a fresh Pending one when first seen); updates `seen`.
pub fn changes(
    seen: &mut HashMap<String, TaskStatus>,
    tasks: &[TaskStatus],
) -> Vec<(TaskStatus, TaskStatus)> {
    let mut changed = Vec::new();
    for task in tasks {
        let before = seen
            .get(&task.name)
            .cloned()
            .unwrap_or_else(|| TaskStatus::pending(task.name.clone()));
        if before.phase != task.phase
            || before.attempts != task.attempts
            || before.instances != task.instances
        {
            seen.insert(task.name.clone(), task.clone());
            changed.push((before, task.clone()));
        }
    }
    changed
}

/// How many tasks the workflow has (fan-out instances come as they are known).
pub fn workflow_tasks(run: &Run) -> usize {
    run.status.as_ref().map_or(0, |s| {
        s.tasks.iter().filter(|t| !t.name.contains('[')).count()
    })
}

/// Follows Run `name` until it reaches a final phase, telling `watcher` of every task change;
/// `started` is called once with the workflow's task count before the first change. Returns the
/// final Run with every task record.
pub async fn follow(
    client: &Client,
    namespace: &str,
    name: &str,
    mut started: impl FnMut(usize),
    watcher_of: &mut dyn Watcher,
) -> Result<Run, CommandError> {
    let runs: Api<Run> = Api::namespaced(client.clone(), namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(runs, config).default_backoff().boxed();
    let mut seen = HashMap::new();
    let mut announced = false;
    let since = std::time::Instant::now();
    let mut nudged = false;
    loop {
        let run = match full_run(client, namespace, name).await {
            Ok(run) => Some(run),
            Err(super::Error::Kube(kube::Error::Api(status))) if status.code == 404 => {
                return Err(CommandError(format!(
                    "no Run {} in namespace {} (deleted?)",
                    quoted(name),
                    quoted(namespace)
                )));
            }
            Err(super::Error::Kube(kube::Error::Api(status))) if status.code == 403 => {
                return Err(CommandError(format!(
                    "forbidden: your RBAC role does not let you get runs.ork.dev in namespace \
                     {} (ask for get, list and watch on runs.ork.dev and runshards.ork.dev)",
                    quoted(namespace)
                )));
            }
            // Anything else may pass: look again at the next wake-up.
            Err(_) => None,
        };
        if let Some(run) = run {
            let status = run.status.as_ref();
            if !announced && status.is_some_and(|s| !s.tasks.is_empty()) {
                started(workflow_tasks(&run));
                announced = true;
            }
            if !announced && !nudged && since.elapsed() > NO_ANSWER {
                eprintln!(
                    "Run {}: the controller has not started it after {}s; is ork's controller \
                     running and watching namespace {}?",
                    quoted(name),
                    NO_ANSWER.as_secs(),
                    quoted(namespace)
                );
                nudged = true;
            }
            if announced {
                for (before, after) in changes(&mut seen, status.map_or(&[][..], |s| &s.tasks)) {
                    watcher_of.task_changed(&before, &after);
                }
            }
            if status.and_then(|s| s.phase).is_some_and(|p| p.is_final()) {
                return Ok(run);
            }
        }
        tokio::time::sleep(MIN_GAP).await;
        // Wake on the next change of the Run, or after REREAD anyway.
        let _ = tokio::time::timeout(REREAD, events.next()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TaskPhase;

    fn task(name: &str, phase: TaskPhase, attempts: u32) -> TaskStatus {
        TaskStatus {
            phase,
            attempts,
            ..TaskStatus::pending(name)
        }
    }

    #[test]
    fn only_what_changed_is_told_with_its_record_before() {
        let mut seen = HashMap::new();
        let first = [
            task("a", TaskPhase::Running, 1),
            task("b", TaskPhase::Pending, 0),
        ];
        let told = changes(&mut seen, &first);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].0.phase, TaskPhase::Pending);
        assert_eq!(told[0].1.name, "a");
        assert!(changes(&mut seen, &first).is_empty());
        let later = [
            task("a", TaskPhase::Succeeded, 1),
            task("b", TaskPhase::Pending, 1),
            task("p[0]", TaskPhase::Running, 1),
        ];
        let told: Vec<_> = changes(&mut seen, &later)
            .into_iter()
            .map(|(b, a)| (b.name, b.phase, a.phase))
            .collect();
        assert_eq!(
            told,
            [
                ("a".into(), TaskPhase::Running, TaskPhase::Succeeded),
                ("b".into(), TaskPhase::Pending, TaskPhase::Pending),
                ("p[0]".into(), TaskPhase::Pending, TaskPhase::Running),
            ]
        );
    }
}
