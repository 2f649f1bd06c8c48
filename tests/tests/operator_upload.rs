//! Upload acceleration end to end: a Distribution with `uploadAcceleration` gets edges with an
//! upload port behind its Services; boto3 uploads through the regional Service's ClusterIP (the
//! pod runner plays kube-proxy) into a real S3 store (Versity S3 Gateway), the object is then served
//! by the edges, `status.uploadEndpoint` names the endpoint, and the client keys Secret is watched:
//! deleted, the Distribution is Degraded; re-created with another key, that key uploads without
//! the edge being restarted.
//!
//! Like `operator_traffic.rs`: its own namespace, chart release, operator (limited to that
//! namespace) and pod runner (the edges are real processes).

use std::path::PathBuf;
use std::time::Duration;

use edgefleet_e2e::binaries::workspace_binary;
use edgefleet_e2e::boto3::boto3;
use edgefleet_e2e::operator::{Operator, install_chart, service_account_kubeconfig};
use edgefleet_e2e::pods::{PodRunner, PodRunnerConfig};
use edgefleet_e2e::s3::{ACCESS_KEY, REGION, SECRET_KEY};
use edgefleet_e2e::{Cluster, S3Server, wait_for};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{Value, json};

/// Long enough for real edge processes to start on a loaded 2-core machine.
const CONVERGE: Duration = Duration::from_secs(120);
const NAME: &str = "media";
const BUCKET: &str = "media";
const REGION_NAME: &str = "us-east";

/// One PutObject with boto3 (`edgefleet_e2e::boto3`): `bucket key body`.
const PUT: &str = r#"
def call(s3, args):
    bucket, key, body = args
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode(), ContentType="text/plain")
"#;

async fn put(endpoint: &str, key_id: &str, secret: &str, key: &str, body: &str) -> Value {
    boto3(endpoint, key_id, secret, PUT, &[BUCKET, key, body])
        .await
        .unwrap_or_else(|e| panic!("boto3: {e}"))
}

async fn kubectl(cluster: &Cluster, ns: &str, args: Vec<String>) {
    let mut all = vec!["-n", ns];
    all.extend(args.iter().map(String::as_str));
    cluster
        .kubectl(&all)
        .await
        .expect("kubectl runs")
        .ok()
        .unwrap_or_else(|e| panic!("kubectl {args:?} failed: {e}"));
}

