//! Operator scale benchmark: N Distributions × 3 regions in the local control plane (pods
//! simulated by kwok, no edge processes). Prints the time until every Distribution is Ready, the
//! operator's peak RSS and CPU time, and Kubernetes API requests per reconcile.
//!
//! Run through `operator/bench/scale.sh [N...]` (release build); defaults to 10 100 1000.
//!
//! On stderr, per run: when the operator had created every Deployment, when every simulated pod
//! was Ready (all Deployments report their replica ready), the CPU seconds of each control-plane
//! component, and the operator's request counts. With `EDGEFLEET_BENCH_LOGS=DIR` the operator's
//! log of each run is copied there.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_e2e::Cluster;
use edgefleet_e2e::operator::{Operator, Samples, install_chart, service_account_kubeconfig};
use edgefleet_e2e::resources::{all_distributions, distributions};
use edgefleet_operator::api::Distribution;
use edgefleet_operator::render::{self, Credentials, Ingresses, Inputs, Settings};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use tokio::sync::Semaphore;

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// How the bench spreads its Distributions over namespaces.
#[derive(Clone, Copy)]
enum Layout {
    /// All in one namespace, the operator scoped to it (`--watch-namespace`).
    OneNamespace,
    /// This many per namespace, the operator watching every namespace (the chart's default).
    PerNamespace(usize),
}

impl Layout {
    fn namespaces(self, n: usize) -> usize {
        match self {
            Self::OneNamespace => 1,
            Self::PerNamespace(k) => n.div_ceil(k),
        }
    }

    fn namespace_of(self, i: usize) -> usize {
        match self {
            Self::OneNamespace => 0,
            Self::PerNamespace(k) => i / k,
        }
    }
}

/// Who writes the objects of the Distributions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// The operator, as installed by the chart.
    Operator,
    /// The bench itself, without an operator: it renders each Distribution as the operator does
    /// and applies the objects once, in the operator's two waves and with as many writes in
    /// flight. What the control plane alone takes to make the same objects and pods Ready.
    Baseline,
}

struct Arguments {
    layout: Layout,
    writer: Writer,
    sizes: Vec<usize>,
}

/// `[--per-namespace K] [--baseline] [N...]`.
fn arguments() -> anyhow::Result<Arguments> {
    let mut layout = Layout::OneNamespace;
    let mut writer = Writer::Operator;
    let mut sizes = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--baseline" {
            writer = Writer::Baseline;
        } else if arg == "--per-namespace" {
            let k: usize = args
                .next()
                .ok_or_else(|| anyhow::anyhow!("--per-namespace needs a number"))?
                .parse()?;
            anyhow::ensure!(k > 0, "--per-namespace must be at least 1");
            layout = Layout::PerNamespace(k);
        } else {
            sizes.push(arg.parse()?);
        }
    }
    if sizes.is_empty() {
        sizes = vec![10, 100, 1000];
    }
    Ok(Arguments {
        layout,
        writer,
        sizes,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Arguments {
        layout,
        writer,
        sizes,
    } = arguments()?;
    let cluster = Cluster::simulated().await?;
    match writer {
        Writer::Operator => with_operator(cluster, layout, &sizes).await,
        Writer::Baseline => baseline(cluster, layout, &sizes).await,
    }
}

/// The Distributions are made Ready by the operator the chart installs.
async fn with_operator(cluster: &Cluster, layout: Layout, sizes: &[usize]) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    println!(
        "| distributions | namespaces | time to all Ready | operator peak RSS | operator CPU | reconciles / distribution | API requests / reconcile | writes / distribution |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, &n) in sizes.iter().enumerate() {
        let run = Run::prepare(cluster, layout, n).await?;
        // Unique per run: the chart's ClusterRoles are named after the release.
        let name = format!("bench{i}-{n}");
        let release = install_chart(cluster, &name, &run.home, &[]).await?;
        let kubeconfig = service_account_kubeconfig(cluster, &release, work.path()).await?;
        // Runs follow each other only once the previous run's namespaces are gone, so an
        // operator watching every namespace sees this run's Distributions only.
        let scope: &[&str] = match layout {
            Layout::OneNamespace => &["--watch-namespace", &run.home],
            Layout::PerNamespace(_) => &[],
        };
        let operator = Operator::start(&kubeconfig, &release, &name, work.path(), scope).await?;
        let pid = operator
            .pid()
            .ok_or_else(|| anyhow::anyhow!("operator has no pid"))?;

        let start = run.start().await?;
        let all_ready = tokio::spawn(wait_all_ready(
            all_distributions(run.client.clone()),
            n,
            Duration::from_secs(900),
        ));
        let deployments = start.follow_deployments(&run);
        run.create_distributions().await?;
        all_ready.await??;
        let took = start.at.elapsed();
        let (rss_mib, cpu_s) = process_usage(pid)?;
        start.report(&run, deployments).await?;
        if let Some(dir) = std::env::var_os("EDGEFLEET_BENCH_LOGS") {
            let copy = Path::new(&dir).join(format!("operator-bench-{n}.log"));
            std::fs::write(&copy, operator.log())?;
        }
        let samples = operator.metrics().await?;
        let requests = samples.api_requests();
        let writes = samples.api_writes();
        // The per-method and per-kind counts behind the table, for reading where requests go.
        for name in [
            "edgefleet_operator_api_requests_total",
            "edgefleet_operator_reconciliations_total",
        ] {
            for (sample, value) in samples.samples(name) {
                eprintln!("bench-{n}: {sample} {value}");
            }
        }
        let reconciles = samples.distribution_passes();
        println!(
            "| {n} | {} | {:.1} s | {rss_mib:.1} MiB | {cpu_s:.1} s | {:.1} | {:.1} | {:.1} |",
            run.namespaces.len(),
            took.as_secs_f64(),
            reconciles / n as f64,
            requests / reconciles.max(1.0),
            writes / n as f64
        );
        operator.kill().await?;
        run.delete(i + 1 == sizes.len()).await?;
    }
    Ok(())
}

