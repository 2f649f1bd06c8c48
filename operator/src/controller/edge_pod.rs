//! Edge pods as the pod cache keeps them: what [`super::diagnosis`] reads, nothing else.
//!
//! A thousand Distributions run six thousand edge pods, and a `Pod` deserialised into
//! k8s-openapi's structs takes kilobytes (its `ObjectMeta` alone is 360 bytes before any
//! string). So the watch deserialises each pod straight into [`Watched`], whose metadata keeps
//! only what the watcher needs (name, namespace, resourceVersion), and the cache keeps the
//! [`EdgePod`] made from it: not a Kubernetes object at all, only a [`Lookup`] by namespace and
//! name. A healthy pod costs its inline size (120 bytes), its five short strings and its cache
//! entry: about 630 bytes in all (measured with the scale benchmark's names: 60 000 pods in a
//! store took 37.8 MB of RSS; the smallest pod typed as a `Pod` took 7.1 KB), so the benchmark's
//! 6 000 pods take under 4 MB. A container's image, reason, message, restarts and last exit are
//! kept only while it is waiting, which a serving edge's container never is.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::reflector::Lookup;
use kube::runtime::watcher;
use serde::{Deserialize, Deserializer};

use crate::render::names;

/// An edge pod, as far as diagnosis needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct EdgePod {
    pub(super) namespace: Box<str>,
    pub(super) name: Box<str>,
    /// Its Distribution (label `edgefleet.io/distribution`).
    pub(super) distribution: Box<str>,
    /// Its region (label `edgefleet.io/region`).
    pub(super) region: Box<str>,
    /// The node it was scheduled to.
    pub(super) node: Option<Box<str>>,
    /// Neither finished (phase Succeeded or Failed) nor being deleted: a pod its ReplicaSet still
    /// counts on. Only these are diagnosed; the phase is not kept beyond this.
    pub(super) live: bool,
    /// The scheduler's message while the pod's `PodScheduled` condition is False with reason
    /// `Unschedulable`.
    pub(super) unschedulable: Option<Box<str>>,
    /// Its containers that are waiting (neither running nor terminated), with why.
    pub(super) waiting: Box<[Waiting]>,
}

/// A waiting container, from the pod's `containerStatuses`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Waiting {
    pub(super) container: Box<str>,
    /// The image the kubelet reports (while waiting: the pod spec's reference).
    pub(super) image: Box<str>,
    /// The kubelet's reason, e.g. `ImagePullBackOff`.
    pub(super) reason: Box<str>,
    /// The kubelet's message; empty when it gave none.
    pub(super) message: Box<str>,
    pub(super) restarts: i32,
    /// How its last run ended, if it ran before.
    pub(super) last_exit: Option<Exit>,
}

/// A container's last termination.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Exit {
    pub(super) code: i32,
    /// E.g. `Error`, `OOMKilled`, `StartError`; empty when none was given.
    pub(super) reason: Box<str>,
}

/// The type information of a Pod (`v1`, `pods`), which `Lookup` and `Resource` each ask for.
macro_rules! pod_type {
    () => {
        fn kind(dyntype: &()) -> Cow<'_, str> {
            <Pod as Resource>::kind(dyntype)
        }

        fn group(dyntype: &()) -> Cow<'_, str> {
            <Pod as Resource>::group(dyntype)
        }

        fn version(dyntype: &()) -> Cow<'_, str> {
            <Pod as Resource>::version(dyntype)
        }

        fn plural(dyntype: &()) -> Cow<'_, str> {
            <Pod as Resource>::plural(dyntype)
        }
    };
}

impl Lookup for EdgePod {
    type DynamicType = ();

    pod_type!();

    fn name(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.name))
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.namespace))
    }

    // Not kept: the store needs neither, and each would be another string per pod.
    fn resource_version(&self) -> Option<Cow<'_, str>> {
        None
    }

    fn uid(&self) -> Option<Cow<'_, str>> {
        None
    }
}

