//! `Schedule`: starts a Run of a Workflow at every tick of a cron expression.

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::run::{Condition, WorkflowRef};

/// Longest `cron` accepted: five fields with long lists fit easily.
pub const MAX_CRON_LEN: usize = 1024;
/// Longest `timeZone` accepted (IANA names are well under this).
pub const MAX_TIME_ZONE_LEN: usize = 128;
/// Most Runs of one schedule a history limit may keep.
pub const MAX_HISTORY_LIMIT: u32 = 1000;
/// Most names `status.active` lists.
pub const MAX_ACTIVE_LISTED: usize = 50;

/// Starts a Run of a Workflow at each tick of a cron expression.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ork.dev",
    version = "v1alpha1",
    kind = "Schedule",
    namespaced,
    status = "ScheduleStatus",
    shortname = "orksched",
    category = "ork",
    doc = "Starts a Run of a Workflow at each tick of a cron expression.",
    printcolumn = r#"{"name": "Cron", "type": "string", "jsonPath": ".spec.cron"}"#,
    printcolumn = r#"{"name": "Zone", "type": "string", "jsonPath": ".spec.timeZone"}"#,
    printcolumn = r#"{"name": "Suspended", "type": "boolean", "jsonPath": ".spec.suspend"}"#,
    printcolumn = r#"{"name": "Last", "type": "date", "jsonPath": ".status.lastScheduleTime"}"#,
    printcolumn = r#"{"name": "Next", "type": "string", "jsonPath": ".status.nextScheduleTime"}"#,
    printcolumn = r#"{"name": "Valid", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Valid\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// The Workflow each Run runs, in the schedule's namespace.
    pub workflow_ref: WorkflowRef,
    /// The Runs' parameter values by name. A value may use `$(ORK_SCHEDULED_TIME)` (the tick,
    /// RFC 3339 in UTC) and `$(ORK_SCHEDULED_DATE)` (its date in `timeZone`, YYYY-MM-DD),
    /// expanded when the Run is made.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// The Runs' workspace bindings (a `volumeClaimTemplate` makes a claim for each Run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<super::workspace::WorkspaceBinding>,
    /// Five fields (minute, hour, day of month, month, day of week) or one of `@yearly`,
    /// `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`.
    #[schemars(length(min = 1, max = MAX_CRON_LEN))]
    pub cron: String,
    /// IANA time zone the cron fields are read in, e.g. `Europe/Berlin`; default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_TIME_ZONE_LEN))]
    pub time_zone: Option<String>,
    /// What a tick does while a Run of this schedule is not finished: `Allow` (default) starts
    /// another, `Forbid` skips the tick for good, `Replace` cancels the running one and starts
    /// the new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<ConcurrencyPolicy>,
    /// While true, ticks start nothing. Ticks missed while suspended count as missed: on resume
    /// the latest runs, within `startingDeadlineSeconds` when it is set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// A tick noticed more than this many seconds late (the controller was down or the
    /// schedule suspended) is skipped; default: never too late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = crate::compile::MAX_SECONDS))]
    pub starting_deadline_seconds: Option<u64>,
    /// How many succeeded Runs of this schedule are kept; older ones are deleted. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_HISTORY_LIMIT))]
    pub successful_runs_history_limit: Option<u32>,
    /// How many failed (or cancelled) Runs of this schedule are kept. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_HISTORY_LIMIT))]
    pub failed_runs_history_limit: Option<u32>,
}

/// What a tick does while a Run of the same schedule is not finished.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Start another Run.
    #[default]
    Allow,
    /// Skip the tick for good.
    Forbid,
    /// Cancel the unfinished Runs and start the new one.
    Replace,
}

/// What the controller has done with a schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid`: whether the cron expression, time zone and name can be scheduled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The tick of the latest Run made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Timestamp>,
    /// The latest tick skipped (a Run still active under `Forbid`, or noticed past the
    /// starting deadline); it is never run late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_skipped_time: Option<Timestamp>,
    /// The next tick, unless suspended or invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Timestamp>,
    /// Runs of this schedule not finished yet, oldest tick first (at most 50 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ACTIVE_LISTED))]
    pub active: Vec<ActiveRun>,
    /// When the latest successful Run of this schedule finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Timestamp>,
}

/// A Run of the schedule that has not finished.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ActiveRun {
    /// The Run's name.
    pub name: String,
}
