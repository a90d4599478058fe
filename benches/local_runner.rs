//! Local runner throughput: `cargo bench --bench local_runner`.
//!
//! Runs 2,000 trivial `true` tasks with parallelism 16 through the local runner, and spawns the
//! same 2,000 processes bare (16 at a time, no ork), so the runner's own cost per task is the
//! difference. A 300-task chain shows the dead time between a task ending and its dependent
//! starting. Each figure is the best of three runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ork::local::{OrchestratorConfig, plan_run, run_local};
use tokio::sync::Semaphore;

const TASKS: usize = 2_000;
const PARALLELISM: usize = 16;
const CHAIN: usize = 300;
const REPEAT: usize = 3;

fn manifest(n: usize, parallelism: Option<usize>, chain: bool) -> String {
    let mut yaml = String::from(
        "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {name: bench}\nspec:\n  defaults: {image: busybox}\n",
    );
    if let Some(p) = parallelism {
        yaml.push_str(&format!("  parallelism: {p}\n"));
    }
    yaml.push_str("  tasks:\n");
    for i in 0..n {
        yaml.push_str(&format!("  - name: t{i}\n    command: ['true']\n"));
        if chain && i > 0 {
            yaml.push_str(&format!("    dependsOn: [t{}]\n", i - 1));
        }
    }
    yaml
}

async fn ork_run(yaml: &str, work: &std::path::Path) -> Duration {
    let docs = ork::manifest::parse_documents(yaml, "bench.yaml").expect("parse");
    let plan = plan_run(&docs, &BTreeMap::new(), &[]).expect("plan");
    let config = OrchestratorConfig {
        work_dir: work.to_path_buf(),
        ..OrchestratorConfig::default()
    };
    let started = Instant::now();
    let run = run_local(plan, &config, None, futures::stream::pending())
        .await
        .expect("run");
    let took = started.elapsed();
    let phase = run.status.and_then(|s| s.phase);
    assert_eq!(phase, Some(ork::api::RunPhase::Succeeded));
    took
}

async fn bare(n: usize, parallelism: usize) -> Duration {
    let slots = Arc::new(Semaphore::new(parallelism));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let permit = Arc::clone(&slots).acquire_owned().await.expect("semaphore");
        tasks.spawn(async move {
            let status = tokio::process::Command::new("true").status().await;
            drop(permit);
            assert!(status.expect("spawn true").success());
        });
    }
    while tasks.join_next().await.is_some() {}
    started.elapsed()
}

fn best(mut f: impl FnMut() -> Duration) -> Duration {
    (0..REPEAT).map(|_| f()).min().unwrap_or_default()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let work = tempfile::tempdir().expect("work dir");
    let wide = manifest(TASKS, Some(PARALLELISM), false);
    let chain = manifest(CHAIN, None, true);

    let ork_wide = best(|| rt.block_on(ork_run(&wide, work.path())));
    let bare_wide = best(|| rt.block_on(bare(TASKS, PARALLELISM)));
    let ork_chain = best(|| rt.block_on(ork_run(&chain, work.path())));
    let bare_chain = best(|| rt.block_on(bare(CHAIN, 1)));

    let per = |d: Duration, n: usize| d.as_secs_f64() * 1e3 / n as f64;
    println!("{TASKS} `true` tasks, parallelism {PARALLELISM}:");
    println!(
        "  ork run       {:>8.1} ms  {:>7.0} tasks/s",
        ork_wide.as_secs_f64() * 1e3,
        TASKS as f64 / ork_wide.as_secs_f64()
    );
    println!(
        "  bare spawn    {:>8.1} ms  {:>7.0} tasks/s",
        bare_wide.as_secs_f64() * 1e3,
        TASKS as f64 / bare_wide.as_secs_f64()
    );
    println!(
        "  ork overhead  {:>8.3} ms per task (wall time, 16 at a time)",
        per(ork_wide, TASKS) - per(bare_wide, TASKS)
    );
    println!("{CHAIN}-task chain (each task waits for the previous one):");
    println!("  ork run       {:>8.3} ms per task", per(ork_chain, CHAIN));
    println!(
        "  bare spawn    {:>8.3} ms per task",
        per(bare_chain, CHAIN)
    );
    println!(
        "  dead time     {:>8.3} ms between a task ending and the next starting, beyond a bare spawn",
        per(ork_chain, CHAIN) - per(bare_chain, CHAIN)
    );
    println!("peak RSS of the bench process: {} KiB", peak_rss_kib());
}
