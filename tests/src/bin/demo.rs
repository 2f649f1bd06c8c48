//! The main job: a local control plane with simulated regional nodes, the chart installed with
//! `helm`, the operator running as the chart's ServiceAccount, a real S3 store holding a sample
//! site, and `examples/distribution.yaml` (3 regions) serving it through real edge processes.
//!
//! `cargo run -p edgefleet-e2e --bin demo` — stays up until Ctrl-C. `--once` stops after showing
//! the first requests (used by the test that keeps this command working).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use edgefleet_e2e::binaries::workspace_binary;
use edgefleet_e2e::operator::{Operator, install_chart, service_account_kubeconfig};
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
    step("starting the local control plane (first run: builds the pinned tools, ~10 min)");
    let cluster = Cluster::shared().await?;
    let work = tempfile::Builder::new().prefix("edgefleet-demo-").tempdir()?;

    step("starting the S3 store and uploading examples/site to bucket 'site'");
    let s3 = S3Server::start().await?;
    s3.create_bucket("site").await?;
    let site = repo("examples/site");
    s3.aws(&["s3", "cp", "--recursive", &site.to_string_lossy(), "s3://site/"])
        .await?
        .ok()?;

    step("helm install edgefleet charts/edgefleet -n edgefleet-system");
    cluster
        .kubectl(&["create", "namespace", "edgefleet-system"])
        .await?
        .ok()?;
    let release = install_chart(cluster, "edgefleet", "edgefleet-system", &[]).await?;
    let kubeconfig = service_account_kubeconfig(cluster, &release, work.path()).await?;

    step("running the operator as the chart's ServiceAccount, and the edge pods as real processes");
    let operator = Operator::start(&kubeconfig, &release, "edgefleet-operator-0", work.path(), &[]).await?;
    let _runner = PodRunner::start(
        cluster,
        PodRunnerConfig::all_namespaces()
            .image("ghcr.io/edgefleet/edge", workspace_binary("edgefleet-edge")?),
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
            bail!("{error}\n{}\noperator log:\n{}", status.stdout, operator.log());
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
    let http = reqwest::Client::new();
    for region in &regions {
        let selector = format!("edgefleet.io/distribution={DISTRIBUTION},edgefleet.io/region={region}");
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        let ips: Vec<String> = list
            .items
            .iter()
            .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
            .collect();
        let Some(ip) = ips.first() else {
            bail!("region {region} has no edge pod with an IP")
        };
        println!(
            "\nregion {region}: edges at {}",
            ips.iter()
                .map(|ip| format!("http://{ip}:8080"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("  curl -si -H 'Host: {HOST}' http://{ip}:8080/");
        for attempt in 1..=2 {
            let response = http
                .get(format!("http://{ip}:8080/"))
                .header("host", HOST)
                .send()
                .await
                .with_context(|| format!("request to the {region} edge"))?;
            let header = |name: &str| answer::header(&response, name);
            println!(
                "  request {attempt}: {}  X-Cache: {}  X-Edge-Location: {}  Age: {}",
                response.status(),
                header("x-cache"),
                header("x-edge-location"),
                header("age")
            );
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
