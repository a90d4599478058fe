//! The compiled workflow: tasks with defaults applied, and the dependency graph in compact
//! adjacency arrays, built once so the engine does constant work per event.

use std::collections::HashMap;

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};

use crate::api::ParamSpec;

/// Index of a task in its [`Dag`], in declaration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub u32);

impl TaskId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Where an input's value comes from, with references resolved to indexes.
#[derive(Clone, Debug, PartialEq)]
pub enum InputSource {
    /// A constant.
    Value(String),
    /// The parameter at this index of [`Dag::params`].
    Param(usize),
    /// The key `output` of an upstream task's output object.
    Task { task: TaskId, output: String },
}

/// A resolved task input.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub name: String,
    pub source: InputSource,
}

/// Retry policy with every default filled in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Retry {
    /// Retries after the first attempt.
    pub limit: u32,
    pub initial_seconds: f64,
    pub factor: f64,
    pub max_seconds: f64,
}

impl Retry {
    pub const DEFAULT_INITIAL_SECONDS: f64 = 1.0;
    pub const DEFAULT_FACTOR: f64 = 2.0;
    pub const DEFAULT_MAX_SECONDS: f64 = 60.0;
    /// Longest delay computed, far past any timestamp the engine can represent.
    pub const LONGEST_DELAY_SECONDS: f64 = 1e15;

    /// Total attempts allowed.
    pub fn max_attempts(&self) -> u32 {
        self.limit.saturating_add(1)
    }

    /// Delay before attempt `failed + 1`, after attempt `failed` (1-based) failed:
    /// `min(initial × factor^(failed-1), max)`.
    pub fn delay_after(&self, failed: u32) -> SignedDuration {
        let exponent = i32::try_from(failed.saturating_sub(1)).unwrap_or(i32::MAX);
        let seconds = (self.initial_seconds * self.factor.powi(exponent)).min(self.max_seconds);
        // Validation keeps every term finite and non-negative; clamp anyway so a NaN can't panic.
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            self.max_seconds
        };
        // Past about 31 million years a delay means "never"; larger values would overflow.
        SignedDuration::from_secs_f64(seconds.clamp(0.0, Self::LONGEST_DELAY_SECONDS))
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            limit: 0,
            initial_seconds: Self::DEFAULT_INITIAL_SECONDS,
            factor: Self::DEFAULT_FACTOR,
            max_seconds: Self::DEFAULT_MAX_SECONDS,
        }
    }
}

/// Which failed attempts are retried (within the retry limit).
#[derive(Clone, Debug, PartialEq)]
pub struct RetryOn {
    /// The command exited non-zero, could not start, or wrote an invalid output.
    pub error: bool,
    /// The attempt ran past its timeout.
    pub timeout: bool,
    /// If not empty, an error is retried only for these exit codes.
    pub exit_codes: Vec<i32>,
}

impl Default for RetryOn {
    fn default() -> Self {
        Self {
            error: true,
            timeout: true,
            exit_codes: Vec::new(),
        }
    }
}

/// When a task runs, judged over its dependencies once all of them are final.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Trigger {
    /// Every dependency succeeded (or was skipped other than for a failure, or failed with
    /// `continueOnFailure`).
    #[default]
    AllSucceeded,
    /// Every dependency is final, whatever the outcome.
    AllDone,
    /// Every dependency is final and at least one failed.
    AnyFailed,
}

/// What a `when` entry compares.
#[derive(Clone, Debug, PartialEq)]
pub enum WhenSubject {
    /// The parameter at this index of [`Dag::params`].
    Param(usize),
    /// The key `output` of an upstream task's output object.
    Task { task: TaskId, output: String },
}

/// One compiled `when` entry: holds when the subject's text is (`In`) or is not (`NotIn`) one
/// of `values`.
#[derive(Clone, Debug, PartialEq)]
pub struct When {
    pub subject: WhenSubject,
    pub negated: bool,
    pub values: Vec<String>,
}

/// One task with the workflow defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct CompiledTask {
    pub name: String,
    pub image: Option<String>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// Defaults merged with the task's own entries (the task wins), minus names an input uses.
    pub env: Vec<EnvVar>,
    pub inputs: Vec<Input>,
    pub retry: Retry,
    /// Per-attempt timeout.
    pub timeout: Option<SignedDuration>,
    pub resources: Option<ResourceRequirements>,
    pub service_account_name: Option<String>,
    /// Which failures the retry limit is spent on.
    pub retry_on: RetryOn,
    /// A task of the `finally` list.
    pub finally: bool,
    pub when: Vec<When>,
    pub trigger: Trigger,
    pub continue_on_failure: bool,
    /// One instance per item, when set.
    pub for_each: Option<ForEach>,
    /// Pod settings, the defaults' merged with the task's (Kubernetes only).
    pub pod: crate::api::PodSettings,
    /// The container's security context (Kubernetes only).
    pub security_context: Option<k8s_openapi::api::core::v1::SecurityContext>,
    /// Extra Pod volumes and where the container mounts them (Kubernetes only).
    pub volumes: Vec<k8s_openapi::api::core::v1::Volume>,
    pub volume_mounts: Vec<k8s_openapi::api::core::v1::VolumeMount>,
    /// The workspaces the task mounts.
    pub workspaces: Vec<TaskWorkspace>,
}

