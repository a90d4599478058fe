//! Where a run's task records live, and the writes that keep them. Up to the inline limit
//! (1,000 tasks by default) every record is in the Run's `status.tasks`, as small runs always
//! were. Past it the Run's status keeps the summary (phase, conditions, counts, the running and
//! failed tasks by name) and the records live in RunShard objects owned by the Run: `RUN.tasks-K`
//! holds the records of tasks `K × 64 … K × 64 + 63` in the workflow's order, and
//! `RUN.def-HASH-K` the pinned definition's tasks, packed by size. Every object stays far below
//! etcd's limit whatever the run's size: a record is at most a few KiB (outputs ≤ 4 KiB, a
//! message ≤ 4 KiB), so a record shard stays under 600 KiB, and definition parts are packed to
//! 512 KiB.
//!
//! A write sends only what changed: JSON patches replacing the changed records (and the Run's
//! changed summary fields), each carrying the resourceVersion it was computed from, so a
//! decision made on a stale view is refused instead of overwriting newer results. Pure: the
//! reconciler sends what these functions build.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::api::{
    RecordLayout, Run, RunShard, RunShardSpec, RunStatus, TaskSpec, TaskStatus, WorkflowSpec,
};
use crate::compile::TaskId;
use crate::text;

/// Records per record shard.
pub const TASKS_PER_SHARD: u32 = 64;
/// Largest part of a pinned definition, in bytes of JSON.
pub const DEFINITION_PART_BYTES: usize = 512 * 1024;
/// Longest task message kept in a record, so a record shard has a bound.
pub const MAX_TASK_MESSAGE_BYTES: usize = 4096;
/// Running and failed tasks named in a large run's summary.
pub const MAX_NAMED_TASKS: usize = 20;

/// The record shard holding `task`, and the task's place in it.
pub fn shard_of(task: TaskId) -> (u32, usize) {
    (
        task.0 / TASKS_PER_SHARD,
        (task.0 % TASKS_PER_SHARD) as usize,
    )
}

/// Number of record shards for `tasks` tasks.
pub fn shard_count(tasks: usize) -> u32 {
    (tasks as u32).div_ceil(TASKS_PER_SHARD)
}

/// Name of record shard `k` of run `run`.
pub fn record_shard_name(run: &str, k: u32) -> String {
    format!("{run}.tasks-{k}")
}

/// A record as stored: its message bounded.
pub fn stored(mut record: TaskStatus) -> TaskStatus {
    if let Some(message) = record.message.take() {
        record.message = Some(text::cap(message, MAX_TASK_MESSAGE_BYTES));
    }
    record
}

/// The pinned definition of a large run, split: the spec without its tasks (kept in the Run's
/// status) and the tasks in parts of at most [`DEFINITION_PART_BYTES`], named after a hash of
/// their content so that two pins of different definitions never share a part. `Err` names a
/// task too large for any part.
pub fn split_definition(
    run: &str,
    spec: &WorkflowSpec,
) -> Result<(WorkflowSpec, Vec<(String, RunShardSpec)>), String> {
    let mut sizes = Vec::with_capacity(spec.tasks.len());
    let mut hash = FNV_OFFSET;
    for task in &spec.tasks {
        let json = serde_json::to_vec(task).map_err(|e| e.to_string())?;
        if json.len() > DEFINITION_PART_BYTES {
            return Err(format!(
                "task {}'s definition is {} bytes of JSON, more than the {DEFINITION_PART_BYTES} \
                 one part of a pinned definition may hold",
                text::quoted(&task.name),
                json.len()
            ));
        }
        hash = fnv1a(hash, &json);
        sizes.push(json.len());
    }
    let mut parts: Vec<(u32, Vec<TaskSpec>)> = Vec::new();
    let mut bytes = 0usize;
    for (i, (task, size)) in spec.tasks.iter().zip(sizes).enumerate() {
        if parts.is_empty() || bytes + size > DEFINITION_PART_BYTES {
            parts.push((i as u32, Vec::new()));
            bytes = 0;
        }
        bytes += size;
        if let Some((_, tasks)) = parts.last_mut() {
            tasks.push(task.clone());
        }
    }
    let shards = parts
        .into_iter()
        .enumerate()
        .map(|(k, (first, definition))| {
            let name = format!("{run}.def-{:08x}-{k}", hash as u32);
            let spec = RunShardSpec {
                run: run.to_string(),
                first,
                tasks: Vec::new(),
                definition,
            };
            (name, spec)
        })
        .collect();
    let head = WorkflowSpec {
        tasks: Vec::new(),
        ..spec.clone()
    };
    Ok((head, shards))
}

