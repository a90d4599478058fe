//! Leader election with a `coordination.k8s.io` Lease, so several replicas can run and only
//! one reconciles. A replica that loses the lease stops reconciling and exits with an error
//! (its Pod restarts as a standby); on shutdown the leader releases the lease so a standby
//! takes over at once instead of waiting for it to expire.

use std::future::Future;
use std::sync::Arc;

use futures::future::{self, Either};
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{info, warn};

use super::error::Error;
use super::http::Probes;
use super::metrics::Metrics;

/// Which Lease, and who this replica is.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub lease_name: String,
    pub lease_namespace: String,
    /// Unique per replica (the Pod name).
    pub identity: String,
    /// How long a lease lasts without renewal; a standby takes over within about this long.
    pub lease_seconds: u64,
}

/// Waits to hold the lease, then runs `work` until `shutdown` completes or the lease is lost.
/// `work` receives a future that completes when it must stop.
pub async fn lead<W, Fut>(
    client: Client,
    election: &LeaderElection,
    metrics: &Metrics,
    probes: &Probes,
    shutdown: impl Future<Output = ()> + Clone + Send + 'static,
    work: W,
) -> Result<(), Error>
where
    W: FnOnce(future::BoxFuture<'static, ()>) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let lease_error = |e: kube_lease_manager::LeaseManagerError| Error::Lease(e.to_string());
    let manager = LeaseManagerBuilder::new(client, &election.lease_name)
        .with_namespace(&election.lease_namespace)
        .with_identity(&election.identity)
        .with_duration(election.lease_seconds)
        .with_grace((election.lease_seconds / 3).max(1))
        .build()
        .await
        .map_err(lease_error)?;
    let (mut leading, manager_task) = manager.watch().await;
    probes.set_standby(true);
    metrics.set_leader(false);
    info!(lease = %election.lease_name, identity = %election.identity, "waiting for the lease");
    // Wait to lead, or to be told to stop first.
    let acquired = {
        let wait = async {
            loop {
                if *leading.borrow_and_update() {
                    return true;
                }
                if leading.changed().await.is_err() {
                    return false;
                }
            }
        };
        match future::select(std::pin::pin!(wait), std::pin::pin!(shutdown.clone())).await {
            Either::Left((acquired, _)) => acquired,
            Either::Right(((), _)) => false,
        }
    };
    if !acquired {
        drop(leading);
        release(manager_task).await;
        return Ok(());
    }
    info!(identity = %election.identity, "acquired the lease: reconciling");
    probes.set_standby(false);
    metrics.set_leader(true);

    let lost = Arc::new(tokio::sync::Notify::new());
    let (lost_tx, mut watch) = (Arc::clone(&lost), leading.clone());
    let watcher = tokio::spawn(async move {
        while watch.changed().await.is_ok() {
            if !*watch.borrow() {
                break;
            }
        }
        lost_tx.notify_one();
    });
    let lost_signal = {
        let lost = Arc::clone(&lost);
        async move { lost.notified().await }
    };
    let was_lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop: future::BoxFuture<'static, ()> = {
        let was_lost = Arc::clone(&was_lost);
        let shutdown = shutdown.clone();
        Box::pin(async move {
            if let Either::Left(((), _)) =
                future::select(std::pin::pin!(lost_signal), std::pin::pin!(shutdown)).await
            {
                was_lost.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let result = work(stop).await;
    metrics.set_leader(false);
    watcher.abort();
    drop(leading);
    if was_lost.load(std::sync::atomic::Ordering::SeqCst) {
        warn!(identity = %election.identity, "lost the lease");
        return Err(Error::Lease("lost the leader lease".into()));
    }
    release(manager_task).await;
    result
}

/// Releases the lease once the manager's task has stopped watching.
async fn release(
    task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
) {
    match task.await {
        Ok(Ok(manager)) => {
            if let Err(e) = manager.release().await {
                warn!(error = %e, "cannot release the lease; a standby takes over when it expires");
            }
        }
        Ok(Err(e)) => warn!(error = %e, "lease manager failed"),
        Err(e) => warn!(error = %e, "lease manager task failed"),
    }
}
