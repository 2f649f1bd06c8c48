//! Issue 4, traffic through the fleets the operator builds: an origin shield that makes the
//! origin see one fetch per object with several edges in every region, a TTL change that reaches running edges without a restart,
//! a Secret that disappears and comes back, two operator replicas of which only the leader
//! writes and the other takes over when it dies, and the zones the EndpointSlices of the
//! Service over every region carry.
//!
//! As in `operator_e2e.rs`, every test has its own namespace, chart release, operator(s) (limited
//! to that namespace with `--watch-namespace`) and pod runner (the edges are real processes).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use edgefleet_e2e::operator::Operator;
use edgefleet_e2e::resources::{CREATE_S3_CREDENTIALS, s3_distribution};
use edgefleet_e2e::setup::condition;
use edgefleet_e2e::traffic::{self, Answer, Edge, Origin};
use edgefleet_e2e::{Error, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

/// Long enough for real edge processes to start on a loaded 2-core machine.
const CONVERGE: Duration = Duration::from_secs(120);
/// The operator's leader Lease lasts 15 s; a follower must have taken it well within 30 s.
const TAKEOVER: Duration = Duration::from_secs(30);
/// Config-only changes must reach running edges within 5 s of being rendered; the margin covers
/// the operator's reconcile on a loaded machine.
const RELOAD: Duration = Duration::from_secs(30);
const LEASE_NAME: &str = "edgefleet-operator-leader";
/// The Host every request names: the cache key includes the host, so requests through
/// different edges (and an edge's fetch through the shield) share objects only under one name.
const HOST: &str = "www.traffic.test";

/// One test's namespace with the chart and, when the test needs edges, the pod runner
/// (`edgefleet_e2e::setup`), plus an HTTP client for the edges.
struct Setup {
    base: edgefleet_e2e::setup::Setup,
    http: reqwest::Client,
}

/// The shared setup's fields and calls; this file's own helpers are added below.
impl std::ops::Deref for Setup {
    type Target = edgefleet_e2e::setup::Setup;

    fn deref(&self) -> &Self::Target {
        &self.base
    }
}

impl Setup {
    async fn start(prefix: &str, chart_values: &[&str], edges: bool) -> Setup {
        Setup {
            base: edgefleet_e2e::setup::Setup::start(prefix, chart_values, edges)
                .await
                .expect("test namespace, chart and pod runner"),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("HTTP client"),
        }
    }

    /// An operator replica reconciling this namespace only.
    async fn operator(&self, identity: &str, extra: &[&str]) -> Operator {
        self.base
            .operator(identity, extra)
            .await
            .expect("operator starts")
    }

    async fn kubectl_apply(&self, manifest: &Value) {
        self.base
            .kubectl_apply(&manifest.to_string())
            .await
            .unwrap_or_else(|e| panic!("kubectl apply failed: {e}"));
    }

    async fn kubectl(&self, args: &[&str]) {
        self.base
            .kubectl(args)
            .await
            .unwrap_or_else(|e| panic!("kubectl {args:?} failed: {e}"));
    }

    /// Merge-patches the Distribution's spec and returns its new generation.
    async fn patch_spec(&self, name: &str, spec: Value) -> i64 {
        let patched = self
            .distributions()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .expect("patch the Distribution");
        patched.metadata.generation.expect("generation")
    }

    /// Waits until the Distribution's current generation has the `type_` condition with
    /// `status` and `reason`; returns its message. The operators' logs go into the failure.
    async fn wait_condition(
        &self,
        name: &str,
        condition: (&str, &str, &str),
        operators: &[&Operator],
    ) -> String {
        or_logs(
            self.base.wait_condition(name, condition, CONVERGE).await,
            operators,
        )
    }

    /// The edge pods of `distribution` in `region`, by name, once `count` of them are ready.
    async fn ready_edges(&self, distribution: &str, region: &str, count: usize) -> Vec<Edge> {
        let selector = format!("edgefleet.io/distribution={distribution},edgefleet.io/region={region}");
        let pods = self.api::<Pod>();
        let edges = wait_for(
            &format!("{count} ready edge(s) in {region}"),
            CONVERGE,
            || async {
                let list = pods.list(&ListParams::default().labels(&selector)).await?;
                let edges: Vec<Edge> = list.items.iter().filter_map(Edge::if_ready).collect();
                Ok((edges.len() == count).then_some(edges))
            },
        )
        .await;
        edges.unwrap_or_else(|e| panic!("{e}"))
    }

    /// GETs `path` from an edge's data port; returns the status, `X-Cache` and
    /// `X-Edge-Location`.
    async fn get(&self, edge: &Edge, path: &str) -> Answer {
        traffic::get(&self.http, edge, HOST, path)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The fleet's admin token, from the Secret the operator renders for the edges.
    async fn admin_token(&self, distribution: &str) -> String {
        traffic::admin_token(&self.api::<Secret>(), distribution)
            .await
            .expect("the edges' admin token")
    }

    /// What an edge reports on its admin API's `/status`.
    async fn status(&self, edge: &Edge, token: &str) -> edgefleet_e2e::Result<Value> {
        traffic::admin_json(&self.http, edge, token, "/status").await
    }

    /// The configuration generation an edge reports on its admin API.
    async fn config_generation(&self, edge: &Edge, token: &str) -> edgefleet_e2e::Result<u64> {
        traffic::config_generation(&self.http, edge, token).await
    }
}

/// Unwraps a wait, or fails the test with what the operators logged.
fn or_logs<T>(result: edgefleet_e2e::Result<T>, operators: &[&Operator]) -> T {
    result.unwrap_or_else(|e| {
        let logs: Vec<String> = operators.iter().map(|o| o.log()).collect();
        panic!("{e}\noperator log(s):\n{}", logs.join("\n-----\n"))
    })
}

/// A Distribution of `origin` (an HTTP URL) over `regions` (name, replicas).
fn http_distribution(name: &str, origin: &str, regions: &[(&str, i32)]) -> Value {
    let regions: Vec<Value> = regions
        .iter()
        .map(|(r, n)| json!({"name": r, "replicas": n}))
        .collect();
    json!({
        "apiVersion": "edgefleet.io/v1alpha1",
        "kind": "Distribution",
        "metadata": {"name": name},
        "spec": {
            "aliases": [HOST],
            "origins": [{"name": "site", "http": {"url": origin}}],
            "defaultBehavior": {"targetOrigin": "site"},
            "regions": regions,
            "edge": {"cacheMemory": "16Mi"}
        }
    })
}

#[tokio::test]
async fn with_an_origin_shield_the_origin_sees_one_fetch_per_object() {
    let setup = Setup::start("shield", &[], true).await;
    let operator = setup.operator("shield-0", &[]).await;
    let origin = Origin::start().await.expect("origin starts");
    // Two edges per region, each with its own cache: the edges send each object to one edge of
    // the shield region, which they learn from the EndpointSlices of its Service.
    let regions = [("eu-west", 2), ("us-east", 2), ("ap-south", 2)];
    let mut manifest = http_distribution("shielded", &origin.url(), &regions);
    manifest["spec"]["originShield"] = json!({"region": "eu-west"});
    setup.kubectl_apply(&manifest).await;
    setup
        .wait_condition("shielded", ("Ready", "True", "AllRegionsReady"), &[&operator])
        .await;

    let mut edges = Vec::new();
    for (region, replicas) in regions {
        let count = usize::try_from(replicas).expect("a replica count");
        for edge in setup.ready_edges("shielded", region, count).await {
            edges.push((region, edge));
        }
    }
    let shield_edges: BTreeSet<String> = edges
        .iter()
        .filter(|(region, _)| *region == "eu-west")
        .map(|(_, edge)| edge.data.to_string())
        .collect();
    // Each edge routes by the list it watches; until every one knows both shield edges (and each
    // shield edge itself), two edges could send one object to different shield edges.
    let token = setup.admin_token("shielded").await;
    for (region, edge) in &edges {
        let view = wait_for(
            &format!(
                "{} ({region}) to know the shield edges {shield_edges:?}",
                edge.name
            ),
            CONVERGE,
            || async {
                let shield = setup.status(edge, &token).await?["originShield"].clone();
                let known: BTreeSet<String> = shield["peers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["address"].as_str().map(str::to_owned))
                    .collect();
                let itself = *region != "eu-west" || shield["selfListed"] == true;
                Ok((known == shield_edges && itself).then_some(shield))
            },
        )
        .await;
        let view = or_logs(view, &[&operator]);
        let role = if *region == "eu-west" { "shield" } else { "outside" };
        assert_eq!(view["role"], role, "{}: {view}", edge.name);
    }

    // Every edge answers Miss, then Hit, except the shield edge that owns the object: unless it
    // was asked first, it already holds the object when asked. Only one Miss reached the origin.
    let mut early_hits = Vec::new();
    for (i, (region, edge)) in edges.iter().enumerate() {
        let (status, first, location) = setup.get(edge, "/shared.txt").await;
        assert_eq!((status, location.as_str()), (200, *region), "{}", edge.name);
        if first == "Hit from edgefleet" {
            early_hits.push((i, *region));
        } else {
            assert_eq!(first, "Miss from edgefleet", "{}", edge.name);
        }
        let (status, second, _) = setup.get(edge, "/shared.txt").await;
        assert_eq!(
            (status, second.as_str()),
            (200, "Hit from edgefleet"),
            "{}",
            edge.name
        );
    }
    assert!(
        early_hits.is_empty() || matches!(early_hits[..], [(i, "eu-west")] if i > 0),
        "only the owning shield edge, asked after another, holds the object before it is asked: \
         {early_hits:?}"
    );
    assert_eq!(origin.requests("/shared.txt").await, 1, "one origin fetch");

    // New objects, each asked of every edge of every region, each time starting with another
    // edge (of the shield region or not): still one origin fetch per object.
    for i in 0..2 * edges.len() {
        let path = format!("/object-{i}.txt");
        for n in 0..edges.len() {
            let (region, edge) = &edges[(i + n) % edges.len()];
            let (status, _, location) = setup.get(edge, &path).await;
            assert_eq!(
                (status, location.as_str()),
                (200, *region),
                "{path} from {}",
                edge.name
            );
        }
        assert_eq!(origin.requests(&path).await, 1, "{path}: one origin fetch");
    }
}

#[tokio::test]
async fn a_ttl_change_reaches_running_edges_without_a_restart() {
    let setup = Setup::start("ttl", &[], true).await;
    let operator = setup.operator("ttl-0", &[]).await;
    let origin = Origin::start().await.expect("origin starts");
    let mut manifest = http_distribution("cached", &origin.url(), &[("us-east", 2)]);
    manifest["spec"]["defaultBehavior"]["ttl"] =
        json!({"minSeconds": 0, "defaultSeconds": 600, "maxSeconds": 86400});
    setup.kubectl_apply(&manifest).await;
    setup
        .wait_condition("cached", ("Ready", "True", "AllRegionsReady"), &[&operator])
        .await;
    let edges = setup.ready_edges("cached", "us-east", 2).await;
    for edge in &edges {
        for expected in ["Miss", "Hit"] {
            let (_, cache, _) = setup.get(edge, "/warm.txt").await;
            assert_eq!(cache, format!("{expected} from edgefleet"), "{}", edge.name);
        }
    }
    let token = setup.admin_token("cached").await;
    let mut before = BTreeMap::new();
    for edge in &edges {
        let generation = setup.config_generation(edge, &token).await.expect("status");
        before.insert(edge.name.clone(), generation);
    }
    let deployment = setup
        .api::<Deployment>()
        .get("cached-us-east")
        .await
        .expect("Deployment");

    let generation = setup
        .patch_spec(
            "cached",
            json!({"defaultBehavior": {"ttl": {"defaultSeconds": 7200}}}),
        )
        .await;
    let changed = Instant::now();
    let config_maps = setup.api::<ConfigMap>();
    or_logs(
        wait_for("the ConfigMap to carry the new TTL", RELOAD, || async {
            let config = config_maps.get("cached-edge-config").await?;
            let yaml = config
                .data
                .and_then(|mut d| d.remove("edge.yaml"))
                .unwrap_or_default();
            Ok(yaml.contains("7200").then_some(()))
        })
        .await,
        &[&operator],
    );
    for edge in &edges {
        let was = before[&edge.name];
        or_logs(
            wait_for(
                &format!("{} to apply a newer configuration", edge.name),
                RELOAD,
                || async {
                    let now = setup.config_generation(edge, &token).await?;
                    Ok((now > was).then_some(()))
                },
            )
            .await,
            &[&operator],
        );
    }
    eprintln!(
        "TTL change applied by every edge {:.1}s after the patch",
        changed.elapsed().as_secs_f64()
    );
    // Reconciled (observedGeneration is the patched generation) before looking for a roll.
    setup
        .wait_condition("cached", ("Ready", "True", "AllRegionsReady"), &[&operator])
        .await;
    let dist = setup.distributions().get("cached").await.expect("Distribution");
    assert_eq!(
        dist.data["status"]["observedGeneration"].as_i64(),
        Some(generation)
    );

    // No restart: the same pods, the same pod template, and the cache is still warm.
    let now = setup.ready_edges("cached", "us-east", 2).await;
    let uids = |edges: &[Edge]| edges.iter().map(|e| e.uid.clone()).collect::<BTreeSet<_>>();
    assert_eq!(uids(&now), uids(&edges), "the edge pods were replaced");
    let after = setup
        .api::<Deployment>()
        .get("cached-us-east")
        .await
        .expect("Deployment");
    assert_eq!(
        after.spec.map(|s| s.template),
        deployment.spec.map(|s| s.template),
        "the pod template changed"
    );
    for edge in &edges {
        let (_, cache, _) = setup.get(edge, "/warm.txt").await;
        assert_eq!(cache, "Hit from edgefleet", "{}", edge.name);
    }
    assert_eq!(
        origin.requests("/warm.txt").await,
        2,
        "one fetch per edge, before the change"
    );
}

#[tokio::test]
async fn a_deleted_origin_secret_degrades_a_running_distribution_until_restored() {
    let setup = Setup::start("secretgone", &[], true).await;
    let operator = setup.operator("secretgone-0", &[]).await;
    setup.kubectl(&CREATE_S3_CREDENTIALS).await;
    let manifest = s3_distribution("bucket", 1);
    setup.kubectl_apply(&manifest).await;
    setup
        .wait_condition("bucket", ("Ready", "True", "AllRegionsReady"), &[&operator])
        .await;
    let running = setup.ready_edges("bucket", "us-east", 1).await;

    setup.kubectl(&["delete", "secret", "files-credentials"]).await;
    let message = setup
        .wait_condition(
            "bucket",
            ("Degraded", "True", "OriginSecretMissing"),
            &[&operator],
        )
        .await;
    assert!(message.contains("\"files-credentials\""), "{message}");
    let dist = setup.distributions().get("bucket").await.expect("Distribution");
    assert_eq!(condition(&dist, "Ready").map(|c| c.0).as_deref(), Some("False"));
    // The running fleet is not torn down while the Secret is missing.
    setup
        .api::<Deployment>()
        .get("bucket-us-east")
        .await
        .expect("the Deployment stays");

    setup.kubectl(&CREATE_S3_CREDENTIALS).await;
    setup
        .wait_condition("bucket", ("Ready", "True", "AllRegionsReady"), &[&operator])
        .await;
    let dist = setup.distributions().get("bucket").await.expect("Distribution");
    assert_eq!(
        condition(&dist, "Degraded").map(|c| c.0).as_deref(),
        Some("False")
    );
    let edges = setup.ready_edges("bucket", "us-east", 1).await;
    assert_eq!(edges[0].uid, running[0].uid, "the edge kept running");
}

#[tokio::test]
async fn only_the_leader_writes_and_a_follower_takes_over_when_it_dies() {
    let setup = Setup::start("leader", &["leaderElection.enabled=true"], false).await;
    let a = setup.operator("replica-a", &["--leader-elect"]).await;
    let b = setup.operator("replica-b", &["--leader-elect"]).await;
    let leases = Api::<Lease>::namespaced(setup.client.clone(), &setup.release.namespace);
    let holder = |leases: Api<Lease>| async move {
        let lease = leases.get_opt(LEASE_NAME).await?;
        Ok::<_, Error>(lease.and_then(|l| l.spec?.holder_identity))
    };
    let leader = or_logs(
        wait_for("one replica to hold the Lease", TAKEOVER, || async {
            holder(leases.clone()).await
        })
        .await,
        &[&a, &b],
    );
    let (leader, follower, leader_id, follower_id) = match leader.as_str() {
        "replica-a" => (a, b, "replica-a", "replica-b"),
        "replica-b" => (b, a, "replica-b", "replica-a"),
        other => panic!("the Lease is held by {other:?}, not one of the replicas"),
    };

    let leader_before = or_logs(leader.metrics().await, &[&leader, &follower]);
    let follower_before = or_logs(follower.metrics().await, &[&leader, &follower]);
    let regions = [("eu-west", 0), ("us-east", 0)];
    setup
        .kubectl_apply(&http_distribution("led", "http://127.0.0.1:9", &regions))
        .await;
    setup
        .wait_condition("led", ("Ready", "True", "AllRegionsReady"), &[&leader, &follower])
        .await;
    let leader_after = or_logs(leader.metrics().await, &[&leader, &follower]);
    let follower_after = or_logs(follower.metrics().await, &[&leader, &follower]);
    assert!(
        leader_after.api_writes() > leader_before.api_writes(),
        "the leader made the Distribution Ready"
    );
    assert_eq!(
        follower_after.api_writes(),
        follower_before.api_writes(),
        "the follower wrote to the API"
    );
    assert_eq!(
        follower_after.distribution_passes(),
        0.0,
        "the follower reconciled"
    );
    assert_eq!(leader_after.value("edgefleet_operator_leader"), 1.0);
    assert_eq!(follower_after.value("edgefleet_operator_leader"), 0.0);
    let events = setup
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("Events");
    let reporters: BTreeSet<String> = events
        .items
        .iter()
        // About the Distribution itself: the Service of the same name has Events from the
        // API server's own controllers.
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("Distribution") && r.name.as_deref() == Some("led")
            })
        })
        .filter_map(|e| e.reporting_instance.clone())
        .collect();
    assert_eq!(
        reporters,
        BTreeSet::from([leader_id.to_owned()]),
        "Events about the Distribution come from the leader only"
    );

    // The leader dies without releasing the Lease; a change made after that is converged by
    // the follower once the Lease has expired.
    leader.kill().await.expect("kill the leader");
    let killed = Instant::now();
    let generation = setup
        .patch_spec(
            "led",
            json!({"regions": [
                {"name": "eu-west", "replicas": 0},
                {"name": "us-east", "replicas": 0},
                {"name": "ap-south", "replicas": 0}
            ]}),
        )
        .await;
    or_logs(
        wait_for("the follower to take the Lease", TAKEOVER, || async {
            let holder = holder(leases.clone()).await?;
            Ok((holder.as_deref() == Some(follower_id)).then_some(()))
        })
        .await,
        &[&follower],
    );
    eprintln!(
        "{follower_id} took the Lease {:.1}s after {leader_id} was killed",
        killed.elapsed().as_secs_f64()
    );
    setup
        .wait_condition("led", ("Ready", "True", "AllRegionsReady"), &[&follower])
        .await;
    let dist = setup.distributions().get("led").await.expect("Distribution");
    assert!(dist.data["status"]["observedGeneration"].as_i64() >= Some(generation));
    setup
        .api::<Deployment>()
        .get("led-ap-south")
        .await
        .expect("the new leader created the added region");
    assert!(or_logs(follower.metrics().await, &[&follower]).distribution_passes() > 0.0);
}

