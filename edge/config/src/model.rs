//! The configuration types. Plain data: defaults here, rules in `validate`.
use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

/// Everything one edge needs to serve one distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeConfig {
    /// The distribution's name, shown in `Via` and logs.
    #[serde(default = "default_distribution")]
    pub distribution: String,
    /// The region this edge serves, sent as `X-Edge-Location`. The environment variable
    /// `EDGEFLEET_REGION` overrides it, so one rendered config serves every region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Where the edge listens.
    #[serde(default)]
    pub listen: Listen,
    /// Host names served. Empty means any host; otherwise an unknown `Host` gets 404.
    /// A leading `*.` matches any one or more labels (`*.example.com`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The origins, referenced by id from behaviors and origin groups.
    pub origins: Vec<Origin>,
    /// Pairs of origins with failover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origin_groups: Vec<OriginGroup>,
    /// When set, edges outside the shield's region fetch through the shield instead of the origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_shield: Option<OriginShield>,
    /// The behavior for paths no other behavior matches. Its `pathPattern` is absent (or `*`).
    pub default_behavior: Behavior,
    /// Behaviors in order of precedence: the first whose `pathPattern` matches wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub behaviors: Vec<Behavior>,
    /// The object served for `/` (for example `index.html`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_root_object: Option<String>,
    /// Error caching and custom error pages per status code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_responses: Vec<ErrorResponse>,
    /// Cache storage.
    pub cache: CacheConfig,
    /// The admin API.
    pub admin: AdminConfig,
    /// Request size limits.
    #[serde(default)]
    pub limits: Limits,
    /// The upload port: an S3-compatible endpoint writing to one S3 origin. Absent: no upload
    /// port is opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<Upload>,
}

fn default_distribution() -> String {
    "edgefleet".to_owned()
}

/// Listen addresses. Changing them takes effect on restart only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listen {
    /// The data port: viewers' requests.
    #[serde(default = "default_data_addr")]
    pub data: SocketAddr,
    /// The admin port: purge, health, metrics, reload.
    #[serde(default = "default_admin_addr")]
    pub admin: SocketAddr,
    /// The upload port, opened only when the configuration has an `upload` section
    /// (default `0.0.0.0:8090`, see [`Listen::upload_addr`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<SocketAddr>,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            data: default_data_addr(),
            admin: default_admin_addr(),
            upload: None,
        }
    }
}

impl Listen {
    /// The upload port's address: `upload`, or `0.0.0.0:8090`.
    pub fn upload_addr(&self) -> SocketAddr {
        self.upload.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 8090)))
    }
}

fn default_data_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

fn default_admin_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9901))
}

/// An origin: where objects come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Origin {
    /// Any HTTP(S) server.
    Http(HttpOrigin),
    /// An S3-compatible bucket (AWS S3, MinIO, SeaweedFS, Ceph RGW, ...).
    S3(S3Origin),
}

impl Origin {
    /// The id behaviors and origin groups refer to.
    pub fn id(&self) -> &str {
        match self {
            Origin::Http(o) => &o.id,
            Origin::S3(o) => &o.id,
        }
    }
}

/// An HTTP(S) origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpOrigin {
    /// Unique among origins and origin groups.
    pub id: String,
    /// Base URL, `http://` or `https://`; a path here is prefixed to every request path.
    pub url: String,
    /// `Host` sent to the origin; default: the URL's host (the viewer's `Host` is sent instead
    /// when `host` is in the behavior's cache-key headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_header: Option<String>,
    /// Time allowed to establish a connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    /// Time allowed for the response head and between body bytes.
    #[serde(default = "default_read_timeout")]
    pub read_timeout_seconds: u64,
}

/// An S3-compatible bucket. Requests are signed with SigV4 when credential files are given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Origin {
    /// Unique among origins and origin groups.
    pub id: String,
    /// Service endpoint, for example `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:8333`.
    pub endpoint: String,
    /// Bucket name.
    pub bucket: String,
    /// Signing region, for example `us-east-1`.
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// `true`: `endpoint/bucket/key`; `false`: `bucket.endpoint-host/key` (virtual-host style).
    #[serde(default)]
    pub path_style: bool,
    /// File holding the access key id (absent, with the secret absent too: anonymous access).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_file: Option<PathBuf>,
    /// File holding the secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<PathBuf>,
    /// File holding a session token, for temporary credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_file: Option<PathBuf>,
    /// Time allowed to establish a connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    /// Time allowed for the response head and between body bytes.
    #[serde(default = "default_read_timeout")]
    pub read_timeout_seconds: u64,
}

fn default_s3_region() -> String {
    "us-east-1".to_owned()
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_read_timeout() -> u64 {
    30
}

/// A primary origin with a secondary to fail over to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OriginGroup {
    /// Unique among origins and origin groups; behaviors may target it.
    pub id: String,
    /// Origin tried first.
    pub primary: String,
    /// Origin tried when the primary fails (GET, HEAD and OPTIONS only).
    pub secondary: String,
    /// Primary statuses that trigger failover; connection errors and timeouts always do.
    #[serde(default = "default_failover_statuses")]
    pub failover_statuses: Vec<u16>,
}

