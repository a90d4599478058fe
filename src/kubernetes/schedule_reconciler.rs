//! Reconciling a Schedule: observe its Runs (from the Run cache), decide with
//! [`crate::schedule::decide`], then make the tick's Run, cancel what `Replace` replaces, delete
//! Runs past the history limits, write the status and record the Events.
//!
//! A tick's Run has a name derived from the tick, so a controller restarted between making it
//! and recording it finds it instead of making another: the API server refuses a second create.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::warn;

use super::context::Context;
use super::error::Error;
use super::invalid;
use super::names::{ANNOTATION_SCHEDULED_TIME, LABEL_SCHEDULE};
use crate::api::{Run, RunSpec, Schedule, ScheduleStatus, WorkflowRef};
use crate::driver::{Clock, SystemClock};
use crate::schedule::{Note, Observed, ScheduledRun, decide};
use crate::text;

/// Longest wait between two looks at a schedule: a far tick is re-checked now and then, so a
/// clock that jumped is noticed.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// The time as the schedule controller reads it. Real by default; the tests run it faster
/// (see [`ScheduleClock::scaled`]) so that a `* * * * *` schedule ticks every few seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScheduleClock {
    scaled: Option<Scaled>,
}

#[derive(Clone, Copy, Debug)]
struct Scaled {
    real_origin: Timestamp,
    shown_origin: Timestamp,
    rate: i32,
}

impl ScheduleClock {
    /// For tests only: at the real instant `real_origin` the clock shows `shown_origin` (which
    /// must not be earlier), and from then on it runs `rate` times faster than the real one.
    /// Every replica and restart given the same values agrees on the time.
    pub fn scaled(real_origin: Timestamp, shown_origin: Timestamp, rate: u32) -> Self {
        Self {
            scaled: Some(Scaled {
                real_origin,
                shown_origin: shown_origin.max(real_origin),
                rate: i32::try_from(rate.max(1)).unwrap_or(i32::MAX),
            }),
        }
    }

    fn now(&self) -> Timestamp {
        let real = SystemClock.now();
        let Some(scaled) = self.scaled else {
            return real;
        };
        let elapsed = real.duration_since(scaled.real_origin);
        elapsed
            .checked_mul(scaled.rate)
            .and_then(|ahead| scaled.shown_origin.checked_add(ahead).ok())
            .unwrap_or(real)
    }

    /// Real time to wait until the schedule's clock shows `at`.
    fn wait_until(&self, at: Timestamp, now: Timestamp) -> Duration {
        let ahead = at.duration_since(now);
        let rate = self.scaled.map_or(1, |s| s.rate);
        let real = ahead.checked_div(rate).unwrap_or(ahead);
        Duration::try_from(real)
            .unwrap_or(Duration::ZERO)
            .clamp(Duration::from_millis(10), MAX_WAIT)
    }
}

/// What the schedule reconciler needs beyond the shared context.
pub struct ScheduleContext {
    pub ctx: Arc<Context>,
    /// The Run cache the Run controller keeps: a schedule's Runs are read from it.
    pub runs: Store<DeserializeGuard<Run>>,
    pub clock: ScheduleClock,
}

