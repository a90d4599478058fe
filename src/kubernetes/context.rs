//! What every reconcile of one watched namespace shares: the client, the watch-fed indexes of
//! Jobs and Pods, compiled definitions, what this controller did that the caches do not show
//! yet, and the per-object back-off of failed reconciles.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::runtime::events::Recorder;
use tokio::sync::watch;

use super::decide::{Config, Memory};
use super::definition::Definition;
use super::index::{Group, RunIndex};
use super::metrics::Metrics;
use super::state::RunState;

/// How long a Job this controller created is taken to exist before the watch shows it.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// Per-object back-off of failed reconciles: the first retry comes after `base`, each further
/// one after twice as long, up to `max`; a successful reconcile starts over.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `failures` (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// What one controller knows about one run beyond what the API server shows it yet.
#[derive(Debug, Default)]
struct RunNotes {
    /// Jobs created, when, and whether the Job watch has shown them since.
    created: HashMap<String, (Instant, bool)>,
    /// Jobs the API server refused: name → the API's message.
    rejected: HashMap<String, String>,
    /// Why a Job has no Pod (its latest `FailedCreate` Event) and when that was read.
    failed_create: HashMap<String, (String, Instant)>,
    /// PersistentVolumeClaims of the run's workspaces that exist (made, or found made).
    claims: std::collections::HashSet<String>,
}

