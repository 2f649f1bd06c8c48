//! Issue 4 against the real local control plane: the operator, running as the chart's
//! ServiceAccount, turns Distributions into regional fleets of real edge processes (the pod
//! runner plays the kubelet), reports what it did in status, corrects drift, removes what is no
//! longer wanted, and leaves a converged Distribution alone.
//!
//! Every test has its own namespace, chart release and operator (limited to that namespace with
//! `--watch-namespace`), so the operators' request counters are each test's own. Only the first
//! test and the one that kills a leader mid-reconcile need edges that really start; the others
//! use regions of zero replicas (or regions without nodes), which converge without any pod.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgefleet_e2e::operator::{Operator, Samples};
use edgefleet_e2e::resources::{CREATE_S3_CREDENTIALS, s3_distribution};
use edgefleet_e2e::setup::condition;
use edgefleet_e2e::{Error, wait_for};
use edgefleet_operator::api::reasons;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Long enough for real edge processes to start on a loaded 2-core machine.
const CONVERGE: Duration = Duration::from_secs(120);
/// The operator's leader Lease lasts 15 s; a follower must have taken it well within 30 s.
const TAKEOVER: Duration = Duration::from_secs(30);
const LEASE_NAME: &str = "edgefleet-operator-leader";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// One test's namespace with the chart and the pod runner (`edgefleet_e2e::setup`), and the
/// operator.
struct Fleet {
    base: edgefleet_e2e::setup::Setup,
    /// The operator most tests run; `None` where a test runs its own replicas.
    operator: Option<Operator>,
}

/// The shared setup's fields and calls; this file's own helpers are added below.
impl std::ops::Deref for Fleet {
    type Target = edgefleet_e2e::setup::Setup;

    fn deref(&self) -> &Self::Target {
        &self.base
    }
}

impl Fleet {
    async fn start(prefix: &str) -> Fleet {
        Fleet::start_with(prefix, &[], Some(&[])).await
    }

    /// The chart installed with `chart_values` (`{ns}` stands for the test's namespace) and,
    /// unless `operator_args` is `None`, an operator started with them.
    async fn start_with(prefix: &str, chart_values: &[&str], operator_args: Option<&[&str]>) -> Fleet {
        let mut fleet = Fleet {
            base: edgefleet_e2e::setup::Setup::start(prefix, chart_values, true)
                .await
                .expect("test namespace, chart and pod runner"),
            operator: None,
        };
        if let Some(args) = operator_args {
            fleet.operator = Some(fleet.start_operator(&format!("{prefix}-0"), args).await);
        }
        fleet
    }

    /// An operator replica of this test's release, reconciling its namespace only.
    async fn start_operator(&self, identity: &str, extra: &[&str]) -> Operator {
        self.base
            .operator(identity, extra)
            .await
            .expect("operator starts")
    }

    fn operator(&self) -> &Operator {
        self.operator.as_ref().expect("this test's operator runs")
    }

    /// The log of this test's operator, for failure messages.
    fn log(&self) -> String {
        self.operator.as_ref().map(Operator::log).unwrap_or_default()
    }

    async fn kubectl_apply(&self, manifest: &str) {
        self.base
            .kubectl_apply(manifest)
            .await
            .unwrap_or_else(|e| panic!("kubectl apply failed: {e}"));
    }

    async fn kubectl(&self, args: &[&str]) {
        self.base
            .kubectl(args)
            .await
            .unwrap_or_else(|e| panic!("kubectl {args:?} failed: {e}"));
    }

    /// Waits until the Distribution's `type_` condition has `status` and `reason`; returns its
    /// message.
    async fn wait_condition(&self, name: &str, type_: &str, status: &str, reason: &str) -> String {
        self.base
            .wait_condition(name, (type_, status, reason), CONVERGE)
            .await
            .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", self.log()))
    }

    /// Waits until an Event of `type_` and `reason` is about Distribution `name`; returns its
    /// note.
    async fn wait_event(&self, name: &str, type_: &str, reason: &str) -> String {
        self.base
            .wait_event(name, (type_, reason), CONVERGE)
            .await
            .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", self.log()))
    }

