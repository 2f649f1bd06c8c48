//! `Distribution`: what CloudFront calls a distribution — origins, cache behaviors and the regions
//! whose edges serve them.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Most origins, origin groups, behaviors and error responses a Distribution may list
/// (CloudFront's default quotas).
const MAX_LIST: usize = 25;

/// The desired state of a Distribution.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "edgefleet.io",
    version = "v1alpha1",
    kind = "Distribution",
    namespaced,
    status = "DistributionStatus",
    shortname = "dist",
    category = "edgefleet",
    doc = "A fleet of caching edge proxies, one group per region, in front of one or more origins.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    // Why it is (not) ready: the first thing to fix (see api::reasons).
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Regions", type_ = "string", json_path = ".status.readyRegions"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS label starting with a letter: it names the Distribution's Services"),
    validation = Rule::new("self.spec.regions.all(r, size(self.metadata.name) + size(r.name) <= 62)")
        .message("metadata.name plus '-' plus each region name must fit in 63 characters: together they name the region's Deployment and Service"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.origins.all(o, self.origins.exists_one(p, p.name == o.name))")
        .message("origin names must be unique"),
    validation = Rule::new("!has(self.originGroups) || self.originGroups.all(g, self.originGroups.exists_one(h, h.name == g.name) && !self.origins.exists(o, o.name == g.name))")
        .message("origin group names must be unique and differ from every origin name"),
    validation = Rule::new("!has(self.originGroups) || self.originGroups.all(g, self.origins.exists(o, o.name == g.primary) && self.origins.exists(o, o.name == g.secondary))")
        .message("every origin group's primary and secondary must name an origin listed in spec.origins"),
    validation = Rule::new("self.origins.exists(o, o.name == self.defaultBehavior.targetOrigin) || (has(self.originGroups) && self.originGroups.exists(g, g.name == self.defaultBehavior.targetOrigin))")
        .message("defaultBehavior.targetOrigin must name an origin or origin group of this Distribution")
        .field_path(".defaultBehavior.targetOrigin"),
    validation = Rule::new("!has(self.behaviors) || self.behaviors.all(b, self.origins.exists(o, o.name == b.targetOrigin) || (has(self.originGroups) && self.originGroups.exists(g, g.name == b.targetOrigin)))")
        .message("every behavior's targetOrigin must name an origin or origin group of this Distribution")
        .field_path(".behaviors"),
    validation = Rule::new("self.regions.all(r, self.regions.exists_one(s, s.name == r.name))")
        .message("region names must be unique"),
    validation = Rule::new("!has(self.originShield) || self.regions.exists(r, r.name == self.originShield.region)")
        .message("originShield.region must be one of spec.regions")
        .field_path(".originShield.region"),
    validation = Rule::new("!has(self.uploadAcceleration) || !self.uploadAcceleration.enabled || self.origins.exists(o, o.name == self.uploadAcceleration.targetOrigin && has(o.s3))")
        .message("uploadAcceleration.targetOrigin must name an s3 origin of this Distribution")
        .field_path(".uploadAcceleration.targetOrigin"),
    validation = Rule::new("!has(self.uploadAcceleration) || !has(self.uploadAcceleration.host) || !has(self.aliases) || !self.aliases.exists(a, a == self.uploadAcceleration.host)")
        .message("uploadAcceleration.host must differ from every alias: the host either serves the site or takes uploads")
        .field_path(".uploadAcceleration.host"),
)]
// clippy reads the repeated `printcolumn(type_ = …)` arguments of `#[kube]` as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
pub struct DistributionSpec {
    /// When false, every region is scaled to zero; the objects stay so re-enabling is quick.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Where content comes from. Behaviors name one of these (or an origin group).
    #[schemars(length(min = 1, max = MAX_LIST))]
    pub origins: Vec<Origin>,

    /// Pairs of origins where the secondary serves when the primary fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub origin_groups: Vec<OriginGroup>,

    /// The behavior for every request no entry of `behaviors` matches.
    pub default_behavior: CacheBehavior,

    /// Path-specific behaviors, matched in order; the first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub behaviors: Vec<PathBehavior>,

