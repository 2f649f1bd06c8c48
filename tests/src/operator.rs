//! The chart installed with the real `helm`, and the operator run as the chart's ServiceAccount.
//!
//! On a cluster with real nodes the chart's own Deployment runs the operator as a pod from the
//! built image ([`install_chart_with_operator`]). Otherwise the operator runs as a local process
//! (the simulated nodes run no containers), but it talks to the API with a token of the
//! ServiceAccount the chart created, so it has exactly the chart's RBAC: a missing permission
//! fails the tests as it would fail in a real cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Child;

use crate::binaries::workspace_binary;
use crate::cluster::Cluster;
use crate::error::{Error, IoContext, Result};
use crate::process::{free_port, log_tail};
use crate::wait::wait_for;

/// The chart directory in this repository.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/edgefleet")
}

/// A release of the chart.
#[derive(Debug, Clone)]
pub struct Release {
    /// Release name.
    pub name: String,
    /// Namespace the operator (and its ServiceAccount) lives in.
    pub namespace: String,
}

impl Release {
    /// The operator's ServiceAccount, as the chart names it.
    pub fn service_account(&self) -> String {
        if self.name.contains("edgefleet") {
            self.name.clone()
        } else {
            format!("{}-edgefleet", self.name)
        }
    }
}

/// `helm install`s the chart as `release` into `namespace`, with extra `--set` values.
///
/// The chart's own Deployment is installed with zero replicas: its pods would land on simulated
/// nodes, which run nothing. The tests start the operator themselves with [`Operator::start`].
pub async fn install_chart(
    cluster: &Cluster,
    release: &str,
    namespace: &str,
    set: &[&str],
) -> Result<Release> {
    let mut values = vec!["replicaCount=0"];
    values.extend(set);
    helm_install(cluster, release, namespace, &values, &[]).await
}

/// `helm install`s the chart as `release` into `namespace` with its Deployment running the
/// operator, and waits (`helm --wait`) until it is Ready. On the cluster with real nodes the
/// scheduler places it on one (the built images are already there, so the chart's default image
/// references are the ones used).
pub async fn install_chart_with_operator(
    cluster: &Cluster,
    release: &str,
    namespace: &str,
    set: &[&str],
) -> Result<Release> {
    helm_install(cluster, release, namespace, set, &["--wait", "--timeout", "180s"]).await
}

async fn helm_install(
    cluster: &Cluster,
    release: &str,
    namespace: &str,
    values: &[&str],
    flags: &[&str],
) -> Result<Release> {
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    let mut args = vec!["install", release, &*chart, "--namespace", namespace];
    for value in values {
        args.extend(["--set", value]);
    }
    args.extend(flags);
    cluster.helm(&args).await?.ok()?;
    Ok(Release {
        name: release.to_owned(),
        namespace: namespace.to_owned(),
    })
}

/// Writes a kubeconfig that authenticates as `release`'s ServiceAccount (a bound token) and
/// returns its path.
pub async fn service_account_kubeconfig(cluster: &Cluster, release: &Release, dir: &Path) -> Result<PathBuf> {
    let path = dir.join(format!("{}-{}.kubeconfig", release.namespace, release.name));
    account_kubeconfig(cluster, &release.namespace, &release.service_account(), &path).await?;
    Ok(path)
}

/// Writes to `path` a kubeconfig that authenticates as ServiceAccount `namespace/account` (a
/// bound token valid for two hours).
pub async fn account_kubeconfig(
    cluster: &Cluster,
    namespace: &str,
    account: &str,
    path: &Path,
) -> Result<()> {
    let token = cluster
        .kubectl(&["create", "token", account, "-n", namespace, "--duration=2h"])
        .await?
        .ok()?
        .stdout;
    let server = current_cluster_field(cluster, "server").await?;
    let ca = current_cluster_field(cluster, "certificate-authority-data").await?;
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": account, "user": {"token": token.trim()}}],
        "contexts": [{"name": "account", "context": {"cluster": "local", "user": account}}],
        "current-context": "account",
    });
    std::fs::write(path, kubeconfig.to_string()).context(|| format!("cannot write {}", path.display()))
}

/// One field of the admin kubeconfig's current cluster.
async fn current_cluster_field(cluster: &Cluster, field: &str) -> Result<String> {
    let jsonpath = format!("jsonpath={{.clusters[0].cluster.{field}}}");
    let out = cluster
        .kubectl(&["config", "view", "--raw", "--minify", "-o", &jsonpath])
        .await?
        .ok()?;
    Ok(out.stdout.trim().to_owned())
}

/// A running `edgefleet-operator`, killed on drop.
#[derive(Debug)]
pub struct Operator {
    child: Child,
    metrics_port: u16,
    log: PathBuf,
}

