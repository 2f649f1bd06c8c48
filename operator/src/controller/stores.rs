//! Local caches of everything the controllers read, filled by watches. Reconciles read these
//! instead of the API, so a pass over a converged Distribution sends no request at all, and the
//! same watches are the controllers' triggers.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Lookup, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use super::compact::Compact;
use super::diagnosis::{self, Trouble};
use super::edge_pod::{self, EdgePod, Watched};
use crate::api::{Distribution, Invalidation};
use crate::render::{Kind, Settings, names};

/// A watch stream that feeds a store and triggers reconciles.
pub(super) type Trigger<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

/// A stream that feeds a store and names the Distributions to reconcile.
pub(super) type DistributionTrigger = std::pin::Pin<Box<dyn Stream<Item = ObjectRef<Distribution>> + Send>>;

/// An object the operator owns, as it is now.
pub(super) struct Live {
    /// The object as JSON, for comparison with what is rendered.
    pub(super) json: serde_json::Value,
    /// uid of its controlling owner.
    pub(super) controller_uid: Option<String>,
}

/// The caches.
#[derive(Clone)]
pub(super) struct Stores {
    pub(super) distributions: Store<Distribution>,
    pub(super) invalidations: Store<Invalidation>,
    service_accounts: Store<Compact<ServiceAccount>>,
    roles: Store<Compact<Role>>,
    role_bindings: Store<Compact<RoleBinding>>,
    secrets: Store<Compact<Secret>>,
    config_maps: Store<Compact<ConfigMap>>,
    services: Store<Compact<Service>>,
    disruption_budgets: Store<Compact<PodDisruptionBudget>>,
    deployments: Store<Compact<Deployment>>,
    /// Only when Ingresses are watched (the chart grants no access to them otherwise).
    ingresses: Option<Store<Compact<Ingress>>>,
    nodes: Store<PartialObjectMeta<Node>>,
    /// Every edge pod, in the form diagnosis reads.
    pods: Store<EdgePod>,
}

/// The watch streams behind [`Stores`]; polling them keeps the caches current.
pub(super) struct Triggers {
    pub(super) invalidations: Trigger<Invalidation>,
    pub(super) fleet: FleetTriggers,
}

/// The streams the Distribution controller polls.
pub(super) struct FleetTriggers {
    pub(super) distributions: Trigger<Distribution>,
    pub(super) service_accounts: Trigger<Compact<ServiceAccount>>,
    pub(super) roles: Trigger<Compact<Role>>,
    pub(super) role_bindings: Trigger<Compact<RoleBinding>>,
    pub(super) secrets: Trigger<Compact<Secret>>,
    pub(super) config_maps: Trigger<Compact<ConfigMap>>,
    pub(super) services: Trigger<Compact<Service>>,
    pub(super) disruption_budgets: Trigger<Compact<PodDisruptionBudget>>,
    pub(super) deployments: Trigger<Compact<Deployment>>,
    /// Empty when Ingresses are not watched.
    pub(super) ingresses: Trigger<Compact<Ingress>>,
    /// Nodes whose labels changed.
    pub(super) nodes: Trigger<PartialObjectMeta<Node>>,
    /// Every Secret's metadata: a referenced Secret appearing, changing or going.
    pub(super) referenced_secrets: Trigger<PartialObjectMeta<Secret>>,
    /// The Distribution of each edge pod whose trouble began, changed or ended.
    pub(super) pods: DistributionTrigger,
}

/// All `K` objects, or those of `namespace`.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// A cache of the `K` objects carrying the operator's `managed-by` label, in [`Compact`] form;
/// every change of one triggers a pass.
fn owned<K>(client: &Client, namespace: Option<&str>) -> (Store<Compact<K>>, Trigger<Compact<K>>)
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    owned_with(client, namespace, |obj: &Compact<K>| {
        fingerprint(&obj.meta().resource_version)
    })
}

