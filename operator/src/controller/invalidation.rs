//! Carries out Invalidations on the edges of their Distribution.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use super::{Context, apply_status, error_policy, object_key};
use crate::api::{Invalidation, InvalidationPhase, InvalidationStatus};
use crate::{Error, Result};

const RESYNC: Duration = Duration::from_secs(300);

pub(super) fn controller(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = ()> {
    let api = Api::<Invalidation>::all(ctx.client.clone());
    futures::StreamExt::map(
        Controller::new(api, watcher::Config::default().any_semantic())
            .graceful_shutdown_on(shutdown)
            .run(reconcile, error_policy::<Invalidation>, ctx),
        |_| (),
    )
}

async fn reconcile(inval: Arc<Invalidation>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let namespace = inval.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: "Invalidation",
        name: inval.name_any(),
    })?;
    let api: Api<Invalidation> = Api::namespaced(ctx.client.clone(), &namespace);
    let current = inval.status.clone().unwrap_or_default();
    let desired = InvalidationStatus {
        observed_generation: inval.metadata.generation,
        phase: current.phase.or(Some(InvalidationPhase::Pending)),
        create_time: current
            .create_time
            .clone()
            .or_else(|| Some(Time(k8s_openapi::jiff::Timestamp::now()))),
        ..current.clone()
    };
    if desired != current {
        apply_status(&api, &inval.name_any(), &desired).await?;
    }
    ctx.backoff.succeeded(&object_key(inval.as_ref()));
    ctx.metrics.reconciled("Invalidation", started.elapsed());
    Ok(Action::requeue(RESYNC))
}
