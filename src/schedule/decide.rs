//! What a Schedule's reconcile does, decided from what it observed and the time: the Run a due
//! tick makes, the Runs `Replace` cancels, the finished Runs past the history limits, the status
//! and the Events. Pure, so every policy is table-tested without an API server or a clock.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use super::ticks::Ticks;
use crate::api::schedule::{MAX_ACTIVE_LISTED, MAX_HISTORY_LIMIT};
use crate::api::{
    ActiveRun, ConcurrencyPolicy, Condition, ConditionStatus, RunPhase, ScheduleSpec,
    ScheduleStatus,
};
use crate::text;

/// Default `successfulRunsHistoryLimit`.
pub const DEFAULT_SUCCESSFUL_HISTORY: u32 = 3;
/// Default `failedRunsHistoryLimit`.
pub const DEFAULT_FAILED_HISTORY: u32 = 1;
/// Longest Schedule name: its Runs are named `NAME-MINUTES` (up to 10 digits), and a Run's name
/// is a label value on its Jobs, at most 63 characters.
pub const MAX_SCHEDULE_NAME_LEN: usize = 52;
/// The param text replaced by the tick (RFC 3339, UTC).
pub const SCHEDULED_TIME_REF: &str = "$(ORK_SCHEDULED_TIME)";
/// The param text replaced by the tick's date in the schedule's zone.
pub const SCHEDULED_DATE_REF: &str = "$(ORK_SCHEDULED_DATE)";

/// A Run this schedule made, as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledRun {
    pub name: String,
    /// Its tick, from the `ork.dev/scheduled-time` annotation.
    pub scheduled: Option<Timestamp>,
    pub created: Option<Timestamp>,
    pub phase: Option<RunPhase>,
    pub finished_at: Option<Timestamp>,
    /// `spec.cancel` is already set.
    pub cancelling: bool,
}

impl ScheduledRun {
    fn finished(&self) -> bool {
        self.phase.is_some_and(RunPhase::is_final)
    }

    /// Newest first: by tick, then creation, then name.
    fn age_key(&self) -> (Option<Timestamp>, Option<Timestamp>, &str) {
        (self.scheduled, self.created, &self.name)
    }
}

/// What a reconcile of one Schedule looked at.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub name: &'a str,
    pub spec: &'a ScheduleSpec,
    pub generation: Option<i64>,
    /// When the Schedule was created: no tick before it is due.
    pub created: Timestamp,
    pub status: &'a ScheduleStatus,
    /// The Runs it controls.
    pub runs: Vec<ScheduledRun>,
    pub now: Timestamp,
}

/// A Run to create for a tick.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub name: String,
    pub scheduled: Timestamp,
    pub params: BTreeMap<String, String>,
}

/// An Event to record on the Schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub create: Option<NewRun>,
    /// Runs to cancel (`spec.cancel`), for `Replace`.
    pub cancel: Vec<String>,
    /// Finished Runs past the history limits.
    pub delete: Vec<String>,
    pub status: ScheduleStatus,
    /// Recorded once the rest is done.
    pub notes: Vec<Note>,
    /// When to look again: the next tick.
    pub wake_at: Option<Timestamp>,
}

/// The name of the Run made for `tick`: the schedule's name and the tick in minutes since the
/// epoch, so a controller restarted at any point can never make a tick twice.
pub fn run_name(schedule: &str, tick: Timestamp) -> String {
    format!("{schedule}-{}", tick.as_second().div_euclid(60))
}

/// The Schedule's params with the tick written in.
pub fn expand_params(
    params: &BTreeMap<String, String>,
    tick: Timestamp,
    ticks: &Ticks,
) -> BTreeMap<String, String> {
    let time = tick.to_string();
    let date = tick.to_zoned(ticks.zone().clone()).date().to_string();
    params
        .iter()
        .map(|(name, value)| {
            let value = value
                .replace(SCHEDULED_TIME_REF, &time)
                .replace(SCHEDULED_DATE_REF, &date);
            (name.clone(), value)
        })
        .collect()
}

