//! Issue 4 against the real local control plane: the operator, running as the chart's
//! ServiceAccount, turns Distributions into regional fleets of real edge processes (the pod
//! runner plays the kubelet), reports what it did in status, corrects drift, removes what is no
//! longer wanted, and leaves a converged Distribution alone.
//!
//! Every test has its own namespace, chart release and operator (limited to that namespace with
//! `--watch-namespace`), so the operators' request counters are each test's own. Only the first
//! test needs edges that really start; the others use regions of zero replicas (or regions
//! without nodes), which converge without any pod.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgefleet_e2e::binaries::workspace_binary;
use edgefleet_e2e::operator::{Operator, install_chart, service_account_kubeconfig};
use edgefleet_e2e::pods::{PodRunner, PodRunnerConfig};
use edgefleet_e2e::{Cluster, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Long enough for real edge processes to start on a loaded 2-core machine.
const CONVERGE: Duration = Duration::from_secs(120);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// One test's namespace with the chart, the operator and the pod runner.
struct Fleet {
    cluster: &'static Cluster,
    client: Client,
    ns: String,
    operator: Operator,
    _runner: PodRunner,
    _work: tempfile::TempDir,
}

impl Fleet {
    async fn start(prefix: &str) -> Fleet {
        let cluster = Cluster::shared().await.expect("local cluster");
        let ns = cluster.fresh_namespace(prefix).await.expect("namespace");
        let release = install_chart(cluster, &format!("op-{ns}"), &ns, &[])
            .await
            .expect("helm install");
        let work = tempfile::tempdir().expect("temp dir");
        let kubeconfig = service_account_kubeconfig(cluster, &release, work.path())
            .await
            .expect("the chart's ServiceAccount");
        let operator = Operator::start(
            &kubeconfig,
            &release,
            &format!("{prefix}-0"),
            work.path(),
            &["--watch-namespace", &ns],
        )
        .await
        .expect("operator starts");
        let edge = workspace_binary("edgefleet-edge").expect("edge binary built");
        let runner = PodRunner::start(
            cluster,
            PodRunnerConfig::in_namespace(&ns).image("ghcr.io/edgefleet/edge", edge),
        )
        .await
        .expect("pod runner");
        Fleet {
            cluster,
            client: cluster.client().await.expect("client"),
            ns,
            operator,
            _runner: runner,
            _work: work,
        }
    }

    fn distributions(&self) -> Api<DynamicObject> {
        edgefleet_e2e::resources::distributions(self.client.clone(), &self.ns)
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn kubectl_apply(&self, manifest: &str) {
        self.cluster
            .kubectl_with_stdin(&["apply", "-n", &self.ns, "-f", "-"], manifest)
            .await
            .expect("kubectl runs")
            .ok()
            .unwrap_or_else(|e| panic!("kubectl apply failed: {e}"));
    }

    async fn kubectl(&self, args: &[&str]) {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend(args);
        self.cluster
            .kubectl(&all)
            .await
            .expect("kubectl runs")
            .ok()
            .unwrap_or_else(|e| panic!("kubectl {args:?} failed: {e}"));
    }

    /// Waits until the Distribution's `type_` condition has `status` and `reason`; returns its
    /// message.
    async fn wait_condition(&self, name: &str, type_: &str, status: &str, reason: &str) -> String {
        let api = self.distributions();
        wait_for(
            &format!("{name}: {type_}={status} ({reason})"),
            CONVERGE,
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
        .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", self.operator.log()))
    }

    /// Names of the objects of each kind labelled as belonging to `distribution`.
    async fn owned(&self, distribution: &str) -> BTreeMap<&'static str, Vec<String>> {
        let params = ListParams::default().labels(&format!("edgefleet.io/distribution={distribution}"));
        let mut out = BTreeMap::new();
        macro_rules! collect {
            ($($kind:ty => $name:literal),*) => {$(
                let names = self.api::<$kind>().list(&params).await.expect("list").items
                    .iter().map(|o| o.name_any()).collect::<Vec<_>>();
                out.insert($name, names);
            )*};
        }
        collect!(
            Deployment => "Deployment",
            Service => "Service",
            PodDisruptionBudget => "PodDisruptionBudget",
            ConfigMap => "ConfigMap",
            Secret => "Secret",
            ServiceAccount => "ServiceAccount",
            Role => "Role",
            RoleBinding => "RoleBinding"
        );
        out
    }

    /// resourceVersion of every object the operator writes and nobody else updates (Deployments
    /// and PodDisruptionBudgets get status updates from controllers).
    async fn spec_versions(&self, distribution: &str) -> BTreeMap<String, String> {
        let params = ListParams::default().labels(&format!("edgefleet.io/distribution={distribution}"));
        let mut out = BTreeMap::new();
        macro_rules! collect {
            ($($kind:ty),*) => {$(
                for o in self.api::<$kind>().list(&params).await.expect("list").items {
                    out.insert(
                        format!("{} {}", stringify!($kind), o.name_any()),
                        o.resource_version().unwrap_or_default(),
                    );
                }
            )*};
        }
        collect!(Service, ConfigMap, Secret, ServiceAccount, Role, RoleBinding);
        out
    }

    /// The operator's counters: reconciles of Distributions and API requests by method.
    async fn metrics(&self) -> BTreeMap<String, f64> {
        let text = reqwest::get(format!("{}/metrics", self.operator.base_url()))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect()
    }
}

fn condition(dist: &DynamicObject, type_: &str) -> Option<(String, String, String)> {
    let conditions = dist.data["status"]["conditions"].as_array()?;
    let c = conditions.iter().find(|c| c["type"] == type_)?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
        c["message"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// A Distribution with an HTTP origin (nothing is fetched from it in these tests).
fn http_distribution(name: &str, regions: &[(&str, i32)]) -> String {
    let regions: Vec<Value> = regions
        .iter()
        .map(|(r, n)| json!({"name": r, "replicas": n}))
        .collect();
    json!({
        "apiVersion": "edgefleet.io/v1alpha1",
        "kind": "Distribution",
        "metadata": {"name": name},
        "spec": {
            "origins": [{"name": "site", "http": {"url": "http://127.0.0.1:9"}}],
            "defaultBehavior": {"targetOrigin": "site"},
            "regions": regions,
            "edge": {"cacheMemory": "16Mi"}
        }
    })
    .to_string()
}

fn api_writes(metrics: &BTreeMap<String, f64>) -> f64 {
    ["POST", "PUT", "PATCH", "DELETE"]
        .iter()
        .map(|m| {
            metrics
                .get(&format!(
                    "edgefleet_operator_api_requests_total{{method=\"{m}\"}}"
                ))
                .copied()
                .unwrap_or(0.0)
        })
        .sum()
}

fn reconciles(metrics: &BTreeMap<String, f64>) -> f64 {
    metrics
        .get("edgefleet_operator_reconciliations_total{kind=\"Distribution\"}")
        .copied()
        .unwrap_or(0.0)
}

#[tokio::test]
async fn the_example_becomes_ready_regional_fleets_of_real_edges() {
    let fleet = Fleet::start("fleet").await;
    for file in ["examples/origin-credentials.yaml", "examples/distribution.yaml"] {
        fleet
            .kubectl(&["apply", "-f", &repo(file).to_string_lossy()])
            .await;
    }
    fleet
        .wait_condition("site", "Ready", "True", "AllRegionsReady")
        .await;

    let dist = fleet.distributions().get("site").await.expect("distribution");
    let status = &dist.data["status"];
    assert_eq!(status["readyRegions"], "3/3");
    assert_eq!(status["service"], "site");
    assert_eq!(
        condition(&dist, "Degraded").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(
        condition(&dist, "Progressing").map(|c| c.1).as_deref(),
        Some("RolloutComplete")
    );

    let nodes: BTreeMap<String, Node> = Api::<Node>::all(fleet.client.clone())
        .list(&ListParams::default())
        .await
        .expect("nodes")
        .items
        .into_iter()
        .map(|n| (n.name_any(), n))
        .collect();
    let deployments = fleet.api::<Deployment>();
    let pods = fleet.api::<Pod>();
    for (i, region) in ["eu-west", "us-east", "ap-south"].into_iter().enumerate() {
        let name = format!("site-{region}");
        let deployment = deployments.get(&name).await.expect("regional Deployment");
        let spec = deployment.spec.expect("spec");
        let pod_spec = spec.template.spec.expect("pod spec");
        let term = &pod_spec
            .affinity
            .and_then(|a| a.node_affinity)
            .and_then(|n| n.required_during_scheduling_ignored_during_execution)
            .expect("required node affinity")
            .node_selector_terms[0];
        let requirement = &term.match_expressions.as_ref().expect("expressions")[0];
        assert_eq!(
            (requirement.key.as_str(), requirement.operator.as_str()),
            (REGION_LABEL, "In")
        );
        assert_eq!(requirement.values.as_deref(), Some(&[region.to_owned()][..]));
        let env = &pod_spec.containers[0].env.as_ref().expect("env")[0];
        assert_eq!(
            (env.name.as_str(), env.value.as_deref()),
            ("EDGEFLEET_REGION", Some(region))
        );

        // Its pods run only on the region's nodes, one per zone.
        let selector = format!("edgefleet.io/distribution=site,edgefleet.io/region={region}");
        let running = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("pods");
        let mut zones = Vec::new();
        for pod in &running.items {
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .expect("scheduled");
            let labels = nodes[&node].labels();
            assert_eq!(
                labels.get(REGION_LABEL).map(String::as_str),
                Some(region),
                "{node}"
            );
            zones.push(labels.get(ZONE_LABEL).cloned().unwrap_or_default());
        }
        zones.sort();
        zones.dedup();
        assert_eq!(
            zones.len(),
            2,
            "2 replicas of {region} spread over its 2 zones: {zones:?}"
        );

        assert_eq!(status["regions"][i]["name"], region);
        assert_eq!(status["regions"][i]["readyReplicas"], 2);
        assert_eq!(status["regions"][i]["service"], name.as_str());
        fleet.api::<Service>().get(&name).await.expect("regional Service");
    }
    let global = fleet
        .api::<Service>()
        .get("site")
        .await
        .expect("the Service over every region");
    assert_eq!(
        global.spec.and_then(|s| s.traffic_distribution).as_deref(),
        Some("PreferClose")
    );
    let config = fleet
        .api::<ConfigMap>()
        .get("site-edge-config")
        .await
        .expect("edge config");
    let yaml = &config.data.expect("data")["edge.yaml"];
    assert!(
        yaml.contains("originShield") && !yaml.contains("edgefleet-demo-secret"),
        "the shield is configured and no credential is in the ConfigMap:\n{yaml}"
    );

    // A purge reaches every ready edge through its admin API, with the fleet's token.
    fleet
        .kubectl(&[
            "apply",
            "-f",
            &repo("examples/invalidation.yaml").to_string_lossy(),
        ])
        .await;
    let invalidations: Api<DynamicObject> =
        edgefleet_e2e::resources::invalidations(fleet.client.clone(), &fleet.ns);
    let status = wait_for("the Invalidation to complete on every edge", CONVERGE, || async {
        let inval = invalidations.get("site-release-2026-11-25").await?;
        let status = inval.data["status"].clone();
        Ok((status["phase"] == "Completed").then_some(status))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.operator.log()));
    assert_eq!(
        (
            status["edgesAcknowledged"].as_i64(),
            status["edgesTotal"].as_i64()
        ),
        (Some(6), Some(6))
    );

    assert!(
        !fleet.operator.log().contains("forbidden"),
        "the chart's RBAC refused the operator something:\n{}",
        fleet.operator.log()
    );
}

#[tokio::test]
async fn a_converged_distribution_is_left_alone_and_drift_is_corrected() {
    let fleet = Fleet::start("converged").await;
    fleet
        .kubectl_apply(&http_distribution("quiet", &[("eu-west", 0), ("us-east", 0)]))
        .await;
    fleet
        .wait_condition("quiet", "Ready", "True", "AllRegionsReady")
        .await;

    // Another pass (triggered by an unrelated change to an owned object) writes nothing.
    let versions = fleet.spec_versions("quiet").await;
    let before = fleet.metrics().await;
    fleet
        .kubectl(&[
            "label",
            "service",
            "quiet-us-east",
            "e2e.edgefleet.io/touched=yes",
        ])
        .await;
    let after = wait_for(
        "the operator to look at the Distribution again",
        CONVERGE,
        || async {
            let now = fleet.metrics().await;
            Ok((reconciles(&now) > reconciles(&before)).then_some(now))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.operator.log()));
    assert_eq!(
        api_writes(&after),
        api_writes(&before),
        "a pass over a converged Distribution wrote to the API"
    );
    let mut changed = fleet.spec_versions("quiet").await;
    changed.retain(|k, v| versions.get(k) != Some(v));
    assert_eq!(
        changed.keys().collect::<Vec<_>>(),
        ["Service quiet-us-east"],
        "only the object the test touched changed"
    );

    // Drift is corrected: the operator's fields win over a manual edit.
    let deployments = fleet.api::<Deployment>();
    fleet
        .kubectl(&["scale", "deployment", "quiet-eu-west", "--replicas=3"])
        .await;
    wait_for("the operator to restore 0 replicas", CONVERGE, || async {
        let d = deployments.get("quiet-eu-west").await?;
        let generation = d.metadata.generation;
        Ok((d.spec.and_then(|s| s.replicas) == Some(0) && generation > Some(2)).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.operator.log()));
    fleet
        .kubectl(&[
            "patch",
            "service",
            "quiet",
            "--type=merge",
            "-p",
            r#"{"spec":{"trafficDistribution":null}}"#,
        ])
        .await;
    wait_for("the operator to restore PreferClose", CONVERGE, || async {
        let service = fleet.api::<Service>().get("quiet").await?;
        Ok(
            (service.spec.and_then(|s| s.traffic_distribution).as_deref() == Some("PreferClose"))
                .then_some(()),
        )
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.operator.log()));
    assert!(
        !fleet.operator.log().contains("forbidden"),
        "the chart's RBAC refused the operator something:\n{}",
        fleet.operator.log()
    );
}

#[tokio::test]
async fn a_region_without_nodes_is_degraded_with_no_nodes_in_region() {
    let fleet = Fleet::start("nonodes").await;
    fleet
        .kubectl_apply(&http_distribution("moon", &[("eu-west", 0), ("atlantis", 1)]))
        .await;
    let message = fleet
        .wait_condition("moon", "Degraded", "True", "NoNodesInRegion")
        .await;
    assert!(
        message.contains("topology.kubernetes.io/region=atlantis") && !message.contains("eu-west"),
        "{message}"
    );
    let dist = fleet.distributions().get("moon").await.expect("distribution");
    assert_eq!(
        condition(&dist, "Ready").map(|c| c.1).as_deref(),
        Some("NoNodesInRegion")
    );
    assert_eq!(dist.data["status"]["regions"][1]["readyReplicas"], 0);
}

#[tokio::test]
async fn a_missing_origin_secret_degrades_until_it_is_created() {
    let fleet = Fleet::start("secret").await;
    let manifest = json!({
        "apiVersion": "edgefleet.io/v1alpha1",
        "kind": "Distribution",
        "metadata": {"name": "bucket"},
        "spec": {
            "origins": [{"name": "files", "s3": {
                "endpoint": "http://127.0.0.1:9", "bucket": "files",
                "credentialsSecretRef": {"name": "files-credentials"}
            }}],
            "defaultBehavior": {"targetOrigin": "files"},
            "regions": [{"name": "us-east", "replicas": 0}],
            "edge": {"cacheMemory": "16Mi"}
        }
    });
    fleet.kubectl_apply(&manifest.to_string()).await;
    let message = fleet
        .wait_condition("bucket", "Degraded", "True", "OriginSecretMissing")
        .await;
    assert!(message.contains("\"files-credentials\""), "{message}");
    assert!(
        fleet.owned("bucket").await.values().all(Vec::is_empty),
        "nothing is created while the Secret is missing"
    );

    fleet
        .kubectl(&[
            "create",
            "secret",
            "generic",
            "files-credentials",
            "--from-literal=AWS_ACCESS_KEY_ID=id",
            "--from-literal=AWS_SECRET_ACCESS_KEY=key",
        ])
        .await;
    fleet
        .wait_condition("bucket", "Ready", "True", "AllRegionsReady")
        .await;
    let edge_secret = fleet
        .api::<Secret>()
        .get("bucket-edge")
        .await
        .expect("edge Secret");
    let data = edge_secret.data.expect("data");
    assert_eq!(data["origin-files-secret-access-key"].0, b"key");
    assert!(!data["admin-token"].0.is_empty());
}

#[tokio::test]
async fn removing_a_region_deletes_its_objects_and_deleting_the_distribution_deletes_all() {
    let fleet = Fleet::start("lifecycle").await;
    let regions = [("eu-west", 0), ("us-east", 0), ("ap-south", 0)];
    fleet.kubectl_apply(&http_distribution("web", &regions)).await;
    fleet
        .wait_condition("web", "Ready", "True", "AllRegionsReady")
        .await;
    let owned = fleet.owned("web").await;
    assert_eq!(owned["Deployment"].len(), 3, "{owned:?}");
    assert_eq!(owned["Service"].len(), 4, "{owned:?}");

    // ap-south goes: its Deployment, PodDisruptionBudget and Service go with it.
    fleet
        .kubectl_apply(&http_distribution("web", &regions[..2]))
        .await;
    wait_for("ap-south's objects to be deleted", CONVERGE, || async {
        let owned = fleet.owned("web").await;
        let left: Vec<&String> = owned
            .values()
            .flatten()
            .filter(|n| n.contains("ap-south"))
            .collect();
        Ok(left.is_empty().then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.operator.log()));
    fleet
        .wait_condition("web", "Ready", "True", "AllRegionsReady")
        .await;
    let dist = fleet.distributions().get("web").await.expect("distribution");
    let regions: Vec<&str> = dist.data["status"]["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(regions, ["eu-west", "us-east"]);

    // Disabled: every region at zero (whatever spec.regions asks for), and the status says why.
    fleet
        .kubectl_apply(&http_distribution("web", &[("eu-west", 2), ("us-east", 2)]))
        .await;
    fleet
        .distributions()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"enabled": false}})),
        )
        .await
        .expect("disable");
    fleet.wait_condition("web", "Ready", "False", "Disabled").await;
    for region in ["eu-west", "us-east"] {
        let d = fleet
            .api::<Deployment>()
            .get(&format!("web-{region}"))
            .await
            .expect("kept");
        assert_eq!(d.spec.and_then(|s| s.replicas), Some(0), "{region}");
    }

    // Deleted: the garbage collector removes everything it owned.
    fleet.kubectl(&["delete", "distribution", "web"]).await;
    wait_for("every owned object to be gone", CONVERGE, || async {
        let owned = fleet.owned("web").await;
        Ok(owned.values().all(Vec::is_empty).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.operator.log()));
}

#[tokio::test]
async fn invalidations_fail_without_their_distribution_and_never_run_twice() {
    let fleet = Fleet::start("inval").await;
    let invalidation = |name: &str, distribution: &str| {
        json!({
            "apiVersion": "edgefleet.io/v1alpha1",
            "kind": "Invalidation",
            "metadata": {"name": name},
            "spec": {"distribution": distribution, "paths": ["/index.html", "/assets/*"]}
        })
        .to_string()
    };
    let api: Api<DynamicObject> = edgefleet_e2e::resources::invalidations(fleet.client.clone(), &fleet.ns);
    let phase = |name: &'static str| {
        let api = api.clone();
        async move {
            let inval = api.get(name).await?;
            Ok::<_, edgefleet_e2e::Error>(inval.data["status"]["phase"].as_str().map(str::to_owned))
        }
    };

    fleet.kubectl_apply(&invalidation("orphan", "nowhere")).await;
    wait_for("the orphan Invalidation to fail", CONVERGE, || async {
        Ok(phase("orphan").await?.filter(|p| p == "Failed"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.operator.log()));
    let failed = api.get("orphan").await.expect("invalidation");
    let message = failed.data["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("\"nowhere\" does not exist"), "{message}");

    // A Distribution with no edges running: nothing holds the paths, so it completes at once.
    fleet
        .kubectl_apply(&http_distribution("site", &[("eu-west", 0)]))
        .await;
    fleet
        .wait_condition("site", "Ready", "True", "AllRegionsReady")
        .await;
    fleet.kubectl_apply(&invalidation("release-1", "site")).await;
    wait_for("the Invalidation to complete", CONVERGE, || async {
        Ok(phase("release-1").await?.filter(|p| p == "Completed"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.operator.log()));
    let done = api.get("release-1").await.expect("invalidation");
    assert_eq!(done.data["status"]["edgesTotal"], 0);
    assert!(done.data["status"]["completionTime"].is_string());

    // Re-applying the manifest (a GitOps sync) is accepted and leaves the result alone.
    fleet.kubectl_apply(&invalidation("release-1", "site")).await;
    let again = api.get("release-1").await.expect("invalidation");
    assert_eq!(again.data["status"], done.data["status"]);
}
