//! The controller's one error type.

/// What can go wrong while reconciling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{kind} {name} has no namespace")]
    NoNamespace { kind: &'static str, name: String },
    #[error("{kind} {name} has no uid")]
    NoUid { kind: &'static str, name: String },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error("leader election: {0}")]
    Lease(String),
}

impl Error {
    /// A write lost a race with another writer (optimistic concurrency): retry at once.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(status)) if status.code == 409)
    }
}
