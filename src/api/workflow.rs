//! `Workflow`: a named, reusable DAG of tasks.

use k8s_openapi::api::core::v1::{
    EnvVar, ResourceRequirements, SecurityContext, Volume, VolumeMount,
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pod::PodSettings;
use super::run::Condition;
use crate::compile::MAX_SECONDS;
use crate::compile::names::{
    DNS_LABEL_PATTERN, DNS_SUBDOMAIN_OR_EMPTY_PATTERN, ENV_NAME_PATTERN, IDENTIFIER_PATTERN,
    MAX_IDENTIFIER_LEN, MAX_LABEL_LEN, MAX_SUBDOMAIN_LEN,
};

/// A DAG of tasks that a `Run` executes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ork.dev",
    version = "v1alpha1",
    kind = "Workflow",
    namespaced,
    status = "WorkflowStatus",
    shortname = "wf",
    category = "ork",
    doc = "A reusable DAG of tasks; start it with a Run.",
    printcolumn = r#"{"name": "Tasks", "type": "integer", "jsonPath": ".status.taskCount"}"#,
    printcolumn = r#"{"name": "Valid", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Valid\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowSpec {
    /// Free text shown to people; not interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Parameters a run may (or, without a default, must) supply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamSpec>,
    /// Field values applied to every task that does not set the field itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<TaskDefaults>,
    /// Maximum number of tasks running at once in one run; absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = u32::MAX))]
    pub parallelism: Option<u32>,
    /// Deadline for the whole run, in seconds from its start; absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_SECONDS))]
    pub active_deadline_seconds: Option<u64>,
    /// The tasks of the DAG, in any order.
    #[schemars(length(min = 1))]
    pub tasks: Vec<TaskSpec>,
    /// Tasks that run once every task in `tasks` is final, whatever the outcome (also after a
    /// cancel or the run deadline): clean-up and notification. They may depend on each other,
    /// not on regular tasks, and read regular tasks' outputs without `dependsOn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finally: Vec<TaskSpec>,
    /// Workspaces the tasks may mount: files shared between tasks, bound to storage by each
    /// Run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<super::workspace::WorkspaceDecl>,
}

/// A run parameter.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParamSpec {
    /// Parameter name, matching `^[A-Za-z_][A-Za-z0-9_]*$`.
    #[schemars(length(max = MAX_IDENTIFIER_LEN), pattern(IDENTIFIER_PATTERN))]
    pub name: String,
    /// Value used when the run does not supply one; without it the parameter is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Free text shown to people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Values applied to every task unless the task sets the field. `env` is merged by name (the
/// task's entry wins); `retries.backoff` is inherited when a task sets only `retries.limit`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefaults {
    /// Container image for tasks that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Environment variables every task gets (a task's own entry of the same name wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = env_names)]
    pub env: Vec<EnvVar>,
    /// Retry policy for tasks that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
    /// Per-attempt timeout in seconds for tasks that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_SECONDS))]
    pub timeout_seconds: Option<u64>,
    /// Compute resources for tasks that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Service account the task Pods run as, unless a task sets its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_SUBDOMAIN_LEN), pattern(DNS_SUBDOMAIN_OR_EMPTY_PATTERN))]
    pub service_account_name: Option<String>,
    /// Pod settings of every task (a task's own `pod` wins field by field). Kubernetes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodSettings>,
}

/// One node of the DAG: a container command run once per attempt.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    /// DNS-1123 label, unique within the workflow.
    #[schemars(length(min = 1, max = MAX_LABEL_LEN), pattern(DNS_LABEL_PATTERN))]
    pub name: String,
    /// Container image; required unless `defaults.image` is set. Not used by the local runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Executable and leading arguments; `$(VAR)` is expanded from the task's environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// Further arguments appended to `command`; `$(VAR)` is expanded as in `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables (Kubernetes `EnvVar` list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = env_names)]
    pub env: Vec<EnvVar>,
    /// Names of tasks that must succeed before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(min = 1, max = MAX_LABEL_LEN), pattern(DNS_LABEL_PATTERN)))]
    pub depends_on: Vec<String>,
    /// Values the task receives as environment variables and in `ORK_INPUT_JSON`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputSpec>,
    /// Retry policy; total attempts = `limit` + 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
    /// Per-attempt timeout in seconds; the attempt is killed when it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_SECONDS))]
    pub timeout_seconds: Option<u64>,
    /// Compute resources (Kubernetes `ResourceRequirements`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Service account the task's Pods run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_SUBDOMAIN_LEN), pattern(DNS_SUBDOMAIN_OR_EMPTY_PATTERN))]
    pub service_account_name: Option<String>,
    /// Conditions that must all hold for the task to run; otherwise it is Skipped (`WhenFalse`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<WhenSpec>,
    /// When the task runs, judged over its dependencies once they are all final:
    /// `AllSucceeded` (default), `AllDone` or `AnyFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = TRIGGERS))]
    pub trigger: Option<String>,
    /// The task's failure neither skips its dependents nor fails the run (its phase is still
    /// Failed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_failure: bool,
    /// Run the task once per item of a list: one instance per item, each with its own attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<ForEachSpec>,
    /// Settings of the task's Pod, over `defaults.pod` field by field. Kubernetes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodSettings>,
    /// The container's security context (Kubernetes `SecurityContext`). Kubernetes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::pod::kubernetes_object")]
    pub security_context: Option<SecurityContext>,
    /// Extra Pod volumes (Kubernetes `Volume`s: secrets, configMaps, …) for this task's
    /// `volumeMounts`. Kubernetes only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::pod::kubernetes_objects")]
    pub volumes: Vec<Volume>,
    /// Where the container mounts the task's `volumes`. Kubernetes only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Workspaces the task mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<super::workspace::WorkspaceMount>,
}

