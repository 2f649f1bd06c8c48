//! Reconciles a Distribution into its regional edge fleets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::apply::{self, Applied, Change};
use super::status::{self, Observation, RegionObservation};
use super::stores::{FleetTriggers, Live, Stores};
use super::{State, apply_status, error_policy, events, object_key};
use crate::api::{Distribution, DistributionStatus};
use crate::render::{self, Blocker, Inputs, Manifest, names, secrets};
use crate::{Error, Result};

/// How often a converged Distribution is looked at again, to catch drift nobody told us about.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a Distribution that cannot be served is looked at again without any trigger.
const RETRY_BLOCKED: Duration = Duration::from_secs(60);
/// Distributions reconciled at once; bounds the burst of API requests after a restart.
const CONCURRENCY: u16 = 32;

pub(super) fn controller(
    state: Arc<State>,
    triggers: FleetTriggers,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = ()> {
    let for_secrets = state.stores.clone();
    let for_nodes = state.stores.clone();
    let region_label = state.ctx.settings.region_label.clone();
    Controller::for_stream(triggers.distributions, state.stores.distributions.clone())
        .owns_stream(triggers.service_accounts)
        .owns_stream(triggers.roles)
        .owns_stream(triggers.role_bindings)
        .owns_stream(triggers.secrets)
        .owns_stream(triggers.config_maps)
        .owns_stream(triggers.services)
        .owns_stream(triggers.disruption_budgets)
        .owns_stream(triggers.deployments)
        .owns_stream(triggers.ingresses)
        .watches_stream(triggers.referenced_secrets, move |secret| {
            referencing(&for_secrets, &secret)
        })
        .watches_stream(triggers.nodes, move |node| {
            in_region(&for_nodes, &region_label, &node)
        })
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy::<Distribution>, state)
        .map(|_| ())
}

/// The Distributions that reference `secret` for origin credentials.
fn referencing(stores: &Stores, secret: &PartialObjectMeta<Secret>) -> Vec<ObjectRef<Distribution>> {
    let namespace = secret.namespace();
    let name = secret.name_any();
    stores
        .distributions
        .state_filter(|d| d.namespace() == namespace && secrets::referenced_secrets(d).contains(&name))
        .iter()
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

/// The Distributions with a region on `node`: its arrival or departure may end or start
/// `NoNodesInRegion`.
fn in_region(
    stores: &Stores,
    region_label: &str,
    node: &PartialObjectMeta<Node>,
) -> Vec<ObjectRef<Distribution>> {
    let Some(region) = node.labels().get(region_label) else {
        return Vec::new();
    };
    stores
        .distributions
        .state_filter(|d| d.spec.regions.iter().any(|r| &r.name == region))
        .iter()
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

async fn reconcile(dist: Arc<Distribution>, state: Arc<State>) -> Result<Action> {
    let started = Instant::now();
    state.stores.ready().await;
    let namespace = dist.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: "Distribution",
        name: dist.name_any(),
    })?;
    let Some(uid) = dist.uid() else {
        return Err(Error::MissingUid {
            kind: "Distribution",
            name: dist.name_any(),
        });
    };
    let name = dist.name_any();
    let ctx = &state.ctx;

    let mut deployments: BTreeMap<String, Deployment> = BTreeMap::new();
    // Objects written in this pass before the cache could see them.
    let mut fresh = Fresh::new();
    let blockers = match inputs(&dist, &state, &namespace, &uid, &mut fresh).await? {
        Err(found) => found,
        Ok(inputs) => match render::render(&dist, &ctx.settings, &inputs) {
            Err(found) => found,
            Ok(fleet) => {
                let manifests = fleet.manifests().map_err(|source| Error::Serialize {
                    what: "rendered objects",
                    source,
                })?;
                converge(
                    &dist,
                    &state,
                    &namespace,
                    &uid,
                    &manifests,
                    &fresh,
                    &mut deployments,
                )
                .await?
            }
        },
    };

    let regions = dist
        .spec
        .regions
        .iter()
        .map(|region| {
            let deployment_name = names::regional(&name, &region.name);
            let live = state.stores.deployment(&namespace, &deployment_name);
            let deployment = deployments.get(&deployment_name).or(live.as_deref());
            let desired = if dist.spec.enabled { region.replicas } else { 0 };
            let nodes = state.stores.nodes_in(&ctx.settings, &region.name, &region.zones);
            RegionObservation::from_deployment(&region.name, desired, deployment, nodes, deployment_name)
        })
        .collect::<Vec<_>>();
    let observation = Observation {
        generation: dist.metadata.generation,
        enabled: dist.spec.enabled,
        region_label: &ctx.settings.region_label,
        regions,
        blockers: &blockers,
        service: name.clone(),
    };
    let current = dist.status.clone().unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let desired = status::status(&observation, &current, &now);
    if status::differs(&desired, &current) {
        let api: Api<Distribution> = Api::namespaced(ctx.client.clone(), &namespace);
        apply_status(&api, &name, &desired).await?;
        publish_condition_changes(&state, &dist, &current, &desired);
    }

    ctx.backoff.succeeded(&object_key(dist.as_ref()));
    ctx.metrics.reconciled("Distribution", started.elapsed());
    let degraded = desired
        .conditions
        .iter()
        .any(|c| c.type_ == "Degraded" && c.status == "True");
    Ok(Action::requeue(if degraded { RETRY_BLOCKED } else { RESYNC }))
}

