//! Pure rendering: a Distribution (with the settings the chart gave the operator and the inputs
//! the controller looked up) becomes the Kubernetes objects of its edge fleet and the edges'
//! configuration. No I/O here; the controller applies what this returns.

mod access;
mod edge_config;
pub mod hash;
mod ingress;
pub mod names;
mod network;
pub mod quantity;
pub mod secrets;
mod workload;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

pub use edge_config::{CACHE_DISK_PATH, SERVICE_PORT, UPLOAD_SERVICE_PORT, edge_config};
pub use ingress::{IngressSettings, Ingresses, InvalidSecretNameTemplate, SecretNameTemplate};
pub use network::upload_endpoint;
pub use secrets::{Credentials, S3Credentials, UploadKeys};

use crate::api::{Distribution, EdgeSpec, reasons};

/// Settings from the chart that shape what the operator renders.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Node label holding the region name.
    pub region_label: String,
    /// Node label holding the zone name.
    pub zone_label: String,
    /// Edge image used unless a Distribution overrides it.
    pub edge_image: String,
    /// How the kubelet pulls edge images (`Always`, `IfNotPresent`, `Never`); `None`: its default.
    pub edge_image_pull_policy: Option<String>,
    /// Secrets (in each Distribution's namespace) the kubelet pulls edge images with.
    pub edge_image_pull_secrets: Vec<String>,
    /// Whether (and how) each alias gets an Ingress.
    pub ingress: Ingresses,
}

/// What the controller looked up for rendering.
#[derive(Clone)]
pub struct Inputs {
    /// The fleet's admin token: generated once, then kept in the edge Secret.
    pub admin_token: String,
    /// What was copied from the referenced Secrets: origin key pairs and upload client keys.
    pub credentials: Credentials,
}

// The token is a credential: never in logs.
impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inputs")
            .field("admin_token", &"..")
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// Cache sizes in bytes, from `spec.edge`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeSizing {
    /// Bytes of memory for cached objects.
    pub memory_bytes: u64,
    /// Bytes of the optional disk tier.
    pub disk_bytes: Option<u64>,
}

impl EdgeSizing {
    /// Reads the quantities of `spec.edge`; the schema accepts any string there, so a bad one is
    /// reported.
    pub fn from_spec(edge: &EdgeSpec) -> Result<Self, Blocker> {
        let invalid = |field: &str, value: &str| Blocker::InvalidSpec {
            field: format!("edge.{field}"),
            message: format!("{value:?} is not a positive quantity of bytes such as 256Mi or 1Gi"),
        };
        let memory_bytes = quantity::to_bytes(&edge.cache_memory)
            .filter(|b| *b > 0)
            .ok_or_else(|| invalid("cacheMemory", &edge.cache_memory.0))?;
        let disk_bytes = match &edge.cache_disk {
            None => None,
            Some(q) => Some(
                quantity::to_bytes(q)
                    .filter(|b| *b > 0)
                    .ok_or_else(|| invalid("cacheDisk", &q.0))?,
            ),
        };
        Ok(Self {
            memory_bytes,
            disk_bytes,
        })
    }
}

