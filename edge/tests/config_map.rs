//! `--config-map NAMESPACE/NAME`: the edge loads its configuration from a ConfigMap of a real
//! Kubernetes API server (the project's local control plane) and follows changes to it without a
//! restart and without emptying its cache.
mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{Edge, Origin, Reply, base_config, eventually};
use edgefleet_e2e::Cluster;
use http::Method;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

fn config_map(name: &str, config: &Value) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            edgefleet_config::CONFIG_MAP_KEY.to_owned(),
            serde_json::to_string_pretty(config).expect("json"),
        )])),
        ..Default::default()
    }
}

async fn generation(edge: &Edge) -> u64 {
    let status: Value =
        serde_json::from_slice(&edge.admin(Method::GET, "/status", None).await.body).expect("json");
    status["generation"].as_u64().expect("generation")
}

/// Starts an edge on `namespace/name` without waiting for it: the listen addresses come from
/// the environment, as they must while no configuration is loaded.
fn launch_from_config_map(
    config_map: &str,
    env: &[(&str, &str)],
    dir: tempfile::TempDir,
    data: std::net::SocketAddr,
    admin: std::net::SocketAddr,
) -> Edge {
    let args = vec!["--config-map".to_owned(), config_map.to_owned()];
    let (data_addr, admin_addr) = (data.to_string(), admin.to_string());
    let mut env = env.to_vec();
    env.extend([
        (edgefleet_config::LISTEN_DATA_ENV, data_addr.as_str()),
        (edgefleet_config::LISTEN_ADMIN_ENV, admin_addr.as_str()),
    ]);
    Edge::launch(&args, &env, dir, data, admin)
}

