//! Issue 2 against the real local control plane: the chart installs with `helm`, the examples are
//! accepted, every invalid manifest is refused at admission with its message, and the operator
//! runs with the chart's RBAC identity and reports `observedGeneration`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgefleet_e2e::operator::{Operator, install_chart, service_account_kubeconfig};
use edgefleet_e2e::{Cluster, wait_for};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The Kubernetes manifests in `examples/` (not the kind cluster config nor the edge's own
/// standalone config, which are not objects for the API server).
fn example_manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("examples"))
        .expect("examples/ exists")
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            !text.contains("kind: Cluster") && !text.contains("edgefleet-edge")
        })
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn valid_examples_are_accepted_and_invalid_ones_refused_with_their_message() {
    let cluster = Cluster::shared().await.expect("local cluster");
    let ns = cluster.fresh_namespace("admission").await.expect("namespace");
    install_chart(cluster, &format!("adm-{ns}"), &ns, &[])
        .await
        .expect("helm install");

    let examples = example_manifests();
    assert!(
        examples.len() >= 3,
        "expected the distribution, secret and invalidation examples, got {examples:?}"
    );
    for example in &examples {
        let out = cluster
            .kubectl(&["apply", "-n", &ns, "-f", &example.to_string_lossy()])
            .await
            .expect("kubectl runs");
        assert!(out.success(), "{} was refused: {}", example.display(), out.stderr);
    }

    let mut checked = 0;
    for entry in std::fs::read_dir(repo("tests/invalid")).expect("tests/invalid exists") {
        let path = entry.expect("readable dir").path();
        let text = std::fs::read_to_string(&path).expect("readable manifest");
        let expected = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks its '# expect: <message>' first line", path.display()));
        let out = cluster
            .kubectl(&["apply", "-n", &ns, "-f", &path.to_string_lossy()])
            .await
            .expect("kubectl runs");
        assert!(
            !out.success(),
            "{} was accepted but must be refused",
            path.display()
        );
        assert!(
            out.stderr.contains(expected),
            "{} was refused without the expected message {expected:?}: {}",
            path.display(),
            out.stderr
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} invalid manifests were checked");

    // An Invalidation's spec never changes: a new purge is a new object.
    let out = cluster
        .kubectl(&[
            "patch",
            "-n",
            &ns,
            "invalidation",
            "site-release-2026-11-25",
            "--type=merge",
            "-p",
            r#"{"spec":{"paths":["/other"]}}"#,
        ])
        .await
        .expect("kubectl runs");
    assert!(
        !out.success() && out.stderr.contains("spec is immutable"),
        "spec changed: {}",
        out.stderr
    );

    // Defaults live in the schema, so they are visible to everyone who reads the object.
    let dist = edgefleet_e2e::resources::distributions(cluster.client().await.expect("client"), &ns)
        .get("site")
        .await
        .expect("the example Distribution exists");
    let ttl = &dist.data["spec"]["defaultBehavior"]["ttl"];
    assert_eq!(
        (
            ttl["minSeconds"].as_u64(),
            ttl["defaultSeconds"].as_u64(),
            ttl["maxSeconds"].as_u64()
        ),
        (Some(0), Some(86400), Some(31536000))
    );
    assert_eq!(dist.data["spec"]["enabled"].as_bool(), Some(true));
    assert_eq!(dist.data["spec"]["regions"][0]["replicas"].as_i64(), Some(2));

    for (resource, expected) in [
        ("dist", &["READY", "REASON", "REGIONS", "AGE", "site"][..]),
        ("inval", &["DISTRIBUTION", "PHASE", "AGE"][..]),
        ("edgefleet", &["site"][..]),
    ] {
        let out = cluster
            .kubectl(&["get", resource, "-n", &ns])
            .await
            .expect("kubectl runs");
        let table = out.ok().expect("kubectl get").stdout;
        assert!(
            expected.iter().all(|c| table.contains(c)),
            "`kubectl get {resource}` lacks {expected:?}: {table}"
        );
    }
}

#[tokio::test]
async fn operator_runs_as_the_chart_service_account_and_reports_observed_generation() {
    let cluster = Cluster::shared().await.expect("local cluster");
    let ns = cluster.fresh_namespace("identity").await.expect("namespace");
    let release = install_chart(cluster, &format!("id-{ns}"), &ns, &[])
        .await
        .expect("helm install");
    let work = tempfile::tempdir().expect("temp dir");
    let kubeconfig = service_account_kubeconfig(cluster, &release, work.path())
        .await
        .expect("SA kubeconfig");

    // Least privilege: the chart's identity cannot read Secrets cluster-wide nor touch RBAC.
    let sa = format!(
        "system:serviceaccount:{}:{}",
        release.namespace,
        release.service_account()
    );
    for (verb, resource) in [
        ("delete", "namespaces"),
        ("create", "clusterroles"),
        ("delete", "customresourcedefinitions"),
    ] {
        let out = cluster
            .kubectl(&["auth", "can-i", verb, resource, "--as", &sa])
            .await
            .expect("kubectl runs");
        assert_eq!(out.stdout.trim(), "no", "the operator may {verb} {resource}");
    }

    let operator = Operator::start(&kubeconfig, &release, "identity-0", work.path(), &[])
        .await
        .expect("operator starts");
    for example in example_manifests() {
        cluster
            .kubectl(&["apply", "-n", &ns, "-f", &example.to_string_lossy()])
            .await
            .expect("kubectl")
            .ok()
            .expect("apply");
    }
    let client = cluster.client().await.expect("client");
    let distributions = edgefleet_e2e::resources::distributions(client.clone(), &ns);
    wait_for(
        "status.observedGeneration == metadata.generation",
        Duration::from_secs(30),
        || async {
            let dist = distributions.get("site").await?;
            let observed = dist.data["status"]["observedGeneration"].as_i64();
            Ok((observed.is_some() && observed == dist.metadata.generation).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.log()));

    // A spec change bumps the generation; the operator follows.
    cluster
        .kubectl(&[
            "patch",
            "-n",
            &ns,
            "dist",
            "site",
            "--type=merge",
            "-p",
            r#"{"spec":{"defaultRootObject":"home.html"}}"#,
        ])
        .await
        .expect("kubectl")
        .ok()
        .expect("patch");
    wait_for(
        "the new generation is observed",
        Duration::from_secs(30),
        || async {
            let dist = distributions.get("site").await?;
            let observed = dist.data["status"]["observedGeneration"].as_i64();
            Ok((dist.metadata.generation == Some(2) && observed == Some(2)).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.log()));

    let invalidations = edgefleet_e2e::resources::invalidations(client, &ns);
    wait_for(
        "the Invalidation has a phase",
        Duration::from_secs(30),
        || async {
            let inval = invalidations.get("site-release-2026-11-25").await?;
            Ok(inval.data["status"]["phase"].as_str().map(str::to_owned))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.log()));

    let metrics = reqwest::get(format!("{}/metrics", operator.base_url()))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.contains("edgefleet_operator_reconciliations_total"),
        "metrics lack reconcile counts:\n{metrics}"
    );
    let log = operator.log();
    assert!(
        !log.contains("forbidden"),
        "the chart's RBAC refused the operator something:\n{log}"
    );
}

/// `helm template` of the chart, as parsed YAML documents.
async fn render_chart(set: &[&str]) -> Vec<serde_json::Value> {
    let helm = edgefleet_e2e::tools::tool("helm").await.expect("helm is built");
    let chart = edgefleet_e2e::operator::chart_dir();
    let mut command = tokio::process::Command::new(helm);
    command
        .args(["template", "t"])
        .arg(&chart)
        .args(["--namespace", "edgefleet-system"]);
    for value in set {
        command.args(["--set", value]);
    }
    let out = edgefleet_e2e::process::run(command, None)
        .await
        .expect("helm runs")
        .ok()
        .expect("helm template");
    out.stdout
        .split("\n---")
        .filter_map(|doc| serde_yaml::from_str::<serde_json::Value>(doc).ok())
        .filter(|doc| doc.is_object())
        .collect()
}

fn find<'a>(docs: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[tokio::test]
async fn chart_lints_and_renders_a_locked_down_operator() {
    let helm = edgefleet_e2e::tools::tool("helm").await.expect("helm is built");
    let chart = edgefleet_e2e::operator::chart_dir();
    let mut lint = tokio::process::Command::new(helm);
    lint.args(["lint", "--strict"]).arg(&chart);
    edgefleet_e2e::process::run(lint, None)
        .await
        .expect("helm runs")
        .ok()
        .expect("helm lint --strict");

    let docs = render_chart(&[]).await;
    let deployment = find(&docs, "Deployment");
    assert_eq!(deployment.len(), 1, "one operator Deployment");
    let pod = &deployment[0]["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["capabilities"]["drop"][0], "ALL");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert!(container[probe]["httpGet"]["path"].is_string(), "{probe} missing");
    }
    assert!(
        container["resources"]["limits"]["memory"].is_string(),
        "memory limit missing"
    );
    assert_eq!(
        operator_env(&docs, "EDGEFLEET_LEADER_ELECT").as_deref(),
        Some("false")
    );
    assert!(
        find(&docs, "Role").is_empty(),
        "no Lease permissions without leader election"
    );
    assert_eq!(find(&docs, "ClusterRole").len(), 1);
    assert_eq!(find(&docs, "Service").len(), 1, "the metrics Service");

    // More than one replica turns leader election on, with Lease rights in its own namespace only.
    let docs = render_chart(&["replicaCount=2"]).await;
    assert_eq!(
        operator_env(&docs, "EDGEFLEET_LEADER_ELECT").as_deref(),
        Some("true")
    );
    let roles = find(&docs, "Role");
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0]["metadata"]["namespace"], "edgefleet-system");
    assert_eq!(roles[0]["rules"][0]["resources"][0], "leases");

    // Values reach the operator.
    let docs = render_chart(&["topology.regionLabel=example.com/region", "logging.format=text"]).await;
    assert_eq!(
        operator_env(&docs, "EDGEFLEET_REGION_LABEL").as_deref(),
        Some("example.com/region")
    );
    assert_eq!(
        operator_env(&docs, "EDGEFLEET_LOG_FORMAT").as_deref(),
        Some("text")
    );
}

