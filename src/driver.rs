//! The seams between the pure engine and the world, and the loop that joins them.
//!
//! A driver supplies a [`Database`] (where run state is kept) and an [`Executor`] (what runs an
//! attempt). The [`Scheduler`] feeds the executor's [`StatusUpdate`]s, timers and cancellation
//! into the engine and carries out the engine's actions. The local runner uses it with an
//! in-memory database and processes; the Kubernetes controller keeps state in the API server and
//! runs attempts as Jobs.

use std::future::Future;

use jiff::Timestamp;

use crate::compile::TaskId;
use crate::engine::{Action, Engine, Launch, Outcome};

/// Failures of the machinery itself (not of tasks, which are [`Outcome`]s).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot record run state: {0}")]
    Database(String),
    #[error("executor failed: {0}")]
    Executor(String),
    #[error("the run stalled: no task can start and nothing is running (this is a bug in ork)")]
    Stalled,
}

/// How an attempt ended, as reported by an executor.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate {
    pub task: TaskId,
    pub attempt: u32,
    pub outcome: Outcome,
    /// When it ended (not when the report was read): the engine orders it among its timers by
    /// this time, so a success just before a timeout stays a success.
    pub at: Timestamp,
}

/// Where run state is kept.
pub trait Database {
    /// Records the run-level status and the status of the tasks in `changed`. Called after every
    /// batch of events; `changed` holds each changed task once.
    fn record(
        &mut self,
        engine: &Engine,
        changed: &[TaskId],
    ) -> impl Future<Output = Result<(), DriverError>>;
}

/// What runs attempts.
pub trait Executor {
    /// Starts an attempt. A task that cannot start is reported as a failed [`StatusUpdate`],
    /// not as an error; errors are for the executor itself being broken.
    fn start(&mut self, launch: &Launch) -> impl Future<Output = Result<(), DriverError>>;
    /// Stops an attempt; its end is still reported through [`next_update`](Self::next_update).
    fn kill(&mut self, task: TaskId, attempt: u32)
    -> impl Future<Output = Result<(), DriverError>>;
    /// The next attempt to end. Only awaited while [`active`](Self::active) is non-zero.
    fn next_update(&mut self) -> impl Future<Output = Option<StatusUpdate>>;
    /// Attempts started and not yet reported.
    fn active(&self) -> usize;
}

/// The time source; injected so the loop can be driven in tests.
pub trait Clock {
    fn now(&self) -> Timestamp;
}

/// The machine's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    /// Millisecond precision: enough for task durations, and statuses stay readable.
    fn now(&self) -> Timestamp {
        let now = Timestamp::now();
        Timestamp::from_millisecond(now.as_millisecond()).unwrap_or(now)
    }
}

/// Runs one engine to completion against a database and an executor.
pub struct Scheduler<D, E, C = SystemClock> {
    pub engine: Engine,
    pub database: D,
    pub executor: E,
    pub clock: C,
}

impl<D: Database, E: Executor, C: Clock> Scheduler<D, E, C> {
    /// Drives the run until it is finished and every attempt has been reaped. Each item of
    /// `stops` is a request to stop: the first cancels the run (running attempts are killed,
    /// the finally tasks run), the second stops the finally tasks too. One ready at once
    /// cancels the run before anything starts.
    pub async fn run(
        mut self,
        stops: impl futures::Stream<Item = ()>,
    ) -> Result<(Engine, D), DriverError> {
        use futures::StreamExt;
        let mut stops = std::pin::pin!(stops);
        let mut stopped = 0u8;
        // A run cancelled before it starts starts nothing, not even its finally tasks.
        if let std::task::Poll::Ready(Some(())) = futures::poll!(stops.next()) {
            stopped = 1;
            self.engine.cancel(self.clock.now());
        }
        self.engine.start(self.clock.now());
        self.flush().await?;
        while !(self.engine.is_finished() && self.executor.active() == 0) {
            let wakeup = self.engine.next_wakeup();
            if self.executor.active() == 0 && wakeup.is_none() && !self.engine.is_finished() {
                return Err(DriverError::Stalled);
            }
            let sleep = tokio::time::sleep(until(wakeup, self.clock.now()));
            tokio::select! {
                // Reports first: one already waiting ended before a timer that is due now.
                biased;
                update = self.executor.next_update(), if self.executor.active() > 0 => {
                    if let Some(update) = update {
                        let at = update.at.min(self.clock.now());
                        self.engine.finish_attempt(update.task, update.attempt, update.outcome, at);
                    }
                }
                () = sleep, if wakeup.is_some() => self.engine.tick(self.clock.now()),
                Some(()) = stops.next(), if stopped < 2 => {
                    stopped += 1;
                    if stopped == 1 {
                        self.engine.cancel(self.clock.now());
                    } else {
                        self.engine.abort(self.clock.now());
                    }
                }
            }
            // Timers that fell due while waiting for an update are handled in the same batch.
            self.engine.tick(self.clock.now());
            self.flush().await?;
        }
        Ok((self.engine, self.database))
    }

    /// Carries out queued actions and records what changed.
    async fn flush(&mut self) -> Result<(), DriverError> {
        for action in self.engine.take_actions() {
            match action {
                Action::Start(launch) => self.executor.start(&launch).await?,
                Action::Kill { task, attempt, .. } => self.executor.kill(task, attempt).await?,
            }
        }
        let changed = self.engine.take_changes();
        self.database.record(&self.engine, &changed).await
    }
}

/// How long to sleep until `wakeup`: zero if it has passed, at most a day (a wakeup at the end
/// of time just means looking again tomorrow).
fn until(wakeup: Option<Timestamp>, now: Timestamp) -> std::time::Duration {
    const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);
    match wakeup {
        Some(at) => std::time::Duration::try_from(at.duration_since(now))
            .unwrap_or_default()
            .min(DAY),
        None => DAY,
    }
}
