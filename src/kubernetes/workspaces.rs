//! Workspaces on Kubernetes: the volume and mount each task gets for the workspaces it mounts
//! that the Run binds, and the PersistentVolumeClaim a `volumeClaimTemplate` binding makes —
//! one per run and workspace, owned by the Run, so it goes when the Run is deleted. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::names::{LABEL_MANAGED_BY, LABEL_RUN, MANAGED_BY};
use crate::api::WorkspaceBinding;
use crate::compile::CompiledTask;

/// On a workspace's PersistentVolumeClaim: the workspace's name.
pub const LABEL_WORKSPACE: &str = "ork.dev/workspace";

/// The claim a `volumeClaimTemplate` binding makes: `RUN-WORKSPACE`.
pub fn claim_name(run: &str, workspace: &str) -> String {
    format!("{run}-{workspace}")
}

/// What a task's Pod gets for its workspaces: volumes, the container's mounts, and each
/// workspace's path for `ORK_WORKSPACE_<NAME>`. A workspace the Run leaves unbound (an
/// optional one) is not mounted at all.
#[derive(Debug, Default, PartialEq)]
pub struct TaskMounts {
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
    pub paths: Vec<(String, String)>,
    /// Claims the Pod needs made first.
    pub claims: Vec<String>,
}

/// The workspaces of `task` in run `run` with bindings `bindings`.
pub fn task_mounts(run: &str, task: &CompiledTask, bindings: &[WorkspaceBinding]) -> TaskMounts {
    let mut out = TaskMounts::default();
    for mount in &task.workspaces {
        let Some(binding) = bindings.iter().find(|b| b.name == mount.name) else {
            continue;
        };
        let mut volume = Volume {
            name: mount.name.clone(),
            ..Volume::default()
        };
        if binding.volume_claim_template.is_some() {
            let claim = claim_name(run, &mount.name);
            volume.persistent_volume_claim = Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: None,
            });
            out.claims.push(claim);
        } else if let Some(source) = &binding.persistent_volume_claim {
            volume.persistent_volume_claim = Some(source.clone());
        } else if let Some(source) = &binding.empty_dir {
            volume.empty_dir = Some(source.clone());
        } else if let Some(source) = &binding.config_map {
            volume.config_map = Some(source.clone());
        } else if let Some(source) = &binding.secret {
            volume.secret = Some(source.clone());
        } else {
            continue; // refused before the run starts
        }
        out.volumes.push(volume);
        out.mounts.push(VolumeMount {
            name: mount.name.clone(),
            mount_path: mount.mount_path.clone(),
            read_only: mount.read_only.then_some(true),
            ..VolumeMount::default()
        });
        out.paths
            .push((mount.name.clone(), mount.mount_path.clone()));
    }
    out
}

/// The claim `name` of workspace `binding` (a `volumeClaimTemplate` one) of run `run`, owned
/// by the Run.
pub fn claim(
    owner: &OwnerReference,
    namespace: &str,
    run: &str,
    binding: &WorkspaceBinding,
) -> Option<PersistentVolumeClaim> {
    let template = binding.volume_claim_template.as_ref()?;
    Some(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(claim_name(run, &binding.name)),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (LABEL_RUN.to_string(), run.to_string()),
                (LABEL_WORKSPACE.to_string(), binding.name.clone()),
                (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
            ])),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(template.spec.clone()),
        status: None,
    })
}
