//! The images run as real pods under a real kubelet, container runtime and kube-proxy.
//!
//! The cluster of [`Cluster::with_real_nodes`] has a real node (containerd, runc, CNI bridge,
//! kubelet, kube-proxy in nftables mode, all built from their Go modules) in zone `eu-west-a`,
//! and simulated nodes everywhere else. Every test installs the chart with the built images, and
//! its Deployment runs the operator as a pod on the real node (`helm --wait`: probes, RBAC,
//! leader election and a read-only root filesystem all real). A Distribution with region
//! `eu-west` gets an edge on the real node (a container started by the kubelet from the edge
//! image and the rendered pod spec) and one on a simulated node (the pod runner's process).
//!
//! What is tested: the node and the operator pod themselves; real edges serving, reloading a
//! changed ConfigMap without a restart, refusing writes to `/` and running as 65532; a purge
//! acknowledged by real and simulated edges alike; a killed edge restarted by the kubelet with
//! its disk cache; `trafficDistribution: PreferClose` keeping a client on the real node in its
//! zone through kube-proxy, and falling back when its zone has no ready edge.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use edgefleet_e2e::cluster::{Cluster, REAL_NODE_ZONES, RealNode};
use edgefleet_e2e::images::Images;
use edgefleet_e2e::operator::Samples;
use edgefleet_e2e::setup::Setup;
use edgefleet_e2e::traffic::{self, Edge, Origin};
use edgefleet_e2e::wait_for;
use edgefleet_operator::api::reasons;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

/// Long enough for containers to start on a loaded 2-core machine.
const CONVERGE: Duration = Duration::from_secs(180);
const HOST: &str = "www.real.test";
const REAL_ZONE: &str = REAL_NODE_ZONES[0];
const SIMULATED_ZONE: &str = "eu-west-b";

/// The real node of [`REAL_ZONE`].
fn real_node(cluster: &Cluster) -> &RealNode {
    cluster
        .real_nodes()
        .iter()
        .find(|node| node.zone == REAL_ZONE)
        .expect("the cluster has a real node in eu-west-a")
}

/// The origin where edges on the real node can reach it: the cluster's host address.
async fn origin(cluster: &Cluster) -> Origin {
    Origin::start_on(cluster.host_ip().expect("the cluster's host address"))
        .await
        .expect("origin starts")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client")
}

/// A Distribution of `origin` with `replicas` edges in `eu-west` (one per zone: the real and the
/// simulated one), and whatever `edge` adds to `spec.edge`.
fn distribution(name: &str, origin: &str, replicas: i32, edge: Value) -> String {
    let mut spec_edge = json!({"cacheMemory": "16Mi"});
    if let (Some(base), Some(extra)) = (spec_edge.as_object_mut(), edge.as_object()) {
        base.extend(extra.clone());
    }
    json!({
        "apiVersion": "edgefleet.io/v1alpha1",
        "kind": "Distribution",
        "metadata": {"name": name},
        "spec": {
            "aliases": [HOST],
            "origins": [{"name": "site", "http": {"url": origin}}],
            "defaultBehavior": {"targetOrigin": "site"},
            "regions": [{"name": "eu-west", "replicas": replicas}],
            "edge": spec_edge
        }
    })
    .to_string()
}

async fn setup(prefix: &str) -> Setup {
    // Leader election on, as with more than one replica: the Lease is taken from the pod.
    Setup::with_operator_pod(prefix, &["leaderElection.enabled=true"])
        .await
        .expect("namespace, chart with the operator pod, pod runner")
}

/// The ready edges of `distribution`, once there are `count`, by zone of their node.
async fn ready_edges(setup: &Setup, distribution: &str, count: usize) -> BTreeMap<String, Edge> {
    let selector = format!("edgefleet.io/distribution={distribution}");
    let pods = setup.api::<Pod>();
    let nodes: Api<Node> = Api::all(setup.client.clone());
    let edges = wait_for(
        &format!("{count} ready edges of {distribution}"),
        CONVERGE,
        || async {
            let list = pods.list(&ListParams::default().labels(&selector)).await?;
            let ready: Vec<Edge> = list.items.iter().filter_map(Edge::if_ready).collect();
            if ready.len() != count {
                return Ok(None);
            }
            let mut by_zone = BTreeMap::new();
            for edge in ready {
                let node = nodes.get(&edge.node).await?;
                let zone = node.labels().get("topology.kubernetes.io/zone").cloned();
                by_zone.insert(zone.unwrap_or_default(), edge);
            }
            Ok(Some(by_zone))
        },
    )
    .await;
    or_describe(setup, edges).await
}

