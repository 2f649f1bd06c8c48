//! Real processes for pods on simulated nodes.
//!
//! The local cluster's simulated nodes are KWOK's: nothing runs there. Pods on them carrying the
//! cluster's external-pods label (`cluster.sh --external-pods`,
//! [`crate::cluster::EXTERNAL_PODS_LABEL`]) get an IP from kwok (from a range `cluster.sh` routes
//! to the loopback interface, so it is a local address a process can listen on) and are otherwise
//! left alone. A [`PodRunner`] plays the kubelet for them (pods on the cluster's real nodes, if it
//! has any, are the real kubelet's):
//!
//! - it watches those pods and, for each one bound to a simulated node, starts one process per container
//!   from the pod's own spec: the local binary registered for the container's image (the image's
//!   entrypoint), the spec's command (minus its first element, the entrypoint's path inside the
//!   image) and args, and its environment (`value`, `$(VAR)` expansion, downward-API `fieldRef`
//!   and `resourceFieldRef`, `configMapKeyRef`, `secretKeyRef`, `envFrom`), plus HOSTNAME, a
//!   default PATH and HOME (the pod's directory) as a container runtime would set;
//! - in-cluster API access: the service-account files are written like any projected volume
//!   (with a bound token from the TokenRequest API), and since they cannot sit at their fixed
//!   path `/var/run/secrets/kubernetes.io/serviceaccount`, the process gets `KUBECONFIG`
//!   pointing at a kubeconfig made of those same files (and KUBERNETES_SERVICE_HOST/PORT naming
//!   the API server): a client that infers its config (kube-rs `Client::try_default`, client-go)
//!   acts as the pod's service account;
//! - it writes the pod's volumes (`configMap`, `secret`, `downwardAPI`, `projected` including
//!   bound service-account tokens, `emptyDir`) under `<runner dir>/<namespace>_<pod>/volumes/
//!   <volume>/`, the way the kubelet does (a `..data` symlink swapped atomically), and rewrites
//!   them when a ConfigMap or Secret changes;
//! - there is no mount namespace, so container paths are mapped by rewriting: any absolute path
//!   in command, args or env values that lies under a container's `mountPath` (whole path
//!   components, where a path can start: not in the middle of a word) becomes the host
//!   directory of that volume (`subPath` appended); `workingDir` is mapped the same way;
//! - there is no network namespace either, so a listen address of `0.0.0.0` / `[::]` in command,
//!   args or env values is rewritten to the pod's IP: each pod listens on its own address;
//! - it sets the pod Running, runs the readiness probe (`httpGet`, `tcpSocket`) against the
//!   process at the pod's IP and reports Ready / ContainersReady and the container statuses in
//!   the pod's status, restarts exited processes with back-off (restart counts and last state
//!   reported), and stops the process (SIGTERM, then SIGKILL after the grace period) when the pod
//!   is deleted.
//!
//! - it also plays kube-proxy: each Service's ClusterIP (a local address too) listens on the
//!   Service's TCP ports and forwards connections to its ready endpoints ([`services`]).
//!
//! The product never knows: it sees ordinary pods, IPs, statuses, files and Services.
//!
//! Limits: no DNS, so Service names don't resolve (ClusterIPs work); Service ports below 1024
//! need root (or a lowered `net.ipv4.ip_unprivileged_port_start`); no zone-aware routing by
//! EndpointSlice hints (the proxy cannot tell which pod a connection comes from); exec and gRPC
//! probes are not run (such a container never becomes ready); liveness and startup probes are
//! ignored; a program that reads a hard-coded path not passed through args or env, or that
//! listens on all addresses without being told so, is not mapped. Processes are killed when the
//! runner is dropped, and (via `setpriv --pdeathsig`) when the thread that started them dies.

mod fields;
mod launch;
mod probe;
mod services;
mod status;
mod supervisor;
mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::ListParams;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector};
use kube::{Api, Client, Resource};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::cluster::{Cluster, EXTERNAL_PODS_LABEL, KEEP_DIR_ENV, SIMULATED_NODE_LABEL};
use crate::error::{Error, IoContext, Result};
use supervisor::{Shared, supervise};

/// How long [`PodRunner::start`] waits for its first list of pods, ConfigMaps and Secrets.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Which pods to run and with which binaries.
#[derive(Debug, Clone)]
pub struct PodRunnerConfig {
    namespace: Option<String>,
    selector: String,
    images: BTreeMap<String, PathBuf>,
    services: bool,
}

impl PodRunnerConfig {
    /// The cluster's external pods in `namespace`.
    pub fn in_namespace(namespace: &str) -> Self {
        PodRunnerConfig {
            namespace: Some(namespace.to_owned()),
            ..Self::all_namespaces()
        }
    }

