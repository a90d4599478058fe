//! Workspaces on the controller: each task's Pod mounts the workspaces it uses that the Run
//! binds, a `volumeClaimTemplate` makes one claim per run before the first Job that needs it,
//! and a Run that leaves a required workspace unbound fails before anything starts.

use super::*;

fn ci() -> Value {
    json!({
        "workspaces": [{"name": "source"}, {"name": "cache", "optional": true}],
        "tasks": [
            {"name": "clone", "workspaces": [{"name": "source"}, {"name": "cache"}]},
            {"name": "build", "dependsOn": ["clone"],
             "workspaces": [{"name": "source", "readOnly": true, "mountPath": "/src"}]},
        ]
    })
}

fn bind(w: &mut World, bindings: Value) {
    w.run.spec.workspaces = serde_json::from_value(bindings).unwrap();
}

fn pod_spec(job: &Job) -> Value {
    serde_json::to_value(job).unwrap()["spec"]["template"]["spec"].clone()
}

#[test]
fn a_claim_is_made_once_before_the_first_job_that_mounts_it() {
    let mut w = World::new(ci());
    bind(
        &mut w,
        json!([{"name": "source", "volumeClaimTemplate": {"spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}]),
    );
    let plan = w.step(t(0));
    assert_eq!(names(&plan.create), ["etl-1.clone.1"]);
    assert_eq!(plan.claims.len(), 1);
    let (claim, needing) = &plan.claims[0];
    assert_eq!(claim.metadata.name.as_deref(), Some("etl-1-source"));
    assert_eq!(needing, &["etl-1.clone.1".to_string()]);
    let owner = &claim.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Run", RUN_UID));
    assert_eq!(
        serde_json::to_value(claim.spec.as_ref().unwrap()).unwrap()["accessModes"],
        json!(["ReadWriteOnce"])
    );
    let pod = pod_spec(&plan.create[0]);
    assert_eq!(
        pod["volumes"],
        json!([{"name": "source", "persistentVolumeClaim": {"claimName": "etl-1-source"}}]),
        "the optional cache is not bound: not mounted"
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["volumeMounts"],
        json!([{"name": "source", "mountPath": "/workspaces/source"}])
    );
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env.contains(&"ORK_WORKSPACE_SOURCE"));
    assert!(!env.contains(&"ORK_WORKSPACE_CACHE"));

    // Made: the next Job that mounts it does not make it again.
    w.memory.claims.insert("etl-1-source".into());
    w.show_jobs(t(0));
    w.pod("etl-1.clone.1", succeeded_pod(1, 2, ""));
    let plan = w.step(t(3));
    assert_eq!(names(&plan.create), ["etl-1.build.1"]);
    assert!(plan.claims.is_empty());
    let pod = pod_spec(&plan.create[0]);
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        json!([{"name": "source", "mountPath": "/src", "readOnly": true}])
    );
    let value = pod["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "ORK_WORKSPACE_SOURCE")
        .unwrap()["value"]
        .clone();
    assert_eq!(value, "/src");
}

#[test]
fn other_bindings_are_mounted_as_given() {
    let mut w = World::new(ci());
    bind(
        &mut w,
        json!([{"name": "source", "persistentVolumeClaim": {"claimName": "shared"}},
               {"name": "cache", "emptyDir": {}}]),
    );
    let plan = w.step(t(0));
    assert!(plan.claims.is_empty(), "an existing claim is not made");
    let mut other = World::new(ci());
    bind(
        &mut other,
        json!([{"name": "source", "configMap": {"name": "settings"}},
               {"name": "cache", "secret": {"secretName": "keys"}}]),
    );
    let files = other.step(t(0));
    assert_eq!(
        pod_spec(&files.create[0])["volumes"],
        json!([{"name": "source", "configMap": {"name": "settings"}},
               {"name": "cache", "secret": {"secretName": "keys"}}])
    );
    assert_eq!(
        pod_spec(&plan.create[0])["volumes"],
        json!([{"name": "source", "persistentVolumeClaim": {"claimName": "shared"}},
               {"name": "cache", "emptyDir": {}}])
    );
}

#[test]
fn a_required_workspace_left_unbound_fails_the_run_before_anything_starts() {
    let mut w = World::new(ci());
    let plan = w.step(t(0));
    assert!(plan.create.is_empty());
    assert_eq!(w.phase(), RunPhase::Failed);
    let condition = &w.status().conditions[0];
    assert_eq!(condition.reason.as_deref(), Some("InvalidSpec"));
    assert_eq!(
        condition.message.as_deref(),
        Some(
            "spec.workspaces: task \"clone\" mounts workspace \"source\", which the Run does not \
             bind (and the workflow does not mark optional)"
        )
    );

    let mut w = World::new(ci());
    bind(
        &mut w,
        json!([{"name": "source", "emptyDir": {}, "secret": {"secretName": "s"}},
               {"name": "other", "emptyDir": {}}]),
    );
    w.step(t(0));
    let message = w.status().conditions[0].message.clone().unwrap();
    assert!(
        message.contains("spec.workspaces[0]: workspace \"source\" needs exactly one of")
            && message.contains("found emptyDir, secret")
            && message.contains("spec.workspaces[1].name: binds workspace \"other\""),
        "{message}"
    );
}

#[test]
fn tasks_that_may_share_a_read_write_once_claim_at_once_are_warned_about_once() {
    let template = json!({"spec": {"accessModes": ["ReadWriteOnce"],
                                   "resources": {"requests": {"storage": "1Gi"}}}});
    let mut w = World::new(json!({
        "workspaces": [{"name": "data"}],
        "tasks": [
            {"name": "prep", "workspaces": [{"name": "data"}]},
            {"name": "left", "dependsOn": ["prep"], "workspaces": [{"name": "data"}]},
            {"name": "right", "dependsOn": ["prep"], "workspaces": [{"name": "data"}]},
        ]
    }));
    bind(
        &mut w,
        json!([{"name": "data", "volumeClaimTemplate": template}]),
    );
    let plan = w.step(t(0));
    let warned: Vec<&Note> = plan
        .events
        .iter()
        .filter(|e| e.reason == "ReadWriteOnceShared")
        .collect();
    assert_eq!(warned.len(), 1);
    assert_eq!(warned[0].type_, EventType::Warning);
    assert!(
        warned[0].note.starts_with(
            "workspace \"data\" is a ReadWriteOnce claim that tasks \"left\" and \"right\" may \
             mount at the same time"
        ),
        "{}",
        warned[0].note
    );
    w.show_jobs(t(0));
    w.pod("etl-1.prep.1", succeeded_pod(1, 2, ""));
    let plan = w.step(t(3));
    assert!(
        !reasons(&plan).contains(&"ReadWriteOnceShared"),
        "said once"
    );

    // Ordered tasks, a ReadWriteMany claim, or one task at a time: nothing to say.
    let mut ordered = World::new(ci());
    bind(
        &mut ordered,
        json!([{"name": "source", "volumeClaimTemplate": template}]),
    );
    assert!(!reasons(&ordered.step(t(0))).contains(&"ReadWriteOnceShared"));
    let mut fan = World::new(json!({
        "workspaces": [{"name": "data"}],
        "tasks": [{"name": "p", "forEach": {"items": [1, 2]}, "workspaces": [{"name": "data"}]}]
    }));
    bind(
        &mut fan,
        json!([{"name": "data", "volumeClaimTemplate": template}]),
    );
    let plan = fan.step(t(0));
    let note = &plan
        .events
        .iter()
        .find(|e| e.reason == "ReadWriteOnceShared")
        .expect("instances may share it")
        .note;
    assert!(note.contains("the instances of task \"p\""), "{note}");
    let mut many = World::new(json!({
        "workspaces": [{"name": "data"}],
        "tasks": [{"name": "p", "forEach": {"items": [1, 2]}, "workspaces": [{"name": "data"}]}]
    }));
    bind(
        &mut many,
        json!([{"name": "data", "volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteMany"]}}}]),
    );
    assert!(!reasons(&many.step(t(0))).contains(&"ReadWriteOnceShared"));
}
