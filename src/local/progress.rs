//! What `ork run` shows a person: a line per task event, a live footer of running tasks on a
//! terminal, and a summary table at the end.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use jiff::Timestamp;

use super::database::Watcher;
use super::executor::AttemptFiles;
use crate::api::{Run, RunPhase, RunStatus, TaskPhase, TaskStatus};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// A terminal: colours and a live footer listing running tasks.
    Live,
    /// A pipe or file: one plain line per event.
    Plain,
    /// Nothing but the summary.
    Quiet,
}

/// Prints task events as they are recorded.
pub struct Progress {
    style: Style,
    out: Box<dyn Write + Send>,
    started: Instant,
    total: usize,
    done: usize,
    failed: usize,
    /// Running tasks and when they (this attempt) started, for the footer.
    running: BTreeMap<String, (u32, Instant)>,
    footer_drawn: bool,
}

impl Progress {
    pub fn new(style: Style, out: Box<dyn Write + Send>, total: usize) -> Self {
        Self {
            style,
            out,
            started: Instant::now(),
            total,
            done: 0,
            failed: 0,
            running: BTreeMap::new(),
            footer_drawn: false,
        }
    }

    /// Sets how many tasks the run has, once known (a cluster run's, when first read).
    pub fn set_total(&mut self, total: usize) {
        self.total = total;
    }

