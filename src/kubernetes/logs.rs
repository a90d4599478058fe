//! `ork logs RUN [TASK] [--attempt N] [-f]`: a task's output from its Pod, found by name rather
//! than guessed. With no TASK (or a fan-out task's name), every task's lines come interleaved,
//! each with its task's name in front; with `-f`, tasks that start later are picked up too, until
//! the run has ended and every stream has run dry.

use std::collections::HashSet;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, ListParams, LogParams};
use tokio::sync::mpsc;

use super::get::full_run;
use super::job::CONTAINER;
use super::names::attempt_job_name;
use super::run_commands::{CommandError, explain};
use crate::api::{Run, TaskStatus};
use crate::text::quoted;
use k8s_openapi::api::core::v1::Pod;

/// How often `-f` looks for attempts that started.
const LOOK_AGAIN: Duration = Duration::from_secs(1);
/// Longest line passed on whole; a longer one comes in pieces of this size (a task printing
/// without newlines cannot grow our memory).
const MAX_LINE: usize = 64 * 1024;

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct LogRequest {
    pub run: String,
    /// A task, a fan-out instance (`p[3]`), or a fan-out task (all its instances).
    pub task: Option<String>,
    /// The attempt; the latest by default.
    pub attempt: Option<u32>,
    pub follow: bool,
}

/// One attempt of one record: whose lines, and which Job ran them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Attempt {
    record: String,
    number: u32,
    job: String,
}

/// `p[3]` → (`p`, 3); a task's own name → (name, None).
pub fn split_instance(record: &str) -> (&str, Option<u32>) {
    if let Some(open) = record.find('[')
        && let Some(index) = record[open + 1..].strip_suffix(']')
        && let Ok(index) = index.parse()
    {
        return (&record[..open], Some(index));
    }
    (record, None)
}

/// The records `task` names: itself, or each instance of a fan-out task; every leaf record when
/// no task is named. Records that fan out are left out: their instances have the Pods.
fn selected<'a>(tasks: &'a [TaskStatus], task: Option<&str>) -> Vec<&'a TaskStatus> {
    tasks
        .iter()
        .filter(|t| t.instances.is_none())
        .filter(|t| match task {
            None => true,
            Some(name) => t.name == name || split_instance(&t.name).0 == name,
        })
        .collect()
}

/// The attempts of `records` to show now: the one asked for, else the latest started.
fn attempts_of(run: &str, records: &[&TaskStatus], attempt: Option<u32>) -> Vec<Attempt> {
    let mut ordered: Vec<&&TaskStatus> = records.iter().filter(|t| t.attempts > 0).collect();
    ordered.sort_by_key(|t| t.started_at);
    ordered
        .into_iter()
        .filter_map(|t| {
            let number = attempt.unwrap_or(t.attempts);
            (number >= 1 && number <= t.attempts).then(|| {
                let (task, instance) = split_instance(&t.name);
                Attempt {
                    record: t.name.clone(),
                    number,
                    job: attempt_job_name(run, task, instance, number),
                }
            })
        })
        .collect()
}

fn no_such_task(run: &Run, task: &str) -> CommandError {
    let names: Vec<&str> = run
        .status
        .iter()
        .flat_map(|s| &s.tasks)
        .filter(|t| !t.name.contains('['))
        .map(|t| t.name.as_str())
        .collect();
    CommandError(format!(
        "Run {} has no task {} (its tasks: {})",
        quoted(run.metadata.name.as_deref().unwrap_or("?")),
        quoted(task),
        crate::text::list(names, |n| n.to_string())
    ))
}

