//! The dashboard in a real headless Chromium (WebDriver): `ork dashboard` over the test control
//! plane with a user whose RBAC allows reading and patching runs but not creating them, and
//! `ork run --dashboard` over local runs. The page must show every task with its phase, update
//! live, stream a running task's logs, cancel from its button, and make no request the user's
//! RBAC refuses (the API server's audit log of that user is read at the end). Screenshots of the
//! run pages are kept in `target/test-artifacts/`.

mod support;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::browser::Browser;
use support::env::{Env, ORK, kubeconfig_as};

const WAIT: Duration = Duration::from_secs(90);

/// Starts `ork ARGS` and reads the dashboard's address from its output (stdout or stderr);
/// the child is killed when the returned guard drops.
struct Served {
    child: Child,
    url: String,
}

impl Served {
    /// Ctrl-C, as a user stops it; its exit code, waited for with a deadline.
    fn interrupt(&mut self) -> Option<i32> {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Ctrl-C did not stop the dashboard"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(args: &[&str], from_stderr: bool) -> Served {
    let mut child = Command::new(ORK)
        .args(args)
        .stdout(if from_stderr {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stderr(if from_stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .spawn()
        .unwrap();
    let out: Box<dyn std::io::Read + Send> = if from_stderr {
        Box::new(child.stderr.take().unwrap())
    } else {
        Box::new(child.stdout.take().unwrap())
    };
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if let Some(at) = line.find("http://") {
                let url: String = line[at..].split_whitespace().next().unwrap().to_string();
                let _ = send.send(url);
            }
        }
    });
    let url = receive
        .recv_timeout(Duration::from_secs(60))
        .expect("the dashboard says where it listens");
    Served { child, url }
}

/// The HTTP status of a plain GET of `url` (`http://HOST:PORT/PATH`), as another program of
/// this machine would make it: no cookie.
fn status_of(url: &str) -> u16 {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `ork run FILE --dashboard` with its run files under `work`.
fn serve_local(file: &Path, work: &Path) -> Served {
    let runs = work.join("runs");
    serve(
        &[
            "run",
            file.to_str().unwrap(),
            "--work-dir",
            runs.to_str().unwrap(),
            "--dashboard=127.0.0.1:0",
        ],
        true,
    )
}

/// Every audited request of `ork-viewer` in `namespace` (or cluster-wide): (verb, resource,
/// code).
fn audited(kubeconfig: &Path, namespace: &str) -> Vec<(String, String, i64)> {
    let log = kubeconfig.parent().unwrap().join("logs/audit.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["user"]["username"] == "ork-viewer")
        .filter(|e| {
            let ns = &e["objectRef"]["namespace"];
            ns.is_null() || ns == namespace
        })
        .map(|e| {
            let resource = format!(
                "{}{}",
                e["objectRef"]["resource"].as_str().unwrap_or(""),
                e["objectRef"]["subresource"]
                    .as_str()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default()
            );
            (
                e["verb"].as_str().unwrap_or("").to_string(),
                resource,
                e["responseStatus"]["code"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

async fn phase_of(browser: &Browser, task: &str) -> Result<String, String> {
    browser
        .try_attr(&format!("g.node[data-task=\"{task}\"]"), "data-phase")
        .await?
        .ok_or_else(|| format!("node {task} has no data-phase"))
}

async fn wait_phase(browser: &Browser, task: &str, want: &str) {
    browser
        .wait_until(&format!("node {task} {want}"), WAIT, || async {
            match phase_of(browser, task).await {
                Ok(p) if p == want => Ok(()),
                Ok(p) => Err(p),
                Err(e) => Err(e),
            }
        })
        .await;
}

async fn wait_text(browser: &Browser, css: &str, contains: &str) {
    browser
        .wait_until(&format!("{css} to contain {contains:?}"), WAIT, || async {
            let text = browser.try_text(css).await?;
            if text.contains(contains) {
                Ok(())
            } else {
                Err(text)
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_cluster_run_live_within_the_users_rbac() {
    let env = Env::new("dash").await;
    let ns = env.ns.clone();
    let gate = env.work.path().join("gate");
    let wait_gate = format!(
        "echo b-first; while [ ! -e {} ]; do sleep 0.1; done; echo b-second",
        gate.display()
    );
    env.apply_workflow(&json!({
        "apiVersion": "ork.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "diamond"},
        "spec": {"defaults": {"image": "busybox"}, "tasks": [
            {"name": "a", "command": ["sh", "-c", "echo a-ran"]},
            {"name": "b", "dependsOn": ["a"], "command": ["sh", "-c", wait_gate]},
            {"name": "c", "dependsOn": ["a"], "command": ["sh", "-c", "sleep 300"]},
            {"name": "d", "dependsOn": ["b", "c"], "command": ["true"]},
        ], "finally": [{"name": "report", "command": ["true"]}]},
    }))
    .await;
    env.create_run("diamond-1", "diamond", json!({})).await;

    // ork-viewer may read runs, their shards, Pods and logs, and patch runs; not create runs,
    // not list namespaces.
    env.kubectl_ok(
        &["apply", "-f", "-"],
        Some(
            &json!({"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                 "metadata": {"name": "viewer", "namespace": ns},
                 "rules": [
                    {"apiGroups": ["ork.dev"], "resources": ["runs"],
                     "verbs": ["get", "list", "watch", "patch"]},
                    {"apiGroups": ["ork.dev"], "resources": ["runshards"],
                     "verbs": ["get", "list", "watch"]},
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                 ]},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": "viewer", "namespace": ns},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                             "name": "viewer"},
                 "subjects": [{"kind": "User", "name": "ork-viewer",
                               "apiGroup": "rbac.authorization.k8s.io"}]},
            ]})
            .to_string(),
        ),
    );
    let viewer = env.work.path().join("viewer");
    kubeconfig_as(&env.kubeconfig, &viewer, "ork-viewer");
    let served = serve(
        &[
            "dashboard",
            "--address",
            "127.0.0.1:0",
            "--kubeconfig",
            viewer.to_str().unwrap(),
            "-n",
            &ns,
        ],
        false,
    );

    // Without the token of the address it printed, nothing is served.
    let bare = served.url.split('?').next().unwrap().to_string();
    assert_eq!(status_of(&format!("{bare}api/context")), 401);
    assert_eq!(status_of(&format!("{bare}?token=guess")), 401);

    let browser = Browser::start().await;
    // The runs list: the run, with its phase, in the user's namespace.
    browser.goto(&served.url).await;
    let row = "tr[data-run=\"diamond-1\"] .phase";
    browser.wait_for(row, WAIT).await;
    wait_text(&browser, row, "Running").await;
    // The user may not list namespaces: the page asks for one by name.
    let field = browser
        .execute(
            "const f = document.querySelector('#filter-namespace'); return [f.tagName, f.value];",
        )
        .await;
    assert_eq!(field, json!(["INPUT", ns]));

    // The run's page: every task, with its phase.
    browser
        .goto(&format!("{}#/runs/{ns}/diamond-1", served.url))
        .await;
    browser.wait_for("svg#graph g.node", WAIT).await;
    assert_eq!(browser.count("svg#graph g.node").await, 5);
    wait_phase(&browser, "a", "Succeeded").await;
    wait_phase(&browser, "b", "Running").await;
    wait_phase(&browser, "c", "Running").await;
    assert_eq!(phase_of(&browser, "d").await.unwrap(), "Pending");
    assert_eq!(phase_of(&browser, "report").await.unwrap(), "Pending");
    wait_text(&browser, "#run-phase", "Running").await;
    // Buttons follow the user's rights: no create, so no rerun (and it has not ended).
    assert!(browser.attr("#rerun", "disabled").await.is_some());
    assert!(browser.attr("#cancel", "disabled").await.is_none());

    // A running task's logs stream in; the page follows the task as it finishes.
    browser.click("g.node[data-task=\"b\"]").await;
    wait_text(&browser, "#task-name", "b").await;
    wait_text(&browser, "#task-logs", "b-first").await;
    std::fs::write(&gate, "").unwrap();
    wait_text(&browser, "#task-logs", "b-second").await;
    wait_phase(&browser, "b", "Succeeded").await;

    // Cancel from the page: the run ends Cancelled, its finally task runs.
    browser.click("#cancel").await;
    wait_text(&browser, "#run-phase", "Cancelled").await;
    wait_phase(&browser, "c", "Cancelled").await;
    wait_phase(&browser, "d", "Cancelled").await;
    wait_phase(&browser, "report", "Succeeded").await;
    let run = env.runs().get("diamond-1").await.unwrap();
    assert!(run.spec.cancel);
    browser.click("g.node[data-task=\"a\"]").await;
    wait_text(&browser, "#task-logs", "a-ran").await;
    browser.screenshot("dashboard-cluster-diamond").await;
    browser.assert_no_console_errors().await;
    browser.close().await;
    drop(served);

    // Nothing the dashboard asked for was refused; and it did ask (the audit log is live).
    let requests = audited(&env.kubeconfig, &ns);
    let refused: Vec<_> = requests
        .iter()
        .filter(|(_, _, code)| *code == 403)
        .collect();
    assert!(refused.is_empty(), "refused requests: {refused:?}");
    for wanted in [
        ("list", "runs"),
        ("watch", "runs"),
        ("get", "pods/log"),
        ("patch", "runs"),
    ] {
        assert!(
            requests
                .iter()
                .any(|(verb, resource, _)| verb == wanted.0 && resource == wanted.1),
            "no {wanted:?} among {requests:?}"
        );
    }
}

/// A layered workflow of `layers` × `width` tasks, each depending on two neighbours of the layer
/// above.
fn layered(layers: usize, width: usize) -> String {
    let mut tasks = String::new();
    for layer in 0..layers {
        for i in 0..width {
            tasks.push_str(&format!(
                "  - name: t{layer}-{i}\n    command: [\"true\"]\n"
            ));
            if layer > 0 {
                let other = if i + 1 < width { i + 1 } else { i - 1 };
                tasks.push_str(&format!(
                    "    dependsOn: [t{}-{i}, t{}-{other}]\n",
                    layer - 1,
                    layer - 1
                ));
            }
        }
    }
    format!(
        "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: wide}}\nspec:\n  \
         defaults: {{image: busybox}}\n  tasks:\n{tasks}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ork_run_dashboard_shows_the_local_run() {
    let work = tempfile::tempdir().unwrap();
    let browser = Browser::start().await;

    // The diamond example: the page opens the run, every task Succeeded, a task's logs.
    let served = serve_local(&support::env::repo("examples/diamond.yaml"), work.path());
    browser.goto(&served.url).await;
    browser.wait_for("svg#graph g.node", WAIT).await;
    for task in ["extract", "double", "label", "load"] {
        wait_phase(&browser, task, "Succeeded").await;
    }
    wait_text(&browser, "#run-phase", "Succeeded").await;
    browser.click("g.node[data-task=\"load\"]").await;
    wait_text(&browser, "#task-name", "load").await;
    browser.screenshot("dashboard-local-diamond").await;
    // Leave the page before its server stops, so it does not try to reconnect.
    browser.goto("about:blank").await;
    drop(served);

    // Fan-out: a forEach node, its instances in the table and the panel, an instance's logs.
    let served = serve_local(&support::env::repo("examples/fan-out.yaml"), work.path());
    browser.goto(&served.url).await;
    wait_text(&browser, "#run-phase", "Succeeded").await;
    wait_phase(&browser, "deploy", "Succeeded").await;
    browser
        .wait_for("#tasks tr[data-task=\"count[2]\"]", WAIT)
        .await;
    browser.click("g.node[data-task=\"deploy\"]").await;
    browser
        .wait_for("#task-instances [data-instance=\"1\"]", WAIT)
        .await;
    browser.click("#task-instances [data-instance=\"1\"]").await;
    wait_text(&browser, "#task-name", "deploy[1]").await;
    wait_text(&browser, "#task-logs", "deploying to us").await;
    browser.screenshot("dashboard-local-fan-out").await;
    browser.goto("about:blank").await;
    drop(served);

    // 200 tasks (10 layers of 20): all drawn, all Succeeded.
    let file = work.path().join("wide.yaml");
    std::fs::write(&file, layered(10, 20)).unwrap();
    let served = serve_local(&file, work.path());
    browser.goto(&served.url).await;
    browser
        .wait_until("200 task nodes", WAIT, || async {
            match browser.count("svg#graph g.node").await {
                200 => Ok(()),
                n => Err(format!("{n} nodes")),
            }
        })
        .await;
    wait_text(&browser, "#run-phase", "Succeeded").await;
    browser
        .wait_until("every node Succeeded", WAIT, || async {
            match browser
                .count("svg#graph g.node[data-phase=\"Succeeded\"]")
                .await
            {
                200 => Ok(()),
                n => Err(format!("{n} Succeeded")),
            }
        })
        .await;
    browser.click("#fit").await;
    browser.screenshot("dashboard-local-200").await;
    browser.goto("about:blank").await;
    drop(served);

    // A local run's cancel button stops it; suspend and rerun are cluster features.
    let slow = work.path().join("slow.yaml");
    std::fs::write(
        &slow,
        "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {name: slow}\nspec:\n  \
         defaults: {image: busybox}\n  tasks:\n  - {name: wait, command: [sleep, \"300\"]}\n",
    )
    .unwrap();
    let served = serve_local(&slow, work.path());
    browser.goto(&served.url).await;
    wait_phase(&browser, "wait", "Running").await;
    assert!(browser.attr("#suspend", "disabled").await.is_some());
    assert!(browser.attr("#rerun", "disabled").await.is_some());
    browser.click("#cancel").await;
    wait_phase(&browser, "wait", "Cancelled").await;
    wait_text(&browser, "#run-phase", "Cancelled").await;
    // A second cancel is refused: it would also stop the finally tasks.
    assert!(browser.attr("#cancel", "disabled").await.is_some());
    browser.assert_no_console_errors().await;
    // Ctrl-C stops the dashboard even with the page open and listening; the exit code is the
    // run's.
    let mut served = served;
    assert_eq!(served.interrupt(), Some(130));
    browser.close().await;
}