/// A pod as the watch delivers it: the metadata the watcher itself reads, and the [`EdgePod`].
#[derive(Clone, Debug)]
pub(super) struct Watched {
    metadata: ObjectMeta,
    pod: EdgePod,
}

impl Resource for Watched {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;

    pod_type!();

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The watch event with the [`EdgePod`] in place of the watched pod.
pub(super) fn edge_pods(event: watcher::Event<Watched>) -> watcher::Event<EdgePod> {
    match event {
        watcher::Event::Apply(watched) => watcher::Event::Apply(watched.pod),
        watcher::Event::Delete(watched) => watcher::Event::Delete(watched.pod),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(watched) => watcher::Event::InitApply(watched.pod),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

// The JSON of a Pod, reduced to the fields read here; serde skips every other one without
// building it. Every field is optional: the API server leaves out empty ones.

#[derive(Deserialize)]
struct PodJson {
    metadata: MetaJson,
    spec: Option<SpecJson>,
    status: Option<StatusJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaJson {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    deletion_timestamp: Option<serde::de::IgnoredAny>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecJson {
    node_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusJson {
    phase: Option<String>,
    conditions: Option<Vec<ConditionJson>>,
    container_statuses: Option<Vec<ContainerStatusJson>>,
}

#[derive(Deserialize)]
struct ConditionJson {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    reason: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStatusJson {
    name: String,
    image: Option<String>,
    restart_count: Option<i32>,
    state: Option<StateJson>,
    last_state: Option<StateJson>,
}

#[derive(Deserialize)]
struct StateJson {
    waiting: Option<WaitingJson>,
    terminated: Option<TerminatedJson>,
}

#[derive(Deserialize)]
struct WaitingJson {
    reason: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TerminatedJson {
    exit_code: i32,
    reason: Option<String>,
}

fn boxed(s: Option<String>) -> Box<str> {
    s.unwrap_or_default().into_boxed_str()
}

impl<'de> Deserialize<'de> for Watched {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let PodJson {
            metadata,
            spec,
            status,
        } = PodJson::deserialize(deserializer)?;
        let mut labels = metadata.labels.unwrap_or_default();
        let mut label = |key: &str| boxed(labels.remove(key));
        let status = status.unwrap_or(StatusJson {
            phase: None,
            conditions: None,
            container_statuses: None,
        });
        let finished = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
        let unschedulable = status
            .conditions
            .into_iter()
            .flatten()
            .find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
            .map(|c| boxed(c.message));
        let waiting = status
            .container_statuses
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let waiting = c.state?.waiting?;
                Some(Waiting {
                    container: c.name.into_boxed_str(),
                    image: boxed(c.image),
                    reason: boxed(waiting.reason),
                    message: boxed(waiting.message),
                    restarts: c.restart_count.unwrap_or(0),
                    last_exit: c.last_state.and_then(|s| s.terminated).map(|t| Exit {
                        code: t.exit_code,
                        reason: boxed(t.reason),
                    }),
                })
            })
            .collect();
        let pod = EdgePod {
            namespace: boxed(metadata.namespace.clone()),
            name: boxed(metadata.name.clone()),
            distribution: label(names::DISTRIBUTION_LABEL),
            region: label(names::REGION_LABEL),
            node: spec.and_then(|s| s.node_name).map(String::into_boxed_str),
            live: metadata.deletion_timestamp.is_none() && !finished,
            unschedulable,
            waiting,
        };
        Ok(Watched {
            metadata: ObjectMeta {
                name: metadata.name,
                namespace: metadata.namespace,
                resource_version: metadata.resource_version,
                ..ObjectMeta::default()
            },
            pod,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// An edge pod of Distribution `site`, region `eu-west`, as the API server sends it, with
    /// `status` as given.
    pub(in crate::controller) fn pod_json(name: &str, status: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name, "namespace": "web", "resourceVersion": "42", "uid": "u-1",
                "labels": {
                    "app.kubernetes.io/name": "edgefleet-edge",
                    "edgefleet.io/distribution": "site",
                    "edgefleet.io/region": "eu-west",
                    "pod-template-hash": "5d8f7"
                },
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}]
            },
            "spec": {
                "nodeName": "node-1",
                "containers": [{"name": "edge", "image": "ghcr.io/edgefleet/edge:0.1.0"}]
            },
            "status": status
        })
    }

    /// The cached form of [`pod_json`].
    pub(in crate::controller) fn edge_pod(name: &str, status: Value) -> EdgePod {
        serde_json::from_value::<Watched>(pod_json(name, status))
            .expect("a pod")
            .pod
    }

    #[test]
    fn a_running_pod_keeps_only_its_names_and_node() {
        let watched: Watched = serde_json::from_value(pod_json(
            "site-eu-west-a",
            json!({
                "phase": "Running",
                "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
                "containerStatuses": [{
                    "name": "edge", "image": "ghcr.io/edgefleet/edge:0.1.0", "restartCount": 0, "ready": true,
                    "state": {"running": {"startedAt": "2026-12-01T10:00:00Z"}}
                }]
            }),
        ))
        .expect("a pod");
        assert_eq!(watched.meta().resource_version.as_deref(), Some("42"));
        assert_eq!(watched.meta().uid, None);
        assert_eq!(
            watched.pod,
            EdgePod {
                namespace: "web".into(),
                name: "site-eu-west-a".into(),
                distribution: "site".into(),
                region: "eu-west".into(),
                node: Some("node-1".into()),
                live: true,
                unschedulable: None,
                waiting: Box::new([]),
            }
        );
    }

    #[test]
    fn a_waiting_container_keeps_what_the_kubelet_said() {
        let pod = edge_pod(
            "site-eu-west-a",
            json!({
                "phase": "Running",
                "containerStatuses": [{
                    "name": "edge", "image": "ghcr.io/edgefleet/edge:0.1.0", "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}},
                    "lastState": {"terminated": {"exitCode": 2, "reason": "Error"}}
                }]
            }),
        );
        assert_eq!(
            &*pod.waiting,
            [Waiting {
                container: "edge".into(),
                image: "ghcr.io/edgefleet/edge:0.1.0".into(),
                reason: "CrashLoopBackOff".into(),
                message: "back-off 1m20s".into(),
                restarts: 4,
                last_exit: Some(Exit {
                    code: 2,
                    reason: "Error".into()
                }),
            }]
        );
    }

    #[test]
    fn the_schedulers_message_is_kept_only_while_unschedulable() {
        let unschedulable = |reason: &str| {
            edge_pod(
                "p",
                json!({
                    "phase": "Pending",
                    "conditions": [{
                        "type": "PodScheduled", "status": "False", "reason": reason,
                        "message": "0/12 nodes are available: 12 Insufficient cpu."
                    }]
                }),
            )
            .unschedulable
        };
        assert_eq!(
            unschedulable("Unschedulable").as_deref(),
            Some("0/12 nodes are available: 12 Insufficient cpu.")
        );
        assert_eq!(unschedulable("SchedulingGated"), None);
    }

    #[test]
    fn finished_and_deleted_pods_are_not_live() {
        assert!(!edge_pod("p", json!({"phase": "Failed", "reason": "Evicted"})).live);
        assert!(!edge_pod("p", json!({"phase": "Succeeded"})).live);
        let mut deleted = pod_json("p", json!({"phase": "Running"}));
        deleted["metadata"]["deletionTimestamp"] = json!("2026-12-01T10:00:00Z");
        let deleted: Watched = serde_json::from_value(deleted).expect("a pod");
        assert!(!deleted.pod.live);
        assert!(edge_pod("p", json!({"phase": "Pending"})).live);
    }

    #[test]
    fn a_pod_without_a_status_yet_is_live_and_has_nothing_to_say() {
        let pod = edge_pod("p", Value::Null);
        assert!(pod.live && pod.unschedulable.is_none() && pod.waiting.is_empty());
    }
}
