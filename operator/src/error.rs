use std::time::Duration;

/// Everything that can go wrong in the operator, each with what a person needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// A resource arrived without the namespace every edgefleet resource has.
    #[error("{kind} {name} has no namespace")]
    MissingNamespace {
        /// Resource kind.
        kind: &'static str,
        /// Resource name.
        name: String,
    },
    /// A resource arrived without the uid the API server gives every object.
    #[error("{kind} {name} has no uid")]
    MissingUid {
        /// Resource kind.
        kind: &'static str,
        /// Resource name.
        name: String,
    },
    /// The system's random source failed (generating a fleet's admin token).
    #[error("could not generate an admin token: {0}")]
    Random(String),
    /// The HTTP client for the edges' admin APIs could not be built.
    #[error("could not build the HTTP client for the edges' admin APIs: {0}")]
    HttpClient(String),
    /// Serialising an object for the API failed (a bug: our own types must serialise).
    #[error("could not serialise {what}: {source}")]
    Serialize {
        /// What was being serialised.
        what: &'static str,
        /// The cause.
        source: serde_json::Error,
    },
    /// Leader election could not talk to the Lease API.
    #[error("leader election failed: {0}")]
    LeaderElection(#[from] kube_lease_manager::LeaseManagerError),
    /// Another replica took the leader Lease while this one was reconciling.
    #[error("lost the leader Lease")]
    LeadershipLost,
    /// The health/metrics listener could not start.
    #[error("could not serve health and metrics on {addr}: {source}")]
    Listen {
        /// Address asked for.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::MissingNamespace { .. } => "missing_namespace",
            Error::MissingUid { .. } => "missing_uid",
            Error::Random(_) => "random",
            Error::HttpClient(_) => "http_client",
            Error::Serialize { .. } => "serialize",
            Error::LeaderElection(_) | Error::LeadershipLost => "leader_election",
            Error::Listen { .. } => "listen",
        }
    }

    /// How long to wait before retrying the reconcile that failed with this error.
    pub fn requeue_after(&self) -> Duration {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => Duration::from_secs(1),
            _ => Duration::from_secs(10),
        }
    }
}

/// Result with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