pub async fn reconcile(
    guard: Arc<DeserializeGuard<Schedule>>,
    sctx: Arc<ScheduleContext>,
) -> Result<Action, Error> {
    let ctx = &sctx.ctx;
    let schedule = match &guard.0 {
        Ok(schedule) => schedule,
        Err(bad) => return invalid::report_schedule(bad, ctx).await,
    };
    let name = schedule.name_any();
    let namespace = schedule.namespace().ok_or_else(|| Error::NoNamespace {
        kind: "Schedule",
        name: name.clone(),
    })?;
    if schedule.metadata.deletion_timestamp.is_some() {
        // Its Runs go with it (owner references).
        return Ok(Action::await_change());
    }
    let uid = schedule.metadata.uid.clone().unwrap_or_default();
    let now = sctx.clock.now();
    let old = schedule.status.clone().unwrap_or_default();
    let observed = Observed {
        name: &name,
        spec: &schedule.spec,
        generation: schedule.metadata.generation,
        created: schedule
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(now, |t| t.0),
        status: &old,
        runs: runs_of(&sctx.runs, &namespace, &uid),
        now,
    };
    let mut plan = decide(&observed);

    let runs: Api<Run> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Some(new) = plan.create.take()
        && let Err(refused) = create_run(&runs, schedule, &new).await?
    {
        // A refusal that retrying will not change: the tick is skipped, and says why.
        plan.status.last_schedule_time = old.last_schedule_time;
        plan.status.last_skipped_time = Some(new.scheduled);
        plan.status.active.retain(|a| a.name != new.name);
        plan.notes.retain(|n| n.reason != "RunCreated");
        plan.notes.push(Note {
            warning: true,
            reason: "TickSkipped",
            message: format!(
                "the tick at {}: Run {} cannot be made: {refused}",
                new.scheduled,
                text::quoted(&new.name)
            ),
        });
    }
    let mut refused = Vec::new();
    for run in &plan.cancel {
        let patch = json!({"spec": {"cancel": true}});
        let done = runs
            .patch(run, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        if let Some(why) = settled(done.map(|_| ()))? {
            refused.push(format!(
                "cannot cancel Run {} it replaces: {why}",
                text::quoted(run)
            ));
        }
    }
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    for run in &plan.delete {
        let done = runs.delete(run, &params).await;
        if let Some(why) = settled(done.map(|_| ()))? {
            refused.push(format!(
                "cannot delete Run {} past the history limit: {why}",
                text::quoted(run)
            ));
        }
    }
    plan.notes.extend(refused.into_iter().map(|message| Note {
        warning: true,
        reason: "RunNotChanged",
        message,
    }));
    if Some(&plan.status) != schedule.status.as_ref() {
        let api: Api<Schedule> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({"status": status_patch(&plan.status)?});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    for note in &plan.notes {
        publish(ctx, schedule, note).await;
    }
    Ok(match plan.wake_at {
        Some(at) => Action::requeue(sctx.clock.wait_until(at, now)),
        None => Action::await_change(),
    })
}

/// `Ok(Ok(()))` made (or made already, by this schedule); `Ok(Err(why))` refused for good;
/// `Err` to retry.
async fn create_run(
    runs: &Api<Run>,
    schedule: &Schedule,
    new: &crate::schedule::NewRun,
) -> Result<Result<(), String>, Error> {
    let owner = schedule.controller_owner_ref(&());
    let run = Run {
        metadata: ObjectMeta {
            name: Some(new.name.clone()),
            namespace: schedule.namespace(),
            labels: Some(BTreeMap::from([(
                LABEL_SCHEDULE.to_string(),
                schedule.name_any(),
            )])),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_SCHEDULED_TIME.to_string(),
                new.scheduled.to_string(),
            )])),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: RunSpec {
            workflow_ref: Some(WorkflowRef {
                name: schedule.spec.workflow_ref.name.clone(),
            }),
            params: new.params.clone(),
            workspaces: schedule.spec.workspaces.clone(),
            ..RunSpec::default()
        },
        status: None,
    };
    match runs.create(&PostParams::default(), &run).await {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // Made before (a restart), or someone else's Run holds the name.
            let existing = runs.get(&new.name).await?;
            let ours = existing
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| {
                    o.controller == Some(true) && Some(&o.uid) == schedule.metadata.uid.as_ref()
                });
            Ok(if ours {
                Ok(())
            } else {
                Err("a Run of that name exists and is not this schedule's".into())
            })
        }
        Err(kube::Error::Api(status))
            if (400..500).contains(&status.code) && status.code != 429 =>
        {
            Ok(Err(format!(
                "{} ({} {})",
                status.message, status.code, status.reason
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// A write's outcome: done (or the Run already gone) is `None`; a refusal that retrying will
/// not change is `Some(why)`; anything else is an error, retried with back-off.
fn settled(result: Result<(), kube::Error>) -> Result<Option<String>, Error> {
    match result {
        Ok(()) => Ok(None),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(kube::Error::Api(status))
            if (400..500).contains(&status.code) && !matches!(status.code, 409 | 429) =>
        {
            Ok(Some(format!(
                "{} ({} {})",
                status.message, status.code, status.reason
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// The Runs `uid` controls in `namespace`, as the Run cache holds them.
fn runs_of(store: &Store<DeserializeGuard<Run>>, namespace: &str, uid: &str) -> Vec<ScheduledRun> {
    store
        .state()
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter(|run| {
            run.metadata.namespace.as_deref() == Some(namespace)
                && run
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .map(|run| ScheduledRun {
            name: run.name_any(),
            scheduled: scheduled_time(&run.metadata),
            created: run.metadata.creation_timestamp.as_ref().map(|t| t.0),
            phase: run.status.as_ref().and_then(|s| s.phase),
            finished_at: run.status.as_ref().and_then(|s| s.finished_at),
            cancelling: run.spec.cancel,
        })
        .collect()
}

/// The tick a Run was made for, from its annotation (absent or unreadable: none).
pub fn scheduled_time(meta: &ObjectMeta) -> Option<Timestamp> {
    meta.annotations
        .as_ref()?
        .get(ANNOTATION_SCHEDULED_TIME)?
        .parse()
        .ok()
}

/// The status as a merge patch: a field now empty is removed, not left as it was.
fn status_patch(status: &ScheduleStatus) -> Result<Value, Error> {
    let mut value = serde_json::to_value(status).map_err(|source| Error::Encode {
        what: "a schedule's status",
        source,
    })?;
    if let Value::Object(fields) = &mut value {
        for key in [
            "lastScheduleTime",
            "lastSkippedTime",
            "nextScheduleTime",
            "active",
            "lastSuccessfulTime",
        ] {
            fields.entry(key).or_insert(Value::Null);
        }
    }
    Ok(value)
}

/// Best effort: a lost Event must not fail the reconcile.
async fn publish(ctx: &Context, schedule: &Schedule, note: &Note) {
    let event = KubeEvent {
        type_: if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: note.reason.into(),
        note: Some(text::cap_message(note.message.clone())),
        action: "Schedule".into(),
        secondary: None,
    };
    if let Err(e) = ctx
        .recorder
        .publish(&event, &schedule.object_ref(&()))
        .await
    {
        warn!(schedule = %schedule.name_any(), error = %e, "cannot publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    #[test]
    fn a_scaled_clock_runs_faster_from_its_origin_and_waits_scaled() {
        let origin = SystemClock.now() - SignedDuration::from_secs(10);
        let clock = ScheduleClock::scaled(origin, origin, 60);
        let now = clock.now();
        let ahead = now.duration_since(origin).as_secs();
        assert!((600..=660).contains(&ahead), "{ahead}");
        let wait = clock.wait_until(now + SignedDuration::from_secs(60), now);
        assert_eq!(wait, Duration::from_secs(1));
        let real = ScheduleClock::default();
        let wait = real.wait_until(real.now() + SignedDuration::from_secs(3600), real.now());
        assert_eq!(wait, MAX_WAIT);
        // Shown ahead: a year ahead of the real time, at the same rate.
        let shown = origin + SignedDuration::from_hours(24 * 365);
        let ahead = ScheduleClock::scaled(origin, shown, 60)
            .now()
            .duration_since(shown);
        assert!((600..=660).contains(&ahead.as_secs()), "{ahead:?}");
    }

    #[test]
    fn an_emptied_status_field_is_removed_by_the_patch() {
        let patch = status_patch(&ScheduleStatus::default()).unwrap();
        assert_eq!(patch["active"], Value::Null);
        assert!(patch.as_object().unwrap().contains_key("lastScheduleTime"));
    }
}
