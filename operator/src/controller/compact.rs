//! The form in which the caches keep the objects the operator owns.
//!
//! A Deployment deserialised into k8s-openapi's structs takes about 17 KB of heap (measured:
//! every optional field of the pod template has its slot); the same object as JSON text about
//! 3 KB. At a thousand Distributions the caches hold 15 000 such objects and were most of the
//! operator's memory. So a cached object keeps its metadata typed (names, labels and owners are
//! read on every pass) and the rest as the JSON text the API server sent, parsed again only
//! when a pass compares the object or reads its status.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// A client-side `kubectl apply` leaves the whole object again in this annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An object of kind `K`: typed metadata, the rest as JSON text.
#[derive(Clone, Debug)]
pub(super) struct Compact<K> {
    metadata: ObjectMeta,
    /// Every field but `metadata`, as JSON.
    rest: Box<str>,
    /// A hash of the replica counts in the status, taken while parsing (see
    /// [`Compact::replica_counts`]).
    replica_counts: u64,
    kind: PhantomData<fn() -> K>,
}

impl<K> Compact<K> {
    /// The whole object as JSON (without what parsing dropped), for comparison with a rendered
    /// one. Our own text always parses; if it did not, an empty object compares as different,
    /// so the object would be applied again.
    pub(super) fn json(&self) -> Value {
        let mut object = match serde_json::from_str(&self.rest) {
            Ok(Value::Object(object)) => object,
            _ => Map::new(),
        };
        object.insert(
            "metadata".to_owned(),
            serde_json::to_value(&self.metadata).unwrap_or_default(),
        );
        Value::Object(object)
    }

    /// A hash of `status.observedGeneration`, `replicas`, `updatedReplicas` and
    /// `readyReplicas`: what a pass reads of a Deployment's status.
    pub(super) fn replica_counts(&self) -> u64 {
        self.replica_counts
    }
}

impl<K: DeserializeOwned> Compact<K> {
    /// The object as `K`; `None` if it does not parse as one (it always came from one).
    pub(super) fn parse(&self) -> Option<K> {
        serde_json::from_value(self.json()).ok()
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Compact<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Drops what no pass reads: `managedFields` and a client-side last-applied copy (each often
/// bigger than the object itself) and status conditions (only Deployments' replica counts are
/// read).
impl<'de, K> Deserialize<'de> for Compact<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut object = Map::deserialize(deserializer)?;
        let metadata = object
            .remove("metadata")
            .unwrap_or_else(|| Value::Object(Map::new()));
        let mut metadata: ObjectMeta = serde_json::from_value(metadata).map_err(D::Error::custom)?;
        metadata.managed_fields = None;
        if let Some(annotations) = metadata.annotations.as_mut() {
            annotations.remove(LAST_APPLIED);
        }
        let replica_counts = hash_counts(object.get("status"));
        if let Some(Value::Object(status)) = object.get_mut("status") {
            status.remove("conditions");
        }
        let rest = serde_json::to_string(&object)
            .map_err(D::Error::custom)?
            .into_boxed_str();
        Ok(Self {
            metadata,
            rest,
            replica_counts,
            kind: PhantomData,
        })
    }
}

fn hash_counts(status: Option<&Value>) -> u64 {
    let count = |field: &str| status.and_then(|s| s.get(field)).and_then(Value::as_i64);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        count("observedGeneration"),
        count("replicas"),
        count("updatedReplicas"),
        count("readyReplicas"),
    )
        .hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    use super::*;

    fn live(ready: i32, message: &str) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "site-eu", "namespace": "ns", "resourceVersion": "7",
                "labels": {"app": "edge"},
                "annotations": {LAST_APPLIED: "{}", "keep": "me"},
                "managedFields": [{"manager": "edgefleet-operator", "operation": "Apply"}]
            },
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "edge", "image": "e:1"}]}}},
            "status": {
                "replicas": 1, "readyReplicas": ready, "observedGeneration": 1,
                "conditions": [{"type": "Available", "status": "True", "message": message}]
            }
        })
    }

    #[test]
    fn keeps_what_passes_read_and_drops_the_rest() {
        let compact: Compact<Deployment> = serde_json::from_value(live(1, "ok")).expect("parses");
        let json = compact.json();
        assert_eq!(json["spec"]["template"]["spec"]["containers"][0]["image"], "e:1");
        assert_eq!(json["metadata"]["labels"]["app"], "edge");
        assert_eq!(json["metadata"]["annotations"], json!({"keep": "me"}));
        assert!(json["metadata"].get("managedFields").is_none());
        assert!(json["status"].get("conditions").is_none());
        assert_eq!(compact.meta().name.as_deref(), Some("site-eu"));
        let deployment = compact.parse().expect("a Deployment");
        assert_eq!(deployment.status.and_then(|s| s.ready_replicas), Some(1));
        assert_eq!(deployment.metadata.resource_version.as_deref(), Some("7"));
    }

    #[test]
    fn replica_counts_change_with_readiness_only() {
        let parse = |value| serde_json::from_value::<Compact<Deployment>>(value).expect("parses");
        let before = parse(live(0, "waiting"));
        assert_eq!(
            before.replica_counts(),
            parse(live(0, "still waiting")).replica_counts()
        );
        assert_ne!(
            before.replica_counts(),
            parse(live(1, "waiting")).replica_counts()
        );
    }
}
