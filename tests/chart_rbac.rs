//! The Helm chart's RBAC, proven on the real control plane: the chart's ServiceAccount, Roles
//! and bindings are applied, the controller runs with that ServiceAccount's token (the API
//! server enforces RBAC; no admin token), and the examples run to completion, in both install
//! modes. Removing any one rule must show: the controller is refused (403) or the run never
//! finishes.
//!
//! The renders come from `scripts/check-chart.sh DIR` (`ORK_TEST_CHART_DIR` when set, as
//! `scripts/test.sh` does; otherwise this test runs the script itself).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::Api;
use serde_json::{Value, json};
use support::cluster::{self, eventually};
use support::kubelet::Kubelet;

const ORK: &str = env!("CARGO_BIN_EXE_ork");

/// The two tests' controllers must not watch each other's runs: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `default.yaml` and `namespaced.yaml` rendered from the chart.
fn renders() -> PathBuf {
    if let Some(dir) = std::env::var_os("ORK_TEST_CHART_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let dir = repo("target/chart-renders");
    let out = Command::new(repo("scripts/check-chart.sh"))
        .arg(&dir)
        .env_remove("KUBECONFIG")
        .output()
        .expect("run scripts/check-chart.sh");
    assert!(
        out.status.success(),
        "check-chart.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The RBAC objects of a render (the Deployment and Service are not needed: the controller runs
/// here), moved to this test's namespaces, cluster-scoped names made unique.
fn rbac_objects(render: &Path, namespaces: &[(&str, &str)], suffix: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(render).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let map_ns = |ns: &str| {
        namespaces
            .iter()
            .find(|(from, _)| *from == ns)
            .map(|(_, to)| to.to_string())
            .unwrap_or_else(|| ns.to_string())
    };
    docs.into_iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some(
                    "ServiceAccount"
                        | "Role"
                        | "RoleBinding"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                )
            )
        })
        .map(|mut d| {
            if let Some(ns) = d["metadata"]["namespace"].as_str().map(map_ns) {
                d["metadata"]["namespace"] = json!(ns);
            }
            if matches!(
                d["kind"].as_str(),
                Some("ClusterRole" | "ClusterRoleBinding")
            ) {
                let name = format!("{}-{suffix}", d["metadata"]["name"].as_str().unwrap());
                d["metadata"]["name"] = json!(name);
            }
            if d["roleRef"]["kind"] == "ClusterRole" {
                let name = format!("{}-{suffix}", d["roleRef"]["name"].as_str().unwrap());
                d["roleRef"]["name"] = json!(name);
            }
            if let Some(subjects) = d["subjects"].as_array_mut() {
                for s in subjects {
                    if let Some(ns) = s["namespace"].as_str().map(map_ns) {
                        s["namespace"] = json!(ns);
                    }
                }
            }
            d
        })
        .collect()
}

