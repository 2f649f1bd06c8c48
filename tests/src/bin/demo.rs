//! The main job: a local control plane with a real node (containerd, kubelet, kube-proxy) in
//! `eu-west-a` and simulated regional nodes elsewhere, the container images built here, the chart
//! installed with `helm` (its Deployment runs the operator as a pod on the real node), a real S3
//! store holding a sample site, and `examples/distribution.yaml` (3 regions) serving it: edges in
//! `eu-west-a` are containers on the real node, the others real processes the pod runner starts
//! for the simulated nodes.
//!
//! `cargo run -p edgefleet-e2e --bin demo` — stays up until Ctrl-C. `--once` stops after showing
//! the first requests (used by the test that keeps this command working).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use edgefleet_e2e::cluster::REAL_NODE_ZONES;
use edgefleet_e2e::images::Images;
use edgefleet_e2e::operator::install_chart_with_operator;
use edgefleet_e2e::pods::{PodRunner, PodRunnerConfig};
use edgefleet_e2e::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use edgefleet_e2e::{Cluster, answer, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams};

const NAMESPACE: &str = "demo";
const DISTRIBUTION: &str = "site";
const HOST: &str = "www.example.test";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let once = std::env::args().any(|a| a == "--once");
    step("building the container images (first run: the pinned tools, ~20 min, then a release build)");
    let images = Images::built().await?;
    step(&format!(
        "starting the local control plane, with a real node in {} (containerd, kubelet, kube-proxy)",
        REAL_NODE_ZONES.join(", ")
    ));
    let cluster = Cluster::with_real_nodes().await?;

    step("starting the S3 store and uploading examples/site to bucket 'site'");
    let s3 = S3Server::start_on(cluster.host_ip()?).await?;
    s3.create_bucket("site").await?;
    let site = repo("examples/site");
    s3.aws(&["s3", "cp", "--recursive", &site.to_string_lossy(), "s3://site/"])
        .await?
        .ok()?;

    step(
        "helm install edgefleet charts/edgefleet -n edgefleet-system --wait (the operator runs as a pod on the real node)",
    );
    cluster
        .kubectl(&["create", "namespace", "edgefleet-system"])
        .await?
        .ok()?;
    install_chart_with_operator(cluster, "edgefleet", "edgefleet-system", &[]).await?;
    println!(
        "{}",
        cluster
            .kubectl(&["-n", "edgefleet-system", "get", "deploy,pods", "-o", "wide"])
            .await?
            .ok()?
            .stdout
    );

    step("simulated nodes: the pod runner starts their edge pods as processes (the same release build)");
    let _runner = PodRunner::start(
        cluster,
        PodRunnerConfig::all_namespaces().image("ghcr.io/edgefleet/edge", images.binary("edgefleet-edge")),
    )
    .await?;

    step("kubectl apply -f examples/origin-credentials.yaml -f examples/distribution.yaml");
    cluster.kubectl(&["create", "namespace", NAMESPACE]).await?.ok()?;
    cluster
        .kubectl(&[
            "create",
            "secret",
            "generic",
            "site-origin",
            "-n",
            NAMESPACE,
            &format!("--from-literal=AWS_ACCESS_KEY_ID={ACCESS_KEY}"),
            &format!("--from-literal=AWS_SECRET_ACCESS_KEY={SECRET_KEY}"),
        ])
        .await?
        .ok()?;
    let manifest = distribution_for(&s3.endpoint())?;
    cluster
        .kubectl_with_stdin(&["apply", "-n", NAMESPACE, "-f", "-"], &manifest)
        .await?
        .ok()?;

    step("waiting for the Distribution to be Ready in every region");
    let client = cluster.client().await?;
    let dists: Api<DynamicObject> = edgefleet_e2e::resources::distributions(client.clone(), NAMESPACE);
    let ready = wait_for("Distribution site Ready", Duration::from_secs(180), || async {
        let dist = dists.get(DISTRIBUTION).await?;
        let conditions = dist.data["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
            .then_some(dist))
    })
    .await;
    let dist = match ready {
        Ok(dist) => dist,
        Err(error) => {
            let status = cluster
                .kubectl(&["get", "dist", DISTRIBUTION, "-n", NAMESPACE, "-o", "yaml"])
                .await?;
            let log = cluster
                .kubectl(&["-n", "edgefleet-system", "logs", "deploy/edgefleet", "--tail=100"])
                .await?;
            bail!(
                "{error}\n{}\noperator log:\n{}{}",
                status.stdout,
                log.stdout,
                log.stderr
            );
        }
    };
    println!(
        "{}",
        cluster.kubectl(&["get", "dist", "-n", NAMESPACE]).await?.stdout
    );

    let pods: Api<Pod> = Api::namespaced(client, NAMESPACE);
    let regions: Vec<String> = dist.data["spec"]["regions"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let real_nodes: Vec<&str> = cluster.real_nodes().iter().map(|n| n.name.as_str()).collect();
    let http = reqwest::Client::new();
    for region in &regions {
        let selector = format!("edgefleet.io/distribution={DISTRIBUTION},edgefleet.io/region={region}");
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        // (pod, node, ip, on a real node), real ones first: those are the ones asked.
        let mut edges: Vec<(String, String, String, bool)> = list
            .items
            .iter()
            .filter_map(|p| {
                let node = p.spec.as_ref()?.node_name.clone()?;
                let ip = p.status.as_ref()?.pod_ip.clone()?;
                let real = real_nodes.contains(&node.as_str());
                Some((p.metadata.name.clone()?, node, ip, real))
            })
            .collect();
        edges.sort_by_key(|(_, _, _, real)| !real);
        let Some((_, _, ip, _)) = edges.first() else {
            bail!("region {region} has no edge pod with an IP")
        };
        println!("\nregion {region}:");
        for (pod, node, ip, real) in &edges {
            let kind = if *real {
                "real node: a containerd container"
            } else {
                "simulated node: a process"
            };
            println!("  edge {pod} on {node} ({kind}) at http://{ip}:8080");
        }
        println!("  curl -si -H 'Host: {HOST}' http://{ip}:8080/");
        for attempt in 1..=2 {
            let response = http
                .get(format!("http://{ip}:8080/"))
                .header("host", HOST)
                .send()
                .await
                .with_context(|| format!("request to the {region} edge"))?;
            let header = |name: &str| answer::header(&response, name);
            let line = format!(
                "  request {attempt}: {}  X-Cache: {}  X-Edge-Location: {}  Age: {}",
                response.status(),
                header("x-cache"),
                header("x-edge-location"),
                header("age")
            );
            // The whole body, as curl reads it: the next request then finds the fill finished
            // (asked while it streams, it would join the fill and be a Miss too).
            response
                .bytes()
                .await
                .with_context(|| format!("the body from the {region} edge"))?;
            println!("{line}");
        }
    }

    if once {
        return Ok(());
    }
    step(&format!(
        "up. kubectl: export KUBECONFIG={}   (Ctrl-C stops everything)",
        cluster.kubeconfig().display()
    ));
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// `examples/distribution.yaml` with its S3 endpoint pointed at the local store.
fn distribution_for(endpoint: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(repo("examples/distribution.yaml"))?;
    let mut manifest: serde_json::Value = serde_yaml::from_str(&text)?;
    manifest["spec"]["origins"][0]["s3"]["endpoint"] = serde_json::Value::String(endpoint.to_owned());
    Ok(serde_json::to_string(&manifest)?)
}

fn step(what: &str) {
    eprintln!("\n==> {what}");
}