/// No operator: the bench writes what the operator would, once, as fast as the operator may.
async fn baseline(cluster: &Cluster, layout: Layout, sizes: &[usize]) -> anyhow::Result<()> {
    // The CRDs the chart would install.
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    cluster
        .kubectl(&["apply", "--server-side", "-f", &crds.to_string_lossy()])
        .await?
        .ok()?;
    // What the operator renders with by default (the chart's values), minus the admin token.
    let rendering = (
        Settings {
            region_label: "topology.kubernetes.io/region".to_owned(),
            zone_label: "topology.kubernetes.io/zone".to_owned(),
            edge_image: "edgefleet/edge:bench".to_owned(),
            edge_image_pull_policy: None,
            edge_image_pull_secrets: Vec::new(),
            ingress: Ingresses::Disabled,
        },
        Inputs {
            admin_token: "bench".to_owned(),
            credentials: Credentials::default(),
        },
    );
    println!("| distributions | namespaces | every object written | every pod Ready |");
    println!("|---:|---:|---:|---:|");
    for (i, &n) in sizes.iter().enumerate() {
        let run = Run::prepare(cluster, layout, n).await?;
        let start = run.start().await?;
        let deployments = start.follow_deployments(&run);
        let created = run.create_distributions().await?;
        let writes = Arc::new(Semaphore::new(OPERATOR_WRITES_IN_FLIGHT));
        futures::stream::iter(created)
            .map(|dist| write_rendered(run.client.clone(), dist, &rendering, writes.clone()))
            .buffer_unordered(OPERATOR_PASSES)
            .try_collect::<Vec<_>>()
            .await?;
        let written = start.at.elapsed();
        let milestones = tokio::time::timeout(Duration::from_secs(900), deployments)
            .await
            .map_err(|_| anyhow::anyhow!("not every pod was Ready after 900 s"))???;
        println!(
            "| {n} | {} | {:.1} s | {} |",
            run.namespaces.len(),
            written.as_secs_f64(),
            show(milestones.ready)
        );
        start.report_control_plane(&run).await?;
        run.delete(i + 1 == sizes.len()).await?;
    }
    Ok(())
}

/// The operator's limits (`controller::Context`): writes in flight over all passes, passes at once.
const OPERATOR_WRITES_IN_FLIGHT: usize = 24;
const OPERATOR_PASSES: usize = 16;
/// Writes one pass sends at a time.
const PASS_WRITES_IN_FLIGHT: usize = 8;

