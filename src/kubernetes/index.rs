//! An in-memory index of the Jobs and Pods of each run, fed by a watch stream. The reconciler
//! looks up a run's children here in time proportional to their number, not to every object the
//! controller watches. Pure: tested by feeding watch events, without an API server.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::DeserializeGuard;
use kube::runtime::watcher::Event;

use super::names::LABEL_RUN;
use crate::api::{Run, RunPhase};

/// `(namespace, run name)`.
pub type RunKey = (String, String);

/// A run's objects by group (a Job's name; for a Pod, the name of its Job).
pub type Group<K> = HashMap<String, Vec<Arc<K>>>;

type Children<K> = HashMap<RunKey, Group<K>>;

/// Objects labelled with `ork.dev/run`, grouped by run, and within a run by a key of each
/// object (a Job by its name, a Pod by its Job's): a reconcile looks up what it needs by name,
/// in time independent of the run's size.
#[derive(Debug)]
pub struct RunIndex<K> {
    live: Children<K>,
    /// Filled during a re-list, swapped in when it completes.
    relisting: Option<Children<K>>,
    /// Whether a full list has completed at least once.
    listed: bool,
    group_of: fn(&K) -> Option<String>,
}

impl<K: Resource> Default for RunIndex<K> {
    /// Grouped by the object's own name.
    fn default() -> Self {
        Self::grouped_by(|obj| obj.meta().name.clone())
    }
}

impl<K: Resource> RunIndex<K> {
    /// An index grouping each run's objects by `group_of`.
    pub fn grouped_by(group_of: fn(&K) -> Option<String>) -> Self {
        Self {
            live: HashMap::new(),
            relisting: None,
            listed: false,
            group_of,
        }
    }

    /// Applies one watch event.
    pub fn apply(&mut self, event: &Event<K>)
    where
        K: Clone,
    {
        self.apply_keeping(event, None);
    }

    /// Applies one watch event; a deleted object is replaced by `tombstone` when one is given
    /// (see [`pod_tombstone`]).
    pub fn apply_keeping(&mut self, event: &Event<K>, tombstone: Option<K>)
    where
        K: Clone,
    {
        let group_of = self.group_of;
        match event {
            Event::Apply(obj) => insert(&mut self.live, obj, group_of),
            Event::Delete(obj) => match tombstone {
                Some(kept) => insert(&mut self.live, &kept, group_of),
                None => remove(&mut self.live, obj, group_of),
            },
            Event::Init => self.relisting = Some(HashMap::new()),
            Event::InitApply(obj) => match self.relisting.as_mut() {
                Some(fresh) => insert(fresh, obj, group_of),
                None => insert(&mut self.live, obj, group_of),
            },
            Event::InitDone => {
                if let Some(fresh) = self.relisting.take() {
                    self.live = fresh;
                }
                self.listed = true;
            }
        }
    }

    /// The children of a run, by group.
    pub fn groups(&self, namespace: &str, run: &str) -> Option<&Group<K>> {
        self.live.get(&(namespace.to_string(), run.to_string()))
    }