/// Prints the logs `request` asks for on `out`, line by line.
pub async fn logs(
    client: &Client,
    namespace: &str,
    request: &LogRequest,
    out: mpsc::UnboundedSender<String>,
) -> Result<(), CommandError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut streaming: HashSet<Attempt> = HashSet::new();
    let mut streams = tokio::task::JoinSet::new();
    loop {
        if out.is_closed() {
            return Ok(()); // nobody reads any more (e.g. `ork logs -f | head`)
        }
        let run = match full_run(client, namespace, &request.run).await {
            Ok(run) => run,
            // Following, a passing failure only delays the next look.
            Err(super::Error::Kube(kube::Error::Api(status)))
                if request.follow && ![403, 404].contains(&status.code) =>
            {
                tokio::time::sleep(LOOK_AGAIN).await;
                continue;
            }
            Err(super::Error::Kube(e @ kube::Error::Api(_))) => {
                return Err(explain(e, "get", &request.run, namespace));
            }
            Err(_) if request.follow => {
                tokio::time::sleep(LOOK_AGAIN).await;
                continue;
            }
            Err(super::Error::Kube(e)) => return Err(explain(e, "get", &request.run, namespace)),
            Err(other) => return Err(CommandError(other.to_string())),
        };
        let tasks = run.status.as_ref().map_or(&[][..], |s| &s.tasks);
        let records = selected(tasks, request.task.as_deref());
        if let Some(task) = &request.task
            && records.is_empty()
            && !tasks.is_empty()
            && !tasks.iter().any(|t| &t.name == task)
        {
            return Err(no_such_task(&run, task));
        }
        let ended = run
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_final());
        let attempts = attempts_of(&request.run, &records, request.attempt);
        if !request.follow && attempts.is_empty() {
            return Err(CommandError(match &request.task {
                Some(task) => format!("task {} has not started yet", quoted(task)),
                None => format!("no task of Run {} has started yet", quoted(&request.run)),
            }));
        }
        for attempt in attempts {
            if streaming.contains(&attempt) {
                continue;
            }
            let Some(pod) = pod_of(&pods, &attempt).await? else {
                if !request.follow || ended {
                    let _ = out.send(missing(&attempt, &records));
                    streaming.insert(attempt);
                }
                continue;
            };
            if request.follow && !started(&pod) && !ended {
                continue; // its container has not started: look again soon
            }
            streaming.insert(attempt.clone());
            // Lines say whose they are unless they are exactly the one task asked for.
            let prefix =
                (request.task.as_deref() != Some(&attempt.record)).then(|| attempt.record.clone());
            let params = LogParams {
                container: Some(CONTAINER.into()),
                follow: request.follow,
                ..LogParams::default()
            };
            let pods = pods.clone();
            let out = out.clone();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let stream = async move { copy_lines(&pods, &name, &params, prefix, &out).await };
            if request.follow {
                streams.spawn(stream);
            } else {
                stream.await;
            }
        }
        if !request.follow {
            return Ok(());
        }
        if ended && streams.is_empty() {
            return Ok(());
        }
        // Reap finished streams while waiting to look again.
        let wait = tokio::time::sleep(LOOK_AGAIN);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                () = out.closed() => return Ok(()),
                done = streams.join_next(), if !streams.is_empty() => if done.is_none() { break },
            }
        }
    }
}

/// The newest Pod of `attempt`'s Job.
async fn pod_of(pods: &Api<Pod>, attempt: &Attempt) -> Result<Option<Pod>, CommandError> {
    let listed = pods
        .list(&ListParams::default().labels(&format!("job-name={}", attempt.job)))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 403 => CommandError(
                "forbidden: your RBAC role does not let you list pods in this namespace (ask \
                 for list on pods and get on pods/log)"
                    .into(),
            ),
            other => CommandError(format!(
                "cannot list the Pods of Job {}: {other}",
                attempt.job
            )),
        })?;
    Ok(listed
        .items
        .into_iter()
        .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0)))
}

/// Whether the task container has started (its logs can be read).
pub fn started(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.name == CONTAINER)
        .any(|c| {
            c.state
                .as_ref()
                .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
        })
}

/// Why an attempt has no logs to show.
fn missing(attempt: &Attempt, records: &[&TaskStatus]) -> String {
    let record = records.iter().find(|t| t.name == attempt.record);
    if let Some(from) = record.and_then(|t| t.reused_from.as_deref()) {
        return format!(
            "{}: reused from Run {}: its logs are there (ork logs {from} {})",
            attempt.record,
            quoted(from),
            attempt.record
        );
    }
    format!(
        "{}: attempt {} has no Pod (Job {}): it was never created or has been deleted (a Job's \
         ttlSecondsAfterFinished deletes its Pod and logs)",
        attempt.record, attempt.number, attempt.job
    )
}

