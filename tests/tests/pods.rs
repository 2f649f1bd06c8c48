//! The pod runner: pods on simulated nodes run as real processes, from their own spec.

use std::collections::BTreeMap;
use std::time::Duration;

use edgefleet_e2e::cluster::EXTERNAL_PODS_LABEL;
use edgefleet_e2e::pods::{PodRunner, PodRunnerConfig};
use edgefleet_e2e::{Cluster, Error, Result, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};

/// A stand-in image: the "entrypoint" is /bin/sh, and the script serves files over HTTP.
const IMAGE: &str = "example.invalid/shell";

/// Writes what the process sees (downward API, ConfigMap value, its API identity) into an
/// emptyDir, links the ConfigMap volume next to it and serves both, listening on "all
/// addresses" as a container would.
const SCRIPT: &str = "echo \"$POD_NAME $POD_IP $GREETING\" > /scratch/whoami \
    && \"$KUBECTL\" auth whoami -o jsonpath='{.status.userInfo.username}' > /scratch/identity \
    && ln -s /site /scratch/site \
    && exec python3 -m http.server --bind 0.0.0.0 8080 --directory /scratch";

fn invalid(what: &str, error: impl std::fmt::Display) -> Error {
    Error::Invalid {
        what: what.to_owned(),
        reason: error.to_string(),
    }
}

fn deployment(replicas: i32, kubectl: &str) -> Result<Deployment> {
    let (label, value) = EXTERNAL_PODS_LABEL;
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { label: value } },
            "template": {
                "metadata": { "labels": { label: value } },
                "spec": {
                    "containers": [{
                        "name": "web",
                        "image": format!("{IMAGE}:1"),
                        "command": ["/bin/sh", "-c", SCRIPT],
                        "env": [
                            { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                            { "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } },
                            { "name": "GREETING", "valueFrom": { "configMapKeyRef": { "name": "site", "key": "greeting" } } },
                            { "name": "KUBECTL", "value": kubectl },
                        ],
                        "ports": [{ "name": "http", "containerPort": 8080 }],
                        "readinessProbe": {
                            "httpGet": { "path": "/whoami", "port": "http" },
                            "periodSeconds": 1,
                        },
                        "volumeMounts": [
                            { "name": "site", "mountPath": "/site" },
                            { "name": "scratch", "mountPath": "/scratch" },
                        ],
                    }],
                    "volumes": [
                        { "name": "site", "configMap": { "name": "site" } },
                        { "name": "scratch", "emptyDir": {} },
                    ],
                },
            },
        },
    }))
    .map_err(|error| invalid("test Deployment", error))
}

fn site(index: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("site".to_owned()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("index.html".to_owned(), index.to_owned()),
            ("greeting".to_owned(), "hello".to_owned()),
        ])),
        ..Default::default()
    }
}