use kube::ResourceExt;

/// `kubectl get pods,events -o wide` of the test's namespace, for failure messages.
async fn describe(setup: &Setup) -> String {
    let pods = setup
        .kubectl(&["get", "pods", "-o", "wide"])
        .await
        .map(|o| o.stdout)
        .unwrap_or_default();
    let events = setup
        .kubectl(&["get", "events", "--sort-by=.lastTimestamp"])
        .await
        .map(|o| o.stdout)
        .unwrap_or_default();
    format!("pods:\n{pods}\nevents:\n{events}")
}

/// The value, or a failure with the namespace's pods and events.
async fn or_describe<T>(setup: &Setup, result: edgefleet_e2e::Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{error}\n{}", describe(setup).await),
    }
}

async fn wait_ready(setup: &Setup, name: &str) {
    if let Err(error) = setup
        .wait_condition(name, ("Ready", "True", "AllRegionsReady"), CONVERGE)
        .await
    {
        let dist = setup
            .kubectl(&["get", "dist", name, "-o", "yaml"])
            .await
            .map(|o| o.stdout)
            .unwrap_or_default();
        panic!("{error}\n{dist}\n{}", describe(setup).await);
    }
}

/// The container of a pod as the node runs it: its id (from the pod's status) and host pid.
async fn container_pid(node: &RealNode, pod: &Pod) -> u32 {
    let id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.container_id.as_deref())
        .and_then(|id| id.strip_prefix("containerd://"))
        .expect("a running containerd container")
        .to_owned();
    // ctr ships with containerd (tools.sh builds both).
    let containerd = edgefleet_e2e::tools::tool("containerd")
        .await
        .expect("containerd");
    let ctr = containerd.with_file_name("ctr");
    let tasks = command(
        &ctr.to_string_lossy(),
        &[
            "--address",
            &node.containerd.to_string_lossy(),
            "-n",
            "k8s.io",
            "tasks",
            "ls",
        ],
    )
    .await;
    tasks
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(id.as_str())).then(|| fields.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("container {id} is not among the node's tasks:\n{tasks}"))
}

/// The bytes the files under `dir` take on disk (not their apparent sizes: sparse files grow
/// as they are written).
fn allocated_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .map(|meta| if meta.is_dir() { 0 } else { meta.blocks() * 512 })
        .sum()
}

