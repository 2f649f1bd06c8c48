//! Where the configuration comes from (a file or a ConfigMap) and how it is compiled into the
//! [`Runtime`] requests use. Applying it to the running edge is `reload`'s business.
mod behavior;
pub(crate) mod runtime;

use std::{
    path::PathBuf,
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
    origin::InCluster,
};

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

    pub(crate) fn describe(&self) -> String {
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

/// Reads and compiles configurations.
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
}