/// Why a Distribution cannot be rendered or applied: each becomes the reason of its Degraded
/// condition, with a message saying what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// A credentials Secret (or a key in it) that an origin references is missing.
    OriginSecretMissing {
        /// The origin.
        origin: String,
        /// The Secret it references.
        secret: String,
        /// Missing or empty keys; empty when the whole Secret is missing.
        missing_keys: Vec<String>,
    },
    /// A behavior or origin group names an origin that does not exist.
    UnknownOrigin {
        /// Where, e.g. `behaviors[1].targetOrigin`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Upload acceleration is enabled but its client keys Secret is missing or unusable.
    UploadKeysUnusable {
        /// The Secret `uploadAcceleration.clientKeysSecretRef` names.
        secret: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A setting the edge cannot use.
    InvalidSpec {
        /// Where.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An object this Distribution needs already exists and belongs to someone else.
    NameConflict {
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
    },
}

impl Blocker {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Blocker::OriginSecretMissing { .. } => reasons::ORIGIN_SECRET_MISSING,
            Blocker::UnknownOrigin { .. } => reasons::UNKNOWN_ORIGIN,
            Blocker::UploadKeysUnusable { .. } => reasons::UPLOAD_KEYS_SECRET_MISSING,
            Blocker::InvalidSpec { .. } => reasons::INVALID_SPEC,
            Blocker::NameConflict { .. } => reasons::NAME_CONFLICT,
        }
    }

    /// What is wrong and what to do about it.
    pub fn message(&self) -> String {
        match self {
            Blocker::OriginSecretMissing {
                origin,
                secret,
                missing_keys,
            } if missing_keys.is_empty() => format!(
                "origin {origin:?} references Secret {secret:?}, which does not exist in this namespace: \
                 create it with the origin's access key pair"
            ),
            Blocker::OriginSecretMissing {
                origin,
                secret,
                missing_keys,
            } => format!(
                "origin {origin:?}: Secret {secret:?} has no (or an empty) {}: add it, or point \
                 credentialsSecretRef.accessKeyIdKey/secretAccessKeyKey at the keys it has",
                missing_keys.join(" and ")
            ),
            Blocker::UnknownOrigin { field, message } => format!(
                "spec.{field}: {message}; name an origin of spec.origins or a group of spec.originGroups"
            ),
            Blocker::UploadKeysUnusable { secret, problem } => format!(
                "uploadAcceleration.clientKeysSecretRef names Secret {secret:?}, but {problem}: give it one \
                 entry per client, key = access key id, value = secret access key"
            ),
            Blocker::InvalidSpec { field, message } => format!("spec.{field}: {message}"),
            Blocker::NameConflict { kind, name } => format!(
                "{kind} {name:?} already exists and is not owned by this Distribution: delete or \
                 rename it, or rename the Distribution or region"
            ),
        }
    }
}

/// The kinds of objects a Distribution owns, in the order they are applied: identity and
/// configuration before the pods that use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// The edges' ServiceAccount.
    ServiceAccount,
    /// What the edges may read.
    Role,
    /// Grants the Role to the ServiceAccount.
    RoleBinding,
    /// Admin token and origin credentials.
    Secret,
    /// The edge configuration.
    ConfigMap,
    /// Regional and fleet Services.
    Service,
    /// Per-region disruption budgets.
    PodDisruptionBudget,
    /// Per-region edges.
    Deployment,
    /// Outside traffic per alias, when the chart enables it; last, once the edges exist.
    Ingress,
}

impl Kind {
    /// Whether objects of this kind are written only once the others exist: a RoleBinding after
    /// its Role (the API server checks the permissions it grants against the Role's rules), a
    /// Deployment after what its pods use (ServiceAccount, Secret, ConfigMap). Services go with
    /// the Deployments: the API server allocates ClusterIPs one at a time, which makes Services
    /// the slowest writes by far when many Distributions are created, and nothing the pods need
    /// waits for them.
    pub fn after_the_rest(self) -> bool {
        matches!(self, Kind::RoleBinding | Kind::Deployment | Kind::Service)
    }

    /// The kind as the API knows it, for requests about any object of it.
    pub fn api_resource(self) -> kube::core::ApiResource {
        use kube::core::ApiResource;
        match self {
            Kind::ServiceAccount => ApiResource::erase::<ServiceAccount>(&()),
            Kind::Role => ApiResource::erase::<Role>(&()),
            Kind::RoleBinding => ApiResource::erase::<RoleBinding>(&()),
            Kind::Secret => ApiResource::erase::<Secret>(&()),
            Kind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            Kind::Service => ApiResource::erase::<Service>(&()),
            Kind::PodDisruptionBudget => ApiResource::erase::<PodDisruptionBudget>(&()),
            Kind::Deployment => ApiResource::erase::<Deployment>(&()),
            Kind::Ingress => ApiResource::erase::<Ingress>(&()),
        }
    }

    /// Every kind, in apply order.
    pub const ALL: [Kind; 9] = [
        Kind::ServiceAccount,
        Kind::Role,
        Kind::RoleBinding,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::Service,
        Kind::PodDisruptionBudget,
        Kind::Deployment,
        Kind::Ingress,
    ];

