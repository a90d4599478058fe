//! A Schedule manifest checked on this machine: `ork validate` and `ork schedule next`.

use jiff::Timestamp;

use super::decide::{expand_params, problems};
use crate::api::Schedule;
use crate::compile::{bind_params, compile};
use crate::manifest::{Document, workflow_in_namespace};
use crate::text::quoted;

/// What `ork validate` says about a Schedule: its problems (cron, time zone, name, and, when
/// its Workflow is among `documents`, the params that Workflow would refuse), or a note for a
/// valid one.
pub fn validate(
    schedule: &Schedule,
    documents: &[Document],
    now: Timestamp,
) -> Result<String, Vec<String>> {
    let name = schedule.metadata.name.as_deref().unwrap_or_default();
    let mut found = Vec::new();
    let ticks = match problems(name, &schedule.spec) {
        Ok(ticks) => Some(ticks),
        Err(problems) => {
            found.extend(problems.into_iter().map(|p| format!("spec: {p}")));
            None
        }
    };
    let reference = &schedule.spec.workflow_ref.name;
    let mut note = String::new();
    match workflow_in_namespace(
        "Schedule",
        reference,
        schedule.metadata.namespace.as_deref(),
        documents,
    ) {
        Ok(Some((_, workflow))) => {
            // Its own problems are reported with it.
            if let (Ok(dag), Some(ticks)) = (compile(&workflow.spec, "spec"), &ticks) {
                let tick = ticks.next_after(now).unwrap_or(now);
                let params = expand_params(&schedule.spec.params, tick, ticks);
                if let Err(p) = bind_params(&dag, &params, "spec.params") {
                    found.extend(p.iter().map(ToString::to_string));
                }
                let bindings = crate::compile::check_bindings(
                    &dag,
                    &schedule.spec.workspaces,
                    "spec.workspaces",
                );
                found.extend(bindings.iter().map(ToString::to_string));
            }
        }
        Ok(None) => {
            note = format!(
                " (Workflow {} is not among the files; its parameters were not checked)",
                quoted(reference)
            );
        }
        Err(problem) => found.push(problem.to_string()),
    }
    if found.is_empty() {
        Ok(note)
    } else {
        Err(found)
    }
}

/// The next `count` ticks after `after`, each as RFC 3339 with the zone's offset.
pub fn next_ticks(
    schedule: &Schedule,
    after: Timestamp,
    count: usize,
) -> Result<Vec<String>, Vec<String>> {
    let name = schedule.metadata.name.as_deref().unwrap_or_default();
    let ticks = problems(name, &schedule.spec).map_err(|problems| {
        problems
            .into_iter()
            .map(|p| format!("spec: {p}"))
            .collect::<Vec<_>>()
    })?;
    let mut lines = Vec::with_capacity(count);
    let mut at = after;
    for _ in 0..count {
        let Some(next) = ticks.next_after(at) else {
            break;
        };
        lines.push(
            next.to_zoned(ticks.zone().clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string(),
        );
        at = next;
    }
    Ok(lines)
}
