//! An in-memory index of the Jobs and Pods of each run, fed by a watch stream. The reconciler
//! looks up a run's children here in time proportional to their number, not to every object the
//! controller watches. Pure: tested by feeding watch events, without an API server.

use std::collections::HashMap;
use std::sync::Arc;

use kube::Resource;
use kube::runtime::watcher::Event;

use super::names::LABEL_RUN;

/// `(namespace, run name)`.
pub type RunKey = (String, String);

type Children<K> = HashMap<RunKey, HashMap<String, Arc<K>>>;

/// Objects labelled with `ork.dev/run`, grouped by run.
#[derive(Debug)]
pub struct RunIndex<K> {
    live: Children<K>,
    /// Filled during a re-list, swapped in when it completes.
    relisting: Option<Children<K>>,
    /// Whether a full list has completed at least once.
    listed: bool,
}

impl<K> Default for RunIndex<K> {
    fn default() -> Self {
        Self {
            live: HashMap::new(),
            relisting: None,
            listed: false,
        }
    }
}

impl<K: Resource> RunIndex<K> {
    /// Applies one watch event.
    pub fn apply(&mut self, event: &Event<K>)
    where
        K: Clone,
    {
        match event {
            Event::Apply(obj) => insert(&mut self.live, obj),
            Event::Delete(obj) => {
                if let Some((key, name)) = keys(obj)
                    && let Some(children) = self.live.get_mut(&key)
                {
                    children.remove(&name);
                    if children.is_empty() {
                        self.live.remove(&key);
                    }
                }
            }
            Event::Init => self.relisting = Some(HashMap::new()),
            Event::InitApply(obj) => {
                if let Some(fresh) = self.relisting.as_mut() {
                    insert(fresh, obj);
                } else {
                    insert(&mut self.live, obj);
                }
            }
            Event::InitDone => {
                if let Some(fresh) = self.relisting.take() {
                    self.live = fresh;
                }
                self.listed = true;
            }
        }
    }

    /// The children of a run.
    pub fn children(&self, namespace: &str, run: &str) -> Vec<Arc<K>> {
        self.live
            .get(&(namespace.to_string(), run.to_string()))
            .map(|c| c.values().cloned().collect())
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
}

fn keys<K: Resource>(obj: &K) -> Option<(RunKey, String)> {
    let meta = obj.meta();
    let run = meta.labels.as_ref()?.get(LABEL_RUN)?;
    Some(((meta.namespace.clone()?, run.clone()), meta.name.clone()?))
}

fn insert<K: Resource + Clone>(map: &mut Children<K>, obj: &K) {
    if let Some((key, name)) = keys(obj) {
        map.entry(key)
            .or_default()
            .insert(name, Arc::new(obj.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::Job;

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
}