    /// The kind's `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::ServiceAccount | Kind::Secret | Kind::ConfigMap | Kind::Service => "v1",
            Kind::Role | Kind::RoleBinding => "rbac.authorization.k8s.io/v1",
            Kind::PodDisruptionBudget => "policy/v1",
            Kind::Deployment => "apps/v1",
            Kind::Ingress => "networking.k8s.io/v1",
        }
    }

    /// The kind's name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Role => "Role",
            Kind::RoleBinding => "RoleBinding",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::Service => "Service",
            Kind::PodDisruptionBudget => "PodDisruptionBudget",
            Kind::Deployment => "Deployment",
            Kind::Ingress => "Ingress",
        }
    }
}

/// One rendered object: its kind, name and the body to server-side apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// Kind.
    pub kind: Kind,
    /// Name (in the Distribution's namespace).
    pub name: String,
    /// The full object, `apiVersion` and `kind` included.
    pub body: serde_json::Value,
}

/// The objects of one region.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionObjects {
    /// Region name.
    pub region: String,
    /// `<dist>-<region>` edges.
    pub deployment: Deployment,
    /// Their disruption budget.
    pub disruption_budget: PodDisruptionBudget,
    /// `<dist>-<region>` Service.
    pub service: Service,
}

/// Everything a Distribution owns.
#[derive(Clone, Debug, PartialEq)]
pub struct Fleet {
    /// The edges' ServiceAccount.
    pub service_account: ServiceAccount,
    /// What the edges may read.
    pub role: Role,
    /// Grants it.
    pub role_binding: RoleBinding,
    /// Admin token and origin credentials.
    pub secret: Secret,
    /// The rendered edge configuration.
    pub config_map: ConfigMap,
    /// The Service over every region.
    pub service: Service,
    /// Per-region objects, in `spec.regions` order.
    pub regions: Vec<RegionObjects>,
    /// One per alias when Ingresses are enabled, in `spec.aliases` order.
    pub ingresses: Vec<Ingress>,
}

impl Fleet {
    /// Every object as a manifest, in apply order.
    pub fn manifests(&self) -> Result<Vec<Manifest>, serde_json::Error> {
        let mut out = vec![
            manifest(Kind::ServiceAccount, &self.service_account)?,
            manifest(Kind::Role, &self.role)?,
            manifest(Kind::RoleBinding, &self.role_binding)?,
            manifest(Kind::Secret, &self.secret)?,
            manifest(Kind::ConfigMap, &self.config_map)?,
            manifest(Kind::Service, &self.service)?,
        ];
        for region in &self.regions {
            out.push(manifest(Kind::Service, &region.service)?);
        }
        for region in &self.regions {
            out.push(manifest(Kind::PodDisruptionBudget, &region.disruption_budget)?);
        }
        for region in &self.regions {
            out.push(manifest(Kind::Deployment, &region.deployment)?);
        }
        for ingress in &self.ingresses {
            out.push(manifest(Kind::Ingress, ingress)?);
        }
        Ok(out)
    }
}

fn manifest<K>(kind: Kind, object: &K) -> Result<Manifest, serde_json::Error>
where
    K: Resource<DynamicType = ()> + serde::Serialize,
{
    let mut body = serde_json::to_value(object)?;
    if let Some(map) = body.as_object_mut() {
        map.insert("apiVersion".into(), K::api_version(&()).into());
        map.insert("kind".into(), K::kind(&()).into());
    }
    Ok(Manifest {
        kind,
        name: object.meta().name.clone().unwrap_or_default(),
        body,
    })
}