/// Renders `dist` as the operator does and applies its objects the way a pass does: those
/// [`render::Kind::after_the_rest`] once the others are written.
async fn write_rendered(
    client: kube::Client,
    dist: DynamicObject,
    (settings, inputs): &(Settings, Inputs),
    writes: Arc<Semaphore>,
) -> anyhow::Result<()> {
    let dist: Distribution = serde_json::from_value(serde_json::to_value(&dist)?)?;
    let fleet = render::render(&dist, settings, inputs)
        .map_err(|blockers| anyhow::anyhow!("cannot render: {blockers:?}"))?;
    let manifests = fleet.manifests()?;
    let namespace = dist.namespace().unwrap_or_default();
    for later in [false, true] {
        futures::stream::iter(manifests.iter().filter(|m| m.kind.after_the_rest() == later))
            .map(|manifest| {
                let (client, namespace, writes) = (client.clone(), namespace.clone(), writes.clone());
                async move {
                    let _permit = writes.acquire().await?;
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(client, &namespace, &manifest.kind.api_resource());
                    api.patch(
                        &manifest.name,
                        &PatchParams::apply("edgefleet-bench"),
                        &Patch::Apply(&manifest.body),
                    )
                    .await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(PASS_WRITES_IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await?;
    }
    Ok(())
}

/// One size of one run: its namespaces and a client.
struct Run<'a> {
    cluster: &'a Cluster,
    layout: Layout,
    n: usize,
    /// Where the chart and operator live (and the Distributions, in one namespace).
    home: String,
    /// Where the Distributions go.
    namespaces: Vec<String>,
    client: kube::Client,
}

impl<'a> Run<'a> {
    async fn prepare(cluster: &'a Cluster, layout: Layout, n: usize) -> anyhow::Result<Self> {
        let home = cluster.fresh_namespace(&format!("bench-{n}")).await?;
        let mut namespaces = Vec::new();
        match layout {
            Layout::OneNamespace => namespaces.push(home.clone()),
            Layout::PerNamespace(_) => {
                for j in 0..layout.namespaces(n) {
                    namespaces.push(cluster.fresh_namespace(&format!("bench-{n}-{j}")).await?);
                }
            }
        }
        Ok(Self {
            cluster,
            layout,
            n,
            home,
            namespaces,
            client: cluster.client().await?,
        })
    }

    /// Takes the figures a run is measured against, and starts the clock.
    async fn start(&self) -> anyhow::Result<Start> {
        Ok(Start {
            cpu: self.cluster.dir().map(component_cpu).unwrap_or_default(),
            allocations: cluster_ip_allocations(self.cluster).await?,
            load: load_average(),
            at: Instant::now(),
        })
    }

    /// Creates the `n` Distributions, 32 at a time.
    async fn create_distributions(&self) -> anyhow::Result<Vec<DynamicObject>> {
        futures::stream::iter(0..self.n)
            .map(|i| {
                let api = distributions(self.client.clone(), &self.namespaces[self.layout.namespace_of(i)]);
                async move {
                    api.create(&PostParams::default(), &distribution(i)?)
                        .await
                        .map_err(anyhow::Error::from)
                }
            })
            .buffer_unordered(32)
            .try_collect()
            .await
    }

    /// Deletes the run's namespaces; unless it is the last run, waits until they are gone, so
    /// the next size does not share the control plane with this one's cascading deletion.
    async fn delete(self, last: bool) -> anyhow::Result<()> {
        let wait = if last { "--wait=false" } else { "--wait=true" };
        let mut delete = vec!["delete", "namespace"];
        delete.extend(
            self.namespaces
                .iter()
                .chain(std::iter::once(&self.home))
                .map(String::as_str),
        );
        delete.dedup();
        delete.extend([wait, "--timeout=10m"]);
        self.cluster.kubectl(&delete).await?;
        Ok(())
    }
}

/// The figures at the start of a run.
struct Start {
    cpu: BTreeMap<String, f64>,
    allocations: (f64, f64),
    load: String,
    at: Instant,
}

impl Start {
    fn follow_deployments(&self, run: &Run<'_>) -> tokio::task::JoinHandle<anyhow::Result<Milestones>> {
        tokio::spawn(follow_deployments(
            Api::all(run.client.clone()),
            REGIONS.len() * run.n,
            self.at,
        ))
    }

    /// Prints the Deployment milestones (stopping their watch) and the control plane's figures.
    async fn report(
        &self,
        run: &Run<'_>,
        deployments: tokio::task::JoinHandle<anyhow::Result<Milestones>>,
    ) -> anyhow::Result<()> {
        // Both milestones come before every Distribution is Ready, so the watch has seen them.
        deployments.abort();
        if let Ok(Ok(milestones)) = deployments.await {
            eprintln!("bench-{}: {milestones}", run.n);
        }
        self.report_control_plane(run).await
    }

    /// CPU seconds of each control-plane process, load average, ClusterIP allocations.
    async fn report_control_plane(&self, run: &Run<'_>) -> anyhow::Result<()> {
        let n = run.n;
        let cpu_after = run.cluster.dir().map(component_cpu).unwrap_or_default();
        let cpu: Vec<String> = cpu_after
            .iter()
            .map(|(name, after)| {
                let before = self.cpu.get(name).copied().unwrap_or(0.0);
                format!("{name} {:.1}", after - before)
            })
            .collect();
        eprintln!("bench-{n}: CPU seconds during the run: {}", cpu.join(", "));
        eprintln!(
            "bench-{n}: load average (1 min) {} at the start, {} at the end",
            self.load,
            load_average()
        );
        let allocations = cluster_ip_allocations(run.cluster).await?;
        eprintln!(
            "bench-{n}: {:.0} Service ClusterIPs allocated in {:.1} s (one at a time in the API server)",
            allocations.0 - self.allocations.0,
            allocations.1 - self.allocations.1
        );
        Ok(())
    }
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

/// When the last of `total` Deployments appeared and when the last became ready.
#[derive(Default)]
struct Milestones {
    created: Option<Duration>,
    ready: Option<Duration>,
}

fn show(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
}

impl std::fmt::Display for Milestones {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "every Deployment created after {}, every pod Ready (all Deployments ready) after {}",
            show(self.created),
            show(self.ready)
        )
    }
}

/// Follows the Deployments behind `api` until all `total` exist and are ready; the times count
/// from `started`. Ends early (with what it has) when aborted, which the caller does once every
/// Distribution is Ready.
async fn follow_deployments(
    api: Api<Deployment>,
    total: usize,
    started: Instant,
) -> anyhow::Result<Milestones> {
    let mut seen = HashSet::new();
    let mut ready = HashSet::new();
    let mut milestones = Milestones::default();
    let events = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(events);
    while let Some(event) = events.try_next().await? {
        if let Event::Apply(d) | Event::InitApply(d) = event {
            let name = d.name_any();
            let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready_replicas = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
            if ready_replicas >= replicas {
                ready.insert(name.clone());
            } else {
                ready.remove(&name);
            }
            seen.insert(name);
        }
        if milestones.created.is_none() && seen.len() >= total {
            milestones.created = Some(started.elapsed());
        }
        if milestones.ready.is_none() && ready.len() >= total {
            milestones.ready = Some(started.elapsed());
            return Ok(milestones);
        }
    }
    Ok(milestones)
}

/// How many Service ClusterIPs the API server has allocated, and the seconds that took. The API
/// server allocates them one at a time (the allocator holds a lock while it creates each
/// IPAddress object), so the sum is time no amount of client concurrency shortens.
async fn cluster_ip_allocations(cluster: &Cluster) -> anyhow::Result<(f64, f64)> {
    let metrics = cluster.kubectl(&["get", "--raw", "/metrics"]).await?.stdout;
    let name = "kube_apiserver_clusterip_allocator_allocation_duration_seconds";
    let samples = Samples::parse(&metrics);
    Ok((
        samples.total(&format!("{name}_count")),
        samples.total(&format!("{name}_sum")),
    ))
}

/// The 1-minute load average: the bench shares the machine's cores with whatever else runs.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// CPU seconds (user + system) of each process whose command line names `dir` (the components
/// of the bench's control plane), by command name.
fn component_cpu(dir: &Path) -> BTreeMap<String, f64> {
    let needle = dir.to_string_lossy().into_owned();
    let mut cpu = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return cpu;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmdline).contains(&needle) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map_or("?", |(_, name)| name).to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
            .sum();
        *cpu.entry(name).or_insert(0.0) += ticks / 100.0;
    }
    cpu
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