/// Most items a fan-out may have (a longer list fails the task with `FanOutTooLarge`).
pub const MAX_FAN_OUT: usize = 10_000;

/// Where a task's fan-out items come from: exactly one of `items`, `fromParam`, or `fromTask`
/// with `output`; each must give a JSON array.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForEachSpec {
    /// The items, written out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_values")]
    pub items: Option<Vec<serde_json::Value>>,
    /// Name of a workflow parameter whose value is a JSON array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_IDENTIFIER_LEN), pattern(IDENTIFIER_PATTERN))]
    pub from_param: Option<String>,
    /// Name of an upstream task whose output key `output` holds a JSON array (or a string of
    /// one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_LABEL_LEN), pattern(DNS_LABEL_PATTERN))]
    pub from_task: Option<String>,
    /// Key of the `fromTask` task's output object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub output: Option<String>,
    /// Most instances of this task running at once (the run's `parallelism` holds too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = u32::MAX))]
    pub parallelism: Option<u32>,
}

/// A list of at most [`MAX_FAN_OUT`] JSON values of any kind, kept as written (fan-out items).
fn any_values(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": MAX_FAN_OUT,
        "items": {"x-kubernetes-preserve-unknown-fields": true},
    })
}

/// Values of `trigger`.
pub const TRIGGERS: [&str; 3] = ["AllSucceeded", "AllDone", "AnyFailed"];
/// Values of a `when` entry's `operator`.
pub const WHEN_OPERATORS: [&str; 2] = ["In", "NotIn"];
/// Values of `retries.retryOn`.
pub const RETRY_ON: [&str; 2] = ["Error", "Timeout"];

/// One condition of a task's `when`: a param, or an output of an upstream task, compared as
/// text with `values`. Exactly one of `param` or `task` (with `output`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhenSpec {
    /// Name of a workflow parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_IDENTIFIER_LEN), pattern(IDENTIFIER_PATTERN))]
    pub param: Option<String>,
    /// Name of an upstream task (direct or transitive dependency) whose output to compare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_LABEL_LEN), pattern(DNS_LABEL_PATTERN))]
    pub task: Option<String>,
    /// Key of the `task`'s output object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub output: Option<String>,
    /// `In` or `NotIn`.
    #[schemars(extend("enum" = WHEN_OPERATORS))]
    pub operator: String,
    /// The values compared with; at least one.
    #[schemars(length(min = 1))]
    pub values: Vec<String>,
}

/// A task input: exactly one of `value`, `fromParam`, or `fromTask` with `output`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InputSpec {
    /// Environment variable name, matching `^[A-Za-z_][A-Za-z0-9_]*$`.
    #[schemars(length(max = MAX_IDENTIFIER_LEN), pattern(IDENTIFIER_PATTERN))]
    pub name: String,
    /// A constant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Name of a workflow parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_IDENTIFIER_LEN), pattern(IDENTIFIER_PATTERN))]
    pub from_param: Option<String>,
    /// Name of an upstream task (a direct or transitive dependency) whose output to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_LABEL_LEN), pattern(DNS_LABEL_PATTERN))]
    pub from_task: Option<String>,
    /// Key of the `fromTask` task's output object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub output: Option<String>,
}

/// How often a failed attempt is retried, and how long to wait in between.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Number of retries after the first attempt.
    #[schemars(range(min = 0, max = u32::MAX))]
    pub limit: u32,
    /// Delay between attempts; defaults to 1s doubling up to 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Which failures are retried: `Error` (non-zero exit, could not start, invalid output)
    /// and/or `Timeout`. Default both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = retry_on_values)]
    pub retry_on: Vec<String>,
    /// If set, an `Error` is retried only when the attempt exited with one of these codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 1, max = 255)))]
    pub exit_codes: Vec<i32>,
}

/// Exponential back-off: the delay before attempt n+1 is
/// `min(initialSeconds × factor^(n-1), maxSeconds)`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// Delay before the first retry, in seconds (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub initial_seconds: Option<f64>,
    /// Multiplier applied for each further retry (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub factor: Option<f64>,
    /// Upper bound of the delay, in seconds (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_seconds: Option<f64>,
}

/// What the controller found when it compiled the workflow.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid`: True when the spec compiles, False naming every problem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Number of tasks in the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = u32::MAX))]
    pub task_count: Option<u32>,
}

/// Adds Kubernetes' rule for env names ([`ENV_NAME_PATTERN`]) to a list of `EnvVar`s, whose
/// schema comes from the Kubernetes API types.
fn env_names(schema: &mut schemars::Schema) {
    let name = schema
        .get_mut("items")
        .and_then(|items| items.get_mut("properties"))
        .and_then(|properties| properties.get_mut("name"))
        .and_then(|name| name.as_object_mut());
    if let Some(name) = name {
        name.insert("pattern".into(), ENV_NAME_PATTERN.into());
        name.insert(
            "description".into(),
            "Name of the environment variable: letters, digits, '_', '-' and '.', not starting \
             with a digit, and not '.' or starting with '..'."
                .into(),
        );
    }
}

/// Lists the values `retryOn` entries may take, as an enum on its items.
fn retry_on_values(schema: &mut schemars::Schema) {
    if let Some(items) = schema.get_mut("items").and_then(|i| i.as_object_mut()) {
        items.insert("enum".into(), RETRY_ON.to_vec().into());
    }
}