    /// What `kubectl get dist <name>` shows in its REASON column.
    async fn printed_reason(&self, name: &str) -> String {
        self.base
            .printed_reason(name)
            .await
            .unwrap_or_else(|e| panic!("kubectl get dist {name}: {e}"))
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
            RoleBinding => "RoleBinding",
            Ingress => "Ingress"
        );
        out
    }

    /// Name and controller uid of every object of kind `K` that `params` select.
    async fn controllers<K>(&self, params: &ListParams) -> Vec<(String, Option<String>)>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let listed = self.api::<K>().list(params).await;
        let objects =
            listed.unwrap_or_else(|e| panic!("listing {}: {e}", K::kind(&K::DynamicType::default())));
        objects
            .items
            .iter()
            .map(|o| {
                let controller = o.owner_references().iter().find(|r| r.controller == Some(true));
                (o.name_any(), controller.map(|r| r.uid.clone()))
            })
            .collect()
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

    /// The counters of this test's operator.
    async fn metrics(&self) -> Samples {
        self.operator().metrics().await.expect("operator metrics")
    }
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
        let regional = fleet.api::<Service>().get(&name).await.expect("regional Service");
        assert_eq!(
            regional.spec.and_then(|s| s.cluster_ip).as_deref(),
            Some("None"),
            "regional Services are headless"
        );
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
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.log()));
    assert_eq!(
        (
            status["edgesAcknowledged"].as_i64(),
            status["edgesTotal"].as_i64()
        ),
        (Some(6), Some(6))
    );

    assert!(
        !fleet.log().contains("forbidden"),
        "the chart's RBAC refused the operator something:\n{}",
        fleet.log()
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
            Ok((now.distribution_passes() > before.distribution_passes()).then_some(now))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.log()));
    assert_eq!(
        after.api_writes(),
        before.api_writes(),
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
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.log()));
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
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.log()));
    assert!(
        !fleet.log().contains("forbidden"),
        "the chart's RBAC refused the operator something:\n{}",
        fleet.log()
    );
}

#[tokio::test]
async fn a_regional_service_with_a_cluster_ip_is_replaced_by_a_headless_one() {
    // As an operator from before headless regional Services left it: a ClusterIP, which the
    // API server never lets change, so the Service must be deleted and created anew.
    let mut fleet = Fleet::start_with("headless", &[], None).await;
    fleet
        .kubectl_apply(&http_distribution("old", &[("us-east", 0)]))
        .await;
    let uid = fleet
        .distributions()
        .get("old")
        .await
        .expect("the Distribution")
        .uid()
        .expect("uid");
    fleet
        .kubectl_apply(
            &json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "old-us-east", "labels": {
                    "app.kubernetes.io/managed-by": "edgefleet-operator",
                    "edgefleet.io/distribution": "old", "edgefleet.io/region": "us-east"
                }, "ownerReferences": [{
                    "apiVersion": "edgefleet.io/v1alpha1", "kind": "Distribution", "name": "old",
                    "uid": uid, "controller": true, "blockOwnerDeletion": true
                }]},
                "spec": {"selector": {"app": "none"}, "ports": [{"name": "http", "port": 80}]}
            })
            .to_string(),
        )
        .await;
    let services = fleet.api::<Service>();
    let before = services.get("old-us-east").await.expect("the old Service");
    let old_ip = before.spec.as_ref().and_then(|s| s.cluster_ip.clone());
    assert!(old_ip.as_deref().is_some_and(|ip| ip != "None"), "{old_ip:?}");

    fleet.operator = Some(fleet.start_operator("headless-0", &[]).await);
    fleet
        .wait_condition("old", "Ready", "True", "AllRegionsReady")
        .await;
    let after = services.get("old-us-east").await.expect("the regional Service");
    assert_eq!(after.spec.and_then(|s| s.cluster_ip).as_deref(), Some("None"));
    assert_ne!(after.metadata.uid, before.metadata.uid, "created anew");
}

#[tokio::test]
async fn a_region_without_nodes_is_degraded_with_no_nodes_in_region() {
    // No node carries the label of region atlantis: what a user sees whose nodes lack the
    // region label.
    let fleet = Fleet::start("nonodes").await;
    fleet
        .kubectl_apply(&http_distribution("moon", &[("eu-west", 0), ("atlantis", 1)]))
        .await;
    let message = fleet
        .wait_condition("moon", "Degraded", "True", reasons::NO_NODES_IN_REGION)
        .await;
    assert!(
        message.contains("kubectl label node <node> topology.kubernetes.io/region=atlantis")
            && !message.contains("eu-west"),
        "{message}"
    );
    let dist = fleet.distributions().get("moon").await.expect("distribution");
    assert_eq!(
        condition(&dist, "Ready").map(|c| c.1).as_deref(),
        Some(reasons::NO_NODES_IN_REGION)
    );
    assert_eq!(dist.data["status"]["regions"][1]["readyReplicas"], 0);
    assert_eq!(fleet.printed_reason("moon").await, reasons::NO_NODES_IN_REGION);
    let note = fleet
        .wait_event("moon", "Warning", reasons::NO_NODES_IN_REGION)
        .await;
    assert!(note.contains("region=atlantis"), "{note}");
}