/// Like [`owned`], but a change triggers a pass only when `relevant` (what a pass reads of
/// the object) changed, or the object went. Other controllers write the status of Deployments
/// and PodDisruptionBudgets every time a pod moves; most of those writes change nothing a pass
/// reads, and at a thousand Distributions the passes they woke were most passes.
fn owned_with<K>(
    client: &Client,
    namespace: Option<&str>,
    relevant: fn(&Compact<K>) -> u64,
) -> (Store<Compact<K>>, Trigger<Compact<K>>)
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default()
        .labels(names::MANAGED_SELECTOR)
        .any_semantic();
    let mut seen = ChangeFilter::default();
    let stream = watcher(scoped::<Compact<K>>(client, namespace), config)
        .default_backoff()
        .reflect(writer)
        .filter(move |event| futures::future::ready(seen.changed(event, relevant)))
        .touched_objects()
        .boxed();
    (reader, stream)
}

/// A cache of every edge pod (those of `namespace`, when given), and the Distributions to look
/// at again: those of pods whose [`Trouble`] changed. A pod's every status write (readiness,
/// restarts, the kubelet's messages) reaches the cache; only a new trouble, or one that ended,
/// wakes a pass. Each pass diagnoses what it finds in the cache then.
fn edge_pods(client: &Client, namespace: Option<&str>) -> (Store<EdgePod>, DistributionTrigger) {
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default()
        .labels(&names::edge_pods_selector())
        .any_semantic();
    let mut seen = ChangeFilter::quiet(fingerprint(&None::<Trouble>));
    let pods = watcher(scoped::<Watched>(client, namespace), config)
        .default_backoff()
        .map_ok(edge_pod::edge_pods);
    // `reflect` wants a Kubernetes object; the cached form is only a `Lookup`.
    let stream = reflector::reflector(writer, pods)
        .filter(move |event| futures::future::ready(seen.changed(event, trouble_fingerprint)))
        .touched_objects()
        .filter_map(|pod| {
            futures::future::ready(match pod {
                Ok(pod) => (!pod.distribution.is_empty())
                    .then(|| ObjectRef::new(&pod.distribution).within(&pod.namespace)),
                Err(error) => {
                    tracing::warn!(%error, "watching edge pods failed; retrying");
                    None
                }
            })
        })
        .boxed();
    (reader, stream)
}

/// What a pass reads of an edge pod: its trouble.
fn trouble_fingerprint(pod: &EdgePod) -> u64 {
    fingerprint(&diagnosis::trouble(pod))
}

/// A hash of `value`, for the change filters.
fn fingerprint(value: &impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// What a pass reads of an owned object's metadata: its generation (the spec), labels,
/// annotations and controller.
fn metadata_fingerprint<K: Resource>(obj: &K) -> u64 {
    let meta = obj.meta();
    let owners: Vec<(&str, Option<bool>)> = meta
        .owner_references
        .iter()
        .flatten()
        .map(|r| (r.uid.as_str(), r.controller))
        .collect();
    fingerprint(&(meta.generation, &meta.labels, &meta.annotations, owners))
}

/// A Deployment's spec and metadata, and the replica counts the status is computed from.
fn deployment_fingerprint(deployment: &Compact<Deployment>) -> u64 {
    fingerprint(&(metadata_fingerprint(deployment), deployment.replica_counts()))
}

/// Passes watch events on when the object is new, went, or its fingerprint changed.
#[derive(Default)]
struct ChangeFilter {
    last: std::collections::HashMap<(Option<String>, String), u64>,
    /// A fingerprint that is as good as no object: an object that has it takes no room here,
    /// and its arrival or departure passes nothing on. `None`: every arrival and departure does.
    quiet: Option<u64>,
}

impl ChangeFilter {
    /// A filter for objects that matter only while their fingerprint is not `quiet`.
    fn quiet(quiet: u64) -> Self {
        Self {
            last: Default::default(),
            quiet: Some(quiet),
        }
    }

    fn changed<K: Lookup>(
        &mut self,
        event: &Result<watcher::Event<K>, watcher::Error>,
        relevant: fn(&K) -> u64,
    ) -> bool {
        let key = |obj: &K| {
            (
                obj.namespace().map(Cow::into_owned),
                obj.name().map(Cow::into_owned).unwrap_or_default(),
            )
        };
        match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                let fingerprint = relevant(obj);
                let before = if self.quiet == Some(fingerprint) {
                    self.last.remove(&key(obj))
                } else {
                    self.last.insert(key(obj), fingerprint)
                };
                before.or(self.quiet) != Some(fingerprint)
            }
            Ok(watcher::Event::Delete(obj)) => {
                // Only fingerprints other than the quiet one are kept.
                self.last.remove(&key(obj)).is_some() || self.quiet.is_none()
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) | Err(_) => true,
        }
    }
}

