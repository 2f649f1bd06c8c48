//! Names and labels of everything rendered for a Distribution. One place, so the controller's
//! lookups (orphans, status) and the renderer can never disagree.

use std::collections::BTreeMap;

/// `app.kubernetes.io/name` of every edge object.
pub const APP_NAME: &str = "edgefleet-edge";
/// Label naming the Distribution an object belongs to.
pub const DISTRIBUTION_LABEL: &str = "edgefleet.io/distribution";
/// Label naming the region of a per-region object.
pub const REGION_LABEL: &str = "edgefleet.io/region";
/// `app.kubernetes.io/managed-by` of everything the operator owns; the operator watches only
/// objects carrying it.
pub const MANAGED_BY: &str = "edgefleet-operator";
/// Selector matching every object the operator owns.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=edgefleet-operator";

/// Selects the edge pods of every Distribution (their template carries [`labels`]).
pub fn edge_pods_selector() -> String {
    format!("{MANAGED_SELECTOR},app.kubernetes.io/name={APP_NAME}")
}

/// Pod-template annotation: hash of the inputs that need a new pod to take effect.
pub const POD_INPUTS_ANNOTATION: &str = "edgefleet.io/pod-inputs-hash";

/// The edge Deployment, its PodDisruptionBudget and its Service in one region.
pub fn regional(distribution: &str, region: &str) -> String {
    format!("{distribution}-{region}")
}

/// The ConfigMap holding the rendered edge configuration.
pub fn config_map(distribution: &str) -> String {
    format!("{distribution}-edge-config")
}

/// The Secret with the admin token and origin credentials; also the edges' ServiceAccount,
/// Role and RoleBinding.
pub fn edge(distribution: &str) -> String {
    format!("{distribution}-edge")
}

/// Labels of every object of `distribution`.
pub fn labels(distribution: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), APP_NAME.to_owned()),
        ("app.kubernetes.io/instance".to_owned(), distribution.to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), MANAGED_BY.to_owned()),
        (DISTRIBUTION_LABEL.to_owned(), distribution.to_owned()),
    ])
}

/// Labels of the per-region objects of `distribution`.
pub fn regional_labels(distribution: &str, region: &str) -> BTreeMap<String, String> {
    let mut labels = labels(distribution);
    labels.insert(REGION_LABEL.to_owned(), region.to_owned());
    labels
}

/// Selects the edge pods of `distribution` in every region.
pub fn fleet_selector(distribution: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), APP_NAME.to_owned()),
        (DISTRIBUTION_LABEL.to_owned(), distribution.to_owned()),
    ])
}

/// Selects the edge pods of `distribution` in `region`. Deployment selectors are immutable, so
/// this must never change.
pub fn region_selector(distribution: &str, region: &str) -> BTreeMap<String, String> {
    let mut selector = fleet_selector(distribution);
    selector.insert(REGION_LABEL.to_owned(), region.to_owned());
    selector
}

/// `key=value,...` form of a selector, for list calls.
pub fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
