//! `$(VAR)` expansion that would grow past what a process can receive fails the attempt with
//! `StartError` instead of allocating: here the growth comes from an input, whose value the
//! validator cannot know.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const ORK: &str = env!("CARGO_BIN_EXE_ork");

/// `ork run --output json` on `manifest`: the exit code and the final Run.
fn run(work: &Path, manifest: &str) -> (Option<i32>, Value) {
    let file = work.join("wf.yaml");
    std::fs::write(&file, manifest).expect("write manifest");
    let mut child = Command::new(ORK)
        .arg("run")
        .arg(&file)
        .args(["--output", "json", "--work-dir"])
        .arg(work.join("runs"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ork");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("poll ork").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ork did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("collect ork output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let run = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), run)
}

#[test]
fn an_expansion_past_the_argument_limit_fails_the_attempt() {
    // `up` outputs 4,000 bytes; 64 references to them make 256,000 bytes, past 131,072.
    let refs = "$(X)".repeat(64);
    let cases = [
        (
            format!("env: [{{name: BIG, value: '{refs}'}}]"),
            "env \"BIG\" expands to more than 131072 bytes",
        ),
        (
            format!("args: ['{refs}']"),
            "argument 2 of the command expands to more than 131072 bytes",
        ),
    ];
    for (field, message) in cases {
        let work = tempfile::tempdir().unwrap();
        let manifest = format!(
            "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: wf}}\nspec:\n  \
             defaults: {{image: busybox}}\n  tasks:\n  \
             - name: up\n    command: [sh, -c, 'printf \"{{\\\"v\\\": \\\"%04000d\\\"}}\" 0 > \"$ORK_OUTPUT\"']\n  \
             - name: down\n    dependsOn: [up]\n    command: [sh, -c]\n    \
             inputs: [{{name: X, fromTask: up, output: v}}]\n    {field}\n"
        );
        let (code, run) = run(work.path(), &manifest);
        let tasks = run["status"]["tasks"].as_array().expect("tasks");
        assert_eq!(tasks[0]["phase"], "Succeeded", "{run:#}");
        let down = &tasks[1];
        assert_eq!(down["phase"], "Failed", "{run:#}");
        assert_eq!(down["reason"], "StartError", "{run:#}");
        let text = down["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{text}");
        assert_eq!(code, Some(1));
    }
}
