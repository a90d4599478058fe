//! What `ork run` does not use: settings that only mean something for a Pod. They are accepted
//! (the same workflow runs on a cluster) and named once, so nobody believes they took effect.

use crate::compile::Dag;
use crate::text::names;

/// One line naming the Kubernetes-only settings the run's tasks have and which tasks have them,
/// or `None` when there are none. (`image`, `resources` and `serviceAccountName` are part of
/// every workflow and documented as unused here; they are not listed.)
pub fn kubernetes_only(dag: &Dag) -> Option<String> {
    let mut fields: Vec<String> = Vec::new();
    let mut tasks: Vec<&str> = Vec::new();
    for (_, task) in dag.tasks() {
        let mut own: Vec<String> = task
            .pod
            .fields_set()
            .into_iter()
            .map(|f| format!("pod.{f}"))
            .collect();
        for (field, set) in [
            ("securityContext", task.security_context.is_some()),
            ("volumes", !task.volumes.is_empty()),
            ("volumeMounts", !task.volume_mounts.is_empty()),
        ] {
            if set {
                own.push(field.to_string());
            }
        }
        if own.is_empty() {
            continue;
        }
        tasks.push(&task.name);
        for field in own {
            if !fields.contains(&field) {
                fields.push(field);
            }
        }
    }
    if fields.is_empty() {
        return None;
    }
    let shown_tasks = names(tasks.iter().copied());
    Some(format!(
        "ork run ignores Kubernetes-only settings: {} (of {} {})",
        fields.join(", "),
        if tasks.len() == 1 { "task" } else { "tasks" },
        shown_tasks
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WorkflowSpec;
    use crate::compile::compile;

    #[test]
    fn the_settings_ork_run_ignores_are_named_once_with_their_tasks() {
        let spec: WorkflowSpec = serde_json::from_value(serde_json::json!({
            "defaults": {"image": "i", "pod": {"nodeSelector": {"gpu": "true"}}},
            "tasks": [
                {"name": "a", "command": ["true"], "securityContext": {"runAsUser": 1}},
                {"name": "b", "command": ["true"], "pod": {"labels": {"team": "x"}}},
            ]
        }))
        .unwrap();
        let dag = compile(&spec, "spec").unwrap();
        assert_eq!(
            kubernetes_only(&dag).unwrap(),
            "ork run ignores Kubernetes-only settings: pod.nodeSelector, securityContext, \
             pod.labels (of tasks \"a\", \"b\")"
        );
        let plain: WorkflowSpec = serde_json::from_value(serde_json::json!({
            "tasks": [{"name": "a", "image": "i", "command": ["true"]}]
        }))
        .unwrap();
        assert_eq!(kubernetes_only(&compile(&plain, "spec").unwrap()), None);
    }
}
