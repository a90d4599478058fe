//! Workspaces in a workflow: the declared ones, and each task's mounts of them, checked so that
//! every mount names a declared workspace at a path of its own.

use std::collections::{HashMap, HashSet};

use super::Owner;
use super::dag::TaskWorkspace;
use super::names::dns_label_error;
use crate::api::{TaskSpec, WorkspaceBinding, WorkspaceDecl, default_mount_path};
use crate::problem::Problems;
use crate::text::{names, quoted};

/// The declared workspaces, by name (a badly named or repeated one is reported and left out).
pub(super) fn declared<'a>(
    decls: &'a [WorkspaceDecl],
    base: &str,
    problems: &mut Problems,
) -> HashMap<&'a str, &'a WorkspaceDecl> {
    let mut by_name = HashMap::with_capacity(decls.len());
    for (i, decl) in decls.iter().enumerate() {
        let at = format!("{base}.workspaces[{i}].name");
        if let Some(why) = dns_label_error(&decl.name) {
            problems.push(at, format!("workspace name {why}"));
        } else if by_name.insert(decl.name.as_str(), decl).is_some() {
            problems.push(
                at,
                format!("workspace {} is declared twice", quoted(&decl.name)),
            );
        }
    }
    by_name
}

/// The workspaces task `task` (at `at`) mounts, each a declared one, mounted once, at an
/// absolute path no other mount of the task uses.
pub(super) fn task_mounts(
    task: &TaskSpec,
    declared: &HashMap<&str, &WorkspaceDecl>,
    at: &str,
    who: Owner,
    problems: &mut Problems,
) -> Vec<TaskWorkspace> {
    let volumes: HashSet<&str> = task.volumes.iter().map(|v| v.name.as_str()).collect();
    let mut paths: HashSet<String> = task
        .volume_mounts
        .iter()
        .map(|m| m.mount_path.trim_end_matches('/').to_string())
        .collect();
    let mut seen = HashSet::new();
    let mut mounts = Vec::with_capacity(task.workspaces.len());
    for (j, mount) in task.workspaces.iter().enumerate() {
        let field = format!("{at}.workspaces[{j}]");
        let name = mount.name.as_str();
        if !declared.contains_key(name) {
            problems.push(
                format!("{field}.name"),
                format!(
                    "{who} mounts workspace {}, which the workflow does not declare (in \
                     spec.workspaces)",
                    quoted(name)
                ),
            );
            continue;
        }
        if !seen.insert(name) {
            problems.push(
                format!("{field}.name"),
                format!("{who} mounts workspace {} twice", quoted(name)),
            );
            continue;
        }
        if volumes.contains(name) {
            problems.push(
                format!("{field}.name"),
                format!(
                    "{who} has a volume named {} too: a workspace is mounted as the volume of its \
                     name",
                    quoted(name)
                ),
            );
        }
        let path = mount
            .mount_path
            .clone()
            .unwrap_or_else(|| default_mount_path(name));
        super::pod::check_mount_path(
            &path,
            &mut paths,
            &format!("{field}.mountPath"),
            "two volumes or workspaces are",
            who,
            problems,
        );
        mounts.push(TaskWorkspace {
            name: name.to_string(),
            mount_path: path,
            read_only: mount.read_only,
        });
    }
    mounts
}

/// A Run's `workspaces` (at `field`, e.g. `spec.workspaces`) against the workflow's: each
/// binding names a declared workspace, once, with exactly one source. Both drivers check this.
pub fn check_bindings(dag: &super::Dag, bindings: &[WorkspaceBinding], field: &str) -> Problems {
    let mut problems = Problems::default();
    let declared: HashSet<&str> = dag.workspaces().iter().map(|w| w.name.as_str()).collect();
    let mut seen = HashSet::new();
    for (i, binding) in bindings.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let name = binding.name.as_str();
        if !declared.contains(name) {
            let declares = if declared.is_empty() {
                "the workflow declares no workspaces".to_string()
            } else {
                format!(
                    "the workflow declares {}",
                    names(dag.workspaces().iter().map(|w| w.name.as_str()))
                )
            };
            problems.push(
                format!("{at}.name"),
                format!("binds workspace {}; {declares}", quoted(name)),
            );
        } else if !seen.insert(name) {
            problems.push(
                format!("{at}.name"),
                format!("workspace {} is bound twice", quoted(name)),
            );
        }
        let sources = binding.sources();
        if sources.len() != 1 {
            problems.push(
                at,
                format!(
                    "workspace {} needs exactly one of volumeClaimTemplate, \
                     persistentVolumeClaim, emptyDir, configMap or secret, found {}",
                    quoted(name),
                    if sources.is_empty() {
                        "none".to_string()
                    } else {
                        sources.join(", ")
                    }
                ),
            );
        }
    }
    problems
}

