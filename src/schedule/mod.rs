//! Schedules: when a `Schedule` ticks and what each tick does. Pure (no I/O, no clock), shared
//! by the Kubernetes controller and `ork schedule next`.

pub mod check;
pub mod decide;
pub mod ticks;

#[cfg(test)]
mod tests;

pub use decide::{NewRun, Note, Observed, Plan, ScheduledRun, decide, run_name};
pub use ticks::{Ticks, TicksError};