/// An image reference no node can pull: the pod runner, like a kubelet, answers ErrImagePull.
const UNPULLABLE: &str = "registry.invalid/edgefleet/edge:missing";

#[tokio::test]
async fn edge_pods_that_cannot_run_give_the_reason_until_they_can() {
    let fleet = Fleet::start("podtrouble").await;
    let mut pull: Value = serde_json::from_str(&http_distribution("pull", &[("eu-west", 1)])).expect("JSON");
    pull["spec"]["edge"]["image"] = json!(UNPULLABLE);
    // More CPU than any node has (64): the scheduler finds no place for the pod.
    let mut big: Value = serde_json::from_str(&http_distribution("big", &[("us-east", 1)])).expect("JSON");
    big["spec"]["edge"]["resources"] = json!({"requests": {"cpu": "1000"}});
    fleet.kubectl_apply(&pull.to_string()).await;
    fleet.kubectl_apply(&big.to_string()).await;

    let message = fleet
        .wait_condition("pull", "Degraded", "True", reasons::EDGE_IMAGE_PULL_FAILED)
        .await;
    assert!(
        message.starts_with("region eu-west: pod pull-eu-west-")
            && message.contains(&format!("cannot pull image \"{UNPULLABLE}\" on node "))
            && message.contains("(ErrImagePull: ")
            && message.contains("Fix spec.edge.image"),
        "{message}"
    );
    let dist = fleet.distributions().get("pull").await.expect("distribution");
    assert_eq!(
        condition(&dist, "Ready").map(|c| (c.0, c.1)),
        Some(("False".to_owned(), reasons::EDGE_IMAGE_PULL_FAILED.to_owned()))
    );
    assert_eq!(
        fleet.printed_reason("pull").await,
        reasons::EDGE_IMAGE_PULL_FAILED
    );
    let note = fleet
        .wait_event("pull", "Warning", reasons::EDGE_IMAGE_PULL_FAILED)
        .await;
    assert!(note.contains(UNPULLABLE), "{note}");

    let message = fleet
        .wait_condition("big", "Degraded", "True", reasons::EDGE_UNSCHEDULABLE)
        .await;
    assert!(
        message.starts_with("region us-east: pod big-us-east-") && message.contains("Insufficient cpu"),
        "{message}"
    );
    assert_eq!(fleet.printed_reason("big").await, reasons::EDGE_UNSCHEDULABLE);
    fleet
        .wait_event("big", "Warning", reasons::EDGE_UNSCHEDULABLE)
        .await;

    // Fixed: the chart's edge image, and the resources derived from the cache size. The new
    // pods start, the old ones go, and the reason with them.
    for name in ["pull", "big"] {
        fleet
            .distributions()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"edge": {"image": null, "resources": null}}})),
            )
            .await
            .expect("fix the Distribution");
    }
    for name in ["pull", "big"] {
        fleet
            .wait_condition(name, "Ready", "True", reasons::ALL_REGIONS_READY)
            .await;
        let dist = fleet.distributions().get(name).await.expect("distribution");
        assert_eq!(
            condition(&dist, "Degraded").map(|c| (c.0, c.1)),
            Some(("False".to_owned(), reasons::AS_EXPECTED.to_owned())),
            "{name}"
        );
        fleet.wait_event(name, "Normal", reasons::ALL_REGIONS_READY).await;
    }
    assert!(
        !fleet.log().contains("forbidden"),
        "the chart's RBAC refused the operator something:\n{}",
        fleet.log()
    );
}

