//! Pod settings: where a task's Pod runs and as whom (Kubernetes only; `ork run` accepts them,
//! ignores them and says which).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, LocalObjectReference, PodSecurityContext, Toleration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Fields of a task's Pod, in `defaults.pod` (every task) or a task's `pod`. A task's own value
/// wins field by field: the maps (`nodeSelector`, `labels`, `annotations`) merge by key, every
/// other field (lists included) is replaced whole.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSettings {
    /// Labels a node must have for the Pod to run there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the Pod tolerates (Kubernetes `Toleration`s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "kubernetes_objects")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Node and Pod (anti-)affinity (Kubernetes `Affinity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "kubernetes_object")]
    pub affinity: Option<Affinity>,
    /// The Pod's security context (Kubernetes `PodSecurityContext`: user, group, fsGroup,
    /// seccomp, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "kubernetes_object")]
    pub security_context: Option<PodSecurityContext>,
    /// Secrets to pull the task's image with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// The Pod's PriorityClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Labels added to the Pod; none may be under `ork.dev/`, and ork's own labels win.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the Pod; none may be under `ork.dev/`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A Kubernetes object (`Affinity`, a security context, a `Volume`) in a CRD: kept as written.
/// Its full schema would make the CRDs several times larger (a `Volume` alone has dozens of
/// sources); ork reads it into the Kubernetes type, which refuses a value of the wrong type
/// and, as the API server does for a Pod, drops a field it does not know.
pub(super) fn kubernetes_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A list of Kubernetes objects, each kept as written (see [`kubernetes_object`]).
pub(super) fn kubernetes_objects(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    })
}

impl PodSettings {
    /// `self` (the defaults) with `task`'s settings over it, field by field.
    pub fn merged(&self, task: &PodSettings) -> PodSettings {
        let maps = |base: &BTreeMap<String, String>, over: &BTreeMap<String, String>| {
            let mut merged = base.clone();
            merged.extend(over.iter().map(|(k, v)| (k.clone(), v.clone())));
            merged
        };
        PodSettings {
            node_selector: maps(&self.node_selector, &task.node_selector),
            tolerations: task
                .tolerations
                .clone()
                .or_else(|| self.tolerations.clone()),
            affinity: task.affinity.clone().or_else(|| self.affinity.clone()),
            security_context: task
                .security_context
                .clone()
                .or_else(|| self.security_context.clone()),
            image_pull_secrets: task
                .image_pull_secrets
                .clone()
                .or_else(|| self.image_pull_secrets.clone()),
            priority_class_name: task
                .priority_class_name
                .clone()
                .or_else(|| self.priority_class_name.clone()),
            labels: maps(&self.labels, &task.labels),
            annotations: maps(&self.annotations, &task.annotations),
        }
    }

    /// The names of the fields that are set, as written in a manifest.
    pub fn fields_set(&self) -> Vec<&'static str> {
        let PodSettings {
            node_selector,
            tolerations,
            affinity,
            security_context,
            image_pull_secrets,
            priority_class_name,
            labels,
            annotations,
        } = self;
        [
            ("nodeSelector", !node_selector.is_empty()),
            ("tolerations", tolerations.is_some()),
            ("affinity", affinity.is_some()),
            ("securityContext", security_context.is_some()),
            ("imagePullSecrets", image_pull_secrets.is_some()),
            ("priorityClassName", priority_class_name.is_some()),
            ("labels", !labels.is_empty()),
            ("annotations", !annotations.is_empty()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tasks_settings_win_field_by_field_and_maps_merge_by_key() {
        let defaults: PodSettings = serde_json::from_value(serde_json::json!({
            "nodeSelector": {"disk": "ssd", "gpu": "true"},
            "tolerations": [{"key": "batch", "operator": "Exists"}],
            "priorityClassName": "batch-low",
            "labels": {"team": "data", "tier": "batch"},
        }))
        .unwrap();
        let task: PodSettings = serde_json::from_value(serde_json::json!({
            "nodeSelector": {"gpu": "a100"},
            "tolerations": [],
            "labels": {"tier": "gpu"},
        }))
        .unwrap();
        let merged = defaults.merged(&task);
        assert_eq!(
            serde_json::to_value(&merged).unwrap(),
            serde_json::json!({
                "nodeSelector": {"disk": "ssd", "gpu": "a100"},
                "tolerations": [],
                "priorityClassName": "batch-low",
                "labels": {"team": "data", "tier": "gpu"},
            })
        );
        assert_eq!(
            merged.fields_set(),
            ["nodeSelector", "tolerations", "priorityClassName", "labels"]
        );
        assert!(PodSettings::default().fields_set().is_empty());
    }
}
