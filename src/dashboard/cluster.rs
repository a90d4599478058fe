//! The dashboard's view of a cluster, through the user's own credentials. Before each kind of
//! request it asks the API server whether the user may make it (a SelfSubjectAccessReview,
//! remembered for a minute), so the page never makes a request RBAC would refuse: what the user
//! may not do is said, or its button is disabled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, Stream, StreamExt};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, LogParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use super::view::{self, Rights, RunSummary, RunView};
use super::{ApiError, Context, LogBody};
use crate::api::Run;
use crate::drawing::Layout;
use crate::kubernetes::get::full_run;
use crate::kubernetes::job::CONTAINER;
use crate::kubernetes::logs::{split_instance, started};
use crate::kubernetes::names::attempt_job_name;
use crate::kubernetes::run_commands::{CommandError, RunCommand, rerun, run_command};

/// How long an answer about the user's rights is trusted.
const RIGHTS_TTL: Duration = Duration::from_secs(60);
/// Shortest time between two reads of a watched run.
const MIN_GAP: Duration = Duration::from_millis(300);
/// Most answers about rights kept (a user trying many namespaces cannot grow the cache).
const MAX_RIGHTS: usize = 1000;
/// Most layouts kept.
const MAX_GRAPHS: usize = 64;
/// How long a followed log waits for its Pod's container to start.
const START_WAIT: Duration = Duration::from_secs(600);
/// How often, meanwhile, it looks.
const START_POLL: Duration = Duration::from_secs(1);
/// How long a button waits for the controller's answer before saying it was asked.
const ACTION_WAIT: Duration = Duration::from_secs(10);

/// (namespace, verb, group/resource, subresource).
type RightKey = (String, String, String, String);

#[derive(Clone)]
pub struct ClusterSource {
    client: Client,
    namespace: String,
    /// Whether each request is allowed, and when that was learnt.
    rights: Arc<Mutex<HashMap<RightKey, (bool, Instant)>>>,
    /// Layouts by Run uid.
    graphs: Arc<Mutex<HashMap<String, Option<Layout>>>>,
}

fn api_error(error: kube::Error) -> ApiError {
    match error {
        kube::Error::Api(status) => ApiError::new(status.code, status.message),
        other => ApiError::new(502, format!("cannot reach the cluster: {other}")),
    }
}

fn command_error(CommandError(message): CommandError) -> ApiError {
    let code = if message.starts_with("forbidden") {
        403
    } else if message.starts_with("no Run") {
        404
    } else {
        502
    };
    ApiError::new(code, message)
}

