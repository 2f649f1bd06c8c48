//! The edge pods of one region: a Deployment pinned to the region's nodes and spread over its
//! zones and hosts, and the PodDisruptionBudget that keeps voluntary evictions gradual.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction,
    LocalObjectReference, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::edge_config::{CACHE_DISK_PATH, UPLOAD_PORT_NAME};
use super::{EdgeSizing, Settings, hash, metadata, names, quantity, secrets};
use crate::api::{Distribution, Region};

/// The edge's user and group in its image (distroless `nonroot`).
const EDGE_UID: i64 = 65532;
/// Node label every node carries with its own name.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
use edgefleet_config::{LISTEN_ADMIN_ENV, LISTEN_DATA_ENV, LISTEN_UPLOAD_ENV, admin};
/// Memory an edge needs besides its cache when `spec.edge.resources` is not given.
const MIN_OVERHEAD_BYTES: u64 = 64 << 20;

/// Everything about the pod that only a new pod can apply; its hash is a pod-template
/// annotation, so changing any of it rolls the Deployment and nothing else does.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PodInputs {
    pub(super) image: String,
    pub(super) pull_policy: Option<String>,
    pub(super) pull_secrets: Vec<String>,
    pub(super) resources: ResourceRequirements,
    pub(super) sizing: EdgeSizing,
    pub(super) listen: edgefleet_config::Listen,
}

impl PodInputs {
    pub(super) fn new(dist: &Distribution, settings: &Settings, sizing: EdgeSizing) -> Self {
        Self {
            image: dist
                .spec
                .edge
                .image
                .clone()
                .unwrap_or_else(|| settings.edge_image.clone()),
            pull_policy: settings.edge_image_pull_policy.clone(),
            pull_secrets: settings.edge_image_pull_secrets.clone(),
            resources: dist
                .spec
                .edge
                .resources
                .clone()
                .unwrap_or_else(|| derived_resources(sizing.memory_bytes)),
            sizing,
            listen: listen(dist),
        }
    }

    fn hash(&self) -> String {
        let resources = serde_json::to_string(&self.resources).unwrap_or_default();
        let disk = self.sizing.disk_bytes.unwrap_or(0).to_string();
        let memory = self.sizing.memory_bytes.to_string();
        // The upload address counts only when there is one, so enabling uploads rolls the pods
        // (a new port) while pods of Distributions without uploads keep their hash.
        let listen = match self.listen.upload {
            Some(upload) => format!("{} {} {upload}", self.listen.data, self.listen.admin),
            None => format!("{} {}", self.listen.data, self.listen.admin),
        };
        // Likewise how the image is pulled: only when set, so pods that never set it keep theirs.
        let pull = match (&self.pull_policy, self.pull_secrets.is_empty()) {
            (None, true) => String::new(),
            (policy, _) => format!("{policy:?} {:?}", self.pull_secrets),
        };
        let image = format!("{}{pull}", self.image);
        hash::short_hash([
            image.as_bytes(),
            resources.as_bytes(),
            memory.as_bytes(),
            disk.as_bytes(),
            listen.as_bytes(),
        ])
    }
}

/// The pod's listen addresses: the defaults, plus the upload port when uploads are enabled.
fn listen(dist: &Distribution) -> edgefleet_config::Listen {
    let mut listen = edgefleet_config::Listen::default();
    if secrets::upload(dist).is_some() {
        listen.upload = Some(listen.upload_addr());
    }
    listen
}

/// The cache plus a quarter of it (at least 64 MiB) for connections, buffers and the index;
/// requests equal limits so an edge is never the first to be evicted for memory.
fn derived_resources(cache_bytes: u64) -> ResourceRequirements {
    let memory = quantity::mebibytes(cache_bytes + (cache_bytes / 4).max(MIN_OVERHEAD_BYTES));
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".to_owned())),
            ("memory".to_owned(), memory.clone()),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), memory)])),
        ..ResourceRequirements::default()
    }
}