/// The Run as a whole: its status with every task's record in `tasks` and the pinned
/// definition with every task, joined from its RunShards when it has them (they may come in
/// any order; other runs' shards are ignored). `Err` says what is missing.
pub fn assemble(run: &mut Run, shards: &[RunShard]) -> Result<(), String> {
    let Some(status) = run.status.as_mut() else {
        return Ok(());
    };
    let Some(layout) = status.records.clone() else {
        return Ok(());
    };
    let name = run.metadata.name.clone().unwrap_or_default();
    let by_name: BTreeMap<&str, &RunShard> = shards
        .iter()
        .filter(|s| s.spec.run == name)
        .filter_map(|s| Some((s.metadata.name.as_deref()?, s)))
        .collect();
    // The pinned tasks, part by part.
    let mut tasks: Vec<TaskSpec> = Vec::new();
    for part in &layout.definition {
        let shard = by_name
            .get(part.as_str())
            .ok_or_else(|| format!("RunShard {part} (part of the pinned definition) is missing"))?;
        tasks.extend(shard.spec.definition.iter().cloned());
    }
    if let Some(spec) = status.workflow.as_mut().and_then(|w| w.spec.as_mut())
        && spec.tasks.is_empty()
    {
        spec.tasks = tasks;
    }
    // Records: a shard that does not exist yet holds only tasks that have not started. Fan-out
    // instances follow the workflow's tasks, in as many shards as they fill.
    let names: Vec<String> = status
        .workflow
        .as_ref()
        .and_then(|w| w.spec.as_ref())
        .map(|s| s.tasks.iter().map(|t| t.name.clone()).collect())
        .unwrap_or_default();
    let mut records: Vec<TaskStatus> = names.iter().map(TaskStatus::pending).collect();
    let prefix = format!("{name}.tasks-");
    for (shard_name, shard) in &by_name {
        let Some(k) = shard_name
            .strip_prefix(&prefix)
            .and_then(|k| k.parse::<u32>().ok())
        else {
            continue;
        };
        let first = k as usize * TASKS_PER_SHARD as usize;
        for (j, record) in shard
            .spec
            .tasks
            .iter()
            .take(TASKS_PER_SHARD as usize)
            .enumerate()
        {
            let i = first + j;
            if i >= records.len() {
                // A record past the others: whatever lies between is not written yet.
                records.resize_with(i + 1, || TaskStatus::pending(""));
            }
            records[i] = record.clone();
        }
    }
    status.tasks = records;
    Ok(())
}

/// The summary fields of a status as JSON members: everything but `tasks`, and but the pinned
/// `workflow`, which is written once, with the first status, and never changes.
fn head_fields(status: &RunStatus) -> Map<String, Value> {
    let head = RunStatus {
        workflow: None,
        ..head_without_definition(status)
    };
    match serde_json::to_value(head) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    }
}

/// A status's summary: without task records or the pinned definition.
pub fn summary(status: &RunStatus) -> RunStatus {
    head_without_definition(status)
}

fn head_without_definition(status: &RunStatus) -> RunStatus {
    RunStatus {
        phase: status.phase,
        started_at: status.started_at,
        finished_at: status.finished_at,
        observed_generation: status.observed_generation,
        conditions: status.conditions.clone(),
        progress: status.progress.clone(),
        duration: status.duration.clone(),
        workflow: None,
        task_counts: status.task_counts,
        tasks: Vec::new(),
        records: status.records.clone(),
        running_tasks: status.running_tasks.clone(),
        failed_tasks: status.failed_tasks.clone(),
    }
}

/// A status without its task records (the records are not copied).
pub fn head(status: &RunStatus) -> RunStatus {
    RunStatus {
        workflow: status.workflow.clone(),
        ..head_without_definition(status)
    }
}