#[tokio::test]
async fn a_missing_origin_secret_degrades_until_it_is_created() {
    let fleet = Fleet::start("secret").await;
    let manifest = s3_distribution("bucket", 0);
    fleet.kubectl_apply(&manifest.to_string()).await;
    let message = fleet
        .wait_condition("bucket", "Degraded", "True", "OriginSecretMissing")
        .await;
    assert!(message.contains("\"files-credentials\""), "{message}");
    assert!(
        fleet.owned("bucket").await.values().all(Vec::is_empty),
        "nothing is created while the Secret is missing"
    );

    fleet.kubectl(&CREATE_S3_CREDENTIALS).await;
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
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.log()));
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
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.log()));
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
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.log()));
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
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.log()));
    let done = api.get("release-1").await.expect("invalidation");
    assert_eq!(done.data["status"]["edgesTotal"], 0);
    assert!(done.data["status"]["completionTime"].is_string());

    // Re-applying the manifest (a GitOps sync) is accepted and leaves the result alone.
    fleet.kubectl_apply(&invalidation("release-1", "site")).await;
    let again = api.get("release-1").await.expect("invalidation");
    assert_eq!(again.data["status"], done.data["status"]);
}

/// The Ingresses of `distribution`, by name: (host, backend Service, backend port, TLS Secret).
async fn ingresses(fleet: &Fleet, distribution: &str) -> BTreeMap<String, Ingress> {
    let params = ListParams::default().labels(&format!("edgefleet.io/distribution={distribution}"));
    fleet
        .api::<Ingress>()
        .list(&params)
        .await
        .expect("list Ingresses")
        .items
        .into_iter()
        .map(|i| (i.name_any(), i))
        .collect()
}

/// What an Ingress routes: (host, Service, port, TLS Secret).
fn route(ingress: &Ingress) -> (String, String, i32, Option<String>) {
    let spec = ingress.spec.as_ref().expect("spec");
    let rule = &spec.rules.as_ref().expect("rules")[0];
    let path = &rule.http.as_ref().expect("http").paths[0];
    let service = path.backend.service.as_ref().expect("Service backend");
    let tls = spec
        .tls
        .as_ref()
        .and_then(|t| t.first())
        .and_then(|t| t.secret_name.clone());
    (
        rule.host.clone().unwrap_or_default(),
        service.name.clone(),
        service.port.as_ref().and_then(|p| p.number).unwrap_or_default(),
        tls,
    )
}

fn aliased_distribution(name: &str, aliases: &[&str]) -> String {
    let mut manifest: Value =
        serde_json::from_str(&http_distribution(name, &[("eu-west", 0)])).expect("JSON");
    manifest["spec"]["aliases"] = json!(aliases);
    manifest.to_string()
}

