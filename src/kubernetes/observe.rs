//! Reading where an attempt stands from its Job and Pods: how it ended and when, when it
//! started, and why it is not running yet. Pure, so every case is unit-tested.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};

use super::job::CONTAINER;
use crate::engine::Outcome;
use crate::text;

/// Container waiting reasons that will not resolve by themselves: the attempt fails at once.
const FATAL_WAITING: [&str; 4] = [
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Container waiting reasons of an image that cannot be pulled (yet): the kubelet keeps trying,
/// so ork gives up after the configured time.
const PULL_WAITING: [&str; 2] = ["ErrImagePull", "ImagePullBackOff"];

/// Pod failure reasons that mean the attempt ran past its timeout (the Pod's own deadline).
const DEADLINE_REASON: &str = "DeadlineExceeded";

/// Terminated reasons that say nothing beyond the exit code.
const PLAIN_REASONS: [&str; 2] = ["Error", "Completed"];

/// Largest piece of a kubelet or API message copied into a task's message.
const MAX_DETAIL_BYTES: usize = 1024;

/// Where one attempt stands, as far as its Job and Pods tell.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// How the attempt ended, and when it really did (the container's `finishedAt`) when the
    /// objects say; `None` while it goes on.
    pub end: Option<(Outcome, Option<Timestamp>)>,
    /// When its Pod started on a node: the kubelet counts the Pod's deadline (the task's
    /// timeout) from here, and so does the engine.
    pub started: Option<Timestamp>,
    /// Why it has not started running yet, for the task's message.
    pub waiting: Option<String>,
}

/// What the observation needs beyond the objects.
#[derive(Clone, Copy, Debug)]
pub struct ObserveContext<'a> {
    pub now: Timestamp,
    /// How long an image that cannot be pulled is waited for; `None`: for ever.
    pub image_pull_timeout: Option<SignedDuration>,
    /// Why the Job has no Pod (its latest `FailedCreate` Event), when known.
    pub failed_create: Option<&'a str>,
}

/// Where the attempt run by `job` stands, from the Job and its Pods (normally one).
///
/// The Job's and the Pods' watch events arrive independently and the result (exit code,
/// outputs) is only on the Pod, so a Job that ended with no Pod showing the result is not an
/// end yet: see [`job_verdict`] for when the Pods are known to be gone.
pub fn observe_attempt(job: &Job, pods: &[&Pod], cx: ObserveContext<'_>) -> Observation {
    let started = pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.start_time.as_ref())
        .map(|t| t.0)
        .min();
    let end = attempt_end(job, pods, cx);
    let waiting = if end.is_none() {
        waiting_reason(job, pods, cx)
    } else {
        None
    };
    Observation {
        end,
        started,
        waiting,
    }
}

fn attempt_end(
    job: &Job,
    pods: &[&Pod],
    cx: ObserveContext<'_>,
) -> Option<(Outcome, Option<Timestamp>)> {
    // A Job-level deadline (Jobs made by earlier versions of ork).
    if let Some(condition) = job_condition(job, "Failed")
        && condition.reason == DEADLINE_REASON
    {
        return Some((Outcome::TimedOut, condition.at));
    }
    for pod in pods {
        if let Some(end) = pod_end(pod) {
            return Some(end);
        }
    }
    pods.iter().find_map(|pod| stuck(pod, cx))
}

/// Whether the Pod shows how its attempt ended by itself (not a kill by its deletion).
pub fn pod_has_result(pod: &Pod) -> bool {
    pod_end(pod).is_some()
}

