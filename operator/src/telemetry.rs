//! Logs and Prometheus metrics.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global tracing subscriber. `level` is an `EnvFilter` directive such as `info` or
/// `edgefleet_operator=debug,kube=info`.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Labels of per-kind reconcile metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `Distribution` or `Invalidation`.
    pub kind: &'static str,
}

/// Labels of reconcile failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `Distribution` or `Invalidation`.
    pub kind: &'static str,
    /// [`crate::Error::metric_label`].
    pub error: &'static str,
}

/// Labels of Kubernetes API requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequestLabels {
    /// HTTP method: GET for reads and watches, the others are writes.
    pub method: String,
}

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciliations: Family<KindLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
    leader: Gauge,
    api_requests: Family<ApiRequestLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("edgefleet_operator");
        let reconciliations = Family::<KindLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        let leader = Gauge::default();
        let api_requests = Family::<ApiRequestLabels, Counter>::default();
        registry.register("reconciliations", "Reconcile passes", reconciliations.clone());
        registry.register(
            "reconcile_failures",
            "Reconcile passes that failed",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile pass",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        registry.register(
            "api_requests",
            "Requests sent to the Kubernetes API, by HTTP method",
            api_requests.clone(),
        );
        Self {
            registry,
            reconciliations,
            failures,
            duration,
            leader,
            api_requests,
        }
    }
}

impl Metrics {
    /// Records one finished reconcile pass.
    pub fn reconciled(&self, kind: &'static str, took: Duration) {
        self.reconciliations.get_or_create(&KindLabels { kind }).inc();
        self.duration
            .get_or_create(&KindLabels { kind })
            .observe(took.as_secs_f64());
    }

    /// Records one failed reconcile pass.
    pub fn failed(&self, kind: &'static str, error: &crate::Error) {
        self.failures
            .get_or_create(&FailureLabels {
                kind,
                error: error.metric_label(),
            })
            .inc();
    }

    /// Records one request to the Kubernetes API.
    pub fn api_request(&self, method: &http::Method) {
        self.api_requests
            .get_or_create(&ApiRequestLabels {
                method: method.as_str().to_owned(),
            })
            .inc();
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
