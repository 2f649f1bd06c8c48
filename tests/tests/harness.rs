//! The harness itself: the shared control plane and the S3 store behave like the real things.

use std::collections::BTreeMap;
use std::time::Duration;

use edgefleet_e2e::{Cluster, Result, S3Server, s3, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::{ListParams, PostParams};

const REGIONS: [&str; 3] = ["ap-south", "eu-west", "us-east"];

#[tokio::test]
async fn cluster_has_simulated_nodes_in_three_regions_and_two_zones_each() -> Result<()> {
    let cluster = Cluster::shared().await?;
    let nodes = cluster
        .kubectl(&[
            "get",
            "nodes",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.metadata.labels.topology\.kubernetes\.io/region} {.metadata.labels.topology\.kubernetes\.io/zone} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
        ])
        .await?
        .ok()?;

    let mut zones_by_region: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for line in nodes.stdout.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [name, region, zone, ready] = fields[..] else {
            panic!("unexpected line {line:?} in:\n{}", nodes.stdout);
        };
        assert_eq!(ready, "True", "node {name} is not Ready");
        assert!(
            zone.starts_with(&format!("{region}-")),
            "{name}: zone {zone} not in {region}"
        );
        *zones_by_region
            .entry(region.to_owned())
            .or_default()
            .entry(zone.to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        zones_by_region.keys().map(String::as_str).collect::<Vec<_>>(),
        REGIONS
    );
    for (region, zones) in &zones_by_region {
        assert_eq!(zones.len(), 2, "{region}: {zones:?}");
        assert!(zones.values().all(|&n| n == 2), "{region}: {zones:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_deployment_in_a_fresh_namespace_runs_on_its_region_s_simulated_nodes() -> Result<()> {
    let cluster = Cluster::shared().await?;
    let namespace = cluster.fresh_namespace("harness-deploy").await?;
    let client = cluster.client().await?;

    // The controller-manager gives every namespace its default ServiceAccount, which pods need.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    wait_for("the default ServiceAccount", Duration::from_secs(30), || async {
        Ok(accounts.get_opt("default").await?.map(drop))
    })
    .await?;

    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": {
                    "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{ "matchExpressions": [{
                            "key": "topology.kubernetes.io/region",
                            "operator": "In",
                            "values": ["eu-west"],
                        }]}],
                    }}},
                    "containers": [{ "name": "web", "image": "example.invalid/web:1" }],
                },
            },
        },
    }))
    .map_err(|error| edgefleet_e2e::Error::Invalid {
        what: "test Deployment".to_owned(),
        reason: error.to_string(),
    })?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    deployments.create(&PostParams::default(), &deployment).await?;

    wait_for("3 available replicas", Duration::from_secs(60), || async {
        let status = deployments.get("web").await?.status.unwrap_or_default();
        Ok((status.available_replicas == Some(3)).then_some(()))
    })
    .await?;

    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let pods = pods.list(&ListParams::default().labels("app=web")).await?;
    assert_eq!(pods.items.len(), 3);
    for pod in &pods.items {
        let node = pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref());
        assert!(
            node.is_some_and(|node| node.starts_with("kwok-eu-west-")),
            "pod scheduled outside eu-west: {node:?}"
        );
        let ip = pod.status.as_ref().and_then(|status| status.pod_ip.as_deref());
        assert!(ip.is_some_and(|ip| ip.starts_with("198.1")), "pod IP {ip:?}");
    }
    Ok(())
}

#[tokio::test]
async fn s3_store_serves_signed_requests_and_rejects_bad_signatures() -> Result<()> {
    let server = S3Server::start().await?;
    server.create_bucket("harness").await?;

    let work = tempfile::tempdir().map_err(|source| edgefleet_e2e::Error::Io {
        context: "cannot create a temporary directory".to_owned(),
        source,
    })?;
    let body = work.path().join("body.txt");
    let fetched = work.path().join("fetched.txt");
    std::fs::write(&body, b"hello from the harness\n").map_err(|source| edgefleet_e2e::Error::Io {
        context: "cannot write the test object".to_owned(),
        source,
    })?;
    let body_arg = body.to_string_lossy().into_owned();
    let fetched_arg = fetched.to_string_lossy().into_owned();

    server
        .aws(&[
            "s3api",
            "put-object",
            "--bucket",
            "harness",
            "--key",
            "a/b.txt",
            "--body",
            &body_arg,
        ])
        .await?
        .ok()?;
    server
        .aws(&[
            "s3api",
            "get-object",
            "--bucket",
            "harness",
            "--key",
            "a/b.txt",
            &fetched_arg,
        ])
        .await?
        .ok()?;
    assert_eq!(
        std::fs::read(&fetched).ok().as_deref(),
        Some(&b"hello from the harness\n"[..])
    );

    let forged = server
        .aws_as(
            s3::ACCESS_KEY,
            "not-the-secret",
            &[
                "s3api",
                "get-object",
                "--bucket",
                "harness",
                "--key",
                "a/b.txt",
                &fetched_arg,
            ],
        )
        .await?;
    assert!(!forged.success(), "a wrong secret was accepted");
    assert!(
        forged.stderr.contains("SignatureDoesNotMatch"),
        "{}",
        forged.stderr
    );

    let anonymous = server
        .aws(&[
            "--no-sign-request",
            "s3api",
            "list-objects-v2",
            "--bucket",
            "harness",
        ])
        .await?;
    assert!(!anonymous.success(), "an unsigned request was accepted");
    assert!(anonymous.stderr.contains("AccessDenied"), "{}", anonymous.stderr);
    Ok(())
}