#[tokio::test]
async fn the_service_over_every_region_prefers_close_endpoints_by_zone() {
    let setup = Setup::start("zones", &[], true).await;
    let operator = setup.operator("zones-0", &[]).await;
    let origin = Origin::start().await.expect("origin starts");
    let regions = [("eu-west", 2), ("us-east", 1)];
    setup
        .kubectl_apply(&http_distribution("zoned", &origin.url(), &regions))
        .await;
    setup
        .wait_condition("zoned", ("Ready", "True", "AllRegionsReady"), &[&operator])
        .await;
    let service = setup.api::<Service>().get("zoned").await.expect("Service");
    assert_eq!(
        service.spec.and_then(|s| s.traffic_distribution).as_deref(),
        Some("PreferClose")
    );

    // Every ready edge is an endpoint with its node's zone, and a hint to be used from there.
    let slices = setup.api::<EndpointSlice>();
    let selector = ListParams::default().labels("kubernetes.io/service-name=zoned");
    let endpoints = or_logs(
        wait_for("3 ready endpoints with zone hints", CONVERGE, || async {
            let list = slices.list(&selector).await?;
            let endpoints: Vec<(String, Option<String>, Vec<String>)> = list
                .items
                .iter()
                .flat_map(|s| &s.endpoints)
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .map(|e| {
                    let hints = e.hints.as_ref().and_then(|h| h.for_zones.as_ref());
                    let zones = hints
                        .map(|z| z.iter().map(|z| z.name.clone()).collect())
                        .unwrap_or_default();
                    (e.addresses.join(","), e.zone.clone(), zones)
                })
                .collect();
            let hinted = endpoints.iter().all(|(_, _, hints)| !hints.is_empty());
            Ok((endpoints.len() == 3 && hinted).then_some(endpoints))
        })
        .await,
        &[&operator],
    );
    let mut zones = BTreeSet::new();
    for (address, zone, hints) in &endpoints {
        let zone = zone.as_deref().unwrap_or_else(|| panic!("{address} has no zone"));
        assert_eq!(hints, &[zone.to_owned()], "{address}: hinted for its own zone");
        zones.insert(zone.to_owned());
    }
    assert_eq!(zones.len(), 3, "the endpoints are spread over 3 zones: {zones:?}");
}
