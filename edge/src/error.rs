//! The edge's errors: startup, configuration and storage problems. Per-request failures are
//! answered with HTTP statuses and never become this type.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Config(#[from] edgefleet_config::Error),
    #[error("no region: set `region` in the config or the EDGEFLEET_REGION environment variable")]
    NoRegion,
    #[error("cannot read {what} from {path}: {source}")]
    SecretFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("upload client keys in {path}: {reason}")]
    UploadKeys { path: PathBuf, reason: String },
    #[error("{what} in {path} is empty")]
    EmptySecret { what: &'static str, path: PathBuf },
    #[error("origin {origin}: {reason}")]
    Origin { origin: String, reason: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("disk tier: {0}")]
    DiskTier(String),
    #[error("give --config FILE or --config-map NAMESPACE/NAME")]
    NoSource,
    #[error("--config-map must be NAMESPACE/NAME, got {0:?}")]
    ConfigMapName(String),
    #[error("ConfigMap {name}: {reason}")]
    ConfigMap { name: String, reason: String },
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
