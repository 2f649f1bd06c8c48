//! The edge's admin API as both sides of it use it: the operator sends purges and probes, the
//! edge serves them. Port name and number, paths, the purge body and receipt, and the rules a
//! purge path must follow are defined here once.

use serde::{Deserialize, Serialize};

/// The name of the admin port on an edge pod (probes and the operator find it by this name).
pub const PORT_NAME: &str = "admin";
/// The admin port's number when the configuration does not say otherwise.
pub const DEFAULT_PORT: u16 = 9901;
/// Liveness: `200` while the process runs. Answers without a token.
pub const HEALTH_PATH: &str = "/healthz";
/// Readiness: `200` once the edge serves. Answers without a token.
pub const READY_PATH: &str = "/readyz";
/// `POST` an [`InvalidationRequest`]; the answer is an [`InvalidationReceipt`] once the paths
/// are purged. `GET {INVALIDATIONS_PATH}/{id}` shows the receipt again.
pub const INVALIDATIONS_PATH: &str = "/invalidations";

/// Most paths one invalidation may list (CloudFront's in-flight limit per distribution).
pub const MAX_PATHS: usize = 3_000;
/// Most wildcard paths one invalidation may list.
pub const MAX_WILDCARD_PATHS: usize = 15;
/// The longest invalidation path, in bytes.
pub const MAX_PATH_LEN: usize = 4_000;
/// The longest invalidation id (a Kubernetes UID fits, as does a DNS name).
pub const MAX_ID_LEN: usize = 253;

/// A purge: every path, on this edge, once per id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvalidationRequest {
    /// Makes the purge idempotent: the same id with the same paths is not purged again.
    pub id: String,
    /// Exact paths (`/index.html`) or prefixes ending in `*` (`/assets/*`).
    pub paths: Vec<String>,
}

/// What an edge purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Purged {
    /// Objects removed from memory (objects on disk are buried by tombstones and not counted).
    pub objects: usize,
    /// Fills in progress that will not be stored.
    pub fills: usize,
}

/// An edge's answer to an [`InvalidationRequest`], sent once the paths are purged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidationReceipt {
    /// The request's id.
    pub id: String,
    /// The request's paths.
    pub paths: Vec<String>,
    /// Always `Completed`: an edge answers only once the purge is done.
    pub status: String,
    /// What was purged.
    pub purged: Purged,
    /// When the edge received the request (RFC 3339).
    pub created_at: String,
    /// When the purge completed (RFC 3339).
    pub completed_at: String,
}

impl InvalidationRequest {
    /// Checks the id and every path, and the limits on their number; the first problem found.
    pub fn check(&self) -> Result<(), String> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= MAX_ID_LEN
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        if !id_ok {
            return Err(format!(
                "id must be 1-{MAX_ID_LEN} characters of letters, digits, '-', '_', '.', ':'"
            ));
        }
        if self.paths.is_empty() || self.paths.len() > MAX_PATHS {
            return Err(format!("give 1 to {MAX_PATHS} paths"));
        }
        for path in &self.paths {
            check_path(path)?;
        }
        if self.paths.iter().filter(|p| p.ends_with('*')).count() > MAX_WILDCARD_PATHS {
            return Err(format!(
                "at most {MAX_WILDCARD_PATHS} wildcard paths per invalidation"
            ));
        }
        Ok(())
    }
}

/// An invalidation path: starts with `/`, at most [`MAX_PATH_LEN`] bytes, `*` only as the last
/// character (a prefix). Case-sensitive.
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with /"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(format!("a path is longer than {MAX_PATH_LEN} characters"));
    }
    match path.find('*') {
        Some(i) if i != path.len() - 1 => Err(format!("{path:?}: '*' is allowed only as the last character")),
        _ => Ok(()),
    }
}

/// The pattern [`check_path`] enforces, for schemas (JSON Schema `pattern`).
pub const PATH_PATTERN: &str = r"^/[^*]*\*?$";

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, paths: &[&str]) -> InvalidationRequest {
        InvalidationRequest {
            id: id.to_owned(),
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn paths_follow_cloudfront_rules() {
        assert!(check_path("/index.html").is_ok());
        assert!(check_path("/assets/*").is_ok());
        assert!(check_path("/").is_ok());
        assert!(check_path("index.html").is_err());
        assert!(check_path("/a*b").is_err());
        assert!(check_path(&format!("/{}", "a".repeat(MAX_PATH_LEN))).is_err());
    }

    #[test]
    fn requests_are_checked_whole() {
        assert!(request("release-42", &["/a", "/b/*"]).check().is_ok());
        assert!(request("", &["/a"]).check().is_err());
        assert!(request("a b", &["/a"]).check().is_err());
        assert!(request("x", &[]).check().is_err());
        let wildcards: Vec<String> = (0..=MAX_WILDCARD_PATHS).map(|i| format!("/{i}/*")).collect();
        let refs: Vec<&str> = wildcards.iter().map(String::as_str).collect();
        assert!(request("x", &refs).check().is_err());
    }

    #[test]
    fn bodies_round_trip() {
        let json = r#"{"id":"r1","paths":["/a"]}"#;
        let parsed: InvalidationRequest = serde_json::from_str(json).expect("parses");
        assert_eq!(parsed, request("r1", &["/a"]));
        assert!(serde_json::from_str::<InvalidationRequest>(r#"{"id":"r1","paths":[],"x":1}"#).is_err());
    }
}