impl Stores {
    /// Builds every cache and the watch streams that fill them.
    /// Nodes are always watched cluster-wide; everything else in `namespace` only, when given.
    pub(super) fn new(client: &Client, settings: &Settings, namespace: Option<&str>) -> (Stores, Triggers) {
        let (distributions, dist_writer) = reflector::store();
        let dist_stream = watcher(
            scoped::<Distribution>(client, namespace),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .modify(|obj| obj.managed_fields_mut().clear())
        .reflect(dist_writer)
        .touched_objects()
        // Status writes (our own) change no generation and need no new pass.
        .predicate_filter(kube::runtime::predicates::generation, Default::default())
        .boxed();

        let (invalidations, inval_writer) = reflector::store();
        let inval_stream = watcher(
            scoped::<Invalidation>(client, namespace),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .modify(|obj| obj.managed_fields_mut().clear())
        .reflect(inval_writer)
        .touched_objects()
        .predicate_filter(kube::runtime::predicates::generation, Default::default())
        .boxed();

        let (nodes, node_writer) = reflector::store();
        // Only nodes that carry a region matter; only their labels (region, zone) are read.
        let node_stream = watcher(
            Api::<PartialObjectMeta<Node>>::all(client.clone()),
            watcher::Config::default()
                .labels(&settings.region_label)
                .any_semantic(),
        )
        .default_backoff()
        .modify(|obj| obj.managed_fields_mut().clear())
        .reflect(node_writer)
        .touched_objects()
        .predicate_filter(kube::runtime::predicates::labels, Default::default())
        .boxed();

        let referenced_secrets = watcher(
            scoped::<PartialObjectMeta<Secret>>(client, namespace),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .touched_objects()
        .predicate_filter(kube::runtime::predicates::resource_version, Default::default())
        .boxed();

        let (service_accounts, sa_stream) = owned(client, namespace);
        let (roles, role_stream) = owned(client, namespace);
        let (role_bindings, binding_stream) = owned(client, namespace);
        let (secrets, secret_stream) = owned(client, namespace);
        let (config_maps, cm_stream) = owned(client, namespace);
        let (services, svc_stream) = owned(client, namespace);
        let (disruption_budgets, pdb_stream) = owned_with(client, namespace, metadata_fingerprint);
        let (deployments, deploy_stream) = owned_with(client, namespace, deployment_fingerprint);
        let (pods, pod_stream) = edge_pods(client, namespace);
        let (ingresses, ingress_stream) = if settings.ingress.watched() {
            let (store, stream) = owned(client, namespace);
            (Some(store), stream)
        } else {
            (None, futures::stream::empty().boxed())
        };
        (
            Stores {
                distributions,
                invalidations,
                service_accounts,
                roles,
                role_bindings,
                secrets,
                config_maps,
                services,
                disruption_budgets,
                deployments,
                ingresses,
                nodes,
                pods,
            },
            Triggers {
                invalidations: inval_stream,
                fleet: FleetTriggers {
                    distributions: dist_stream,
                    service_accounts: sa_stream,
                    roles: role_stream,
                    role_bindings: binding_stream,
                    secrets: secret_stream,
                    config_maps: cm_stream,
                    services: svc_stream,
                    disruption_budgets: pdb_stream,
                    deployments: deploy_stream,
                    ingresses: ingress_stream,
                    nodes: node_stream,
                    referenced_secrets,
                    pods: pod_stream,
                },
            },
        )
    }

    /// Waits until every cache has completed its first list, so a pass never mistakes a cache
    /// still filling for objects that do not exist.
    pub(super) async fn ready(&self) {
        // An error means the writer is gone, i.e. the controller is shutting down; the pass
        // that follows fails its API calls or is dropped.
        // A store's readiness (a oneshot) wakes only the waiter that polled it last, and the
        // controllers' runners wait on the same stores: a pass that started before every cache
        // was filled (a new leader with existing Distributions) could wait forever. Poll again.
        let all = || async {
            futures::join!(
                self.distributions.wait_until_ready(),
                self.invalidations.wait_until_ready(),
                self.service_accounts.wait_until_ready(),
                self.roles.wait_until_ready(),
                self.role_bindings.wait_until_ready(),
                self.secrets.wait_until_ready(),
                self.config_maps.wait_until_ready(),
                self.services.wait_until_ready(),
                self.disruption_budgets.wait_until_ready(),
                self.deployments.wait_until_ready(),
                self.nodes.wait_until_ready(),
                self.pods.wait_until_ready(),
                async {
                    if let Some(ingresses) = &self.ingresses {
                        let _ = ingresses.wait_until_ready().await;
                    }
                },
            )
        };
        while tokio::time::timeout(std::time::Duration::from_millis(100), all())
            .await
            .is_err()
        {}
    }

    /// The cached object `kind`/`namespace`/`name`, if the operator owns one by that name.
    pub(super) fn live(&self, kind: Kind, namespace: &str, name: &str) -> Option<Live> {
        match kind {
            Kind::ServiceAccount => live(&self.service_accounts, namespace, name),
            Kind::Role => live(&self.roles, namespace, name),
            Kind::RoleBinding => live(&self.role_bindings, namespace, name),
            Kind::Secret => live(&self.secrets, namespace, name),
            Kind::ConfigMap => live(&self.config_maps, namespace, name),
            Kind::Service => live(&self.services, namespace, name),
            Kind::PodDisruptionBudget => live(&self.disruption_budgets, namespace, name),
            Kind::Deployment => live(&self.deployments, namespace, name),
            Kind::Ingress => live(self.ingresses.as_ref()?, namespace, name),
        }
    }

    /// Names of the `kind` objects in `namespace` that the Distribution with `uid` controls.
    pub(super) fn owned_names(
        &self,
        kind: Kind,
        namespace: &str,
        distribution: &str,
        uid: &str,
    ) -> Vec<String> {
        match kind {
            Kind::ServiceAccount => owned_names(&self.service_accounts, namespace, distribution, uid),
            Kind::Role => owned_names(&self.roles, namespace, distribution, uid),
            Kind::RoleBinding => owned_names(&self.role_bindings, namespace, distribution, uid),
            Kind::Secret => owned_names(&self.secrets, namespace, distribution, uid),
            Kind::ConfigMap => owned_names(&self.config_maps, namespace, distribution, uid),
            Kind::Service => owned_names(&self.services, namespace, distribution, uid),
            Kind::PodDisruptionBudget => owned_names(&self.disruption_budgets, namespace, distribution, uid),
            Kind::Deployment => owned_names(&self.deployments, namespace, distribution, uid),
            Kind::Ingress => self
                .ingresses
                .as_ref()
                .map(|store| owned_names(store, namespace, distribution, uid))
                .unwrap_or_default(),
        }
    }

    /// A cached Deployment the operator owns.
    pub(super) fn deployment(&self, namespace: &str, name: &str) -> Option<Deployment> {
        self.deployments
            .get(&ObjectRef::new(name).within(namespace))?
            .parse()
    }

    /// A cached Secret the operator owns.
    pub(super) fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        self.secrets.get(&ObjectRef::new(name).within(namespace))?.parse()
    }

    /// A cached Distribution.
    pub(super) fn distribution(&self, namespace: &str, name: &str) -> Option<Arc<Distribution>> {
        self.distributions.get(&ObjectRef::new(name).within(namespace))
    }

    /// The cached edge pods of Distribution `distribution` in `namespace`.
    pub(super) fn edge_pods(&self, namespace: &str, distribution: &str) -> Vec<Arc<EdgePod>> {
        self.pods
            .state_filter(|pod| &*pod.namespace == namespace && &*pod.distribution == distribution)
    }

    /// How many nodes carry `region` (and, when `zones` is not empty, one of them).
    pub(super) fn nodes_in(&self, settings: &Settings, region: &str, zones: &[String]) -> usize {
        self.nodes
            .state()
            .iter()
            .filter(|node| {
                let labels = node.labels();
                labels.get(&settings.region_label).is_some_and(|r| r == region)
                    && (zones.is_empty()
                        || labels
                            .get(&settings.zone_label)
                            .is_some_and(|z| zones.iter().any(|wanted| wanted == z)))
            })
            .count()
    }
}

fn live<K>(store: &Store<Compact<K>>, namespace: &str, name: &str) -> Option<Live>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let obj = store.get(&ObjectRef::new(name).within(namespace))?;
    let controller_uid = obj
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone());
    Some(Live {
        json: obj.json(),
        controller_uid,
    })
}