    /// The cluster's external pods in every namespace.
    pub fn all_namespaces() -> Self {
        PodRunnerConfig {
            namespace: None,
            selector: format!("{}={}", EXTERNAL_PODS_LABEL.0, EXTERNAL_PODS_LABEL.1),
            images: BTreeMap::new(),
            services: true,
        }
    }

    /// Whether to make the Services of the namespace(s) reachable at their ClusterIPs (on by
    /// default). Off, for a second runner on namespaces whose Services another runner serves.
    pub fn proxy_services(mut self, enabled: bool) -> Self {
        self.services = enabled;
        self
    }

    /// Runs containers whose image is `repository` (any tag or digest) with the local `binary`.
    pub fn image(mut self, repository: &str, binary: impl Into<PathBuf>) -> Self {
        self.images.insert(repository.to_owned(), binary.into());
        self
    }
}

/// Runs the selected pods as local processes until dropped.
#[derive(Debug)]
pub struct PodRunner {
    task: JoinHandle<()>,
    services: Option<JoinHandle<()>>,
    dir: PathBuf,
    /// Removes `dir` on drop, unless the cluster directory is to be kept.
    _cleanup: Option<tempfile::TempDir>,
}

impl Drop for PodRunner {
    fn drop(&mut self) {
        // Dropping the task drops every pod's supervisor, and with it its processes.
        self.task.abort();
        if let Some(services) = &self.services {
            services.abort();
        }
    }
}

impl PodRunner {
    /// Starts running the pods `config` selects; returns once the runner has seen the current
    /// pods, ConfigMaps and Secrets.
    pub async fn start(cluster: &Cluster, config: PodRunnerConfig) -> Result<PodRunner> {
        let client = cluster.client().await?;
        let temp = tempfile::Builder::new()
            .prefix("edgefleet-pods-")
            .tempdir()
            .context(|| "cannot create the pod runner's directory".to_owned())?;
        let dir = temp.path().to_owned();
        let cleanup = if std::env::var_os(KEEP_DIR_ENV).is_some() {
            eprintln!("[pod-runner] pod files and logs kept in {}", dir.display());
            drop(temp.keep());
            None
        } else {
            Some(temp)
        };

        // The simulated nodes are made once, when the cluster starts.
        let simulated_nodes = Api::<Node>::all(client.clone())
            .list_metadata(&ListParams::default().labels(&format!("{SIMULATED_NODE_LABEL}=true")))
            .await?
            .items
            .into_iter()
            .filter_map(|node| node.metadata.name)
            .collect();
        let (config_maps, config_map_writer) = reflector::store();
        let (secrets, secret_writer) = reflector::store();
        let (changed_tx, sources_changed) = watch::channel(0_u64);
        let http = reqwest::Client::builder()
            // Like the kubelet, probes don't verify certificates.
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|error| Error::Invalid {
                what: "probe HTTP client".to_owned(),
                reason: error.to_string(),
            })?;
        let shared = Arc::new(Shared {
            client: client.clone(),
            config_maps: config_maps.clone(),
            secrets: secrets.clone(),
            sources_changed,
            images: config.images.clone(),
            root: dir.clone(),
            http,
            api_server: api_server(cluster)?,
            simulated_nodes,
            cluster_dns: cluster.cluster_dns()?,
        });

