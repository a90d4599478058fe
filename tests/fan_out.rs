//! Fan-out (`forEach`) with `ork run`: the real binary, real processes. Each scenario is one
//! manifest and the phases, reasons, attempts and outputs it must end with.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const ORK: &str = env!("CARGO_BIN_EXE_ork");

/// `ork run FILE --output json [--param …]`: its exit code and the final Run.
fn ork_run(work: &Path, manifest: &str, params: &[&str]) -> (i32, Value) {
    let file = work.join("workflow.yaml");
    std::fs::write(&file, manifest).unwrap();
    let mut cmd = Command::new(ORK);
    cmd.arg("run")
        .arg(&file)
        .args(["--output", "json", "--work-dir"])
        .arg(work.join("runs"));
    for param in params {
        cmd.args(["--param", param]);
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both pipes are read while it runs (a run of hundreds of tasks writes more progress than a
    // pipe holds), with a deadline.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("ork run did not finish in time");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let run: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), run)
}

fn task<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["status"]["tasks"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no task {name} in {run:#}"))
}

fn workflow(body: &str) -> String {
    format!(
        "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: fan}}\n\
         spec:\n  defaults: {{image: busybox}}\n{body}"
    )
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn literal_param_and_dynamic_lists_fan_out_and_readers_get_item_order() {
    let work = tempfile::tempdir().unwrap();
    let manifest = workflow(
        r#"  params: [{name: files, default: '["x", "y"]'}]
  tasks:
    - name: list
      command: [sh, -c, 'echo "{\"l\": [3, 1, 2]}" > "$ORK_OUTPUT"']
    - name: lit
      forEach: {items: [a, {k: 1}, 7]}
      command: [sh, -c, 'printf "{\"item\": %s, \"i\": $ORK_ITEM_INDEX}" "$(printf %s "$ORK_ITEM" | sed "s/^[a-z]*$/\"&\"/")" > "$ORK_OUTPUT"']
    - name: par
      forEach: {fromParam: files}
      command: [sh, -c, 'echo "{\"said\": \"$1\"}" > "$ORK_OUTPUT"', sh, '$(ORK_ITEM)']
    - name: dyn
      dependsOn: [list]
      forEach: {fromTask: list, output: l, parallelism: 1}
      command: [sh, -c, 'sleep 0.0$ORK_ITEM; echo "{\"v\": $((ORK_ITEM * 2))}" > "$ORK_OUTPUT"']
    - name: gather
      dependsOn: [dyn, lit, par]
      inputs:
        - {name: V, fromTask: dyn, output: v}
        - {name: SAID, fromTask: par, output: said}
        - {name: I, fromTask: lit, output: i}
      command: [sh, -c, 'echo "{\"v\": $V, \"said\": $SAID, \"i\": $I}" > "$ORK_OUTPUT"']
"#,
    );
    let (code, run) = ork_run(work.path(), &manifest, &[]);
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(task(&run, "lit")["instances"], 3);
    assert_eq!(task(&run, "lit")["phase"], "Succeeded");
    assert_eq!(
        task(&run, "lit[1]")["outputs"],
        json!({"item": {"k": 1}, "i": 1})
    );
    assert_eq!(task(&run, "lit[0]")["outputs"]["item"], "a");
    assert_eq!(task(&run, "par[1]")["outputs"]["said"], "y");
    assert_eq!(task(&run, "dyn")["instances"], 3);
    assert_eq!(
        task(&run, "gather")["outputs"],
        json!({"v": [6, 2, 4], "said": ["x", "y"], "i": [0, 1, 2]})
    );
    assert_eq!(run["status"]["progress"], "13/13");
    // Each instance has its own log directory, named as in the status.
    let logs = work
        .path()
        .join("runs")
        .join(run["metadata"]["name"].as_str().unwrap());
    assert!(logs.join("dyn[2]").join("attempt-1.stdout").exists());

    // Another list through the param.
    let (code, run) = ork_run(work.path(), &manifest, &["files=[\"p\", \"q\", \"r\"]"]);
    assert_eq!(code, 0);
    assert_eq!(task(&run, "par")["instances"], 3);
}

#[test]
fn an_empty_list_succeeds_with_no_instances() {
    let work = tempfile::tempdir().unwrap();
    let manifest = workflow(
        r#"  tasks:
    - {name: none, forEach: {items: []}, command: ['false']}
    - name: after
      dependsOn: [none]
      inputs: [{name: V, fromTask: none, output: v}]
      command: [sh, -c, 'echo "{\"v\": $V}" > "$ORK_OUTPUT"']
"#,
    );
    let (code, run) = ork_run(work.path(), &manifest, &[]);
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(task(&run, "none")["instances"], 0);
    assert_eq!(task(&run, "none")["phase"], "Succeeded");
    assert_eq!(task(&run, "after")["outputs"]["v"], json!([]));
}

#[test]
fn five_hundred_items_never_run_more_than_the_fan_outs_parallelism() {
    let work = tempfile::tempdir().unwrap();
    let running = work.path().join("running");
    std::fs::create_dir(&running).unwrap();
    let items: Vec<u32> = (0..500).collect();
    let manifest = workflow(&format!(
        r#"  tasks:
    - name: p
      forEach: {{items: {items:?}, parallelism: 20}}
      command: [sh, -c, 'touch {dir}/$ORK_ITEM; sleep 0.02; n=$(ls {dir} | wc -l); rm {dir}/$ORK_ITEM; echo "{{\"seen\": $n}}" > "$ORK_OUTPUT"']
    - name: most
      dependsOn: [p]
      inputs: [{{name: SEEN, fromTask: p, output: seen}}]
      command: [sh, -c, 'echo "{{\"seen\": $SEEN}}" > "$ORK_OUTPUT"']
"#,
        dir = running.display()
    ));
    let (code, run) = ork_run(work.path(), &manifest, &[]);
    assert_eq!(code, 0, "{}", run["status"]["conditions"]);
    let seen: Vec<u64> = task(&run, "most")["outputs"]["seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(seen.len(), 500);
    let most = *seen.iter().max().unwrap();
    assert!(most <= 20, "{most} instances ran at once");
    assert!(most > 1, "the instances ran one at a time");
    assert_eq!(run["status"]["taskCounts"]["succeeded"], 502);
}

#[test]
fn a_failing_instance_fails_its_task_unless_it_may_fail() {
    let work = tempfile::tempdir().unwrap();
    let manifest = |may_fail: bool| {
        workflow(&format!(
            r#"  tasks:
    - name: p
      continueOnFailure: {may_fail}
      forEach: {{items: [1, 2, 3]}}
      command: [sh, -c, '[ "$ORK_ITEM" != 2 ] || exit 4; echo "{{\"v\": $ORK_ITEM}}" > "$ORK_OUTPUT"']
    - {{name: after, dependsOn: [p], command: ['true']}}
"#
        ))
    };
    let (code, run) = ork_run(work.path(), &manifest(false), &[]);
    assert_eq!(code, 1);
    assert_eq!(task(&run, "p[1]")["phase"], "Failed");
    assert_eq!(task(&run, "p[1]")["exitCode"], 4);
    assert_eq!(task(&run, "p[0]")["phase"], "Succeeded");
    assert_eq!(task(&run, "p[2]")["phase"], "Succeeded");
    assert_eq!(task(&run, "p")["phase"], "Failed");
    assert_eq!(task(&run, "p")["reason"], "Error");
    assert_eq!(
        task(&run, "p")["message"],
        "1 of 3 instances failed; p[1]: attempt 1 exited with code 4"
    );
    assert_eq!(task(&run, "after")["reason"], "UpstreamFailed");
    assert_eq!(run["status"]["phase"], "Failed");

    let (code, run) = ork_run(work.path(), &manifest(true), &[]);
    assert_eq!(code, 0);
    assert_eq!(task(&run, "p")["phase"], "Failed");
    assert_eq!(task(&run, "after")["phase"], "Succeeded");
    assert_eq!(run["status"]["phase"], "Succeeded");
}

#[test]
fn a_list_that_is_not_an_array_fails_the_task_with_nothing_started() {
    let work = tempfile::tempdir().unwrap();
    let manifest = workflow(
        r#"  params: [{name: files}]
  tasks:
    - {name: p, forEach: {fromParam: files}, command: ['true']}
"#,
    );
    let (code, run) = ork_run(work.path(), &manifest, &["files=a.csv,b.csv"]);
    assert_eq!(code, 1);
    let p = task(&run, "p");
    assert_eq!(p["phase"], "Failed");
    assert_eq!(p["reason"], "InvalidFanOut");
    assert_eq!(
        p["message"],
        r#"forEach: param "files" is not a JSON array: "a.csv,b.csv""#
    );
    assert_eq!(p["attempts"], 0);
    assert_eq!(run["status"]["tasks"].as_array().unwrap().len(), 1);
}

#[test]
fn a_rerun_runs_only_the_instances_that_failed() {
    let work = tempfile::tempdir().unwrap();
    let flag = work.path().join("fixed");
    let manifest = workflow(&format!(
        r#"  tasks:
    - name: p
      forEach: {{items: [1, 2, 3]}}
      command: [sh, -c, '[ "$ORK_ITEM" != 2 ] || [ -e {flag} ] || exit 1; echo "{{\"v\": $ORK_ITEM}}" > "$ORK_OUTPUT"']
"#,
        flag = flag.display()
    ));
    let (code, first) = ork_run(work.path(), &manifest, &[]);
    assert_eq!(code, 1);
    std::fs::write(&flag, "").unwrap();
    let previous = work
        .path()
        .join("runs")
        .join(first["metadata"]["name"].as_str().unwrap())
        .join("run.json");
    let out = Command::new(ORK)
        .args(["run", "--rerun-of"])
        .arg(&previous)
        .args(["--output", "json", "--work-dir"])
        .arg(work.path().join("runs"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rerun: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(task(&rerun, "p[0]")["reason"], "Reused");
    assert_eq!(task(&rerun, "p[2]")["reason"], "Reused");
    assert_eq!(task(&rerun, "p[1]")["reason"], "Completed");
    assert_eq!(task(&rerun, "p[1]")["attempts"], 1);
    assert_eq!(task(&rerun, "p")["phase"], "Succeeded");
}

#[test]
fn the_example_fans_out() {
    let work = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(repo("examples/fan-out.yaml")).unwrap();
    let (code, run) = ork_run(work.path(), &manifest, &[]);
    assert_eq!(code, 0);
    assert_eq!(task(&run, "count[2]")["outputs"]["rows"], 30);
    assert_eq!(task(&run, "deploy")["instances"], 2);
}

#[test]
fn an_item_too_long_for_the_environment_fails_its_instance_by_name() {
    let work = tempfile::tempdir().unwrap();
    let big = "x".repeat(200_000);
    let manifest = workflow(&format!(
        "  tasks:\n    - {{name: p, forEach: {{items: [\"{big}\", small]}}, command: ['true']}}\n"
    ));
    let (code, run) = ork_run(work.path(), &manifest, &[]);
    assert_eq!(code, 1);
    assert_eq!(task(&run, "p[0]")["reason"], "StartError");
    assert_eq!(
        task(&run, "p[0]")["message"],
        "ORK_ITEM is 200000 bytes, more than the 131072 one environment variable may hold"
    );
    assert_eq!(task(&run, "p[1]")["phase"], "Succeeded");
}