fn condition(dist: &DynamicObject, type_: &str) -> Option<(String, String, String)> {
    let conditions = dist.data["status"]["conditions"].as_array()?;
    let c = conditions.iter().find(|c| c["type"] == type_)?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
        c["message"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Waits for the current generation to have `type_` = `status` with `reason`; returns the
/// Distribution. The operator's log goes into the failure.
async fn wait_condition(
    api: &Api<DynamicObject>,
    (type_, status, reason): (&str, &str, &str),
    operator: &Operator,
) -> DynamicObject {
    wait_for(
        &format!("{NAME}: {type_}={status} ({reason})"),
        CONVERGE,
        || async {
            let dist = api.get(NAME).await?;
            let observed = dist.data["status"]["observedGeneration"].as_i64();
            let current = observed.is_some() && observed == dist.metadata.generation;
            let matches = condition(&dist, type_).is_some_and(|(s, r, _)| s == status && r == reason);
            Ok((current && matches).then_some(dist))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.log()))
}

#[tokio::test]
async fn uploads_through_the_regional_service_land_in_the_bucket_with_watched_client_keys() {
    let cluster = Cluster::shared().await.expect("local cluster");
    let ns = cluster.fresh_namespace("upload").await.expect("namespace");
    let release = install_chart(cluster, &format!("op-{ns}"), &ns, &[])
        .await
        .expect("helm install");
    let work = tempfile::tempdir().expect("temp dir");
    let kubeconfig: PathBuf = service_account_kubeconfig(cluster, &release, work.path())
        .await
        .expect("the chart's ServiceAccount");
    let edge = workspace_binary("edgefleet-edge").expect("edge binary built");
    let _runner = PodRunner::start(
        cluster,
        PodRunnerConfig::in_namespace(&ns).image("ghcr.io/edgefleet/edge", edge),
    )
    .await
    .expect("pod runner");
    let operator = Operator::start(
        &kubeconfig,
        &release,
        "upload-0",
        work.path(),
        &["--watch-namespace", ns.as_str()],
    )
    .await
    .expect("operator starts");
    let store = S3Server::start().await.expect("S3 store");
    store.create_bucket(BUCKET).await.expect("bucket");
    let secret = |name: &str, pairs: &[(&str, &str)]| {
        let mut args = vec![
            "create".to_owned(),
            "secret".to_owned(),
            "generic".to_owned(),
            name.to_owned(),
        ];
        args.extend(pairs.iter().map(|(k, v)| format!("--from-literal={k}={v}")));
        args
    };
    kubectl(
        cluster,
        &ns,
        secret(
            "media-origin",
            &[
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
                ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ],
        ),
    )
    .await;
    kubectl(
        cluster,
        &ns,
        secret("media-uploaders", &[("uploader", "uploader-secret-1")]),
    )
    .await;
    let manifest = json!({
        "apiVersion": "edgefleet.io/v1alpha1",
        "kind": "Distribution",
        "metadata": {"name": NAME},
        "spec": {
            "origins": [{"name": "bucket", "s3": {
                "endpoint": store.endpoint(), "bucket": BUCKET, "region": REGION, "pathStyle": true,
                "credentialsSecretRef": {"name": "media-origin"}
            }}],
            "defaultBehavior": {"targetOrigin": "bucket"},
            "regions": [{"name": REGION_NAME, "replicas": 1}],
            "uploadAcceleration": {
                "targetOrigin": "bucket",
                "clientKeysSecretRef": {"name": "media-uploaders"},
                "maxObjectSize": "8Mi"
            },
            "edge": {"cacheMemory": "16Mi"}
        }
    });
    cluster
        .kubectl_with_stdin(&["apply", "-n", &ns, "-f", "-"], &manifest.to_string())
        .await
        .expect("kubectl runs")
        .ok()
        .expect("Distribution applied");
    let client = cluster.client().await.expect("client");
    let distributions = edgefleet_e2e::resources::distributions(client.clone(), &ns);
    let dist = wait_condition(&distributions, ("Ready", "True", "AllRegionsReady"), &operator).await;
    assert_eq!(
        dist.data["status"]["uploadEndpoint"],
        json!(format!("{NAME}.{ns}.svc:8090"))
    );

    // Through the regional Service, as a client in the region would reach it.
    let service = Api::<Service>::namespaced(client.clone(), &ns)
        .get(&format!("{NAME}-{REGION_NAME}"))
        .await
        .expect("regional Service");
    let spec = service.spec.expect("spec");
    let upload_port = spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("upload"))
        .map(|p| p.port)
        .expect("the Service has an upload port");
    let cluster_ip = spec.cluster_ip.expect("ClusterIP");
    let endpoint = format!("http://{cluster_ip}:{upload_port}");
    let uploaded = wait_for("an upload through the Service", CONVERGE, || async {
        let answer = put(
            &endpoint,
            "uploader",
            "uploader-secret-1",
            "hello.txt",
            "hello from e2e",
        )
        .await;
        Ok((answer["ok"] == true).then_some(answer))
    })
    .await;
    uploaded.unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.log()));
    let stored =
        std::fs::read(store.data_dir().join(BUCKET).join("hello.txt")).expect("object in the bucket");
    assert_eq!(stored, b"hello from e2e");

    // The edge serves it on its data port.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(&format!("edgefleet.io/distribution={NAME}")))
        .await
        .expect("edge pods");
    let pod = pods.items.first().expect("an edge pod");
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP");
    let uid = pod.metadata.uid.clone();
    let body = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client")
        .get(format!("http://{ip}:8080/hello.txt"))
        .send()
        .await
        .expect("GET through the edge")
        .text()
        .await
        .expect("body");
    assert_eq!(body, "hello from e2e");

    let wrong = put(&endpoint, "uploader", "not-the-secret", "nope.txt", "x").await;
    assert_eq!(
        (&wrong["status"], &wrong["code"]),
        (&json!(403), &json!("SignatureDoesNotMatch"))
    );

    // The client keys Secret is watched: gone, the Distribution says so; back with another key,
    // that key works on the running edge.
    kubectl(
        cluster,
        &ns,
        vec!["delete".into(), "secret".into(), "media-uploaders".into()],
    )
    .await;
    let dist = wait_condition(
        &distributions,
        ("Degraded", "True", "UploadKeysSecretMissing"),
        &operator,
    )
    .await;
    let (_, _, message) = condition(&dist, "Degraded").expect("Degraded");
    assert!(message.contains("media-uploaders"), "{message}");
    kubectl(
        cluster,
        &ns,
        secret("media-uploaders", &[("rotated", "uploader-secret-2")]),
    )
    .await;
    wait_condition(&distributions, ("Ready", "True", "AllRegionsReady"), &operator).await;
    let rotated = wait_for("the rotated key to reach the edge", CONVERGE, || async {
        let answer = put(
            &endpoint,
            "rotated",
            "uploader-secret-2",
            "rotated.txt",
            "rotated",
        )
        .await;
        Ok((answer["ok"] == true).then_some(answer))
    })
    .await;
    rotated.unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.log()));
    let old = put(&endpoint, "uploader", "uploader-secret-1", "old.txt", "x").await;
    assert_eq!(old["code"], "InvalidAccessKeyId", "{old}");
    let pods = Api::<Pod>::namespaced(client, &ns)
        .list(&ListParams::default().labels(&format!("edgefleet.io/distribution={NAME}")))
        .await
        .expect("edge pods");
    assert_eq!(
        pods.items
            .iter()
            .map(|p| p.metadata.uid.clone())
            .collect::<Vec<_>>(),
        vec![uid],
        "the edge kept running: {:?}",
        pods.items.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
}
