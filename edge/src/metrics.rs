//! Prometheus metrics, served in text format on the admin port's `/metrics`.
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// The `X-Cache` result of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub(crate) enum CacheResult {
    Hit,
    Miss,
    RefreshHit,
    Error,
}

impl CacheResult {
    pub(crate) fn header(self) -> http::HeaderValue {
        http::HeaderValue::from_static(match self {
            CacheResult::Hit => "Hit from edgefleet",
            CacheResult::Miss => "Miss from edgefleet",
            CacheResult::RefreshHit => "RefreshHit from edgefleet",
            CacheResult::Error => "Error from edgefleet",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) status: u16,
    pub(crate) cache: CacheResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct OriginLabels {
    pub(crate) origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct OriginOutcomeLabels {
    pub(crate) origin: String,
    /// The status code, or `unreachable` / `timeout`.
    pub(crate) outcome: String,
}

/// A cache admission: `store`, or `no-store` with the reason (see `cache::admission`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct AdmissionLabels {
    pub(crate) decision: &'static str,
    pub(crate) reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub(crate) result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct UploadLabels {
    /// The S3 call (`PutObject`, `UploadPart`...), `Unknown` when refused before it was known.
    pub(crate) operation: &'static str,
    /// `ok`, the S3 error code sent (`SignatureDoesNotMatch`, `EntityTooLarge`...), or
    /// `OriginError` when the origin's own error was passed on.
    pub(crate) result: &'static str,
}

/// What the cache's memory tier holds, read at scrape time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheUsage {
    pub(crate) bytes: u64,
    pub(crate) items: u64,
    pub(crate) capacity: u64,
    pub(crate) evictions: u64,
}

pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) response_bytes: Counter,
    pub(crate) origin_bytes: Counter,
    pub(crate) origin_duration: Family<OriginLabels, Histogram>,
    pub(crate) origin_requests: Family<OriginOutcomeLabels, Counter>,
    pub(crate) cache_bytes: Gauge,
    pub(crate) cache_capacity: Gauge,
    pub(crate) cache_objects: Gauge,
    pub(crate) cache_evictions: Counter,
    evictions_seen: AtomicU64,
    pub(crate) fills_in_flight: Gauge,
    pub(crate) admissions: Family<AdmissionLabels, Counter>,
    pub(crate) config_reloads: Family<ResultLabels, Counter>,
    pub(crate) config_generation: Gauge,
    pub(crate) invalidations: Counter,
    pub(crate) purged_objects: Counter,
    pub(crate) uploads: Family<UploadLabels, Counter>,
    pub(crate) upload_bytes: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("edgefleet_edge");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Viewer requests by status and cache result",
            requests.clone(),
        );
        let response_bytes = Counter::default();
        registry.register(
            "response_body_bytes",
            "Body bytes sent to viewers",
            response_bytes.clone(),
        );
        let origin_bytes = Counter::default();
        registry.register(
            "origin_body_bytes",
            "Body bytes received from origins by fills",
            origin_bytes.clone(),
        );
        let origin_duration = Family::<OriginLabels, Histogram>::new_with_constructor(|| {
            // 1 ms to ~33 s.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 16,
            ))
        });
        registry.register(
            "origin_request_duration_seconds",
            "Time from sending an origin request to its response head",
            origin_duration.clone(),
        );
        let origin_requests = Family::<OriginOutcomeLabels, Counter>::default();
        registry.register(
            "origin_requests",
            "Origin requests by origin and outcome",
            origin_requests.clone(),
        );
        let cache_bytes = Gauge::default();
        registry.register(
            "cache_bytes",
            "Bytes held by the memory tier",
            cache_bytes.clone(),
        );
        let cache_capacity = Gauge::default();
        registry.register(
            "cache_capacity_bytes",
            "Capacity of the memory tier",
            cache_capacity.clone(),
        );
        let cache_objects = Gauge::default();
        registry.register(
            "cache_objects",
            "Entries in the memory tier",
            cache_objects.clone(),
        );
        let cache_evictions = Counter::default();
        registry.register(
            "cache_evictions",
            "Entries evicted from the memory tier",
            cache_evictions.clone(),
        );
        let fills_in_flight = Gauge::default();
        registry.register(
            "fills_in_flight",
            "Origin fills in progress (collapsed requests count once)",
            fills_in_flight.clone(),
        );
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "cache_admissions",
            "Origin responses stored, or not stored by reason",
            admissions.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration loads by result",
            config_reloads.clone(),
        );
        let config_generation = Gauge::default();
        registry.register(
            "config_generation",
            "Generation of the configuration in use",
            config_generation.clone(),
        );
        let invalidations = Counter::default();
        registry.register("invalidations", "Invalidations applied", invalidations.clone());
        let purged_objects = Counter::default();
        registry.register(
            "purged_objects",
            "Objects removed by invalidations",
            purged_objects.clone(),
        );
        let uploads = Family::<UploadLabels, Counter>::default();
        registry.register(
            "uploads",
            "Upload port requests by S3 operation and result",
            uploads.clone(),
        );
        let upload_bytes = Counter::default();
        registry.register(
            "upload_body_bytes",
            "Body bytes received on the upload port and streamed to the origin",
            upload_bytes.clone(),
        );
        Arc::new(Self {
            registry,
            requests,
            response_bytes,
            origin_bytes,
            origin_duration,
            origin_requests,
            cache_bytes,
            cache_capacity,
            cache_objects,
            cache_evictions,
            evictions_seen: AtomicU64::new(0),
            fills_in_flight,
            admissions,
            config_reloads,
            config_generation,
            invalidations,
            purged_objects,
            uploads,
            upload_bytes,
        })
    }

    /// Sets the cache gauges from the store, read at scrape time.
    pub(crate) fn observe_cache(&self, usage: CacheUsage, fills: usize) {
        self.cache_bytes.set(usage.bytes as i64);
        self.cache_capacity.set(usage.capacity as i64);
        self.cache_objects.set(usage.items as i64);
        // The store counts evictions itself; the counter catches up with it at each scrape.
        let seen = self.evictions_seen.fetch_max(usage.evictions, Ordering::Relaxed);
        if usage.evictions > seen {
            self.cache_evictions.inc_by(usage.evictions - seen);
        }
        self.fills_in_flight.set(fills as i64);
    }

    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
