//! `ork list`, `ork cancel|suspend|resume|rerun|delete RUN`: a user's commands on the Runs of a
//! cluster, made with the user's own credentials. Each waits for the controller's answer where
//! that is what a user expects (a cancelled run ended, a suspended one saying so, a deleted one
//! gone), and an API error is said in the user's terms: no such run, or which verb on which
//! resource RBAC refused.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::api::{ConditionStatus, Run, RunPhase, RunSpec, WorkflowRef};
use crate::text::quoted;

/// How often a waiting command looks again.
const POLL: Duration = Duration::from_millis(250);

/// A command on one Run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunCommand {
    Cancel,
    Suspend,
    Resume,
    Rerun,
    Delete,
}

/// What went wrong, said in the user's terms.
#[derive(Debug)]
pub struct CommandError(pub String);

pub(crate) fn explain(error: kube::Error, verb: &str, name: &str, namespace: &str) -> CommandError {
    CommandError(match &error {
        kube::Error::Api(status) if status.code == 404 => {
            format!("no Run {} in namespace {}", quoted(name), quoted(namespace))
        }
        kube::Error::Api(status) if status.code == 403 => format!(
            "forbidden: your RBAC role does not let you {verb} runs.ork.dev in namespace {} \
             (ask for the {verb} verb on runs.ork.dev)",
            quoted(namespace)
        ),
        kube::Error::Api(status) => format!(
            "the API server refused to {verb} Run {}: {} ({})",
            quoted(name),
            status.message,
            status.code
        ),
        other => format!("cannot reach the cluster: {other}"),
    })
}

/// Carries out `command` on Run `name` and waits up to `wait` for the controller's answer.
/// Returns what to tell the user.
pub async fn run_command(
    client: &Client,
    namespace: &str,
    name: &str,
    command: RunCommand,
    wait: Duration,
) -> Result<String, CommandError> {
    let runs: Api<Run> = Api::namespaced(client.clone(), namespace);
    let shown = quoted(name);
    let patch = |spec: serde_json::Value| {
        let runs = runs.clone();
        async move {
            runs.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .map_err(|e| explain(e, "patch", name, namespace))
        }
    };
    match command {
        RunCommand::Cancel => {
            patch(json!({"cancel": true})).await?;
            let run = until(&runs, name, namespace, wait, |run| {
                phase(run).is_some_and(RunPhase::is_final)
            })
            .await?;
            Ok(match run.as_ref().and_then(phase) {
                Some(RunPhase::Cancelled) => format!("Run {shown} cancelled"),
                Some(p) => format!("Run {shown} had already ended: {p:?}"),
                None => format!(
                    "Run {shown}: cancel requested; the controller has not ended it within {}s \
                     (its finally tasks may still run)",
                    wait.as_secs()
                ),
            })
        }
        RunCommand::Suspend | RunCommand::Resume => {
            let on = command == RunCommand::Suspend;
            patch(json!({"suspend": on})).await?;
            let want = if on {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            };
            let run = until(&runs, name, namespace, wait, |run| {
                phase(run).is_some_and(RunPhase::is_final) || suspended(run) == Some(want)
            })
            .await?;
            let what = if on { "suspended" } else { "resumed" };
            Ok(match run {
                Some(run) if phase(&run).is_some_and(RunPhase::is_final) => {
                    format!(
                        "Run {shown} has ended ({:?}): nothing to {}",
                        phase(&run).unwrap_or(RunPhase::Pending),
                        if on { "suspend" } else { "resume" }
                    )
                }
                Some(_) => format!("Run {shown} {what}"),
                None => format!(
                    "Run {shown}: {} requested; the controller has not answered within {}s",
                    if on { "suspend" } else { "resume" },
                    wait.as_secs()
                ),
            })
        }
        RunCommand::Delete => {
            runs.delete(name, &DeleteParams::background())
                .await
                .map_err(|e| explain(e, "delete", name, namespace))?;
            let deadline = Instant::now() + wait;
            loop {
                match runs.get_opt(name).await {
                    Ok(None) => return Ok(format!("Run {shown} deleted")),
                    Ok(Some(_)) if Instant::now() >= deadline => {
                        return Ok(format!(
                            "Run {shown}: deletion requested; still there after {}s",
                            wait.as_secs()
                        ));
                    }
                    Ok(Some(_)) => tokio::time::sleep(POLL).await,
                    Err(e) => return Err(explain(e, "get", name, namespace)),
                }
            }
        }
        RunCommand::Rerun => {
            let made = rerun(client, namespace, name).await?;
            Ok(format!("Run {} created, rerunning {shown}", quoted(&made)))
        }
    }
}

