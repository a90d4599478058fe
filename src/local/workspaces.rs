//! Workspaces under `ork run`: every workspace is a directory, the one `--workspace NAME=DIR`
//! gives, or else a fresh one in the run's log directory (kept after the run). A Run's
//! `emptyDir` or `volumeClaimTemplate` binding also means a fresh directory; its `configMap`,
//! `secret` and `persistentVolumeClaim` bindings need Kubernetes, so a run that has one and no
//! `--workspace` for it is refused before anything starts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::api::WorkspaceBinding;
use crate::compile::{Dag, check_bindings};
use crate::text::{names, quoted};

/// Where a workspace's directory comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkspaceDir {
    /// `--workspace NAME=DIR`.
    Given(PathBuf),
    /// A new directory in the run's log directory.
    Fresh,
}

/// Subdirectory of a run's log directory holding its fresh workspaces. No task can have this
/// name (task names have no `_`), so no task's files mix with them.
pub const FRESH_DIR: &str = "_workspaces";

/// The directory of each workspace the workflow declares; `Err` lists every problem (a binding
/// the workflow does not have, a `--workspace` for a workspace it does not declare, a
/// Kubernetes-only binding without a directory). `origin` names the Run for messages.
pub fn bind(
    dag: &Dag,
    bindings: &[WorkspaceBinding],
    given: &[(String, PathBuf)],
    origin: &str,
) -> Result<BTreeMap<String, WorkspaceDir>, Vec<String>> {
    let mut errors: Vec<String> = check_bindings(dag, bindings, "spec.workspaces")
        .iter()
        .map(|p| format!("{origin}: {p}"))
        .collect();
    let mut dirs: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (name, dir) in given {
        if !dag.workspaces().iter().any(|w| &w.name == name) {
            let declares = if dag.workspaces().is_empty() {
                "the workflow declares no workspaces".to_string()
            } else {
                format!(
                    "the workflow declares {}",
                    names(dag.workspaces().iter().map(|w| w.name.as_str()))
                )
            };
            errors.push(format!("--workspace {}: {declares}", quoted(name)));
        } else if dirs.insert(name.clone(), dir.clone()).is_some() {
            errors.push(format!("--workspace {}: given twice", quoted(name)));
        }
    }
    let mut bound = BTreeMap::new();
    for decl in dag.workspaces() {
        let dir = match dirs.get(&decl.name) {
            Some(dir) => WorkspaceDir::Given(dir.clone()),
            None => {
                let binding = bindings.iter().find(|b| b.name == decl.name);
                let kubernetes_only = binding.and_then(|b| {
                    b.sources()
                        .into_iter()
                        .find(|s| matches!(*s, "configMap" | "secret" | "persistentVolumeClaim"))
                });
                if let Some(source) = kubernetes_only {
                    errors.push(format!(
                        "{origin}: workspace {} is bound to a {source}, which only Kubernetes \
                         provides; give ork run a directory for it with --workspace {}=DIR",
                        quoted(&decl.name),
                        decl.name
                    ));
                }
                WorkspaceDir::Fresh
            }
        };
        bound.insert(decl.name.clone(), dir);
    }
    if errors.is_empty() {
        Ok(bound)
    } else {
        Err(errors)
    }
}

/// Makes the directories (a given one if it does not exist yet): each workspace's absolute
/// path.
pub fn make_dirs(
    bound: &BTreeMap<String, WorkspaceDir>,
    run_dir: &Path,
) -> Result<HashMap<String, PathBuf>, String> {
    let mut dirs = HashMap::with_capacity(bound.len());
    for (name, dir) in bound {
        let path = match dir {
            WorkspaceDir::Given(path) => path.clone(),
            WorkspaceDir::Fresh => run_dir.join(FRESH_DIR).join(name),
        };
        std::fs::create_dir_all(&path).map_err(|e| {
            format!(
                "workspace {}: cannot create {}: {e}",
                quoted(name),
                path.display()
            )
        })?;
        let path = path
            .canonicalize()
            .map_err(|e| format!("workspace {}: {}: {e}", quoted(name), path.display()))?;
        dirs.insert(name.clone(), path);
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WorkflowSpec;
    use crate::compile::compile;

    fn dag() -> Dag {
        let spec: WorkflowSpec = serde_json::from_value(serde_json::json!({
            "workspaces": [{"name": "source"}, {"name": "cache", "optional": true}],
            "tasks": [{"name": "a", "image": "i", "command": ["true"],
                       "workspaces": [{"name": "source"}]}]
        }))
        .unwrap();
        compile(&spec, "spec").unwrap()
    }

    fn binding(json: serde_json::Value) -> WorkspaceBinding {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn every_workspace_gets_a_directory_given_or_fresh() {
        let bound = bind(
            &dag(),
            &[binding(
                serde_json::json!({"name": "source", "emptyDir": {}}),
            )],
            &[("cache".into(), PathBuf::from("/tmp/c"))],
            "run.yaml",
        )
        .unwrap();
        assert_eq!(bound["source"], WorkspaceDir::Fresh);
        assert_eq!(bound["cache"], WorkspaceDir::Given(PathBuf::from("/tmp/c")));
    }

    #[test]
    fn kubernetes_only_bindings_and_unknown_names_are_refused_up_front() {
        let errors = bind(
            &dag(),
            &[
                binding(serde_json::json!({"name": "source", "configMap": {"name": "cm"}})),
                binding(serde_json::json!({"name": "other", "emptyDir": {}})),
            ],
            &[("nope".into(), PathBuf::from("/tmp/n"))],
            "run.yaml",
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "run.yaml: spec.workspaces[1].name: binds workspace \"other\"; the workflow \
                 declares \"source\", \"cache\"",
                "--workspace \"nope\": the workflow declares \"source\", \"cache\"",
                "run.yaml: workspace \"source\" is bound to a configMap, which only Kubernetes \
                 provides; give ork run a directory for it with --workspace source=DIR",
            ]
        );
        // A directory for it makes the configMap binding fine.
        let bound = bind(
            &dag(),
            &[binding(
                serde_json::json!({"name": "source", "configMap": {"name": "cm"}}),
            )],
            &[("source".into(), PathBuf::from("/tmp/s"))],
            "run.yaml",
        )
        .unwrap();
        assert_eq!(
            bound["source"],
            WorkspaceDir::Given(PathBuf::from("/tmp/s"))
        );
    }
}
