//! The README's first command keeps working: `cargo run -p edgefleet-e2e --bin demo` brings up
//! everything, the operator runs as the chart's pod and eu-west's edges on the real node, and
//! each region's edge answers a Miss, then a Hit, naming its region.

use std::process::Stdio;
use std::time::Duration;

#[tokio::test]
async fn the_main_job_serves_every_region_from_cache_on_the_second_request() {
    // What the demo builds on a fresh machine (the pinned tools, a release build for the images)
    // takes longer than the demo itself may: built first, outside its deadline.
    edgefleet_e2e::images::Images::built()
        .await
        .expect("the images (and the tools they need) are built");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_demo"))
        .arg("--once")
        // Its own control plane, as a newcomer's run would have.
        .env_remove(edgefleet_e2e::cluster::KUBECONFIG_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the demo finishes within 10 minutes")
        .expect("the demo starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let real_edge = "on real-eu-west-a (real node: a containerd container)";
    assert!(stdout.contains(real_edge), "no edge on the real node:\n{stdout}");
    let operator = stdout
        .lines()
        .find(|line| line.starts_with("pod/edgefleet-"))
        .unwrap_or_else(|| panic!("no operator pod listed:\n{stdout}"));
    assert!(
        operator.contains(" 1/1 ") && operator.contains("Running") && operator.contains("real-eu-west-a"),
        "the operator pod runs on the real node: {operator}"
    );
    for region in ["eu-west", "us-east", "ap-south"] {
        let first = format!("request 1: 200 OK  X-Cache: Miss from edgefleet  X-Edge-Location: {region}");
        let second = format!("request 2: 200 OK  X-Cache: Hit from edgefleet  X-Edge-Location: {region}");
        assert!(
            stdout.contains(&first) && stdout.contains(&second),
            "region {region} did not answer Miss then Hit:\n{stdout}"
        );
    }
}