/// Shared by every reconcile of one watched namespace (or of all).
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub config: Config,
    pub(super) jobs: Arc<RwLock<RunIndex<Job>>>,
    pub(super) pods: Arc<RwLock<RunIndex<Pod>>>,
    /// Becomes true once the Job and Pod caches have been filled by a complete list.
    synced: watch::Receiver<bool>,
    /// Compiled pinned definitions by run UID: a run is compiled once, not on every reconcile.
    compiled: Mutex<HashMap<String, Arc<Definition>>>,
    notes: Mutex<HashMap<String, RunNotes>>,
    /// What is kept of each run between reconciles, by run UID.
    states: Mutex<HashMap<String, RunState>>,
    /// Failed reconciles in a row, by object key.
    failures: Mutex<HashMap<String, u32>>,
    /// Jobs whose Job or Pods the watch showed changing since their run's last reconcile, by
    /// `(namespace, run name)`.
    touched: Mutex<HashMap<(String, String), HashSet<String>>>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        config: Config,
        jobs: Arc<RwLock<RunIndex<Job>>>,
        pods: Arc<RwLock<RunIndex<Pod>>>,
        synced: watch::Receiver<bool>,
    ) -> Self {
        Self {
            client,
            metrics,
            recorder,
            config,
            jobs,
            pods,
            synced,
            compiled: Mutex::default(),
            notes: Mutex::default(),
            states: Mutex::default(),
            failures: Mutex::default(),
            touched: Mutex::default(),
        }
    }

    /// Waits until the Job and Pod caches are filled: before that, a run's children would look
    /// missing, and a reconcile would make them again or take them for lost.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.clone();
        // An error means the sender is gone: the controller is stopping.
        let _ = synced.wait_for(|ready| *ready).await;
    }

    /// Calls `f` with the run's Jobs (by name) and Pods (by Job name) as the caches hold them
    /// now, without copying them. `f` must not wait: the caches are read-locked meanwhile.
    pub fn with_children<T>(
        &self,
        namespace: &str,
        run: &str,
        f: impl FnOnce(&Group<Job>, &Group<Pod>) -> T,
    ) -> T {
        let (no_jobs, no_pods) = (Group::new(), Group::new());
        let jobs = self.jobs.read();
        let pods = self.pods.read();
        let run_jobs = jobs
            .as_ref()
            .ok()
            .and_then(|i| i.groups(namespace, run))
            .unwrap_or(&no_jobs);
        let run_pods = pods
            .as_ref()
            .ok()
            .and_then(|i| i.groups(namespace, run))
            .unwrap_or(&no_pods);
        f(run_jobs, run_pods)
    }

    pub fn compiled(&self, uid: &str) -> Option<Arc<Definition>> {
        self.compiled.lock().ok()?.get(uid).cloned()
    }

    pub fn remember(&self, uid: &str, definition: Arc<Definition>) {
        if let Ok(mut compiled) = self.compiled.lock() {
            compiled.insert(uid.to_string(), definition);
        }
    }

    /// Takes what is kept of run `uid`, if anything: the reconcile owns it until it gives it
    /// back with [`keep_state`](Self::keep_state) (the Controller never reconciles one object
    /// twice at once).
    /// The watch showed Job `job` of run `run` in `namespace`, or one of its Pods, changing.
    pub fn touch(&self, namespace: &str, run: &str, job: &str) {
        if let Ok(mut touched) = self.touched.lock() {
            touched
                .entry((namespace.to_string(), run.to_string()))
                .or_default()
                .insert(job.to_string());
        }
    }

    /// The Jobs of a run touched since the last call, for the reconcile about to read the caches.
    pub fn take_touched(&self, namespace: &str, run: &str) -> HashSet<String> {
        self.touched
            .lock()
            .ok()
            .and_then(|mut t| t.remove(&(namespace.to_string(), run.to_string())))
            .unwrap_or_default()
    }

    pub fn take_state(&self, uid: &str) -> Option<RunState> {
        self.states.lock().ok()?.remove(uid)
    }

    pub fn keep_state(&self, uid: &str, state: RunState) {
        if let Ok(mut states) = self.states.lock() {
            states.insert(uid.to_string(), state);
        }
    }

    /// Drops everything kept about a run that is over or gone.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut states) = self.states.lock() {
            states.remove(uid);
        }
        if let Ok(mut compiled) = self.compiled.lock() {
            compiled.remove(uid);
        }
        if let Ok(mut notes) = self.notes.lock() {
            notes.remove(uid);
        }
    }

    /// What this controller did for run `uid` that the caches may not show yet.
    pub fn memory(&self, uid: &str) -> Memory {
        let Ok(notes) = self.notes.lock() else {
            return Memory::default();
        };
        let Some(run) = notes.get(uid) else {
            return Memory::default();
        };
        Memory {
            created: run.created.keys().cloned().collect(),
            unseen: run
                .created
                .iter()
                .filter(|(_, (at, seen))| !seen && at.elapsed() < EXPECTATION_TTL)
                .map(|(name, _)| name.clone())
                .collect(),
            rejected: run.rejected.clone(),
            failed_create: HashMap::new(),
            claims: run.claims.clone(),
        }
    }

    /// The run's workspace claim `claim` exists.
    pub fn claim_made(&self, uid: &str, claim: &str) {
        if let Ok(mut notes) = self.notes.lock() {
            let run = notes.entry(uid.to_string()).or_default();
            run.claims.insert(claim.to_string());
        }
    }

    pub fn created(&self, uid: &str, job: &str) {
        if let Ok(mut notes) = self.notes.lock() {
            let run = notes.entry(uid.to_string()).or_default();
            run.created
                .entry(job.to_string())
                .or_insert((Instant::now(), false));
        }
    }

    /// The Job watch showed `job` of run `uid` (created, changed or deleted): from now on,
    /// its absence from the cache means it is gone.
    pub fn seen(&self, uid: &str, job: &str) {
        if let Ok(mut notes) = self.notes.lock()
            && let Some(created) = notes.get_mut(uid).and_then(|run| run.created.get_mut(job))
        {
            created.1 = true;
        }
    }

    pub fn rejected(&self, uid: &str, job: &str, message: String) {
        if let Ok(mut notes) = self.notes.lock() {
            let run = notes.entry(uid.to_string()).or_default();
            run.rejected.insert(job.to_string(), message);
        }
    }

    /// Drops the refusals now recorded as their attempts' outcomes.
    pub fn drop_rejections(&self, uid: &str, recorded: &[String]) {
        if let Ok(mut notes) = self.notes.lock()
            && let Some(run) = notes.get_mut(uid)
        {
            for job in recorded {
                run.rejected.remove(job);
                run.failed_create.remove(job);
            }
        }
    }

    /// Why the run's Jobs have no Pod, as last read: Job name → reason.
    pub fn failed_creates(&self, uid: &str) -> HashMap<String, String> {
        let Ok(notes) = self.notes.lock() else {
            return HashMap::new();
        };
        notes.get(uid).map_or_else(HashMap::new, |run| {
            run.failed_create
                .iter()
                .map(|(job, (why, _))| (job.clone(), why.clone()))
                .collect()
        })
    }

    /// Whether the reason a Job has no Pod was read recently enough.
    pub fn failed_create_is_fresh(&self, uid: &str, job: &str, within: Duration) -> bool {
        self.notes.lock().ok().is_some_and(|notes| {
            notes
                .get(uid)
                .and_then(|run| run.failed_create.get(job))
                .is_some_and(|(_, at)| at.elapsed() < within)
        })
    }

    pub fn failed_create(&self, uid: &str, job: &str, why: String) {
        if let Ok(mut notes) = self.notes.lock() {
            let run = notes.entry(uid.to_string()).or_default();
            run.failed_create
                .insert(job.to_string(), (why, Instant::now()));
        }
    }

    /// Counts a failed reconcile of `key` and says how long to wait before the next.
    pub fn failed(&self, key: &str, backoff: Backoff) -> Duration {
        let Ok(mut failures) = self.failures.lock() else {
            return backoff.max;
        };
        let count = failures.entry(key.to_string()).or_default();
        *count = count.saturating_add(1);
        backoff.delay(*count)
    }

    /// A reconcile of `key` succeeded: its next failure waits the shortest time again.
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        let delays: Vec<u128> = (1..=8).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(5));
    }
}
