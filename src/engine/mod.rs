//! The pure scheduling engine: given a compiled DAG, what has happened and the time, it decides
//! what to do next. No I/O, no clock, no Kubernetes types: drivers feed it events with the
//! current time and carry out the [`Action`]s it queues.
//!
//! Work per event is constant (amortised): indegree counters and a ready queue replace any walk
//! of the graph, timers sit in a heap, and failure propagation visits each skipped task once.

mod outcome;
mod restore;
mod state;
mod status;

#[cfg(test)]
mod tests;

pub use outcome::{MAX_OUTPUT_BYTES, Outcome, parse_output};
pub use state::{
    Action, AttemptOf, Engine, FinallyEnv, INFRA_REASONS, Instance, KillReason, Launch,
    MAX_FAILED_TASKS_BYTES, MAX_GATHERED_BYTES, MAX_HISTORY, MAX_INFRA_RETRIES, MAX_RUN_INSTANCES,
    instance_name,
};
pub use status::{CANCELLED_RUNNING_FINALLY, DEADLINE_RUNNING_FINALLY};
