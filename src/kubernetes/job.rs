//! Building the Job of one attempt. Pure: no client, so every field is unit-tested.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::names::{attempt_job_name, attempt_labels};
use super::workspaces::TaskMounts;
use crate::compile::CompiledTask;
use crate::engine::Launch;
use crate::task_env::{RunIdentity, ork_env, oversized_var};

/// Where the container writes its outputs: `ORK_OUTPUT` and the `terminationMessagePath`,
/// whose contents the kubelet hands back as the termination message.
pub const OUTPUT_PATH: &str = "/dev/termination-log";

/// Name of the one container of a task Pod.
pub const CONTAINER: &str = "task";

/// The Job that runs `launch`, owned by the Run. The task's timeout is the Pod's own
/// `activeDeadlineSeconds`, which the kubelet counts from the Pod's start, as the engine does:
/// time spent waiting for a node does not count, and a Pod stopped by its deadline stays, with
/// its logs. `ttl_seconds` lets Kubernetes delete the finished Job (and its Pod) that long
/// after it finishes. `workspaces`: the task's workspace volumes and mounts. `Err`: why the attempt cannot start (an item or input longer than an
/// environment variable may be).
pub fn build_job(
    owner: &OwnerReference,
    namespace: &str,
    identity: &RunIdentity,
    task: &CompiledTask,
    launch: &Launch,
    ttl_seconds: Option<i32>,
    workspaces: &TaskMounts,
) -> Result<Job, String> {
    let paths: Vec<(&str, &str)> = workspaces
        .paths
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_str()))
        .collect();
    let index = launch.instance.as_ref().map(|i| i.index);
    let labels = attempt_labels(&identity.run, &task.name, index, launch.attempt);
    let ork = ork_env(identity, task, launch, OUTPUT_PATH, &paths);
    if let Some(why) = oversized_var(&ork) {
        return Err(why);
    }
    // The kubelet expands `$(VAR)` in env values; ork's own values must arrive verbatim.
    let mut env: Vec<EnvVar> = ork
        .into_iter()
        .map(|(name, value)| EnvVar {
            name,
            value: Some(value.replace('$', "$$")),
            value_from: None,
        })
        .collect();
    env.extend(task.env.iter().cloned());
    let container = Container {
        name: CONTAINER.into(),
        image: task.image.clone(),
        command: Some(task.command.clone()),
        args: (!task.args.is_empty()).then(|| task.args.clone()),
        env: Some(env),
        resources: task.resources.clone(),
        termination_message_path: Some(OUTPUT_PATH.into()),
        termination_message_policy: Some("File".into()),
        security_context: task.security_context.clone(),
        volume_mounts: nonempty_list(
            task.volume_mounts
                .iter()
                .cloned()
                .chain(workspaces.mounts.iter().cloned())
                .collect(),
        ),
        ..Container::default()
    };
    let pod = &task.pod;
    // The task's own labels, with ork's over them: ork finds its Pods by these.
    let mut pod_labels = pod.labels.clone();
    pod_labels.extend(labels.clone());
    let nonempty =
        |map: &std::collections::BTreeMap<String, String>| (!map.is_empty()).then(|| map.clone());
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(attempt_job_name(
                &identity.run,
                &task.name,
                index,
                launch.attempt,
            )),
            namespace: Some(namespace.into()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            // ork does the retries; the Job runs exactly one Pod.
            backoff_limit: Some(0),
            ttl_seconds_after_finished: ttl_seconds,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: nonempty(&pod.annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    active_deadline_seconds: task.timeout.map(|t| t.as_secs()),
                    service_account_name: task.service_account_name.clone(),
                    containers: vec![container],
                    node_selector: nonempty(&pod.node_selector),
                    tolerations: pod.tolerations.clone(),
                    affinity: pod.affinity.clone(),
                    security_context: pod.security_context.clone(),
                    image_pull_secrets: pod.image_pull_secrets.clone(),
                    priority_class_name: pod.priority_class_name.clone(),
                    volumes: nonempty_list(
                        task.volumes
                            .iter()
                            .cloned()
                            .chain(workspaces.volumes.iter().cloned())
                            .collect(),
                    ),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    })
}

