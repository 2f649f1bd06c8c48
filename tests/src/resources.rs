//! edgefleet's own resources as dynamic objects: the tests read them as JSON, the way a
//! `kubectl` user sees them, rather than through the operator's Rust types.

use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;

/// `distributions.edgefleet.io` in `namespace`.
pub fn distributions(client: Client, namespace: &str) -> Api<DynamicObject> {
    edgefleet(client, namespace, "Distribution", "distributions")
}

/// `invalidations.edgefleet.io` in `namespace`.
pub fn invalidations(client: Client, namespace: &str) -> Api<DynamicObject> {
    edgefleet(client, namespace, "Invalidation", "invalidations")
}

fn edgefleet(client: Client, namespace: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("edgefleet.io", "v1alpha1", kind);
    Api::namespaced_with(
        client,
        namespace,
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}
