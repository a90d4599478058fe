//! A real control plane for end-to-end tests (`scripts/control-plane.sh`), shared by every test
//! of a test binary, and helpers for using it.
//!
//! - `ORK_TEST_KUBECONFIG` set: use that kubeconfig.
//! - Otherwise: `<repo>/target/ork-test-cluster`, started with `scripts/control-plane.sh start`
//!   unless `scripts/control-plane.sh status` says it is up already. It is left running for the
//!   next test binary; stop it with `scripts/control-plane.sh stop target/ork-test-cluster`.
//!   (The binaries must have been built once: `scripts/control-plane.sh install`.)

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

/// Environment variable naming an existing cluster's kubeconfig.
pub const KUBECONFIG_ENV: &str = "ORK_TEST_KUBECONFIG";

/// Label put on every namespace a test creates.
pub const TEST_NAMESPACE_LABEL: &str = "ork.dev/e2e-test";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The directory of the control plane the tests start when `ORK_TEST_KUBECONFIG` is not set.
pub fn cluster_dir() -> PathBuf {
    repo().join("target/ork-test-cluster")
}

/// The kubeconfig of the test cluster (an admin token), starting the cluster on first use if
/// needed. Blocks; call it from async code through [`client`] or `spawn_blocking`.
pub fn kubeconfig() -> PathBuf {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    KUBECONFIG.get_or_init(find_or_start_cluster).clone()
}

fn find_or_start_cluster() -> PathBuf {
    if let Some(path) = std::env::var_os(KUBECONFIG_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let dir = cluster_dir();
    let script = repo().join("scripts/control-plane.sh");
    let parent = dir.parent().expect("cluster dir has a parent");
    std::fs::create_dir_all(parent).expect("create target dir");
    // Several test binaries may get here at once: one starts the cluster, the others reuse it.
    let lock = std::fs::File::create(parent.join("ork-test-cluster.lock")).expect("create lock");
    lock.lock().expect("lock the test cluster");

    let status = Command::new(&script)
        .arg("status")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("run {} status: {e}", script.display()));
    if !status.status.success() {
        eprintln!("starting a test control plane in {}", dir.display());
        let started = Command::new(&script)
            .arg("start")
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("run {} start: {e}", script.display()));
        assert!(
            started.status.success(),
            "`{} start {}` failed ({}); if the binaries are missing, run `{} install` once \
             (or set {KUBECONFIG_ENV}).\nstdout:\n{}\nstderr:\n{}",
            script.display(),
            dir.display(),
            started.status,
            script.display(),
            String::from_utf8_lossy(&started.stdout),
            String::from_utf8_lossy(&started.stderr),
        );
    }
    let kubeconfig = dir.join("kubeconfig");
    assert!(
        kubeconfig.is_file(),
        "{} does not exist after starting the cluster",
        kubeconfig.display()
    );
    kubeconfig
}

/// A client for the test cluster, built from [`kubeconfig`].
pub async fn client() -> Client {
    let path = tokio::task::spawn_blocking(kubeconfig)
        .await
        .expect("find or start the test cluster");
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("read kubeconfig {}: {e}", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("load kubeconfig {}: {e}", path.display()));
    Client::try_from(config).expect("build a kube client")
}

/// A random lowercase suffix for names (8 hex digits).
pub fn random_suffix() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:08x}", hasher.finish() as u32)
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `limit` saying what it
/// waited for.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a namespace `PREFIX-<random>` and waits until Pods can be created in it: its
/// `default` ServiceAccount exists and has its token Secret (Kubernetes 1.20's ServiceAccount
/// admission rejects Pods before both exist).
pub async fn create_test_namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", random_suffix());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {TEST_NAMESPACE_LABEL: "true"}},
    }))
    .expect("namespace object");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut without_token_since: Option<Instant> = None;
    loop {
        match accounts.get_opt("default").await {
            Ok(Some(sa)) if sa.secrets.as_ref().is_some_and(|s| !s.is_empty()) => break,
            // Clusters from 1.24 on make no token Secrets: once the account has been there a
            // few seconds without one, go on.
            Ok(Some(_)) => {
                let since = *without_token_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(5) {
                    break;
                }
            }
            Ok(None) => {}
            Err(err) => eprintln!("reading the default ServiceAccount in {name}: {err}"),
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the default ServiceAccount (with its token) in {name}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    name
}

/// Deletes a test namespace (best effort, not waiting for it to go away).
pub async fn delete_test_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Err(err) = namespaces.delete(name, &DeleteParams::background()).await {
        eprintln!("deleting namespace {name}: {err}");
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