fn nonempty_list<T>(list: Vec<T>) -> Option<Vec<T>> {
    (!list.is_empty()).then_some(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WorkflowSpec;
    use crate::compile::compile;

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "ork.dev/v1alpha1".into(),
            kind: "Run".into(),
            name: "etl-abc".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn job_follows_the_contract() {
        let spec: WorkflowSpec = serde_json::from_value(serde_json::json!({
            "defaults": {"image": "busybox", "serviceAccountName": "runner",
                         "env": [{"name": "LEVEL", "value": "info"}]},
            "tasks": [{"name": "load", "command": ["sh", "-c"], "args": ["echo $(DAY)"],
                       "timeoutSeconds": 30,
                       "inputs": [{"name": "DAY", "value": "a$b"}],
                       "resources": {"requests": {"cpu": "100m"}}}]
        }))
        .unwrap();
        let dag = compile(&spec, "spec").unwrap();
        let task = dag.task(crate::compile::TaskId(0));
        let identity = RunIdentity {
            workflow: "etl".into(),
            run: "etl-abc".into(),
            scheduled_time: None,
        };
        let launch = Launch {
            task: crate::compile::TaskId(0),
            attempt: 2,
            inputs: vec![("DAY".into(), serde_json::json!("a$b"))],
            finally: None,
            instance: None,
        };
        let job = build_job(
            &owner(),
            "team",
            &identity,
            task,
            &launch,
            Some(600),
            &TaskMounts::default(),
        )
        .unwrap();
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["apiVersion"], "batch/v1");
        assert_eq!(json["kind"], "Job");
        assert_eq!(json["metadata"]["name"], "etl-abc.load.2");
        assert_eq!(json["metadata"]["namespace"], "team");
        let labels = &json["metadata"]["labels"];
        assert_eq!(labels["ork.dev/run"], "etl-abc");
        assert_eq!(labels["ork.dev/task"], "load");
        assert_eq!(labels["ork.dev/attempt"], "2");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "ork");
        assert_eq!(json["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(json["spec"]["backoffLimit"], 0);
        assert_eq!(json["spec"]["ttlSecondsAfterFinished"], 600);
        assert_eq!(
            json["spec"].get("activeDeadlineSeconds"),
            None,
            "the timeout counts from the Pod's start"
        );
        let pod = &json["spec"]["template"];
        assert_eq!(pod["spec"]["activeDeadlineSeconds"], 30);
        assert_eq!(pod["metadata"]["labels"], *labels);
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["serviceAccountName"], "runner");
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["image"], "busybox");
        assert_eq!(c["command"], serde_json::json!(["sh", "-c"]));
        assert_eq!(c["args"], serde_json::json!(["echo $(DAY)"]));
        assert_eq!(c["terminationMessagePath"], OUTPUT_PATH);
        assert_eq!(c["resources"]["requests"]["cpu"], "100m");
        let env: Vec<(String, String)> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().into(),
                    e["value"].as_str().unwrap().into(),
                )
            })
            .collect();
        let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("ORK_WORKFLOW"), Some("etl"));
        assert_eq!(get("ORK_RUN"), Some("etl-abc"));
        assert_eq!(get("ORK_TASK"), Some("load"));
        assert_eq!(get("ORK_ATTEMPT"), Some("2"));
        assert_eq!(get("ORK_OUTPUT"), Some(OUTPUT_PATH));
        assert_eq!(
            get("ORK_INPUT_JSON"),
            Some(r#"{"DAY":"a$$b"}"#),
            "escaped for the kubelet"
        );
        assert_eq!(get("DAY"), Some("a$$b"));
        assert_eq!(get("LEVEL"), Some("info"));
        assert_eq!(
            env.last().unwrap().0,
            "LEVEL",
            "the task's env comes after ork's"
        );
    }

    #[test]
    fn an_instance_has_its_own_job_labels_and_item() {
        let spec: WorkflowSpec = serde_json::from_value(serde_json::json!({
            "defaults": {"image": "busybox"},
            "tasks": [{"name": "p", "command": ["sh", "-c", "echo $(ORK_ITEM)"],
                       "forEach": {"items": ["a$b", {"k": 1}]}}]
        }))
        .unwrap();
        let dag = compile(&spec, "spec").unwrap();
        let identity = RunIdentity {
            workflow: "fan".into(),
            run: "fan-1".into(),
            scheduled_time: None,
        };
        let launch = |item: serde_json::Value| Launch {
            task: crate::compile::TaskId(1),
            attempt: 3,
            inputs: Vec::new(),
            finally: None,
            instance: Some(crate::engine::Instance {
                task: crate::compile::TaskId(0),
                index: 1,
                item,
            }),
        };
        let task = dag.task(crate::compile::TaskId(0));
        let job = build_job(
            &owner(),
            "team",
            &identity,
            task,
            &launch(serde_json::json!("a$b")),
            None,
            &TaskMounts::default(),
        )
        .unwrap();
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["metadata"]["name"], "fan-1.p.1-3");
        let labels = &json["metadata"]["labels"];
        assert_eq!(labels["ork.dev/task"], "p");
        assert_eq!(labels["ork.dev/instance"], "1");
        assert_eq!(labels["ork.dev/attempt"], "3");
        let env = &json["spec"]["template"]["spec"]["containers"][0]["env"];
        let get = |n: &str| {
            env.as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == n)
                .map(|e| e["value"].clone())
        };
        assert_eq!(get("ORK_ITEM"), Some(serde_json::json!("a$$b")));
        assert_eq!(get("ORK_ITEM_INDEX"), Some(serde_json::json!("1")));
        assert_eq!(get("ORK_TASK"), Some(serde_json::json!("p")));

        let big = serde_json::json!("x".repeat(200_000));
        let refused = build_job(
            &owner(),
            "team",
            &identity,
            task,
            &launch(big),
            None,
            &TaskMounts::default(),
        );
        assert_eq!(
            refused.unwrap_err(),
            "ORK_ITEM is 200000 bytes, more than the 131072 one environment variable may hold"
        );
    }

    #[test]
    fn pod_settings_reach_the_pod_as_given_and_ork_keeps_its_own() {
        let spec: WorkflowSpec = serde_json::from_value(serde_json::json!({
            "defaults": {"image": "busybox", "pod": {
                "nodeSelector": {"disk": "ssd", "gpu": "true"},
                "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
                "securityContext": {"runAsUser": 1000, "fsGroup": 2000},
                "imagePullSecrets": [{"name": "regcred"}],
                "priorityClassName": "batch-low",
                "labels": {"team": "data", "app.kubernetes.io/managed-by": "someone"},
                "annotations": {"note": "n"},
            }},
            "tasks": [{"name": "train", "command": ["true"],
                       "pod": {"nodeSelector": {"gpu": "a100"},
                               "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                                   "nodeSelectorTerms": [{"matchExpressions": [
                                       {"key": "zone", "operator": "In", "values": ["a"]}]}]}}}},
                       "securityContext": {"readOnlyRootFilesystem": true},
                       "volumes": [{"name": "creds", "secret": {"secretName": "s3"}}],
                       "volumeMounts": [{"name": "creds", "mountPath": "/creds", "readOnly": true}]}]
        }))
        .unwrap();
        let dag = compile(&spec, "spec").unwrap();
        let identity = RunIdentity {
            workflow: "ml".into(),
            run: "ml-1".into(),
            scheduled_time: None,
        };
        let launch = Launch {
            task: crate::compile::TaskId(0),
            attempt: 1,
            inputs: Vec::new(),
            finally: None,
            instance: None,
        };
        let task = dag.task(crate::compile::TaskId(0));
        let job = build_job(
            &owner(),
            "team",
            &identity,
            task,
            &launch,
            None,
            &TaskMounts::default(),
        )
        .unwrap();
        let json = serde_json::to_value(&job).unwrap();
        let template = &json["spec"]["template"];
        let pod = &template["spec"];
        assert_eq!(
            pod["nodeSelector"],
            serde_json::json!({"disk": "ssd", "gpu": "a100"})
        );
        assert_eq!(pod["tolerations"][0]["key"], "batch");
        assert_eq!(
            pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
                [0]["matchExpressions"][0]["key"],
            "zone"
        );
        assert_eq!(
            pod["securityContext"],
            serde_json::json!({"runAsUser": 1000, "fsGroup": 2000})
        );
        assert_eq!(
            pod["imagePullSecrets"],
            serde_json::json!([{"name": "regcred"}])
        );
        assert_eq!(pod["priorityClassName"], "batch-low");
        assert_eq!(pod["volumes"][0]["secret"]["secretName"], "s3");
        let labels = &template["metadata"]["labels"];
        assert_eq!(labels["team"], "data");
        assert_eq!(
            labels["app.kubernetes.io/managed-by"], "ork",
            "ork's own label wins"
        );
        assert_eq!(labels["ork.dev/task"], "train");
        assert_eq!(
            template["metadata"]["annotations"],
            serde_json::json!({"note": "n"})
        );
        let container = &pod["containers"][0];
        assert_eq!(
            container["securityContext"],
            serde_json::json!({"readOnlyRootFilesystem": true})
        );
        assert_eq!(
            container["volumeMounts"],
            serde_json::json!([{"name": "creds", "mountPath": "/creds", "readOnly": true}])
        );
        assert_eq!(container["terminationMessagePath"], OUTPUT_PATH);
        assert_eq!(
            json["metadata"]["labels"].get("team"),
            None,
            "the Job's own labels are ork's"
        );
    }
}
