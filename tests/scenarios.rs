//! One scenario suite for both drivers: each scenario is one workflow and, where it needs one,
//! something done to the run while it goes (a cancel while a task runs or backs off, a rerun
//! after a fix). It runs with `ork run` on this machine and as a Run on the test control plane
//! (kubelet simulator), and both must end the same: run phase and reason, and per task phase,
//! attempts, reason, exit code, outputs, finally flag, retries outside the limit and how each
//! attempt ended. Processes of both drivers run on this machine, so the tasks coordinate with
//! the test through files in a directory of each driver's own.
//!
//! Scenarios only one driver has (suspend, a Pod deleted under an attempt) are in
//! `tests/run_control.rs`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use ork::api::TaskPhase;
use serde_json::{Value, json};
use support::cluster::eventually;
use support::env::{Env, LONG, ORK, essence};

/// Something done to a run while it goes.
#[derive(Clone, Copy)]
enum Stimulus {
    None,
    /// Cancel once the file appears (a task writes it when it starts).
    CancelWhen(&'static str),
    /// Cancel once the task failed its first attempt and waits out its back-off.
    CancelInBackoff(&'static str),
    /// Once the run ended, create the file (the fix) and rerun it; the rerun makes Jobs only for
    /// these attempts (`TASK.ATTEMPT`, or `TASK.INDEX-ATTEMPT` for an instance).
    RerunAfter(&'static str, &'static [&'static str]),
}

struct Scenario {
    name: &'static str,
    /// The workflow's spec, given the directory the tasks' files go to.
    spec: fn(&Path) -> Value,
    stimulus: Stimulus,
}

fn sh(script: &str) -> Value {
    json!(["sh", "-c", script])
}

/// A finally task that reports what the regular tasks came to.
fn report() -> Value {
    json!({"name": "report", "command": sh(
        r#"printf '{"phase": "%s", "failed": "%s"}' "$ORK_RUN_PHASE" "$ORK_FAILED_TASKS" > "$ORK_OUTPUT""#)})
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "cancel-running",
            spec: |dir| {
                json!({"tasks": [
                    {"name": "work", "command": sh(&format!("touch {}/started; sleep 300", dir.display()))},
                    {"name": "after", "dependsOn": ["work"], "command": sh("true")},
                ], "finally": [report()]})
            },
            stimulus: Stimulus::CancelWhen("started"),
        },
        Scenario {
            name: "cancel-in-backoff",
            spec: |_| {
                json!({"tasks": [
                    {"name": "flaky", "command": sh("exit 3"),
                     "retries": {"limit": 3, "backoff": {"initialSeconds": 600}}},
                    {"name": "after", "dependsOn": ["flaky"], "command": sh("true")},
                ], "finally": [report()]})
            },
            stimulus: Stimulus::CancelInBackoff("flaky"),
        },
        Scenario {
            name: "finally-after-success",
            spec: |_| {
                json!({"tasks": [{"name": "a", "command": sh("true")}],
                       "finally": [report(), {"name": "last", "dependsOn": ["report"], "command": sh("true")}]})
            },
            stimulus: Stimulus::None,
        },
        Scenario {
            name: "finally-after-failure",
            spec: |_| {
                json!({"tasks": [
                    {"name": "a", "command": sh("exit 4")},
                    {"name": "b", "dependsOn": ["a"], "command": sh("true")},
                ], "finally": [report()]})
            },
            stimulus: Stimulus::None,
        },
        Scenario {
            name: "finally-after-deadline",
            spec: |_| {
                json!({"activeDeadlineSeconds": 2, "tasks": [
                    {"name": "slow", "command": sh("sleep 300")},
                    {"name": "after", "dependsOn": ["slow"], "command": sh("true")},
                ], "finally": [report()]})
            },
            stimulus: Stimulus::None,
        },
        Scenario {
            name: "when-false-branch",
            spec: |_| {
                json!({"params": [{"name": "env", "default": "dev"}], "tasks": [
                    {"name": "build", "command": sh(r#"echo '{"ok": true}' > "$ORK_OUTPUT""#)},
                    {"name": "deploy", "dependsOn": ["build"], "command": sh("true"),
                     "when": [{"param": "env", "operator": "In", "values": ["prod"]}]},
                    {"name": "after-deploy", "dependsOn": ["deploy"], "command": sh("true")},
                    {"name": "test", "dependsOn": ["build"], "command": sh("true"),
                     "when": [{"task": "build", "output": "ok", "operator": "In", "values": ["true"]}]},
                ]})
            },
            stimulus: Stimulus::None,
        },
        Scenario {
            name: "any-failed-handler",
            spec: |_| {
                json!({"tasks": [
                    {"name": "a", "command": sh("exit 2")},
                    {"name": "b", "command": sh("true")},
                    {"name": "on-failure", "dependsOn": ["a", "b"], "trigger": "AnyFailed", "command": sh("true")},
                    {"name": "on-success", "dependsOn": ["b"], "trigger": "AnyFailed", "command": sh("true")},
                    {"name": "always", "dependsOn": ["a"], "trigger": "AllDone", "command": sh("true")},
                ]})
            },
            stimulus: Stimulus::None,
        },
        Scenario {
            name: "continue-on-failure",
            spec: |_| {
                json!({"tasks": [
                    {"name": "lint", "continueOnFailure": true, "command": sh("exit 1")},
                    {"name": "build", "dependsOn": ["lint"], "command": sh("true")},
                ], "finally": [report()]})
            },
            stimulus: Stimulus::None,
        },
        Scenario {
            name: "retry-exit-codes",
            spec: |_| {
                json!({"defaults": {"retries": {"limit": 3, "exitCodes": [75],
                                                "backoff": {"initialSeconds": 0.1}}},
                       "tasks": [
                    {"name": "transient", "command": sh(r#"[ "$ORK_ATTEMPT" -ge 3 ] || exit 75"#)},
                    {"name": "permanent", "command": sh("exit 2")},
                ]})
            },
            stimulus: Stimulus::None,
        },
        Scenario {
            name: "rerun-after-fix",
            spec: |dir| {
                json!({"tasks": [
                    {"name": "a", "command": sh(r#"echo '{"v": 7}' > "$ORK_OUTPUT""#)},
                    {"name": "b", "dependsOn": ["a"], "command": sh(&format!("test -f {}/fixed", dir.display()))},
                    {"name": "c", "dependsOn": ["b"], "command": sh("true"),
                     "inputs": [{"name": "V", "fromTask": "a", "output": "v"}]},
                    {"name": "side", "command": sh("true")},
                ], "finally": [report()]})
            },
            stimulus: Stimulus::RerunAfter("fixed", &["b.1", "c.1", "report.1"]),
        },
        Scenario {
            name: "fan-out-lists",
            spec: |_| {
                json!({"params": [{"name": "files", "default": r#"["x", "y"]"#}], "tasks": [
                    {"name": "list", "command": sh(r#"echo '{"l": [3, 1, 2]}' > "$ORK_OUTPUT""#)},
                    {"name": "lit", "forEach": {"items": ["a", {"k": 1}, 7]},
                     "command": sh(r#"printf '{"i": %s}' "$ORK_ITEM_INDEX" > "$ORK_OUTPUT""#)},
                    {"name": "par", "forEach": {"fromParam": "files"},
                     "command": ["sh", "-c", r#"echo "{\"said\": \"$1\"}" > "$ORK_OUTPUT""#, "sh", "$(ORK_ITEM)"]},
                    {"name": "dyn", "dependsOn": ["list"],
                     "forEach": {"fromTask": "list", "output": "l", "parallelism": 1},
                     "command": sh(r#"echo "{\"v\": $((ORK_ITEM * 2))}" > "$ORK_OUTPUT""#)},
                    {"name": "gather", "dependsOn": ["dyn", "lit", "par"],
                     "inputs": [{"name": "V", "fromTask": "dyn", "output": "v"},
                                {"name": "SAID", "fromTask": "par", "output": "said"},
                                {"name": "I", "fromTask": "lit", "output": "i"}],
                     "command": sh(r#"echo "{\"v\": $V, \"said\": $SAID, \"i\": $I}" > "$ORK_OUTPUT""#)},
                ]})
            },
            stimulus: Stimulus::None,
        },
        Scenario {
            name: "fan-out-empty",
            spec: |_| {
                json!({"tasks": [
                    {"name": "none", "forEach": {"items": []}, "command": sh("exit 1")},
                    {"name": "after", "dependsOn": ["none"],
                     "inputs": [{"name": "V", "fromTask": "none", "output": "v"}],
                     "command": sh(r#"echo "{\"v\": $V}" > "$ORK_OUTPUT""#)},
                ]})
            },
            stimulus: Stimulus::None,
        },
        Scenario {
            name: "fan-out-failing",
            spec: |_| fan_out_failing(false),
            stimulus: Stimulus::None,
        },
        Scenario {
            name: "fan-out-may-fail",
            spec: |_| fan_out_failing(true),
            stimulus: Stimulus::None,
        },
        Scenario {
            name: "fan-out-not-an-array",
            spec: |_| {
                json!({"params": [{"name": "files", "default": "a.csv,b.csv"}], "tasks": [
                    {"name": "p", "forEach": {"fromParam": "files"}, "command": sh("true")},
                    {"name": "after", "dependsOn": ["p"], "command": sh("true")},
                ]})
            },
            stimulus: Stimulus::None,
        },
        Scenario {
            name: "fan-out-rerun",
            spec: |dir| {
                json!({"tasks": [
                    {"name": "p", "forEach": {"items": [1, 2, 3]},
                     "command": sh(&format!(r#"[ "$ORK_ITEM" != 2 ] || [ -e {}/fixed ] || exit 1; echo "{{\"v\": $ORK_ITEM}}" > "$ORK_OUTPUT""#, dir.display()))},
                    {"name": "sum", "dependsOn": ["p"],
                     "inputs": [{"name": "V", "fromTask": "p", "output": "v"}],
                     "command": sh(r#"echo "{\"v\": $V}" > "$ORK_OUTPUT""#)},
                ]})
            },
            stimulus: Stimulus::RerunAfter("fixed", &["p.1-1", "sum.1"]),
        },
        Scenario {
            name: "fan-out-500",
            spec: |dir| {
                let items: Vec<u32> = (0..500).collect();
                let running = dir.join("running");
                std::fs::create_dir_all(&running).unwrap();
                // Each instance counts the instances running with it: more than 20 fails it;
                // every count goes to a log the test reads.
                // After a first task: the run's records move to shards on the cluster (its
                // controller keeps at most 100 inline) when p fans out.
                json!({"tasks": [
                    {"name": "first", "command": sh("true")},
                    {"name": "p", "dependsOn": ["first"], "forEach": {"items": items, "parallelism": 20},
                     "command": sh(&format!(
                        "touch {r}/$ORK_ITEM; sleep 0.2; n=$(ls {r} | wc -l); rm {r}/$ORK_ITEM; \
                         echo $n >> {d}/seen; [ $n -le 20 ]",
                        r = running.display(), d = dir.display()))},
                    {"name": "after", "dependsOn": ["p"], "command": sh("true")},
                ]})
            },
            stimulus: Stimulus::None,
        },
    ]
}

/// Three instances, the second of which fails; `may_fail`: the task may fail.
fn fan_out_failing(may_fail: bool) -> Value {
    json!({"tasks": [
        {"name": "p", "continueOnFailure": may_fail, "forEach": {"items": [1, 2, 3]},
         "command": sh(r#"[ "$ORK_ITEM" != 2 ] || exit 4; echo "{\"v\": $ORK_ITEM}" > "$ORK_OUTPUT""#)},
        {"name": "after", "dependsOn": ["p"], "command": sh("true")},
    ]})
}

fn manifest(scenario: &Scenario, dir: &Path) -> Value {
    let mut spec = (scenario.spec)(dir);
    spec["defaults"]["image"] = json!("busybox");
    json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Workflow",
           "metadata": {"name": scenario.name}, "spec": spec})
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `ork run` of the scenario, with its stimulus; the final Run (of the rerun, for a rerun).
fn local(scenario: &Scenario, dir: &Path) -> Value {
    let file = dir.join("workflow.json");
    std::fs::write(&file, manifest(scenario, dir).to_string()).unwrap();
    let runs = dir.join("runs");
    let mut child = Command::new(ORK)
        .args(["run", "--output", "json", "--work-dir"])
        .arg(&runs)
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Progress goes to stderr with `--output json`: read it as it comes.
    let progress = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = Arc::clone(&progress);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let interrupt = || nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    match scenario.stimulus {
        Stimulus::CancelWhen(marker) => {
            wait_for(marker, || dir.join(marker).exists());
            interrupt();
        }
        Stimulus::CancelInBackoff(task) => {
            wait_for("the back-off", || {
                let text = progress.lock().unwrap();
                text.lines()
                    .any(|l| l.contains("retrying") && l.contains(task))
            });
            interrupt();
        }
        Stimulus::None | Stimulus::RerunAfter(..) => {}
    }
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    let run: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{}: {e}: {}", scenario.name, progress.lock().unwrap()));
    let Stimulus::RerunAfter(fix, _) = scenario.stimulus else {
        return run;
    };
    std::fs::write(dir.join(fix), "").unwrap();
    let name = run["metadata"]["name"].as_str().unwrap();
    let kept: PathBuf = runs.join(name).join("run.json");
    let out = Command::new(ORK)
        .args(["run", "--output", "json", "--work-dir"])
        .arg(&runs)
        .arg("--rerun-of")
        .arg(&kept)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("rerun: {e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// The scenario as a Run on the cluster, with its stimulus; the final Run (of the rerun).
async fn cluster(env: &Env, scenario: &Scenario, dir: &Path) -> Value {
    env.apply_workflow(&manifest(scenario, dir)).await;
    let run = format!("{}-1", scenario.name);
    env.create_run(&run, scenario.name, json!({})).await;
    let cancel = || async {
        env.runs()
            .patch(
                &run,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"cancel": true}})),
            )
            .await
            .unwrap();
    };
    match scenario.stimulus {
        Stimulus::CancelWhen(marker) => {
            let path = dir.join(marker);
            eventually(marker, LONG, || {
                let there = path.exists();
                async move { there.then_some(()) }
            })
            .await;
            cancel().await;
        }
        Stimulus::CancelInBackoff(task) => {
            env.wait_run(&run, "the back-off", |r| {
                let t = r.status.as_ref()?.tasks.iter().find(|t| t.name == task)?;
                (t.phase == TaskPhase::Pending && t.attempts == 1).then_some(())
            })
            .await;
            cancel().await;
        }
        Stimulus::None | Stimulus::RerunAfter(..) => {}
    }
    let done = full_run(env, &env.wait_final(&run).await).await;
    let Stimulus::RerunAfter(fix, made) = scenario.stimulus else {
        return done;
    };
    std::fs::write(dir.join(fix), "").unwrap();
    let rerun = format!("{}-2", scenario.name);
    env.kubectl_ok(
        &["apply", "-f", "-"],
        Some(
            &json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Run",
                    "metadata": {"name": rerun}, "spec": {"rerunOf": {"name": run}}})
            .to_string(),
        ),
    );
    let done = full_run(env, &env.wait_final(&rerun).await).await;
    // Only what was not reused got a Job.
    let mut jobs: Vec<String> = env
        .jobs_of(&rerun)
        .await
        .into_iter()
        .filter_map(|j| j.metadata.name)
        .collect();
    jobs.sort();
    let expected: Vec<String> = made.iter().map(|j| format!("{rerun}.{j}")).collect();
    assert_eq!(jobs, expected, "{}: Jobs of the rerun", scenario.name);
    done
}

/// A finished Run with every record, whether its status holds them or its record shards do.
async fn full_run(env: &Env, run: &ork::api::Run) -> Value {
    let name = run.metadata.name.as_deref().unwrap();
    let full = ork::kubernetes::get::full_run(&env.client, &env.ns, name)
        .await
        .unwrap();
    serde_json::to_value(full).unwrap()
}

/// What each scenario must come to, beyond agreeing: a few facts per scenario, checked on the
/// local result (the cluster's equals it).
fn check(name: &str, run: &Value) {
    let status = &run["status"];
    let task = |n: &str| -> &Value {
        status["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == n)
            .unwrap_or_else(|| panic!("{name}: no task {n}"))
    };
    let outcome = |n: &str| (task(n)["phase"].clone(), task(n)["reason"].clone());
    let phase = status["phase"].as_str().unwrap();
    let told = |n: &str| task(n)["outputs"]["phase"].clone();
    match name {
        "cancel-running" => {
            assert_eq!(phase, "Cancelled");
            assert_eq!(outcome("work"), (json!("Cancelled"), json!("Cancelled")));
            assert_eq!(told("report"), "Cancelled");
        }
        "cancel-in-backoff" => {
            assert_eq!(phase, "Cancelled");
            assert_eq!(task("flaky")["attempts"], 1, "no attempt after the cancel");
            assert_eq!(told("report"), "Cancelled");
        }
        "finally-after-success" => {
            assert_eq!(phase, "Succeeded");
            assert_eq!(told("report"), "Succeeded");
            assert_eq!(task("last")["phase"], "Succeeded");
        }
        "finally-after-failure" => {
            assert_eq!(phase, "Failed");
            assert_eq!(
                task("report")["outputs"],
                json!({"phase": "Failed", "failed": "a"})
            );
        }
        "finally-after-deadline" => {
            assert_eq!(status["conditions"][0]["reason"], "DeadlineExceeded");
            assert_eq!(
                outcome("slow"),
                (json!("Failed"), json!("DeadlineExceeded"))
            );
            assert_eq!(told("report"), "Failed");
        }
        "when-false-branch" => {
            assert_eq!(phase, "Succeeded");
            assert_eq!(outcome("deploy"), (json!("Skipped"), json!("WhenFalse")));
            assert_eq!(task("after-deploy")["phase"], "Succeeded");
            assert_eq!(task("test")["phase"], "Succeeded");
        }
        "any-failed-handler" => {
            assert_eq!(phase, "Failed");
            assert_eq!(task("on-failure")["phase"], "Succeeded");
            assert_eq!(
                outcome("on-success"),
                (json!("Skipped"), json!("TriggerNotMet"))
            );
            assert_eq!(task("always")["phase"], "Succeeded");
        }
        "continue-on-failure" => {
            assert_eq!(phase, "Succeeded");
            assert_eq!(task("build")["phase"], "Succeeded");
            assert_eq!(
                task("report")["outputs"],
                json!({"phase": "Succeeded", "failed": "lint"})
            );
        }
        "retry-exit-codes" => {
            assert_eq!(task("transient")["attempts"], 3);
            assert_eq!(task("permanent")["attempts"], 1);
        }
        "rerun-after-fix" => {
            assert_eq!(phase, "Succeeded");
            assert_eq!(outcome("a"), (json!("Succeeded"), json!("Reused")));
            assert_eq!(outcome("side"), (json!("Succeeded"), json!("Reused")));
            assert_eq!(task("a")["attempts"], 1);
            assert_eq!(task("b")["attempts"], 1);
            assert_eq!(told("report"), "Succeeded");
        }
        "fan-out-lists" => {
            assert_eq!(phase, "Succeeded");
            assert_eq!(task("lit")["instances"], 3);
            assert_eq!(task("lit[1]")["outputs"], json!({"i": 1}));
            assert_eq!(task("par[1]")["outputs"], json!({"said": "y"}));
            assert_eq!(
                task("gather")["outputs"],
                json!({"v": [6, 2, 4], "said": ["x", "y"], "i": [0, 1, 2]})
            );
        }
        "fan-out-empty" => {
            assert_eq!(phase, "Succeeded");
            assert_eq!(task("none")["instances"], 0);
            assert_eq!(task("after")["outputs"], json!({"v": []}));
        }
        "fan-out-failing" => {
            assert_eq!(phase, "Failed");
            assert_eq!(outcome("p"), (json!("Failed"), json!("Error")));
            assert_eq!(
                task("p")["message"],
                "1 of 3 instances failed; p[1]: attempt 1 exited with code 4"
            );
            assert_eq!(task("p[1]")["exitCode"], 4);
            assert_eq!(task("p[2]")["phase"], "Succeeded");
            assert_eq!(
                outcome("after"),
                (json!("Skipped"), json!("UpstreamFailed"))
            );
        }
        "fan-out-may-fail" => {
            assert_eq!(phase, "Succeeded");
            assert_eq!(task("p")["phase"], "Failed");
            assert_eq!(task("after")["phase"], "Succeeded");
        }
        "fan-out-not-an-array" => {
            assert_eq!(phase, "Failed");
            assert_eq!(outcome("p"), (json!("Failed"), json!("InvalidFanOut")));
            assert_eq!(task("p")["attempts"], 0);
            assert_eq!(status["tasks"].as_array().unwrap().len(), 2);
        }
        "fan-out-rerun" => {
            assert_eq!(phase, "Succeeded");
            assert_eq!(outcome("p[0]"), (json!("Succeeded"), json!("Reused")));
            assert_eq!(outcome("p[2]"), (json!("Succeeded"), json!("Reused")));
            assert_eq!(outcome("p[1]"), (json!("Succeeded"), json!("Completed")));
            assert_eq!(task("sum")["outputs"], json!({"v": [1, 2, 3]}));
        }
        "fan-out-500" => {
            assert_eq!(phase, "Succeeded");
            assert_eq!(task("p")["instances"], 500);
            assert_eq!(status["taskCounts"]["succeeded"], 503);
        }
        other => panic!("no checks for scenario {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_ends_the_same_on_both_drivers() {
    let all = scenarios();
    let dirs: Vec<(tempfile::TempDir, tempfile::TempDir)> = all
        .iter()
        .map(|_| (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()))
        .collect();

    // Locally: every scenario at once, each its own `ork run`.
    let started = Instant::now();
    let locals: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = all
            .iter()
            .zip(&dirs)
            .map(|(scenario, (dir, _))| scope.spawn(move || local(scenario, dir.path())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let local_time = started.elapsed();

    // On the cluster: every scenario at once, one controller.
    // At most 100 records inline: the 500-instance fan-out moves its run's records to shards.
    let env = Env::with_args("scenarios", &["--inline-tasks", "100"]).await;
    let started = Instant::now();
    let clusters: Vec<Value> = futures::future::join_all(
        all.iter()
            .zip(&dirs)
            .map(|(scenario, (_, dir))| cluster(&env, scenario, dir.path())),
    )
    .await;
    let cluster_time = started.elapsed();

    // How many instances of the 500 ran at once, as each saw it, on each driver.
    for (scenario, (local, cluster)) in all.iter().zip(&dirs) {
        if scenario.name != "fan-out-500" {
            continue;
        }
        for dir in [local, cluster] {
            let seen: Vec<u32> = std::fs::read_to_string(dir.path().join("seen"))
                .unwrap()
                .lines()
                .map(|l| l.trim().parse().unwrap())
                .collect();
            assert_eq!(seen.len(), 500);
            let most = seen.iter().copied().max().unwrap();
            assert!(most <= 20, "{most} instances ran at once");
            assert!(most > 1, "the instances ran one at a time");
            println!("fan-out-500: at most {most} instances at once");
        }
    }
    for ((scenario, local), cluster) in all.iter().zip(&locals).zip(&clusters) {
        check(scenario.name, local);
        assert_eq!(
            essence(cluster),
            essence(local),
            "{}: the cluster and ork run disagree",
            scenario.name
        );
    }
    println!(
        "{} scenarios: ork run {:.1}s, cluster {:.1}s",
        all.len(),
        local_time.as_secs_f64(),
        cluster_time.as_secs_f64()
    );
}