impl ClusterSource {
    pub fn new(client: Client, namespace: String) -> Self {
        Self {
            client,
            namespace,
            rights: Arc::new(Mutex::new(HashMap::new())),
            graphs: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Whether the user may `verb` `resource` (group `group`) in `namespace` ("" cluster-wide).
    async fn may(
        &self,
        namespace: &str,
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
    ) -> bool {
        let key = (
            namespace.to_string(),
            verb.to_string(),
            format!("{group}/{resource}"),
            sub.to_string(),
        );
        if let Ok(known) = self.rights.lock()
            && let Some((allowed, when)) = known.get(&key)
            && when.elapsed() < RIGHTS_TTL
        {
            return *allowed;
        }
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
                    verb: Some(verb.into()),
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    subresource: (!sub.is_empty()).then(|| sub.to_string()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let reviews: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let allowed = match reviews.create(&PostParams::default(), &review).await {
            Ok(answer) => answer.status.is_some_and(|s| s.allowed),
            // Not knowing is not being allowed: nothing is tried on a guess.
            Err(_) => return false,
        };
        if let Ok(mut known) = self.rights.lock() {
            if known.len() >= MAX_RIGHTS {
                known.retain(|_, (_, when)| when.elapsed() < RIGHTS_TTL);
                if known.len() >= MAX_RIGHTS {
                    known.clear();
                }
            }
            known.insert(key, (allowed, Instant::now()));
        }
        allowed
    }

    async fn require(&self, namespace: &str, verb: &str, resource: &str) -> Result<(), ApiError> {
        let (group, plural) = match resource {
            "runs" | "runshards" => ("ork.dev", resource),
            other => ("", other),
        };
        let (plural, sub) = plural.split_once('/').unwrap_or((plural, ""));
        if self.may(namespace, verb, group, plural, sub).await {
            return Ok(());
        }
        let shown = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{plural}.{group}")
        };
        Err(ApiError::new(
            403,
            format!("your RBAC role does not let you {verb} {shown} in namespace \"{namespace}\""),
        ))
    }

    /// The buttons' rights. Every button also reads the Run (a rerun reads what it reruns; the
    /// others wait for the controller's answer), so each needs `get` too.
    async fn rights(&self, namespace: &str) -> Rights {
        let get = self.may(namespace, "get", "ork.dev", "runs", "").await;
        Rights {
            patch: get && self.may(namespace, "patch", "ork.dev", "runs", "").await,
            create: get && self.may(namespace, "create", "ork.dev", "runs", "").await,
            suspend: true,
        }
    }

    /// The namespace of the user's kubeconfig context (or `--namespace`).
    pub fn context_namespace(&self) -> String {
        self.namespace.clone()
    }

    pub async fn context(&self) -> Context {
        let namespaces = if self.may("", "list", "", "namespaces", "").await {
            let all: Api<Namespace> = Api::all(self.client.clone());
            all.list(&ListParams::default())
                .await
                .ok()
                .map(|list| list.items.iter().map(|n| n.name_any()).collect())
        } else {
            None
        };
        Context {
            mode: "cluster",
            namespace: self.namespace.clone(),
            namespaces,
        }
    }

    pub async fn runs(&self, namespace: &str) -> Result<Vec<RunSummary>, ApiError> {
        self.require(namespace, "list", "runs").await?;
        let runs: Api<Run> = Api::namespaced(self.client.clone(), namespace);
        // Read every two seconds while the list is open: the API server's watch cache serves it.
        let mut listed = runs
            .list(&ListParams::default().match_any())
            .await
            .map_err(api_error)?
            .items;
        listed.sort_by_key(|r| {
            std::cmp::Reverse(r.metadata.creation_timestamp.as_ref().map(|t| t.0))
        });
        Ok(listed.iter().map(view::summary).collect())
    }

    /// The Run with every task record (from its RunShards when it has them).
    async fn full(&self, namespace: &str, name: &str) -> Result<Run, ApiError> {
        self.require(namespace, "get", "runs").await?;
        let runs: Api<Run> = Api::namespaced(self.client.clone(), namespace);
        let run = runs.get(name).await.map_err(api_error)?;
        if run.status.as_ref().is_some_and(|s| s.records.is_some()) {
            self.require(namespace, "list", "runshards").await?;
            return full_run(&self.client, namespace, name)
                .await
                .map_err(|e| match e {
                    crate::kubernetes::Error::Kube(e) => api_error(e),
                    other => ApiError::new(500, other.to_string()),
                });
        }
        Ok(run)
    }

    pub async fn run(&self, namespace: &str, name: &str) -> Result<RunView, ApiError> {
        let run = self.full(namespace, name).await?;
        let rights = self.rights(namespace).await;
        let graph = self.graph(&run).await;
        Ok(view::run_view(&run, rights, graph))
    }

    /// The layout of `run`'s pinned workflow: worked out once per run (a run's definition never
    /// changes once pinned), off the server's thread.
    async fn graph(&self, run: &Run) -> Option<Layout> {
        let pinned = run.status.as_ref()?.workflow.as_ref()?.spec.is_some();
        let key = run.metadata.uid.clone().unwrap_or_default();
        if let Some(known) = self.graphs.lock().ok()?.get(&key) {
            return known.clone();
        }
        let owned = run.clone();
        let graph = tokio::task::spawn_blocking(move || view::graph_of(&owned))
            .await
            .ok()?;
        if pinned && let Ok(mut graphs) = self.graphs.lock() {
            if graphs.len() >= MAX_GRAPHS {
                graphs.clear();
            }
            graphs.insert(key, graph.clone());
        }
        graph
    }

    /// The run's view each time it changes (watched when the user may watch runs, else read
    /// every two seconds); `None` once it is gone.
    pub async fn watch(
        &self,
        namespace: String,
        name: String,
    ) -> Result<impl Stream<Item = Option<RunView>> + Send + 'static, ApiError> {
        self.require(&namespace, "get", "runs").await?;
        // A watch starts with a list: both must be allowed, else the run is read every 2 s.
        let may_watch = self.may(&namespace, "list", "ork.dev", "runs", "").await
            && self.may(&namespace, "watch", "ork.dev", "runs", "").await;
        let changes = if may_watch {
            let runs: Api<Run> = Api::namespaced(self.client.clone(), &namespace);
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            watcher(runs, config).default_backoff().map(|_| ()).boxed()
        } else {
            futures::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Some(((), ()))
            })
            .boxed()
        };
        let source = self.clone();
        // Changes that come together make one read, and reads are at least MIN_GAP apart — more
        // for a big run (a millisecond per ten records), whose every view is large.
        let records = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let views = changes.ready_chunks(256).filter_map(move |_| {
            let (namespace, name, source) = (namespace.clone(), name.clone(), source.clone());
            let records = Arc::clone(&records);
            async move {
                let size = records.load(std::sync::atomic::Ordering::Relaxed);
                let gap = MIN_GAP.max(Duration::from_millis(size as u64 / 10));
                tokio::time::sleep(gap).await;
                match source.full(&namespace, &name).await {
                    Ok(run) => Some(Some({
                        let shown = view::run_view(&run, source.rights(&namespace).await, None);
                        records.store(shown.tasks.len(), std::sync::atomic::Ordering::Relaxed);
                        shown
                    })),
                    Err(e) if e.code == 404 => Some(None),
                    // A passing failure: the next change tries again.
                    Err(_) => None,
                }
            }
        });
        // Once the run is gone, the page is told so once and the stream ends.
        Ok(views.scan(false, |gone, view| {
            let out = (!*gone).then(|| {
                *gone = view.is_none();
                view
            });
            futures::future::ready(out)
        }))
    }

    pub async fn logs(
        &self,
        namespace: &str,
        name: &str,
        task: &str,
        attempt: Option<u32>,
        follow: bool,
    ) -> Result<LogBody, ApiError> {
        let run = self.full(namespace, name).await?;
        let (record, number) = view::attempt_of(&run, task, attempt)?;
        self.require(namespace, "list", "pods").await?;
        self.require(namespace, "get", "pods/log").await?;
        let (base, instance) = split_instance(task);
        let job = attempt_job_name(name, base, instance, number);
        let missing = || {
            ApiError::new(
                404,
                match &record.reused_from {
                    Some(from) => format!("reused from run \"{from}\": its logs are there"),
                    None => format!(
                        "attempt {number} has no Pod (Job {job}): not started yet, or deleted"
                    ),
                },
            )
        };
        if record.reused_from.is_some() {
            return Err(missing());
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        // Following an attempt that has not started, the answer waits for its container (as
        // `ork logs -f` does), so the page sees the first line as soon as there is one.
        let deadline = Instant::now() + START_WAIT;
        let pod = loop {
            let pod = pods
                .list(&ListParams::default().labels(&format!("job-name={job}")))
                .await
                .map_err(api_error)?
                .items
                .into_iter()
                .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            if !follow || pod.as_ref().is_some_and(started) || Instant::now() >= deadline {
                break pod;
            }
            tokio::time::sleep(START_POLL).await;
            let now = self.full(namespace, name).await?;
            let over = now.status.as_ref().is_none_or(|s| {
                s.phase.is_some_and(crate::api::RunPhase::is_final)
                    || s.tasks
                        .iter()
                        .find(|t| t.name == task)
                        .is_none_or(|t| t.attempts != number || t.phase.is_final())
            });
            if over {
                break pod;
            }
        }
        .ok_or_else(missing)?;
        let params = LogParams {
            container: Some(CONTAINER.into()),
            follow,
            ..LogParams::default()
        };
        let reader = pods
            .log_stream(&pod.name_any(), &params)
            .await
            .map_err(api_error)?;
        let chunks = futures::stream::unfold(Some(Box::pin(reader)), |state| async move {
            let mut reader = state?;
            let mut buffer = vec![0u8; 16 * 1024];
            match reader.read(&mut buffer).await {
                Ok(0) => None,
                Ok(n) => {
                    buffer.truncate(n);
                    Some((Ok(buffer), Some(reader)))
                }
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok(chunks.boxed())
    }

    pub async fn act(
        &self,
        namespace: &str,
        name: &str,
        action: RunCommand,
    ) -> Result<(String, Option<String>), ApiError> {
        let verb = if action == RunCommand::Rerun {
            "create"
        } else {
            "patch"
        };
        self.require(namespace, verb, "runs").await?;
        if action == RunCommand::Rerun {
            let made = rerun(&self.client, namespace, name)
                .await
                .map_err(command_error)?;
            return Ok((
                format!("Run \"{made}\" created, rerunning \"{name}\""),
                Some(made),
            ));
        }
        let message = run_command(&self.client, namespace, name, action, ACTION_WAIT)
            .await
            .map_err(command_error)?;
        Ok((message, None))
    }
}