/// How a Pod's attempt ended, once the Pod is in a final phase (or its task container has
/// terminated and the Pod is failing for its deadline).
fn pod_end(pod: &Pod) -> Option<(Outcome, Option<Timestamp>)> {
    let status = pod.status.as_ref()?;
    let phase = status.phase.as_deref();
    let container = task_container(pod);
    let terminated = container.and_then(|c| c.state.as_ref()?.terminated.as_ref());
    let finished = terminated.and_then(|t| t.finished_at.as_ref()).map(|t| t.0);
    if phase == Some("Failed") && status.reason.as_deref() == Some(DEADLINE_REASON) {
        return Some((Outcome::TimedOut, finished));
    }
    if !matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let Some(terminated) = terminated else {
        // Failed with no container result, e.g. evicted: see `stuck`.
        return None;
    };
    // A Pod being deleted whose container was killed is not the attempt's own end: whoever
    // deleted it (ork stopping the attempt, a person) decides, and the Job or its absence says.
    let killed = matches!(terminated.exit_code, 137 | 143);
    if killed && pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    Some((terminated_outcome(terminated), finished))
}

/// A terminated container's outcome: its exit code and outputs, or for a non-zero exit with a
/// telling reason (`OOMKilled`, `ContainerCannotRun`, …) that reason.
fn terminated_outcome(terminated: &ContainerStateTerminated) -> Outcome {
    let code = terminated.exit_code;
    let reason = terminated.reason.as_deref().unwrap_or("Error");
    if code == 0 {
        let output = terminated.message.clone().unwrap_or_default().into_bytes();
        return Outcome::Exited { code, output };
    }
    if PLAIN_REASONS.contains(&reason) {
        return Outcome::Exited {
            code,
            output: Vec::new(),
        };
    }
    let detail = match reason {
        "OOMKilled" => "the container ran out of memory (its memory limit) and was killed".into(),
        _ => format!("the container ended with reason {}", text::quoted(reason)),
    };
    Outcome::Terminated {
        code,
        reason: short_reason(reason),
        message: format!("{detail}; exit code {code}"),
    }
}

/// The Job's own verdict, for a Job that ended without a Pod that says how (the Pods were
/// deleted): success without outputs, or the Job's failure reason.
pub fn job_verdict(job: &Job) -> Option<(Outcome, Option<Timestamp>)> {
    if let Some(complete) = job_condition(job, "Complete") {
        let outcome = Outcome::Exited {
            code: 0,
            output: Vec::new(),
        };
        return Some((outcome, complete.at));
    }
    job_condition(job, "Failed").map(|failed| {
        let outcome = Outcome::Failed {
            reason: if failed.reason.is_empty() {
                "JobFailed".into()
            } else {
                short_reason(&failed.reason)
            },
            message: if failed.message.is_empty() {
                "the Job failed".into()
            } else {
                detail(&failed.message)
            },
        };
        (outcome, failed.at)
    })
}

/// Whether the Job has ended (Complete or Failed).
pub fn job_finished(job: &Job) -> bool {
    job_condition(job, "Complete").is_some() || job_condition(job, "Failed").is_some()
}

/// Whether the Pod is in a final phase.
pub fn pod_finished(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed")
}

struct JobCondition {
    reason: String,
    message: String,
    at: Option<Timestamp>,
}

/// The Job's condition `type_` when it is True.
fn job_condition(job: &Job, type_: &str) -> Option<JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| JobCondition {
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
            at: c.last_transition_time.as_ref().map(|t| t.0),
        })
}

/// The status of ork's own container, found by name: an injected sidecar (a service mesh
/// proxy, say) may come first in the list.
fn task_container(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)
}

/// A Pod that cannot run: failed without a container result (e.g. evicted), a container
/// waiting for a reason that will not go away, or an image that could not be pulled for longer
/// than the configured time.
fn stuck(pod: &Pod, cx: ObserveContext<'_>) -> Option<(Outcome, Option<Timestamp>)> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None; // going away on purpose; the Job says why
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        let outcome = Outcome::Failed {
            reason: short_reason(status.reason.as_deref().unwrap_or("PodFailed")),
            message: status.message.as_deref().map_or_else(
                || "the Pod failed without a container result".into(),
                detail,
            ),
        };
        return Some((outcome, None));
    }
    let waiting = task_container(pod)?.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    let message = waiting.message.as_deref().map(detail).unwrap_or_default();
    if FATAL_WAITING.contains(&reason) {
        let outcome = Outcome::Failed {
            reason: reason.into(),
            message,
        };
        return Some((outcome, None));
    }
    if PULL_WAITING.contains(&reason) {
        let limit = cx.image_pull_timeout?;
        let since = status
            .start_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
        if cx.now.duration_since(since) >= limit {
            let outcome = Outcome::Failed {
                reason: reason.into(),
                message: format!(
                    "the image could not be pulled within {}s: {message}",
                    limit.as_secs()
                ),
            };
            return Some((outcome, None));
        }
    }
    None
}