/// Runs a command to success and returns its stdout.
async fn command(program: &str, args: &[&str]) -> String {
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An HTTP GET from inside the real node's network namespace, as a client on that node sends it
/// (its packets go through the node's kube-proxy); returns the body.
async fn get_from_node(node: &RealNode, url: &str) -> String {
    command(
        "nsenter",
        &[
            &format!("--net=/run/netns/{}", node.netns),
            "--",
            "curl",
            "-sf",
            "--max-time",
            "10",
            "-H",
            &format!("Host: {HOST}"),
            url,
        ],
    )
    .await
}

/// Viewer requests an edge counted, from its admin API's metrics.
async fn requests_counted(http: &reqwest::Client, edge: &Edge, token: &str) -> f64 {
    let text = http
        .get(format!("http://{}/metrics", edge.admin))
        .bearer_auth(token)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("edge metrics")
        .text()
        .await
        .expect("edge metrics text");
    Samples::parse(&text).total("edgefleet_edge_requests_total")
}

#[tokio::test]
async fn the_real_node_runs_containerd_under_its_zone_labels() {
    let cluster = Cluster::with_real_nodes()
        .await
        .expect("cluster with a real node");
    let node = real_node(cluster);
    let nodes: Api<Node> = Api::all(cluster.client().await.expect("client"));
    let live = nodes.get(&node.name).await.expect("the real node is registered");
    let labels = live.labels();
    assert_eq!(
        labels.get("topology.kubernetes.io/region").map(String::as_str),
        Some("eu-west")
    );
    assert_eq!(
        labels.get("topology.kubernetes.io/zone").map(String::as_str),
        Some(REAL_ZONE)
    );
    let info = live.status.and_then(|s| s.node_info).expect("node info");
    assert!(
        info.container_runtime_version.starts_with("containerd://2."),
        "{}",
        info.container_runtime_version
    );
    assert_eq!(info.kubelet_version, "v1.35.4");
    let wide = cluster
        .kubectl(&["get", "nodes", "-o", "wide"])
        .await
        .expect("kubectl get nodes")
        .stdout;
    let line = wide
        .lines()
        .find(|l| l.starts_with(&node.name))
        .unwrap_or_else(|| panic!("{} not listed:\n{wide}", node.name));
    assert!(
        line.contains(" Ready ") && line.contains("containerd://"),
        "{line}"
    );
    // The simulated nodes it replaces are gone; the other zone of the region is still simulated.
    let simulated = nodes
        .list(&ListParams::default().labels("edgefleet.io/simulated=true"))
        .await
        .expect("nodes");
    let zones: Vec<String> = simulated
        .items
        .iter()
        .filter_map(|n| n.labels().get("topology.kubernetes.io/zone").cloned())
        .collect();
    assert!(!zones.iter().any(|z| z == REAL_ZONE), "{zones:?}");
    assert!(zones.iter().any(|z| z == SIMULATED_ZONE), "{zones:?}");
}

#[tokio::test]
async fn the_chart_runs_the_operator_pod_whose_real_edges_serve_reload_and_purge() {
    let setup = setup("real-edges").await;
    let node = real_node(setup.cluster);
    let images = Images::built().await.expect("images");

    // The chart's Deployment is Ready with its pod on the real node, and that pod leads.
    let deployments = setup.api::<Deployment>();
    let operator = deployments
        .get(&setup.release.service_account())
        .await
        .expect("the chart's operator Deployment");
    let status = operator.status.clone().unwrap_or_default();
    assert_eq!(status.ready_replicas, Some(1), "{status:?}");
    let pods = setup.api::<Pod>();
    let operator_pods = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=edgefleet-operator"))
        .await
        .expect("operator pods");
    let operator_pod = operator_pods.items.first().expect("an operator pod");
    let spec = operator_pod.spec.as_ref().expect("pod spec");
    if spec.node_name.as_deref() != Some(node.name.as_str()) {
        panic!(
            "the operator pod is not on {}\n{}",
            node.name,
            describe(&setup).await
        );
    }
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some(images.reference("operator").expect("operator image"))
    );
    let lease = wait_for("the operator pod to hold the leader Lease", CONVERGE, || async {
        let lease = setup.api::<Lease>().get_opt("edgefleet-operator-leader").await?;
        Ok(lease
            .and_then(|l| l.spec?.holder_identity)
            .filter(|holder| holder == &operator_pod.name_any()))
    })
    .await;
    or_describe(&setup, lease).await;

    // A Distribution with an edge in each zone of eu-west: the real one runs as a container.
    let origin = origin(setup.cluster).await;
    setup
        .kubectl_apply(&distribution("site", &origin.url(), 2, json!({})))
        .await
        .expect("apply");
    wait_ready(&setup, "site").await;
    let edges = ready_edges(&setup, "site", 2).await;
    let real = &edges[REAL_ZONE];
    let simulated = &edges[SIMULATED_ZONE];
    assert_eq!(real.node, node.name);
    let real_pod = pods.get(&real.name).await.expect("the real edge pod");
    let container = &real_pod.spec.as_ref().expect("spec").containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(images.reference("edge").expect("edge image"))
    );

    // Non-root, and `/` is read-only: even the host's root cannot write through its mount.
    let pid = container_pid(node, &real_pod).await;
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let uid_line = proc_status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    assert!(
        uid_line.split_whitespace().skip(1).all(|uid| uid == "65532"),
        "{uid_line}"
    );
    let write = std::fs::write(format!("/proc/{pid}/root/probe"), b"x");
    assert_eq!(
        write.map_err(|e| e.raw_os_error()),
        Err(Some(30)),
        "writing to the edge's / must fail with EROFS"
    );

    // Both edges serve: a Miss, then a Hit.
    let http = http();
    for edge in [real, simulated] {
        let first = traffic::get(&http, edge, HOST, "/page.html").await.expect("GET");
        let second = traffic::get(&http, edge, HOST, "/page.html").await.expect("GET");
        assert_eq!(
            first,
            (200, "Miss from edgefleet".into(), "eu-west".into()),
            "{}",
            edge.name
        );
        assert_eq!(
            second,
            (200, "Hit from edgefleet".into(), "eu-west".into()),
            "{}",
            edge.name
        );
    }

    // A config-only change reaches the real container without a restart.
    let token = traffic::admin_token(&setup.api::<Secret>(), "site")
        .await
        .expect("token");
    let before = traffic::config_generation(&http, real, &token)
        .await
        .expect("generation");
    setup
        .distributions()
        .patch(
            "site",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"defaultBehavior": {"ttl": {"minSeconds": 0, "defaultSeconds": 120, "maxSeconds": 3600}}}})),
        )
        .await
        .expect("patch the TTL");
    let reloaded = wait_for("the real edge to load the new config", CONVERGE, || async {
        let now = traffic::config_generation(&http, real, &token).await?;
        Ok((now > before).then_some(now))
    })
    .await;
    or_describe(&setup, reloaded).await;
    let restarted = pods.get(&real.name).await.expect("pod");
    let restarts = restarted
        .status
        .and_then(|s| s.container_statuses)
        .map(|c| c[0].restart_count);
    assert_eq!(restarts, Some(0), "the edge was not restarted");

    // A purge reaches the real and the simulated edge: both acknowledge, both miss afterwards.
    setup
        .kubectl_apply(
            &json!({
                "apiVersion": "edgefleet.io/v1alpha1",
                "kind": "Invalidation",
                "metadata": {"name": "purge-page"},
                "spec": {"distribution": "site", "paths": ["/page.html"]}
            })
            .to_string(),
        )
        .await
        .expect("apply the Invalidation");
    let invalidations = edgefleet_e2e::resources::invalidations(setup.client.clone(), &setup.ns);
    let done = wait_for("the Invalidation to complete", CONVERGE, || async {
        let inval = invalidations.get("purge-page").await?;
        let status = &inval.data["status"];
        Ok((status["phase"] == "Completed").then(|| status.clone()))
    })
    .await;
    let done = or_describe(&setup, done).await;
    assert_eq!(
        (done["edgesAcknowledged"].as_i64(), done["edgesTotal"].as_i64()),
        (Some(2), Some(2)),
        "{done}"
    );
    for edge in [real, simulated] {
        let after = traffic::get(&http, edge, HOST, "/page.html").await.expect("GET");
        assert_eq!(after.1, "Miss from edgefleet", "{} after the purge", edge.name);
    }
}