/// Creates a Run that reruns finished Run `name` (`rerunOf`), named after its workflow; returns
/// the new Run's name.
pub async fn rerun(client: &Client, namespace: &str, name: &str) -> Result<String, CommandError> {
    let runs: Api<Run> = Api::namespaced(client.clone(), namespace);
    let source = runs
        .get(name)
        .await
        .map_err(|e| explain(e, "get", name, namespace))?;
    let workflow = source
        .spec
        .workflow_ref
        .as_ref()
        .map(|w| w.name.clone())
        .or_else(|| source.status.as_ref()?.workflow.as_ref()?.name.clone())
        .unwrap_or_else(|| name.to_string());
    let mut prefix: String = workflow.chars().take(50).collect();
    prefix.push('-');
    let rerun = Run {
        metadata: kube::api::ObjectMeta {
            generate_name: Some(prefix),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        },
        spec: RunSpec {
            rerun_of: Some(WorkflowRef {
                name: name.to_string(),
            }),
            workspaces: source.spec.workspaces.clone(),
            ..RunSpec::default()
        },
        status: None,
    };
    let made = runs
        .create(&PostParams::default(), &rerun)
        .await
        .map_err(|e| explain(e, "create", name, namespace))?;
    Ok(made.metadata.name.unwrap_or_default())
}

/// Waits up to `wait` for `done` to hold of Run `name`; `None` when it did not in time.
async fn until(
    runs: &Api<Run>,
    name: &str,
    namespace: &str,
    wait: Duration,
    done: impl Fn(&Run) -> bool,
) -> Result<Option<Run>, CommandError> {
    let deadline = Instant::now() + wait;
    loop {
        let run = runs
            .get(name)
            .await
            .map_err(|e| explain(e, "get", name, namespace))?;
        if done(&run) {
            return Ok(Some(run));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn phase(run: &Run) -> Option<RunPhase> {
    run.status.as_ref()?.phase
}

fn suspended(run: &Run) -> Option<ConditionStatus> {
    let status = run.status.as_ref()?;
    Some(
        status
            .conditions
            .iter()
            .find(|c| c.type_ == "Suspended")?
            .status,
    )
}

/// The Workflow a run is of, as `ork list` and the dashboard show it: its reference, the name
/// it was pinned with, or (for a definition `ork submit` sent inline) its label.
pub fn workflow_of(run: &Run) -> String {
    run.spec
        .workflow_ref
        .as_ref()
        .map(|w| w.name.clone())
        .or_else(|| run.status.as_ref()?.workflow.as_ref()?.name.clone())
        .or_else(|| run.labels().get(super::names::LABEL_WORKFLOW).cloned())
        .unwrap_or_else(|| "(inline)".into())
}

/// `ork list`: the namespace's Runs, oldest first, as a table (name, workflow, phase, progress,
/// age), filtered by workflow and phase.
pub async fn list(
    client: &Client,
    namespace: &str,
    workflow: Option<&str>,
    wanted: Option<RunPhase>,
    now: Timestamp,
) -> Result<String, CommandError> {
    let runs: Api<Run> = Api::namespaced(client.clone(), namespace);
    let listed = runs
        .list(&ListParams::default())
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) if status.code == 403 => CommandError(format!(
                "forbidden: your RBAC role does not let you list runs.ork.dev in namespace {}",
                quoted(namespace)
            )),
            kube::Error::Api(status) if status.code == 404 => CommandError(
                "the cluster has no runs.ork.dev resource: install ork's CRDs (ork crds | \
                 kubectl apply --server-side -f -)"
                    .into(),
            ),
            other => explain(other, "list", "", namespace),
        })?;
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut items = listed.items;
    items.sort_by_key(|r| r.metadata.creation_timestamp.as_ref().map(|t| t.0));
    for run in &items {
        let of = workflow_of(run);
        if workflow.is_some_and(|w| w != of) {
            continue;
        }
        let phase = phase(run).unwrap_or(RunPhase::Pending);
        if wanted.is_some_and(|w| w != phase) {
            continue;
        }
        let progress = run
            .status
            .as_ref()
            .and_then(|s| s.progress.clone())
            .unwrap_or_default();
        let age = run
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| age_text(now.duration_since(t.0).as_secs()))
            .unwrap_or_default();
        rows.push([
            run.metadata.name.clone().unwrap_or_default(),
            of,
            format!("{phase:?}"),
            progress,
            age,
        ]);
    }
    if rows.is_empty() {
        return Ok(format!("No runs in namespace {}", quoted(namespace)));
    }
    let header = ["NAME", "WORKFLOW", "PHASE", "PROGRESS", "AGE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String; 5]| {
        row.iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(&header)];
    out.extend(rows.iter().map(line));
    Ok(out.join("\n"))
}

/// `45s`, `12m`, `3h`, `2d`, as kubectl shows ages.
fn age_text(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectls() {
        assert_eq!(age_text(5), "5s");
        assert_eq!(age_text(600), "10m");
        assert_eq!(age_text(3 * 3600), "3h");
        assert_eq!(age_text(3 * 86_400), "3d");
        assert_eq!(age_text(-4), "0s");
    }
}