/// Why the attempt is not running yet: the Job has no Pod (and why, when an Event said), the
/// Pod waits for a node, or its container waits (for its image, say).
fn waiting_reason(job: &Job, pods: &[&Pod], cx: ObserveContext<'_>) -> Option<String> {
    let live: Vec<&&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let Some(pod) = live.first() else {
        if job_finished(job) {
            return None;
        }
        return cx
            .failed_create
            .map(|why| format!("the Job cannot create its Pod: {}", detail(why)));
    };
    let status = pod.status.as_ref()?;
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    if let Some(condition) = unschedulable {
        let why = condition.message.as_deref().map(detail).unwrap_or_default();
        return Some(format!("waiting for a node: {why}"));
    }
    let waiting = task_container(pod)?.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    if reason == "ContainerCreating" || reason == "PodInitializing" {
        return None;
    }
    let message = waiting.message.as_deref().map(detail).unwrap_or_default();
    if PULL_WAITING.contains(&reason) {
        let limit = match cx.image_pull_timeout {
            Some(limit) => format!(
                "; the attempt fails if it cannot be pulled within {}s",
                limit.as_secs()
            ),
            None => String::new(),
        };
        return Some(format!(
            "waiting for its image ({reason}: {message}){limit}"
        ));
    }
    Some(format!("waiting: {reason}: {message}"))
}

/// A reason from a Kubernetes object, kept only if it looks like one (a short CamelCase word).
fn short_reason(reason: &str) -> String {
    let plausible = !reason.is_empty()
        && reason.len() <= 64
        && reason.chars().all(|c| c.is_ascii_alphanumeric());
    if plausible {
        reason.into()
    } else {
        "PodFailed".into()
    }
}