#[tokio::test]
async fn edge_images_that_cannot_be_pulled_or_run_are_the_distribution_s_reason_until_fixed() {
    let setup = setup("real-bad-image").await;
    let images = Images::built().await.expect("images");
    let origin = origin(setup.cluster).await;
    // Only the real zone: there the kubelet pulls and runs the image.
    let on_real_node = |name: &str, image: &str| {
        let mut manifest: Value =
            serde_json::from_str(&distribution(name, &origin.url(), 1, json!({"image": image})))
                .expect("JSON");
        manifest["spec"]["regions"][0]["zones"] = json!([REAL_ZONE]);
        manifest.to_string()
    };
    // No registry serves this one; the operator's image runs, and exits at once on the edge's
    // arguments (a usage error).
    let cases = [
        (
            "unpullable",
            "localhost/edgefleet/no-such-edge:1",
            reasons::EDGE_IMAGE_PULL_FAILED,
        ),
        (
            "crashing",
            images.reference("operator").expect("operator image"),
            reasons::EDGE_CRASH_LOOPING,
        ),
    ];
    for (name, image, _) in &cases {
        setup
            .kubectl_apply(&on_real_node(name, image))
            .await
            .expect("apply");
    }
    for (name, image, reason) in &cases {
        let message = setup
            .wait_condition(name, ("Degraded", "True", reason), CONVERGE)
            .await;
        let message = or_describe(&setup, message).await;
        assert!(
            message.contains(image) && message.contains("eu-west"),
            "{message}"
        );
        let ready = setup
            .wait_condition(name, ("Ready", "False", reason), CONVERGE)
            .await;
        or_describe(&setup, ready).await;
        let event = setup.wait_event(name, ("Warning", reason), CONVERGE).await;
        or_describe(&setup, event).await;
        assert_eq!(
            setup.printed_reason(name).await.expect("kubectl get dist"),
            *reason
        );
    }

    // Back to the chart's edge image: both recover.
    for (name, _, _) in &cases {
        setup
            .distributions()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"edge": {"image": null}}})),
            )
            .await
            .expect("patch the image");
    }
    for (name, _, _) in &cases {
        wait_ready(&setup, name).await;
        let healthy = setup
            .wait_condition(name, ("Degraded", "False", "AsExpected"), CONVERGE)
            .await;
        or_describe(&setup, healthy).await;
    }
}

