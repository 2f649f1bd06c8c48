//! `Invalidation`: a declarative, idempotent purge of cached paths.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

// The limits and path rules are the edge's admin contract (edgefleet_config::admin): what this
// schema admits is what every edge accepts.
use edgefleet_config::admin;

/// The paths to purge. Immutable: a new purge is a new object, so re-applying the same manifest
/// (a GitOps sync) never runs it again.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "edgefleet.io",
    version = "v1alpha1",
    kind = "Invalidation",
    namespaced,
    status = "InvalidationStatus",
    shortname = "inval",
    category = "edgefleet",
    doc = "A purge of cached paths from every edge of a Distribution.",
    printcolumn(name = "Distribution", type_ = "string", json_path = ".spec.distribution"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self == oldSelf")
        .message("an Invalidation's spec is immutable: create a new Invalidation for a new purge"),
    validation = Rule::new(format!(
        "self.paths.filter(p, p.endsWith('*')).size() <= {}",
        admin::MAX_WILDCARD_PATHS
    ))
    .message(kube::core::Message::Message(format!(
        "at most {} wildcard paths per Invalidation",
        admin::MAX_WILDCARD_PATHS
    ))),
)]
// clippy reads the repeated `printcolumn(type_ = …)` arguments of `#[kube]` as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
pub struct InvalidationSpec {
    /// The Distribution, in this namespace, whose edges are purged.
    #[schemars(length(min = 1, max = 253))]
    pub distribution: String,
    /// Exact paths (`/index.html`) or prefixes ending in `*` (`/images/*`); case-sensitive.
    #[schemars(length(min = 1, max = admin::MAX_PATHS))]
    pub paths: Vec<InvalidationPath>,
}

/// One path to purge: starts with `/`, `*` only as the last character.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct InvalidationPath(pub String);

impl schemars::JsonSchema for InvalidationPath {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "InvalidationPath".into()
    }

    // A plain pattern rather than a CEL rule per item: CEL's cost estimate for 3,000 items of up
    // to 4,000 characters exceeds the apiserver's budget.
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": admin::MAX_PATH_LEN,
            "pattern": admin::PATH_PATTERN,
            "description": "A path starting with '/'; '*' is allowed only as the last character.",
        })
    }
}

/// Progress of a purge.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvalidationStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending → InProgress → Completed, or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<InvalidationPhase>,
    /// Why the purge failed or is waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the operator first saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<Time>,
    /// When every ready edge had applied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Edges that confirmed the purge.
    #[serde(default)]
    pub edges_acknowledged: i32,
    /// Ready edges that must confirm it.
    #[serde(default)]
    pub edges_total: i32,
}

/// Phase of an Invalidation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum InvalidationPhase {
    /// Accepted, not started.
    Pending,
    /// Edges are purging.
    InProgress,
    /// Every ready edge purged the paths.
    Completed,
    /// Could not be carried out; see `message`.
    Failed,
}
