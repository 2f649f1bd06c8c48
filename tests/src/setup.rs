//! One operator test's world: its own namespace and chart release (so the operators it starts
//! are limited to that namespace and their request counters are its own), a kubeconfig of the
//! chart's ServiceAccount, and, when the test needs edges, a pod runner that runs the real edge
//! binary for the pods scheduled on simulated nodes. On the cluster with real nodes
//! ([`Setup::with_operator_pod`]) the chart's own Deployment runs the operator there.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, Resource};
use tempfile::TempDir;

use crate::binaries::workspace_binary;
use crate::cluster::Cluster;
use crate::error::{Error, IoContext, Result};
use crate::images::Images;
use crate::operator::{
    Operator, Release, install_chart, install_chart_with_operator, service_account_kubeconfig,
};
use crate::pods::{PodRunner, PodRunnerConfig};
use crate::process::CommandOutput;
use crate::wait::wait_for;

/// The image the operator renders into edge Deployments; the pod runner runs the edge for it.
const EDGE_IMAGE: &str = "ghcr.io/edgefleet/edge";

pub struct Setup {
    pub cluster: &'static Cluster,
    pub client: Client,
    /// The test's namespace.
    pub ns: String,
    pub release: Release,
    /// The chart's ServiceAccount, which the operators run as.
    pub kubeconfig: PathBuf,
    /// The operators' working files.
    pub work: TempDir,
    _runner: Option<PodRunner>,
}

impl Setup {
    /// A fresh namespace named after `prefix` with the chart installed with `chart_values`
    /// (`{ns}` stands for the namespace) and, with `edges`, a pod runner for it.
    pub async fn start(prefix: &str, chart_values: &[&str], edges: bool) -> Result<Setup> {
        Self::start_on(Cluster::shared().await?, prefix, chart_values, edges, false).await
    }

    /// Like [`Setup::start`] with edges, on the cluster with real nodes, where the chart's
    /// Deployment runs the operator (limited to the namespace) as a pod on a real node; the
    /// edges the kubelet runs there are real containers, the others the pod runner's.
    pub async fn with_operator_pod(prefix: &str, chart_values: &[&str]) -> Result<Setup> {
        let mut values = vec!["watchNamespace={ns}"];
        values.extend(chart_values);
        Self::start_on(Cluster::with_real_nodes().await?, prefix, &values, true, true).await
    }

    async fn start_on(
        cluster: &'static Cluster,
        prefix: &str,
        chart_values: &[&str],
        edges: bool,
        operator_pod: bool,
    ) -> Result<Setup> {
        let ns = cluster.fresh_namespace(prefix).await?;
        let values: Vec<String> = chart_values.iter().map(|v| v.replace("{ns}", &ns)).collect();
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let release_name = format!("op-{ns}");
        let release = if operator_pod {
            install_chart_with_operator(cluster, &release_name, &ns, &values).await?
        } else {
            install_chart(cluster, &release_name, &ns, &values).await?
        };
        let work = tempfile::tempdir().context(|| "cannot create the operators' directory".to_owned())?;
        let kubeconfig = service_account_kubeconfig(cluster, &release, work.path()).await?;
        let runner = if edges {
            // On real nodes the edges run the image's release build; simulated ones run the same.
            let edge = if operator_pod {
                Images::built().await?.binary("edgefleet-edge")
            } else {
                workspace_binary("edgefleet-edge")?
            };
            let config = PodRunnerConfig::in_namespace(&ns).image(EDGE_IMAGE, edge);
            Some(PodRunner::start(cluster, config).await?)
        } else {
            None
        };
        Ok(Setup {
            cluster,
            client: cluster.client().await?,
            ns,
            release,
            kubeconfig,
            work,
            _runner: runner,
        })
    }

    /// An operator replica `identity` of this release, reconciling this namespace only.
    pub async fn operator(&self, identity: &str, extra: &[&str]) -> Result<Operator> {
        let mut args = vec!["--watch-namespace", self.ns.as_str()];
        args.extend(extra);
        Operator::start(&self.kubeconfig, &self.release, identity, self.work.path(), &args).await
    }

    pub fn distributions(&self) -> Api<DynamicObject> {
        crate::resources::distributions(self.client.clone(), &self.ns)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// `kubectl -n <ns> args...`; an error when it fails.
    pub async fn kubectl(&self, args: &[&str]) -> Result<CommandOutput> {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend(args);
        self.cluster.kubectl(&all).await?.ok()
    }

    /// `kubectl apply` of `manifest` (YAML or JSON) in the namespace.
    pub async fn kubectl_apply(&self, manifest: &str) -> Result<CommandOutput> {
        self.cluster
            .kubectl_with_stdin(&["apply", "-n", &self.ns, "-f", "-"], manifest)
            .await?
            .ok()
    }

    /// Waits up to `within` until Distribution `name`'s current generation has the `type_`
    /// condition with `status` and `reason`; returns the condition's message.
    pub async fn wait_condition(
        &self,
        name: &str,
        (type_, status, reason): (&str, &str, &str),
        within: Duration,
    ) -> Result<String> {
        let api = self.distributions();
        wait_for(
            &format!("{name}: {type_}={status} ({reason})"),
            within,
            || async {
                let dist = api.get(name).await?;
                let observed = dist.data["status"]["observedGeneration"].as_i64();
                let current = observed.is_some() && observed == dist.metadata.generation;
                Ok(condition(&dist, type_)
                    .filter(|(s, r, _)| current && s == status && r == reason)
                    .map(|(_, _, message)| message))
            },
        )
        .await
    }
}

impl Setup {
    /// Waits up to `within` for an Event of `type_` (Normal, Warning) and `reason` about
    /// Distribution `name`; returns its note.
    pub async fn wait_event(
        &self,
        name: &str,
        (type_, reason): (&str, &str),
        within: Duration,
    ) -> Result<String> {
        let events = self.api::<Event>();
        wait_for(
            &format!("a {type_} Event {reason} about {name}"),
            within,
            || async {
                let list = events.list(&ListParams::default()).await?;
                Ok(list.items.into_iter().find_map(|e| {
                    let about = e.regarding.as_ref().is_some_and(|r| {
                        r.kind.as_deref() == Some("Distribution") && r.name.as_deref() == Some(name)
                    });
                    (about && e.type_.as_deref() == Some(type_) && e.reason.as_deref() == Some(reason))
                        .then(|| e.note.unwrap_or_default())
                }))
            },
        )
        .await
    }

    /// What `kubectl get dist <name>` shows in its REASON column.
    pub async fn printed_reason(&self, name: &str) -> Result<String> {
        let out = self.kubectl(&["get", "dist", name]).await?;
        let mut lines = out
            .stdout
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>());
        let header = lines.next().unwrap_or_default();
        let row = lines.next().unwrap_or_default();
        let column = header
            .iter()
            .position(|c| *c == "REASON")
            .ok_or_else(|| Error::Invalid {
                what: "kubectl get dist".to_owned(),
                reason: format!("no REASON column in {:?}", out.stdout),
            })?;
        Ok(row.get(column).map(|r| (*r).to_owned()).unwrap_or_default())
    }
}

/// The `type_` condition of a Distribution: status, reason, message.
pub fn condition(dist: &DynamicObject, type_: &str) -> Option<(String, String, String)> {
    let conditions = dist.data["status"]["conditions"].as_array()?;
    let c = conditions.iter().find(|c| c["type"] == type_)?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
        c["message"].as_str().unwrap_or_default().to_owned(),
    ))
}
