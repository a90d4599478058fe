//! The dashboard's view of the one run `ork run --dashboard` is running: its records as the
//! local driver writes them, its logs from the run's directory, and its cancel button.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};

use super::view::{self, Rights, RunSummary, RunView};
use super::{ApiError, Context, LogBody};
use crate::api::{Run, RunPhase, RunStatus, TaskStatus};
use crate::drawing::Layout;
use crate::local::{AttemptFiles, Watcher};

/// The namespace a local run is shown in.
pub const LOCAL_NAMESPACE: &str = "local";
/// How often a followed log file is read again.
const LOG_POLL: Duration = Duration::from_millis(200);

pub struct LocalSource {
    run: watch::Receiver<Run>,
    run_dir: PathBuf,
    cancel: mpsc::UnboundedSender<()>,
    /// Set by the first cancel: a second stop would also stop the finally tasks, which the
    /// page's one button must not do.
    cancelled: Arc<std::sync::atomic::AtomicBool>,
    graph: Option<Layout>,
}

/// Passes each change to the run's own progress printer and to the dashboard.
pub struct Tee {
    pub first: Arc<Mutex<dyn Watcher>>,
    pub live: watch::Sender<Run>,
}

impl Watcher for Tee {
    fn task_changed(&mut self, before: &TaskStatus, after: &TaskStatus) {
        if let Ok(mut first) = self.first.lock() {
            first.task_changed(before, after);
        }
        self.live.send_modify(|run| {
            let status = run.status.get_or_insert_default();
            match status.tasks.iter_mut().find(|t| t.name == after.name) {
                Some(task) => *task = after.clone(),
                None => status.tasks.push(after.clone()),
            }
            // The driver tells the run's own fields only when its phase changes: keep the
            // progress moving meanwhile (records with instances count through them).
            let counted = status.tasks.iter().filter(|t| t.instances.is_none());
            let (done, all) = counted.fold((0, 0), |(done, all), t| {
                (
                    done + usize::from(t.phase == crate::api::TaskPhase::Succeeded),
                    all + 1,
                )
            });
            status.progress = Some(format!("{done}/{all}"));
        });
    }

    fn run_changed(&mut self, status: &RunStatus) {
        if let Ok(mut first) = self.first.lock() {
            first.run_changed(status);
        }
        self.live.send_modify(|run| {
            let pinned = run.status.as_ref().and_then(|s| s.workflow.clone());
            let mut status = status.clone();
            status.workflow = status.workflow.or(pinned);
            run.status = Some(status);
        });
    }
}

impl LocalSource {
    /// `run` as planned (its tasks all Pending); changes come through `live`'s sender.
    pub fn new(
        run: watch::Receiver<Run>,
        run_dir: PathBuf,
        cancel: mpsc::UnboundedSender<()>,
        graph: Option<Layout>,
    ) -> Self {
        Self {
            run,
            run_dir,
            cancel,
            cancelled: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            graph,
        }
    }

    fn current(&self) -> Run {
        shown(&self.run.borrow(), self.cancelled())
    }