fn owned_names<K>(store: &Store<K>, namespace: &str, distribution: &str, uid: &str) -> Vec<String>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state_filter(|obj| {
            obj.meta().namespace.as_deref() == Some(namespace)
                && obj.labels().get(names::DISTRIBUTION_LABEL).map(String::as_str) == Some(distribution)
                && obj
                    .owner_references()
                    .iter()
                    .any(|r| r.controller == Some(true) && r.uid == uid)
        })
        .iter()
        .map(|obj| obj.name_any())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(resource_version: &str, generation: i64, ready: i32) -> Compact<Deployment> {
        serde_json::from_value(json!({
            "metadata": {
                "name": "site-eu", "namespace": "ns",
                "resourceVersion": resource_version, "generation": generation
            },
            "status": {"readyReplicas": ready, "conditions": []}
        }))
        .expect("a Deployment")
    }

    fn changed(filter: &mut ChangeFilter, event: watcher::Event<Compact<Deployment>>) -> bool {
        filter.changed(&Ok(event), deployment_fingerprint)
    }

    #[test]
    fn only_what_a_pass_reads_wakes_it() {
        let mut filter = ChangeFilter::default();
        assert!(changed(&mut filter, watcher::Event::Apply(deployment("1", 1, 0))));
        // Another controller's status write that changes no count a pass reads.
        assert!(!changed(
            &mut filter,
            watcher::Event::Apply(deployment("2", 1, 0))
        ));
        assert!(changed(&mut filter, watcher::Event::Apply(deployment("3", 1, 1))));
        // Someone edited the spec.
        assert!(changed(&mut filter, watcher::Event::Apply(deployment("4", 2, 1))));
    }

    /// Edge pod `p` whose container waits with `reason` (`None`: it runs).
    fn pod(waiting: Option<&str>) -> EdgePod {
        let state = match waiting {
            Some(reason) => json!({"waiting": {"reason": reason}}),
            None => json!({"running": {}}),
        };
        edge_pod::tests::edge_pod(
            "p",
            json!({"phase": "Running", "containerStatuses": [{"name": "edge", "state": state}]}),
        )
    }

    #[test]
    fn only_a_pods_trouble_beginning_changing_or_ending_wakes_a_pass() {
        let mut filter = ChangeFilter::quiet(fingerprint(&None::<Trouble>));
        let mut changed = |event| filter.changed(&Ok(event), trouble_fingerprint);
        assert!(!changed(watcher::Event::InitApply(pod(None))), "a healthy pod");
        assert!(!changed(watcher::Event::Apply(pod(Some("ContainerCreating")))));
        assert!(changed(watcher::Event::Apply(pod(Some("ErrImagePull")))));
        // The kubelet's next retry: the same trouble.
        assert!(!changed(watcher::Event::Apply(pod(Some("ImagePullBackOff")))));
        assert!(changed(watcher::Event::Apply(pod(Some("CrashLoopBackOff")))));
        assert!(changed(watcher::Event::Apply(pod(None))), "recovered");
        assert!(!changed(watcher::Event::Delete(pod(None))));
        assert!(changed(watcher::Event::Apply(pod(Some("ErrImagePull")))));
        assert!(changed(watcher::Event::Delete(pod(Some("ErrImagePull")))));
        assert!(filter.last.is_empty(), "healthy and deleted pods take no room");
    }

    #[test]
    fn a_deleted_object_always_wakes_and_comes_back_as_new() {
        let mut filter = ChangeFilter::default();
        assert!(changed(
            &mut filter,
            watcher::Event::InitApply(deployment("1", 1, 1))
        ));
        assert!(changed(
            &mut filter,
            watcher::Event::Delete(deployment("1", 1, 1))
        ));
        assert!(changed(&mut filter, watcher::Event::Apply(deployment("5", 1, 1))));
    }
}
