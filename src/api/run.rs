//! `Run`: one execution of a workflow, and the status that records it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::workflow::WorkflowSpec;

/// One execution of a workflow.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ork.dev",
    version = "v1alpha1",
    kind = "Run",
    namespaced,
    status = "RunStatus",
    shortname = "orkrun",
    category = "ork",
    doc = "One execution of a Workflow, with the status of every task.",
    printcolumn = r#"{"name": "Workflow", "type": "string", "jsonPath": ".status.workflow.name"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Progress", "type": "string", "jsonPath": ".status.progress"}"#,
    printcolumn = r#"{"name": "Suspended", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Suspended\")].status"}"#,
    printcolumn = r#"{"name": "Duration", "type": "string", "jsonPath": ".status.duration"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    /// The Workflow to run, in the run's namespace. Exactly one of `workflowRef` or `workflow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_ref: Option<WorkflowRef>,
    /// An inline workflow definition. Exactly one of `workflowRef` or `workflow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowSpec>,
    /// Parameter values by name; names the workflow does not declare are an error.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// While true, no new attempt starts (running ones go on); set it back to false to resume.
    /// Kubernetes only: `ork run` refuses a suspended Run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Stops the run for good: running attempts are stopped, every unfinished task becomes
    /// Cancelled, the `finally` tasks run and the run ends Cancelled. Setting it back has no
    /// effect.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
    /// Runs a finished Run of this namespace again, with its definition and params: each task
    /// that succeeded there, with every task upstream of it, is reused; the rest runs. Excludes
    /// `workflowRef`, `workflow` and `params`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<WorkflowRef>,
    /// Storage for the workflow's workspaces, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<super::workspace::WorkspaceBinding>,
}

/// Reference to a Workflow in the run's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct WorkflowRef {
    /// Name of the Workflow.
    #[schemars(
        length(min = 1, max = crate::compile::names::MAX_SUBDOMAIN_LEN),
        pattern(crate::compile::names::DNS_SUBDOMAIN_OR_EMPTY_PATTERN)
    )]
    pub name: String,
}

/// The observed state of a run. The run is pinned to the definition it started with.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// Pending, Running, Succeeded, Failed or Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "run_phase")]
    pub phase: Option<RunPhase>,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the run reached a final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Succeeded`: Unknown while running, True on success, False on failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Tasks succeeded out of all tasks, e.g. `3/5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// How long the run took, once it finished, e.g. `2m3s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// The workflow definition this run is pinned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<PinnedWorkflow>,
    /// Tasks by phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_counts: Option<TaskCounts>,
    /// One entry per task, in the workflow's order — for runs whose records are kept here (up
    /// to 1,000 tasks). A larger run keeps them in its RunShards (see `records`); `ork get RUN
    /// -o json` shows them here at any size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub tasks: Vec<TaskStatus>,
    /// Where the task records are when they are not in `tasks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<RecordLayout>,
    /// Names of running tasks, when the records are in RunShards (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub running_tasks: Vec<String>,
    /// Names of failed tasks, when the records are in RunShards (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub failed_tasks: Vec<String>,
}

/// How many tasks of a run are in each phase.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskCounts {
    pub pending: u32,
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub skipped: u32,
    pub cancelled: u32,
}

/// Where a large run keeps its task records and pinned tasks: RunShard objects owned by the
/// Run, labelled `ork.dev/run: RUN`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordLayout {
    /// Number of record shards: `RUN.tasks-0`, `RUN.tasks-1`, …, each holding the records of
    /// `tasksPerShard` consecutive tasks in the workflow's order.
    pub shards: u32,
    /// Tasks per record shard.
    pub tasks_per_shard: u32,
    /// The RunShards holding the pinned definition's tasks, in order (the rest of the pinned
    /// definition is in `workflow.spec`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub definition: Vec<String>,
}

/// Which workflow definition a run executes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PinnedWorkflow {
    /// Name of the Workflow (absent for an inline definition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `metadata.generation` of the Workflow when the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The definition itself, copied when the run started (by the controller), so that editing
    /// or deleting the Workflow does not change a run that has begun. (Its schema is the
    /// Workflow's, checked when it was pinned; a large run keeps its tasks in RunShards.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub spec: Option<WorkflowSpec>,
    /// The run's parameters as they were when it started, pinned like the definition.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