    /// Host names the edges answer for. Empty: any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 100),
        inner(
            length(max = 253),
            regex(pattern = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        )
    )]
    pub aliases: Vec<String>,

    /// The object served for a request to `/`, e.g. `index.html`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && size(self) > 0")
        .message("defaultRootObject is an object name such as index.html, without a leading '/'"))]
    pub default_root_object: Option<String>,

    /// How error statuses from the origin are cached and which page replaces them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub error_responses: Vec<ErrorResponse>,

    /// Where edges run: one Deployment per region, on nodes labelled with the region.
    #[schemars(length(min = 1, max = 50))]
    pub regions: Vec<Region>,

    /// A region whose edges every other region fetches through, so the origin sees one fetch per
    /// object instead of one per region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_shield: Option<OriginShield>,

    /// The edge pods: cache sizes, resources, image.
    #[serde(default)]
    pub edge: EdgeSpec,

    /// An S3-compatible upload endpoint in every region that streams objects to an s3 origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_acceleration: Option<UploadAcceleration>,
}

/// A named source of content: an S3-compatible bucket or an HTTP service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.http)")
    .message("each origin sets exactly one of s3 or http"))]
pub struct Origin {
    /// Name that behaviors and origin groups refer to.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// An S3-compatible bucket (AWS S3, MinIO, SeaweedFS, Ceph RGW…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Origin>,
    /// Any HTTP(S) service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpOrigin>,
}

/// An S3-compatible bucket; requests are signed with SigV4.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Origin {
    /// Endpoint URL, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://minio.storage:9000`.
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
        .message("s3.endpoint must be an http:// or https:// URL"))]
    #[schemars(length(max = 2048))]
    pub endpoint: String,
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Signing region.
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// Address the bucket as `endpoint/bucket/key` (MinIO, SeaweedFS) rather than
    /// `bucket.endpoint/key` (AWS virtual-host style).
    #[serde(default = "default_true")]
    pub path_style: bool,
    /// Secret in this namespace holding the access key pair. Without it, requests are unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<S3CredentialsRef>,
}

/// Where an S3 access key pair is stored.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3CredentialsRef {
    /// Secret name, in the Distribution's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key of the access key id in the Secret.
    #[serde(default = "default_access_key_id_key")]
    pub access_key_id_key: String,
    /// Key of the secret access key in the Secret.
    #[serde(default = "default_secret_access_key_key")]
    pub secret_access_key_key: String,
}

/// An HTTP(S) origin.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpOrigin {
    /// Base URL; the request path is appended to it.
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
        .message("http.url must be an http:// or https:// URL"))]
    #[schemars(length(max = 2048))]
    pub url: String,
    /// Time allowed to open a connection.
    #[serde(default = "default_connect_timeout")]
    #[schemars(range(min = 1, max = 60))]
    pub connect_timeout_seconds: u32,
    /// Time allowed for the origin to start answering.
    #[serde(default = "default_read_timeout")]
    #[schemars(range(min = 1, max = 600))]
    pub read_timeout_seconds: u32,
}

/// A primary origin with a secondary that serves when the primary fails.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OriginGroup {
    /// Name that behaviors refer to.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The origin tried first.
    #[schemars(length(min = 1, max = 63))]
    pub primary: String,
    /// The origin tried when the primary answers a failover status or cannot be reached.
    #[schemars(length(min = 1, max = 63))]
    pub secondary: String,
    /// Statuses from the primary that trigger failover (GET, HEAD and OPTIONS only).
    #[serde(default = "default_failover_statuses")]
    #[schemars(length(min = 1, max = 10))]
    #[x_kube(validation = Rule::new("self.all(s, s >= 400 && s <= 599)")
        .message("failoverStatusCodes must be 4xx or 5xx statuses"))]
    pub failover_status_codes: Vec<u16>,
}