/// Renders everything `dist` owns, or every reason it cannot be.
pub fn render(dist: &Distribution, settings: &Settings, inputs: &Inputs) -> Result<Fleet, Vec<Blocker>> {
    let name = dist.metadata.name.clone().unwrap_or_default();
    let Some(namespace) = dist.metadata.namespace.clone() else {
        return Err(vec![Blocker::InvalidSpec {
            field: "metadata.namespace".into(),
            message: "a Distribution lives in a namespace".into(),
        }]);
    };
    let sizing = EdgeSizing::from_spec(&dist.spec.edge).map_err(|b| vec![b])?;
    let config = edge_config(dist, &namespace, &sizing)?;
    let yaml = config.to_yaml().map_err(|e| {
        vec![Blocker::InvalidSpec {
            field: "spec".into(),
            message: e.to_string(),
        }]
    })?;
    let secret = secrets::secret(dist, inputs);
    let config_map = ConfigMap {
        metadata: metadata(dist, names::config_map(&name), names::labels(&name)),
        data: Some(BTreeMap::from([(
            edgefleet_config::CONFIG_MAP_KEY.to_owned(),
            yaml,
        )])),
        ..ConfigMap::default()
    };
    let pod = workload::PodInputs::new(dist, settings, sizing);
    let regions = dist
        .spec
        .regions
        .iter()
        .map(|region| RegionObjects {
            region: region.name.clone(),
            deployment: workload::deployment(dist, &namespace, region, settings, &pod),
            disruption_budget: workload::disruption_budget(dist, region),
            service: network::regional_service(dist, region),
        })
        .collect();
    Ok(Fleet {
        service_account: access::service_account(dist),
        role: access::role(dist),
        role_binding: access::role_binding(dist, &namespace),
        secret,
        config_map,
        service: network::fleet_service(dist),
        regions,
        ingresses: match &settings.ingress {
            Ingresses::Enabled(ingress) => ingress::ingresses(dist, ingress),
            Ingresses::Disabled | Ingresses::Removing => Vec::new(),
        },
    })
}