/// On Kubernetes, a workspace that is not optional must be bound by the Run when a task mounts
/// it: the first such workspace and task, or `None`.
pub fn unbound_required(
    dag: &super::Dag,
    bindings: &[WorkspaceBinding],
) -> Option<(String, String)> {
    let bound: HashSet<&str> = bindings.iter().map(|b| b.name.as_str()).collect();
    let optional: HashSet<&str> = dag
        .workspaces()
        .iter()
        .filter(|w| w.optional)
        .map(|w| w.name.as_str())
        .collect();
    dag.tasks().find_map(|(_, task)| {
        task.workspaces
            .iter()
            .find(|m| !bound.contains(m.name.as_str()) && !optional.contains(m.name.as_str()))
            .map(|m| (m.name.clone(), task.name.clone()))
    })
}

/// Most tasks of one workspace looked at for [`shared_read_write_once`].
const MAX_SHARING_TASKS: usize = 64;
/// Most tasks whose descendants [`shared_read_write_once`] walks, all workspaces together: the
/// check costs at most this many walks of the graph, whatever the workflow.
const MAX_WALKS: usize = 256;

/// Warnings for workspaces bound to a `ReadWriteOnce` claim made for the run that tasks may
/// mount at the same time (two tasks neither of which is upstream of the other, or the
/// instances of a fan-out): on a cluster of several nodes, a Pod on another node than the one
/// holding the volume waits until it is let go. One warning per workspace.
pub fn shared_read_write_once(dag: &super::Dag, bindings: &[WorkspaceBinding]) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut walked: HashMap<super::TaskId, HashSet<super::TaskId>> = HashMap::new();
    for binding in bindings {
        let Some(template) = &binding.volume_claim_template else {
            continue;
        };
        let modes = template.spec.access_modes.clone().unwrap_or_default();
        let read_write_once = modes.iter().any(|m| m == "ReadWriteOnce")
            && !modes.iter().any(|m| m == "ReadWriteMany");
        if !read_write_once {
            continue;
        }
        let users: Vec<super::TaskId> = dag
            .tasks()
            .filter(|(_, t)| t.workspaces.iter().any(|m| m.name == binding.name))
            .map(|(id, _)| id)
            .take(MAX_SHARING_TASKS)
            .collect();
        let name = quoted(&binding.name);
        if let Some(fan) = users.iter().find(|id| {
            dag.task(**id)
                .for_each
                .as_ref()
                .is_some_and(|f| f.parallelism != Some(1))
        }) {
            warnings.push(format!(
                "workspace {name} is a ReadWriteOnce claim and the instances of task {} may \
                 mount it at the same time: on a cluster of several nodes, one on another node \
                 waits until the volume is let go (use ReadWriteMany storage, keep the tasks on \
                 one node with defaults.pod, or set forEach.parallelism to 1)",
                quoted(&dag.task(*fan).name)
            ));
            continue;
        }
        if let Some((a, b)) = unordered_pair(dag, &users, &mut walked) {
            warnings.push(format!(
                "workspace {name} is a ReadWriteOnce claim that tasks {} and {} may mount at the \
                 same time: on a cluster of several nodes, one on another node waits until the \
                 volume is let go (use ReadWriteMany storage, or keep the tasks on one node with \
                 defaults.pod)",
                quoted(&dag.task(a).name),
                quoted(&dag.task(b).name)
            ));
        }
    }
    warnings
}

/// Two of `tasks` neither of which is upstream of the other, if any. Finally tasks run after
/// every regular task, so a finally task and a regular one are ordered. `walked` keeps each
/// task's descendants between calls; past [`MAX_WALKS`] of them no more pairs are looked at.
fn unordered_pair(
    dag: &super::Dag,
    tasks: &[super::TaskId],
    walked: &mut HashMap<super::TaskId, HashSet<super::TaskId>>,
) -> Option<(super::TaskId, super::TaskId)> {
    for &t in tasks {
        if !walked.contains_key(&t) {
            if walked.len() >= MAX_WALKS {
                return None;
            }
            walked.insert(t, descendants(dag, t));
        }
    }
    for (i, &a) in tasks.iter().enumerate() {
        for &b in &tasks[i + 1..] {
            let ordered = dag.is_finally(a) != dag.is_finally(b)
                || walked[&a].contains(&b)
                || walked[&b].contains(&a);
            if !ordered {
                return Some((a, b));
            }
        }
    }
    None
}

fn descendants(dag: &super::Dag, from: super::TaskId) -> HashSet<super::TaskId> {
    let mut seen = HashSet::new();
    let mut stack = vec![from];
    while let Some(id) = stack.pop() {
        for &child in dag.children(id) {
            if seen.insert(child) {
                stack.push(child);
            }
        }
    }
    seen
}