async fn get(http: &reqwest::Client, url: &str) -> Option<String> {
    let response = http.get(url).timeout(Duration::from_secs(2)).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

async fn ready_pods(pods: &Api<Pod>) -> Result<Vec<Pod>> {
    let list = pods.list(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| {
            let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .collect())
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_as_real_processes_from_their_spec() -> Result<()> {
    let cluster = Cluster::shared().await?;
    let namespace = cluster.fresh_namespace("pod-runner").await?;
    let client = cluster.client().await?;
    let config = PodRunnerConfig::in_namespace(&namespace).image(IMAGE, "/bin/sh");
    let runner = PodRunner::start(cluster, config).await?;
    let http = reqwest::Client::new();

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    config_maps.create(&PostParams::default(), &site("v1")).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    wait_for("the default ServiceAccount", Duration::from_secs(30), || async {
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &namespace);
        Ok(accounts.get_opt("default").await?.map(drop))
    })
    .await?;
    let kubectl = cluster.kubectl_path().to_string_lossy().into_owned();
    deployments
        .create(&PostParams::default(), &deployment(2, &kubectl)?)
        .await?;

    // Ready comes from the runner's probe of the real process, not from kwok.
    wait_for("2 available replicas", Duration::from_secs(60), || async {
        let status = deployments.get("web").await?.status.unwrap_or_default();
        Ok((status.available_replicas == Some(2)).then_some(()))
    })
    .await
    .map_err(|error| {
        invalid(
            "deployment",
            format!(
                "{error}; pod logs under {}",
                runner.pod_dir(&namespace, "*").display()
            ),
        )
    })?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let running = ready_pods(&pods).await?;
    assert_eq!(running.len(), 2);
    let mut ips = Vec::new();
    for pod in &running {
        let (name, ip) = (pod.metadata.name.clone().unwrap_or_default(), pod_ip(pod));
        assert!(ip.starts_with("198.1"), "pod IP {ip}");
        // Each process listens on its own pod IP and saw its own downward-API values.
        let whoami = get(&http, &format!("http://{ip}:8080/whoami")).await;
        assert_eq!(whoami, Some(format!("{name} {ip} hello\n")));
        let index = get(&http, &format!("http://{ip}:8080/site/index.html")).await;
        assert_eq!(index.as_deref(), Some("v1"));
        // In-cluster API access works, as the pod's service account.
        let identity = get(&http, &format!("http://{ip}:8080/identity")).await;
        let account = format!("system:serviceaccount:{namespace}:default");
        assert_eq!(identity.as_deref(), Some(account.as_str()));
        let status = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
        let started = status.and_then(|s| s.first()).and_then(|s| s.started);
        assert_eq!(started, Some(true));
        ips.push(ip);
    }

    // The Service's ClusterIP forwards to the ready pods, spreading connections over them.
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let (label, value) = EXTERNAL_PODS_LABEL;
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web" },
        "spec": {
            "selector": { label: value },
            "ports": [{ "name": "http", "port": 8081, "targetPort": "http" }],
        },
    }))
    .map_err(|error| invalid("test Service", error))?;
    let service = services.create(&PostParams::default(), &service).await?;
    let cluster_ip = service.spec.and_then(|spec| spec.cluster_ip).unwrap_or_default();
    assert!(cluster_ip.starts_with("198.1"), "ClusterIP {cluster_ip}");
    let answered_by = std::cell::RefCell::new(std::collections::BTreeSet::new());
    wait_for(
        "both pods to answer through the Service",
        Duration::from_secs(20),
        || async {
            if let Some(whoami) = get(&http, &format!("http://{cluster_ip}:8081/whoami")).await {
                let pod = whoami.split(' ').next().unwrap_or_default().to_owned();
                answered_by.borrow_mut().insert(pod);
            }
            Ok((answered_by.borrow().len() == 2).then_some(()))
        },
    )
    .await?;

    // A ConfigMap change reaches the mounted files of the running processes.
    config_maps
        .patch(
            "site",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "data": { "index.html": "v2" } })),
        )
        .await?;
    for ip in &ips {
        wait_for("the new index.html", Duration::from_secs(10), || async {
            let index = get(&http, &format!("http://{ip}:8080/site/index.html")).await;
            Ok((index.as_deref() == Some("v2")).then_some(()))
        })
        .await?;
    }
    let uids = |pods: &[Pod]| {
        let mut uids: Vec<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        uids.sort();
        uids
    };
    assert_eq!(
        uids(&ready_pods(&pods).await?),
        uids(&running),
        "pods were replaced"
    );

    // Deleting a pod stops its process; the replacement runs on a new IP.
    let victim = running[0].metadata.name.clone().unwrap_or_default();
    let victim_ip = pod_ip(&running[0]);
    pods.delete(&victim, &DeleteParams::default()).await?;
    wait_for(
        "the deleted pod's process to stop",
        Duration::from_secs(20),
        || async {
            // kwok hands freed IPs out again, so the replacement may answer on the same IP.
            let answer = get(&http, &format!("http://{victim_ip}:8080/whoami")).await;
            let victim_answers = answer.is_some_and(|whoami| whoami.starts_with(&format!("{victim} ")));
            Ok((!victim_answers).then_some(()))
        },
    )
    .await?;
    wait_for(
        "a replacement pod to be ready",
        Duration::from_secs(60),
        || async {
            let ready = ready_pods(&pods).await?;
            let replaced =
                ready.len() == 2 && ready.iter().all(|p| p.metadata.name.as_deref() != Some(&victim));
            Ok(replaced.then_some(ready))
        },
    )
    .await?;
    Ok(())
}
