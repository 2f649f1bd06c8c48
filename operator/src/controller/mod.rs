//! The reconcile loops: the only code that writes to the Kubernetes API.

mod apply;
mod backoff;
mod compact;
mod compare;
mod diagnosis;
mod distribution;
mod edge_pod;
mod events;
mod invalidation;
mod status;
mod stores;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use kube::runtime::events::Reporter;

pub use crate::render::Settings;
use crate::telemetry::Metrics;
pub use backoff::Backoff;

/// How long in-flight passes get to finish once shutdown begins (the chart's pods get 30 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Object writes in flight at once, over every pass. The API server allocates Service
/// ClusterIPs one at a time; with hundreds of Service writes queued behind that, each waited
/// over a minute and failed with a 504. A bound also bounds the client's connections (HTTP/1.1:
/// one per request in flight), and with them the operator's memory.
const WRITES_IN_FLIGHT: usize = 24;

/// The field manager every server-side apply of this operator uses.
pub const FIELD_MANAGER: &str = "edgefleet-operator";

/// What every reconcile pass gets.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Names this operator instance in the Events it publishes.
    pub reporter: Reporter,
    /// Reconcile metrics.
    pub metrics: Arc<Metrics>,
    /// Chart settings.
    pub settings: Settings,
    /// Per-object retry delays after failures.
    pub backoff: Backoff,
    /// The one namespace reconciled, or `None` for all of them.
    pub watch_namespace: Option<String>,
    /// Permits for object writes, [`WRITES_IN_FLIGHT`] in all.
    pub writes: tokio::sync::Semaphore,
}

impl Context {
    /// A context for this operator instance; `instance` names it in Events (the pod name).
    pub fn new(client: Client, metrics: Arc<Metrics>, settings: Settings, instance: String) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(instance),
        };
        Self {
            reporter,
            client,
            metrics,
            settings,
            backoff: Backoff::default(),
            watch_namespace: None,
            writes: tokio::sync::Semaphore::new(WRITES_IN_FLIGHT),
        }
    }

    /// Limits the operator to one namespace's Distributions and Invalidations (`None`: all).
    pub fn watching(mut self, namespace: Option<String>) -> Self {
        self.watch_namespace = namespace;
        self
    }
}

/// What the reconcile loops share: the context, the caches, and the edges' acknowledgements of
/// Invalidations in progress.
struct State {
    ctx: Arc<Context>,
    stores: stores::Stores,
    /// Client for the edges' admin APIs.
    http: reqwest::Client,
    /// Invalidation uid → uids of the edge pods that purged its paths. In memory only: after a
    /// restart the edges are asked again, which they answer from their own record.
    acks: parking_lot::Mutex<HashMap<String, HashSet<String>>>,
}

/// Runs both controllers until `shutdown` resolves; they finish their in-flight passes first.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) -> crate::Result<()> {
    let (stores, triggers) = stores::Stores::new(&ctx.client, &ctx.settings, ctx.watch_namespace.as_deref());
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        // Pod IPs are reached directly, whatever proxy the operator's environment names.
        .no_proxy()
        .build()
        .map_err(|e| crate::Error::HttpClient(e.to_string()))?;
    let state = Arc::new(State {
        ctx,
        stores,
        http,
        acks: parking_lot::Mutex::default(),
    });
    let distributions = distribution::controller(state.clone(), triggers.fleet, shutdown.clone())
        .for_each(|_| futures::future::ready(()));
    let invalidations = invalidation::controller(state, triggers.invalidations, shutdown.clone())
        .for_each(|_| futures::future::ready(()));
    // A controller whose caches never filled (the API server unreachable) waits for them even
    // after shutdown began; give in-flight passes a bounded time, inside the pod's grace period.
    let overdue = async {
        shutdown.await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        _ = async { futures::join!(distributions, invalidations) } => {}
        _ = overdue => tracing::warn!(grace = ?SHUTDOWN_GRACE, "controllers did not stop in time; exiting anyway"),
    }
    Ok(())
}

/// `Kind/namespace/name` of an object, for logs and backoff keys (an Invalidation may share its
/// Distribution's name).
fn object_key<K: kube::Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Shared error policy: count the failure, log it, retry with per-object exponential backoff.
fn error_policy<K>(obj: Arc<K>, error: &crate::Error, state: Arc<State>) -> kube::runtime::controller::Action
where
    K: kube::Resource<DynamicType = ()>,
{
    let ctx = &state.ctx;
    let kind = kind_name::<K>();
    let key = object_key(obj.as_ref());
    ctx.metrics.failed(kind, error);
    let delay = ctx
        .backoff
        .failed(&key)
        .max(error.requeue_after().min(std::time::Duration::from_secs(1)));
    tracing::warn!(%kind, object = %key, %error, retry_in = ?delay, "reconcile failed");
    kube::runtime::controller::Action::requeue(delay)
}

fn kind_name<K: kube::Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "Distribution" => "Distribution",
        "Invalidation" => "Invalidation",
        _ => "Other",
    }
}

/// Server-side applies `status` to the status subresource of `name`, as the one field manager.
async fn apply_status<K>(api: &kube::Api<K>, name: &str, status: &impl serde::Serialize) -> crate::Result<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let status = serde_json::to_value(status).map_err(|source| crate::Error::Serialize {
        what: "status",
        source,
    })?;
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &kube::api::Patch::Apply(&patch))
        .await?;
    Ok(())
}
