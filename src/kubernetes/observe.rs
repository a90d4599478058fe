//! Reading how an attempt ended from its Job and Pod. Pure, so every case is unit-tested.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};

use crate::engine::Outcome;

/// Container waiting reasons that will not resolve by themselves.
const FATAL_WAITING: [&str; 4] = [
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// How the attempt run by `job` ended, from the Job and its Pods (normally one), or `None` while
/// it is still going, or while the Job has ended but no Pod in `pods` shows the result yet: the
/// Job's and the Pods' watch events arrive independently, and the result (exit code, outputs) is
/// only on the Pod. See [`job_verdict`] for when the Pods are known to be gone.
pub fn attempt_outcome(job: &Job, pods: &[&Pod]) -> Option<Outcome> {
    if job_condition(job, "Failed").is_some_and(|(reason, _)| reason == "DeadlineExceeded") {
        return Some(Outcome::TimedOut);
    }
    // A terminated container is the fastest and richest signal: exit code and output.
    if let Some(terminated) = pods.iter().find_map(|pod| settled_termination(pod)) {
        let output = if terminated.exit_code == 0 {
            terminated.message.clone().unwrap_or_default().into_bytes()
        } else {
            Vec::new()
        };
        return Some(Outcome::Exited {
            code: terminated.exit_code,
            output,
        });
    }
    pods.iter()
        .find_map(|pod| stuck(pod))
        .map(|(reason, message)| Outcome::Failed { reason, message })
}

/// The Job's own verdict, for a Job that ended without a Pod that says how (the Pods were
/// deleted): success without outputs, or the Job's failure reason.
pub fn job_verdict(job: &Job) -> Option<Outcome> {
    if job_condition(job, "Complete").is_some() {
        return Some(Outcome::Exited {
            code: 0,
            output: Vec::new(),
        });
    }
    job_condition(job, "Failed").map(|(reason, message)| Outcome::Failed {
        reason: if reason.is_empty() {
            "JobFailed".into()
        } else {
            reason
        },
        message: if message.is_empty() {
            "the Job failed".into()
        } else {
            message
        },
    })
}

/// `(reason, message)` of the Job's condition `type_` when it is True.
fn job_condition(job: &Job, type_: &str) -> Option<(String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// The container's termination, once the Pod is in a final phase. A Pod being deleted whose
/// container was killed (137, 143) is not taken as the attempt's own end: the Job's verdict
/// (e.g. its deadline) follows and says why.
fn settled_termination(pod: &Pod) -> Option<&ContainerStateTerminated> {
    let status = pod.status.as_ref()?;
    if !matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let terminated = status
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .as_ref()?;
    let killed = matches!(terminated.exit_code, 137 | 143);
    if killed && pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    Some(terminated)
}

/// A Pod that cannot run: failed without a container result (e.g. evicted), or a container
/// waiting for a reason that will not go away.
fn stuck(pod: &Pod) -> Option<(String, String)> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None; // going away on purpose; the Job says why
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        return Some((
            status.reason.clone().unwrap_or_else(|| "PodFailed".into()),
            status
                .message
                .clone()
                .unwrap_or_else(|| "the Pod failed without a container result".into()),
        ));
    }
    let waiting = status
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .as_ref()?;
    let reason = waiting.reason.clone()?;
    FATAL_WAITING
        .contains(&reason.as_str())
        .then(|| (reason, waiting.message.clone().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(
            json!({"metadata": {"name": "j"}, "status": {"conditions": conditions}}),
        )
        .unwrap()
    }

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn terminated(phase: &str, code: i32, message: &str, deleting: bool) -> Pod {
        let mut meta = json!({"name": "p"});
        if deleting {
            meta["deletionTimestamp"] = json!("2026-11-26T00:00:00Z");
        }
        pod(
            json!({"metadata": meta, "status": {"phase": phase, "containerStatuses": [{
            "name": "task", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "message": message}}}]}}),
        )
    }

    #[test]
    fn outcomes() {
        let running = job(json!([]));
        let complete = job(json!([{"type": "Complete", "status": "True"}]));
        let deadline =
            job(json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]));
        let failed = job(
            json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                 "message": "Job has reached the specified backoff limit"}]),
        );
        let ok = terminated("Succeeded", 0, r#"{"a":1}"#, false);
        let err = terminated("Failed", 3, "ignored", false);
        let killed = terminated("Failed", 137, "", true);
        let pending = pod(json!({"metadata": {"name": "p"}, "status": {"phase": "Pending"}}));
        let bad_image = pod(
            json!({"metadata": {"name": "p"}, "status": {"phase": "Pending",
            "containerStatuses": [{"name": "task", "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": "InvalidImageName", "message": "bad"}}}]}}),
        );
        let evicted = pod(
            json!({"metadata": {"name": "p"}, "status": {"phase": "Failed",
            "reason": "Evicted", "message": "low on memory"}}),
        );

        let exited = |code, output: &str| {
            Some(Outcome::Exited {
                code,
                output: output.as_bytes().to_vec(),
            })
        };
        let cases: Vec<(&str, &Job, Vec<&Pod>, Option<Outcome>)> = vec![
            ("no pod yet", &running, vec![], None),
            ("pod pending", &running, vec![&pending], None),
            (
                "success before the Job notices",
                &running,
                vec![&ok],
                exited(0, r#"{"a":1}"#),
            ),
            ("success", &complete, vec![&ok], exited(0, r#"{"a":1}"#)),
            (
                "failure keeps no output",
                &running,
                vec![&err],
                exited(3, ""),
            ),
            (
                "deadline wins over the kill",
                &deadline,
                vec![&killed],
                Some(Outcome::TimedOut),
            ),
            (
                "a killed pod waits for the Job's verdict",
                &running,
                vec![&killed],
                None,
            ),
            ("complete, its pod not seen yet", &complete, vec![], None),
            ("failed, its pod not seen yet", &failed, vec![], None),
            (
                "image that cannot be pulled",
                &running,
                vec![&bad_image],
                Some(Outcome::Failed {
                    reason: "InvalidImageName".into(),
                    message: "bad".into(),
                }),
            ),
            (
                "evicted",
                &running,
                vec![&evicted],
                Some(Outcome::Failed {
                    reason: "Evicted".into(),
                    message: "low on memory".into(),
                }),
            ),
        ];
        for (what, job, pods, want) in cases {
            assert_eq!(attempt_outcome(job, &pods), want, "{what}");
        }
    }

    #[test]
    fn verdicts_of_jobs_without_pods() {
        let complete = job(json!([{"type": "Complete", "status": "True"}]));
        let failed = job(
            json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                 "message": "Job has reached the specified backoff limit"}]),
        );
        assert_eq!(
            job_verdict(&complete),
            Some(Outcome::Exited {
                code: 0,
                output: vec![]
            })
        );
        assert_eq!(
            job_verdict(&failed),
            Some(Outcome::Failed {
                reason: "BackoffLimitExceeded".into(),
                message: "Job has reached the specified backoff limit".into(),
            })
        );
        assert_eq!(job_verdict(&job(json!([]))), None);
    }
}
