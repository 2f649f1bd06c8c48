//! The harness's error type: every failure says what was being done and where to look.

use std::path::PathBuf;
use std::process::ExitStatus;

/// Everything that can go wrong while starting or driving the test infrastructure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` exited with {status}: {stderr}")]
    CommandFailed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },

    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        what: String,
        waited: std::time::Duration,
    },

    #[error("the local cluster stopped during start-up ({status}); log: {log}\n{tail}")]
    ClusterExited {
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },

    #[error("{process} exited early ({status}); log: {log}\n{tail}")]
    ProcessExited {
        process: String,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },

    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },

    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
}

/// Result with the harness's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds "what was being done" to I/O errors.
pub(crate) trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
