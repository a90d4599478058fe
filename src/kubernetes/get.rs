//! `ork get`: a Run as a whole, whatever its size. A run of more than 1,000 tasks keeps its task
//! records and pinned tasks in RunShards; this joins them back, so tools read one shape.

use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::error::Error;
use super::layout;
use super::names::LABEL_RUN;
use crate::api::{Run, RunShard};

/// Run `name` of `namespace` with every task's record in `status.tasks` and its whole pinned
/// definition in `status.workflow.spec`.
pub async fn full_run(client: &Client, namespace: &str, name: &str) -> Result<Run, Error> {
    let runs: Api<Run> = Api::namespaced(client.clone(), namespace);
    let mut run = runs.get(name).await?;
    if run.status.as_ref().is_some_and(|s| s.records.is_some()) {
        let shards: Api<RunShard> = Api::namespaced(client.clone(), namespace);
        let selector = format!("{LABEL_RUN}={name}");
        let uid = run.uid().unwrap_or_default();
        let listed = shards
            .list(&ListParams::default().labels(&selector))
            .await?;
        let ours: Vec<RunShard> = listed
            .items
            .into_iter()
            .filter(|s| s.owner_references().iter().any(|o| o.uid == uid))
            .collect();
        layout::assemble(&mut run, &ours).map_err(Error::Internal)?;
        if let Some(status) = run.status.as_mut() {
            status.records = None;
        }
    }
    run.metadata.managed_fields = None;
    Ok(run)
}
