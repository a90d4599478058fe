//! The Kubernetes driver: `Workflow`, `Run` and `Schedule` custom resources reconciled by a controller that
//! runs each task attempt as a `batch/v1` Job and keeps all state in the API server.
//!
//! The engine is the same as the local runner's; here the "database" is the Run's status
//! subresource and the "executor" is the Job controller plus the kubelet.

pub mod client;
pub mod context;
pub mod controller;
pub mod crd;
pub mod decide;
pub mod definition;
pub mod error;
pub mod get;
pub mod http;
pub mod index;
mod invalid;
pub mod job;
pub mod layout;
pub mod leader;
pub mod logs;
pub mod metrics;
pub mod names;
pub mod observe;
pub mod run_commands;
mod run_reconciler;
pub mod schedule_reconciler;
pub mod state;
pub mod submit;
pub mod watch_run;
mod workflow_reconciler;
pub mod workspaces;

pub use controller::{Settings, run};
pub use error::Error;
pub use leader::LeaderElection;
pub use metrics::Metrics;
