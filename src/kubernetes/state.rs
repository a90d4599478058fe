//! What the controller keeps in memory about a run it drives, between reconciles: the engine,
//! every task's record and the status summary as last written, and the resourceVersions they
//! were written at. A reconcile of a run whose Run is still at that resourceVersion goes on
//! from here, doing work in proportion to what changed; any other (after a restart, a leader
//! change, a write by anyone else, a failed write) rebuilds it from the API server once.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;

use super::definition::Definition;
use super::layout::{self, stored};
use crate::api::{RunStatus, TaskStatus};
use crate::compile::TaskId;
use crate::engine::{AttemptOf, Engine};

/// A run as this controller drives it.
#[derive(Debug)]
pub struct RunState {
    pub engine: Engine,
    pub definition: Arc<Definition>,
    /// Every slot's record as last written (or read), in the engine's order: the workflow's
    /// tasks, then fan-out instances as they were made.
    pub records: Vec<TaskStatus>,
    /// Records the stored layout holds: the length of the Run's `status.tasks`, or of all
    /// record shards together. Records past it are added, not replaced.
    pub stored: usize,
    /// Slots whose stored record is missing or another slot's (a write that did not all go
    /// through): written by the next decision whatever it changes.
    pub misplaced: Vec<TaskId>,
    /// The Run's status as last written: its summary, without task records or the pinned
    /// definition (written once, never changed).
    pub head: RunStatus,
    /// Whether the status of this layout has been written at all (a first write sends it whole).
    pub written: bool,
    /// The records live in RunShards, not in the Run's status.
    pub sharded: bool,
    /// The Run's resourceVersion this state corresponds to.
    pub resource_version: String,
    /// The resourceVersion the last write of this state was made on: the watch cache may still
    /// show it for a moment, and nothing but that write has happened since.
    pub written_over: Option<String>,
    /// Record shards that exist, with their resourceVersions.
    pub shard_versions: HashMap<u32, String>,
    /// How many records each existing record shard holds.
    pub shard_lens: HashMap<u32, usize>,
    /// Bytes of JSON of each record, and of all of them, for the size of an inline status.
    record_bytes: Vec<usize>,
    pub inline_bytes: usize,
    /// Bytes of JSON of the pinned definition, which never changes.
    definition_bytes: usize,
    /// Just rebuilt from the API: the next decision looks at every Job of the run once.
    pub fresh: bool,
    /// When the summary was last decided to be written: a large run's summary, when only its
    /// counts changed, is written at most every second.
    pub head_written_at: Option<Timestamp>,
    /// When every running attempt was last looked at; in between, only those whose Job or Pods
    /// changed, those not made yet and those in `recheck`.
    pub scanned_at: Option<Timestamp>,
    /// Running attempts to look at again whatever the watch says: their state depends on the
    /// time too (waiting for a Pod or an image, a result not shown yet).
    pub recheck: std::collections::HashSet<crate::compile::TaskId>,
}