/// Objects written in this pass, by kind and name, as the API server returned them.
type Fresh = BTreeMap<(render::Kind, String), serde_json::Value>;

/// The admin token and origin credentials, or why they cannot be had.
async fn inputs(
    dist: &Distribution,
    state: &State,
    namespace: &str,
    uid: &str,
    fresh: &mut Fresh,
) -> Result<Result<Inputs, Vec<Blocker>>> {
    let client = &state.ctx.client;
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut referenced = BTreeMap::new();
    for name in secrets::referenced_secrets(dist) {
        // Read fresh: only their metadata is cached, to keep credentials out of memory.
        let secret = secret_api.get_opt(&name).await?;
        referenced.insert(name, secret);
    }
    let credentials = match secrets::resolve_credentials(dist, &referenced) {
        Ok(credentials) => credentials,
        Err(blockers) => return Ok(Err(blockers)),
    };
    let admin_token = admin_token(dist, state, namespace, &secret_api).await?;
    let shield_address = match shield_address(dist, state, namespace, uid, fresh).await? {
        Ok(address) => address,
        Err(blocker) => return Ok(Err(vec![blocker])),
    };
    Ok(Ok(Inputs {
        admin_token,
        credentials,
        shield_address,
    }))
}

/// The ClusterIP of the shield region's Service, creating the Service first if need be.
async fn shield_address(
    dist: &Distribution,
    state: &State,
    namespace: &str,
    uid: &str,
    fresh: &mut Fresh,
) -> Result<std::result::Result<Option<String>, Blocker>> {
    let Some(manifest) = render::shield_service(dist) else {
        return Ok(Ok(None));
    };
    let manifest = manifest.map_err(|source| Error::Serialize {
        what: "the shield Service",
        source,
    })?;
    let cluster_ip = |spec: Option<&serde_json::Value>| {
        spec.and_then(|s| s.get("clusterIP"))
            .and_then(serde_json::Value::as_str)
            .filter(|ip| !ip.is_empty() && *ip != "None")
            .map(str::to_owned)
    };
    if let Some(service) = state.stores.service(namespace, &manifest.name)
        && let Some(ip) = service.spec.as_ref().and_then(|s| s.cluster_ip.clone())
        && !ip.is_empty()
    {
        return Ok(Ok(Some(ip)));
    }
    let live = state
        .stores
        .live(render::Kind::Service, namespace, &manifest.name);
    if let Some(blocker) = apply::foreign(live.as_ref(), &manifest, uid) {
        return Ok(Err(blocker));
    }
    match apply::apply(&state.ctx.client, namespace, uid, &manifest, live.as_ref()).await? {
        Applied::Conflict(blocker) => Ok(Err(blocker)),
        Applied::Unchanged => Ok(Ok(live.and_then(|l| cluster_ip(l.json.get("spec"))))),
        Applied::Written(_, service) => {
            let note = format!(
                "created Service {} first: the other regions' edges fetch through it",
                manifest.name
            );
            let related = events::owned_ref(manifest.kind, namespace, &manifest.name);
            let event = events::event(EventType::Normal, "Created", "Apply", note, Some(related));
            events::publish(&state.ctx.recorder, dist.object_ref(&()), vec![event]);
            let address = cluster_ip(service.data.get("spec"));
            let json = serde_json::to_value(&*service).map_err(|source| Error::Serialize {
                what: "the shield Service",
                source,
            })?;
            fresh.insert((manifest.kind, manifest.name.clone()), json);
            Ok(Ok(address))
        }
    }
}

