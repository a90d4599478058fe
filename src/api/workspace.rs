//! Workspaces: files shared between tasks. A Workflow declares them, a Run binds each to
//! storage, a task mounts the ones it uses.

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EmptyDirVolumeSource, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, SecretVolumeSource,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pod::kubernetes_object;
use crate::compile::names::{DNS_LABEL_PATTERN, MAX_LABEL_LEN};

/// A workspace a Workflow's tasks may mount.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceDecl {
    /// DNS-1123 label, unique within the workflow.
    #[schemars(length(min = 1, max = MAX_LABEL_LEN), pattern(DNS_LABEL_PATTERN))]
    pub name: String,
    /// Free text shown to people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A Run may leave it unbound; then the tasks that mount it do not, and see no
    /// `ORK_WORKSPACE_<NAME>`. (Locally every workspace gets a directory.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// A workspace a task mounts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceMount {
    /// A workspace the workflow declares.
    #[schemars(length(min = 1, max = MAX_LABEL_LEN), pattern(DNS_LABEL_PATTERN))]
    pub name: String,
    /// Where the container sees it; default `/workspaces/NAME`. The task finds it in
    /// `ORK_WORKSPACE_<NAME>` either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    /// Mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// What a Run binds a workspace to: exactly one of the sources.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceBinding {
    /// The workspace, as the workflow declares it.
    #[schemars(length(min = 1, max = MAX_LABEL_LEN), pattern(DNS_LABEL_PATTERN))]
    pub name: String,
    /// A PersistentVolumeClaim made for this run (named `RUN-NAME`), owned by the Run and
    /// deleted with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claim_template: Option<ClaimTemplate>,
    /// An existing PersistentVolumeClaim (Kubernetes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "kubernetes_object")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    /// A directory of each task's own Pod, empty at its start: not shared between tasks on
    /// Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "kubernetes_object")]
    pub empty_dir: Option<EmptyDirVolumeSource>,
    /// A ConfigMap's keys as files (Kubernetes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "kubernetes_object")]
    pub config_map: Option<ConfigMapVolumeSource>,
    /// A Secret's keys as files (Kubernetes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "kubernetes_object")]
    pub secret: Option<SecretVolumeSource>,
}

/// The PersistentVolumeClaim a Run makes for a workspace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimTemplate {
    /// The claim's spec (access modes, storage class, size).
    #[schemars(schema_with = "kubernetes_object")]
    pub spec: PersistentVolumeClaimSpec,
}

impl WorkspaceBinding {
    /// The names of the sources that are set, as written in a manifest.
    pub fn sources(&self) -> Vec<&'static str> {
        [
            ("volumeClaimTemplate", self.volume_claim_template.is_some()),
            (
                "persistentVolumeClaim",
                self.persistent_volume_claim.is_some(),
            ),
            ("emptyDir", self.empty_dir.is_some()),
            ("configMap", self.config_map.is_some()),
            ("secret", self.secret.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// `ORK_WORKSPACE_<NAME>`: the name upper-cased, `-` as `_`.
pub fn workspace_var(name: &str) -> String {
    format!(
        "ORK_WORKSPACE_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// Where a task sees a workspace unless it says otherwise.
pub fn default_mount_path(name: &str) -> String {
    format!("/workspaces/{name}")
}