    /// On a terminal, a task redrawing the footer five times a second (durations move on);
    /// abort it when the run is over.
    pub fn keep_refreshed(
        progress: &std::sync::Arc<std::sync::Mutex<Progress>>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let live = progress.lock().is_ok_and(|p| p.style == Style::Live);
        let progress = std::sync::Arc::clone(progress);
        live.then(|| {
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_millis(200));
                loop {
                    every.tick().await;
                    if let Ok(mut p) = progress.lock() {
                        p.refresh();
                    }
                }
            })
        })
    }

    /// Redraws the footer (durations move on); called periodically on a terminal.
    pub fn refresh(&mut self) {
        if self.style == Style::Live {
            self.clear_footer();
            self.draw_footer();
        }
    }

    /// Writes text as it is (the summary), on the same stream as the progress lines.
    pub fn write_raw(&mut self, text: &str) {
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    /// Removes the footer for good, before the summary is printed.
    pub fn finish(&mut self) {
        if self.style == Style::Live {
            self.clear_footer();
        }
    }

    fn event(&mut self, word: &str, colour: &str, text: &str) {
        if self.style == Style::Quiet {
            return;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        if self.style == Style::Live {
            self.clear_footer();
            let _ = writeln!(
                self.out,
                "\x1b[2m{elapsed:8.2}s\x1b[0m {colour}{word:<9}\x1b[0m {text}"
            );
            self.draw_footer();
        } else {
            let _ = writeln!(self.out, "{elapsed:8.2}s {word:<9} {text}");
        }
    }

    fn clear_footer(&mut self) {
        if self.footer_drawn {
            let _ = write!(self.out, "\r\x1b[2K");
            self.footer_drawn = false;
        }
    }

    fn draw_footer(&mut self) {
        if self.running.is_empty() {
            let _ = self.out.flush();
            return;
        }
        let now = Instant::now();
        let mut line = format!(
            "\x1b[1m{}/{} done\x1b[0m, {} running:",
            self.done,
            self.total,
            self.running.len()
        );
        for (name, (attempt, since)) in self.running.iter().take(6) {
            let secs = now.duration_since(*since).as_secs_f64();
            let retry = if *attempt > 1 {
                format!(" #{attempt}")
            } else {
                String::new()
            };
            line.push_str(&format!(" {name}{retry} {secs:.1}s"));
        }
        if self.running.len() > 6 {
            line.push_str(&format!(" … +{}", self.running.len() - 6));
        }
        let width = terminal_width();
        let _ = write!(self.out, "{}", truncate_visible(&line, width));
        let _ = self.out.flush();
        self.footer_drawn = true;
    }
}

impl Watcher for Progress {
    fn task_changed(&mut self, before: &TaskStatus, after: &TaskStatus) {
        const GREEN: &str = "\x1b[32m";
        const RED: &str = "\x1b[31m";
        const YELLOW: &str = "\x1b[33m";
        const BLUE: &str = "\x1b[34m";
        const GREY: &str = "\x1b[90m";
        let name = &after.name;
        let detail = after.message.as_deref().unwrap_or("");
        if before.phase == TaskPhase::Running || after.phase != TaskPhase::Running {
            self.running.remove(name);
        }
        if after.phase.is_final() {
            self.done += 1;
        }
        if before.instances.is_none()
            && let Some(count) = after.instances
        {
            // A fan-out: its instances count as tasks from now on.
            self.total += count as usize;
            self.event("fan-out", BLUE, &format!("{name}: {count} instances"));
        }
        match after.phase {
            TaskPhase::Running if after.instances.is_some() => {}
            TaskPhase::Running => {
                self.running
                    .insert(name.clone(), (after.attempts, Instant::now()));
                let text = format!("{name} (attempt {})", after.attempts);
                self.event("started", BLUE, &text);
            }
            TaskPhase::Succeeded => {
                let took = duration(after.started_at, after.finished_at);
                self.event("succeeded", GREEN, &format!("{name} in {took}"));
            }
            TaskPhase::Pending if after.attempts > 0 => {
                self.event("retrying", YELLOW, &format!("{name}: {detail}"));
            }
            TaskPhase::Pending => {}
            TaskPhase::Failed => {
                self.failed += 1;
                let attempts = plural(after.attempts, "attempt");
                self.event("failed", RED, &format!("{name} after {attempts}: {detail}"));
            }
            TaskPhase::Skipped => self.event("skipped", GREY, &format!("{name}: {detail}")),
            TaskPhase::Cancelled => self.event("cancelled", GREY, &format!("{name}: {detail}")),
        }
    }

    fn run_changed(&mut self, _status: &RunStatus) {}
}

/// The task table: one row per task (with many tasks, only those that did not succeed), fan-out
/// instances right after their task, at most 50 rows.
pub fn task_table(tasks: &[TaskStatus], colour: bool) -> String {
    const MAX_ROWS: usize = 50;
    let mut out = String::new();
    // With many tasks, list only those that did not succeed.
    let mut rows: Vec<(usize, &TaskStatus)> = tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| tasks.len() <= MAX_ROWS || t.phase != TaskPhase::Succeeded)
        .collect();
    // Fan-out instances (`TASK[INDEX]`) right after their task, in item order.
    let fan_outs: std::collections::HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| t.instances.is_some())
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    rows.sort_by_key(|&(at, t)| {
        let instance = t.name.strip_suffix(']').and_then(|n| n.split_once('['));
        match instance.and_then(|(task, i)| Some((*fan_outs.get(task)?, i.parse::<usize>().ok()?)))
        {
            Some((task_at, index)) => (task_at, index + 1),
            None => (at, 0),
        }
    });
    let rows: Vec<&TaskStatus> = rows.into_iter().map(|(_, t)| t).collect();
    let width = rows.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    if !rows.is_empty() {
        out.push_str(&format!(
            "\n{:<width$}  {:<9}  {:>8}  {:>9}  DETAIL\n",
            "TASK", "PHASE", "ATTEMPTS", "DURATION"
        ));
    }
    for task in rows.iter().take(MAX_ROWS) {
        let detail = match (task.phase, &task.reason, &task.message) {
            (TaskPhase::Succeeded, _, _) if task.instances.is_some() => {
                task.message.clone().unwrap_or_default()
            }
            (TaskPhase::Succeeded, _, _) => task
                .outputs
                .as_ref()
                .map(|o| serde_json::Value::Object(o.clone()).to_string())
                .unwrap_or_default(),
            (_, _, Some(message)) => message.clone(),
            (_, Some(reason), None) => reason.clone(),
            _ => String::new(),
        };
        let phase = format!("{:?}", task.phase);
        let phase = if colour {
            format!("{}{phase:<9}\x1b[0m", phase_colour(task.phase))
        } else {
            format!("{phase:<9}")
        };
        out.push_str(&format!(
            "{:<width$}  {phase}  {:>8}  {:>9}  {}\n",
            task.name,
            task.attempts,
            duration(task.started_at, task.finished_at),
            one_line(&detail, 100)
        ));
    }
    if rows.len() > MAX_ROWS {
        out.push_str(&format!("… and {} more\n", rows.len() - MAX_ROWS));
    }
    out
}

