//! `ork list`, `ork suspend|resume|cancel|rerun|delete` against the test control plane, run as
//! the user would: the binary, a kubeconfig and a namespace. Each command waits for the
//! controller's answer; errors say what to do (no such run; which verb RBAC refused).

mod support;

use std::path::Path;
use std::process::{Command, Output};

use ork::api::{ConditionStatus, RunPhase};
use serde_json::json;
use support::env::{Env, ORK, chain, kubeconfig_as};

fn ork(kubeconfig: &Path, namespace: &str, args: &[&str]) -> Output {
    Command::new(ORK)
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--namespace", namespace])
        .output()
        .unwrap()
}

fn text(out: &Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_commands_wait_for_the_controller_and_say_what_went_wrong() {
    let env = Env::new("commands").await;
    let (kubeconfig, ns) = (env.kubeconfig.clone(), env.ns.clone());
    env.apply_workflow(&chain("long", &[("wait", "sleep 300")]))
        .await;
    env.create_run("long-1", "long", json!({})).await;
    env.wait_task_running("long-1", "wait").await;

    let (code, out, _) = text(&ork(&kubeconfig, &ns, &["list"]));
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("PROGRESS"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("long-1") && lines[1].contains("Running"),
        "{out}"
    );
    let (_, out, _) = text(&ork(&kubeconfig, &ns, &["list", "--phase", "Succeeded"]));
    assert!(out.starts_with("No runs in namespace"), "{out}");

    let (code, out, err) = text(&ork(&kubeconfig, &ns, &["suspend", "long-1"]));
    assert_eq!((code, out.trim()), (0, "Run \"long-1\" suspended"), "{err}");
    let suspended = |run: &ork::api::Run| {
        run.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Suspended")
            .map(|c| c.status)
    };
    let run = env.runs().get("long-1").await.unwrap();
    assert_eq!(suspended(&run), Some(ConditionStatus::True));
    let (code, out, _) = text(&ork(&kubeconfig, &ns, &["resume", "run/long-1"]));
    assert_eq!((code, out.trim()), (0, "Run \"long-1\" resumed"));

    let (code, out, _) = text(&ork(&kubeconfig, &ns, &["cancel", "long-1"]));
    assert_eq!((code, out.trim()), (0, "Run \"long-1\" cancelled"));
    let run = env.runs().get("long-1").await.unwrap();
    assert_eq!(run.status.unwrap().phase, Some(RunPhase::Cancelled));
    // `ork get` shows the task table by default.
    let (code, out, _) = text(&ork(&kubeconfig, &ns, &["get", "long-1"]));
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        lines[0].starts_with("TASK") && lines[0].contains("ATTEMPTS"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("wait") && lines[1].contains("Cancelled"),
        "{out}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("Run long-1 Cancelled (0/1): "),
        "{out}"
    );

    let (code, out, err) = text(&ork(&kubeconfig, &ns, &["rerun", "long-1"]));
    assert_eq!(code, 0, "{err}");
    let made = out
        .trim()
        .strip_prefix("Run \"")
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    assert!(made.starts_with("long-"), "{out}");
    assert!(out.trim().ends_with("rerunning \"long-1\""), "{out}");
    let rerun = env.runs().get(&made).await.unwrap();
    assert_eq!(rerun.spec.rerun_of.unwrap().name, "long-1");

    let (code, out, _) = text(&ork(&kubeconfig, &ns, &["delete", &made]));
    assert_eq!(
        (code, out.trim().to_string()),
        (0, format!("Run \"{made}\" deleted"))
    );
    assert!(env.runs().get_opt(&made).await.unwrap().is_none());

    // What goes wrong is said in the user's terms.
    let (code, _, err) = text(&ork(&kubeconfig, &ns, &["cancel", "nope"]));
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        format!("error: no Run \"nope\" in namespace \"{ns}\"")
    );
    let (code, _, err) = text(&ork(&kubeconfig, &ns, &["cancel", "Not_A_Name"]));
    assert_eq!(code, 2, "{err}");
    let powerless = env.work.path().join("powerless");
    kubeconfig_as(&kubeconfig, &powerless, "ork-test-user");
    let (code, _, err) = text(&ork(&powerless, &ns, &["delete", "long-1"]));
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        format!(
            "error: forbidden: your RBAC role does not let you delete runs.ork.dev in namespace \
             \"{ns}\" (ask for the delete verb on runs.ork.dev)"
        )
    );
    let (code, _, err) = text(&ork(&powerless, &ns, &["list"]));
    assert_eq!(code, 1);
    assert!(err.contains("does not let you list runs.ork.dev"), "{err}");
}

