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
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::apply::{self, Applied, Change};
use super::diagnosis;
use super::events::Verb;
use super::status::{self, Observation, RegionObservation};
use super::stores::{FleetTriggers, Live, Stores};
use super::{State, apply_status, error_policy, events, object_key};
use crate::api::Distribution;
use crate::render::{self, Blocker, Inputs, Manifest, names, secrets};
use crate::{Error, Result};

/// How often a converged Distribution is looked at again, to catch drift nobody told us about.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a Distribution that cannot be served is looked at again without any trigger.
const RETRY_BLOCKED: Duration = Duration::from_secs(60);
/// Distributions reconciled at once. Each pass holds its rendered objects and the live ones as
/// JSON while its writes wait for a permit, so more passes than permits only cost memory.
const CONCURRENCY: u16 = 16;
/// How long a Distribution's triggers are gathered into one pass: creating it, then its
/// objects appearing and each region's Deployment becoming ready, wake it a dozen times within
/// seconds; a pass after the last of a burst sees them all.
const DEBOUNCE: Duration = Duration::from_millis(500);

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
        .reconcile_on(triggers.pods)
        .with_config(
            controller::Config::default()
                .concurrency(CONCURRENCY)
                .debounce(DEBOUNCE),
        )
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

    let mut written = Written::default();
    let blockers = match inputs(&dist, &state, &namespace).await? {
        Err(found) => found,
        Ok(inputs) => match render::render(&dist, &ctx.settings, &inputs) {
            Err(found) => found,
            Ok(fleet) => {
                let manifests = fleet.manifests().map_err(|source| Error::Serialize {
                    what: "rendered objects",
                    source,
                })?;
                converge(&dist, &state, &namespace, &uid, &manifests, &mut written).await?
            }
        },
    };

    let mut regions = dist
        .spec
        .regions
        .iter()
        .map(|region| {
            let deployment_name = names::regional(&name, &region.name);
            let live = state.stores.deployment(&namespace, &deployment_name);
            let deployment = written.deployments.get(&deployment_name).or(live.as_ref());
            let desired = if dist.spec.enabled { region.replicas } else { 0 };
            let nodes = state.stores.nodes_in(&ctx.settings, &region.name, &region.zones);
            RegionObservation::from_deployment(
                &region.name,
                desired,
                deployment,
                nodes,
                &region.zones,
                deployment_name,
            )
        })
        .collect::<Vec<_>>();
    // Only a region short of ready edges has pods worth a look; a converged pass reads none.
    if regions.iter().any(RegionObservation::falls_short) {
        let pods = state.stores.edge_pods(&namespace, &name);
        for region in regions.iter_mut().filter(|r| r.falls_short()) {
            region.pods = diagnosis::diagnose(
                pods.iter()
                    .filter(|pod| *pod.region == *region.name)
                    .map(AsRef::as_ref),
            );
        }
    }
    let observation = Observation {
        generation: dist.metadata.generation,
        enabled: dist.spec.enabled,
        region_label: &ctx.settings.region_label,
        zone_label: &ctx.settings.zone_label,
        regions,
        blockers: &blockers,
        service: name.clone(),
    };
    let current = dist.status.clone().unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut desired = status::status(&observation, &current, &now);
    desired.upload_endpoint = render::upload_endpoint(&dist, &namespace);
    let publish = |event: Option<kube::runtime::events::Event>| {
        events::publish(
            &ctx.client,
            &ctx.reporter,
            dist.object_ref(&()),
            event.into_iter().collect(),
        );
    };
    publish(events::changes(&written.changes));
    if status::differs(&desired, &current) {
        let api: Api<Distribution> = Api::namespaced(ctx.client.clone(), &namespace);
        apply_status(&api, &name, &desired).await?;
        publish(events::condition_changes(
            &current.conditions,
            &desired.conditions,
        ));
    }

    ctx.backoff.succeeded(&object_key(dist.as_ref()));
    ctx.metrics.reconciled("Distribution", started.elapsed());
    let degraded = desired
        .conditions
        .iter()
        .any(|c| c.type_ == "Degraded" && c.status == "True");
    Ok(Action::requeue(if degraded { RETRY_BLOCKED } else { RESYNC }))
}