/// How requests matching a behavior are cached and forwarded.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CacheBehavior {
    /// Origin or origin group that serves these requests.
    #[schemars(length(min = 1, max = 63))]
    pub target_origin: String,
    /// Time-to-live policy applied to the origin's Cache-Control and Expires.
    #[serde(default)]
    pub ttl: TtlPolicy,
    /// What, beyond host and path, distinguishes cached objects (and is forwarded to the origin).
    #[serde(default)]
    pub cache_key: CacheKeyPolicy,
    /// Compress compressible responses with gzip or brotli when the viewer accepts it.
    #[serde(default = "default_true")]
    pub compress: bool,
    /// Methods accepted; GET and HEAD are cached, the others are passed to the origin.
    #[serde(default = "default_allowed_methods")]
    #[schemars(length(min = 1, max = 7))]
    #[x_kube(validation = Rule::new("self.exists(m, m == 'GET') && self.exists(m, m == 'HEAD')")
        .message("allowedMethods must include GET and HEAD"))]
    pub allowed_methods: Vec<HttpMethod>,
    /// How long a stale object may be served when the origin fails.
    #[serde(default)]
    #[schemars(range(max = 31_536_000))]
    pub stale_if_error_seconds: u32,
}

/// A cache behavior for the paths matching `pathPattern`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PathBehavior {
    /// Path pattern such as `/images/*` or `/index.html`: starts with `/`, `*` only at the end.
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("self.matches('^/[^*]*[*]?$')")
        .message("pathPattern must start with '/' and may contain '*' only as its last character, e.g. /images/*"))]
    pub path_pattern: String,
    /// The behavior itself.
    #[serde(flatten)]
    pub behavior: CacheBehavior,
}

/// CloudFront's TTL policy: the origin's freshness, clamped to [min, max]; `defaultSeconds` when
/// the origin says nothing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minSeconds <= self.defaultSeconds && self.defaultSeconds <= self.maxSeconds")
    .message("ttl must satisfy minSeconds <= defaultSeconds <= maxSeconds"))]
pub struct TtlPolicy {
    /// Floor for every cached object; above 0 it also caches `no-cache`/`no-store`/`private`.
    #[serde(default)]
    #[schemars(range(max = 3_153_600_000_u64))]
    pub min_seconds: u64,
    /// TTL when the origin sends neither Cache-Control max-age/s-maxage nor Expires.
    #[serde(default = "default_ttl")]
    #[schemars(range(max = 3_153_600_000_u64))]
    pub default_seconds: u64,
    /// Ceiling for every cached object.
    #[serde(default = "max_ttl")]
    #[schemars(range(max = 3_153_600_000_u64))]
    pub max_seconds: u64,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        Self {
            min_seconds: 0,
            default_seconds: default_ttl(),
            max_seconds: max_ttl(),
        }
    }
}

/// The parts of a request, beyond host and path, that make up the cache key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CacheKeyPolicy {
    /// Query string parameters.
    #[serde(default)]
    pub query_strings: KeySelection,
    /// Request headers.
    #[serde(default)]
    pub headers: KeySelection,
    /// Cookies.
    #[serde(default)]
    pub cookies: KeySelection,
}

/// Which names of one request part belong to the cache key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.behavior == 'allowList' ? size(self.names) > 0 : size(self.names) == 0")
    .message("names is required with behavior allowList and not allowed otherwise"))]
pub struct KeySelection {
    /// None, all, or the names listed in `names`.
    #[serde(default)]
    pub behavior: SelectionBehavior,
    /// The allowed names (behavior `allowList` only).
    #[serde(default)]
    #[schemars(length(max = 10))]
    pub names: Vec<String>,
}

/// How much of a request part is in the cache key.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum SelectionBehavior {
    /// Nothing: not in the key, not forwarded.
    #[default]
    None,
    /// Everything.
    All,
    /// Only the listed names.
    AllowList,
}

/// An HTTP method a behavior accepts.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)] // HTTP spells methods in capitals; so does the manifest.
pub enum HttpMethod {
    /// GET (cached).
    GET,
    /// HEAD (cached).
    HEAD,
    /// OPTIONS.
    OPTIONS,
    /// PUT.
    PUT,
    /// POST.
    POST,
    /// PATCH.
    PATCH,
    /// DELETE.
    DELETE,
}

/// How one error status is cached and presented.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.responsePagePath) == has(self.responseCode)")
    .message("responsePagePath and responseCode are set together"))]
