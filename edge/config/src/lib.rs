//! The edge's runtime configuration.
//!
//! One definition shared by the operator (which renders it into a ConfigMap under the key
//! [`CONFIG_MAP_KEY`]) and the edge (which loads it from a file or a watched ConfigMap).
//! The format is YAML (JSON is accepted, being YAML); field names are camelCase and unknown
//! fields are refused, so a typo is an error rather than a silently ignored setting.
//!
//! Secrets are never inline: the admin token, S3 credentials and upload client keys are paths to files (the operator
//! mounts a Secret there), and are re-read whenever the configuration is reloaded.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
mod model;
mod validate;

use std::path::Path;

pub use model::{
    AdminConfig, Behavior, CacheConfig, CacheKey, DEFAULT_ERROR_CACHING_MIN_TTL, DEFAULT_MAX_UPLOAD_BYTES,
    DiskTier, EdgeConfig, ErrorCaching, ErrorResponse, HttpOrigin, KeyList, Limits, Listen, Method, Origin,
    OriginGroup, OriginShield, S3Origin, ShieldPeer, ShieldService, Upload, ViewerCacheControl,
};
pub use validate::Problem;

/// The key under which the operator stores the rendered configuration in its ConfigMap.
pub const CONFIG_MAP_KEY: &str = "edge.yaml";

/// The environment variable that overrides [`EdgeConfig::region`] (set by the operator from the
/// pod's region).
pub const REGION_ENV: &str = "EDGEFLEET_REGION";
/// Environment variable overriding `listen.data`: the operator sets it from the pod, since every
/// pod of a Distribution shares one rendered configuration.
pub const LISTEN_DATA_ENV: &str = "EDGEFLEET_LISTEN_DATA";
/// Environment variable overriding `listen.admin` (see [`LISTEN_DATA_ENV`]).
pub const LISTEN_ADMIN_ENV: &str = "EDGEFLEET_LISTEN_ADMIN";
/// Environment variable overriding `listen.upload` (see [`LISTEN_DATA_ENV`]).
pub const LISTEN_UPLOAD_ENV: &str = "EDGEFLEET_LISTEN_UPLOAD";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The text is not well-formed YAML/JSON or does not match the schema.
    #[error("config is not valid YAML for the edge schema: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// The document parsed but breaks one or more rules; every problem is listed.
    #[error("config is invalid:\n{}", list(.0))]
    Invalid(Vec<Problem>),
    /// The configuration could not be written out.
    #[error("cannot render config: {0}")]
    Render(serde_yaml::Error),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl EdgeConfig {
    /// Parses and validates a YAML (or JSON) document.
    pub fn from_yaml(text: &str) -> Result<Self> {
        // Enums are written as one-key maps (`http: {...}`, `allowList: [...]`), the form JSON
        // uses too, rather than serde_yaml's default YAML tags (`!http`).
        let config: EdgeConfig =
            serde_yaml::with::singleton_map_recursive::deserialize(serde_yaml::Deserializer::from_str(text))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Renders the configuration as YAML, the form stored in the ConfigMap.
    /// Use this rather than `serde_yaml::to_string`, which would write enums as YAML tags.
    pub fn to_yaml(&self) -> Result<String> {
        let mut out = Vec::new();
        let mut serializer = serde_yaml::Serializer::new(&mut out);
        serde_yaml::with::singleton_map_recursive::serialize(self, &mut serializer).map_err(Error::Render)?;
        String::from_utf8(out).map_err(|e| Error::Render(serde::ser::Error::custom(e)))
    }

    /// Checks every rule the schema cannot express, reporting all problems at once.
    pub fn validate(&self) -> Result<()> {
        let problems = validate::problems(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(problems))
        }
    }
}
