//! One local Kubernetes control plane per test process.
//!
//! The first test that asks for it starts `cluster/cluster.sh up` (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok with simulated nodes in 3 regions x 2 zones,
//! and, for [`Cluster::with_real_nodes`], a real node: containerd, kubelet, kube-proxy),
//! watching this process's pid so the control plane stops when the test binary exits, however
//! it exits. With `EDGEFLEET_KUBECONFIG` set, an existing cluster is used instead. Tests isolate
//! themselves with [`Cluster::fresh_namespace`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::process::Command;
use tokio::sync::OnceCell;

use crate::error::{Error, IoContext, Result};
use crate::images::Images;
use crate::process::{CommandOutput, log_tail, run};
use crate::tools::{scripts_dir, tool};
use crate::wait::wait_for;

/// Use this kubeconfig's cluster instead of starting one.
pub const KUBECONFIG_ENV: &str = "EDGEFLEET_KUBECONFIG";
/// Keep the started cluster's directory (logs, certificates) after the run.
pub const KEEP_DIR_ENV: &str = "EDGEFLEET_KEEP_CLUSTER_DIR";

/// Pods with this label are left to a real process by kwok: it assigns their IP but never starts
/// them or marks them Ready; the harness runs them as real processes (`cluster.sh --external-pods`).
pub const EXTERNAL_PODS_LABEL: (&str, &str) = ("app.kubernetes.io/name", "edgefleet-edge");

/// Label put on every namespace the tests create.
pub const TEST_NAMESPACE_LABEL: &str = "edgefleet.io/e2e";

/// Label (value `"true"`) of the simulated nodes; the pod runner plays the kubelet for them only.
pub const SIMULATED_NODE_LABEL: &str = "edgefleet.io/simulated";

/// Label (value `"true"`) each real node's kubelet registers its node with.
pub const REAL_NODE_LABEL: &str = "edgefleet.io/real-node";

/// The zones where a real node stands in for the simulated ones in [`Cluster::with_real_nodes`]:
/// `eu-west` has a real zone (`a`) and a simulated one (`b`), so one region shows both.
pub const REAL_NODE_ZONES: &[&str] = &["eu-west-a"];

/// How long `cluster.sh` may take once the tools are built (it enforces this itself; the
/// harness waits a little longer so the script's own, clearer error wins).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);

static SHARED: OnceCell<Cluster> = OnceCell::const_new();
static SIMULATED: OnceCell<Cluster> = OnceCell::const_new();
static WITH_REAL_NODES: OnceCell<Cluster> = OnceCell::const_new();
static NAMESPACE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running control plane and the tools to drive it.
#[derive(Debug)]
pub struct Cluster {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    helm: PathBuf,
    /// The directory of the control plane this process started; `None` when reusing one.
    dir: Option<PathBuf>,
    /// The real nodes, as `cluster.sh` describes them in `DIR/real-nodes`.
    real_nodes: Vec<RealNode>,
}

/// A real node of the cluster: kubelet, containerd and kube-proxy in a network namespace.
#[derive(Debug, Clone)]
pub struct RealNode {
    /// The Node's name (`real-<zone>`).
    pub name: String,
    pub zone: String,
    /// The network namespace (under `/run/netns`) its processes and pods' traffic start from.
    pub netns: String,
    /// Its containerd's socket (for `ctr`).
    pub containerd: PathBuf,
}