/// The Deployment `<dist>-<region>`.
pub(super) fn deployment(
    dist: &Distribution,
    namespace: &str,
    region: &Region,
    settings: &Settings,
    pod: &PodInputs,
) -> Deployment {
    let name = dist.metadata.name.clone().unwrap_or_default();
    let selector = names::region_selector(&name, &region.name);
    let replicas = if dist.spec.enabled { region.replicas } else { 0 };
    Deployment {
        metadata: metadata(
            dist,
            names::regional(&name, &region.name),
            names::regional_labels(&name, &region.name),
        ),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            // One extra pod at a time and never one fewer: a rollout keeps the region's capacity
            // and its warm caches until the new pods are ready.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(3),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(names::regional_labels(&name, &region.name)),
                    annotations: Some(BTreeMap::from([(
                        names::POD_INPUTS_ANNOTATION.to_owned(),
                        pod.hash(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(&name, namespace, region, settings, pod, selector)),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn pod_spec(
    name: &str,
    namespace: &str,
    region: &Region,
    settings: &Settings,
    pod: &PodInputs,
    selector: BTreeMap<String, String>,
) -> PodSpec {
    let mut volumes = vec![Volume {
        name: "secrets".to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(names::edge(name)),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if let Some(bytes) = pod.sizing.disk_bytes {
        volumes.push(Volume {
            name: "cache".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(quantity::mebibytes(bytes)),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    PodSpec {
        service_account_name: Some(names::edge(name)),
        // The edge reads its configuration from the API (a watched ConfigMap).
        automount_service_account_token: Some(true),
        // Service environment variables would grow with every Service in the namespace.
        enable_service_links: Some(false),
        affinity: Some(affinity(region, settings)),
        topology_spread_constraints: Some(vec![
            spread(&settings.zone_label, "DoNotSchedule", &selector),
            spread(HOSTNAME_LABEL, "ScheduleAnyway", &selector),
        ]),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(EDGE_UID),
            run_as_group: Some(EDGE_UID),
            fs_group: Some(EDGE_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container(name, namespace, region, pod)],
        image_pull_secrets: (!pod.pull_secrets.is_empty()).then(|| {
            pod.pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

/// Required: the region's nodes (and, when listed, only its chosen zones).
fn affinity(region: &Region, settings: &Settings) -> Affinity {
    let mut requirements = vec![NodeSelectorRequirement {
        key: settings.region_label.clone(),
        operator: "In".to_owned(),
        values: Some(vec![region.name.clone()]),
    }];
    if !region.zones.is_empty() {
        requirements.push(NodeSelectorRequirement {
            key: settings.zone_label.clone(),
            operator: "In".to_owned(),
            values: Some(region.zones.clone()),
        });
    }
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(requirements),
                    ..NodeSelectorTerm::default()
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// Even spread over `key`; counted per revision (`pod-template-hash`) so a rollout's new pods
/// spread as well as the old ones did.
fn spread(
    key: &str,
    when_unsatisfiable: &str,
    selector: &BTreeMap<String, String>,
) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew: 1,
        topology_key: key.to_owned(),
        when_unsatisfiable: when_unsatisfiable.to_owned(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector.clone()),
            ..LabelSelector::default()
        }),
        match_label_keys: Some(vec!["pod-template-hash".to_owned()]),
        ..TopologySpreadConstraint::default()
    }
}

fn container(name: &str, namespace: &str, region: &Region, pod: &PodInputs) -> Container {
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(admin::PORT_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let mut mounts = vec![VolumeMount {
        name: "secrets".to_owned(),
        mount_path: secrets::MOUNT_PATH.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    if pod.sizing.disk_bytes.is_some() {
        mounts.push(VolumeMount {
            name: "cache".to_owned(),
            mount_path: CACHE_DISK_PATH.to_owned(),
            ..VolumeMount::default()
        });
    }
    Container {
        name: "edge".to_owned(),
        image: Some(pod.image.clone()),
        image_pull_policy: pod.pull_policy.clone(),
        // The configuration names the secret files relative to this directory.
        working_dir: Some(secrets::MOUNT_PATH.to_owned()),
        args: Some(vec![
            "--config-map".to_owned(),
            format!("{namespace}/{}", names::config_map(name)),
        ]),
        env: Some(
            [
                env(edgefleet_config::REGION_ENV, region.name.clone()),
                // Listen addresses belong to the pod (they match its ports and change only with a
                // restart), so they are set here rather than in the shared, hot-reloaded config.
                env(LISTEN_DATA_ENV, pod.listen.data.to_string()),
                env(LISTEN_ADMIN_ENV, pod.listen.admin.to_string()),
            ]
            .into_iter()
            .chain(pod.listen.upload.map(|a| env(LISTEN_UPLOAD_ENV, a.to_string())))
            .collect(),
        ),
        ports: Some(
            [
                port("http", pod.listen.data.port()),
                port(admin::PORT_NAME, pod.listen.admin.port()),
            ]
            .into_iter()
            .chain(pod.listen.upload.map(|a| port(UPLOAD_PORT_NAME, a.port())))
            .collect(),
        ),
        readiness_probe: Some(probe(admin::READY_PATH, 2, 2)),
        liveness_probe: Some(probe(admin::HEALTH_PATH, 10, 3)),
        resources: Some(pod.resources.clone()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..EnvVar::default()
    }
}

fn port(name: &str, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(number),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

/// At most one edge of the region evicted at a time (drains, upgrades).
pub(super) fn disruption_budget(dist: &Distribution, region: &Region) -> PodDisruptionBudget {
    let name = dist.metadata.name.clone().unwrap_or_default();
    PodDisruptionBudget {
        metadata: metadata(
            dist,
            names::regional(&name, &region.name),
            names::regional_labels(&name, &region.name),
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(names::region_selector(&name, &region.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::{example, settings, sizing, uploads};

    fn rendered(dist: &Distribution) -> Deployment {
        let pod = PodInputs::new(dist, &settings(), sizing());
        deployment(dist, "web", &dist.spec.regions[0], &settings(), &pod)
    }

    fn pod_hash(deployment: &Deployment) -> String {
        deployment
            .spec
            .as_ref()
            .expect("spec")
            .template
            .metadata
            .as_ref()
            .expect("meta")
            .annotations
            .as_ref()
            .expect("annotations")[names::POD_INPUTS_ANNOTATION]
            .clone()
    }

    #[test]
    fn pinned_to_the_region_and_spread_over_zones_and_hosts() {
        let d = rendered(&example());
        let pod = d
            .spec
            .as_ref()
            .expect("spec")
            .template
            .spec
            .as_ref()
            .expect("pod");
        let terms = &pod
            .affinity
            .as_ref()
            .expect("affinity")
            .node_affinity
            .as_ref()
            .expect("node")
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .expect("required")
            .node_selector_terms;
        let requirement = &terms[0].match_expressions.as_ref().expect("expressions")[0];
        assert_eq!(requirement.key, "example.com/region");
        assert_eq!(requirement.values.as_deref(), Some(&["eu-west".to_owned()][..]));
        let keys: Vec<&str> = pod
            .topology_spread_constraints
            .as_ref()
            .expect("spread")
            .iter()
            .map(|c| c.topology_key.as_str())
            .collect();
        assert_eq!(keys, ["example.com/zone", "kubernetes.io/hostname"]);
        let env = &pod.containers[0].env.as_ref().expect("env")[0];
        assert_eq!(
            (env.name.as_str(), env.value.as_deref()),
            ("EDGEFLEET_REGION", Some("eu-west"))
        );
    }

    #[test]
    fn disabled_scales_to_zero() {
        let mut dist = example();
        dist.spec.enabled = false;
        assert_eq!(rendered(&dist).spec.expect("spec").replicas, Some(0));
    }

    #[test]
    fn only_pod_level_inputs_change_the_pod_template() {
        let dist = example();
        let before = rendered(&dist);
        let mut config_only = dist.clone();
        config_only.spec.default_behavior.ttl.default_seconds = 5;
        config_only.spec.aliases.push("other.example.test".into());
        assert_eq!(
            rendered(&config_only),
            before,
            "config-only changes leave the Deployment alone"
        );

        let mut image = dist.clone();
        image.spec.edge.image = Some("edge:2".into());
        assert_ne!(pod_hash(&rendered(&image)), pod_hash(&before));

        let bigger = PodInputs::new(
            &dist,
            &settings(),
            EdgeSizing {
                memory_bytes: 512 << 20,
                disk_bytes: None,
            },
        );
        let bigger = deployment(&dist, "web", &dist.spec.regions[0], &settings(), &bigger);
        assert_ne!(pod_hash(&bigger), pod_hash(&before), "cache size needs a restart");
    }

    #[test]
    fn pull_settings_reach_the_pod_and_roll_it_only_when_set() {
        let dist = example();
        let before = rendered(&dist);
        let mut pulling = settings();
        pulling.edge_image_pull_policy = Some("Always".into());
        pulling.edge_image_pull_secrets = vec!["registry".into()];
        let pod = PodInputs::new(&dist, &pulling, sizing());
        let after = deployment(&dist, "web", &dist.spec.regions[0], &pulling, &pod);
        let spec = after
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.clone())
            .expect("pod spec");
        assert_eq!(spec.containers[0].image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            spec.image_pull_secrets,
            Some(vec![LocalObjectReference {
                name: "registry".into()
            }])
        );
        assert_ne!(
            pod_hash(&after),
            pod_hash(&before),
            "a pull setting needs new pods"
        );
        let unset = before
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.clone())
            .expect("pod spec");
        assert_eq!(
            (
                unset.containers[0].image_pull_policy.clone(),
                unset.image_pull_secrets
            ),
            (None, None)
        );
    }

    #[test]
    fn resources_are_derived_from_the_cache_unless_given() {
        let pod = PodInputs::new(&example(), &settings(), sizing());
        let memory = &pod.resources.limits.as_ref().expect("limits")["memory"];
        assert_eq!(memory.0, "320Mi", "256Mi of cache plus a quarter");
    }

    #[test]
    fn uploads_add_a_port_and_its_address_and_roll_the_pods() {
        let plain = example();
        let mut uploading = example();
        uploading.spec.upload_acceleration = uploads("1Gi");
        let container = |d: &Deployment| {
            d.spec
                .as_ref()
                .expect("spec")
                .template
                .spec
                .as_ref()
                .expect("pod")
                .containers[0]
                .clone()
        };
        let with = rendered(&uploading);
        let edge = container(&with);
        let ports: Vec<_> = edge
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [
                ("http".into(), 8080),
                ("admin".into(), 9901),
                ("upload".into(), 8090)
            ]
        );
        assert!(
            edge.env
                .iter()
                .flatten()
                .any(|e| e.name == LISTEN_UPLOAD_ENV && e.value.as_deref() == Some("0.0.0.0:8090"))
        );
        let without = rendered(&plain);
        assert!(
            !container(&without)
                .ports
                .iter()
                .flatten()
                .any(|p| p.name.as_deref() == Some("upload"))
        );
        assert_ne!(pod_hash(&with), pod_hash(&without), "a new port needs new pods");
        uploading
            .spec
            .upload_acceleration
            .as_mut()
            .expect("upload")
            .enabled = false;
        assert_eq!(pod_hash(&rendered(&uploading)), pod_hash(&without));
    }
}