/// A workspace a task mounts, and where.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskWorkspace {
    pub name: String,
    /// Absolute; `/workspaces/NAME` unless the task says otherwise.
    pub mount_path: String,
    pub read_only: bool,
}

/// Where a fan-out's items come from.
#[derive(Clone, Debug, PartialEq)]
pub enum ItemSource {
    /// Written out in the workflow.
    Items(std::sync::Arc<[serde_json::Value]>),
    /// The parameter at this index of [`Dag::params`], holding a JSON array.
    Param(usize),
    /// The key `output` of an upstream task's output object, holding a JSON array.
    Task { task: TaskId, output: String },
}

/// A task's fan-out: its items and how many instances may run at once.
#[derive(Clone, Debug, PartialEq)]
pub struct ForEach {
    pub source: ItemSource,
    pub parallelism: Option<u32>,
}

/// Compressed adjacency lists: the neighbours of node `i` are `targets[offsets[i]..offsets[i+1]]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Adjacency {
    offsets: Vec<u32>,
    targets: Vec<TaskId>,
}

impl Adjacency {
    /// Builds from `(from, to)` edges over `nodes` nodes, keeping each list in edge order.
    pub(crate) fn from_edges(nodes: usize, edges: &[(TaskId, TaskId)]) -> Self {
        let mut offsets = vec![0u32; nodes + 1];
        for (from, _) in edges {
            offsets[from.index() + 1] += 1;
        }
        for i in 0..nodes {
            offsets[i + 1] += offsets[i];
        }
        let mut cursor: Vec<u32> = offsets[..nodes].to_vec();
        let mut targets = vec![TaskId(0); edges.len()];
        for (from, to) in edges {
            let slot = &mut cursor[from.index()];
            targets[*slot as usize] = *to;
            *slot += 1;
        }
        Self { offsets, targets }
    }

    /// Number of nodes.
    pub(crate) fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub(crate) fn of(&self, node: TaskId) -> &[TaskId] {
        let i = node.index();
        &self.targets[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// A validated workflow, ready to run any number of times.
#[derive(Clone, Debug, PartialEq)]
pub struct Dag {
    pub(crate) tasks: Vec<CompiledTask>,
    pub(crate) index: HashMap<String, TaskId>,
    pub(crate) children: Adjacency,
    pub(crate) parents: Adjacency,
    pub(crate) params: Vec<ParamSpec>,
    pub(crate) parallelism: Option<u32>,
    pub(crate) active_deadline: Option<SignedDuration>,
    /// Number of regular tasks: `tasks[regular..]` are the `finally` tasks.
    pub(crate) regular: usize,
    /// The workspaces the workflow declares.
    pub(crate) workspaces: Vec<crate::api::WorkspaceDecl>,
}

impl Dag {
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The workspaces the workflow declares.
    pub fn workspaces(&self) -> &[crate::api::WorkspaceDecl] {
        &self.workspaces
    }

    pub fn task(&self, id: TaskId) -> &CompiledTask {
        &self.tasks[id.index()]
    }

    pub fn tasks(&self) -> impl ExactSizeIterator<Item = (TaskId, &CompiledTask)> {
        self.tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (TaskId(i as u32), t))
    }

    pub fn id(&self, name: &str) -> Option<TaskId> {
        self.index.get(name).copied()
    }

    /// Tasks that depend directly on `id`.
    pub fn children(&self, id: TaskId) -> &[TaskId] {
        self.children.of(id)
    }

    /// Tasks `id` depends on directly.
    pub fn parents(&self, id: TaskId) -> &[TaskId] {
        self.parents.of(id)
    }

    pub fn params(&self) -> &[ParamSpec] {
        &self.params
    }

    pub fn parallelism(&self) -> Option<u32> {
        self.parallelism
    }

    pub fn active_deadline(&self) -> Option<SignedDuration> {
        self.active_deadline
    }

    /// Number of regular tasks; the `finally` tasks come after them.
    pub fn regular(&self) -> usize {
        self.regular
    }

    /// Whether `id` is a `finally` task.
    pub fn is_finally(&self, id: TaskId) -> bool {
        id.index() >= self.regular
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_the_contract() {
        let retry = Retry {
            limit: 10,
            ..Retry::default()
        };
        let secs: Vec<f64> = (1..=8)
            .map(|n| retry.delay_after(n).as_secs_f64())
            .collect();
        assert_eq!(secs, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]);
        let custom = Retry {
            limit: 3,
            initial_seconds: 0.5,
            factor: 3.0,
            max_seconds: 10.0,
        };
        let secs: Vec<f64> = (1..=4)
            .map(|n| custom.delay_after(n).as_secs_f64())
            .collect();
        assert_eq!(secs, [0.5, 1.5, 4.5, 10.0]);
        assert_eq!(custom.delay_after(u32::MAX).as_secs_f64(), 10.0);
    }

    #[test]
    fn adjacency_groups_edges_by_source() {
        let edges = [
            (TaskId(2), TaskId(0)),
            (TaskId(0), TaskId(1)),
            (TaskId(2), TaskId(1)),
        ];
        let adj = Adjacency::from_edges(3, &edges);
        assert_eq!(adj.of(TaskId(0)), &[TaskId(1)]);
        assert_eq!(adj.of(TaskId(1)), &[] as &[TaskId]);
        assert_eq!(adj.of(TaskId(2)), &[TaskId(0), TaskId(1)]);
    }
}