/// Waits until `/readyz` answers 503 with a text `wanted` accepts, and returns that text.
async fn not_ready_answer(edge: &Edge, what: &str, wanted: impl Fn(&str) -> bool) -> String {
    let mut answer = String::new();
    eventually(Duration::from_secs(20), what, async || {
        let Ok(ready) = edge.admin_request(Method::GET, "/readyz", None, false).await else {
            return false;
        };
        answer = ready.text();
        ready.status == 503 && wanted(&answer)
    })
    .await;
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_follows_its_config_map() {
    let cluster = Cluster::shared().await.expect("local control plane");
    let namespace = cluster.fresh_namespace("edge-cm").await.expect("namespace");
    let api: Api<ConfigMap> = Api::namespaced(cluster.client().await.expect("client"), &namespace);

    let origin = Origin::start().await;
    origin.route("/page", Reply::ok("page"));
    let dir = tempfile::tempdir().expect("dir");
    let (config, data, admin) = Edge::prepare(base_config(&origin.url()), &dir);
    api.create(&PostParams::default(), &config_map("edge", &config))
        .await
        .expect("create ConfigMap");

    let kubeconfig = cluster.kubeconfig().to_string_lossy().into_owned();
    let args = vec!["--config-map".to_owned(), format!("{namespace}/edge")];
    let edge = Edge::spawn(
        &args,
        &[("KUBECONFIG", &kubeconfig), ("EDGEFLEET_REGION", "eu-west")],
        dir,
        data,
        admin,
    )
    .await;
    let first = edge.get("/page").await;
    assert_eq!(first.text(), "page");
    assert_eq!(first.header("x-edge-location"), "eu-west");
    assert!(edge.get("/page").await.x_cache().starts_with("Hit"));
    let start = generation(&edge).await;

    // A TTL change reaches the running edge; the cache stays warm and the new TTL applies.
    let mut changed = config.clone();
    changed["defaultBehavior"]["defaultTtl"] = json!(1);
    let patch = Patch::Apply(config_map("edge", &changed));
    api.patch("edge", &PatchParams::apply("edge-test").force(), &patch)
        .await
        .expect("patch");
    eventually(
        Duration::from_secs(5),
        "the ConfigMap change is applied",
        async || generation(&edge).await > start,
    )
    .await;
    assert!(edge.get("/page").await.x_cache().starts_with("Hit"), "cache kept");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    edge.get("/page").await;
    assert_eq!(origin.hits("/page"), 2, "the new default TTL expired the object");

    // A broken configuration is refused; the edge keeps serving with the last good one.
    let applied = generation(&edge).await;
    let mut broken = changed.clone();
    broken["defaultBehavior"]["targetOrigin"] = json!("nowhere");
    let patch = Patch::Apply(config_map("edge", &broken));
    api.patch("edge", &PatchParams::apply("edge-test").force(), &patch)
        .await
        .expect("patch");
    eventually(
        Duration::from_secs(5),
        "the broken config is rejected",
        async || {
            edge.metric("edgefleet_edge_config_reloads_total{result=\"rejected\"}")
                .await
                .unwrap_or(0.0)
                >= 1.0
        },
    )
    .await;
    assert_eq!(generation(&edge).await, applied);
    assert_eq!(edge.get("/page").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_started_before_its_config_map_waits_for_it_without_exiting() {
    let cluster = Cluster::shared().await.expect("local control plane");
    let namespace = cluster.fresh_namespace("edge-cm-late").await.expect("namespace");
    let api: Api<ConfigMap> = Api::namespaced(cluster.client().await.expect("client"), &namespace);

    let origin = Origin::start().await;
    origin.route("/page", Reply::ok("page"));
    let dir = tempfile::tempdir().expect("dir");
    let (config, data, admin) = Edge::prepare(base_config(&origin.url()), &dir);
    let kubeconfig = cluster.kubeconfig().to_string_lossy().into_owned();
    let mut edge = launch_from_config_map(
        &format!("{namespace}/late"),
        &[("KUBECONFIG", &kubeconfig)],
        dir,
        data,
        admin,
    );

    // Alive but not ready, saying why, while the ConfigMap does not exist.
    let waiting = not_ready_answer(&edge, "the edge answers its probes while it waits", |_| true).await;
    assert!(
        waiting.contains("waiting for configuration") && waiting.contains("not found"),
        "{waiting}"
    );
    let health = edge.admin_request(Method::GET, "/healthz", None, false).await;
    assert_eq!(health.map(|r| r.status.as_u16()), Ok(200));

    api.create(&PostParams::default(), &config_map("late", &config))
        .await
        .expect("create ConfigMap");
    edge.wait_ready().await;
    assert_eq!(edge.get("/page").await.text(), "page");
    assert!(
        edge.log().contains("waiting for it"),
        "the wait is logged:\n{}",
        edge.log()
    );
}

/// Lets ServiceAccount `edge` of `namespace` do `verbs` on `resource`.
async fn grant(cluster: &Cluster, namespace: &str, resource: &str, verbs: &str) {
    let role = format!("edge-{}", resource.replace('.', "-"));
    for args in [
        vec![
            "create",
            "role",
            &role,
            "--verb",
            verbs,
            "--resource",
            resource,
            "-n",
            namespace,
        ],
        vec![
            "create",
            "rolebinding",
            &role,
            "--role",
            &role,
            "--serviceaccount",
            &format!("{namespace}:edge"),
            "-n",
            namespace,
        ],
    ] {
        cluster
            .kubectl(&args)
            .await
            .expect("kubectl")
            .ok()
            .expect("granted");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_is_ready_only_once_it_knows_the_origin_shield_edges() {
    let cluster = Cluster::shared().await.expect("local control plane");
    let namespace = cluster
        .fresh_namespace("edge-shield-wait")
        .await
        .expect("namespace");
    let api: Api<ConfigMap> = Api::namespaced(cluster.client().await.expect("client"), &namespace);
    // The edge's own identity may read its ConfigMap but not yet the shield's EndpointSlices.
    cluster
        .kubectl(&["create", "serviceaccount", "edge", "-n", &namespace])
        .await
        .expect("kubectl")
        .ok()
        .expect("ServiceAccount");
    grant(cluster, &namespace, "configmaps", "get,list,watch").await;
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = dir.path().join("edge.kubeconfig");
    edgefleet_e2e::operator::account_kubeconfig(cluster, &namespace, "edge", &kubeconfig)
        .await
        .expect("kubeconfig");

    let origin = Origin::start().await;
    let (mut config, data, admin) = Edge::prepare(base_config(&origin.url()), &dir);
    config["originShield"] = json!({
        "region": "eu-west",
        "url": "http://127.0.0.1:9",
        "service": {"name": "shield", "port": "http"},
    });
    api.create(&PostParams::default(), &config_map("edge", &config))
        .await
        .expect("create ConfigMap");
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let mut edge = launch_from_config_map(
        &format!("{namespace}/edge"),
        &[("KUBECONFIG", &kubeconfig), ("EDGEFLEET_REGION", "us-east")],
        dir,
        data,
        admin,
    );

    // Configured, but its misses would go to any shield edge: not ready, saying why.
    let waiting = not_ready_answer(&edge, "the edge waits for the shield's EndpointSlices", |text| {
        text.contains("origin shield")
    })
    .await;
    assert!(
        waiting.contains(&format!("the EndpointSlices of Service {namespace}/shield")),
        "{waiting}"
    );

    // Once it may list them (none exist: the shield region has no edge yet), it knows the list.
    grant(
        cluster,
        &namespace,
        "endpointslices.discovery.k8s.io",
        "list,watch",
    )
    .await;
    edge.wait_ready().await;
    let status: Value =
        serde_json::from_slice(&edge.admin(Method::GET, "/status", None).await.body).expect("json");
    assert_eq!(status["originShield"]["peers"], json!([]), "{status}");

    // A reload to another shield Service, which it may not list: a serving edge stays ready (the
    // whole fleet reloads at once) and knows no list until it can.
    cluster
        .kubectl(&[
            "delete",
            "rolebinding",
            "edge-endpointslices-discovery-k8s-io",
            "-n",
            &namespace,
        ])
        .await
        .expect("kubectl")
        .ok()
        .expect("permission revoked");
    let start = generation(&edge).await;
    config["originShield"]["service"]["name"] = json!("other-shield");
    let patch = Patch::Apply(config_map("edge", &config));
    api.patch("edge", &PatchParams::apply("edge-test").force(), &patch)
        .await
        .expect("patch");
    eventually(Duration::from_secs(5), "the new shield is applied", async || {
        generation(&edge).await > start
    })
    .await;
    let status: Value =
        serde_json::from_slice(&edge.admin(Method::GET, "/status", None).await.body).expect("json");
    assert_eq!(status["originShield"]["peers"], Value::Null, "{status}");
    let ready = edge
        .admin_request(Method::GET, "/readyz", None, false)
        .await
        .expect("readyz answers");
    assert_eq!(ready.status.as_u16(), 200, "{}", ready.text());
}