/// Every problem that keeps the schedule from ticking, in the user's terms.
pub fn problems(name: &str, spec: &ScheduleSpec) -> Result<Ticks, Vec<String>> {
    let mut problems = Vec::new();
    if name.len() > MAX_SCHEDULE_NAME_LEN {
        problems.push(format!(
            "metadata.name is {} characters long, at most {MAX_SCHEDULE_NAME_LEN} are allowed: \
             its Runs are named NAME-MINUTES, and a Run's name can have at most 63",
            name.len()
        ));
    }
    // The CRD refuses these too; checked here for `ork validate` and objects from older CRDs.
    if spec.starting_deadline_seconds == Some(0) {
        problems.push("startingDeadlineSeconds must be at least 1".into());
    }
    for (field, limit) in [
        (
            "successfulRunsHistoryLimit",
            spec.successful_runs_history_limit,
        ),
        ("failedRunsHistoryLimit", spec.failed_runs_history_limit),
    ] {
        if limit.is_some_and(|l| l > MAX_HISTORY_LIMIT) {
            problems.push(format!("{field} must be at most {MAX_HISTORY_LIMIT}"));
        }
    }
    match Ticks::new(&spec.cron, spec.time_zone.as_deref()) {
        Ok(ticks) if problems.is_empty() => return Ok(ticks),
        Ok(_) => {}
        Err(found) => problems.extend(found.iter().map(ToString::to_string)),
    }
    Err(problems)
}