/// The rules of every ClusterRole (or Role) that grant something on `resource`.
fn rules_for<'a>(docs: &'a [serde_json::Value], kind: &str, resource: &str) -> Vec<&'a serde_json::Value> {
    find(docs, kind)
        .into_iter()
        .flat_map(|role| role["rules"].as_array().into_iter().flatten())
        .filter(|rule| {
            rule["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r == resource))
        })
        .collect()
}

fn verbs(rule: &serde_json::Value) -> Vec<&str> {
    rule["verbs"]
        .as_array()
        .map(|v| v.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default()
}

fn operator_env(docs: &[serde_json::Value], name: &str) -> Option<String> {
    find(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn chart_grants_ingress_rights_only_as_far_as_the_ingress_values_need() {
    // Off (the default): no right on Ingresses at all, and the operator is told not to watch them.
    let docs = render_chart(&[]).await;
    assert!(rules_for(&docs, "ClusterRole", "ingresses").is_empty());
    assert_eq!(
        operator_env(&docs, "EDGEFLEET_INGRESS").as_deref(),
        Some("disabled")
    );
    assert_eq!(operator_env(&docs, "EDGEFLEET_INGRESS_ANNOTATIONS"), None);

    // On: managed like every owned kind, with the values passed on.
    let docs = render_chart(&[
        "ingress.enabled=true",
        "ingress.className=nginx",
        "ingress.tls.enabled=true",
        "ingress.annotations.cert-manager\\.io/cluster-issuer=letsencrypt",
        "ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/ssl-redirect=true",
    ])
    .await;
    let rules = rules_for(&docs, "ClusterRole", "ingresses");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["apiGroups"][0], "networking.k8s.io");
    assert_eq!(
        verbs(rules[0]),
        ["get", "list", "watch", "create", "patch", "delete"]
    );
    assert_eq!(
        operator_env(&docs, "EDGEFLEET_INGRESS").as_deref(),
        Some("enabled")
    );
    assert_eq!(
        operator_env(&docs, "EDGEFLEET_INGRESS_CLASS_NAME").as_deref(),
        Some("nginx")
    );
    assert_eq!(
        operator_env(&docs, "EDGEFLEET_INGRESS_TLS_SECRET").as_deref(),
        Some("{ingress}-tls")
    );
    let annotations: serde_json::Value = serde_json::from_str(
        &operator_env(&docs, "EDGEFLEET_INGRESS_ANNOTATIONS").expect("annotations passed"),
    )
    .expect("a JSON object");
    assert_eq!(
        annotations,
        serde_json::json!({
            "cert-manager.io/cluster-issuer": "letsencrypt",
            // A YAML boolean arrives as the string an annotation needs.
            "nginx.ingress.kubernetes.io/ssl-redirect": "true"
        })
    );

    // Turned off with removal: delete what was made, never create or change.
    let docs = render_chart(&["ingress.removeWhenDisabled=true"]).await;
    let rules = rules_for(&docs, "ClusterRole", "ingresses");
    assert_eq!(rules.len(), 1);
    assert_eq!(verbs(rules[0]), ["list", "watch", "delete"]);
    assert_eq!(
        operator_env(&docs, "EDGEFLEET_INGRESS").as_deref(),
        Some("remove")
    );

    // A TLS Secret name template that cannot name a Secret fails the install, not the operator.
    let helm = edgefleet_e2e::tools::tool("helm").await.expect("helm is built");
    let mut template = tokio::process::Command::new(helm);
    template
        .args(["template", "t"])
        .arg(edgefleet_e2e::operator::chart_dir())
        .args([
            "--set",
            "ingress.enabled=true",
            "--set",
            "ingress.tls.enabled=true",
        ])
        .args(["--set", "ingress.tls.secretName=TLS_{ingress}"]);
    let out = edgefleet_e2e::process::run(template, None)
        .await
        .expect("helm runs");
    let refused = out
        .ok()
        .expect_err("helm template accepted an invalid secretName")
        .to_string();
    assert!(refused.contains("ingress.tls.secretName"), "{refused}");
}

#[tokio::test]
async fn with_a_watch_namespace_only_the_nodes_need_a_cluster_role() {
    let docs = render_chart(&["watchNamespace=web", "ingress.enabled=true"]).await;
    assert_eq!(
        operator_env(&docs, "EDGEFLEET_WATCH_NAMESPACE").as_deref(),
        Some("web")
    );
    let cluster_roles = find(&docs, "ClusterRole");
    assert_eq!(cluster_roles.len(), 1);
    let cluster_rules = cluster_roles[0]["rules"].as_array().expect("rules");
    assert_eq!(cluster_rules.len(), 1, "{cluster_rules:?}");
    assert_eq!(cluster_rules[0]["resources"], serde_json::json!(["nodes"]));
    assert_eq!(verbs(&cluster_rules[0]), ["list", "watch"]);

    let roles: Vec<_> = find(&docs, "Role")
        .into_iter()
        .filter(|r| r["metadata"]["namespace"] == "web")
        .collect();
    assert_eq!(roles.len(), 1, "one Role in the watched namespace");
    for resource in [
        "distributions",
        "deployments",
        "secrets",
        "roles",
        "pods",
        "events",
        "ingresses",
    ] {
        assert_eq!(
            rules_for(&docs, "Role", resource).len(),
            1,
            "{resource} granted in the watched namespace"
        );
    }
    // Edge pods: watched for what keeps them from running, listed for the edges an
    // Invalidation goes to; never read one by one.
    assert_eq!(verbs(rules_for(&docs, "Role", "pods")[0]), ["list", "watch"]);
    let bindings: Vec<_> = find(&docs, "RoleBinding")
        .into_iter()
        .filter(|b| b["metadata"]["namespace"] == "web")
        .collect();
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0]["roleRef"]["name"], roles[0]["metadata"]["name"]);
    assert_eq!(bindings[0]["subjects"][0]["namespace"], "edgefleet-system");

    // Without it the same rules are cluster-wide, and no Role is rendered for them.
    let docs = render_chart(&[]).await;
    assert!(find(&docs, "Role").is_empty(), "{:?}", find(&docs, "Role"));
    assert_eq!(operator_env(&docs, "EDGEFLEET_WATCH_NAMESPACE"), None);
    assert_eq!(rules_for(&docs, "ClusterRole", "deployments").len(), 1);
    let pods = rules_for(&docs, "ClusterRole", "pods");
    assert_eq!(pods.len(), 1);
    assert_eq!(verbs(pods[0]), ["list", "watch"]);
}
