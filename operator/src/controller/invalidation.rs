//! Carries out Invalidations on the edges of their Distribution: each ready edge gets the paths
//! on its admin port (`POST /invalidations`, idempotent by id) and answers once they are purged.
//! Pending → InProgress → Completed; a Completed or Failed Invalidation is never run again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_config::admin::{self, InvalidationRequest};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::stores::Trigger;
use super::{State, apply_status, error_policy, events, object_key};
use crate::api::{Distribution, Invalidation, InvalidationPhase, InvalidationStatus};
use crate::render::{names, secrets};
use crate::{Error, Result};

/// Longest wait before edges that did not acknowledge are asked again (the wait doubles from
/// 1 s up to this).
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Edges asked at once.
const PARALLEL_EDGES: usize = 16;

pub(super) fn controller(
    state: Arc<State>,
    trigger: Trigger<Invalidation>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = ()> {
    Controller::for_stream(trigger, state.stores.invalidations.clone())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy::<Invalidation>, state)
        .map(|_| ())
}

async fn reconcile(inval: Arc<Invalidation>, state: Arc<State>) -> Result<Action> {
    let started = Instant::now();
    let current = inval.status.clone().unwrap_or_default();
    if matches!(
        current.phase,
        Some(InvalidationPhase::Completed | InvalidationPhase::Failed)
    ) {
        return Ok(Action::await_change());
    }
    state.stores.ready().await;
    let namespace = inval.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: "Invalidation",
        name: inval.name_any(),
    })?;
    let uid = inval.uid().ok_or_else(|| Error::MissingUid {
        kind: "Invalidation",
        name: inval.name_any(),
    })?;
    let api: Api<Invalidation> = Api::namespaced(state.ctx.client.clone(), &namespace);
    let name = inval.name_any();
    let now = || Time(k8s_openapi::jiff::Timestamp::now());
    let mut next = InvalidationStatus {
        observed_generation: inval.metadata.generation,
        phase: current.phase.or(Some(InvalidationPhase::Pending)),
        create_time: current.create_time.clone().or_else(|| Some(now())),
        ..current.clone()
    };
    let dist_name = &inval.spec.distribution;

    if !distribution_exists(&state, &namespace, dist_name).await? {
        next.phase = Some(InvalidationPhase::Failed);
        next.message = Some(format!(
            "Distribution {dist_name:?} does not exist in namespace {namespace}; create a new \
             Invalidation for an existing Distribution"
        ));
        apply_status(&api, &name, &next).await?;
        publish(
            &state,
            &inval,
            EventType::Warning,
            "DistributionNotFound",
            next.message.clone().unwrap_or_default(),
        );
        state.acks.lock().remove(&uid);
        return Ok(Action::await_change());
    }

    let token = state
        .stores
        .secret(&namespace, &names::edge(dist_name))
        .and_then(|s| s.data.as_ref()?.get(secrets::ADMIN_TOKEN_KEY).cloned())
        .and_then(|bytes| String::from_utf8(bytes.0).ok());
    let Some(token) = token else {
        next.message = Some(format!(
            "waiting for Distribution {dist_name:?} to have its edges (it may be Degraded; see its conditions)"
        ));
        if next != current {
            apply_status(&api, &name, &next).await?;
        }
        return Ok(Action::requeue(retry(&state, &inval)));
    };

    let edges = ready_edges(&state, &namespace, dist_name).await?;
    let acked: HashSet<String> = state.acks.lock().get(&uid).cloned().unwrap_or_default();
    let total = edges.len();
    if next.phase == Some(InvalidationPhase::Pending) {
        next.phase = Some(InvalidationPhase::InProgress);
        next.edges_total = i32::try_from(total).unwrap_or(i32::MAX);
        next.message = None;
        apply_status(&api, &name, &next).await?;
        publish(
            &state,
            &inval,
            EventType::Normal,
            "Started",
            format!("purging {} paths from {total} edges", inval.spec.paths.len()),
        );
    }

    let body = InvalidationRequest {
        id: uid.clone(),
        paths: inval.spec.paths.iter().map(|p| p.0.clone()).collect(),
    };
    let unacknowledged: Vec<Edge> = edges
        .iter()
        .filter(|e| !acked.contains(&e.uid))
        .cloned()
        .collect();
    let outcomes = purge(state.http.clone(), unacknowledged, token, body).await;

    let mut failures = Vec::new();
    {
        let mut acks = state.acks.lock();
        let done = acks.entry(uid.clone()).or_default();
        for (pod_uid, outcome) in outcomes {
            match outcome {
                Ok(()) => {
                    done.insert(pod_uid);
                }
                Err(why) => failures.push(why),
            }
        }
    }
    let acked: HashSet<String> = state.acks.lock().get(&uid).cloned().unwrap_or_default();
    let acknowledged = edges.iter().filter(|e| acked.contains(&e.uid)).count();
    next.edges_total = i32::try_from(total).unwrap_or(i32::MAX);
    next.edges_acknowledged = i32::try_from(acknowledged).unwrap_or(i32::MAX);

    let action = if acknowledged == total {
        next.phase = Some(InvalidationPhase::Completed);
        next.completion_time = Some(now());
        next.message = Some(if total == 0 {
            "no edge was ready, so none held anything to purge".to_owned()
        } else {
            format!("every ready edge ({total}) purged the paths")
        });
        state.acks.lock().remove(&uid);
        state.ctx.backoff.succeeded(&object_key(inval.as_ref()));
        Action::await_change()
    } else {
        failures.sort();
        next.message = Some(format!(
            "{acknowledged}/{total} edges purged; retrying the others: {}",
            failures.join("; ")
        ));
        Action::requeue(retry(&state, &inval))
    };
    if next != current {
        apply_status(&api, &name, &next).await?;
        if next.phase == Some(InvalidationPhase::Completed) {
            publish(
                &state,
                &inval,
                EventType::Normal,
                "Completed",
                next.message.clone().unwrap_or_default(),
            );
        }
    }
    state.ctx.metrics.reconciled("Invalidation", started.elapsed());
    Ok(action)
}