    fn cancelled(&self) -> bool {
        self.cancelled.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn rights() -> Rights {
        Rights {
            patch: true,
            create: false,
            suspend: false,
        }
    }

    pub fn context(&self) -> Context {
        Context {
            mode: "local",
            namespace: LOCAL_NAMESPACE.into(),
            namespaces: Some(vec![LOCAL_NAMESPACE.into()]),
        }
    }

    pub fn runs(&self, namespace: &str) -> Vec<RunSummary> {
        if namespace != LOCAL_NAMESPACE {
            return Vec::new();
        }
        vec![view::summary(&self.current())]
    }

    fn check(&self, namespace: &str, name: &str) -> Result<(), ApiError> {
        let ours = self.run.borrow().metadata.name.clone().unwrap_or_default();
        if namespace == LOCAL_NAMESPACE && name == ours {
            return Ok(());
        }
        Err(ApiError::new(
            404,
            format!("no run \"{name}\" here: this dashboard shows the local run \"{ours}\""),
        ))
    }

    pub fn run(&self, namespace: &str, name: &str) -> Result<RunView, ApiError> {
        self.check(namespace, name)?;
        Ok(view::run_view(
            &self.current(),
            Self::rights(),
            self.graph.clone(),
        ))
    }

    pub fn watch(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<impl Stream<Item = Option<RunView>> + Send + 'static, ApiError> {
        self.check(namespace, name)?;
        let run = self.run.clone();
        let cancelled = Arc::clone(&self.cancelled);
        Ok(futures::stream::unfold(
            (run, true),
            move |(mut run, first)| {
                let cancelled = Arc::clone(&cancelled);
                async move {
                    if !first && run.changed().await.is_err() {
                        // The run has ended and nothing will change again: stay connected,
                        // quietly, rather than have the page reconnect over and over.
                        futures::future::pending::<()>().await;
                    }
                    let cancelled = cancelled.load(std::sync::atomic::Ordering::SeqCst);
                    let current = shown(&run.borrow_and_update(), cancelled);
                    let view = view::run_view(&current, LocalSource::rights(), None);
                    Some((Some(view), (run, false)))
                }
            },
        ))
    }

    pub fn logs(
        &self,
        namespace: &str,
        name: &str,
        task: &str,
        attempt: Option<u32>,
        follow: bool,
    ) -> Result<LogBody, ApiError> {
        self.check(namespace, name)?;
        let (_, number) = view::attempt_of(&self.current(), task, attempt)?;
        let files = AttemptFiles::new(&self.run_dir, task, number);
        let run = self.run.clone();
        let task = task.to_string();
        // Both files are read as they grow; the attempt's end (or the run's) ends the stream,
        // once everything written before it has been read.
        let chunks = futures::stream::unfold((files, [0u64; 2], run), move |state| {
            let task = task.clone();
            async move {
                let (files, mut offsets, run) = state;
                loop {
                    let over = !follow || attempt_over(&run.borrow(), &task, number);
                    let mut out = Vec::new();
                    for (i, path) in [&files.stdout, &files.stderr].into_iter().enumerate() {
                        if let Ok(bytes) = read_from(path, offsets[i]).await {
                            offsets[i] += bytes.len() as u64;
                            out.extend(bytes);
                        }
                    }
                    if !out.is_empty() {
                        return Some((Ok(out), (files, offsets, run)));
                    }
                    if over {
                        return None;
                    }
                    tokio::time::sleep(LOG_POLL).await;
                }
            }
        });
        Ok(chunks.boxed())
    }

    pub fn cancel(&self, namespace: &str, name: &str) -> Result<String, ApiError> {
        self.check(namespace, name)?;
        if self
            .current()
            .status
            .and_then(|s| s.phase)
            .is_some_and(RunPhase::is_final)
        {
            return Err(ApiError::new(
                409,
                format!("run \"{name}\" has already ended"),
            ));
        }
        if self
            .cancelled
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(ApiError::new(
                409,
                format!("run \"{name}\" is already being cancelled (its finally tasks run)"),
            ));
        }
        self.cancel
            .send(())
            .map_err(|_| ApiError::new(409, format!("run \"{name}\" has already ended")))?;
        Ok(format!("Run \"{name}\": cancel requested"))
    }
}

/// The run as the page sees it: in the `local` namespace, cancelled once asked to be.
fn shown(run: &Run, cancelled: bool) -> Run {
    let mut run = run.clone();
    run.metadata.namespace = Some(LOCAL_NAMESPACE.into());
    run.spec.cancel |= cancelled;
    run
}

/// Whether attempt `number` of record `task` has ended.
fn attempt_over(run: &Run, task: &str, number: u32) -> bool {
    let Some(status) = &run.status else {
        return false;
    };
    if status.phase.is_some_and(RunPhase::is_final) {
        return true;
    }
    status
        .tasks
        .iter()
        .find(|t| t.name == task)
        .is_none_or(|t| t.attempts > number || (t.phase != crate::api::TaskPhase::Running))
}

/// What `path` holds from byte `offset` on (at most 1 MiB at a time).
async fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut out = Vec::new();
    file.take(1 << 20).read_to_end(&mut out).await?;
    Ok(out)
}
