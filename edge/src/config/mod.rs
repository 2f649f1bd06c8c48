//! Where the configuration comes from and how it is reloaded: a file (reloaded on SIGHUP, on the
//! admin reload endpoint, and when it or a secret file it names changes) or a ConfigMap (watched).
//! A reload compiles the new configuration completely before swapping it in; on any error the
//! running configuration stays. The cache is never touched by a reload.
pub(crate) mod runtime;
mod watch;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use edgefleet_config::{CONFIG_MAP_KEY, EdgeConfig};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use self::runtime::Runtime;
use crate::{
    error::{Error, Result},
    metrics::ResultLabels,
    origin::InCluster,
    proxy::Edge,
};

pub(crate) use watch::spawn_watchers;

/// Where the configuration is read from.
#[derive(Clone)]
pub(crate) enum Source {
    File(PathBuf),
    ConfigMap {
        api: Box<Api<ConfigMap>>,
        namespace: String,
        name: String,
    },
}

impl Source {
    /// `NAMESPACE/NAME`, with a client from the pod's service account or the local kubeconfig.
    pub(crate) async fn config_map(spec: &str) -> Result<Self> {
        let Some((namespace, name)) = spec
            .split_once('/')
            .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
        else {
            return Err(Error::ConfigMapName(spec.to_owned()));
        };
        let client = kube::Client::try_default().await?;
        Ok(Source::ConfigMap {
            api: Box::new(Api::namespaced(client, namespace)),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The cluster the edge runs in: known when its configuration comes from a ConfigMap.
    fn cluster(&self) -> Option<InCluster> {
        match self {
            Source::File(_) => None,
            Source::ConfigMap { api, namespace, .. } => Some(InCluster {
                client: (**api).clone().into_client(),
                namespace: namespace.clone(),
            }),
        }
    }

    /// Whether the configuration comes from the cluster (and may appear later) rather than from
    /// a file a person named.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Source::ConfigMap { .. })
    }

    fn describe(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::ConfigMap { namespace, name, .. } => format!("ConfigMap {namespace}/{name}"),
        }
    }

    /// Reads and validates the configuration.
    pub(crate) async fn read(&self) -> Result<EdgeConfig> {
        match self {
            Source::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || EdgeConfig::from_file(&path))
                    .await
                    .map_err(|e| Error::io("reading the config", std::io::Error::other(e)))?
                    .map_err(Error::from)
            }
            Source::ConfigMap { api, namespace, name } => {
                let config_map = api.get(name).await?;
                from_config_map(&config_map, namespace, name)
            }
        }
    }
}

pub(crate) fn from_config_map(config_map: &ConfigMap, namespace: &str, name: &str) -> Result<EdgeConfig> {
    let text = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_MAP_KEY))
        .ok_or_else(|| Error::ConfigMap {
            name: format!("{namespace}/{name}"),
            reason: format!("has no key {CONFIG_MAP_KEY:?}"),
        })?;
    Ok(EdgeConfig::from_yaml(text)?)
}

/// Loads configurations and applies them to the running edge.
pub(crate) struct Loader {
    pub(crate) source: Source,
    region_override: Option<String>,
    generation: AtomicU64,
}

impl Loader {
    pub(crate) fn new(source: Source, region_override: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            source,
            region_override,
            generation: AtomicU64::new(0),
        })
    }

    /// Compiles a configuration (the first one, or a replacement for `previous`).
    pub(crate) fn compile(&self, config: EdgeConfig, previous: Option<&Runtime>) -> Result<Runtime> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        Runtime::compile(
            config,
            self.region_override.as_deref(),
            self.source.cluster().as_ref(),
            generation,
            previous,
        )
    }

    /// Re-reads the source and applies it. Returns the new generation.
    pub(crate) async fn reload(&self, edge: &Edge) -> Result<u64> {
        let result = match self.source.read().await {
            Ok(config) => self.apply(edge, config),
            Err(e) => Err(e),
        };
        self.record(edge, &result);
        result
    }

    /// Applies an already read configuration (from the ConfigMap watch).
    pub(crate) fn apply_read(&self, edge: &Edge, config: Result<EdgeConfig>) -> Result<u64> {
        let result = config.and_then(|c| self.apply(edge, c));
        self.record(edge, &result);
        result
    }

    fn apply(&self, edge: &Edge, config: EdgeConfig) -> Result<u64> {
        let previous = edge.runtime();
        warn_restart_only(&previous.config, &config);
        let runtime = self.compile(config, Some(&previous))?;
        let generation = runtime.generation;
        edge.replace_runtime(runtime);
        Ok(generation)
    }

    fn record(&self, edge: &Edge, result: &Result<u64>) {
        let label = match result {
            Ok(generation) => {
                tracing::info!(source = %self.source.describe(), generation, "configuration applied");
                "applied"
            }
            Err(e) => {
                tracing::error!(source = %self.source.describe(), error = %e, "configuration rejected; keeping the running one");
                "rejected"
            }
        };
        edge.metrics
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

/// A secret from a file the configuration names (trimmed; an empty one is an error).
pub(crate) fn read_secret(what: &'static str, path: &Path) -> Result<String> {
    let value = std::fs::read_to_string(path).map_err(|source| Error::SecretFile {
        what,
        path: path.to_owned(),
        source,
    })?;
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::EmptySecret {
            what,
            path: path.to_owned(),
        });
    }
    Ok(value.to_owned())
}