#[tokio::test]
async fn a_killed_edge_is_restarted_by_the_kubelet_and_serves_from_its_disk_cache() {
    let setup = setup("real-restart").await;
    let node = real_node(setup.cluster);
    let origin = origin(setup.cluster).await;
    let manifest = distribution("disk", &origin.url(), 1, json!({"cacheDisk": "64Mi"}));
    let mut manifest: Value = serde_json::from_str(&manifest).expect("JSON");
    // Only the real zone: this test is about the kubelet's restart.
    manifest["spec"]["regions"][0]["zones"] = json!([REAL_ZONE]);
    setup.kubectl_apply(&manifest.to_string()).await.expect("apply");
    wait_ready(&setup, "disk").await;
    let edge = ready_edges(&setup, "disk", 1)
        .await
        .remove(REAL_ZONE)
        .expect("an edge on the real node");
    let pods = setup.api::<Pod>();
    let pod = pods.get(&edge.name).await.expect("pod");
    let pid = container_pid(node, &pod).await;
    // The disk tier (the pod's emptyDir, seen through the container's root) writes behind the
    // fill into a sparse file: the object is on disk once the file's allocated size grows.
    let blocks = std::path::PathBuf::from(format!("/proc/{pid}/root/var/cache/edgefleet/blocks"));
    let before = allocated_bytes(&blocks);
    let http = http();
    let fill = traffic::get(&http, &edge, HOST, "/kept.html").await.expect("GET");
    assert_eq!(fill.1, "Miss from edgefleet");
    assert_eq!(origin.requests("/kept.html").await, 1);
    let written = wait_for("the disk tier to write the object", CONVERGE, || async {
        Ok((allocated_bytes(&blocks) > before).then_some(()))
    })
    .await;
    or_describe(&setup, written).await;

    command("kill", &["-KILL", &pid.to_string()]).await;

    let restarted = wait_for("the kubelet to restart the edge", CONVERGE, || async {
        let pod = pods.get(&edge.name).await?;
        let status = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first().cloned());
        Ok(status.filter(|c| c.restart_count >= 1 && c.ready).map(|_| pod))
    })
    .await;
    let restarted = or_describe(&setup, restarted).await;
    assert_eq!(
        restarted.metadata.uid.as_deref(),
        Some(edge.uid.as_str()),
        "the same pod"
    );
    let after = traffic::get(&http, &edge, HOST, "/kept.html").await.expect("GET");
    assert_eq!(
        after,
        (200, "Hit from edgefleet".into(), "eu-west".into()),
        "served from the disk cache"
    );
    assert_eq!(origin.requests("/kept.html").await, 1, "no second origin fetch");
}