impl RunState {
    /// The state of a run whose status (with every record, joined from its RunShards if it has
    /// them) is `status`. `pod_started(attempt)` says when an attempt's Pod started.
    pub fn restore(
        definition: Arc<Definition>,
        status: &RunStatus,
        resource_version: String,
        sharded: bool,
        now: Timestamp,
        pod_started: impl Fn(AttemptOf) -> Option<Timestamp>,
    ) -> Self {
        let dag = Arc::clone(&definition.dag);
        let engine = Engine::restore(
            Arc::clone(&dag),
            definition.params.clone(),
            status,
            now,
            pod_started,
        );
        let by_name: HashMap<&str, &TaskStatus> =
            status.tasks.iter().map(|t| (t.name.as_str(), t)).collect();
        // In the engine's order, found by name: a slot whose stored record is not its own is
        // written again.
        let mut misplaced = Vec::new();
        let records: Vec<TaskStatus> = (0..engine.slots())
            .map(|i| {
                let slot = TaskId(i as u32);
                let name = engine.slot_name(slot);
                if status.tasks.get(i).is_none_or(|t| t.name != name) {
                    misplaced.push(slot);
                }
                by_name.get(name.as_str()).map_or_else(
                    || TaskStatus {
                        finally: engine.is_finally_slot(slot),
                        ..TaskStatus::pending(name.as_str())
                    },
                    |t| (*t).clone(),
                )
            })
            .collect();
        let written = if sharded {
            status.records.is_some()
        } else {
            status.tasks.len() >= dag.len()
        };
        if !written {
            misplaced.clear(); // the first write sends every record
        }
        let mut state = Self {
            engine,
            definition,
            records,
            stored: status.tasks.len(),
            misplaced,
            head: layout::summary(status),
            written,
            sharded,
            resource_version,
            written_over: None,
            shard_versions: HashMap::new(),
            shard_lens: HashMap::new(),
            record_bytes: Vec::new(),
            inline_bytes: 0,
            definition_bytes: 0,
            fresh: true,
            head_written_at: None,
            scanned_at: None,
            recheck: Default::default(),
        };
        state.definition_bytes = json_len(&state.definition.pinned);
        state.record_bytes = state.records.iter().map(json_len).collect();
        state.inline_bytes = state.record_bytes.iter().sum();
        state
    }

    /// Whether this state is what the API server has for a Run at `version`: the version it was
    /// last written at, or the one just before that write (the watch cache lags a little behind
    /// the controller's own writes; going on from here then is right, and rebuilding would only
    /// cost the work of the whole run).
    pub fn is_current(&self, version: Option<&str>) -> bool {
        version
            .is_some_and(|v| v == self.resource_version || self.written_over.as_deref() == Some(v))
    }

    /// The Run was written: it is now at `version`.
    pub fn written_at(&mut self, version: String) {
        let before = std::mem::replace(&mut self.resource_version, version);
        self.written_over = Some(before);
    }

    /// Makes room for the slots the engine made since (fan-out instances), each with a
    /// placeholder until its record is written. Returns the new slots.
    pub fn grow(&mut self) -> std::ops::Range<usize> {
        let from = self.records.len();
        for i in from..self.engine.slots() {
            let slot = TaskId(i as u32);
            self.records.push(TaskStatus {
                finally: self.engine.is_finally_slot(slot),
                ..TaskStatus::pending(self.engine.slot_name(slot))
            });
            self.record_bytes.push(0);
        }
        from..self.records.len()
    }

    /// Records what a successful write recorded.
    pub fn commit(&mut self, head: Option<RunStatus>, records: &[(usize, TaskStatus)]) {
        if let Some(head) = head {
            self.head = layout::summary(&head);
        }
        self.stored = self
            .stored
            .max(records.iter().map(|(i, _)| i + 1).max().unwrap_or_default());
        for (i, record) in records {
            if let Some(slot) = self.records.get_mut(*i) {
                let bytes = json_len(record);
                self.inline_bytes = self.inline_bytes + bytes - self.record_bytes[*i];
                self.record_bytes[*i] = bytes;
                *slot = record.clone();
            }
        }
        self.written = true;
        self.fresh = false;
    }

    /// The size the inline status would have with `changed` records replaced.
    pub fn inline_size_with(&self, head: &RunStatus, changed: &[(usize, TaskStatus)]) -> usize {
        let summary = layout::summary(head);
        let mut bytes = self.inline_bytes + self.definition_bytes + json_len(&summary);
        for (i, record) in changed {
            bytes = bytes + json_len(record) - self.record_bytes.get(*i).copied().unwrap_or(0);
        }
        bytes
    }

    /// The record of task `i` as it would be stored.
    pub fn stored_record(record: TaskStatus) -> TaskStatus {
        stored(record)
    }
}

fn json_len<T: serde::Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(0, |v| v.len())
}