/// Name, namespace, labels and the controller owner reference that lets the garbage collector
/// delete the object with its Distribution.
fn metadata(dist: &Distribution, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: dist.metadata.namespace.clone(),
        labels: Some(labels),
        owner_references: dist.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `examples/distribution.yaml`, as the API server returns it (defaults applied, uid set).
    pub(crate) fn example() -> Distribution {
        let text = include_str!("../../../examples/distribution.yaml");
        let mut dist: Distribution = serde_yaml::from_str(text).expect("the example parses");
        dist.metadata.namespace = Some("web".into());
        dist.metadata.uid = Some("0b9f7a4e-0000-4000-8000-000000000001".into());
        dist
    }

    /// Upload acceleration into the example's `bucket` origin, client keys in Secret `uploaders`.
    pub(crate) fn uploads(max_object_size: &str) -> Option<crate::api::UploadAcceleration> {
        Some(crate::api::UploadAcceleration {
            enabled: true,
            target_origin: "bucket".into(),
            client_keys_secret_ref: crate::api::SecretRef {
                name: "uploaders".into(),
            },
            max_object_size: k8s_openapi::apimachinery::pkg::api::resource::Quantity(max_object_size.into()),
            host: None,
        })
    }

    pub(crate) fn settings() -> Settings {
        Settings {
            region_label: "example.com/region".into(),
            zone_label: "example.com/zone".into(),
            edge_image: "ghcr.io/edgefleet/edge:test".into(),
            edge_image_pull_policy: None,
            edge_image_pull_secrets: Vec::new(),
            ingress: Ingresses::Disabled,
        }
    }

    pub(crate) fn sizing() -> EdgeSizing {
        EdgeSizing {
            memory_bytes: 256 << 20,
            disk_bytes: None,
        }
    }

    pub(crate) fn inputs() -> Inputs {
        Inputs {
            admin_token: "tok3n-value".into(),
            credentials: Credentials {
                origins: BTreeMap::from([(
                    "bucket".to_owned(),
                    S3Credentials {
                        access_key_id: b"AKIDEXAMPLE".to_vec(),
                        secret_access_key: b"s3cr3t-access".to_vec(),
                    },
                )]),
                upload_keys: None,
            },
        }
    }

    #[test]
    fn every_object_is_owned_by_the_distribution_and_labelled() {
        let fleet = render(&example(), &settings(), &inputs()).expect("renders");
        let manifests = fleet.manifests().expect("serialises");
        // SA, Role, RoleBinding, Secret, ConfigMap, fleet Service, then 3 x (Service, PDB, Deployment).
        assert_eq!(manifests.len(), 6 + 3 * 3);
        for m in &manifests {
            let meta = &m.body["metadata"];
            assert_eq!(meta["namespace"], "web", "{}", m.name);
            assert_eq!(meta["ownerReferences"][0]["kind"], "Distribution", "{}", m.name);
            assert_eq!(meta["ownerReferences"][0]["controller"], true, "{}", m.name);
            assert_eq!(meta["labels"][names::DISTRIBUTION_LABEL], "site", "{}", m.name);
        }
        for m in &manifests {
            assert_eq!(m.body["apiVersion"], m.kind.api_version(), "{}", m.name);
            assert_eq!(m.body["kind"], m.kind.name(), "{}", m.name);
        }
        let names: Vec<&str> = manifests.iter().map(|m| m.name.as_str()).collect();
        assert!(names.contains(&"site-ap-south") && names.contains(&"site-edge-config"));
    }

    #[test]
    fn ingresses_come_last_and_only_when_enabled() {
        let dist = example();
        assert!(!dist.spec.aliases.is_empty(), "the example has aliases");
        for off in [Ingresses::Disabled, Ingresses::Removing] {
            let settings = Settings {
                ingress: off.clone(),
                ..settings()
            };
            let manifests = render(&dist, &settings, &inputs())
                .expect("renders")
                .manifests()
                .expect("serialises");
            assert!(manifests.iter().all(|m| m.kind != Kind::Ingress), "{off:?}");
        }
        let settings = Settings {
            ingress: Ingresses::Enabled(IngressSettings::default()),
            ..settings()
        };
        let manifests = render(&dist, &settings, &inputs())
            .expect("renders")
            .manifests()
            .expect("serialises");
        let kinds: Vec<Kind> = manifests.iter().map(|m| m.kind).collect();
        let first = kinds
            .iter()
            .position(|k| *k == Kind::Ingress)
            .expect("Ingresses rendered");
        assert_eq!(kinds[first..].len(), dist.spec.aliases.len());
        assert!(kinds[first..].iter().all(|k| *k == Kind::Ingress));
        assert!(kinds[..first].contains(&Kind::Deployment));
        for m in &manifests[first..] {
            assert_eq!(m.body["apiVersion"], "networking.k8s.io/v1");
            assert_eq!(m.body["kind"], "Ingress");
        }
    }

    #[test]
    fn the_fleet_service_prefers_close_endpoints() {
        let fleet = render(&example(), &settings(), &inputs()).expect("renders");
        let spec = fleet.service.spec.expect("spec");
        assert_eq!(spec.traffic_distribution.as_deref(), Some("PreferClose"));
        assert_eq!(spec.selector.expect("selector").get(names::REGION_LABEL), None);
    }

    #[test]
    fn the_config_map_holds_no_secret_and_a_secret_change_rolls_no_pod() {
        let fleet = render(&example(), &settings(), &inputs()).expect("renders");
        let yaml = &fleet.config_map.data.as_ref().expect("data")[edgefleet_config::CONFIG_MAP_KEY];
        for secret in ["tok3n-value", "AKIDEXAMPLE", "s3cr3t-access"] {
            assert!(!yaml.contains(secret), "{yaml}");
        }
        assert!(yaml.contains("tokenFile: admin-token"), "{yaml}");
        let mut rotated = inputs();
        rotated.admin_token = "other".into();
        let after = render(&example(), &settings(), &rotated).expect("renders");
        assert_eq!(fleet.config_map, after.config_map);
        assert_ne!(fleet.secret, after.secret);
        assert_eq!(
            fleet.regions, after.regions,
            "a Secret change never rolls the pods"
        );
    }

    #[test]
    fn inputs_never_print_credentials() {
        let printed = format!("{:?}", inputs());
        for secret in ["tok3n-value", "AKIDEXAMPLE", "s3cr3t-access"] {
            assert!(!printed.contains(secret), "{printed}");
        }
    }

    #[test]
    fn a_bad_cache_size_is_reported_not_trusted() {
        let mut dist = example();
        dist.spec.edge.cache_memory.0 = "lots".into();
        let blockers = render(&dist, &settings(), &inputs()).expect_err("refused");
        assert_eq!(blockers[0].reason(), "InvalidSpec");
        assert!(
            blockers[0].message().contains("edge.cacheMemory"),
            "{}",
            blockers[0].message()
        );
    }
}