        let config_map_events = reflector(
            config_map_writer,
            watcher(
                api::<ConfigMap>(&client, config.namespace.as_deref()),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .touched_objects();
        let secret_events = reflector(
            secret_writer,
            watcher(
                api::<Secret>(&client, config.namespace.as_deref()),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .touched_objects();
        let pods = watcher(
            api::<Pod>(&client, config.namespace.as_deref()),
            watcher::Config::default().labels(&config.selector),
        )
        .default_backoff();

        let (synced_tx, synced) = oneshot::channel();
        let sources = async move {
            config_maps.wait_until_ready().await.ok();
            secrets.wait_until_ready().await.ok();
        };
        let task = tokio::spawn(run(
            shared,
            Streams {
                config_maps: Box::pin(config_map_events.map(|event| event.map(drop))),
                secrets: Box::pin(secret_events.map(|event| event.map(drop))),
                pods: Box::pin(pods),
            },
            Box::pin(sources),
            changed_tx,
            synced_tx,
        ));
        let services = config
            .services
            .then(|| tokio::spawn(services::proxy(client.clone(), config.namespace.clone())));
        let runner = PodRunner {
            task,
            services,
            dir,
            _cleanup: cleanup,
        };
        match tokio::time::timeout(SYNC_TIMEOUT, synced).await {
            Ok(Ok(())) => Ok(runner),
            _ => Err(Error::Timeout {
                what: "the pod runner's first sync of pods, ConfigMaps and Secrets".to_owned(),
                waited: SYNC_TIMEOUT,
            }),
        }
    }

    /// The directory holding a pod's `volumes/` and `logs/<container>.log`.
    pub fn pod_dir(&self, namespace: &str, pod: &str) -> PathBuf {
        supervisor::pod_dir(&self.dir, namespace, pod)
    }

    /// The log (stdout and stderr) of a pod's container, across restarts.
    pub fn log(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.pod_dir(namespace, pod)
            .join("logs")
            .join(format!("{container}.log"))
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

fn watcher<K>(api: Api<K>, config: watcher::Config) -> impl Stream<Item = watcher::Result<Event<K>>> + Send
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    watcher::watcher(api, config)
}

/// The API server URL from the cluster's kubeconfig.
fn api_server(cluster: &Cluster) -> Result<String> {
    let path = cluster.kubeconfig();
    let config = kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
        path: path.to_owned(),
        source,
    })?;
    let server = config
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref()?.server.clone());
    server.ok_or_else(|| Error::Invalid {
        what: format!("kubeconfig {}", path.display()),
        reason: "it names no cluster server".to_owned(),
    })
}

type BoxStream<T> = std::pin::Pin<Box<dyn Stream<Item = T> + Send>>;

struct Streams {
    config_maps: BoxStream<watcher::Result<()>>,
    secrets: BoxStream<watcher::Result<()>>,
    pods: BoxStream<watcher::Result<Event<Pod>>>,
}

/// The runner's loop: keeps the ConfigMap/Secret caches current, and one supervisor per pod.
async fn run(
    shared: Arc<Shared>,
    mut streams: Streams,
    sources_synced: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    changed: watch::Sender<u64>,
    synced: oneshot::Sender<()>,
) {
    // Pods are looked at only once the caches are filled, so a pod is never reported as
    // missing a ConfigMap that exists.
    let mut sources_synced = sources_synced;
    loop {
        tokio::select! {
            () = &mut sources_synced => break,
            Some(event) = streams.config_maps.next() => log_error("ConfigMaps", event),
            Some(event) = streams.secrets.next() => log_error("Secrets", event),
            else => return,
        }
    }

    let mut pods: HashMap<String, watch::Sender<Pod>> = HashMap::new();
    let mut supervisors = JoinSet::new();
    let mut listing: Option<HashSet<String>> = None;
    let mut synced = Some(synced);
    loop {
        tokio::select! {
            Some(event) = streams.config_maps.next() => {
                log_error("ConfigMaps", event);
                changed.send_modify(|generation| *generation += 1);
            }
            Some(event) = streams.secrets.next() => {
                log_error("Secrets", event);
                changed.send_modify(|generation| *generation += 1);
            }
            Some(event) = streams.pods.next() => match event {
                Ok(Event::Init) => listing = Some(HashSet::new()),
                Ok(Event::InitApply(pod)) => {
                    if let (Some(seen), Some(uid)) = (listing.as_mut(), pod.metadata.uid.clone()) {
                        seen.insert(uid);
                    }
                    apply(&shared, &mut pods, &mut supervisors, pod);
                }
                Ok(Event::InitDone) => {
                    // Pods that vanished while the watch was down.
                    if let Some(seen) = listing.take() {
                        pods.retain(|uid, _| seen.contains(uid));
                    }
                    if let Some(synced) = synced.take() {
                        let _ = synced.send(());
                    }
                }
                Ok(Event::Apply(pod)) => apply(&shared, &mut pods, &mut supervisors, pod),
                Ok(Event::Delete(pod)) => {
                    // Dropping the sender tells the supervisor to stop the processes.
                    if let Some(uid) = pod.metadata.uid {
                        pods.remove(&uid);
                    }
                }
                Err(error) => eprintln!("[pod-runner] watching pods: {error}"),
            },
            Some(finished) = supervisors.join_next(), if !supervisors.is_empty() => {
                if let Err(error) = finished {
                    eprintln!("[pod-runner] a pod supervisor failed: {error}");
                }
            }
            // The watch streams retry forever; should they all end, there is nothing left to do.
            else => return,
        }
    }
}

fn log_error(what: &str, event: watcher::Result<()>) {
    if let Err(error) = event {
        eprintln!("[pod-runner] watching {what}: {error}");
    }
}

/// Hands the latest version of a pod to its supervisor, starting one for a pod newly bound to a
/// simulated node.
fn apply(
    shared: &Arc<Shared>,
    pods: &mut HashMap<String, watch::Sender<Pod>>,
    supervisors: &mut JoinSet<()>,
    pod: Pod,
) {
    let bound = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.node_name.as_ref())
        .is_some_and(|node| shared.simulated_nodes.contains(node));
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    if let Some(sender) = pods.get(&uid) {
        sender.send_replace(pod);
    } else if bound && pod.metadata.deletion_timestamp.is_none() {
        let (sender, receiver) = watch::channel(pod);
        pods.insert(uid, sender);
        supervisors.spawn(supervise(shared.clone(), receiver));
    }
}