impl Cluster {
    /// The control plane shared by every test in this process, started on first use.
    pub async fn shared() -> Result<&'static Cluster> {
        SHARED
            .get_or_try_init(|| Self::start_or_reuse(Some(EXTERNAL_PODS_LABEL), None))
            .await
    }

    /// A control plane of this process where kwok simulates every pod, edge pods included, and
    /// marks it Ready (no `--external-pods`): for load that no real process could carry, such as
    /// the operator scale benchmark. Started on first use, separate from [`Cluster::shared`].
    pub async fn simulated() -> Result<&'static Cluster> {
        SIMULATED
            .get_or_try_init(|| Self::start_or_reuse(None, None))
            .await
    }

    /// A control plane of this process like [`Cluster::shared`], where a real node takes the
    /// place of the simulated nodes of each of [`REAL_NODE_ZONES`], with the images of
    /// [`Images::built`] in its containerd. Started on first use, separate from the others.
    pub async fn with_real_nodes() -> Result<&'static Cluster> {
        WITH_REAL_NODES
            .get_or_try_init(|| async {
                let images = Images::built().await?;
                Self::start_or_reuse(Some(EXTERNAL_PODS_LABEL), Some(&images.dir)).await
            })
            .await
    }

    async fn start_or_reuse(external_pods: Option<(&str, &str)>, images: Option<&Path>) -> Result<Cluster> {
        let kubectl = tool("kubectl").await?;
        let helm = tool("helm").await?;
        if let Some(kubeconfig) = std::env::var_os(KUBECONFIG_ENV) {
            return Ok(Cluster {
                kubeconfig: PathBuf::from(kubeconfig),
                kubectl,
                helm,
                dir: None,
                real_nodes: Vec::new(),
            });
        }
        let dir = start_control_plane(external_pods, images).await?;
        Ok(Cluster {
            kubeconfig: dir.join("kubeconfig"),
            kubectl,
            helm,
            real_nodes: read_real_nodes(&dir)?,
            dir: Some(dir),
        })
    }

    /// The address the API server listens on, where the cluster's nodes reach this host (a
    /// server for pods on real nodes, such as a test origin, listens there).
    pub fn host_ip(&self) -> Result<std::net::IpAddr> {
        let invalid = |reason: String| Error::Invalid {
            what: format!("server of kubeconfig {}", self.kubeconfig.display()),
            reason,
        };
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).map_err(|source| Error::Kubeconfig {
            path: self.kubeconfig.clone(),
            source,
        })?;
        let server = kubeconfig
            .clusters
            .first()
            .and_then(|c| c.cluster.as_ref()?.server.clone())
            .ok_or_else(|| invalid("none".to_owned()))?;
        let url = reqwest::Url::parse(&server).map_err(|e| invalid(format!("{server}: {e}")))?;
        let host = url
            .host_str()
            .ok_or_else(|| invalid(format!("{server}: no host")))?;
        host.trim_matches(['[', ']'])
            .parse()
            .map_err(|e| invalid(format!("{server}: {e}")))
    }

    /// The cluster's DNS server (CoreDNS, answering for `cluster.local`), which a cluster with
    /// real nodes runs on its host address; `None` without real nodes.
    pub fn cluster_dns(&self) -> Result<Option<std::net::IpAddr>> {
        if self.real_nodes.is_empty() {
            return Ok(None);
        }
        self.host_ip().map(Some)
    }

    /// The cluster's real nodes (none unless it was started by [`Cluster::with_real_nodes`]).
    pub fn real_nodes(&self) -> &[RealNode] {
        &self.real_nodes
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster directory (logs under `logs/`), when this process started the cluster.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn kubectl_path(&self) -> &Path {
        &self.kubectl
    }

    pub fn helm_path(&self) -> &Path {
        &self.helm
    }

    /// An admin client for the cluster.
    ///
    /// A new client per call: a `kube::Client` drives its connections from tasks on the runtime
    /// that built it, and every `#[tokio::test]` has its own runtime, so one shared client would
    /// die with the first test.
    pub async fn client(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).map_err(|source| Error::Kubeconfig {
            path: self.kubeconfig.clone(),
            source,
        })?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|source| Error::Kubeconfig {
                path: self.kubeconfig.clone(),
                source,
            })?;
        Ok(Client::try_from(config)?)
    }

    /// Runs `kubectl` with the admin kubeconfig.
    pub async fn kubectl(&self, args: &[&str]) -> Result<CommandOutput> {
        run(self.kubectl_command(args), None).await
    }

    /// Runs `kubectl` with `input` on stdin (e.g. `apply -f -`).
    pub async fn kubectl_with_stdin(&self, args: &[&str], input: &str) -> Result<CommandOutput> {
        run(self.kubectl_command(args), Some(input.as_bytes())).await
    }

    fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.kubectl);
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        command
    }

    /// Runs `helm` against the cluster.
    pub async fn helm(&self, args: &[&str]) -> Result<CommandOutput> {
        let mut command = Command::new(&self.helm);
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        run(command, None).await
    }

    /// Creates a namespace with a unique name starting with `prefix` and returns its name.
    pub async fn fresh_namespace(&self, prefix: &str) -> Result<String> {
        let name = namespace_name(prefix, std::process::id(), next_namespace_number());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let api: Api<Namespace> = Api::all(self.client().await?);
        api.create(&PostParams::default(), &namespace).await?;
        Ok(name)
    }
}

