//! The controller's one error type.

/// What can go wrong while reconciling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{kind} {name} has no namespace")]
    NoNamespace { kind: &'static str, name: String },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error("leader election: {0}")]
    Lease(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// A write lost a race with another writer (optimistic concurrency): retry at once.
    pub fn is_conflict(&self) -> bool {
        api_code(self) == Some(409)
    }

    /// The API server's own message, for a status or an Event.
    pub fn api_message(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(status)) => {
                format!("{} ({} {})", status.message, status.code, status.reason)
            }
            other => other.to_string(),
        }
    }
}

/// The HTTP status of an API error, if the API server answered.
pub fn api_code(error: &Error) -> Option<u16> {
    match error {
        Error::Kube(kube::Error::Api(status)) => Some(status.code),
        _ => None,
    }
}
