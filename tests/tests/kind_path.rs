//! The README's kind path, run as far as this machine allows: `examples/kind/run.sh` does every
//! step after `kind create cluster`, and here it runs against the local cluster's real node
//! instead (no Docker or kind here: the images are built by `tests/cluster/images.sh` and are on
//! the node already, `IMAGES=loaded`). Its own test binary, so its own cluster: the script
//! installs the chart cluster-wide, as a user would, and that operator must be the only one.
//!
//! The origin (`examples/kind/origin.yaml`) and the operator run on the real node (the local
//! scheduler prefers it for every pod that fits); the example Distribution's three regions put
//! edges on the real node (eu-west-a) and on simulated nodes (the pod runner, whose processes
//! resolve the origin's Service name with the cluster's DNS, as pods do).

use std::path::Path;
use std::time::Duration;

use edgefleet_e2e::Cluster;
use edgefleet_e2e::images::Images;
use edgefleet_e2e::pods::{PodRunner, PodRunnerConfig};

/// helm --wait, the origin's rollout, the upload and the Distribution's readiness each wait up
/// to 5 minutes in the script; the whole run gets a deadline of its own.
const RUN_DEADLINE: Duration = Duration::from_secs(900);

#[tokio::test]
async fn the_kind_script_installs_the_chart_origin_and_example_and_serves_through_an_edge() {
    let cluster = Cluster::with_real_nodes()
        .await
        .expect("cluster with a real node");
    let images = Images::built().await.expect("images");
    let _runner = PodRunner::start(
        cluster,
        PodRunnerConfig::all_namespaces().image("ghcr.io/edgefleet/edge", images.binary("edgefleet-edge")),
    )
    .await
    .expect("pod runner");
    let real_node = &cluster.real_nodes()[0].name;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tools: Vec<_> = [cluster.kubectl_path(), cluster.helm_path()]
        .iter()
        .filter_map(|tool| tool.parent().map(Path::to_path_buf))
        .collect();
    let path = std::env::join_paths(tools.into_iter().chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let run = tokio::process::Command::new("bash")
        .arg(repo.join("examples/kind/run.sh"))
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("PATH", path)
        .env("IMAGES", "loaded")
        .env("EDGE_NODE", real_node)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_DEADLINE, run)
        .await
        .expect("run.sh finishes within its deadline")
        .expect("run.sh starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "run.sh failed:\n{stdout}\n{stderr}");
    for (attempt, cache) in [(1, "Miss"), (2, "Hit")] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("request {attempt} via site-eu-west-")))
            .unwrap_or_else(|| panic!("no request {attempt} through the eu-west edge:\n{stdout}\n{stderr}"));
        assert!(
            line.ends_with(&format!(
                ": 200  X-Cache: {cache} from edgefleet  X-Edge-Location: eu-west"
            )),
            "{line}"
        );
    }
    // The operator the script installed runs on the real node, from the chart.
    assert!(
        stdout.lines().any(|l| l.starts_with("pod/edgefleet-")
            && l.contains("Running")
            && l.contains(real_node.as_str())),
        "{stdout}"
    );
}
