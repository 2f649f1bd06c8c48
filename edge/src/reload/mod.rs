//! Applying configurations to the running edge: on SIGHUP, on the admin API's `POST /reload`,
//! when the config file or a secret file it names changes, and on every change of the watched
//! ConfigMap. A new configuration is compiled completely (origin clients, secrets, the upload
//! port's keys) before anything is swapped in; on any error the running one stays. The cache is
//! never touched by a reload.
mod watch;

use std::sync::Arc;

use edgefleet_config::EdgeConfig;

pub(crate) use watch::spawn_watchers;

use crate::{
    config::Loader,
    error::Result,
    metrics::ResultLabels,
    state::Edge,
    upload::{self, Uploads},
};

/// Applies configurations read by a [`Loader`] to the edge and, when it has one, its upload port.
pub(crate) struct Reloader {
    pub(crate) loader: Arc<Loader>,
    edge: Arc<Edge>,
    uploads: Option<Arc<Uploads>>,
}

impl Reloader {
    pub(crate) fn new(loader: Arc<Loader>, edge: Arc<Edge>, uploads: Option<Arc<Uploads>>) -> Arc<Self> {
        Arc::new(Self {
            loader,
            edge,
            uploads,
        })
    }

    /// Re-reads the source and applies it. Returns the new generation.
    pub(crate) async fn reload(&self) -> Result<u64> {
        let result = match self.loader.source.read().await {
            Ok(config) => self.apply(config),
            Err(e) => Err(e),
        };
        self.record(&result);
        result
    }

    /// Applies an already read configuration (from the ConfigMap watch).
    pub(crate) fn apply_read(&self, config: Result<EdgeConfig>) -> Result<u64> {
        let result = config.and_then(|c| self.apply(c));
        self.record(&result);
        result
    }

    fn apply(&self, config: EdgeConfig) -> Result<u64> {
        let previous = self.edge.runtime();
        warn_restart_only(&previous.config, &config);
        let target = upload::Target::compile(&config)?;
        let runtime = self.loader.compile(config, Some(&previous))?;
        let generation = runtime.generation;
        self.edge.replace_runtime(runtime);
        if let Some(uploads) = &self.uploads {
            uploads.set_target(target);
        }
        Ok(generation)
    }

    fn record(&self, result: &Result<u64>) {
        let source = self.loader.source.describe();
        let label = match result {
            Ok(generation) => {
                tracing::info!(%source, generation, "configuration applied");
                "applied"
            }
            Err(e) => {
                tracing::error!(%source, error = %e, "configuration rejected; keeping the running one");
                "rejected"
            }
        };
        self.edge
            .metrics
            .config_reloads
            .get_or_create(&ResultLabels { result: label })
            .inc();
    }
}

/// Listen addresses and cache sizes are fixed for the life of the process.
fn warn_restart_only(old: &EdgeConfig, new: &EdgeConfig) {
    if old.listen != new.listen {
        tracing::warn!("listen addresses changed; they take effect on restart");
    }
    if old.cache != new.cache {
        tracing::warn!("cache settings changed; they take effect on restart");
    }
    if old.upload.is_none() && new.upload.is_some() {
        tracing::warn!("an upload section was added; the upload port opens on restart");
    }
}