fn default_failover_statuses() -> Vec<u16> {
    vec![500, 502, 503, 504]
}

/// Edges outside `region` fetch cacheable objects through the shield region's edges, so the
/// origin sees one fetch per object instead of one per region.
///
/// When the shield's edges are known (`service` in a cluster, or `peers`), every edge sends a
/// given object to one of them, chosen by rendezvous hashing of the object's host, path and
/// query, so however many edges the shield region runs, each object is fetched once. Edges of
/// the shield region itself hand a viewer's miss to the edge that owns it the same way. Without
/// such a list, edges outside the region fetch through `url`, and the shield region's edges each
/// fetch from the origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OriginShield {
    /// The shield region; its edges fetch from the origins themselves.
    pub region: String,
    /// Base URL of the shield region's edges (data port), typically its Service: used while no
    /// list of the shield's edges is known.
    pub url: String,
    /// The Service in front of the shield region's edges: an edge running in a cluster
    /// (`--config-map`) watches its EndpointSlices, in its own namespace, for the ready edges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ShieldService>,
    /// A fixed list of the shield region's edges, for edges run outside Kubernetes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<ShieldPeer>,
}

/// The Service whose EndpointSlices list the shield region's edges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShieldService {
    /// The Service's name (EndpointSlices carry it as `kubernetes.io/service-name`).
    pub name: String,
    /// The name of the Service port whose endpoints are the edges' data ports.
    #[serde(default = "default_shield_port")]
    pub port: String,
}

fn default_shield_port() -> String {
    "http".to_owned()
}

/// One edge of the shield region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShieldPeer {
    /// Its data port.
    pub address: SocketAddr,
    /// Its name (as a pod name: what `HOSTNAME` holds where it runs). A shield-region edge finds
    /// itself in the list by name; without it, that edge fetches its own misses from the origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// How requests matching a path pattern are cached and routed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Behavior {
    /// `*` matches any run of characters, `?` one; a leading `/` makes no difference.
    /// Required for ordered behaviors, absent (or `*`) for the default behavior.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_pattern: Option<String>,
    /// An origin id or an origin group id.
    pub target_origin: String,
    /// Seconds; the lower bound of the TTL. Above 0 it caches even `no-cache`/`no-store`/`private`.
    #[serde(default)]
    pub min_ttl: u64,
    /// Seconds; used when the origin sends neither `max-age`/`s-maxage` nor `Expires`.
    #[serde(default = "default_default_ttl")]
    pub default_ttl: u64,
    /// Seconds; the upper bound of the TTL.
    #[serde(default = "default_max_ttl")]
    pub max_ttl: u64,
    /// What besides host and path distinguishes cached objects (and is forwarded to the origin).
    #[serde(default)]
    pub cache_key: CacheKey,
    /// Compress compressible responses with br or gzip when the viewer accepts it.
    #[serde(default)]
    pub compress: bool,
    /// Methods accepted; GET and HEAD are cached, the others are passed to the origin.
    #[serde(default = "default_allowed_methods")]
    pub allowed_methods: Vec<Method>,
    /// Seconds a stale object may be served when the origin fails (the origin's
    /// `stale-if-error` may extend it).
    #[serde(default)]
    pub stale_if_error_seconds: u64,
    /// How long error responses (4xx/5xx) are cached: CloudFront's rule by default, RFC 9111's
    /// with `origin`.
    #[serde(default, skip_serializing_if = "ErrorCaching::is_default")]
    pub error_caching: ErrorCaching,
    /// Store responses that set cookies, without their `Set-Cookie`, and serve them to every
    /// viewer. Off (the default), such a response reaches only the viewer whose request fetched
    /// it, `Set-Cookie` included, and is not stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache_set_cookie_responses: bool,
    /// What viewers' `Cache-Control` (and `Pragma: no-cache`) may ask of the cache: nothing, by
    /// default (CloudFront's rule), or what RFC 9111 §5.2.1 describes with `honor`.
    #[serde(default, skip_serializing_if = "ViewerCacheControl::is_default")]
    pub viewer_cache_control: ViewerCacheControl,
}

/// Whether viewers' request cache directives count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ViewerCacheControl {
    /// Ignored, as CloudFront ignores them: a viewer cannot make the edge skip its cache.
    #[default]
    Ignore,
    /// RFC 9111 §5.2.1: `no-cache` (or `Pragma: no-cache`) and `max-age`/`min-fresh` beyond what
    /// a stored response offers make the edge revalidate it, `no-store` keeps the response out of
    /// the cache, `only-if-cached` answers 504 when nothing fresh is stored.
    Honor,
}