/// A kubeconfig like the admin one, but authenticating as the chart's ServiceAccount.
async fn service_account_kubeconfig(client: &kube::Client, admin: &Path, ns: &str, out: &Path) {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let secret_name = eventually(
        "the ServiceAccount's token Secret",
        Duration::from_secs(60),
        || {
            let accounts = accounts.clone();
            async move {
                let sa = accounts.get_opt("ork").await.ok()??;
                sa.secrets?.first()?.name.clone()
            }
        },
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets.get(&secret_name).await.unwrap();
    let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
    let config = std::fs::read_to_string(admin).unwrap();
    let replaced: Vec<String> = config
        .lines()
        .map(|l| match l.split_once("token: ") {
            Some((indent, _)) => format!("{indent}token: {token}"),
            None => l.to_string(),
        })
        .collect();
    std::fs::write(out, replaced.join("\n")).unwrap();
}

fn controller(kubeconfig: &Path, args: &[String], port: u16, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(ORK)
        .arg("controller")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .args(["--log-format", "json", "--metrics-address"])
        .arg(format!("127.0.0.1:{port}"))
        .env("ORK_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the controller")
}

fn forbidden_requests(port: u16) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0.0;
    };
    let _ = write!(stream, "GET /metrics HTTP/1.0\r\n\r\n");
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with("ork_api_requests_total{") && l.contains("result=\"403\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs a small workflow in `ns`: `Ok` when it succeeds with no request refused, `Err` naming
/// what went wrong otherwise (a refused request, or no result in time).
async fn run_one(
    admin: &Path,
    client: &kube::Client,
    ns: &str,
    port: u16,
    name: &str,
) -> Result<(), String> {
    // `a` then `b` run, `a` on a workspace the Run binds to a claim made for it; `c` names a
    // service account that does not exist, so its Job cannot create a Pod and the controller
    // reads why from the Job's Events.
    let manifest = json!({
        "apiVersion": "ork.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
        "spec": {"defaults": {"image": "busybox"}, "workspaces": [{"name": "w", "optional": true}],
                 "tasks": [
            {"name": "a", "workspaces": [{"name": "w"}],
             "command": ["sh", "-c", "echo '{\"v\": 1}' > $ORK_OUTPUT"]},
            {"name": "b", "dependsOn": ["a"], "command": ["true"]},
            {"name": "c", "command": ["true"], "serviceAccountName": "no-such-account"},
        ]},
    });
    kubectl(
        admin,
        &["-n", ns, "apply", "-f", "-"],
        Some(&manifest.to_string()),
    );
    let run = json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Run", "metadata": {"name": name},
        "spec": {"workflowRef": {"name": name},
                 "workspaces": [{"name": "w", "volumeClaimTemplate": {"spec": {
                     "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}}}}]}});
    kubectl(
        admin,
        &["-n", ns, "apply", "-f", "-"],
        Some(&run.to_string()),
    );
    // A Schedule ticking every (sped-up) minute: it makes Runs, cancels each for the next
    // (`Replace`; task c never ends) and deletes the cancelled ones (history limit 0).
    let schedule = json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Schedule",
        "metadata": {"name": name},
        "spec": {"workflowRef": {"name": name}, "cron": "* * * * *",
                 "concurrencyPolicy": "Replace", "failedRunsHistoryLimit": 0}});
    kubectl(
        admin,
        &["-n", ns, "apply", "-f", "-"],
        Some(&schedule.to_string()),
    );
    let schedules: Api<ork::api::Schedule> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(40);
    let result = loop {
        if forbidden_requests(port) > 0.0 {
            break Err("the API server refused a request (403)".to_string());
        }
        // The whole run: with `--inline-tasks 2` its records are in RunShards.
        let status = ork::kubernetes::get::full_run(client, ns, name)
            .await
            .ok()
            .and_then(|r| r.status);
        let task = |n: &str| status.as_ref()?.tasks.iter().find(|t| t.name == n).cloned();
        let ran = ["a", "b"]
            .iter()
            .all(|n| task(n).is_some_and(|t| t.phase == ork::api::TaskPhase::Succeeded));
        let explained = task("c")
            .and_then(|t| t.message)
            .is_some_and(|m| m.contains("cannot create its Pod") && m.contains("no-such-account"));
        let ticked = schedules
            .get(name)
            .await
            .ok()
            .and_then(|s| s.status)
            .is_some_and(|s| s.last_schedule_time.is_some() && s.next_schedule_time.is_some());
        if ran && explained && ticked {
            // Events are best effort: give a refused one a moment to show.
            tokio::time::sleep(Duration::from_millis(300)).await;
            break match forbidden_requests(port) {
                0.0 => Ok(()),
                _ => Err("the API server refused a request (403)".into()),
            };
        }
        if Instant::now() > deadline {
            break Err(format!(
                "run {name} did not get through in time: {:?}",
                status.map(|s| s.tasks)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // `c` never ends: the run goes, so that only the examples are left to finish; the
    // schedule goes with its Runs.
    kubectl(
        admin,
        &["-n", ns, "delete", "run.ork.dev", name, "--wait=false"],
        None,
    );
    kubectl(
        admin,
        &[
            "-n",
            ns,
            "delete",
            "schedule.ork.dev",
            name,
            "--cascade=foreground",
            "--timeout=60s",
        ],
        None,
    );
    result
}

struct Cluster {
    admin: PathBuf,
    client: kube::Client,
}

async fn cluster() -> Cluster {
    let client = cluster::client().await;
    let admin = tokio::task::spawn_blocking(cluster::kubeconfig)
        .await
        .unwrap();
    kubectl(
        &admin,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            repo("crds").to_str().unwrap(),
        ],
        None,
    );
    kubectl(
        &admin,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/runs.ork.dev",
            "crd/workflows.ork.dev",
            "crd/schedules.ork.dev",
        ],
        None,
    );
    Cluster { admin, client }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_install_is_enough_and_every_rule_is_needed() {
    let _serial = SERIAL.lock().await;
    let Cluster { admin, client } = cluster().await;
    let system = cluster::create_test_namespace(&client, "rbac-sys").await;
    let team = cluster::create_test_namespace(&client, "rbac-team").await;
    let other = cluster::create_test_namespace(&client, "rbac-other").await;
    let work = tempfile::tempdir().unwrap();
    let suffix = cluster::random_suffix();
    let objects = rbac_objects(
        &renders().join("namespaced.yaml"),
        &[
            ("ork-system", &system),
            ("ork-team-a", &team),
            ("ork-team-b", &other),
        ],
        &suffix,
    );
    for object in &objects {
        kubectl(&admin, &["apply", "-f", "-"], Some(&object.to_string()));
    }
    let sa_config = work.path().join("sa-kubeconfig");
    service_account_kubeconfig(&client, &admin, &system, &sa_config).await;
    let _kubelet = Kubelet::start(client.clone(), &team, work.path().join("node"));
    // Runs of more than 2 tasks keep their records in RunShards: the rule for them is needed too.
    // Schedules tick every second (a sped-up clock, for tests only).
    let clock = format!("{},60", jiff::Timestamp::now());
    let args: Vec<String> = [
        "--test-schedule-clock",
        &clock,
        "--inline-tasks",
        "2",
        "--namespace",
        &team,
        "--namespace",
        &other,
        "--leader-elect",
        "--lease-name",
        "ork",
        "--lease-namespace",
        &system,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    // With the chart's rules: the examples run to completion.
    let port = cluster::free_port();
    let mut ctrl = controller(&sa_config, &args, port, &work.path().join("ok.log"));
    let result = run_one(&admin, &client, &team, port, "fine").await;
    for example in ["hello.yaml", "diamond.yaml", "retries.yaml"] {
        kubectl(
            &admin,
            &[
                "-n",
                &team,
                "apply",
                "-f",
                repo(&format!("examples/{example}")).to_str().unwrap(),
            ],
            None,
        );
    }
    kubectl(
        &admin,
        &[
            "-n",
            &team,
            "create",
            "-f",
            repo("examples/params.yaml").to_str().unwrap(),
        ],
        None,
    );
    for (workflow, run) in [
        ("hello", "hello-1"),
        ("diamond", "diamond-1"),
        ("retries", "retries-1"),
    ] {
        let manifest = json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Run", "metadata": {"name": run},
            "spec": {"workflowRef": {"name": workflow}}});
        kubectl(
            &admin,
            &["-n", &team, "apply", "-f", "-"],
            Some(&manifest.to_string()),
        );
    }
    let runs: Api<ork::api::Run> = Api::namespaced(client.clone(), &team);
    let all_done = eventually(
        "every example to succeed as the ServiceAccount",
        Duration::from_secs(120),
        || {
            let runs = runs.clone();
            async move {
                let list = runs.list(&Default::default()).await.ok()?;
                let phases: Vec<_> = list
                    .items
                    .iter()
                    .map(|r| r.status.as_ref().and_then(|s| s.phase))
                    .collect();
                phases
                    .iter()
                    .all(|p| p.is_some_and(|p| p.is_final()))
                    .then_some(phases)
            }
        },
    )
    .await;
    let forbidden = forbidden_requests(port);
    let _ = ctrl.kill();
    let _ = ctrl.wait();
    assert_eq!(result, Ok(()), "with every rule");
    assert!(
        all_done
            .iter()
            .all(|p| *p == Some(ork::api::RunPhase::Succeeded)),
        "{all_done:?}"
    );
    assert_eq!(forbidden, 0.0, "no request was refused");

    // Without any one rule: refused, or never done.
    let roles: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Role" && o["metadata"]["namespace"] == team.as_str())
        .chain(objects.iter().filter(|o| {
            o["kind"] == "Role"
                && o["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .ends_with("leader-election")
        }))
        .collect();
    assert_eq!(
        roles.len(),
        2,
        "the team's Role and the leader-election Role"
    );
    for role in roles {
        let rules = role["rules"].as_array().unwrap();
        for (i, rule) in rules.iter().enumerate() {
            let mut reduced = role.clone();
            reduced["rules"].as_array_mut().unwrap().remove(i);
            kubectl(&admin, &["apply", "-f", "-"], Some(&reduced.to_string()));
            let port = cluster::free_port();
            let log = work.path().join(format!("without-{i}.log"));
            let mut ctrl = controller(&sa_config, &args, port, &log);
            let name = format!("without-{}-{i}", role["metadata"]["name"].as_str().unwrap());
            let outcome = run_one(&admin, &client, &team, port, &name).await;
            let _ = ctrl.kill();
            let _ = ctrl.wait();
            kubectl(&admin, &["apply", "-f", "-"], Some(&role.to_string()));
            assert!(outcome.is_err(), "removing rule {rule} went unnoticed");
        }
    }
    // Gone for good before the cluster-wide test, whose controller watches every namespace:
    // runs left behind here would otherwise be its to reconcile.
    for ns in [&system, &team, &other] {
        cluster::delete_test_namespace(&client, ns).await;
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for ns in [&system, &team, &other] {
        eventually(
            &format!("namespace {ns} to be deleted"),
            Duration::from_secs(120),
            || {
                let namespaces = namespaces.clone();
                async move { namespaces.get_opt(ns).await.ok()?.is_none().then_some(()) }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_install_runs_the_examples() {
    let _serial = SERIAL.lock().await;
    let Cluster { admin, client } = cluster().await;
    let system = cluster::create_test_namespace(&client, "rbac-cw-sys").await;
    let team = cluster::create_test_namespace(&client, "rbac-cw-team").await;
    let work = tempfile::tempdir().unwrap();
    let suffix = cluster::random_suffix();
    let objects = rbac_objects(
        &renders().join("default.yaml"),
        &[("ork-system", &system)],
        &suffix,
    );
    assert!(
        objects.iter().any(|o| o["kind"] == "ClusterRole"),
        "cluster-wide mode has a ClusterRole"
    );
    for object in &objects {
        kubectl(&admin, &["apply", "-f", "-"], Some(&object.to_string()));
    }
    let sa_config = work.path().join("sa-kubeconfig");
    service_account_kubeconfig(&client, &admin, &system, &sa_config).await;
    let _kubelet = Kubelet::start(client.clone(), &team, work.path().join("node"));
    // Watches every namespace, as the chart's default install does; runs of more than 2 tasks
    // keep their records in RunShards.
    // Schedules tick every second (a sped-up clock, for tests only).
    let clock = format!("{},60", jiff::Timestamp::now());
    let args: Vec<String> = [
        "--test-schedule-clock",
        &clock,
        "--inline-tasks",
        "2",
        "--leader-elect",
        "--lease-name",
        "ork",
        "--lease-namespace",
        &system,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let port = cluster::free_port();
    let mut ctrl = controller(&sa_config, &args, port, &work.path().join("cw.log"));
    let result = run_one(&admin, &client, &team, port, "everywhere").await;
    kubectl(
        &admin,
        &[
            "-n",
            &team,
            "apply",
            "-f",
            repo("examples/diamond.yaml").to_str().unwrap(),
        ],
        None,
    );
    let run = json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Run", "metadata": {"name": "diamond-1"},
        "spec": {"workflowRef": {"name": "diamond"}}});
    kubectl(
        &admin,
        &["-n", &team, "apply", "-f", "-"],
        Some(&run.to_string()),
    );
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&admin)
        .args([
            "-n",
            &team,
            "wait",
            "--for=condition=Succeeded",
            "--timeout=120s",
            "run.ork.dev/diamond-1",
        ])
        .output()
        .unwrap();
    let forbidden = forbidden_requests(port);
    let _ = ctrl.kill();
    let _ = ctrl.wait();
    for object in objects
        .iter()
        .filter(|o| o["kind"].as_str().is_some_and(|k| k.starts_with("Cluster")))
    {
        let kind = object["kind"].as_str().unwrap().to_lowercase();
        let name = object["metadata"]["name"].as_str().unwrap();
        kubectl(
            &admin,
            &["delete", &format!("{kind}.rbac.authorization.k8s.io"), name],
            None,
        );
    }
    assert_eq!(result, Ok(()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(forbidden, 0.0, "no request was refused");
    for ns in [&system, &team] {
        cluster::delete_test_namespace(&client, ns).await;
    }
}
