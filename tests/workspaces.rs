//! Workspaces on the test control plane, with the kubelet simulator giving each claim a real
//! directory: files one task writes are read by the next, a `volumeClaimTemplate` claim exists
//! while the run runs, is owned by the Run and goes with it, a read-only mount refuses writes,
//! and a Run that leaves a required workspace unbound fails with nothing run.

mod support;

use std::process::Command;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams};
use ork::api::RunPhase;
use serde_json::{Value, json};
use support::cluster::eventually;
use support::env::{Env, LONG, ORK, essence, repo};

fn example() -> Vec<Value> {
    let text = std::fs::read_to_string(repo("examples/workspaces.yaml")).unwrap();
    text.split("\n---\n")
        .map(|doc| serde_saphyr::from_str(doc).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_pass_between_tasks_through_a_claim_made_for_the_run() {
    let env = Env::new("workspaces").await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), &env.ns);
    let docs = example();
    env.apply_workflow(&docs[0]).await;
    env.kubectl_ok(&["apply", "-f", "-"], Some(&docs[1].to_string()));

    let claim = eventually("the run's claim", LONG, || {
        let claims = claims.clone();
        async move { claims.get_opt("ci-1-source").await.ok().flatten() }
    })
    .await;
    let run = env.runs().get("ci-1").await.unwrap();
    let owner = &claim.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Run", run.metadata.uid.as_deref().unwrap())
    );
    assert_eq!(
        claim.metadata.labels.as_ref().unwrap()["ork.dev/workspace"],
        "source"
    );

    let done = env.wait_final("ci-1").await;
    let status = done.status.clone().unwrap();
    assert_eq!(
        status.phase,
        Some(RunPhase::Succeeded),
        "{:?}",
        status.conditions
    );
    let build = status.tasks.iter().find(|t| t.name == "build").unwrap();
    assert_eq!(
        build.outputs.as_ref().unwrap()["bytes"],
        25,
        "build read what clone wrote"
    );

    // The same manifests with ork run come to the same.
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(ORK)
        .args(["run", "--output", "json", "--work-dir"])
        .arg(work.path())
        .arg(repo("examples/workspaces.yaml"))
        .output()
        .unwrap();
    let local: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        essence(&serde_json::to_value(&done).unwrap()),
        essence(&local)
    );

    // Deleting the Run deletes its claim.
    env.runs()
        .delete("ci-1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the claim to go with the Run", LONG, || {
        let claims = claims.clone();
        async move { matches!(claims.get_opt("ci-1-source").await, Ok(None)).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_mount_refuses_writes_and_an_unbound_workspace_runs_nothing() {
    let env = Env::new("workspaces-ro").await;
    let workflow = json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Workflow",
    "metadata": {"name": "ro"},
    "spec": {"defaults": {"image": "busybox"},
             "workspaces": [{"name": "data"}],
             "tasks": [
        {"name": "write", "workspaces": [{"name": "data"}],
         "command": ["sh", "-c", "echo hi > \"$ORK_WORKSPACE_DATA/file\""]},
        {"name": "try", "dependsOn": ["write"],
         "workspaces": [{"name": "data", "readOnly": true, "mountPath": "/in"}],
         "command": ["sh", "-c", "cat \"$ORK_WORKSPACE_DATA/file\" >/dev/null && \
             if echo x > \"$ORK_WORKSPACE_DATA/other\"; then r=false; else r=true; fi; \
             echo \"{\\\"refused\\\": $r}\" > \"$ORK_OUTPUT\""]},
    ]}});
    env.apply_workflow(&workflow).await;
    env.kubectl_ok(
        &["apply", "-f", "-"],
        Some(
            &json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Run", "metadata": {"name": "ro-1"},
                    "spec": {"workflowRef": {"name": "ro"},
                             "workspaces": [{"name": "data", "volumeClaimTemplate": {"spec": {
                                 "accessModes": ["ReadWriteOnce"],
                                 "resources": {"requests": {"storage": "1Mi"}}}}}]}})
            .to_string(),
        ),
    );
    let done = env.wait_final("ro-1").await;
    let status = done.status.unwrap();
    assert_eq!(
        status.phase,
        Some(RunPhase::Succeeded),
        "{:?}",
        status.conditions
    );
    let tried = status.tasks.iter().find(|t| t.name == "try").unwrap();
    assert_eq!(tried.outputs.as_ref().unwrap()["refused"], true);

    // No binding for the required workspace: the run fails before anything starts.
    env.create_run("ro-2", "ro", json!({})).await;
    let done = env.wait_final("ro-2").await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RunPhase::Failed));
    assert_eq!(status.conditions[0].reason.as_deref(), Some("InvalidSpec"));
    assert_eq!(
        status.conditions[0].message.as_deref(),
        Some(
            "spec.workspaces: task \"write\" mounts workspace \"data\", which the Run does not \
             bind (and the workflow does not mark optional)"
        )
    );
    assert!(env.jobs_of("ro-2").await.is_empty(), "nothing ran");
}