/// Part of a large run's records: the records of a range of tasks, or a part of its pinned
/// definition. Owned by its Run; written only by the controller.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ork.dev",
    version = "v1alpha1",
    kind = "RunShard",
    namespaced,
    category = "ork",
    doc = "Task records (or pinned tasks) of a large Run; `ork get RUN -o json` joins them.",
    printcolumn = r#"{"name": "Run", "type": "string", "jsonPath": ".spec.run"}"#,
    printcolumn = r#"{"name": "First", "type": "integer", "jsonPath": ".spec.first"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RunShardSpec {
    /// The Run this belongs to.
    pub run: String,
    /// Index, in the workflow's order, of the first task here.
    pub first: u32,
    /// Task records, in the workflow's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskStatus>,
    /// Pinned task definitions, in the workflow's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "task_specs")]
    pub definition: Vec<super::workflow::TaskSpec>,
}

/// Phase of a run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RunPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    /// The message of the `Succeeded` condition: how the run went, in words.
    pub fn message(&self) -> Option<&str> {
        self.conditions
            .iter()
            .find(|c| c.type_ == "Succeeded")
            .and_then(|c| c.message.as_deref())
    }
}

impl RunPhase {
    /// Whether the run will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Phase of one task.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum TaskPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl TaskPhase {
    /// Whether the task will not change any more.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }
}

/// The observed state of one task of a run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    /// Task name.
    pub name: String,
    /// Pending, Running, Succeeded, Failed, Skipped or Cancelled.
    pub phase: TaskPhase,
    /// Attempts started so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the task reached a final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Exit code of the latest finished attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Machine-readable cause: Completed, Error, Timeout, UpstreamFailed, InvalidOutput, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The JSON object the task wrote to `ORK_OUTPUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub outputs: Option<serde_json::Map<String, serde_json::Value>>,
    /// When the next attempt starts, while the task waits out its retry back-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    /// The Job of the latest attempt, once it exists (Kubernetes only):
    /// `kubectl logs job/NAME` shows the attempt's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// When the Pod of the latest attempt started on a node (Kubernetes only): the attempt's
    /// timeout counts from here, as the kubelet's does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_started_at: Option<Timestamp>,
    /// A task of the workflow's `finally` list.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finally: bool,
    /// Attempts retried after a failure outside the task (Pod evicted or deleted, Job lost,
    /// node lost), which do not use the retry `limit`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub infra_retries: u32,
    /// How the latest attempts ended (at most the last 10), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub history: Vec<AttemptRecord>,
    /// For a task reused by a rerun (reason `Reused`): the run whose attempt produced the
    /// result, the first one along a chain of reruns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
    /// For a task with `forEach`, once its list is known: how many instances it has. Each
    /// instance has its own entry, named `TASK[INDEX]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = crate::api::MAX_FAN_OUT))]
    pub instances: Option<u32>,
}

impl TaskStatus {
    /// The record of a task that has not started.
    pub fn pending(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            phase: TaskPhase::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            exit_code: None,
            reason: None,
            message: None,
            outputs: None,
            next_attempt_at: None,
            job: None,
            pod_started_at: None,
            finally: false,
            infra_retries: 0,
            history: Vec::new(),
            reused_from: None,
            instances: None,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How one attempt of a task ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Exit code, when the process exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it ended: Completed, Error, Timeout, PodDeleted, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

/// A Kubernetes-style condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Succeeded` or `Valid`.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// CamelCase cause of the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Timestamp>,
    /// The `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Status of a condition.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// The phase's schema without the `null` that an `Option` of an enum adds to the enum values,
/// which `kubectl` rejects (the field is left out rather than set to null).
fn run_phase(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["Pending", "Running", "Succeeded", "Failed", "Cancelled"],
    })
}

/// Pinned task definitions were validated when pinned; their schema is the Workflow's, and
/// repeating it here would only double the CRD: a list of objects kept as written.
fn task_specs(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    })
}

/// Schema for free-form JSON objects: structural CRD schemas need the explicit marker.
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
