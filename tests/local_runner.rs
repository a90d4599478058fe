//! End-to-end tests of `ork run` and `ork validate`: the real binary, real processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ORK: &str = env!("CARGO_BIN_EXE_ork");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs `ork` with `args`, a private work dir, and a deadline.
fn ork(work: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(ORK);
    cmd.args(args);
    if args.first() == Some(&"run") {
        cmd.arg("--work-dir").arg(work.join("runs"));
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ork");
    wait_output(child, Duration::from_secs(60))
}

fn wait_output(mut child: std::process::Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("poll ork").is_some() {
            return child.wait_with_output().expect("collect ork output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ork did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `cond` every 10ms until it holds or `limit` passes.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `ork run FILE --output json` and the final Run.
fn run_json(work: &Path, file: &Path, extra: &[&str]) -> (i32, Value) {
    let file = file.to_str().expect("utf-8 path");
    let mut args = vec!["run", file, "--output", "json"];
    args.extend_from_slice(extra);
    let out = ork(work, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let run: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{stdout}\nstderr:\n{}",
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

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write manifest");
    path
}

fn workflow(tasks: &str) -> String {
    format!(
        "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: wf}}\n\
         spec:\n  defaults: {{image: busybox}}\n{tasks}"
    )
}

fn process_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        // A zombie is dead; it only waits to be reaped by whoever inherited it.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn diamond_passes_outputs_downstream() {
    let work = tempfile::tempdir().unwrap();
    let (code, run) = run_json(work.path(), &repo("examples/diamond.yaml"), &[]);
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(run["apiVersion"], "ork.dev/v1alpha1");
    assert_eq!(run["kind"], "Run");
    assert_eq!(run["status"]["phase"], "Succeeded");
    assert_eq!(
        run["status"]["taskCounts"],
        json!({"pending": 0, "running": 0, "succeeded": 4, "failed": 0, "skipped": 0, "cancelled": 0})
    );
    let cond = &run["status"]["conditions"][0];
    assert_eq!(
        (cond["type"].as_str(), cond["status"].as_str()),
        (Some("Succeeded"), Some("True"))
    );
    assert_eq!(cond["message"], "4 of 4 tasks succeeded");
    assert_eq!(task(&run, "extract")["outputs"]["rows"], 3);
    assert_eq!(task(&run, "double")["outputs"]["rows"], 6);
    assert_eq!(
        task(&run, "label")["outputs"]["label"],
        "rows from inventory"
    );
    assert_eq!(task(&run, "load")["outputs"]["loaded"], 6);
    for name in ["extract", "double", "label", "load"] {
        let t = task(&run, name);
        assert_eq!(
            (t["phase"].as_str(), t["attempts"].as_u64()),
            (Some("Succeeded"), Some(1))
        );
        assert_eq!(t["exitCode"], 0);
        assert_eq!(t["reason"], "Completed");
    }
    // load started only after both of its dependencies finished
    let time = |name: &str, field: &str| -> jiff::Timestamp {
        task(&run, name)[field].as_str().unwrap().parse().unwrap()
    };
    assert!(time("load", "startedAt") >= time("double", "finishedAt"));
    assert!(time("load", "startedAt") >= time("label", "finishedAt"));
}

#[test]
fn failing_branch_skips_downstream_and_keeps_the_rest() {
    let work = tempfile::tempdir().unwrap();
    let (code, run) = run_json(work.path(), &repo("examples/failing-branch.yaml"), &[]);
    assert_eq!(code, 1);
    assert_eq!(run["status"]["phase"], "Failed");
    let cond = &run["status"]["conditions"][0];
    assert_eq!(
        (cond["status"].as_str(), cond["reason"].as_str()),
        (Some("False"), Some("TaskFailed"))
    );
    assert!(
        cond["message"].as_str().unwrap().contains("flaky-import"),
        "{cond}"
    );
    let failed = task(&run, "flaky-import");
    assert_eq!(
        (failed["phase"].as_str(), failed["exitCode"].as_i64()),
        (Some("Failed"), Some(3))
    );
    assert_eq!(failed["reason"], "Error");
    let skipped = task(&run, "publish");
    assert_eq!(
        (skipped["phase"].as_str(), skipped["reason"].as_str()),
        (Some("Skipped"), Some("UpstreamFailed"))
    );
    assert_eq!(skipped["attempts"], 0);
    assert_eq!(task(&run, "report")["phase"], "Succeeded");
}

#[test]
fn retries_count_attempts_and_back_off() {
    let work = tempfile::tempdir().unwrap();
    let (code, run) = run_json(work.path(), &repo("examples/retries.yaml"), &[]);
    assert_eq!(code, 0, "{run:#}");
    let lucky = task(&run, "third-time-lucky");
    assert_eq!(lucky["attempts"], 3);
    assert_eq!(
        lucky["outputs"]["attempts"], 3,
        "ORK_ATTEMPT counts attempts"
    );
    // back-off of 0.2s + 0.4s between the three attempts
    let started: jiff::Timestamp = lucky["startedAt"].as_str().unwrap().parse().unwrap();
    let finished: jiff::Timestamp = lucky["finishedAt"].as_str().unwrap().parse().unwrap();
    let took = finished.duration_since(started).as_secs_f64();
    assert!(
        took >= 0.6,
        "three attempts with 0.2s and 0.4s back-off took {took}s"
    );
    assert_eq!(task(&run, "after")["phase"], "Succeeded");
}

#[test]
fn timeout_kills_the_whole_process_group_and_retries() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().display();
    let manifest = workflow(&format!(
        "  tasks:\n  - name: slow\n    timeoutSeconds: 1\n    retries: {{limit: 1, backoff: {{initialSeconds: 0}}}}\n    \
         command: [sh, -c, 'sleep 300 & echo $! > {dir}/bg.$ORK_ATTEMPT; echo $$ > {dir}/fg.$ORK_ATTEMPT; wait']\n  \
         - name: after\n    dependsOn: [slow]\n    command: ['true']\n"
    ));
    let file = write(work.path(), "wf.yaml", &manifest);
    let (code, run) = run_json(work.path(), &file, &[]);
    assert_eq!(code, 1);
    let slow = task(&run, "slow");
    assert_eq!(
        (slow["phase"].as_str(), slow["reason"].as_str()),
        (Some("Failed"), Some("Timeout"))
    );
    assert_eq!(slow["attempts"], 2);
    assert_eq!(task(&run, "after")["reason"], "UpstreamFailed");
    for attempt in 1..=2 {
        for which in ["fg", "bg"] {
            let pid =
                std::fs::read_to_string(work.path().join(format!("{which}.{attempt}"))).unwrap();
            wait_until(
                Duration::from_secs(5),
                &format!("{which} process of attempt {attempt} to die"),
                || process_gone(&pid),
            );
        }
    }
}

#[test]
fn a_retry_starts_only_once_the_timed_out_attempt_is_gone() {
    // Each attempt takes 1.5 s to stop after SIGTERM; the retry has no back-off. It must not
    // start before the first attempt has exited.
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().display();
    let manifest = workflow(&format!(
        "  tasks:\n  - name: stubborn\n    timeoutSeconds: 1\n    retries: {{limit: 1, backoff: {{initialSeconds: 0}}}}\n    \
         command: [sh, -c, 'trap \"sleep 1.5; date +%s%N > {dir}/end.$ORK_ATTEMPT; exit 143\" TERM; \
         date +%s%N > {dir}/start.$ORK_ATTEMPT; sleep 300 & wait']\n"
    ));
    let file = write(work.path(), "wf.yaml", &manifest);
    let (code, run) = run_json(work.path(), &file, &[]);
    assert_eq!(code, 1);
    let stubborn = task(&run, "stubborn");
    assert_eq!(stubborn["reason"], "Timeout");
    assert_eq!(stubborn["attempts"], 2);
    let read = |name: &str| -> u128 {
        std::fs::read_to_string(work.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .trim()
            .parse()
            .unwrap()
    };
    let (first_end, second_start) = (read("end.1"), read("start.2"));
    assert!(
        second_start >= first_end,
        "attempt 2 started {} ms before attempt 1 was gone",
        (first_end - second_start) / 1_000_000
    );
}

#[test]
fn parallelism_caps_running_tasks() {
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("log");
    let mut tasks = String::from("  parallelism: 3\n  tasks:\n");
    for i in 0..8 {
        tasks.push_str(&format!(
            "  - name: t{i}\n    command: [sh, -c, 'echo S >> {log}; sleep 0.3; echo E >> {log}']\n",
            log = log.display()
        ));
    }
    let file = write(work.path(), "wf.yaml", &workflow(&tasks));
    let (code, _) = run_json(work.path(), &file, &[]);
    assert_eq!(code, 0);
    let events = std::fs::read_to_string(&log).unwrap();
    let (mut now, mut peak) = (0i32, 0i32);
    for line in events.lines() {
        now += if line == "S" { 1 } else { -1 };
        peak = peak.max(now);
    }
    assert_eq!(events.lines().count(), 16);
    assert_eq!(
        peak, 3,
        "at most 3 tasks at once, and the cap is used: {events}"
    );
}

#[test]
fn params_from_run_and_command_line() {
    let work = tempfile::tempdir().unwrap();
    let file = repo("examples/params.yaml");
    let (code, run) = run_json(work.path(), &file, &[]);
    assert_eq!(code, 0);
    assert_eq!(
        task(&run, "fetch")["outputs"]["file"],
        "us-east/2026-11-26.csv"
    );
    assert_eq!(task(&run, "fetch")["outputs"]["mode"], "full");
    let (code, run) = run_json(
        work.path(),
        &file,
        &["--param", "region=eu-west", "-p", "date=2027-01-01"],
    );
    assert_eq!(code, 0);
    assert_eq!(
        task(&run, "fetch")["outputs"]["file"],
        "eu-west/2027-01-01.csv"
    );
}

#[test]
fn missing_and_unknown_params_are_invalid_input() {
    let work = tempfile::tempdir().unwrap();
    let manifest = workflow(
        "  params: [{name: day}]\n  tasks:\n  - name: t\n    inputs: [{name: DAY, fromParam: day}]\n    command: ['true']\n",
    );
    let file = write(work.path(), "wf.yaml", &manifest);
    let out = ork(
        work.path(),
        &["run", file.to_str().unwrap(), "-p", "colour=red"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown parameter \"colour\""), "{stderr}");
    assert!(stderr.contains("required parameter \"day\""), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing ran");
}

#[test]
fn task_environment_and_expansion() {
    let work = tempfile::tempdir().unwrap();
    let manifest = workflow(
        "  tasks:\n  - name: up\n    command: [sh, -c, 'echo \"{\\\"n\\\": 7, \\\"s\\\": \\\"a b\\\", \\\"o\\\": {\\\"k\\\": [1]}}\" > $ORK_OUTPUT']\n  \
         - name: down\n    dependsOn: [up]\n    env: [{name: GREETING, value: 'hi $(S) $$(S)'}]\n    inputs:\n    \
         - {name: N, fromTask: up, output: n}\n    - {name: S, fromTask: up, output: s}\n    - {name: O, fromTask: up, output: o}\n    \
         command: [sh, -c]\n    args:\n    - |\n      cat > $ORK_OUTPUT <<EOF\n      {\"wf\": \"$ORK_WORKFLOW\", \"run\": \"$ORK_RUN\", \"task\": \"$ORK_TASK\", \"attempt\": \"$ORK_ATTEMPT\",\n       \
         \"n\": \"$N\", \"s\": \"$S\", \"o\": $O, \"inputs\": $ORK_INPUT_JSON, \"expanded\": \"$(S)\", \"escaped\": \"$$ORK_TASK\",\n       \
         \"greeting\": \"$GREETING\", \"caller\": \"$FROM_CALLER\"}\n      EOF\n  \
         - name: literal\n    dependsOn: [up]\n    inputs: [{name: S, fromTask: up, output: s}]\n    \
         command: [sh, -c, 'printf \"{\\\"args\\\": \\\"%s|%s|%s\\\"}\" \"$1\" \"$2\" \"$3\" > $ORK_OUTPUT', sh, '$(NOPE)', '$$(S)', '$(S)']\n",
    );
    let file = write(work.path(), "wf.yaml", &manifest);
    let out = Command::new(ORK)
        .args(["run", file.to_str().unwrap(), "-o", "json", "--work-dir"])
        .arg(work.path().join("runs"))
        .env("FROM_CALLER", "inherited")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    let o = &task(&run, "down")["outputs"];
    assert_eq!(o["wf"], "wf");
    assert_eq!(o["run"], run["metadata"]["name"]);
    assert_eq!(o["task"], "down");
    assert_eq!(o["attempt"], "1");
    assert_eq!(o["n"], "7", "numbers are passed as their JSON text");
    assert_eq!(o["s"], "a b", "strings are passed bare");
    assert_eq!(o["o"], serde_json::json!({"k": [1]}));
    assert_eq!(
        o["inputs"],
        serde_json::json!({"N": 7, "S": "a b", "O": {"k": [1]}})
    );
    assert_eq!(o["expanded"], "a b", "$(VAR) is expanded in args");
    assert_eq!(o["escaped"], "down", "$$ escapes: the shell got $ORK_TASK");
    let literal = &task(&run, "literal")["outputs"]["args"];
    assert_eq!(
        literal, "$(NOPE)|$(S)|a b",
        "unknown references stay, $$ escapes, known expand"
    );
    assert_eq!(
        o["greeting"], "hi a b $(S)",
        "env values may refer to earlier variables"
    );
    assert_eq!(
        o["caller"], "inherited",
        "the caller's environment is passed on"
    );
}

#[test]
fn invalid_outputs_and_unresolved_inputs_fail_tasks() {
    let work = tempfile::tempdir().unwrap();
    let manifest = workflow(
        "  tasks:\n  - name: array\n    command: [sh, -c, 'echo [1] > $ORK_OUTPUT']\n  \
         - name: huge\n    command: [sh, -c, 'printf \"{\\\"k\\\": \\\"%05000d\\\"}\" 0 > $ORK_OUTPUT']\n  \
         - name: small\n    command: [sh, -c, 'echo {\\\"a\\\": 1} > $ORK_OUTPUT']\n  \
         - name: reader\n    dependsOn: [small]\n    inputs: [{name: B, fromTask: small, output: b}]\n    command: ['true']\n",
    );
    let file = write(work.path(), "wf.yaml", &manifest);
    let (code, run) = run_json(work.path(), &file, &[]);
    assert_eq!(code, 1);
    for name in ["array", "huge"] {
        let t = task(&run, name);
        assert_eq!(
            (t["phase"].as_str(), t["reason"].as_str()),
            (Some("Failed"), Some("InvalidOutput")),
            "{t}"
        );
    }
    assert!(
        task(&run, "huge")["message"]
            .as_str()
            .unwrap()
            .contains("4096")
    );
    let reader = task(&run, "reader");
    assert_eq!(
        (reader["phase"].as_str(), reader["reason"].as_str()),
        (Some("Failed"), Some("InputUnresolved"))
    );
    let message = reader["message"].as_str().unwrap();
    assert!(
        message.contains("\"small\"") && message.contains("\"b\""),
        "{message}"
    );
}

#[test]
fn a_command_that_cannot_start_fails_the_attempt() {
    let work = tempfile::tempdir().unwrap();
    let file = write(
        work.path(),
        "wf.yaml",
        &workflow("  tasks:\n  - name: t\n    command: [/no/such/program]\n"),
    );
    let (code, run) = run_json(work.path(), &file, &[]);
    assert_eq!(code, 1);
    let t = task(&run, "t");
    assert_eq!(t["reason"], "StartError");
    assert!(t["message"].as_str().unwrap().contains("/no/such/program"));
}

#[test]
fn interrupt_cancels_the_run_and_kills_tasks() {
    let work = tempfile::tempdir().unwrap();
    let pid_file = work.path().join("pid");
    let manifest = workflow(&format!(
        "  tasks:\n  - name: long\n    command: [sh, -c, 'echo $$ > {p}.tmp; mv {p}.tmp {p}; sleep 300']\n  \
         - name: next\n    dependsOn: [long]\n    command: ['true']\n",
        p = pid_file.display()
    ));
    let file = write(work.path(), "wf.yaml", &manifest);
    let child = Command::new(ORK)
        .args(["run", file.to_str().unwrap(), "-o", "json", "--work-dir"])
        .arg(work.path().join("runs"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the task to start", || {
        pid_file.exists()
    });
    let ork_pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(ork_pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = wait_output(child, Duration::from_secs(15));
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["status"]["phase"], "Cancelled");
    assert_eq!(run["status"]["conditions"][0]["reason"], "Cancelled");
    assert_eq!(task(&run, "long")["phase"], "Cancelled");
    assert_eq!(task(&run, "next")["phase"], "Cancelled");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    wait_until(Duration::from_secs(5), "the task process to die", || {
        process_gone(&pid)
    });
}

#[test]
fn run_deadline_fails_the_run() {
    let work = tempfile::tempdir().unwrap();
    let manifest = "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {name: wf}\nspec:\n  \
        defaults: {image: busybox}\n  activeDeadlineSeconds: 1\n  tasks:\n  \
        - name: long\n    command: [sleep, '300']\n  - name: next\n    dependsOn: [long]\n    command: ['true']\n";
    let file = write(work.path(), "wf.yaml", manifest);
    let (code, run) = run_json(work.path(), &file, &[]);
    assert_eq!(code, 1);
    assert_eq!(run["status"]["phase"], "Failed");
    assert_eq!(run["status"]["conditions"][0]["reason"], "DeadlineExceeded");
    assert_eq!(task(&run, "long")["reason"], "DeadlineExceeded");
    assert_eq!(task(&run, "next")["phase"], "Cancelled");
}

#[test]
fn run_with_inline_workflow() {
    let work = tempfile::tempdir().unwrap();
    let manifest = "apiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {name: adhoc}\nspec:\n  \
        params: {who: world}\n  workflow:\n    params: [{name: who}]\n    tasks:\n    - name: greet\n      image: busybox\n      \
        inputs: [{name: WHO, fromParam: who}]\n      command: [sh, -c, 'echo {\\\"said\\\": \\\"hello $WHO\\\"} > $ORK_OUTPUT']\n";
    let file = write(work.path(), "run.yaml", manifest);
    let (code, run) = run_json(work.path(), &file, &[]);
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(run["metadata"]["name"], "adhoc");
    assert_eq!(task(&run, "greet")["outputs"]["said"], "hello world");
}

#[test]
fn every_example_is_valid_and_runs_to_its_documented_result() {
    let work = tempfile::tempdir().unwrap();
    let expected = [
        ("hello.yaml", 0),
        ("diamond.yaml", 0),
        ("failing-branch.yaml", 1),
        ("retries.yaml", 0),
        ("timeout.yaml", 1),
        ("params.yaml", 0),
        ("finally.yaml", 1),
        ("conditions.yaml", 0),
        ("retry-policy.yaml", 0),
        ("cancel.yaml", 1),
        ("rerun.yaml", 1),
        ("schedule.yaml", 0),
        ("fan-out.yaml", 0),
        ("pod-settings.yaml", 0),
        ("workspaces.yaml", 0),
    ];
    let mut listed: Vec<String> = std::fs::read_dir(repo("examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    listed.sort();
    let mut covered: Vec<String> = expected.iter().map(|(n, _)| n.to_string()).collect();
    covered.sort();
    assert_eq!(listed, covered, "every example has an expected result here");
    for (name, code) in expected {
        let path = repo(&format!("examples/{name}"));
        let out = ork(work.path(), &["validate", path.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = ork(work.path(), &["run", path.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{name}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("TASK") && text.contains("Logs:"),
            "{name} prints a summary: {text}"
        );
    }
}

#[test]
fn validate_lists_every_problem() {
    let work = tempfile::tempdir().unwrap();
    let manifest = "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {name: bad}\nspec:\n  tasks:\n  \
        - name: a\n    image: i\n    command: ['true']\n    dependsOn: [c]\n  \
        - name: b\n    image: i\n    command: ['true']\n    dependsOn: [a, ghost]\n  \
        - name: c\n    image: i\n    command: ['true']\n    dependsOn: [b]\n  \
        - name: Bad_Name\n    command: ['true']\n";
    let file = write(work.path(), "bad.yaml", manifest);
    let out = ork(work.path(), &["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown task \"ghost\""), "{stderr}");
    assert!(stderr.contains("dependency cycle"), "{stderr}");
    assert!(
        stderr.contains("\"Bad_Name\" is not a DNS-1123 label"),
        "{stderr}"
    );
    assert!(stderr.contains("has no image"), "{stderr}");
    let out = ork(work.path(), &["run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "ork run refuses invalid input");
    let out = ork(work.path(), &["validate", "/no/such/file.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.yaml"));
}

#[test]
fn env_from_secrets_is_invalid_input_locally() {
    let work = tempfile::tempdir().unwrap();
    let manifest = workflow(
        "  tasks:\n  - name: t\n    command: ['true']\n    env: [{name: PASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}]\n",
    );
    let file = write(work.path(), "wf.yaml", &manifest);
    let out = ork(work.path(), &["run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "nothing runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"PASSWORD\" uses valueFrom"), "{stderr}");
}

/// `ork run FILE` with `XDG_STATE_HOME` set and no `--work-dir`.
fn run_with_state_home(state: &Path, file: &Path) -> Output {
    let child = Command::new(ORK)
        .args(["run", file.to_str().unwrap()])
        .env("XDG_STATE_HOME", state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ork");
    wait_output(child, Duration::from_secs(60))
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).unwrap().mode() & 0o777
}

#[test]
fn run_files_go_to_a_private_per_user_directory() {
    let work = tempfile::tempdir().unwrap();
    let manifest = "apiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {name: fixed}\nspec:\n  \
                    workflow:\n    tasks: [{name: t, image: i, command: [sh, -c, 'echo hello']}]\n";
    let file = write(work.path(), "run.yaml", manifest);
    let state = work.path().join("state");
    let out = run_with_state_home(&state, &file);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = state.join("ork").join("runs");
    let task_dir = runs.join("fixed").join("t");
    assert_eq!(
        std::fs::read_to_string(task_dir.join("attempt-1.stdout")).unwrap(),
        "hello\n"
    );
    for dir in [&runs, &runs.join("fixed"), &task_dir] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    assert_eq!(mode(&task_dir.join("attempt-1.stdout")), 0o600);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&runs.join("fixed").display().to_string())
    );
}

#[test]
fn a_shared_work_directory_is_refused_and_nothing_runs() {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("MARKER");
    let manifest = workflow(&format!(
        "  tasks:\n  - name: t\n    command: [touch, '{}']\n",
        marker.display()
    ));
    let file = write(work.path(), "wf.yaml", &manifest);
    let shared = work.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let child = Command::new(ORK)
        .args([
            "run",
            file.to_str().unwrap(),
            "--work-dir",
            shared.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ork");
    let out = wait_output(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("may be written by other users (mode 777)"),
        "{stderr}"
    );
    assert!(!marker.exists(), "the task ran");

    // The default directory, planted as a link by someone else, is refused too.
    let state = work.path().join("state");
    std::fs::create_dir_all(state.join("ork")).unwrap();
    std::os::unix::fs::symlink(&shared, state.join("ork").join("runs")).unwrap();
    let out = run_with_state_home(&state, &file);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a symbolic link"));
    assert!(!marker.exists(), "the task ran");
}

#[test]
fn run_files_are_never_written_through_a_planted_link() {
    let work = tempfile::tempdir().unwrap();
    let victim = work.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let manifest = "apiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {name: fixed}\nspec:\n  \
                    workflow:\n    defaults: {image: i}\n    tasks:\n    \
                    - {name: a, command: [sh, -c, 'echo overwritten']}\n    \
                    - {name: b, command: [sh, -c, 'echo overwritten']}\n";
    let file = write(work.path(), "run.yaml", manifest);
    let run_dir = work.path().join("runs").join("fixed");
    // Task a: its stdout file is a link to the victim; task b: its directory is a link.
    std::fs::create_dir_all(run_dir.join("a")).unwrap();
    std::os::unix::fs::symlink(&victim, run_dir.join("a").join("attempt-1.stdout")).unwrap();
    std::os::unix::fs::symlink(work.path(), run_dir.join("b")).unwrap();
    let (code, run) = run_json(work.path(), &file, &[]);
    assert_eq!(code, 1, "{run:#}");
    for name in ["a", "b"] {
        assert_eq!(task(&run, name)["phase"], "Failed", "{run:#}");
        assert_eq!(task(&run, name)["reason"], "StartError", "{run:#}");
    }
    assert!(
        task(&run, "b")["message"]
            .as_str()
            .is_some_and(|m| m.contains("is a symbolic link")),
        "{run:#}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!work.path().join("attempt-1.stdout").exists());
}

#[test]
fn validate_warns_about_values_kubectl_reads_as_booleans() {
    let work = tempfile::tempdir().unwrap();
    let manifest = "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: wf\n  \
                    labels: {on: 'x'}\nspec:\n  params: [{name: N, default: 'no'}]\n  tasks:\n  \
                    - name: t\n    image: i\n    command: ['true']\n    inputs:\n    \
                    - {name: N, fromParam: N}\n    - {name: FLAG, value: yes}\n";
    let file = write(work.path(), "wf.yaml", manifest);
    let out = ork(work.path(), &["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "warnings do not fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let f = file.display();
    let expected = [
        format!(
            "warning: {f}: metadata.labels.on: the key on is read as a boolean by kubectl (YAML 1.1); quote it"
        ),
        format!(
            "warning: {f}: spec.params[0].name: N is read as a boolean by kubectl (YAML 1.1); quote it"
        ),
        format!(
            "warning: {f}: spec.tasks[0].inputs[0].name: N is read as a boolean by kubectl (YAML 1.1); quote it"
        ),
        format!(
            "warning: {f}: spec.tasks[0].inputs[0].fromParam: N is read as a boolean by kubectl (YAML 1.1); quote it"
        ),
        format!(
            "warning: {f}: spec.tasks[0].inputs[1].value: yes is read as a boolean by kubectl (YAML 1.1); quote it"
        ),
    ];
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected, "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Workflow/wf is valid"));
    // `ork run` warns the same way and runs.
    let out = ork(work.path(), &["run", file.to_str().unwrap(), "-o", "json"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.params[0].name: N is read"));
}

#[test]
fn a_run_named_after_a_long_workflow_gets_a_valid_name() {
    let work = tempfile::tempdir().unwrap();
    let name = "w".repeat(70);
    let manifest = format!(
        "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: {name}}}\n\
         spec: {{tasks: [{{name: t, image: i, command: ['true']}}]}}\n"
    );
    let file = write(work.path(), "wf.yaml", &manifest);
    let (code, run) = run_json(work.path(), &file, &[]);
    assert_eq!(code, 0, "{run:#}");
    let run_name = run["metadata"]["name"].as_str().unwrap();
    assert_eq!(run_name.len(), 63, "{run_name}");
    assert!(
        run_name.starts_with(&format!("{}-", "w".repeat(57))),
        "{run_name}"
    );
}

#[test]
fn a_run_file_with_cancel_starts_nothing_and_one_with_suspend_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("ran");
    let spec = format!(
        "  tasks:\n    - name: a\n      command: [sh, -c, 'touch {}']\n",
        marker.display()
    );
    let run = |control: &str| {
        format!(
            "{}---\napiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {{name: r}}\n\
             spec:\n  workflowRef: {{name: wf}}\n  {control}\n",
            workflow(&spec)
        )
    };
    let file = write(work.path(), "cancel.yaml", &run("cancel: true"));
    let (code, status) = run_json(work.path(), &file, &[]);
    assert_eq!(code, 130);
    assert_eq!(status["status"]["phase"], "Cancelled");
    assert_eq!(task(&status, "a")["phase"], "Cancelled");
    assert_eq!(task(&status, "a")["attempts"], 0);
    assert!(!marker.exists(), "nothing ran");

    let file = write(work.path(), "suspend.yaml", &run("suspend: true"));
    let out = ork(work.path(), &["run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spec.suspend"), "{stderr}");
    assert!(!marker.exists(), "nothing ran");
}

/// `(phase, reason, attempts)` of a task of a finished run.
fn outcome<'a>(run: &'a Value, name: &str) -> (&'a str, &'a str, u64) {
    let t = task(run, name);
    (
        t["phase"].as_str().unwrap_or(""),
        t["reason"].as_str().unwrap_or(""),
        t["attempts"].as_u64().unwrap_or(0),
    )
}

#[test]
fn finally_tasks_are_told_how_the_run_went() {
    let work = tempfile::tempdir().unwrap();
    let (code, run) = run_json(work.path(), &repo("examples/finally.yaml"), &[]);
    assert_eq!(code, 1, "{run:#}");
    assert_eq!(run["status"]["conditions"][0]["reason"], "TaskFailed");
    assert_eq!(outcome(&run, "test"), ("Failed", "Error", 1));
    assert_eq!(outcome(&run, "publish"), ("Skipped", "UpstreamFailed", 0));
    let notify = task(&run, "notify");
    assert_eq!(notify["finally"], true);
    assert_eq!(
        notify["outputs"],
        json!({"phase": "Failed", "failed": "test"})
    );
    assert_eq!(outcome(&run, "cleanup"), ("Succeeded", "Completed", 1));
    let names: Vec<&str> = run["status"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["build", "test", "publish", "notify", "cleanup"]);
    let time = |name: &str, field: &str| -> jiff::Timestamp {
        task(&run, name)[field].as_str().unwrap().parse().unwrap()
    };
    assert!(time("notify", "startedAt") >= time("test", "finishedAt"));
}

#[test]
fn conditions_skip_without_failing() {
    let work = tempfile::tempdir().unwrap();
    let file = repo("examples/conditions.yaml");
    let (code, run) = run_json(work.path(), &file, &[]);
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(outcome(&run, "lint"), ("Failed", "Error", 1));
    assert_eq!(outcome(&run, "deploy"), ("Succeeded", "Completed", 1));
    assert_eq!(outcome(&run, "announce"), ("Skipped", "WhenFalse", 0));
    assert!(
        task(&run, "announce")["message"]
            .as_str()
            .unwrap()
            .contains("param \"env\""),
        "{run:#}"
    );
    assert_eq!(outcome(&run, "close-ticket"), ("Succeeded", "Completed", 1));
    assert_eq!(
        outcome(&run, "on-lint-failure"),
        ("Succeeded", "Completed", 1)
    );

    let (code, run) = run_json(work.path(), &file, &["--param", "env=dev"]);
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(outcome(&run, "deploy"), ("Skipped", "WhenFalse", 0));
    assert_eq!(outcome(&run, "announce"), ("Skipped", "WhenFalse", 0));
    assert_eq!(
        outcome(&run, "close-ticket").0,
        "Succeeded",
        "skipped is not failed"
    );
}

#[test]
fn retry_policy_retries_only_listed_exit_codes() {
    let work = tempfile::tempdir().unwrap();
    let (code, run) = run_json(work.path(), &repo("examples/retry-policy.yaml"), &[]);
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(outcome(&run, "flaky"), ("Succeeded", "Completed", 3));
    let history: Vec<(u64, i64, &str)> = task(&run, "flaky")["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["attempt"].as_u64().unwrap(),
                e["exitCode"].as_i64().unwrap(),
                e["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [(1, 75, "Error"), (2, 75, "Error"), (3, 0, "Completed")]
    );
    assert_eq!(outcome(&run, "misconfigured"), ("Failed", "Error", 1));
    assert_eq!(task(&run, "misconfigured")["exitCode"], 2);
}

#[test]
fn a_first_interrupt_runs_the_finally_tasks_and_a_second_stops_them() {
    let work = tempfile::tempdir().unwrap();
    let long_pid = work.path().join("long.pid");
    let cleanup_pid = work.path().join("cleanup.pid");
    let manifest = workflow(&format!(
        "  tasks:\n  - name: long\n    command: [sh, -c, 'echo $$ > {l}.tmp; mv {l}.tmp {l}; sleep 300']\n  \
         finally:\n  - name: cleanup\n    command: [sh, -c, 'echo $ORK_RUN_PHASE > {c}.tmp; mv {c}.tmp {c}; sleep 300']\n",
        l = long_pid.display(),
        c = cleanup_pid.display()
    ));
    let file = write(work.path(), "wf.yaml", &manifest);
    let child = Command::new(ORK)
        .args(["run", file.to_str().unwrap(), "-o", "json", "--work-dir"])
        .arg(work.path().join("runs"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the task to start", || {
        long_pid.exists()
    });
    let ork_pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(ork_pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_until(Duration::from_secs(10), "the finally task to start", || {
        cleanup_pid.exists()
    });
    assert_eq!(
        std::fs::read_to_string(&cleanup_pid).unwrap().trim(),
        "Cancelled"
    );
    let pid = std::fs::read_to_string(&long_pid).unwrap();
    wait_until(Duration::from_secs(5), "the regular task to die", || {
        process_gone(&pid)
    });
    nix::sys::signal::kill(ork_pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = wait_output(child, Duration::from_secs(15));
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["status"]["phase"], "Cancelled");
    assert_eq!(outcome(&run, "long"), ("Cancelled", "Cancelled", 1));
    assert_eq!(outcome(&run, "cleanup"), ("Cancelled", "Cancelled", 1));
}

#[test]
fn a_rerun_reuses_what_succeeded_and_runs_the_rest() {
    let work = tempfile::tempdir().unwrap();
    let counter = work.path().join("a-ran");
    let fixed = work.path().join("fixed");
    let manifest = workflow(&format!(
        "  tasks:\n  - name: a\n    command: [sh, -c, 'echo x >> {count}; echo \"{{\\\"v\\\": 7}}\" > $ORK_OUTPUT']\n  \
         - name: b\n    dependsOn: [a]\n    command: [sh, -c, 'test -f {fixed}']\n  \
         - name: c\n    dependsOn: [b]\n    inputs: [{{name: V, fromTask: a, output: v}}]\n    command: [sh, -c, 'test \"$V\" = 7']\n  \
         finally:\n  - name: report\n    command: [sh, -c, 'echo $ORK_RUN_PHASE']\n",
        count = counter.display(),
        fixed = fixed.display()
    ));
    let file = write(work.path(), "wf.yaml", &manifest);
    let (code, first) = run_json(work.path(), &file, &[]);
    assert_eq!(code, 1, "{first:#}");
    assert_eq!(outcome(&first, "b"), ("Failed", "Error", 1));
    let first_name = first["metadata"]["name"].as_str().unwrap().to_string();
    let kept = work.path().join("runs").join(&first_name).join("run.json");
    let kept_run: Value = serde_json::from_slice(&std::fs::read(&kept).unwrap()).unwrap();
    assert_eq!(kept_run, first, "run.json is the final Run");

    std::fs::write(&fixed, "").unwrap();
    let rerun = |path: &Path| {
        let out = ork(
            work.path(),
            &["run", "--rerun-of", path.to_str().unwrap(), "-o", "json"],
        );
        let run: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!("{}", String::from_utf8_lossy(&out.stderr));
        });
        (out.status.code().unwrap(), run)
    };
    let (code, second) = rerun(&kept);
    assert_eq!(code, 0, "{second:#}");
    assert_eq!(second["spec"]["rerunOf"]["name"], first_name.as_str());
    assert_eq!(outcome(&second, "a"), ("Succeeded", "Reused", 1));
    assert_eq!(task(&second, "a")["reusedFrom"], first_name.as_str());
    assert_eq!(task(&second, "a")["outputs"], json!({"v": 7}));
    assert_eq!(outcome(&second, "b"), ("Succeeded", "Completed", 1));
    assert_eq!(outcome(&second, "c"), ("Succeeded", "Completed", 1));
    assert_eq!(outcome(&second, "report"), ("Succeeded", "Completed", 1));
    let ran = std::fs::read_to_string(&counter).unwrap();
    assert_eq!(ran.lines().count(), 1, "a did not run again");

    // A rerun of the rerun names, for each task, the run that produced its result.
    let second_name = second["metadata"]["name"].as_str().unwrap();
    let kept = work.path().join("runs").join(second_name).join("run.json");
    let (code, third) = rerun(&kept);
    assert_eq!(code, 0, "{third:#}");
    assert_eq!(task(&third, "a")["reusedFrom"], first_name.as_str());
    assert_eq!(task(&third, "b")["reusedFrom"], second_name);
    assert_eq!(outcome(&third, "report"), ("Succeeded", "Completed", 1));
}

#[test]
fn a_rerun_needs_a_finished_run_json_and_nothing_else() {
    let work = tempfile::tempdir().unwrap();
    let garbage = write(work.path(), "run.json", "{\"not\": \"a run\"");
    let out = ork(
        work.path(),
        &["run", "--rerun-of", garbage.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a Run"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let running = write(
        work.path(),
        "running.json",
        r#"{"apiVersion": "ork.dev/v1alpha1", "kind": "Run", "metadata": {"name": "x"},
            "spec": {}, "status": {"phase": "Running"}}"#,
    );
    let out = ork(
        work.path(),
        &["run", "--rerun-of", running.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has not finished"));
    let file = write(
        work.path(),
        "wf.yaml",
        &workflow("  tasks:\n  - {name: a, command: ['true']}\n"),
    );
    let out = ork(
        work.path(),
        &[
            "run",
            file.to_str().unwrap(),
            "--rerun-of",
            running.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "FILE and --rerun-of exclude each other"
    );
    // A Run manifest naming a cluster run to rerun is not something ork run can do.
    let manifest = "apiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {name: r}\nspec:\n  rerunOf: {name: old}\n";
    let file = write(work.path(), "rerun.yaml", manifest);
    let out = ork(work.path(), &["run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rerun-of"));
    let out = ork(work.path(), &["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "valid for a cluster");
    let both = "apiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {name: r}\nspec:\n  rerunOf: {name: old}\n  workflowRef: {name: wf}\n";
    let file = write(work.path(), "both.yaml", both);
    let out = ork(work.path(), &["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.rerunOf"));
}

#[test]
fn the_rerun_example_runs_again_what_failed() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("input.csv");
    let param = format!("input={}", input.display());
    let (code, first) = run_json(
        work.path(),
        &repo("examples/rerun.yaml"),
        &["--param", &param],
    );
    assert_eq!(code, 1, "{first:#}");
    assert_eq!(outcome(&first, "import"), ("Failed", "Error", 1));
    std::fs::write(&input, "a,b\n").unwrap();
    let name = first["metadata"]["name"].as_str().unwrap();
    let kept = work.path().join("runs").join(name).join("run.json");
    let out = ork(
        work.path(),
        &["run", "--rerun-of", kept.to_str().unwrap(), "-o", "json"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome(&second, "extract"), ("Succeeded", "Reused", 1));
    assert_eq!(outcome(&second, "import"), ("Succeeded", "Completed", 1));
    assert_eq!(outcome(&second, "load"), ("Succeeded", "Completed", 1));
}

#[test]
fn the_cancel_example_cleans_up_after_an_interrupt() {
    let work = tempfile::tempdir().unwrap();
    let file = repo("examples/cancel.yaml");
    let mut child = Command::new(ORK)
        .args(["run", file.to_str().unwrap(), "-o", "json", "--work-dir"])
        .arg(work.path().join("runs"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The progress goes to stderr: interrupt once the long task has started.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("started") || !line.contains("long-import") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0,
            "no start"
        );
    }
    let ork_pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(ork_pid, nix::sys::signal::Signal::SIGINT).unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let out = wait_output(child, Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(130));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome(&run, "long-import"), ("Cancelled", "Cancelled", 1));
    assert_eq!(outcome(&run, "publish"), ("Cancelled", "Cancelled", 0));
    assert_eq!(outcome(&run, "cleanup"), ("Succeeded", "Completed", 1));
}

/// Workspaces under `ork run`: `--workspace` gives a directory the tasks share (created when
/// missing); a Kubernetes-only binding without one, or a binding of a workspace the workflow does
/// not have, stops the run before anything starts, and `ork validate` names every such problem.
#[test]
fn workspaces_are_directories_and_bad_bindings_stop_the_run_up_front() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("given");
    let (code, run) = run_json(
        work.path(),
        &repo("examples/workspaces.yaml"),
        &["--workspace", &format!("source={}", dir.display())],
    );
    assert_eq!(code, 0, "{run}");
    assert!(
        dir.join("src/main.c").exists(),
        "clone wrote into the given directory"
    );
    let build = run["status"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "build")
        .unwrap();
    assert_eq!(build["outputs"]["bytes"], 25);

    let marker = work.path().join("ran");
    let manifest = format!(
        "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: w}}\nspec:\n  \
         workspaces: [{{name: settings}}]\n  tasks:\n  - name: t\n    image: i\n    \
         workspaces: [{{name: settings}}]\n    command: [touch, '{}']\n---\n\
         apiVersion: ork.dev/v1alpha1\nkind: Run\nmetadata: {{name: w-1}}\nspec:\n  \
         workflowRef: {{name: w}}\n  workspaces:\n  - {{name: settings, configMap: {{name: cm}}}}\n  \
         - {{name: other, emptyDir: {{}}}}\n  - {{name: settings, emptyDir: {{}}, secret: {{secretName: s}}}}\n",
        marker.display()
    );
    let file = work.path().join("bad.yaml");
    std::fs::write(&file, manifest).unwrap();
    let out = ork(work.path(), &["run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "spec.workspaces[1].name: binds workspace \"other\"; the workflow declares \"settings\"",
        "spec.workspaces[2].name: workspace \"settings\" is bound twice",
        "spec.workspaces[2]: workspace \"settings\" needs exactly one of",
        "workspace \"settings\" is bound to a configMap, which only Kubernetes provides; give ork run a directory for it with --workspace settings=DIR",
    ] {
        assert!(stderr.contains(expected), "{expected}\nin:\n{stderr}");
    }
    assert!(!marker.exists(), "nothing ran");
    let out = ork(work.path(), &["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("binds workspace \"other\"") && stderr.contains("bound twice"),
        "{stderr}"
    );
}

/// `ork graph`: the DAG as DOT, Mermaid or SVG; a file without exactly one valid workflow is
/// refused (exit 2) saying why.
#[test]
fn graph_draws_the_dag_in_three_formats() {
    let work = tempfile::tempdir().unwrap();
    let diamond = repo("examples/diamond.yaml");
    let diamond = diamond.to_str().unwrap();
    let out = ork(work.path(), &["graph", diamond]);
    assert_eq!(out.status.code(), Some(0));
    let dot = String::from_utf8_lossy(&out.stdout);
    assert!(dot.starts_with("digraph \"diamond\" {"), "{dot}");
    for line in ["t0 [label=\"extract\"];", "t0 -> t1;", "t2 -> t3;"] {
        assert!(dot.contains(line), "{line} in {dot}");
    }
    let out = ork(work.path(), &["graph", diamond, "--format", "mermaid"]);
    let mermaid = String::from_utf8_lossy(&out.stdout);
    assert!(
        mermaid.starts_with("flowchart TD\n") && mermaid.contains("t1 --> t3"),
        "{mermaid}"
    );
    let out = ork(work.path(), &["graph", diamond, "-f", "svg"]);
    assert_eq!(out.status.code(), Some(0));
    let svg = String::from_utf8_lossy(&out.stdout);
    assert!(
        svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    for name in ["extract", "double", "label", "load"] {
        assert!(svg.contains(&format!(">{name}<")), "{name}");
    }

    let two = work.path().join("two.yaml");
    let workflow = |name: &str| {
        format!(
            "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: {name}}}\n\
             spec: {{tasks: [{{name: a, image: i, command: ['true'], dependsOn: [ghost]}}]}}\n"
        )
    };
    std::fs::write(&two, format!("{}---\n{}", workflow("x"), workflow("y"))).unwrap();
    let out = ork(work.path(), &["graph", two.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("2 workflows in the file; ork graph draws one")
    );
    let one = work.path().join("one.yaml");
    std::fs::write(&one, workflow("x")).unwrap();
    let out = ork(work.path(), &["graph", one.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("depends on unknown task \"ghost\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