    /// The children of a run.
    pub fn children(&self, namespace: &str, run: &str) -> Vec<Arc<K>> {
        self.groups(namespace, run)
            .map(|g| g.values().flatten().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether the cache has been filled by a full list.
    pub fn listed(&self) -> bool {
        self.listed
    }

    /// Number of runs with children.
    pub fn runs(&self) -> usize {
        self.live.len()
    }

    /// Whether the run has a live member of `group` that is not being deleted.
    pub fn has_live(&self, namespace: &str, run: &str, group: &str) -> bool {
        self.groups(namespace, run)
            .and_then(|groups| groups.get(group))
            .is_some_and(|members| {
                members
                    .iter()
                    .any(|m| m.meta().deletion_timestamp.is_none())
            })
    }

    /// Forgets a whole group of a run (the Pods of a Job that is gone, tombstones included).
    pub fn drop_group(&mut self, namespace: &str, run: &str, group: &str) {
        let key = (namespace.to_string(), run.to_string());
        if let Some(groups) = self.live.get_mut(&key) {
            groups.remove(group);
            if groups.is_empty() {
                self.live.remove(&key);
            }
        }
    }
}

/// Annotation on a Pod kept in the index after it was deleted before it finished.
const GONE: &str = "ork.dev/deleted-before-it-finished";

/// What the index keeps of a Pod deleted before it finished while its Job lives on (someone
/// deleted it, or its node went away): a copy marked as such, so the reconcile can tell the
/// attempt lost its Pod even when the Job makes a new one (or fails) right after. `None` for a
/// Pod that shows how its attempt ended (not merely killed by the deletion): that is read.
pub fn pod_tombstone(pod: &Pod) -> Option<Pod> {
    if super::observe::pod_has_result(pod) {
        return None;
    }
    let mut kept = pod.clone();
    kept.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(GONE.into(), "true".into());
    Some(kept)
}

/// Whether the index keeps `pod` only because it was deleted before it finished.
pub fn is_tombstone(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(GONE))
}

/// A Pod's group: the name of its Job.
pub fn job_of_pod(pod: &Pod) -> Option<String> {
    let labels = pod.metadata.labels.as_ref();
    labels
        .and_then(|l| {
            l.get("job-name")
                .or_else(|| l.get("batch.kubernetes.io/job-name"))
        })
        .cloned()
        .or_else(|| {
            pod.metadata
                .owner_references
                .as_ref()?
                .iter()
                .find(|o| o.controller == Some(true))
                .map(|o| o.name.clone())
        })
}

/// Keeps of a Job only what the controller reads: its identity, labels, owners, creation and
/// deletion times and its conditions. Everything else (the Pod template, annotations, managed
/// fields) would only cost memory, for every Job of every run.
pub fn slim_job(job: &mut Job) {
    slim_meta(&mut job.metadata);
    job.spec = None;
    if let Some(status) = job.status.as_mut() {
        *status = JobStatus {
            conditions: status.conditions.take(),
            start_time: status.start_time.take(),
            ..JobStatus::default()
        };
    }
}

/// Keeps of a Pod only what the controller reads: identity, owners, deletion, and the status
/// of its phase, start, scheduling and containers' states (no spec).
pub fn slim_pod(pod: &mut Pod) {
    slim_meta(&mut pod.metadata);
    pod.spec = None;
    if let Some(status) = pod.status.as_mut() {
        let scheduled = status.conditions.take().map(|cs| {
            cs.into_iter()
                .filter(|c| c.type_ == "PodScheduled")
                .collect()
        });
        let containers = status.container_statuses.take().map(|cs| {
            cs.into_iter()
                .map(|c| ContainerStatus {
                    name: c.name,
                    state: c.state,
                    ..ContainerStatus::default()
                })
                .collect()
        });
        *status = PodStatus {
            phase: status.phase.take(),
            reason: status.reason.take(),
            message: status.message.take(),
            start_time: status.start_time.take(),
            conditions: scheduled,
            container_statuses: containers,
            ..PodStatus::default()
        };
    }
}

/// A finished Run keeps nothing the controller reads beyond its phase: its task list and pinned
/// definition are dropped from the cache (not from the API server).
pub fn slim_run(guard: &mut DeserializeGuard<Run>) {
    match &mut guard.0 {
        Ok(run) => {
            run.metadata.managed_fields = None;
            if let Some(status) = run.status.as_mut()
                && status.phase.is_some_and(RunPhase::is_final)
            {
                status.tasks = Vec::new();
                if let Some(pinned) = status.workflow.as_mut() {
                    pinned.spec = None;
                    pinned.params.clear();
                }
            }
        }
        Err(invalid) => invalid.metadata.managed_fields = None,
    }
}

fn slim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.annotations = None;
    meta.finalizers = None;
    meta.generate_name = None;
}

