//! A configuration compiled for serving: behaviors with their matchers, origin clients, secrets
//! read from their files. Built whole on every (re)load and swapped in atomically, so a request
//! sees one consistent configuration from start to end.
use std::{collections::HashMap, sync::Arc};

use http::{HeaderValue, Method};

use edgefleet_config::{Behavior as BehaviorConfig, EdgeConfig, ErrorResponse, KeyList, Limits};

use super::behavior::PathPattern;
use crate::{
    cache::freshness::{Policy, TtlPolicy},
    error::{Error, Result},
    origin::{InCluster, Origins},
};

/// A behavior ready for requests.
pub(crate) struct Behavior {
    pattern: Option<PathPattern>,
    pub(crate) config: BehaviorConfig,
    pub(crate) ttl: TtlPolicy,
    allowed: Vec<Method>,
    /// The behavior keys on `host`, so the viewer's `Host` goes to the origin.
    pub(crate) forward_host: bool,
}

impl Behavior {
    fn new(config: &BehaviorConfig) -> Self {
        let forward_host = match &config.cache_key.headers {
            KeyList::AllowList(names) => names.iter().any(|n| n.eq_ignore_ascii_case("host")),
            KeyList::All | KeyList::None => false,
        };
        Self {
            pattern: config.path_pattern.as_deref().map(PathPattern::new),
            config: config.clone(),
            ttl: TtlPolicy {
                min: config.min_ttl,
                default: config.default_ttl,
                max: config.max_ttl,
            },
            allowed: config
                .allowed_methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_str().as_bytes()).ok())
                .collect(),
            forward_host,
        }
    }

    /// How this behavior decides TTLs, with the configuration's error responses.
    pub(crate) fn policy<'a>(&self, runtime: &'a Runtime) -> Policy<'a> {
        Policy {
            ttl: self.ttl,
            stale_if_error: self.config.stale_if_error_seconds,
            error_caching: self.config.error_caching,
            error_responses: &runtime.error_responses,
        }
    }

    pub(crate) fn allows(&self, method: &Method) -> bool {
        self.allowed.contains(method)
    }

    /// The `Allow` header value for 405 answers.
    pub(crate) fn allow_header(&self) -> String {
        self.allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Host names served.
enum Alias {
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

/// Everything a request needs from the configuration.
pub(crate) struct Runtime {
    pub(crate) generation: u64,
    pub(crate) config: EdgeConfig,
    pub(crate) region: String,
    pub(crate) location: HeaderValue,
    pub(crate) via: HeaderValue,
    aliases: Vec<Alias>,
    /// Ordered behaviors.
    behaviors: Vec<Behavior>,
    default_behavior: Behavior,
    pub(crate) origins: Origins,
    pub(crate) error_responses: Arc<HashMap<u16, ErrorResponse>>,
    pub(crate) default_root_object: Option<String>,
    pub(crate) admin_token: String,
    pub(crate) limits: Limits,
    pub(crate) max_object_bytes: u64,
}

impl Runtime {
    /// Compiles a validated configuration. `region_override` is `EDGEFLEET_REGION`; `cluster` is
    /// where the edge runs, when it does in a cluster.
    pub(crate) fn compile(
        config: EdgeConfig,
        region_override: Option<&str>,
        cluster: Option<&InCluster>,
        generation: u64,
        previous: Option<&Runtime>,
    ) -> Result<Self> {
        let region = region_override
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .or_else(|| config.region.clone())
            .ok_or(Error::NoRegion)?;
        let location = HeaderValue::from_str(&region).map_err(|_| Error::NoRegion)?;
        let via_text = format!("1.1 {} (edgefleet)", edge_id());
        let via = HeaderValue::from_str(&via_text).unwrap_or(HeaderValue::from_static("1.1 edgefleet"));
        let origins = Origins::build(&config, &region, &via_text, cluster, previous.map(|p| &p.origins))?;
        let aliases = config
            .aliases
            .iter()
            .map(|a| match a.strip_prefix('*') {
                Some(suffix) => Alias::Suffix(suffix.to_owned()),
                None => Alias::Exact(a.clone()),
            })
            .collect();
        let behaviors: Vec<Behavior> = config.behaviors.iter().map(Behavior::new).collect();
        let mut default_behavior = Behavior::new(&config.default_behavior);
        default_behavior.pattern = None;
        let admin_token = crate::secret::read_secret("the admin token", &config.admin.token_file)?;
        Ok(Self {
            generation,
            region,
            location,
            via,
            aliases,
            behaviors,
            default_behavior,
            origins,
            error_responses: Arc::new(
                config
                    .error_responses
                    .iter()
                    .map(|e| (e.error_code, e.clone()))
                    .collect(),
            ),
            default_root_object: config
                .default_root_object
                .as_deref()
                .map(|o| format!("/{}", o.trim_start_matches('/'))),
            admin_token,
            limits: config.limits.clone(),
            max_object_bytes: config.cache.max_object_bytes(),
            config,
        })
    }

    /// Whether this distribution serves a (normalized) host.
    pub(crate) fn serves_host(&self, host: &str) -> bool {
        self.aliases.is_empty()
            || self.aliases.iter().any(|a| match a {
                Alias::Exact(h) => h == host,
                Alias::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
            })
    }

    /// The first behavior whose pattern matches, else the default.
    pub(crate) fn behavior_for(&self, path: &str) -> &Behavior {
        self.behaviors
            .iter()
            .find(|b| b.pattern.as_ref().is_some_and(|p| p.matches(path)))
            .unwrap_or(&self.default_behavior)
    }
}

/// This edge's name in `Via`: the pod (host) name.
fn edge_id() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "edge".to_owned())
}
