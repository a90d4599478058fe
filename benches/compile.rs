//! Compile-time and engine benchmarks: `cargo bench --bench compile`.
//!
//! Prints, for chains, wide fan-outs and random DAGs of 1k, 10k and 100k tasks: the time to parse
//! the YAML manifest, to validate and compile it, and to drive the engine through the whole run
//! with every attempt succeeding at once (the engine's own cost per task, no processes).
//!
//! Two shapes stress the check that every `fromTask` input reads an upstream task with many
//! distinct sources far away: `far-chain` (a chain where task i also reads task i − n/2) and
//! `far-random` (the random DAG where every task also reads an ancestor reached by a long random
//! walk up its dependencies).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use ork::api::{InputSpec, TaskSpec, WorkflowSpec};
use ork::compile::{bind_params, compile};
use ork::engine::{Action, Engine, Outcome};

/// A tiny deterministic generator, so every run measures the same DAGs.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Task `i`, depending on `deps` and reading an output of the first of them.
fn task(i: usize, deps: Vec<usize>) -> TaskSpec {
    let inputs = deps
        .first()
        .map(|&d| InputSpec {
            name: "UP".into(),
            from_task: Some(format!("t{d}")),
            output: Some("v".into()),
            ..InputSpec::default()
        })
        .into_iter()
        .collect();
    TaskSpec {
        name: format!("t{i}"),
        image: Some("busybox".into()),
        command: vec!["true".into()],
        depends_on: deps.into_iter().map(|d| format!("t{d}")).collect(),
        inputs,
        ..TaskSpec::default()
    }
}

/// Adds an input reading task `source`'s output `v`.
fn read_far(task: &mut TaskSpec, source: usize) {
    task.inputs.push(InputSpec {
        name: "FAR".into(),
        from_task: Some(format!("t{source}")),
        output: Some("v".into()),
        ..InputSpec::default()
    });
}

fn spec(shape: &str, n: usize) -> WorkflowSpec {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut parents: Vec<Vec<usize>> = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let deps = match (shape, i) {
            (_, 0) => vec![],
            ("chain" | "far-chain", i) => vec![i - 1],
            ("fan-out", _) => vec![0],
            // 1 to 3 dependencies among the 50 tasks before, and now and then a far one
            (_, i) => {
                let mut deps: Vec<usize> = (0..1 + rng.below(3))
                    .map(|_| i - 1 - rng.below(i.min(50) as u64) as usize)
                    .collect();
                if rng.below(10) == 0 {
                    deps.push(rng.below(i as u64) as usize);
                }
                deps.sort_unstable();
                deps.dedup();
                deps
            }
        };
        parents.push(deps.clone());
        let mut t = task(i, deps);
        match shape {
            "far-chain" if i >= n / 2 => read_far(&mut t, i - n / 2),
            "far-random" if i > 0 => {
                // Up to 2,000 steps up random dependencies: an ancestor about 25k tasks away.
                let mut at = i;
                for _ in 0..1 + rng.below(2_000) {
                    match parents[at].as_slice() {
                        [] => break,
                        up => at = up[rng.below(up.len() as u64) as usize],
                    }
                }
                if at != i {
                    read_far(&mut t, at);
                }
            }
            _ => {}
        }
        tasks.push(t);
    }
    WorkflowSpec {
        tasks,
        ..WorkflowSpec::default()
    }
}

fn manifest_yaml(spec: &WorkflowSpec) -> String {
    let doc = serde_json::json!({
        "apiVersion": "ork.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "bench"},
        "spec": spec,
    });
    serde_saphyr::to_string(&doc).expect("serialize manifest")
}

/// Runs the whole DAG through the engine, every attempt succeeding at once with `{"v": 1}`.
fn simulate(engine: &mut Engine) -> usize {
    let now = Timestamp::UNIX_EPOCH;
    let mut events = 0;
    engine.start(now);
    let mut pending = engine.take_actions();
    while let Some(action) = pending.pop() {
        if let Action::Start(launch) = action {
            let output = br#"{"v": 1}"#.to_vec();
            let outcome = Outcome::Exited { code: 0, output };
            engine.finish_attempt(launch.task, launch.attempt, outcome, now);
            events += 1;
            pending.extend(engine.take_actions());
            engine.take_changes();
        }
    }
    assert!(engine.is_finished());
    events
}

fn ms(d: Duration) -> String {
    format!("{:>9.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    println!(
        "{:<10} {:>7} {:>9} {:>12} {:>12} {:>12} {:>14}",
        "shape", "tasks", "edges", "parse YAML", "compile", "engine run", "engine/task"
    );
    for shape in ["chain", "fan-out", "random", "far-chain", "far-random"] {
        for n in [1_000, 10_000, 100_000] {
            let spec = spec(shape, n);
            let edges: usize = spec.tasks.iter().map(|t| t.depends_on.len()).sum();
            let yaml = manifest_yaml(&spec);

            let started = Instant::now();
            let docs = ork::manifest::parse_documents(&yaml, "bench.yaml").expect("parse");
            let parse = started.elapsed();
            assert_eq!(docs.len(), 1);

            // Best of three: compiling is what the controller does once per run.
            let mut compile_time = Duration::MAX;
            let mut dag = None;
            for _ in 0..3 {
                let started = Instant::now();
                let compiled = compile(&spec, "spec").expect("valid workflow");
                compile_time = compile_time.min(started.elapsed());
                dag = Some(compiled);
            }
            let dag = Arc::new(dag.expect("compiled"));
            let params = bind_params(&dag, &BTreeMap::new(), "spec.params").expect("no params");

            let mut engine = Engine::new(Arc::clone(&dag), params);
            let started = Instant::now();
            let events = simulate(&mut engine);
            let run = started.elapsed();
            assert_eq!(events, n);
            println!(
                "{shape:<10} {n:>7} {edges:>9} {} {} {} {:>11.2} µs",
                ms(parse),
                ms(compile_time),
                ms(run),
                run.as_secs_f64() * 1e6 / n as f64
            );
        }
    }
}
