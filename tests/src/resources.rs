//! edgefleet's own resources as dynamic objects: the tests read them as JSON, the way a
//! `kubectl` user sees them, rather than through the operator's Rust types.

use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;

/// `distributions.edgefleet.io` in `namespace`.
pub fn distributions(client: Client, namespace: &str) -> Api<DynamicObject> {
    edgefleet(client, namespace, "Distribution", "distributions")
}

/// `distributions.edgefleet.io` in every namespace.
pub fn all_distributions(client: Client) -> Api<DynamicObject> {
    Api::all_with(client, &edgefleet_resource("Distribution", "distributions"))
}

/// `invalidations.edgefleet.io` in `namespace`.
pub fn invalidations(client: Client, namespace: &str) -> Api<DynamicObject> {
    edgefleet(client, namespace, "Invalidation", "invalidations")
}

fn edgefleet(client: Client, namespace: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, namespace, &edgefleet_resource(kind, plural))
}

fn edgefleet_resource(kind: &str, plural: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk("edgefleet.io", "v1alpha1", kind);
    ApiResource::from_gvk_with_plural(&gvk, plural)
}

/// The Secret [`s3_distribution`]'s origin takes its credentials from.
pub const S3_CREDENTIALS_SECRET: &str = "files-credentials";

/// `kubectl` arguments that create [`S3_CREDENTIALS_SECRET`] with a made-up key pair.
pub const CREATE_S3_CREDENTIALS: [&str; 6] = [
    "create",
    "secret",
    "generic",
    S3_CREDENTIALS_SECRET,
    "--from-literal=AWS_ACCESS_KEY_ID=id",
    "--from-literal=AWS_SECRET_ACCESS_KEY=key",
];

/// A Distribution `name` whose one origin, `files`, is an S3 bucket signed with the credentials
/// in [`S3_CREDENTIALS_SECRET`] (nothing listens at its endpoint: these tests watch the
/// operator, not traffic), with `replicas` edges in `us-east`.
pub fn s3_distribution(name: &str, replicas: i32) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "edgefleet.io/v1alpha1",
        "kind": "Distribution",
        "metadata": {"name": name},
        "spec": {
            "origins": [{"name": "files", "s3": {
                "endpoint": "http://127.0.0.1:9", "bucket": "files",
                "credentialsSecretRef": {"name": S3_CREDENTIALS_SECRET}
            }}],
            "defaultBehavior": {"targetOrigin": "files"},
            "regions": [{"name": "us-east", "replicas": replicas}],
            "edge": {"cacheMemory": "16Mi"}
        }
    })
}
