//! The state every part of the edge shares: the configuration in force, the cache, the metrics
//! and whether the edge is draining. It lives apart from the parts that use it (the request path,
//! the admin API, the upload port, reloads), so they depend on it and never on each other.
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use parking_lot::RwLock;

use crate::{cache::Cache, config::runtime::Runtime, metrics::Metrics};

/// The state every request shares.
pub(crate) struct Edge {
    runtime: RwLock<Arc<Runtime>>,
    pub(crate) cache: Arc<Cache>,
    pub(crate) metrics: Arc<Metrics>,
    draining: AtomicBool,
}

impl Edge {
    pub(crate) fn new(runtime: Runtime, cache: Arc<Cache>, metrics: Arc<Metrics>) -> Self {
        metrics.config_generation.set(runtime.generation as i64);
        Self {
            runtime: RwLock::new(Arc::new(runtime)),
            cache,
            metrics,
            draining: AtomicBool::new(false),
        }
    }

    /// The configuration in force now; a request keeps the one it started with.
    pub(crate) fn runtime(&self) -> Arc<Runtime> {
        self.runtime.read().clone()
    }

    /// Swaps in a new configuration. The cache is untouched.
    pub(crate) fn replace_runtime(&self, runtime: Runtime) {
        self.metrics.config_generation.set(runtime.generation as i64);
        *self.runtime.write() = Arc::new(runtime);
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