/// A message from the kubelet or the API server, bounded.
fn detail(message: &str) -> String {
    text::cap(message.trim().to_string(), MAX_DETAIL_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-11-26T00:10:00Z".parse().unwrap()
    }

    fn cx() -> ObserveContext<'static> {
        ObserveContext {
            now: now(),
            image_pull_timeout: Some(SignedDuration::from_secs(300)),
            failed_create: None,
        }
    }

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(
            json!({"metadata": {"name": "j"}, "status": {"conditions": conditions}}),
        )
        .unwrap()
    }

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn status(name: &str, state: serde_json::Value) -> serde_json::Value {
        json!({"name": name, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
               "state": state})
    }

    fn terminated(phase: &str, code: i32, reason: &str, message: &str, deleting: bool) -> Pod {
        let mut meta = json!({"name": "p"});
        if deleting {
            meta["deletionTimestamp"] = json!("2026-11-26T00:00:09Z");
        }
        pod(json!({"metadata": meta, "status": {"phase": phase,
            "startTime": "2026-11-26T00:00:01Z",
            "containerStatuses": [status("task", json!({"terminated": {
                "exitCode": code, "reason": reason, "message": message,
                "finishedAt": "2026-11-26T00:00:07Z"}}))]}}))
    }

    fn waiting(reason: &str, message: &str, since: &str) -> Pod {
        pod(
            json!({"metadata": {"name": "p", "creationTimestamp": since},
            "status": {"phase": "Pending", "startTime": since,
            "containerStatuses": [status("task", json!({"waiting": {"reason": reason, "message": message}}))]}}),
        )
    }

    fn ts(text: &str) -> Option<Timestamp> {
        Some(text.parse().unwrap())
    }

    fn failed(reason: &str, message: &str) -> Outcome {
        Outcome::Failed {
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn ends() {
        let running = job(json!([]));
        let complete = job(json!([{"type": "Complete", "status": "True"}]));
        let job_deadline = job(json!([{"type": "Failed", "status": "True",
            "reason": "DeadlineExceeded", "lastTransitionTime": "2026-11-26T00:00:08Z"}]));
        let failed_job = job(json!([{"type": "Failed", "status": "True",
            "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]));
        let ok = terminated("Succeeded", 0, "Completed", r#"{"a":1}"#, false);
        let err = terminated("Failed", 3, "Error", "ignored", false);
        let oom = terminated("Failed", 137, "OOMKilled", "", false);
        let killed = terminated("Failed", 137, "Error", "", true);
        let pod_deadline = pod(
            json!({"metadata": {"name": "p"}, "status": {"phase": "Failed",
            "reason": "DeadlineExceeded", "message": "Pod was active on the node longer than the specified deadline",
            "startTime": "2026-11-26T00:00:01Z",
            "containerStatuses": [status("task", json!({"terminated": {"exitCode": 137, "reason": "Error",
                "finishedAt": "2026-11-26T00:00:06Z"}}))]}}),
        );
        let pending = pod(json!({"metadata": {"name": "p"}, "status": {"phase": "Pending"}}));
        let bad_image = waiting("InvalidImageName", "bad", "2026-11-26T00:09:00Z");
        let config = waiting(
            "CreateContainerConfigError",
            "secret \"db\" not found",
            "2026-11-26T00:09:00Z",
        );
        let pull_young = waiting(
            "ImagePullBackOff",
            "Back-off pulling image",
            "2026-11-26T00:06:00Z",
        );
        let pull_old = waiting("ErrImagePull", "not found", "2026-11-26T00:05:00Z");
        let evicted = pod(
            json!({"metadata": {"name": "p"}, "status": {"phase": "Failed",
            "reason": "Evicted", "message": "low on memory"}}),
        );
        // A sidecar listed first, with a result of its own: the task's container is read.
        let sidecar_first = pod(
            json!({"metadata": {"name": "p"}, "status": {"phase": "Succeeded",
            "containerStatuses": [
                status("istio-proxy", json!({"terminated": {"exitCode": 0, "message": "{\"sidecar\": true}"}})),
                status("task", json!({"terminated": {"exitCode": 0, "message": "{\"b\": 2}",
                    "finishedAt": "2026-11-26T00:00:05Z"}})),
            ]}}),
        );

        let exited = |code, output: &str| Outcome::Exited {
            code,
            output: output.as_bytes().to_vec(),
        };
        let at7 = ts("2026-11-26T00:00:07Z");
        type End = Option<(Outcome, Option<Timestamp>)>;
        let cases: Vec<(&str, &Job, Vec<&Pod>, End)> = vec![
            ("no pod yet", &running, vec![], None),
            ("pod pending", &running, vec![&pending], None),
            ("success before the Job notices", &running, vec![&ok], Some((exited(0, r#"{"a":1}"#), at7))),
            ("success", &complete, vec![&ok], Some((exited(0, r#"{"a":1}"#), at7))),
            ("failure keeps no output", &running, vec![&err], Some((exited(3, ""), at7))),
            (
                "out of memory",
                &running,
                vec![&oom],
                Some((
                    Outcome::Terminated {
                        code: 137,
                        reason: "OOMKilled".into(),
                        message: "the container ran out of memory (its memory limit) and was killed; exit code 137".into(),
                    },
                    at7,
                )),
            ),
            ("a Job-level deadline", &job_deadline, vec![&killed], Some((Outcome::TimedOut, ts("2026-11-26T00:00:08Z")))),
            ("the Pod's deadline", &running, vec![&pod_deadline], Some((Outcome::TimedOut, ts("2026-11-26T00:00:06Z")))),
            ("a killed pod waits for the Job's verdict", &running, vec![&killed], None),
            ("complete, its pod not seen yet", &complete, vec![], None),
            ("failed, its pod not seen yet", &failed_job, vec![], None),
            ("image that can never be pulled", &running, vec![&bad_image], Some((failed("InvalidImageName", "bad"), None))),
            ("missing secret", &running, vec![&config], Some((failed("CreateContainerConfigError", "secret \"db\" not found"), None))),
            ("image pull failing for 4 minutes", &running, vec![&pull_young], None),
            (
                "image pull failing for 5 minutes",
                &running,
                vec![&pull_old],
                Some((failed("ErrImagePull", "the image could not be pulled within 300s: not found"), None)),
            ),
            ("evicted", &running, vec![&evicted], Some((failed("Evicted", "low on memory"), None))),
            ("a sidecar comes first", &running, vec![&sidecar_first], Some((exited(0, r#"{"b": 2}"#), ts("2026-11-26T00:00:05Z")))),
        ];
        for (what, job, pods, want) in cases {
            assert_eq!(observe_attempt(job, &pods, cx()).end, want, "{what}");
        }
        let forever = ObserveContext {
            image_pull_timeout: None,
            ..cx()
        };
        assert_eq!(
            observe_attempt(&running, &[&pull_old], forever).end,
            None,
            "no pull timeout"
        );
    }

    #[test]
    fn start_times_and_why_it_waits() {
        let running = job(json!([]));
        let ok = terminated("Succeeded", 0, "Completed", "", false);
        assert_eq!(
            observe_attempt(&running, &[&ok], cx()).started,
            ts("2026-11-26T00:00:01Z")
        );
        assert_eq!(observe_attempt(&running, &[], cx()).started, None);

        let unschedulable = pod(
            json!({"metadata": {"name": "p"}, "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/3 nodes are available: 3 Insufficient cpu."}]}}),
        );
        let pulling = waiting(
            "ImagePullBackOff",
            "Back-off pulling image \"x\"",
            "2026-11-26T00:09:00Z",
        );
        let creating = waiting("ContainerCreating", "", "2026-11-26T00:09:00Z");
        let quota = ObserveContext {
            failed_create: Some("pods \"x\" is forbidden: exceeded quota: pods"),
            ..cx()
        };
        let cases: Vec<(&str, Vec<&Pod>, ObserveContext<'_>, Option<&str>)> = vec![
            ("no pod, no reason known", vec![], cx(), None),
            (
                "no pod: quota",
                vec![],
                quota,
                Some(
                    "the Job cannot create its Pod: pods \"x\" is forbidden: exceeded quota: pods",
                ),
            ),
            (
                "no node",
                vec![&unschedulable],
                cx(),
                Some("waiting for a node: 0/3 nodes are available: 3 Insufficient cpu."),
            ),
            (
                "image",
                vec![&pulling],
                cx(),
                Some(
                    "waiting for its image (ImagePullBackOff: Back-off pulling image \"x\"); the attempt fails if it cannot be pulled within 300s",
                ),
            ),
            ("creating", vec![&creating], cx(), None),
        ];
        for (what, pods, cx, want) in cases {
            assert_eq!(
                observe_attempt(&running, &pods, cx).waiting.as_deref(),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn verdicts_of_jobs_without_pods() {
        let complete = job(json!([{"type": "Complete", "status": "True",
            "lastTransitionTime": "2026-11-26T00:00:03Z"}]));
        let failed_job = job(
            json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit"}]),
        );
        assert_eq!(
            job_verdict(&complete),
            Some((
                Outcome::Exited {
                    code: 0,
                    output: vec![]
                },
                ts("2026-11-26T00:00:03Z")
            ))
        );
        assert_eq!(
            job_verdict(&failed_job),
            Some((
                failed(
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit"
                ),
                None
            ))
        );
        assert_eq!(job_verdict(&job(json!([]))), None);
    }

    #[test]
    fn hostile_reasons_and_messages_are_bounded() {
        let huge = "x".repeat(100_000);
        let weird = pod(
            json!({"metadata": {"name": "p"}, "status": {"phase": "Failed",
            "reason": "\u{1b}[31mbad reason", "message": huge}}),
        );
        let Some((Outcome::Failed { reason, message }, _)) =
            observe_attempt(&job(json!([])), &[&weird], cx()).end
        else {
            panic!("expected a failure");
        };
        assert_eq!(reason, "PodFailed");
        assert!(message.len() <= MAX_DETAIL_BYTES, "{}", message.len());
    }
}