/// Sends each line of a Pod's log to `out`, with `prefix` in front when given.
async fn copy_lines(
    pods: &Api<Pod>,
    pod: &str,
    params: &LogParams,
    prefix: Option<String>,
    out: &mpsc::UnboundedSender<String>,
) {
    let shown = |line: &str| match &prefix {
        Some(p) => format!("{p} | {line}"),
        None => line.to_string(),
    };
    let reader = match pods.log_stream(pod, params).await {
        Ok(reader) => reader,
        Err(kube::Error::Api(s)) => {
            let _ = out.send(shown(&format!("(no logs: {})", s.message)));
            return;
        }
        Err(e) => {
            let _ = out.send(shown(&format!("(no logs: {e})")));
            return;
        }
    };
    let mut reader = std::pin::pin!(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_line(&mut reader, &mut line).await {
            Ok(0) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.strip_suffix('\n').unwrap_or(&text);
                if out
                    .send(shown(text.strip_suffix('\r').unwrap_or(text)))
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                let _ = out.send(shown(&format!("(log stream broke off: {e})")));
                return;
            }
        }
    }
}

/// Reads one line (with its `\n`) into `line`, or [`MAX_LINE`] bytes of a longer one (the rest
/// comes as the next lines): a task printing without newlines cannot grow our memory, and what
/// it prints still shows. Ok(0) at the end.
async fn read_line(
    reader: &mut (impl futures::AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    use futures::AsyncBufReadExt as _;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(line.len());
        }
        let room = MAX_LINE - line.len();
        let window = &available[..available.len().min(room)];
        let (taken, done) = match window.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (window.len(), window.len() == room),
        };
        line.extend_from_slice(&window[..taken]);
        reader.consume_unpin(taken);
        if done {
            return Ok(line.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TaskPhase;

    fn record(name: &str, attempts: u32, instances: Option<u32>) -> TaskStatus {
        TaskStatus {
            phase: TaskPhase::Running,
            attempts,
            instances,
            ..TaskStatus::pending(name)
        }
    }

    #[test]
    fn a_fan_out_task_means_its_instances() {
        let tasks = [
            record("a", 1, None),
            record("p", 1, Some(2)),
            record("p[0]", 1, None),
            record("p[1]", 2, None),
            record("pp", 1, None),
        ];
        let names = |task| -> Vec<String> {
            selected(&tasks, task)
                .iter()
                .map(|t| t.name.clone())
                .collect()
        };
        assert_eq!(names(Some("p")), ["p[0]", "p[1]"]);
        assert_eq!(names(Some("p[1]")), ["p[1]"]);
        assert_eq!(names(None), ["a", "p[0]", "p[1]", "pp"]);
        let chosen = selected(&tasks, Some("p"));
        let latest = attempts_of("r", &chosen, None);
        assert_eq!(latest[1].job, "r.p.1-2");
        assert_eq!(
            attempts_of("r", &chosen, Some(2)).len(),
            1,
            "p[0] had no attempt 2"
        );
        assert_eq!(split_instance("p[12]"), ("p", Some(12)));
        assert_eq!(split_instance("plain"), ("plain", None));
    }

    #[tokio::test]
    async fn lines_are_bounded_and_bytes_that_are_not_utf8_still_show() {
        let mut long = vec![b'x'; MAX_LINE + 10];
        long.extend_from_slice(b"\nnext\xff\r\nlast");
        let mut reader = futures::io::Cursor::new(long);
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            if read_line(&mut reader, &mut line).await.unwrap() == 0 {
                break;
            }
            lines.push(line);
        }
        let sizes: Vec<usize> = lines.iter().map(Vec::len).collect();
        assert_eq!(sizes, [MAX_LINE, 11, 7, 4]);
        assert_eq!(String::from_utf8_lossy(&lines[2]), "next\u{fffd}\r\n");
    }
}
