//! Operator scale benchmark: N Distributions × 3 regions in the local control plane (pods
//! simulated by kwok, no edge processes). Prints the time until every Distribution is Ready, the
//! operator's peak RSS and CPU time, and Kubernetes API requests per reconcile.
//!
//! Run through `operator/bench/scale.sh [N...]` (release build); defaults to 10 100 1000.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use edgefleet_e2e::Cluster;
use edgefleet_e2e::operator::{Operator, install_chart, service_account_kubeconfig};
use futures::{StreamExt, TryStreamExt};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![10, 100, 1000]
    } else {
        sizes
    };
    let cluster = Cluster::simulated().await?;
    let work = tempfile::tempdir()?;
    println!(
        "| distributions | time to all Ready | operator peak RSS | operator CPU | reconciles / distribution | API requests / reconcile | writes / distribution |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (i, &n) in sizes.iter().enumerate() {
        let ns = cluster.fresh_namespace(&format!("bench-{n}")).await?;
        // Unique per run: the chart's ClusterRoles are named after the release.
        let name = format!("bench{i}-{n}");
        let release = install_chart(cluster, &name, &ns, &[]).await?;
        let kubeconfig = service_account_kubeconfig(cluster, &release, work.path()).await?;
        // Scoped to this run's namespace, so a previous run's leftovers are not counted.
        let operator = Operator::start(
            &kubeconfig,
            &release,
            &name,
            work.path(),
            &["--watch-namespace", &ns],
        )
        .await?;
        let pid = operator
            .pid()
            .ok_or_else(|| anyhow::anyhow!("operator has no pid"))?;
        let api = distributions(cluster.client().await?, &ns);

        let started = Instant::now();
        let all_ready = tokio::spawn(wait_all_ready(api.clone(), n, Duration::from_secs(900)));
        futures::stream::iter(0..n)
            .map(|i| {
                let api = api.clone();
                async move {
                    api.create(&PostParams::default(), &distribution(i)?)
                        .await
                        .map_err(anyhow::Error::from)
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await?;
        all_ready.await??;
        let took = started.elapsed();
        let (rss_mib, cpu_s) = process_usage(pid)?;
        let metrics = reqwest::get(format!("{}/metrics", operator.base_url()))
            .await?
            .text()
            .await?;
        let requests = sum_metric(&metrics, "edgefleet_operator_api_requests_total", |_| true);
        let writes = sum_metric(&metrics, "edgefleet_operator_api_requests_total", |l| {
            !l.contains("method=\"GET\"")
        });
        // The per-method and per-kind counts behind the table, for reading where requests go.
        for line in metrics.lines().filter(|l| {
            l.starts_with("edgefleet_operator_api_requests_total")
                || l.starts_with("edgefleet_operator_reconciliations_total")
        }) {
            eprintln!("bench-{n}: {line}");
        }
        let reconciles = sum_metric(&metrics, "edgefleet_operator_reconciliations_total", |l| {
            l.contains("Distribution")
        });
        println!(
            "| {n} | {:.1} s | {rss_mib:.1} MiB | {cpu_s:.1} s | {:.1} | {:.1} | {:.1} |",
            took.as_secs_f64(),
            reconciles / n as f64,
            requests / reconciles.max(1.0),
            writes / n as f64
        );
        operator.kill().await?;
        // The next size must not share the control plane with this one's cascading deletion.
        let wait = if i + 1 == sizes.len() {
            "--wait=false"
        } else {
            "--wait=true"
        };
        cluster
            .kubectl(&["delete", "namespace", &ns, wait, "--timeout=10m"])
            .await?;
    }
    Ok(())
}

/// Waits until all `n` Distributions behind `api` are Ready. It follows a watch: listing a
/// thousand objects several times a second would load the API server the operator needs.
async fn wait_all_ready(api: Api<DynamicObject>, n: usize, deadline: Duration) -> anyhow::Result<()> {
    let mut ready = HashSet::new();
    let follow = async {
        let events = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(events);
        while let Some(event) = events.try_next().await? {
            match event {
                Event::Apply(d) | Event::InitApply(d) if is_ready(&d) => {
                    ready.insert(d.name_any());
                }
                Event::Apply(d) | Event::InitApply(d) | Event::Delete(d) => {
                    ready.remove(&d.name_any());
                }
                Event::Init | Event::InitDone => {}
            }
            if ready.len() == n {
                return Ok(());
            }
        }
        anyhow::bail!("the Distribution watch ended")
    };
    match tokio::time::timeout(deadline, follow).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!("only {}/{n} Ready after {deadline:?}", ready.len()),
    }
}

fn distributions(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    edgefleet_e2e::resources::distributions(client, ns)
}

fn distribution(i: usize) -> anyhow::Result<DynamicObject> {
    let regions: Vec<_> = REGIONS
        .iter()
        .map(|r| serde_json::json!({"name": r, "replicas": 1}))
        .collect();
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "edgefleet.io/v1alpha1",
        "kind": "Distribution",
        "metadata": {"name": format!("d{i}")},
        "spec": {
            "origins": [{"name": "web", "http": {"url": "http://origin.example.test"}}],
            "defaultBehavior": {"targetOrigin": "web"},
            "regions": regions,
        },
    }))?)
}

fn is_ready(d: &DynamicObject) -> bool {
    d.data["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Peak RSS (MiB) and user+system CPU seconds of `pid`, from /proc.
fn process_usage(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/{pid}/status"))?
        .parse()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 =
        fields.get(11).unwrap_or(&"0").parse::<f64>()? + fields.get(12).unwrap_or(&"0").parse::<f64>()?;
    Ok((hwm_kib / 1024.0, ticks / 100.0))
}

fn sum_metric(text: &str, name: &str, keep: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && keep(l))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
