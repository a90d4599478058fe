//! What the controller exposes on `/metrics`, in the Prometheus text format. Counters are
//! updated where things happen; gauges about Runs are computed from the watch caches when
//! scraped, so they can never drift from what the controller sees.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;

use crate::api::{Run, RunPhase, TaskPhase};

/// Upper bounds of the reconcile duration histogram, in seconds.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Everything `/metrics` reports.
#[derive(Default)]
pub struct Metrics {
    /// `(kind, outcome)` → reconciles; outcome `ok` or `error`.
    reconciles: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    durations: Mutex<BTreeMap<&'static str, Histogram>>,
    tasks_started: AtomicU64,
    /// Result (`succeeded`, `failed`, …) → tasks that reached it.
    tasks_finished: Mutex<BTreeMap<&'static str, u64>>,
    /// `(verb, result)` → API requests; result is the status class (`2xx`, …) or `error`.
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Verb → bytes of request bodies sent.
    request_bytes: Mutex<BTreeMap<&'static str, u64>>,
    leader: AtomicBool,
    /// The Run caches of every controller (one per watched namespace).
    run_stores: Mutex<Vec<Store<DeserializeGuard<Run>>>>,
}

impl Metrics {
    pub fn reconciled(&self, kind: &'static str, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        if let Ok(mut map) = self.reconciles.lock() {
            *map.entry((kind, outcome)).or_default() += 1;
        }
        if let Ok(mut map) = self.durations.lock() {
            let h = map.entry(kind).or_default();
            let secs = took.as_secs_f64();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }
    }

    /// Counts what a status write recorded for one task: attempts started, and the final
    /// phase if it just reached one. `before` is the task as recorded earlier.
    pub fn task_changed(&self, before: Option<(TaskPhase, u32)>, after: (TaskPhase, u32)) {
        let (was, attempts_before) = before.unwrap_or((TaskPhase::Pending, 0));
        let (phase, attempts) = after;
        self.tasks_started.fetch_add(
            u64::from(attempts.saturating_sub(attempts_before)),
            Ordering::Relaxed,
        );
        if was == phase {
            return;
        }
        let result = match phase {
            TaskPhase::Succeeded => "succeeded",
            TaskPhase::Failed => "failed",
            TaskPhase::Skipped => "skipped",
            TaskPhase::Cancelled => "cancelled",
            TaskPhase::Pending | TaskPhase::Running => return,
        };
        if let Ok(mut map) = self.tasks_finished.lock() {
            *map.entry(result).or_default() += 1;
        }
    }

    pub fn request(&self, verb: &'static str, result: &'static str) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((verb, result)).or_default() += 1;
        }
    }

    pub fn request_bytes(&self, verb: &'static str, bytes: u64) {
        if bytes == 0 {
            return;
        }
        if let Ok(mut map) = self.request_bytes.lock() {
            *map.entry(verb).or_default() += bytes;
        }
    }

    /// API requests by verb, all results together.
    pub fn requests_by_verb(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        if let Ok(map) = self.requests.lock() {
            for ((verb, _), n) in map.iter() {
                *out.entry(*verb).or_default() += n;
            }
        }
        out
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    pub fn watch_runs(&self, store: Store<DeserializeGuard<Run>>) {
        if let Ok(mut stores) = self.run_stores.lock() {
            stores.push(store);
        }
    }

    /// The Prometheus text exposition of everything above.
    pub fn render(&self) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "ork_reconciles_total",
            "counter",
            "Reconciles by kind and outcome.",
        );
        if let Ok(map) = self.reconciles.lock() {
            for ((kind, outcome), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "ork_reconciles_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        header(
            &mut out,
            "ork_reconcile_duration_seconds",
            "histogram",
            "Time one reconcile took.",
        );
        if let Ok(map) = self.durations.lock() {
            for (kind, h) in map.iter() {
                for (bound, n) in BUCKETS.iter().zip(h.counts) {
                    let _ = writeln!(
                        out,
                        "ork_reconcile_duration_seconds_bucket{{kind=\"{kind}\",le=\"{bound}\"}} {n}"
                    );
                }
                let _ = writeln!(
                    out,
                    "ork_reconcile_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}\n\
                     ork_reconcile_duration_seconds_sum{{kind=\"{kind}\"}} {}\n\
                     ork_reconcile_duration_seconds_count{{kind=\"{kind}\"}} {}",
                    h.count, h.sum, h.count
                );
            }
        }
        let (phases, running) = self.run_gauges();
        header(
            &mut out,
            "ork_runs",
            "gauge",
            "Runs by phase, as the controller sees them.",
        );
        for (phase, n) in phases {
            let _ = writeln!(out, "ork_runs{{phase=\"{phase}\"}} {n}");
        }
        header(
            &mut out,
            "ork_jobs_in_flight",
            "gauge",
            "Task attempts running as Jobs.",
        );
        let _ = writeln!(out, "ork_jobs_in_flight {running}");
        header(
            &mut out,
            "ork_tasks_started_total",
            "counter",
            "Task attempts started.",
        );
        let _ = writeln!(
            out,
            "ork_tasks_started_total {}",
            self.tasks_started.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "ork_tasks_finished_total",
            "counter",
            "Tasks that reached a final phase, by result.",
        );
        if let Ok(map) = self.tasks_finished.lock() {
            for (result, n) in map.iter() {
                let _ = writeln!(out, "ork_tasks_finished_total{{result=\"{result}\"}} {n}");
            }
        }
        header(
            &mut out,
            "ork_api_requests_total",
            "counter",
            "Kubernetes API requests by verb and result.",
        );
        if let Ok(map) = self.requests.lock() {
            for ((verb, result), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "ork_api_requests_total{{verb=\"{verb}\",result=\"{result}\"}} {n}"
                );
            }
        }
        header(
            &mut out,
            "ork_api_request_bytes_total",
            "counter",
            "Bytes of request bodies sent to the Kubernetes API, by verb.",
        );
        if let Ok(map) = self.request_bytes.lock() {
            for (verb, n) in map.iter() {
                let _ = writeln!(out, "ork_api_request_bytes_total{{verb=\"{verb}\"}} {n}");
            }
        }
        header(
            &mut out,
            "ork_leader",
            "gauge",
            "1 when this replica is the leader (or runs without election).",
        );
        let _ = writeln!(out, "ork_leader {}", u8::from(self.is_leader()));
        out
    }

    /// Runs by phase and running tasks, from the Run caches.
    fn run_gauges(&self) -> (BTreeMap<&'static str, u64>, u64) {
        let mut phases: BTreeMap<&'static str, u64> =
            ["Pending", "Running", "Succeeded", "Failed", "Cancelled"]
                .into_iter()
                .map(|p| (p, 0))
                .collect();
        let mut running = 0;
        let stores = self
            .run_stores
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        for store in stores {
            // An unreadable Run is reported as Failed on itself.
            for guard in store.state() {
                let Ok(run) = &guard.0 else {
                    *phases.entry("Failed").or_default() += 1;
                    continue;
                };
                let status = run.status.as_ref();
                let phase = match status.and_then(|s| s.phase).unwrap_or(RunPhase::Pending) {
                    RunPhase::Pending => "Pending",
                    RunPhase::Running => "Running",
                    RunPhase::Succeeded => "Succeeded",
                    RunPhase::Failed => "Failed",
                    RunPhase::Cancelled => "Cancelled",
                };
                *phases.entry(phase).or_default() += 1;
                running += status.map_or(0, |s| {
                    s.tasks
                        .iter()
                        .filter(|t| t.phase == TaskPhase::Running)
                        .count() as u64
                });
            }
        }
        (phases, running)
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}