pub struct ErrorResponse {
    /// The origin's status this entry applies to.
    #[schemars(range(min = 400, max = 599))]
    pub status_code: u16,
    /// How long the error is cached (the origin's own TTL wins when larger).
    #[serde(default = "default_error_caching_ttl")]
    #[schemars(range(max = 31_536_000))]
    pub error_caching_min_ttl_seconds: u32,
    /// Path of a custom page (served through the same Distribution) that replaces the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("responsePagePath must start with '/'"))]
    pub response_page_path: Option<String>,
    /// Status sent to the viewer with the custom page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 200, max = 599))]
    pub response_code: Option<u16>,
}

/// A region where edges run, matched against the nodes' region label.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Region {
    /// Region name: the value of the nodes' region label (`topology.kubernetes.io/region` unless
    /// the chart says otherwise). A DNS label: it is part of object names.
    #[schemars(length(min = 1, max = 50))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("region name must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit"))]
    pub name: String,
    /// Edge pods in this region.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Zones to spread over; empty means every zone of the region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub zones: Vec<String>,
}

/// The region whose edges sit between the other regions and the origin.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OriginShield {
    /// One of `spec.regions`.
    #[schemars(length(min = 1, max = 50))]
    pub region: String,
}

/// The edge pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EdgeSpec {
    /// Bytes of memory for cached objects (a Kubernetes quantity such as `256Mi`).
    #[serde(default = "default_cache_memory")]
    pub cache_memory: Quantity,
    /// Optional disk tier (an emptyDir of this size) that survives edge process restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_disk: Option<Quantity>,
    /// Container resources; by default derived from the cache size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Edge image; by default the one the operator was installed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl Default for EdgeSpec {
    fn default() -> Self {
        Self {
            cache_memory: default_cache_memory(),
            cache_disk: None,
            resources: None,
            image: None,
        }
    }
}

/// The accelerated S3-compatible upload endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UploadAcceleration {
    /// Serve the upload endpoint.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The s3 origin uploads are written to.
    #[schemars(length(min = 1, max = 63))]
    pub target_origin: String,
    /// Secret in this namespace whose entries are the client access keys uploads are verified
    /// against: key = access key id, value = secret access key.
    pub client_keys_secret_ref: SecretRef,
    /// Largest object accepted.
    #[serde(default = "default_max_upload")]
    pub max_object_size: Quantity,
    /// Host name clients upload to from outside the cluster (path style: `https://<host>/<bucket>/<key>`).
    /// When the chart enables Ingresses, the operator makes one, `<name>-upload`, routing this host to
    /// the upload port of the Service over every region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub host: Option<String>,
}

/// A Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What the operator last observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DistributionStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing and Degraded, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Ready regions over all regions, e.g. `2/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_regions: Option<String>,
    /// Per-region replicas and Service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionStatus>,
    /// Service over every region, preferring the client's own zone and region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Host and port of the S3-compatible upload endpoint, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_endpoint: Option<String>,
}

/// One region's state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionStatus {
    /// Region name.
    pub name: String,
    /// Replicas asked for.
    pub desired_replicas: i32,
    /// Replicas ready to serve.
    pub ready_replicas: i32,
    /// The region's own Service.
    pub service: String,
}

fn default_true() -> bool {
    true
}
fn default_s3_region() -> String {
    "us-east-1".into()
}
fn default_access_key_id_key() -> String {
    "AWS_ACCESS_KEY_ID".into()
}
fn default_secret_access_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}
fn default_connect_timeout() -> u32 {
    5
}
fn default_read_timeout() -> u32 {
    30
}
fn default_failover_statuses() -> Vec<u16> {
    vec![500, 502, 503, 504]
}
fn default_allowed_methods() -> Vec<HttpMethod> {
    vec![HttpMethod::GET, HttpMethod::HEAD]
}
fn default_ttl() -> u64 {
    86_400
}
fn max_ttl() -> u64 {
    31_536_000
}
fn default_error_caching_ttl() -> u32 {
    10
}
fn default_replicas() -> i32 {
    1
}
fn default_cache_memory() -> Quantity {
    Quantity("256Mi".into())
}
fn default_max_upload() -> Quantity {
    Quantity("5Gi".into())
}
