//! Reconciles a Distribution into its regional edge fleets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use super::{Context, apply_status, error_policy, object_key};
use crate::api::{Distribution, DistributionStatus};
use crate::{Error, Result};

/// How often a converged Distribution is looked at again, to catch drift nobody told us about.
const RESYNC: Duration = Duration::from_secs(300);

pub(super) fn controller(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl Stream<Item = ()> {
    let api = Api::<Distribution>::all(ctx.client.clone());
    futures::StreamExt::map(
        Controller::new(api, watcher::Config::default().any_semantic())
            .graceful_shutdown_on(shutdown)
            .run(reconcile, error_policy::<Distribution>, ctx),
        |_| (),
    )
}

async fn reconcile(dist: Arc<Distribution>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let namespace = dist.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: "Distribution",
        name: dist.name_any(),
    })?;
    let api: Api<Distribution> = Api::namespaced(ctx.client.clone(), &namespace);
    let current = dist.status.clone().unwrap_or_default();
    let desired = DistributionStatus {
        observed_generation: dist.metadata.generation,
        ..current.clone()
    };
    if desired != current {
        apply_status(&api, &dist.name_any(), &desired).await?;
    }
    ctx.backoff.succeeded(&object_key(dist.as_ref()));
    ctx.metrics.reconciled("Distribution", started.elapsed());
    Ok(Action::requeue(RESYNC))
}
