//! Names and labels of the objects the controller creates: deterministic, so a controller that
//! restarts finds what it made before instead of making it again.

use std::collections::BTreeMap;

use crate::compile::names::MAX_LABEL_LEN;

/// Field manager of every server-side apply the controller makes.
pub const FIELD_MANAGER: &str = "ork";

pub const LABEL_RUN: &str = "ork.dev/run";
pub const LABEL_TASK: &str = "ork.dev/task";
pub const LABEL_ATTEMPT: &str = "ork.dev/attempt";
/// On the Job and Pod of an attempt of a fan-out instance: the instance's index.
pub const LABEL_INSTANCE: &str = "ork.dev/instance";
/// On a Run that `ork submit` made from a file: the Workflow its inline definition came from.
pub const LABEL_WORKFLOW: &str = "ork.dev/workflow";
/// On each Run a Schedule makes: the Schedule's name.
pub const LABEL_SCHEDULE: &str = "ork.dev/schedule";
/// On each Run a Schedule makes: its tick, RFC 3339 in UTC (also the tasks' `ORK_SCHEDULED_TIME`).
pub const ANNOTATION_SCHEDULED_TIME: &str = "ork.dev/scheduled-time";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "ork";

/// Selector for everything the controller manages.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY}")
}

/// Labels of an attempt's Job and Pod; `instance`: the index of a fan-out instance.
pub fn attempt_labels(
    run: &str,
    task: &str,
    instance: Option<u32>,
    attempt: u32,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LABEL_RUN.to_string(), run.to_string()),
        (LABEL_TASK.to_string(), task.to_string()),
        (LABEL_ATTEMPT.to_string(), attempt.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
    ]);
    if let Some(index) = instance {
        labels.insert(LABEL_INSTANCE.to_string(), index.to_string());
    }
    labels
}

/// The Job of attempt `attempt` of `task` in run `run`: `RUN.TASK.ATTEMPT`. Task names cannot
/// contain dots, so no two (run, task, attempt) share a name, whatever dashes they hold. Past
/// 63 characters (the Job name labels its Pods), the front of `RUN.TASK` is kept with a hash
/// of the whole: `FRONT-HASH.ATTEMPT`.
pub fn job_name(run: &str, task: &str, attempt: u32) -> String {
    named(run, task, &attempt.to_string())
}

/// The Job of attempt `attempt` of instance `index` of fan-out task `task`:
/// `RUN.TASK.INDEX-ATTEMPT`. The dash keeps it apart from every task's `RUN.TASK.ATTEMPT`.
pub fn instance_job_name(run: &str, task: &str, index: u32, attempt: u32) -> String {
    named(run, task, &format!("{index}-{attempt}"))
}

/// The Job of an attempt: of a task, or of a fan-out instance when `instance` is its index.
pub fn attempt_job_name(run: &str, task: &str, instance: Option<u32>, attempt: u32) -> String {
    match instance {
        Some(index) => instance_job_name(run, task, index, attempt),
        None => job_name(run, task, attempt),
    }
}

/// `RUN.TASK.SUFFIX`, or past 63 characters `FRONT-HASH.SUFFIX`.
fn named(run: &str, task: &str, suffix: &str) -> String {
    let plain = format!("{run}.{task}.{suffix}");
    if plain.len() <= MAX_LABEL_LEN {
        return plain;
    }
    let tail = format!("-{:08x}.{suffix}", fnv1a(&format!("{run}/{task}")) as u32);
    let room = MAX_LABEL_LEN - tail.len();
    let front = format!("{run}.{task}");
    let front = front[..room].trim_end_matches(['-', '.']);
    format!("{front}{tail}")
}

/// FNV-1a: a hash that never changes between builds, unlike the standard library's.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::names::dns_label_error;

    #[test]
    fn job_names_are_deterministic_labels() {
        assert_eq!(job_name("etl-x7k2p", "extract", 1), "etl-x7k2p.extract.1");
        // dashes cannot make two runs' Jobs collide
        assert_ne!(
            job_name("build", "test-unit", 1),
            job_name("build-test", "unit", 1)
        );
        let run = "r".repeat(63);
        let task = "t".repeat(63);
        let a = job_name(&run, &task, 12);
        assert_eq!(a, job_name(&run, &task, 12));
        assert!(a.len() <= 63, "{a}");
        assert!(a.ends_with(".12"));
        assert!(
            a.split('.').all(|label| dns_label_error(label).is_none()),
            "{a}"
        );
        assert_ne!(a, job_name(&run, &"u".repeat(63), 12));
        assert_ne!(job_name(&run, &task, 1), job_name(&run, &task, 2));
        // instances: their own names, never a task's, within 63 characters
        assert_eq!(instance_job_name("etl-x", "load", 3, 1), "etl-x.load.3-1");
        assert_ne!(instance_job_name("r", "t", 1, 2), job_name("r", "t", 12));
        assert_ne!(
            instance_job_name("r", "t", 1, 2),
            instance_job_name("r", "t", 12, 2)
        );
        let long = instance_job_name(&run, &task, 9_999, 12);
        assert!(long.len() <= 63 && long.ends_with(".9999-12"), "{long}");
        assert!(
            long.split('.')
                .all(|label| dns_label_error(label).is_none())
        );
        assert_eq!(attempt_job_name("r", "t", None, 2), "r.t.2");
        assert_eq!(attempt_job_name("r", "t", Some(0), 2), "r.t.0-2");
        // a cut that lands on a dash or a dot leaves neither at the end of the front
        for run in [format!("{}-x", "a".repeat(40)), "a".repeat(43)] {
            let name = job_name(&run, &"b".repeat(30), 1);
            assert!(!name.contains("--") && !name.contains(".-"), "{name}");
            assert!(name.len() <= 63, "{name}");
        }
    }
}