/// Decides one reconcile.
pub fn decide(o: &Observed<'_>) -> Plan {
    let old = o.status;
    let mut notes = Vec::new();
    let (active, finished): (Vec<&ScheduledRun>, Vec<&ScheduledRun>) =
        o.runs.iter().partition(|run| !run.finished());
    let last_successful_time = o
        .runs
        .iter()
        .filter(|run| run.phase == Some(RunPhase::Succeeded))
        .filter_map(|run| run.finished_at)
        .chain(old.last_successful_time)
        .max();
    let delete = past_history(o.spec, &finished);
    let mut status = ScheduleStatus {
        observed_generation: o.generation,
        conditions: Vec::new(),
        last_schedule_time: old.last_schedule_time,
        last_skipped_time: old.last_skipped_time,
        next_schedule_time: None,
        active: Vec::new(),
        last_successful_time,
    };

    let ticks = match problems(o.name, o.spec) {
        Ok(ticks) => ticks,
        Err(problems) => {
            let message = text::cap_message(problems.join("; "));
            let condition = valid(old, ConditionStatus::False, "Invalid", message, o);
            if changed(old, &condition) {
                notes.push(Note {
                    warning: true,
                    reason: "InvalidSchedule",
                    message: condition.message.clone().unwrap_or_default(),
                });
            }
            status.conditions = vec![condition];
            status.active = listed(&active);
            return Plan {
                create: None,
                cancel: Vec::new(),
                delete,
                status,
                notes,
                wake_at: None,
            };
        }
    };
    let zone = o.spec.time_zone.as_deref().unwrap_or("UTC");
    status.conditions = vec![valid(
        old,
        ConditionStatus::True,
        "Valid",
        format!("cron {} in {zone}", text::quoted(&o.spec.cron)),
        o,
    )];

    let since = [
        old.last_schedule_time,
        old.last_skipped_time,
        Some(o.created),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(o.created);
    let due = (!o.spec.suspend)
        .then(|| ticks.latest_at_or_before(o.now))
        .flatten()
        .filter(|tick| *tick > since);
    let mut create = None;
    let mut cancel = Vec::new();
    let mut still_active = active.clone();
    if let Some(tick) = due {
        let name = run_name(o.name, tick);
        let late = o.now.duration_since(tick);
        let deadline = o
            .spec
            .starting_deadline_seconds
            .map(|s| SignedDuration::from_secs(i64::try_from(s).unwrap_or(i64::MAX)));
        let policy = o.spec.concurrency_policy.unwrap_or_default();
        if o.runs.iter().any(|run| run.name == name) {
            // Made before a restart that came ahead of the status write.
            status.last_schedule_time = Some(tick);
        } else if let Some(deadline) = deadline.filter(|d| late > *d) {
            status.last_skipped_time = Some(tick);
            notes.push(Note {
                warning: true,
                reason: "TickSkipped",
                message: format!(
                    "the tick at {tick} was noticed {}s late, past startingDeadlineSeconds ({}s); \
                     no Run made for it",
                    late.as_secs(),
                    deadline.as_secs()
                ),
            });
        } else if policy == ConcurrencyPolicy::Forbid && !active.is_empty() {
            status.last_skipped_time = Some(tick);
            notes.push(Note {
                warning: false,
                reason: "TickSkipped",
                message: format!(
                    "the tick at {tick} was skipped: Run {} has not finished \
                     (concurrencyPolicy Forbid)",
                    text::names(active.iter().map(|run| run.name.as_str()))
                ),
            });
        } else {
            if policy == ConcurrencyPolicy::Replace {
                for run in &active {
                    if !run.cancelling {
                        cancel.push(run.name.clone());
                        notes.push(Note {
                            warning: false,
                            reason: "RunReplaced",
                            message: format!(
                                "cancelled Run {} for the tick at {tick} (concurrencyPolicy \
                                 Replace)",
                                text::quoted(&run.name)
                            ),
                        });
                    }
                }
            }
            notes.push(Note {
                warning: false,
                reason: "RunCreated",
                message: format!("created Run {} for the tick at {tick}", text::quoted(&name)),
            });
            create = Some(NewRun {
                params: expand_params(&o.spec.params, tick, &ticks),
                name,
                scheduled: tick,
            });
            status.last_schedule_time = Some(tick);
        }
    }
    if let Some(new) = &create {
        still_active.retain(|run| !cancel.contains(&run.name));
        status.active = listed(&still_active);
        // Listed at once: a Run made is active until it is seen finished.
        if status.active.len() < MAX_ACTIVE_LISTED {
            status.active.push(ActiveRun {
                name: new.name.clone(),
            });
        }
    } else {
        status.active = listed(&still_active);
    }
    if !o.spec.suspend {
        status.next_schedule_time = ticks.next_after(o.now);
    }
    Plan {
        create,
        cancel,
        delete,
        wake_at: status.next_schedule_time,
        status,
        notes,
    }
}

/// Finished Runs beyond the history limits, oldest first.
fn past_history(spec: &ScheduleSpec, finished: &[&ScheduledRun]) -> Vec<String> {
    let mut succeeded: Vec<&ScheduledRun> = finished
        .iter()
        .copied()
        .filter(|run| run.phase == Some(RunPhase::Succeeded))
        .collect();
    let mut failed: Vec<&ScheduledRun> = finished
        .iter()
        .copied()
        .filter(|run| run.phase != Some(RunPhase::Succeeded))
        .collect();
    let mut delete = Vec::new();
    for (runs, limit) in [
        (
            &mut succeeded,
            spec.successful_runs_history_limit
                .unwrap_or(DEFAULT_SUCCESSFUL_HISTORY),
        ),
        (
            &mut failed,
            spec.failed_runs_history_limit
                .unwrap_or(DEFAULT_FAILED_HISTORY),
        ),
    ] {
        runs.sort_by(|a, b| b.age_key().cmp(&a.age_key()));
        delete.extend(
            runs.iter()
                .skip(limit as usize)
                .rev()
                .map(|run| run.name.clone()),
        );
    }
    delete
}

/// Unfinished Runs, oldest tick first, at most [`MAX_ACTIVE_LISTED`].
fn listed(active: &[&ScheduledRun]) -> Vec<ActiveRun> {
    let mut sorted = active.to_vec();
    sorted.sort_by(|a, b| a.age_key().cmp(&b.age_key()));
    sorted
        .into_iter()
        .take(MAX_ACTIVE_LISTED)
        .map(|run| ActiveRun {
            name: run.name.clone(),
        })
        .collect()
}

/// The `Valid` condition, keeping its transition time while it says the same.
fn valid(
    old: &ScheduleStatus,
    status: ConditionStatus,
    reason: &str,
    message: String,
    o: &Observed<'_>,
) -> Condition {
    let previous = old.conditions.iter().find(|c| c.type_ == "Valid");
    let same =
        previous.is_some_and(|c| c.status == status && c.message.as_deref() == Some(&message));
    Condition {
        type_: "Valid".into(),
        status,
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: match previous {
            Some(p) if same => p.last_transition_time,
            _ => Some(o.now),
        },
        observed_generation: o.generation,
    }
}

/// Whether `condition` says something the old status did not.
fn changed(old: &ScheduleStatus, condition: &Condition) -> bool {
    !old.conditions.iter().any(|c| {
        c.type_ == condition.type_ && c.status == condition.status && c.message == condition.message
    })
}