/// What one pass wrote.
#[derive(Default)]
struct Written {
    /// Deployments as the API server returned them, for the status.
    deployments: BTreeMap<String, Deployment>,
    /// Every write, for the pass's one Event.
    changes: Vec<(Verb, render::Kind, String)>,
}

/// The admin token and origin credentials, or why they cannot be had.
async fn inputs(dist: &Distribution, state: &State, namespace: &str) -> Result<Result<Inputs, Vec<Blocker>>> {
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
    Ok(Ok(Inputs {
        admin_token,
        credentials,
    }))
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
    if let Some(token) = state.stores.secret(namespace, &name).as_ref().and_then(token_of) {
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
///
/// The writes of one wave are sent together (a Distribution is fifteen objects or more; one
/// round trip after the other made creation as slow as the sum of them), waves in order.
async fn converge(
    dist: &Distribution,
    state: &State,
    namespace: &str,
    uid: &str,
    manifests: &[Manifest],
    written: &mut Written,
) -> Result<Vec<Blocker>> {
    let client = &state.ctx.client;
    let live: Vec<_> = manifests
        .iter()
        .map(|m| state.stores.live(m.kind, namespace, &m.name))
        .collect();
    let conflicts: Vec<Blocker> = manifests
        .iter()
        .zip(&live)
        .filter_map(|(m, l)| apply::foreign(l.as_ref(), m, uid))
        .collect();
    if !conflicts.is_empty() {
        return Ok(conflicts);
    }
    for wave in [Wave::First, Wave::Second] {
        let writes: Vec<_> = manifests
            .iter()
            .zip(&live)
            .filter(|(m, _)| Wave::of(m.kind) == wave)
            .map(|(manifest, live)| apply_one(state, namespace, uid, manifest, live.as_ref()))
            .collect();
        let applied: Vec<_> = futures::stream::iter(writes)
            .buffered(PASS_WRITES_IN_FLIGHT)
            .collect()
            .await;
        let mut conflict = None;
        for (manifest, applied) in applied {
            match applied? {
                Applied::Unchanged => {}
                Applied::Conflict(blocker) => conflict = conflict.or(Some(blocker)),
                Applied::Written(change, obj) => {
                    written
                        .changes
                        .push((verb(change), manifest.kind, manifest.name.clone()));
                    if manifest.kind == render::Kind::Deployment
                        && let Ok(deployment) = obj.try_parse::<Deployment>()
                    {
                        written.deployments.insert(manifest.name.clone(), deployment);
                    }
                }
            }
        }
        if let Some(blocker) = conflict {
            return Ok(vec![blocker]);
        }
    }
    let deleted =
        apply::delete_orphans(client, &state.stores, namespace, &dist.name_any(), uid, manifests).await?;
    if !written.changes.is_empty() {
        let changes: Vec<String> = written
            .changes
            .iter()
            .map(|(verb, kind, name)| format!("{} {} {name}", verb.word(), kind.name()))
            .collect();
        tracing::info!(distribution = %object_key(dist), changes = ?changes, "applied");
    }
    if !deleted.is_empty() {
        tracing::info!(distribution = %object_key(dist), deleted = ?deleted, "deleted objects no longer rendered");
    }
    written.changes.extend(
        deleted
            .into_iter()
            .map(|(kind, name)| (Verb::Deleted, kind, name)),
    );
    Ok(Vec::new())
}

/// [`apply::apply`] once a write permit is free, with the manifest it was for.
async fn apply_one<'a>(
    state: &State,
    namespace: &str,
    uid: &str,
    manifest: &'a Manifest,
    live: Option<&Live>,
) -> (&'a Manifest, Result<Applied>) {
    // The semaphore is never closed: a permit always comes.
    let _permit = state.ctx.writes.acquire().await.ok();
    let applied = apply::apply(&state.ctx.client, namespace, uid, manifest, live).await;
    (manifest, applied)
}

/// Writes one pass sends at a time (all passes together send at most the context's
/// permits).
const PASS_WRITES_IN_FLIGHT: usize = 8;

/// Objects are written in two waves (see [`render::Kind::after_the_rest`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wave {
    First,
    Second,
}

impl Wave {
    fn of(kind: render::Kind) -> Self {
        if kind.after_the_rest() {
            Wave::Second
        } else {
            Wave::First
        }
    }
}

fn verb(change: Change) -> Verb {
    match change {
        Change::Created => Verb::Created,
        Change::Updated => Verb::Updated,
    }
}