impl Operator {
    /// Starts the operator with `kubeconfig`, as replica `identity` of `release`, and waits until
    /// `/readyz` answers 200. `extra_args` go after `run`.
    pub async fn start(
        kubeconfig: &Path,
        release: &Release,
        identity: &str,
        dir: &Path,
        extra_args: &[&str],
    ) -> Result<Operator> {
        let binary = workspace_binary("edgefleet-operator")?;
        let metrics_port = free_port()?;
        let log = dir.join(format!("operator-{identity}.log"));
        let log_file = std::fs::File::create(&log).context(|| format!("cannot create {}", log.display()))?;
        let log_err = log_file
            .try_clone()
            .context(|| "cannot duplicate the log handle".to_owned())?;
        let child = crate::process::command_dying_with_parent(&binary)
            .arg("run")
            .args(extra_args)
            .env("KUBECONFIG", kubeconfig)
            .env("EDGEFLEET_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("EDGEFLEET_LOG_LEVEL", "info,edgefleet_operator=debug")
            .env("POD_NAME", identity)
            .env("POD_NAMESPACE", &release.namespace)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .context(|| format!("cannot start {}", binary.display()))?;
        let mut operator = Operator {
            child,
            metrics_port,
            log,
        };
        operator.wait_ready().await?;
        Ok(operator)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let url = format!("{}/readyz", self.base_url());
        let http = reqwest::Client::new();
        let child = &mut self.child;
        let log = self.log.clone();
        wait_for("the operator's /readyz", Duration::from_secs(30), || {
            let request = http.get(&url).send();
            let exited = child.try_wait();
            let log = log.clone();
            async move {
                if let Ok(Some(status)) = exited {
                    return Err(Error::ProcessExited {
                        process: "edgefleet-operator".to_owned(),
                        status,
                        tail: log_tail(&log, 30),
                        log,
                    });
                }
                Ok(match request.await {
                    Ok(response) if response.status().is_success() => Some(()),
                    _ => None,
                })
            }
        })
        .await
    }

    /// `http://127.0.0.1:<metrics port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics_port)
    }

    /// The operator's metrics, read from its `/metrics`.
    pub async fn metrics(&self) -> Result<Samples> {
        let url = format!("{}/metrics", self.base_url());
        let failed = |e: reqwest::Error| Error::Invalid {
            what: format!("answer of {url}"),
            reason: e.to_string(),
        };
        let text = reqwest::get(&url)
            .await
            .map_err(failed)?
            .text()
            .await
            .map_err(failed)?;
        Ok(Samples::parse(&text))
    }

    /// The operator's process id (for reading its CPU time and memory from /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The operator's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the operator with SIGKILL, as a crash or node loss would.
    pub async fn kill(mut self) -> Result<()> {
        self.child
            .kill()
            .await
            .context(|| "cannot kill the operator".to_owned())
    }
}

/// Prometheus samples (an operator's, or any `/metrics` text): `name{labels}` → value.
#[derive(Debug, Clone, Default)]
pub struct Samples(BTreeMap<String, f64>);

impl Samples {
    /// Reads the samples of a Prometheus text exposition (comments and unparsable lines skipped).
    pub fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.rsplit_once(' '))
                .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
                .collect(),
        )
    }

    /// The sample `key` (`name{labels}` as exposed), 0 when absent.
    pub fn value(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }

    /// Requests the operator sent to the Kubernetes API.
    pub fn api_requests(&self) -> f64 {
        self.sum("edgefleet_operator_api_requests_total", |_| true)
    }

    /// Requests that write (every method but GET).
    pub fn api_writes(&self) -> f64 {
        self.sum("edgefleet_operator_api_requests_total", |labels| {
            !labels.contains("method=\"GET\"")
        })
    }

    /// Reconcile passes over Distributions.
    pub fn distribution_passes(&self) -> f64 {
        self.sum("edgefleet_operator_reconciliations_total", |labels| {
            labels.contains("kind=\"Distribution\"")
        })
    }

    /// Every sample of the counter `name` (with or without labels), for reading where requests go.
    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.0
            .iter()
            .filter(move |(key, _)| key.split('{').next() == Some(name))
            .map(|(key, value)| (key.as_str(), *value))
    }

    /// The sum of every sample of `name`.
    pub fn total(&self, name: &str) -> f64 {
        self.sum(name, |_| true)
    }

    fn sum(&self, name: &str, keep: impl Fn(&str) -> bool) -> f64 {
        self.samples(name)
            .filter(|(key, _)| keep(key))
            .map(|(_, v)| v)
            .sum()
    }
}
