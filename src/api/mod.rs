//! The user-facing API: the `Workflow`, `Run` and `Schedule` custom resources (`ork.dev/v1alpha1`).
//!
//! These types are the single source of truth for the manifest format. The local runner parses
//! manifests into them and the Kubernetes controller reads them from the API server, so the two
//! drivers can never disagree about what a field means. The CRDs in `crds/` are generated from them.

mod pod;
mod run;
pub mod schedule;
mod workflow;
mod workspace;

pub use pod::PodSettings;
pub use run::{
    AttemptRecord, Condition, ConditionStatus, PinnedWorkflow, RecordLayout, Run, RunPhase,
    RunShard, RunShardSpec, RunSpec, RunStatus, TaskCounts, TaskPhase, TaskStatus, WorkflowRef,
};
pub use schedule::{ActiveRun, ConcurrencyPolicy, Schedule, ScheduleSpec, ScheduleStatus};
pub use workflow::{
    Backoff, ForEachSpec, InputSpec, MAX_FAN_OUT, ParamSpec, RETRY_ON, RetryPolicy, TRIGGERS,
    TaskDefaults, TaskSpec, WHEN_OPERATORS, WhenSpec, Workflow, WorkflowSpec, WorkflowStatus,
};
pub use workspace::{
    ClaimTemplate, WorkspaceBinding, WorkspaceDecl, WorkspaceMount, default_mount_path,
    workspace_var,
};

/// API group of every ork resource.
pub const GROUP: &str = "ork.dev";
/// The one served version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "ork.dev/v1alpha1";