/// A JSON patch of the Run's status subresource: the summary fields that differ between `old`
/// and `new` (whose task lists are not looked at) and the records in `changed` (task index and
/// record, in order), on condition that the Run is still at `resource_version`. `stored` is
/// how many records the status holds: those past it are added (they must follow on from it).
pub fn status_patch(
    resource_version: &str,
    old: &RunStatus,
    new: &RunStatus,
    changed: &[(usize, &TaskStatus)],
    stored: usize,
) -> Value {
    let mut ops = vec![
        json!({"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version}),
    ];
    let (before, after) = (head_fields(old), head_fields(new));
    for (key, value) in &after {
        if before.get(key) != Some(value) {
            ops.push(json!({"op": "add", "path": format!("/status/{key}"), "value": value}));
        }
    }
    for key in before.keys() {
        if !after.contains_key(key) {
            ops.push(json!({"op": "remove", "path": format!("/status/{key}")}));
        }
    }
    for (i, record) in changed {
        let op = if *i < stored { "replace" } else { "add" };
        ops.push(json!({"op": op, "path": format!("/status/tasks/{i}"), "value": record}));
    }
    Value::Array(ops)
}

/// A JSON patch of a record shard holding `stored` records: the records at `changed` (indexes
/// within the shard, in order; those past `stored` are added and must follow on from it), on
/// condition that it is still at `resource_version`.
pub fn shard_patch(
    resource_version: &str,
    records: &[(usize, &TaskStatus)],
    stored: usize,
) -> Value {
    let mut ops = vec![
        json!({"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version}),
    ];
    for (j, record) in records {
        let op = if *j < stored { "replace" } else { "add" };
        ops.push(json!({"op": op, "path": format!("/spec/tasks/{j}"), "value": record}));
    }
    Value::Array(ops)
}

/// `changed` (indexes in order) with every index from `stored` up to the last of them: records
/// added to a list must follow on from its end, so a gap is filled with `current`'s records.
pub fn contiguous<'a>(
    changed: &[(usize, &'a TaskStatus)],
    stored: usize,
    current: impl Fn(usize) -> &'a TaskStatus,
) -> Vec<(usize, &'a TaskStatus)> {
    let mut out = Vec::with_capacity(changed.len());
    // The list's length as the operations so far leave it.
    let mut end = stored;
    for &(i, record) in changed {
        while end < i {
            out.push((end, current(end)));
            end += 1;
        }
        out.push((i, record));
        end = end.max(i + 1);
    }
    out
}

/// The JSON patch of the Run's status after a decision that is not a first write: the summary
/// fields that changed, and, for a run whose records are inline, the records in `changed` (and
/// any between the `stored` ones and them, from `records`). `migrate`: the records just moved
/// to record shards, so the status's list goes.
pub fn run_patch(
    resource_version: &str,
    old: &RunStatus,
    new: &RunStatus,
    inline: Option<(&[TaskStatus], usize)>,
    changed: &[(usize, TaskStatus)],
    migrate: bool,
) -> Value {
    let in_order: Vec<(usize, &TaskStatus)> = changed.iter().map(|(i, r)| (*i, r)).collect();
    let (records, stored) = match inline {
        Some((records, stored)) => (contiguous(&in_order, stored, |i| &records[i]), stored),
        None => (Vec::new(), 0),
    };
    let mut patch = status_patch(resource_version, old, new, &records, stored);
    if migrate && let Value::Array(ops) = &mut patch {
        ops.push(json!({"op": "remove", "path": "/status/tasks"}));
    }
    patch
}

/// One write of a record shard.
#[derive(Clone, Debug, PartialEq)]
pub enum ShardWrite {
    /// The shard does not exist yet: its first version.
    Create(RunShardSpec),
    /// A JSON patch of the shard that exists.
    Patch(Value),
}

/// A write of record shard `shard`, after which it holds `len` records.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardUpdate {
    pub shard: u32,
    pub write: ShardWrite,
    pub len: usize,
}

/// What the record shards of run `run` need written to record `changed` (slot index and
/// record, in order): for each shard touched, a patch of the one that exists (at its
/// resourceVersion in `versions`, holding as many records as `lens` says) or the first version
/// of a new one, with `records` (every record as last written) for the rest.
pub fn shard_writes(
    run: &str,
    records: &[TaskStatus],
    versions: &std::collections::HashMap<u32, String>,
    lens: &std::collections::HashMap<u32, usize>,
    changed: &[(usize, TaskStatus)],
) -> Vec<ShardUpdate> {
    let mut by_shard: BTreeMap<u32, Vec<(usize, &TaskStatus)>> = BTreeMap::new();
    for (i, record) in changed {
        let (k, j) = shard_of(TaskId(*i as u32));
        by_shard.entry(k).or_default().push((j, record));
    }
    by_shard
        .into_iter()
        .map(|(k, entries)| {
            let first = (k * TASKS_PER_SHARD) as usize;
            match versions.get(&k) {
                Some(version) => {
                    let stored = lens.get(&k).copied().unwrap_or_default();
                    let entries = contiguous(&entries, stored, |j| &records[first + j]);
                    let len = entries.last().map_or(stored, |(j, _)| stored.max(j + 1));
                    ShardUpdate {
                        shard: k,
                        write: ShardWrite::Patch(shard_patch(version, &entries, stored)),
                        len,
                    }
                }
                None => {
                    let end = (first + TASKS_PER_SHARD as usize).min(records.len());
                    let mut tasks: Vec<TaskStatus> = records[first.min(end)..end].to_vec();
                    for (j, record) in entries {
                        if let Some(slot) = tasks.get_mut(j) {
                            *slot = record.clone();
                        }
                    }
                    let len = tasks.len();
                    let spec = RunShardSpec {
                        run: run.to_string(),
                        first: first as u32,
                        tasks,
                        definition: Vec::new(),
                    };
                    ShardUpdate {
                        shard: k,
                        write: ShardWrite::Create(spec),
                        len,
                    }
                }
            }
        })
        .collect()
}

/// The layout of a large run of `tasks` tasks whose definition parts are `definition`.
pub fn layout(tasks: usize, definition: Vec<String>) -> RecordLayout {
    RecordLayout {
        shards: shard_count(tasks),
        tasks_per_shard: TASKS_PER_SHARD,
        definition,
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, continued from `hash`: stable across builds, unlike the standard library's hasher.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PinnedWorkflow, TaskPhase};

    fn spec(n: usize, command_bytes: usize) -> WorkflowSpec {
        serde_json::from_value(json!({
            "defaults": {"image": "i"},
            "tasks": (0..n).map(|i| json!({"name": format!("t{i}"), "command": ["x".repeat(command_bytes)]})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn shards_hold_64_consecutive_tasks() {
        assert_eq!(shard_of(TaskId(0)), (0, 0));
        assert_eq!(shard_of(TaskId(63)), (0, 63));
        assert_eq!(shard_of(TaskId(64)), (1, 0));
        assert_eq!(shard_count(1), 1);
        assert_eq!(shard_count(64), 1);
        assert_eq!(shard_count(10_000), 157);
        assert_eq!(record_shard_name("etl-x", 3), "etl-x.tasks-3");
    }

    #[test]
    fn a_definition_is_split_by_size_and_named_by_content() {
        let big = spec(2_000, 600);
        let (head, parts) = split_definition("r", &big).unwrap();
        assert!(head.tasks.is_empty());
        assert_eq!(head.defaults, big.defaults);
        assert!(parts.len() >= 3, "{}", parts.len());
        let mut next = 0;
        for (name, part) in &parts {
            assert!(name.starts_with("r.def-"), "{name}");
            assert_eq!(part.first, next);
            next += part.definition.len() as u32;
            let bytes = serde_json::to_vec(&part.definition).unwrap().len();
            assert!(bytes <= DEFINITION_PART_BYTES + 1024, "{bytes}");
        }
        assert_eq!(next, 2_000);
        let (_, again) = split_definition("r", &big).unwrap();
        assert_eq!(
            parts[0].0, again[0].0,
            "the same definition, the same names"
        );
        let (_, other) = split_definition("r", &spec(2_000, 601)).unwrap();
        assert_ne!(parts[0].0, other[0].0, "another definition, other names");
        let too_big = spec(1, DEFINITION_PART_BYTES);
        assert!(
            split_definition("r", &too_big)
                .unwrap_err()
                .contains("\"t0\"")
        );
    }

    #[test]
    fn a_run_is_assembled_from_its_shards() {
        let full = spec(150, 4);
        let (head, parts) = split_definition("r", &full).unwrap();
        let mut run: Run = serde_json::from_value(json!({
            "metadata": {"name": "r"}, "spec": {}}))
        .unwrap();
        run.status = Some(RunStatus {
            workflow: Some(PinnedWorkflow {
                spec: Some(head),
                ..PinnedWorkflow::default()
            }),
            records: Some(layout(150, parts.iter().map(|(n, _)| n.clone()).collect())),
            ..RunStatus::default()
        });
        let mut shards: Vec<RunShard> = parts
            .into_iter()
            .map(|(name, spec)| {
                let mut s = RunShard::new(&name, spec);
                s.metadata.name = Some(name);
                s
            })
            .collect();
        // Shard 1 (tasks 64..128) exists; 0 and 2 have not been written.
        let mut records: Vec<TaskStatus> = (64..128)
            .map(|i| TaskStatus::pending(format!("t{i}")))
            .collect();
        records[1].phase = TaskPhase::Succeeded;
        shards.push(RunShard::new(
            "r.tasks-1",
            RunShardSpec {
                run: "r".into(),
                first: 64,
                tasks: records,
                definition: Vec::new(),
            },
        ));
        // Another run's shard of the same index is ignored.
        shards.push(RunShard::new(
            "r.tasks-0",
            RunShardSpec {
                run: "other".into(),
                first: 0,
                tasks: vec![TaskStatus::pending("zzz")],
                definition: Vec::new(),
            },
        ));
        let unassembled = run.clone();
        assemble(&mut run, &shards).unwrap();
        let status = run.status.unwrap();
        assert_eq!(status.tasks.len(), 150);
        assert_eq!(status.tasks[65].phase, TaskPhase::Succeeded);
        assert_eq!(status.tasks[0].name, "t0");
        assert_eq!(status.workflow.unwrap().spec.unwrap().tasks, full.tasks);

        // Fan-out instances follow the workflow's tasks, in the shards they fill.
        let mut instances: Vec<TaskStatus> = (128..150)
            .map(|i| TaskStatus::pending(format!("t{i}")))
            .collect();
        instances.extend((0..3).map(|i| TaskStatus::pending(format!("t9[{i}]"))));
        shards.push(RunShard::new(
            "r.tasks-2",
            RunShardSpec {
                run: "r".into(),
                first: 128,
                tasks: instances,
                definition: Vec::new(),
            },
        ));
        let mut with_instances = unassembled;
        assemble(&mut with_instances, &shards).unwrap();
        let tasks = with_instances.status.unwrap().tasks;
        assert_eq!(tasks.len(), 153);
        assert_eq!(tasks[152].name, "t9[2]");
        assert_eq!(tasks[65].phase, TaskPhase::Succeeded);

        let mut missing: Run = serde_json::from_value(json!({"metadata": {"name": "r"}, "spec": {},
            "status": {"records": {"shards": 1, "tasksPerShard": 64, "definition": ["r.def-0-0"]}}})).unwrap();
        assert!(
            assemble(&mut missing, &[])
                .unwrap_err()
                .contains("r.def-0-0")
        );
    }

    #[test]
    fn patches_send_only_what_changed() {
        let mut old = RunStatus {
            progress: Some("0/3".into()),
            duration: Some("1s".into()),
            tasks: (0..3)
                .map(|i| TaskStatus::pending(format!("t{i}")))
                .collect(),
            ..RunStatus::default()
        };
        let mut new = old.clone();
        new.progress = Some("1/3".into());
        new.duration = None;
        new.tasks[1].phase = TaskPhase::Succeeded;
        let patch = status_patch("42", &old, &new, &[(1, &new.tasks[1])], 3);
        assert_eq!(
            patch,
            json!([
                {"op": "replace", "path": "/metadata/resourceVersion", "value": "42"},
                {"op": "add", "path": "/status/progress", "value": "1/3"},
                {"op": "remove", "path": "/status/duration"},
                {"op": "replace", "path": "/status/tasks/1", "value": new.tasks[1]},
            ])
        );
        old.tasks.clear();
        let record = TaskStatus::pending("t5");
        assert_eq!(
            shard_patch("7", &[(5, &record), (6, &record)], 6),
            json!([
                {"op": "replace", "path": "/metadata/resourceVersion", "value": "7"},
                {"op": "replace", "path": "/spec/tasks/5", "value": record},
                {"op": "add", "path": "/spec/tasks/6", "value": record},
            ])
        );
        // Records past the stored ones are added, in order, with no gap.
        let records: Vec<TaskStatus> = (0..6)
            .map(|i| TaskStatus::pending(format!("t{i}")))
            .collect();
        let changed = [(1, &records[1]), (4, &records[4])];
        let filled = contiguous(&changed, 3, |i| &records[i]);
        let at: Vec<usize> = filled.iter().map(|(i, _)| *i).collect();
        assert_eq!(at, [1, 3, 4]);
        let patch = status_patch("9", &old, &old, &filled, 3);
        let ops: Vec<(&str, &str)> = patch.as_array().unwrap()[1..]
            .iter()
            .map(|op| (op["op"].as_str().unwrap(), op["path"].as_str().unwrap()))
            .collect();
        assert_eq!(
            ops,
            [
                ("replace", "/status/tasks/1"),
                ("add", "/status/tasks/3"),
                ("add", "/status/tasks/4")
            ]
        );
    }

    #[test]
    fn stored_messages_are_bounded() {
        let mut record = TaskStatus::pending("t");
        record.message = Some("m".repeat(100_000));
        assert!(stored(record).message.unwrap().len() <= MAX_TASK_MESSAGE_BYTES);
    }
}