/// The next wait for an Invalidation still waiting on its edges.
fn retry(state: &State, inval: &Invalidation) -> Duration {
    state.ctx.backoff.failed(&object_key(inval)).min(MAX_RETRY)
}

/// Sends the purge to each edge, a few at a time; returns each pod's uid with its outcome.
async fn purge(
    http: reqwest::Client,
    edges: Vec<Edge>,
    token: String,
    body: InvalidationRequest,
) -> Vec<(String, std::result::Result<(), String>)> {
    futures::stream::iter(edges.into_iter().map(|edge| {
        let request = http
            .post(format!("http://{}{}", edge.admin_addr, admin::INVALIDATIONS_PATH))
            .bearer_auth(&token)
            .json(&body)
            .send();
        async move {
            let outcome = acknowledged(request.await).await;
            (edge.uid, outcome.map_err(|e| format!("{}: {e}", edge.name)))
        }
    }))
    .buffer_unordered(PARALLEL_EDGES)
    .collect()
    .await
}

/// Whether the Distribution exists: the cache first, the API when the cache says no (it may not
/// have seen a Distribution created together with the Invalidation yet).
async fn distribution_exists(state: &State, namespace: &str, name: &str) -> Result<bool> {
    if state.stores.distribution(namespace, name).is_some() {
        return Ok(true);
    }
    let api: Api<Distribution> = Api::namespaced(state.ctx.client.clone(), namespace);
    Ok(api.get_opt(name).await?.is_some())
}

/// A ready edge pod and where its admin API listens.
#[derive(Clone)]
struct Edge {
    uid: String,
    name: String,
    admin_addr: String,
}

async fn ready_edges(state: &State, namespace: &str, distribution: &str) -> Result<Vec<Edge>> {
    let api: Api<Pod> = Api::namespaced(state.ctx.client.clone(), namespace);
    let selector = names::selector_string(&names::fleet_selector(distribution));
    let pods = api.list(&ListParams::default().labels(&selector)).await?;
    Ok(pods.items.iter().filter_map(edge).collect())
}

fn edge(pod: &Pod) -> Option<Edge> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .as_ref()?
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let ip = status.pod_ip.as_ref().filter(|ip| !ip.is_empty())?;
    if !ready {
        return None;
    }
    let port = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(admin::PORT_NAME))
        .map_or(i32::from(admin::DEFAULT_PORT), |p| p.container_port);
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.clone()
    };
    Some(Edge {
        uid: pod.uid()?,
        name: pod.name_any(),
        admin_addr: format!("{host}:{port}"),
    })
}

/// An edge acknowledges with 200 once the paths are purged.
async fn acknowledged(response: reqwest::Result<reqwest::Response>) -> std::result::Result<(), String> {
    let response = response.map_err(|e| e.without_url().to_string())?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(200).collect();
    Err(format!("answered {status}: {}", body.trim()))
}

fn publish(state: &State, inval: &Invalidation, type_: EventType, reason: &str, note: String) {
    let event = events::event(type_, reason, "Invalidate", note, None);
    events::publish(
        &state.ctx.client,
        &state.ctx.reporter,
        inval.object_ref(&()),
        vec![event],
    );
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod(ready: bool, ip: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("site-eu-west-abc".into()),
                uid: Some("u1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "edge".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("admin".into()),
                        container_port: 9911,
                        ..ContainerPort::default()
                    }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: ip.map(str::to_owned),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn only_ready_pods_with_an_ip_are_asked_on_their_admin_port() {
        let ready = edge(&pod(true, Some("10.1.2.3"))).expect("ready edge");
        assert_eq!(ready.admin_addr, "10.1.2.3:9911");
        assert!(edge(&pod(false, Some("10.1.2.3"))).is_none());
        assert!(edge(&pod(true, None)).is_none());
        let v6 = edge(&pod(true, Some("fd00::1"))).expect("ready edge");
        assert_eq!(v6.admin_addr, "[fd00::1]:9911");
    }
}