#[tokio::test]
async fn each_alias_gets_an_ingress_that_goes_with_the_alias_or_the_setting() {
    // RBAC as the chart renders it for one namespace with Ingresses on: a Role in the namespace.
    let values = [
        "watchNamespace={ns}",
        "ingress.enabled=true",
        "ingress.className=edge",
        "ingress.tls.enabled=true",
    ];
    let ingress_args = [
        "--ingress",
        "enabled",
        "--ingress-class-name",
        "edge",
        "--ingress-tls-secret",
        "{ingress}-tls",
        "--ingress-annotations",
        r#"{"cert-manager.io/cluster-issuer":"test-issuer"}"#,
    ];
    let mut fleet = Fleet::start_with("ingress", &values, Some(&ingress_args)).await;
    let roles = fleet
        .api::<Role>()
        .list(&ListParams::default())
        .await
        .expect("Roles");
    assert!(
        roles
            .items
            .iter()
            .any(|r| r.name_any() == fleet.release.service_account()),
        "the chart's Role in the watched namespace"
    );

    // No alias, no Ingress.
    fleet.kubectl_apply(&aliased_distribution("shop", &[])).await;
    fleet
        .wait_condition("shop", "Ready", "True", "AllRegionsReady")
        .await;
    assert!(ingresses(&fleet, "shop").await.is_empty());

    fleet
        .kubectl_apply(&aliased_distribution(
            "shop",
            &["www.shop.test", "*.cdn.shop.test"],
        ))
        .await;
    let found = wait_for("an Ingress per alias", CONVERGE, || async {
        let found = ingresses(&fleet, "shop").await;
        Ok((found.len() == 2).then_some(found))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.log()));
    let dist = fleet.distributions().get("shop").await.expect("Distribution");
    let uid = dist.uid().expect("uid");
    let expected = [
        ("shop-www.shop.test", "www.shop.test"),
        ("shop-wildcard.cdn.shop.test", "*.cdn.shop.test"),
    ];
    for (name, host) in expected {
        let ingress = found
            .get(name)
            .unwrap_or_else(|| panic!("{name} in {:?}", found.keys()));
        assert_eq!(
            route(ingress),
            (
                host.to_owned(),
                "shop".to_owned(),
                80,
                Some(format!("{name}-tls"))
            )
        );
        let spec = ingress.spec.as_ref().expect("spec");
        assert_eq!(spec.ingress_class_name.as_deref(), Some("edge"));
        assert_eq!(
            ingress
                .annotations()
                .get("cert-manager.io/cluster-issuer")
                .map(String::as_str),
            Some("test-issuer")
        );
        let owner = ingress
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true))
            .expect("a controller");
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Distribution", uid.as_str())
        );
    }
    // The backend exists: the Service over every region, port 80.
    let service = fleet.api::<Service>().get("shop").await.expect("Service shop");
    let ports = service.spec.and_then(|s| s.ports).expect("ports");
    assert!(ports.iter().any(|p| p.port == 80), "{ports:?}");

    // An alias removed: its Ingress goes, the other stays untouched.
    let kept_uid = found["shop-www.shop.test"].uid();
    fleet
        .kubectl_apply(&aliased_distribution("shop", &["www.shop.test"]))
        .await;
    let left = wait_for("the removed alias's Ingress to go", CONVERGE, || async {
        let left = ingresses(&fleet, "shop").await;
        Ok((left.len() == 1).then_some(left))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.log()));
    assert_eq!(
        left.get("shop-www.shop.test").and_then(|i| i.uid()),
        kept_uid,
        "the remaining alias's Ingress was kept, not recreated"
    );
    assert!(!fleet.log().contains("forbidden"), "{}", fleet.log());

    // With uploads and an upload host: one more Ingress, to the upload port; no host, it goes.
    fleet.kubectl(&CREATE_S3_CREDENTIALS).await;
    fleet
        .kubectl(&[
            "create",
            "secret",
            "generic",
            "shop-uploaders",
            "--from-literal=uploader=uploader-secret",
        ])
        .await;
    let with_uploads = |host: Option<&str>| {
        let mut manifest: Value =
            serde_json::from_str(&aliased_distribution("shop", &["www.shop.test"])).expect("JSON");
        let files = &s3_distribution("files", 0)["spec"]["origins"][0];
        manifest["spec"]["origins"]
            .as_array_mut()
            .expect("origins")
            .push(files.clone());
        manifest["spec"]["uploadAcceleration"] = json!({
            "targetOrigin": "files",
            "clientKeysSecretRef": {"name": "shop-uploaders"},
        });
        if let Some(host) = host {
            manifest["spec"]["uploadAcceleration"]["host"] = json!(host);
        }
        manifest.to_string()
    };
    fleet.kubectl_apply(&with_uploads(Some("upload.shop.test"))).await;
    let found = wait_for("the upload host's Ingress", CONVERGE, || async {
        let found = ingresses(&fleet, "shop").await;
        Ok((found.len() == 2).then_some(found))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.log()));
    let upload = found
        .get("shop-upload")
        .unwrap_or_else(|| panic!("shop-upload in {:?}", found.keys()));
    assert_eq!(
        route(upload),
        (
            "upload.shop.test".to_owned(),
            "shop".to_owned(),
            8090,
            Some("shop-upload-tls".to_owned())
        )
    );
    fleet.kubectl_apply(&with_uploads(None)).await;
    wait_for("the upload Ingress to go with its host", CONVERGE, || async {
        let found = ingresses(&fleet, "shop").await;
        Ok((found.len() == 1 && found.contains_key("shop-www.shop.test")).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.log()));

    // Other settings (no TLS, no annotations): the fields they no longer give are taken out.
    if let Some(old) = fleet.operator.take() {
        old.kill().await.expect("stop the operator");
    }
    let plain = ["--ingress", "enabled", "--ingress-class-name", "edge"];
    fleet.operator = Some(fleet.start_operator("ingress-1", &plain).await);
    wait_for("TLS and the annotation to be taken out", CONVERGE, || async {
        let found = ingresses(&fleet, "shop").await;
        let updated = found.get("shop-www.shop.test").is_some_and(|i| {
            route(i).3.is_none() && !i.annotations().contains_key("cert-manager.io/cluster-issuer")
        });
        Ok(updated.then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.log()));

    // Ingresses turned off: the chart keeps only the right to delete them, and the operator does.
    if let Some(old) = fleet.operator.take() {
        old.kill().await.expect("stop the operator");
    }
    let chart = edgefleet_e2e::operator::chart_dir();
    let chart = chart.to_string_lossy();
    let watch = format!("watchNamespace={}", fleet.ns);
    fleet
        .cluster
        .helm(&[
            "upgrade",
            &fleet.release.name,
            &chart,
            "--namespace",
            &fleet.ns,
            "--set",
            "replicaCount=0",
            "--set",
            &watch,
            "--set",
            "ingress.enabled=false",
            "--set",
            "ingress.removeWhenDisabled=true",
        ])
        .await
        .expect("helm runs")
        .ok()
        .expect("helm upgrade");
    let role = fleet
        .api::<Role>()
        .get(&fleet.release.service_account())
        .await
        .expect("the chart's Role");
    let ingress_verbs: Vec<String> = role
        .rules
        .iter()
        .flatten()
        .filter(|r| r.resources.iter().flatten().any(|r| r == "ingresses"))
        .flat_map(|r| r.verbs.clone())
        .collect();
    assert_eq!(ingress_verbs, ["list", "watch", "delete"]);
    fleet.operator = Some(fleet.start_operator("ingress-2", &["--ingress", "remove"]).await);
    wait_for("the Ingresses to be deleted", CONVERGE, || async {
        Ok(ingresses(&fleet, "shop").await.is_empty().then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", fleet.log()));
    // Deleting is all the chart now allows; with aliases still in the spec, nothing comes back.
    fleet
        .kubectl_apply(&aliased_distribution("shop", &["www.shop.test", "new.shop.test"]))
        .await;
    fleet
        .wait_condition("shop", "Ready", "True", "AllRegionsReady")
        .await;
    assert!(ingresses(&fleet, "shop").await.is_empty());
    assert!(!fleet.log().contains("forbidden"), "{}", fleet.log());
}

/// Names of the objects a Distribution `name` with `regions` owns, by kind.
fn expected_objects(name: &str, regions: &[&str]) -> BTreeMap<&'static str, Vec<String>> {
    let regional = |suffix: &[&str]| {
        let mut names: Vec<String> = suffix.iter().map(|r| format!("{name}-{r}")).collect();
        names.sort();
        names
    };
    let mut services = regional(regions);
    services.push(name.to_owned());
    services.sort();
    BTreeMap::from([
        ("ConfigMap", vec![format!("{name}-edge-config")]),
        ("Deployment", regional(regions)),
        ("Ingress", vec![]),
        ("PodDisruptionBudget", regional(regions)),
        ("Role", vec![format!("{name}-edge")]),
        ("RoleBinding", vec![format!("{name}-edge")]),
        ("Secret", vec![format!("{name}-edge")]),
        ("Service", services),
        ("ServiceAccount", vec![format!("{name}-edge")]),
    ])
}

/// A stream of "Kind name" for every object labelled as belonging to `distribution` that
/// appears, over the kinds a pass writes first to last.
fn owned_appearing(fleet: &Fleet, distribution: &str) -> futures::stream::BoxStream<'static, String> {
    let config = watcher::Config::default().labels(&format!("edgefleet.io/distribution={distribution}"));
    macro_rules! appearing {
        ($($kind:ty),*) => {
            vec![$(
                watcher(fleet.api::<$kind>(), config.clone())
                    .applied_objects()
                    .map_ok(|o| format!("{} {}", stringify!($kind), o.name_any()))
                    .filter_map(|r| async move { r.ok() })
                    .boxed(),
            )*]
        };
    }
    futures::stream::select_all(appearing!(
        ServiceAccount,
        Role,
        RoleBinding,
        Secret,
        ConfigMap,
        Service,
        PodDisruptionBudget,
        Deployment
    ))
    .boxed()
}

#[tokio::test]
async fn a_leader_killed_mid_reconcile_is_replaced_and_the_new_leader_converges() {
    let fleet = Fleet::start_with("midkill", &["leaderElection.enabled=true"], None).await;
    let a = fleet.start_operator("replica-a", &["--leader-elect"]).await;
    let b = fleet.start_operator("replica-b", &["--leader-elect"]).await;
    let logs = |operators: &[&Operator]| {
        operators
            .iter()
            .map(|o| o.log())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let leases = Api::<Lease>::namespaced(fleet.client.clone(), &fleet.release.namespace);
    let holder = |leases: Api<Lease>| async move {
        let lease = leases.get_opt(LEASE_NAME).await?;
        Ok::<_, Error>(lease.and_then(|l| l.spec?.holder_identity))
    };
    let leader = wait_for("one replica to hold the Lease", TAKEOVER, || async {
        holder(leases.clone()).await
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&[&a, &b])));
    let (leader, follower, follower_id) = match leader.as_str() {
        "replica-a" => (a, b, "replica-b"),
        "replica-b" => (b, a, "replica-a"),
        other => panic!("the Lease is held by {other:?}, not one of the replicas"),
    };

    // Real edges in 3 regions take seconds to become ready: the window between the first object
    // the leader writes and Ready is wide, and the leader dies inside it.
    let regions = ["eu-west", "us-east", "ap-south"];
    let mut appearing = owned_appearing(&fleet, "mid");
    fleet
        .kubectl_apply(&http_distribution("mid", &regions.map(|r| (r, 1))))
        .await;
    let first = tokio::time::timeout(CONVERGE, appearing.next())
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no owned object appeared\n{}", logs(&[&leader, &follower])));
    leader.kill().await.expect("SIGKILL the leader");
    let killed = std::time::Instant::now();
    drop(appearing);

    let at_kill = fleet.owned("mid").await;
    let dist = fleet.distributions().get("mid").await.expect("Distribution");
    let ready_at_kill = condition(&dist, "Ready").map(|c| c.0);
    eprintln!(
        "leader killed once {first} appeared; {} owned objects of {} existed just after, Ready={ready_at_kill:?}",
        at_kill.values().map(Vec::len).sum::<usize>(),
        expected_objects("mid", &regions)
            .values()
            .map(Vec::len)
            .sum::<usize>(),
    );
    assert_ne!(
        ready_at_kill.as_deref(),
        Some("True"),
        "killed before the Distribution was Ready"
    );

    wait_for("the follower to take the Lease", TAKEOVER, || async {
        let holder = holder(leases.clone()).await?;
        Ok((holder.as_deref() == Some(follower_id)).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&[&follower])));
    eprintln!(
        "{follower_id} took the Lease {:.1}s after the leader was killed",
        killed.elapsed().as_secs_f64()
    );
    let api = fleet.distributions();
    let dist = wait_for("mid: Ready under the new leader", CONVERGE, || async {
        let dist = api.get("mid").await?;
        let observed = dist.data["status"]["observedGeneration"].as_i64();
        let current = observed.is_some() && observed == dist.metadata.generation;
        let ready = condition(&dist, "Ready").is_some_and(|c| c.0 == "True" && c.1 == "AllRegionsReady");
        Ok((current && ready).then_some(dist))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&[&follower])));
    eprintln!(
        "Ready {:.1}s after the leader was killed",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(dist.data["status"]["readyRegions"], "3/3");
    assert!(
        follower
            .metrics()
            .await
            .expect("operator metrics")
            .distribution_passes()
            > 0.0,
        "the new leader reconciled"
    );

    // Every owned object exists, once, controlled by the Distribution, with the spec's replicas.
    let uid = dist.uid().expect("uid");
    let mut owned = fleet.owned("mid").await;
    for names in owned.values_mut() {
        names.sort();
    }
    assert_eq!(owned, expected_objects("mid", &regions));
    let params = ListParams::default().labels("edgefleet.io/distribution=mid");
    let deployments = fleet
        .api::<Deployment>()
        .list(&params)
        .await
        .expect("Deployments");
    for deployment in &deployments.items {
        let owner = deployment
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true))
            .map(|r| r.uid.clone());
        assert_eq!(owner.as_deref(), Some(uid.as_str()), "{}", deployment.name_any());
        let spec = deployment.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(1), "{}", deployment.name_any());
        let status = deployment.status.as_ref().expect("status");
        assert_eq!(status.ready_replicas, Some(1), "{}", deployment.name_any());
    }
    let controlled = [
        fleet.controllers::<Service>(&params).await,
        fleet.controllers::<ConfigMap>(&params).await,
        fleet.controllers::<Secret>(&params).await,
    ];
    for (name, controller) in controlled.concat() {
        assert_eq!(controller.as_deref(), Some(uid.as_str()), "{name}");
    }
    let pods = fleet.api::<Pod>().list(&params).await.expect("pods");
    assert_eq!(
        pods.items.len(),
        3,
        "one edge per region, none left over from the dead leader's pass"
    );
    assert!(!follower.log().contains("forbidden"), "{}", follower.log());
}