/// The fleet's admin token: the one in the edge Secret, or a new random one the first time.
async fn admin_token(
    dist: &Distribution,
    state: &State,
    namespace: &str,
    api: &Api<Secret>,
) -> Result<String> {
    let name = names::edge(&dist.name_any());
    let token_of = |secret: &Secret| {
        let bytes = secret.data.as_ref()?.get(secrets::ADMIN_TOKEN_KEY)?;
        String::from_utf8(bytes.0.clone()).ok().filter(|t| !t.is_empty())
    };
    if let Some(token) = state
        .stores
        .secret(namespace, &name)
        .as_deref()
        .and_then(token_of)
    {
        return Ok(token);
    }
    // Not cached: it may have been created a moment ago. Never replace a token the edges use.
    if let Some(token) = api.get_opt(&name).await?.as_ref().and_then(token_of) {
        return Ok(token);
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// Applies every manifest that differs from its live object, then deletes what is no longer
/// rendered. Returns the name conflicts that stopped it (nothing is written then).
async fn converge(
    dist: &Distribution,
    state: &State,
    namespace: &str,
    uid: &str,
    manifests: &[Manifest],
    fresh: &Fresh,
    deployments: &mut BTreeMap<String, Deployment>,
) -> Result<Vec<Blocker>> {
    let client = &state.ctx.client;
    let live: Vec<_> = manifests
        .iter()
        .map(|m| match fresh.get(&(m.kind, m.name.clone())) {
            Some(json) => Some(Live {
                json: json.clone(),
                controller_uid: Some(uid.to_owned()),
            }),
            None => state.stores.live(m.kind, namespace, &m.name),
        })
        .collect();
    let conflicts: Vec<Blocker> = manifests
        .iter()
        .zip(&live)
        .filter_map(|(m, l)| apply::foreign(l.as_ref(), m, uid))
        .collect();
    if !conflicts.is_empty() {
        return Ok(conflicts);
    }
    let mut changes = Vec::new();
    let mut notes = Vec::new();
    for (manifest, live) in manifests.iter().zip(&live) {
        match apply::apply(client, namespace, uid, manifest, live.as_ref()).await? {
            Applied::Unchanged => {}
            Applied::Conflict(blocker) => return Ok(vec![blocker]),
            Applied::Written(change, obj) => {
                let (reason, verb) = match change {
                    Change::Created => ("Created", "created"),
                    Change::Updated => ("Updated", "updated"),
                };
                let what = format!("{verb} {} {}", manifest.kind.name(), manifest.name);
                let related = events::owned_ref(manifest.kind, namespace, &manifest.name);
                notes.push(events::event(
                    EventType::Normal,
                    reason,
                    "Apply",
                    what.clone(),
                    Some(related),
                ));
                changes.push(what);
                if manifest.kind == render::Kind::Deployment
                    && let Ok(deployment) = obj.try_parse::<Deployment>()
                {
                    deployments.insert(manifest.name.clone(), deployment);
                }
            }
        }
    }
    let deleted =
        apply::delete_orphans(client, &state.stores, namespace, &dist.name_any(), uid, manifests).await?;
    if !changes.is_empty() {
        tracing::info!(distribution = %object_key(dist), changes = ?changes, "applied");
    }
    if !deleted.is_empty() {
        tracing::info!(distribution = %object_key(dist), deleted = ?deleted, "deleted objects no longer rendered");
    }
    for (kind, name) in deleted {
        let note = format!("deleted {} {name}: no longer in the spec", kind.name());
        let related = events::owned_ref(kind, namespace, &name);
        notes.push(events::event(
            EventType::Normal,
            "Deleted",
            "Delete",
            note,
            Some(related),
        ));
    }
    events::publish(&state.ctx.recorder, dist.object_ref(&()), notes);
    Ok(Vec::new())
}

/// An Event for each condition whose status or reason changed.
fn publish_condition_changes(
    state: &State,
    dist: &Distribution,
    before: &DistributionStatus,
    after: &DistributionStatus,
) {
    let mut changed = Vec::new();
    for condition in &after.conditions {
        let unchanged = before.conditions.iter().any(|c| {
            c.type_ == condition.type_ && c.status == condition.status && c.reason == condition.reason
        });
        if unchanged {
            continue;
        }
        let warning = condition.type_ == "Degraded" && condition.status == "True";
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let note = format!(
            "{} is {}: {}",
            condition.type_, condition.status, condition.message
        );
        changed.push(events::event(
            type_,
            &condition.reason,
            &condition.type_,
            note,
            None,
        ));
    }
    events::publish(&state.ctx.recorder, dist.object_ref(&()), changed);
}
