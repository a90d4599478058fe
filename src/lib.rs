//! ork: a Kubernetes-native workflow orchestrator that also runs workflows on a laptop.
//!
//! - [`api`]: the `Workflow`, `Run` and `Schedule` resources, shared by every driver.
//! - [`manifest`]: reading manifests from YAML files.
//! - [`compile`]: the one validator, compiling a workflow into a [`compile::Dag`].
//! - [`engine`]: the pure scheduling state machine.
//! - [`drawing`]: a workflow's DAG as DOT, Mermaid or SVG (`ork graph`).
//! - [`task_env`]: what a task sees (environment, `$(VAR)` expansion), identical in every driver.
//! - [`driver`]: the `Database` / `Executor` seams and the `Scheduler` loop that joins them.
//! - [`local`]: the local driver behind `ork run`: in-memory database, process executor.
//! - [`schedule`]: when a `Schedule` ticks and what each tick does (pure).
//! - [`text`]: bounding names, lists and messages taken from input before they are echoed.

pub mod api;
pub mod cli;
pub mod compile;
pub mod dashboard;
pub mod drawing;
pub mod driver;
pub mod engine;
pub mod kubernetes;
pub mod local;
pub mod manifest;
pub mod problem;
pub mod schedule;
pub mod task_env;
pub mod text;