/// The table printed when the run ends, with the tail of stderr for failed tasks.
pub fn summary(run: &Run, run_dir: &Path, colour: bool) -> String {
    const MAX_FAILURE_LOGS: usize = 3;
    let Some(status) = &run.status else {
        return String::new();
    };
    let name = run.metadata.name.as_deref().unwrap_or("run");
    let mut out = task_table(&status.tasks, colour);
    for task in status
        .tasks
        .iter()
        .filter(|t| t.phase == TaskPhase::Failed && t.attempts > 0)
        .take(MAX_FAILURE_LOGS)
    {
        let files = AttemptFiles::new(run_dir, &task.name, task.attempts);
        let tail = tail_lines(&files.stderr, 5);
        if !tail.is_empty() {
            out.push_str(&format!(
                "\nstderr of {} (attempt {}), last lines:\n",
                task.name, task.attempts
            ));
            for line in tail {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    let phase = status.phase.unwrap_or(RunPhase::Pending);
    let message = status.message().unwrap_or_default();
    out.push_str(&format!(
        "\nRun {name} {phase:?} in {}: {message}\nLogs: {}\n",
        duration(status.started_at, status.finished_at),
        run_dir.display()
    ));
    if status.phase != Some(RunPhase::Succeeded) {
        out.push_str(&format!(
            "Run it again, reusing what succeeded: ork run --rerun-of {}\n",
            run_dir.join("run.json").display()
        ));
    }
    out
}

fn phase_colour(phase: TaskPhase) -> &'static str {
    match phase {
        TaskPhase::Succeeded => "\x1b[32m",
        TaskPhase::Failed => "\x1b[31m",
        TaskPhase::Running => "\x1b[34m",
        TaskPhase::Pending | TaskPhase::Skipped | TaskPhase::Cancelled => "\x1b[90m",
    }
}

/// `1.23s`, `2m03s`, or `-` when the task did not run.
fn duration(start: Option<Timestamp>, end: Option<Timestamp>) -> String {
    let (Some(start), Some(end)) = (start, end) else {
        return "-".into();
    };
    let secs = end.duration_since(start).as_secs_f64().max(0.0);
    if secs < 60.0 {
        format!("{secs:.2}s")
    } else {
        format!("{}m{:02}s", (secs / 60.0) as u64, (secs % 60.0) as u64)
    }
}

fn plural(n: u32, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > max {
        let cut: String = line.chars().take(max - 1).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    // Only the end matters: a huge log is not read whole.
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut tail = Vec::new();
    if file
        .seek(SeekFrom::Start(len.saturating_sub(4096)))
        .is_err()
        || file.read_to_end(&mut tail).is_err()
    {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&tail);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| one_line(l, 200))
        .collect()
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100)
}

/// Cuts `line` to `width` visible characters, not counting escape sequences.
fn truncate_visible(line: &str, width: usize) -> String {
    let mut out = String::with_capacity(line.len());
    let mut visible = 0;
    let mut in_escape = false;
    for c in line.chars() {
        if c == '\x1b' {
            in_escape = true;
        }
        if in_escape {
            out.push(c);
            if c.is_ascii_alphabetic() {
                in_escape = false;
            }
            continue;
        }
        if visible + 1 >= width {
            break;
        }
        out.push(c);
        visible += 1;
    }
    out.push_str("\x1b[0m");
    out
}
