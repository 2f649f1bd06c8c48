//! Upload acceleration end to end: a Distribution with `uploadAcceleration` gets edges with an
//! upload port behind its Services; boto3 uploads through the ClusterIP of the Service over every
//! region, the one `status.uploadEndpoint` names (the pod runner plays kube-proxy), into a real
//! S3 store (Versity S3 Gateway); the object is then served by the edges; and the client keys
//! Secret is watched: deleted, the Distribution is Degraded; re-created with another key, that
//! key uploads without the edge being restarted.
//!
//! Like `operator_traffic.rs`: its own namespace, chart release, operator (limited to that
//! namespace) and pod runner (the edges are real processes).

use std::time::Duration;

use edgefleet_e2e::boto3::boto3;
use edgefleet_e2e::operator::Operator;
use edgefleet_e2e::s3::{ACCESS_KEY, REGION, SECRET_KEY};
use edgefleet_e2e::setup::Setup;
use edgefleet_e2e::{S3Server, wait_for};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;
use kube::api::ListParams;
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

async fn kubectl(setup: &Setup, args: Vec<String>) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    setup
        .kubectl(&args)
        .await
        .unwrap_or_else(|e| panic!("kubectl {args:?} failed: {e}"));
}

/// Retries a PutObject of `(key, body)` signed with `(key id, secret)` until it succeeds, while
/// `what` it needs is on its way to the edge. The operator's log goes into the failure.
async fn put_once_it_works(
    what: &str,
    endpoint: &str,
    (key_id, secret): (&str, &str),
    (key, body): (&str, &str),
    operator: &Operator,
) {
    wait_for(what, CONVERGE, || async {
        let answer = put(endpoint, key_id, secret, key, body).await;
        Ok((answer["ok"] == true).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.log()));
}

/// Waits for the Distribution's current generation to have `type_` = `status` with `reason`;
/// returns the condition's message. The operator's log goes into the failure.
async fn wait_condition(setup: &Setup, condition: (&str, &str, &str), operator: &Operator) -> String {
    setup
        .wait_condition(NAME, condition, CONVERGE)
        .await
        .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.log()))
}

#[tokio::test]
async fn uploads_through_the_regional_service_land_in_the_bucket_with_watched_client_keys() {
    let setup = Setup::start("upload", &[], true)
        .await
        .expect("test namespace, chart and pod runner");
    let operator = setup.operator("upload-0", &[]).await.expect("operator starts");
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
        &setup,
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
        &setup,
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
    setup
        .kubectl_apply(&manifest.to_string())
        .await
        .expect("Distribution applied");
    let ns = &setup.ns;
    wait_condition(&setup, ("Ready", "True", "AllRegionsReady"), &operator).await;
    let dist = setup.distributions().get(NAME).await.expect("the Distribution");
    assert_eq!(
        dist.data["status"]["uploadEndpoint"],
        json!(format!("{NAME}.{ns}.svc:8090"))
    );

    // Through the Service `status.uploadEndpoint` names, as a client in the cluster would.
    let service = setup
        .api::<Service>()
        .get(NAME)
        .await
        .expect("the Service over every region");
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
    put_once_it_works(
        "an upload through the Service",
        &endpoint,
        ("uploader", "uploader-secret-1"),
        ("hello.txt", "hello from e2e"),
        &operator,
    )
    .await;
    let stored =
        std::fs::read(store.data_dir().join(BUCKET).join("hello.txt")).expect("object in the bucket");
    assert_eq!(stored, b"hello from e2e");

    // The edge serves it on its data port.
    let pods = setup
        .api::<Pod>()
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
        &setup,
        vec!["delete".into(), "secret".into(), "media-uploaders".into()],
    )
    .await;
    let message = wait_condition(&setup, ("Degraded", "True", "UploadKeysSecretMissing"), &operator).await;
    assert!(message.contains("media-uploaders"), "{message}");
    kubectl(
        &setup,
        secret("media-uploaders", &[("rotated", "uploader-secret-2")]),
    )
    .await;
    wait_condition(&setup, ("Ready", "True", "AllRegionsReady"), &operator).await;
    put_once_it_works(
        "the rotated key to reach the edge",
        &endpoint,
        ("rotated", "uploader-secret-2"),
        ("rotated.txt", "rotated"),
        &operator,
    )
    .await;
    let old = put(&endpoint, "uploader", "uploader-secret-1", "old.txt", "x").await;
    assert_eq!(old["code"], "InvalidAccessKeyId", "{old}");
    let pods = setup
        .api::<Pod>()
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