fn run_key<K: Resource>(obj: &K) -> Option<RunKey> {
    let meta = obj.meta();
    let run = meta.labels.as_ref()?.get(LABEL_RUN)?;
    Some((meta.namespace.clone()?, run.clone()))
}

fn insert<K: Resource + Clone>(map: &mut Children<K>, obj: &K, group_of: fn(&K) -> Option<String>) {
    let (Some(key), Some(group), Some(name)) =
        (run_key(obj), group_of(obj), obj.meta().name.clone())
    else {
        return;
    };
    let members = map.entry(key).or_default().entry(group).or_default();
    members.retain(|m| m.meta().name.as_deref() != Some(name.as_str()));
    members.push(Arc::new(obj.clone()));
}

fn remove<K: Resource>(map: &mut Children<K>, obj: &K, group_of: fn(&K) -> Option<String>) {
    let (Some(key), Some(group), Some(name)) =
        (run_key(obj), group_of(obj), obj.meta().name.as_deref())
    else {
        return;
    };
    if let Some(groups) = map.get_mut(&key) {
        if let Some(members) = groups.get_mut(&group) {
            members.retain(|m| m.meta().name.as_deref() != Some(name));
            if members.is_empty() {
                groups.remove(&group);
            }
        }
        if groups.is_empty() {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(ns: &str, run: &str, name: &str) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"ork.dev/run": run}}
        }))
        .unwrap()
    }

    fn names(index: &RunIndex<Job>, ns: &str, run: &str) -> Vec<String> {
        let mut n: Vec<String> = index
            .children(ns, run)
            .iter()
            .map(|j| j.metadata.name.clone().unwrap())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn groups_by_run_and_follows_the_watch() {
        let mut index = RunIndex::default();
        index.apply(&Event::Apply(job("a", "r1", "r1-x-1")));
        index.apply(&Event::Apply(job("a", "r1", "r1-y-1")));
        index.apply(&Event::Apply(job("b", "r1", "r1-x-1")));
        index.apply(&Event::Apply(job("a", "r2", "r2-x-1")));
        let unlabelled: Job = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "other", "namespace": "a"}}),
        )
        .unwrap();
        index.apply(&Event::Apply(unlabelled));
        assert_eq!(names(&index, "a", "r1"), ["r1-x-1", "r1-y-1"]);
        assert_eq!(names(&index, "b", "r1"), ["r1-x-1"]);
        assert_eq!(index.runs(), 3);
        index.apply(&Event::Delete(job("a", "r1", "r1-x-1")));
        assert_eq!(names(&index, "a", "r1"), ["r1-y-1"]);
        index.apply(&Event::Delete(job("a", "r2", "r2-x-1")));
        assert_eq!(index.runs(), 2, "empty runs are dropped");
    }

    #[test]
    fn pods_are_grouped_by_their_job() {
        let pod = |name: &str, job: &str| -> Pod {
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": name, "namespace": "a",
                "labels": {"ork.dev/run": "r", "job-name": job}}}),
            )
            .unwrap()
        };
        let mut index: RunIndex<Pod> = RunIndex::grouped_by(job_of_pod);
        index.apply(&Event::Apply(pod("p1", "r.x.1")));
        index.apply(&Event::Apply(pod("p2", "r.x.1")));
        index.apply(&Event::Apply(pod("p3", "r.y.1")));
        index.apply(&Event::Apply(pod("p1", "r.x.1")));
        let groups = index.groups("a", "r").unwrap();
        assert_eq!(
            groups["r.x.1"].len(),
            2,
            "an update replaces, it does not add"
        );
        assert_eq!(groups["r.y.1"].len(), 1);
        index.apply(&Event::Delete(pod("p3", "r.y.1")));
        assert!(!index.groups("a", "r").unwrap().contains_key("r.y.1"));
    }

    #[test]
    fn a_pod_deleted_before_it_showed_a_result_is_kept_until_its_job_goes() {
        let pod = |name: &str, status: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": name,
                "namespace": "a", "labels": {"ork.dev/run": "r", "job-name": "r.x.1"}},
                "status": status}))
            .unwrap()
        };
        let running = pod("p1", serde_json::json!({"phase": "Running"}));
        let done = pod(
            "p2",
            serde_json::json!({"phase": "Succeeded", "containerStatuses": [{"name": "task",
                "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0}}}]}),
        );
        assert!(
            pod_tombstone(&done).is_none(),
            "its result is there to read"
        );
        let kept = pod_tombstone(&running).expect("no result: kept");
        assert!(is_tombstone(&kept) && !is_tombstone(&running));

        let mut index: RunIndex<Pod> = RunIndex::grouped_by(job_of_pod);
        index.apply(&Event::Apply(running.clone()));
        index.apply_keeping(&Event::Delete(running), Some(kept));
        let members = &index.groups("a", "r").unwrap()["r.x.1"];
        assert_eq!(members.len(), 1);
        assert!(is_tombstone(&members[0]));
        index.drop_group("a", "r", "r.x.1");
        assert_eq!(index.runs(), 0, "nothing is kept once the Job is gone");
    }

    #[test]
    fn a_relist_replaces_everything_at_once() {
        let mut index = RunIndex::default();
        index.apply(&Event::Apply(job("a", "r1", "old")));
        index.apply(&Event::Init);
        index.apply(&Event::InitApply(job("a", "r1", "new")));
        assert_eq!(
            names(&index, "a", "r1"),
            ["old"],
            "served until the list completes"
        );
        index.apply(&Event::InitDone);
        assert_eq!(names(&index, "a", "r1"), ["new"]);
    }

    #[test]
    fn caches_keep_only_what_is_read() {
        let mut job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "r.t.1", "namespace": "a", "uid": "j1",
                "labels": {"ork.dev/run": "r"}, "annotations": {"big": "x".repeat(10_000)},
                "ownerReferences": [{"apiVersion": "ork.dev/v1alpha1", "kind": "Run", "name": "r",
                                     "uid": "u", "controller": true}],
                "managedFields": [{"manager": "m"}]},
            "spec": {"template": {"spec": {"containers": [{"name": "task", "image": "i",
                "env": [{"name": "BIG", "value": "y".repeat(10_000)}]}]}}},
            "status": {"active": 1, "startTime": "2026-11-26T00:00:00Z",
                       "conditions": [{"type": "Complete", "status": "True"}]}
        }))
        .unwrap();
        slim_job(&mut job);
        let kept = serde_json::to_string(&job).unwrap();
        assert!(kept.len() < 500, "{kept}");
        assert_eq!(job.metadata.uid.as_deref(), Some("j1"));
        assert_eq!(
            job.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
        assert_eq!(
            job.status
                .as_ref()
                .unwrap()
                .conditions
                .as_ref()
                .unwrap()
                .len(),
            1
        );

        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "a", "labels": {"ork.dev/run": "r"},
                         "deletionTimestamp": "2026-11-26T00:00:09Z"},
            "spec": {"containers": [{"name": "task", "image": "i"}]},
            "status": {"phase": "Pending", "startTime": "2026-11-26T00:00:00Z",
                "podIP": "10.0.0.1",
                "conditions": [{"type": "Ready", "status": "False"},
                               {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
                "containerStatuses": [{"name": "task", "image": "i", "imageID": "sha", "ready": false,
                    "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull"}}}]}
        }))
        .unwrap();
        slim_pod(&mut pod);
        let status = pod.status.as_ref().unwrap();
        assert_eq!(pod.spec, None);
        assert!(pod.metadata.deletion_timestamp.is_some());
        assert_eq!(status.pod_ip, None);
        assert_eq!(status.conditions.as_ref().unwrap().len(), 1);
        let container = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(container.name, "task");
        assert_eq!(container.image, "");
        assert!(container.state.as_ref().unwrap().waiting.is_some());
    }
}