/// Reads `child`'s stdout lines on a thread; `recv_timeout` waits for each with a deadline.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if send.send(line).is_err() {
                return;
            }
        }
    });
    receive
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_watch_and_logs_work_as_ork_run_does() {
    let env = Env::new("submit").await;
    let (kubeconfig, ns) = (env.kubeconfig.clone(), env.ns.clone());
    let gate = env.work.path().join("gate");
    let file = env.work.path().join("wf.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: greet}}\nspec:\n  \
             params: [{{name: fail, default: \"no\"}}]\n  defaults: {{image: busybox}}\n  tasks:\n  \
             - {{name: a, command: [sh, -c, 'echo hello-a; echo warn-a >&2; echo bye-a']}}\n  \
             - name: slow\n    dependsOn: [a]\n    inputs: [{{name: FAIL, fromParam: fail}}]\n    \
             command: [sh, -c, 'echo first; while [ ! -e {} ]; do sleep 0.1; done; echo second; \
             [ \"$FAIL\" = no ]']\n",
            gate.display()
        ),
    )
    .unwrap();

    // --watch shows progress, the table, and exits as `ork run` does.
    std::fs::write(&gate, "").unwrap();
    let file_arg = file.to_str().unwrap();
    let (code, out, err) = text(&ork(&kubeconfig, &ns, &["submit", file_arg, "--watch"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.starts_with("Run \"greet-"), "{err}");
    let ok_run = err.split('"').nth(1).unwrap().to_string();
    assert!(out.contains("succeeded a in"), "{out}");
    assert!(out.contains("succeeded slow in"), "{out}");
    assert!(
        out.contains(&format!("Run {ok_run} Succeeded (2/2)")),
        "{out}"
    );
    let (code, out, err) = text(&ork(
        &kubeconfig,
        &ns,
        &["submit", file_arg, "--watch", "-p", "fail=yes"],
    ));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("failed    slow after 1 attempt"), "{out}");
    // `ork watch` of a finished run says how it ended at once.
    let (code, out, _) = text(&ork(&kubeconfig, &ns, &["watch", &ok_run]));
    assert_eq!(code, 0);
    assert!(out.contains("Succeeded (2/2)"), "{out}");
    // Bad input is refused before anything is created; a listed Run names its workflow.
    let (code, _, err) = text(&ork(
        &kubeconfig,
        &ns,
        &["submit", file_arg, "-p", "nope=1"],
    ));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nope"), "{err}");
    let (_, out, _) = text(&ork(&kubeconfig, &ns, &["list"]));
    assert_eq!(
        out.lines().filter(|l| l.contains(" greet ")).count(),
        2,
        "{out}"
    );

    // Logs: one task's, stdout and stderr in order; every task's with a prefix.
    let (code, out, err) = text(&ork(&kubeconfig, &ns, &["logs", &ok_run, "a"]));
    assert_eq!(
        (code, out.as_str()),
        (0, "hello-a\nwarn-a\nbye-a\n"),
        "{err}"
    );
    let (code, out, _) = text(&ork(&kubeconfig, &ns, &["logs", &ok_run]));
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "a | hello-a\na | warn-a\na | bye-a\nslow | first\nslow | second\n"
    );
    let (code, _, err) = text(&ork(&kubeconfig, &ns, &["logs", &ok_run, "nope"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("has no task \"nope\" (its tasks: a, slow)"),
        "{err}"
    );

    // -f follows a task while it runs, picks up tasks as they start, and ends with the run.
    std::fs::remove_file(&gate).unwrap();
    let (code, out, err) = text(&ork(&kubeconfig, &ns, &["submit", file_arg]));
    assert_eq!(code, 0, "{err}");
    let run = out.split('"').nth(1).unwrap().to_string();
    let mut follow = Command::new(ORK)
        .args(["logs", &run, "-f", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["-n", &ns])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut follow);
    let next = || {
        lines
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap()
    };
    assert_eq!(next(), "a | hello-a");
    assert_eq!(next(), "a | warn-a");
    assert_eq!(next(), "a | bye-a");
    assert_eq!(next(), "slow | first");
    // `slow` still runs: its next line comes only once the gate opens.
    let run_now = env.runs().get(&run).await.unwrap();
    assert_eq!(run_now.status.unwrap().phase, Some(RunPhase::Running));
    std::fs::write(&gate, "").unwrap();
    assert_eq!(next(), "slow | second");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = follow.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ork logs -f did not end with the run"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success());
}