impl ViewerCacheControl {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// How long error responses (4xx and 5xx) are cached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ErrorCaching {
    /// CloudFront's rule: the longer of the origin's freshness and the status's
    /// `errorCachingMinTtl`, even when the origin marks the response stale or gives no freshness
    /// (for the statuses CloudFront caches: 400, 403, 404, 405, 410, 414, 500, 501, 502, 503, 504).
    #[default]
    Minimum,
    /// RFC 9111's rule: the origin's explicit freshness (`max-age`, `s-maxage`, `Expires`) when
    /// it gives any, even zero; without it, `errorCachingMinTtl` only for the statuses a cache may
    /// store heuristically (404, 405, 410, 414, 501), and the others are not stored.
    Origin,
}

impl ErrorCaching {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_default_ttl() -> u64 {
    86_400
}

fn default_max_ttl() -> u64 {
    31_536_000
}

fn default_allowed_methods() -> Vec<Method> {
    vec![Method::Get, Method::Head]
}

/// The HTTP methods a behavior may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)] // The variants are the methods of the same name.
pub enum Method {
    Get,
    Head,
    Options,
    Put,
    Post,
    Patch,
    Delete,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// The parts of a request, beyond host and path, that select a cached object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheKey {
    /// Query string parameters.
    #[serde(default)]
    pub query_strings: KeyList,
    /// Request headers (names are case-insensitive).
    #[serde(default)]
    pub headers: KeyList,
    /// Cookies.
    #[serde(default)]
    pub cookies: KeyList,
}

/// A selection of names: `none`, `all`, or `{allowList: [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum KeyList {
    /// Nothing is keyed or forwarded.
    #[default]
    None,
    /// Everything is keyed and forwarded.
    All,
    /// Only these names.
    AllowList(Vec<String>),
}

/// Error caching and custom error page for one status code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorResponse {
    /// The 4xx/5xx status from the origin (or the edge's own 502/504).
    pub error_code: u16,
    /// Seconds the error is cached at least (default 10; the origin's TTL wins if longer).
    #[serde(default = "default_error_caching_min_ttl")]
    pub error_caching_min_ttl: u64,
    /// Path of the page served instead of the origin's error body, fetched through the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_page_path: Option<String>,
    /// Status sent to the viewer with the custom page (default: the original status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_code: Option<u16>,
}

/// The error caching TTL when no error response is configured for a status.
pub const DEFAULT_ERROR_CACHING_MIN_TTL: u64 = 10;

fn default_error_caching_min_ttl() -> u64 {
    DEFAULT_ERROR_CACHING_MIN_TTL
}

/// Cache storage. Sizes take effect on restart only (the cache is never emptied by a reload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheConfig {
    /// Bytes of objects (bodies and headers) kept in memory.
    pub memory_bytes: u64,
    /// Largest object stored; larger ones stream through uncached. Default: an eighth of
    /// `memoryBytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_object_bytes: Option<u64>,
    /// Optional second tier on disk, kept across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskTier>,
}

impl CacheConfig {
    /// The effective largest storable object.
    pub fn max_object_bytes(&self) -> u64 {
        self.max_object_bytes.unwrap_or(self.memory_bytes / 8)
    }
}

/// The disk tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskTier {
    /// Directory owned by the edge.
    pub path: PathBuf,
    /// Bytes of disk used at most.
    pub bytes: u64,
}

/// The admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminConfig {
    /// File holding the bearer token (surrounding whitespace ignored).
    pub token_file: PathBuf,
}

/// Request limits; larger requests are refused with 414 or 431.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Longest request target (path and query) in bytes.
    #[serde(default = "default_max_url_bytes")]
    pub max_url_bytes: usize,
    /// Largest request head (request line and headers) in bytes.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_url_bytes: default_max_url_bytes(),
            max_header_bytes: default_max_header_bytes(),
        }
    }
}

fn default_max_url_bytes() -> usize {
    8_192
}

fn default_max_header_bytes() -> usize {
    20_480
}

/// The upload port: an S3-compatible endpoint (PutObject and the multipart calls) for the bucket
/// of one S3 origin. Clients sign with their own keys (SigV4); the edge checks the signature and
/// re-signs the request with the origin's credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Upload {
    /// The id of the S3 origin objects are written to; clients name its bucket.
    pub target_origin: String,
    /// File holding the client keys uploads are verified against, as a JSON object mapping each
    /// access key id to its secret access key: `{"AKIDEXAMPLE": "secret", ...}`.
    pub client_keys_file: PathBuf,
    /// Largest object accepted, in bytes (the sum of its parts for a multipart upload).
    #[serde(default = "default_max_upload_bytes")]
    pub max_object_bytes: u64,
}

/// The default upload size limit: 5 GiB, S3's limit for a single PUT.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 5 << 30;

fn default_max_upload_bytes() -> u64 {
    DEFAULT_MAX_UPLOAD_BYTES
}