#[tokio::test]
async fn prefer_close_keeps_a_real_node_client_in_its_zone_and_falls_back_when_none_is_ready() {
    let setup = setup("real-zones").await;
    let node = real_node(setup.cluster);
    let origin = origin(setup.cluster).await;
    setup
        .kubectl_apply(&distribution("zoned", &origin.url(), 2, json!({})))
        .await
        .expect("apply");
    wait_ready(&setup, "zoned").await;
    let edges = ready_edges(&setup, "zoned", 2).await;
    let service = setup.api::<Service>().get("zoned").await.expect("Service");
    let cluster_ip = service.spec.and_then(|s| s.cluster_ip).expect("ClusterIP");
    let url = format!("http://{cluster_ip}/zone.html");
    let http = http();
    let token = traffic::admin_token(&setup.api::<Secret>(), "zoned")
        .await
        .expect("token");

    // kube-proxy on the real node learns the endpoints and their hints; then every request from
    // the node goes to the edge in its own zone.
    let real = &edges[REAL_ZONE];
    let simulated = &edges[SIMULATED_ZONE];
    let counts = |edges: Vec<Edge>| {
        let http = http.clone();
        let token = token.clone();
        async move {
            let mut counts = Vec::new();
            for edge in &edges {
                counts.push(requests_counted(&http, edge, &token).await);
            }
            counts
        }
    };
    kube_proxy_routes_to(&setup, node, "zoned", &[real.data.ip()]).await;
    let body = get_from_node(node, &url).await;
    assert!(body.contains("/zone.html"), "{body}");
    let before = counts(vec![real.clone(), simulated.clone()]).await;
    for _ in 0..20 {
        get_from_node(node, &url).await;
    }
    let after = counts(vec![real.clone(), simulated.clone()]).await;
    assert_eq!(
        (after[0] - before[0], after[1] - before[1]),
        (20.0, 0.0),
        "all 20 requests from {REAL_ZONE} reach the edge in {REAL_ZONE}"
    );

    // No ready edge in the real zone any more (the node cordoned, its edge deleted: the
    // replacement cannot be placed): the client falls back to the other zone's edge.
    setup
        .cluster
        .kubectl(&["cordon", &node.name])
        .await
        .and_then(|o| o.ok())
        .expect("cordon");
    let uncordon = Uncordon {
        cluster: setup.cluster,
        node: node.name.clone(),
    };
    setup
        .api::<Pod>()
        .delete(&real.name, &DeleteParams::default())
        .await
        .expect("delete the real edge");
    kube_proxy_routes_to(&setup, node, "zoned", &[simulated.data.ip()]).await;
    let before = counts(vec![simulated.clone()]).await[0];
    for _ in 0..10 {
        get_from_node(node, &url).await;
    }
    let after = counts(vec![simulated.clone()]).await[0];
    assert_eq!(
        after - before,
        10.0,
        "every request falls back to {SIMULATED_ZONE}"
    );
    drop(uncordon);
}

/// Waits until kube-proxy on `node` sends the Service `service` of the test's namespace to
/// exactly the pod addresses `expected`, as its nftables rules say (the endpoint chains the
/// Service's chain jumps to, `endpoint-<hash>-<ns>/<service>/tcp/<port>__<ip>/<port>`).
async fn kube_proxy_routes_to(setup: &Setup, node: &RealNode, service: &str, expected: &[IpAddr]) {
    let expected: BTreeSet<String> = expected.iter().map(ToString::to_string).collect();
    let routed = wait_for(
        &format!("kube-proxy on {} to send {service} to {expected:?}", node.name),
        CONVERGE,
        || async {
            let rules = command(
                "nsenter",
                &[
                    &format!("--net=/run/netns/{}", node.netns),
                    "--",
                    "nft",
                    "list",
                    "table",
                    "ip",
                    "kube-proxy",
                ],
            )
            .await;
            Ok(Some(()).filter(|()| service_endpoints(&rules, &setup.ns, service) == expected))
        },
    )
    .await;
    or_describe(setup, routed).await;
}

/// The endpoint addresses the chains of Service `namespace/service` jump to, in kube-proxy's
/// `nft list table` output.
fn service_endpoints(rules: &str, namespace: &str, service: &str) -> BTreeSet<String> {
    let name = format!("-{namespace}/{service}/tcp/");
    let mut endpoints = BTreeSet::new();
    let mut in_service_chain = false;
    for line in rules.lines().map(str::trim) {
        if let Some(chain) = line.strip_prefix("chain ") {
            in_service_chain = chain.starts_with("service-") && chain.contains(&name);
        } else if in_service_chain {
            for target in line.split("goto ").skip(1) {
                if let Some((_, address)) = target.split_once("__") {
                    endpoints.extend(address.split('/').next().map(str::to_owned));
                }
            }
        }
    }
    endpoints
}

/// Uncordons a node when dropped, so a failing test leaves the shared node schedulable.
struct Uncordon<'a> {
    cluster: &'a Cluster,
    node: String,
}

impl Drop for Uncordon<'_> {
    fn drop(&mut self) {
        let status = std::process::Command::new(self.cluster.kubectl_path())
            .arg("--kubeconfig")
            .arg(self.cluster.kubeconfig())
            .args(["uncordon", &self.node])
            .stdout(Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("could not uncordon {}", self.node);
        }
    }
}