fn next_namespace_number() -> u32 {
    NAMESPACE_COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// `<prefix>-<pid>-<n>`, with the prefix reduced to what a DNS-1123 label allows, so the name
/// is unique across test processes sharing one cluster and always valid.
fn namespace_name(prefix: &str, pid: u32, n: u32) -> String {
    let mut clean: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    clean.truncate(40);
    let clean = clean.trim_matches('-');
    let clean = if clean.is_empty() { "test" } else { clean };
    format!("{clean}-{pid}-{n}")
}

/// The real nodes `cluster.sh` listed in `DIR/real-nodes` (`name zone netns containerd-socket`
/// lines; no file: none).
fn read_real_nodes(dir: &Path) -> Result<Vec<RealNode>> {
    let path = dir.join("real-nodes");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Vec::new());
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| match line.split_whitespace().collect::<Vec<_>>()[..] {
            [name, zone, netns, containerd] => Ok(RealNode {
                name: name.to_owned(),
                zone: zone.to_owned(),
                netns: netns.to_owned(),
                containerd: PathBuf::from(containerd),
            }),
            _ => Err(Error::Invalid {
                what: format!("line {line:?} of {}", path.display()),
                reason: "expected: name zone netns containerd-socket".to_owned(),
            }),
        })
        .collect()
}

/// Starts `cluster.sh up` in a fresh directory and waits until it reports ready. Pods labelled
/// `external_pods` are left to a real process; without it kwok runs every pod. With `images`
/// (a directory of image tarballs), real nodes take [`REAL_NODE_ZONES`].
async fn start_control_plane(external_pods: Option<(&str, &str)>, images: Option<&Path>) -> Result<PathBuf> {
    // Build (or find) every tool first: a cold build takes minutes and must not eat into the
    // start-up deadline. tools.sh prints its progress on our stderr.
    let mut tools = Command::new(scripts_dir().join("tools.sh"));
    tools
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let status = tools
        .status()
        .await
        .context(|| "cannot run cluster/tools.sh".to_owned())?;
    if !status.success() {
        return Err(Error::CommandFailed {
            command: "cluster/tools.sh".to_owned(),
            status,
            stderr: "see the build log printed above".to_owned(),
        });
    }

    let dir = tempfile::Builder::new()
        .prefix("edgefleet-cluster-")
        .tempdir()
        .context(|| "cannot create the cluster directory".to_owned())?
        .keep();
    let log_path = dir.join("cluster.log");
    let log = std::fs::File::create(&log_path).context(|| format!("cannot create {}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .context(|| format!("cannot reopen {}", log_path.display()))?;

    let mut command = std::process::Command::new(scripts_dir().join("cluster.sh"));
    command
        .arg("up")
        .arg("--dir")
        .arg(&dir)
        .arg("--watch-pid")
        .arg(std::process::id().to_string())
        .arg("--timeout")
        .arg(STARTUP_TIMEOUT.as_secs().to_string());
    if let Some((key, value)) = external_pods {
        command.arg("--external-pods").arg(format!("{key}={value}"));
    }
    if let Some(images) = images {
        command
            .arg("--real-nodes")
            .arg(REAL_NODE_ZONES.join(","))
            .arg("--images")
            .arg(images);
    }
    if std::env::var_os(KEEP_DIR_ENV).is_none() {
        command.arg("--remove-dir");
    }
    // The supervisor must outlive every test's runtime, so it is a plain std child that nobody
    // kills on drop: it stops itself when this process is gone (--watch-pid).
    let mut supervisor = command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .context(|| "cannot start cluster/cluster.sh".to_owned())?;

    let started = Instant::now();
    let ready = dir.join("ready");
    wait_for(
        "the local cluster to be ready",
        STARTUP_TIMEOUT + Duration::from_secs(15),
        || {
            let state = match supervisor.try_wait() {
                Ok(Some(status)) => Err(Error::ClusterExited {
                    status,
                    log: log_path.clone(),
                    tail: log_tail(&log_path, 40),
                }),
                Ok(None) => Ok(ready.exists().then_some(())),
                Err(source) => Err(Error::Io {
                    context: "cannot poll cluster.sh".to_owned(),
                    source,
                }),
            };
            async move { state }
        },
    )
    .await?;
    eprintln!(
        "local cluster ready in {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::namespace_name;

    #[test]
    fn namespace_names_are_valid_dns_labels() {
        assert_eq!(namespace_name("helm-install", 42, 0), "helm-install-42-0");
        assert_eq!(namespace_name("Helm_Install!", 42, 7), "helm-install-42-7");
        assert_eq!(namespace_name("--", 1, 2), "test-1-2");
        let long = namespace_name(&"x".repeat(100), u32::MAX, u32::MAX);
        assert!(long.len() <= 63, "{long}");
    }
}
