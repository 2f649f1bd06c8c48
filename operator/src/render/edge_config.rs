//! The edge's runtime configuration ([`EdgeConfig`]) for a Distribution: one document for every
//! region (the region comes from the pod's environment), holding no secret, only the paths of
//! the files the edge Secret is mounted as.

use edgefleet_config as config;
use edgefleet_config::EdgeConfig;

use super::{Blocker, EdgeSizing, names, quantity, secrets};
use crate::api::{
    CacheBehavior, CacheKeyPolicy, Distribution, HttpMethod, KeySelection, Origin, SelectionBehavior,
};

/// Where the disk tier lives in edge containers.
pub const CACHE_DISK_PATH: &str = "/var/cache/edgefleet";
/// Port of the regional Services (the edges' data port behind it).
pub const SERVICE_PORT: i32 = 80;
/// The name `network` gives that port, which the Services' EndpointSlices carry too.
const SERVICE_PORT_NAME: &str = "http";
/// Port of the upload endpoint on the Services, when upload acceleration is enabled.
pub const UPLOAD_SERVICE_PORT: i32 = 8090;
/// The name of the upload port on the edge containers and the Services.
pub(super) const UPLOAD_PORT_NAME: &str = "upload";

/// The configuration every edge of `dist` loads. Fails with the rules it breaks.
///
/// Edges reach the shield region's edges one by one: they follow the EndpointSlices of its
/// (headless) Service and send each object to the edge that owns it. The Service's DNS name,
/// which resolves to the ready shield edges, is where they go when they know none.
pub fn edge_config(
    dist: &Distribution,
    namespace: &str,
    sizing: &EdgeSizing,
) -> Result<EdgeConfig, Vec<Blocker>> {
    let name = dist.metadata.name.clone().unwrap_or_default();
    let spec = &dist.spec;
    let upload = upload(dist).map_err(|blocker| vec![blocker])?;
    let config = EdgeConfig {
        distribution: name.clone(),
        region: None,
        listen: config::Listen::default(),
        aliases: spec.aliases.clone(),
        origins: spec.origins.iter().map(origin).collect(),
        origin_groups: spec
            .origin_groups
            .iter()
            .map(|g| config::OriginGroup {
                id: g.name.clone(),
                primary: g.primary.clone(),
                secondary: g.secondary.clone(),
                failover_statuses: g.failover_status_codes.clone(),
            })
            .collect(),
        origin_shield: spec.origin_shield.as_ref().map(|shield| {
            let service = names::regional(&name, &shield.region);
            config::OriginShield {
                region: shield.region.clone(),
                url: format!("http://{service}.{namespace}.svc:{SERVICE_PORT}"),
                // The edges route each object to one shield edge among the Service's ready
                // endpoints, so the origin sees one fetch per object whatever the replicas.
                service: Some(config::ShieldService {
                    name: service,
                    port: SERVICE_PORT_NAME.to_owned(),
                }),
                peers: Vec::new(),
            }
        }),
        default_behavior: behavior(None, &spec.default_behavior),
        behaviors: spec
            .behaviors
            .iter()
            .map(|b| behavior(Some(b.path_pattern.clone()), &b.behavior))
            .collect(),
        default_root_object: spec.default_root_object.clone(),
        error_responses: spec
            .error_responses
            .iter()
            .map(|e| config::ErrorResponse {
                error_code: e.status_code,
                error_caching_min_ttl: u64::from(e.error_caching_min_ttl_seconds),
                response_page_path: e.response_page_path.clone(),
                response_code: e.response_code,
            })
            .collect(),
        cache: config::CacheConfig {
            memory_bytes: sizing.memory_bytes,
            max_object_bytes: None,
            disk: sizing.disk_bytes.map(|bytes| config::DiskTier {
                path: CACHE_DISK_PATH.into(),
                bytes,
            }),
        },
        admin: config::AdminConfig {
            token_file: secrets::file(secrets::ADMIN_TOKEN_KEY),
        },
        limits: config::Limits::default(),
        upload,
    };
    match config.validate() {
        Ok(()) => Ok(config),
        Err(config::Error::Invalid(problems)) => Err(problems.into_iter().map(blocker).collect()),
        Err(other) => Err(vec![Blocker::InvalidSpec {
            field: "spec".into(),
            message: other.to_string(),
        }]),
    }
}

/// The edge's upload section, when upload acceleration is enabled: the client keys are the file
/// the edge Secret's [`secrets::UPLOAD_KEYS_KEY`] is mounted as.
fn upload(dist: &Distribution) -> Result<Option<config::Upload>, Blocker> {
    let Some(upload) = secrets::upload(dist) else {
        return Ok(None);
    };
    let max_object_bytes = quantity::to_bytes(&upload.max_object_size)
        .filter(|b| *b > 0)
        .ok_or_else(|| Blocker::InvalidSpec {
            field: "uploadAcceleration.maxObjectSize".into(),
            message: format!(
                "{:?} is not a positive quantity of bytes such as 5Gi",
                upload.max_object_size.0
            ),
        })?;
    Ok(Some(config::Upload {
        target_origin: upload.target_origin.clone(),
        client_keys_file: secrets::file(secrets::UPLOAD_KEYS_KEY),
        max_object_bytes,
    }))
}

/// Problems about what a behavior, group or the upload endpoint points at are unknown origins;
/// the rest are settings the edge cannot use. The edge's `upload` section is the spec's
/// `uploadAcceleration`.
fn blocker(mut problem: config::Problem) -> Blocker {
    if let Some(rest) = problem.field.strip_prefix("upload.") {
        problem.field = format!("uploadAcceleration.{rest}");
    }
    let refers_to_origin = ["targetOrigin", "primary", "secondary"]
        .iter()
        .any(|field| problem.field.ends_with(field))
        && (problem.message.starts_with("unknown origin")
            || problem.field == "uploadAcceleration.targetOrigin");
    if refers_to_origin {
        Blocker::UnknownOrigin {
            field: problem.field,
            message: problem.message,
        }
    } else {
        Blocker::InvalidSpec {
            field: problem.field,
            message: problem.message,
        }
    }
}

fn origin(origin: &Origin) -> config::Origin {
    if let Some(s3) = &origin.s3 {
        let signed = s3.credentials_secret_ref.is_some();
        return config::Origin::S3(config::S3Origin {
            id: origin.name.clone(),
            endpoint: s3.endpoint.clone(),
            bucket: s3.bucket.clone(),
            region: s3.region.clone(),
            path_style: s3.path_style,
            access_key_id_file: signed.then(|| secrets::file(&secrets::access_key_id_key(&origin.name))),
            secret_access_key_file: signed
                .then(|| secrets::file(&secrets::secret_access_key_key(&origin.name))),
            session_token_file: None,
            connect_timeout_seconds: 10,
            read_timeout_seconds: 30,
        });
    }
    // Admission guarantees exactly one of s3 and http; an object that slipped past it (a CRD
    // without its rules) becomes an http origin without a URL, which validation then reports.
    let http = origin.http.clone();
    config::Origin::Http(config::HttpOrigin {
        id: origin.name.clone(),
        url: http.as_ref().map(|h| h.url.clone()).unwrap_or_default(),
        host_header: None,
        connect_timeout_seconds: http.as_ref().map_or(5, |h| u64::from(h.connect_timeout_seconds)),
        read_timeout_seconds: http.as_ref().map_or(30, |h| u64::from(h.read_timeout_seconds)),
    })
}

fn behavior(path_pattern: Option<String>, behavior: &CacheBehavior) -> config::Behavior {
    config::Behavior {
        path_pattern,
        target_origin: behavior.target_origin.clone(),
        min_ttl: behavior.ttl.min_seconds,
        default_ttl: behavior.ttl.default_seconds,
        max_ttl: behavior.ttl.max_seconds,
        cache_key: cache_key(&behavior.cache_key),
        compress: behavior.compress,
        allowed_methods: behavior.allowed_methods.iter().copied().map(method).collect(),
        stale_if_error_seconds: u64::from(behavior.stale_if_error_seconds),
        error_caching: config::ErrorCaching::default(),
        cache_set_cookie_responses: false,
        viewer_cache_control: config::ViewerCacheControl::default(),
    }
}

fn cache_key(policy: &CacheKeyPolicy) -> config::CacheKey {
    config::CacheKey {
        query_strings: key_list(&policy.query_strings),
        headers: key_list(&policy.headers),
        cookies: key_list(&policy.cookies),
    }
}

fn key_list(selection: &KeySelection) -> config::KeyList {
    match selection.behavior {
        SelectionBehavior::None => config::KeyList::None,
        SelectionBehavior::All => config::KeyList::All,
        SelectionBehavior::AllowList => config::KeyList::AllowList(selection.names.clone()),
    }
}

fn method(method: HttpMethod) -> config::Method {
    match method {
        HttpMethod::GET => config::Method::Get,
        HttpMethod::HEAD => config::Method::Head,
        HttpMethod::OPTIONS => config::Method::Options,
        HttpMethod::PUT => config::Method::Put,
        HttpMethod::POST => config::Method::Post,
        HttpMethod::PATCH => config::Method::Patch,
        HttpMethod::DELETE => config::Method::Delete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::{example, sizing, uploads};

    #[test]
    fn renders_the_example_with_the_shield_service_and_secret_file_paths() {
        let config = edge_config(&example(), "web", &sizing()).expect("valid");
        let shield = config.origin_shield.as_ref().expect("shield");
        assert_eq!(shield.region, "eu-west");
        assert_eq!(shield.url, "http://site-eu-west.web.svc:80");
        let service = shield.service.as_ref().expect("the shield's Service is watched");
        assert_eq!(
            (service.name.as_str(), service.port.as_str()),
            ("site-eu-west", "http")
        );
        let config::Origin::S3(s3) = &config.origins[0] else {
            panic!("an s3 origin")
        };
        assert_eq!(
            s3.access_key_id_file.as_deref(),
            Some(std::path::Path::new("origin-bucket-access-key-id"))
        );
        assert_eq!(config.region, None, "the region comes from EDGEFLEET_REGION");
        assert_eq!(config.behaviors[0].min_ttl, 3600);
        assert_eq!(config.error_responses[0].error_caching_min_ttl, 30);
        // What the operator writes, the edge reads back unchanged.
        let yaml = config.to_yaml().expect("yaml");
        assert_eq!(EdgeConfig::from_yaml(&yaml).expect("parses"), config);
        assert!(!yaml.contains("edgefleet-demo"), "no secret in the config");
    }

    #[test]
    fn a_target_the_edge_does_not_know_is_an_unknown_origin() {
        let mut dist = example();
        dist.spec.default_behavior.target_origin = "nowhere".into();
        let blockers = edge_config(&dist, "web", &sizing()).expect_err("unknown");
        assert!(
            blockers
                .iter()
                .any(|b| matches!(b, Blocker::UnknownOrigin { field, .. } if field == "defaultBehavior.targetOrigin")),
            "{blockers:?}"
        );
        assert_eq!(blockers[0].reason(), "UnknownOrigin");
    }

    #[test]
    fn upload_acceleration_renders_the_upload_section() {
        let mut dist = example();
        assert_eq!(edge_config(&dist, "web", &sizing()).expect("valid").upload, None);
        dist.spec.upload_acceleration = uploads("2Gi");
        let config = edge_config(&dist, "web", &sizing()).expect("valid");
        assert_eq!(
            config.upload,
            Some(config::Upload {
                target_origin: "bucket".into(),
                client_keys_file: "upload-client-keys".into(),
                max_object_bytes: 2 << 30,
            })
        );
        assert_eq!(config.listen.upload, None, "the pod sets the upload address");
        let yaml = config.to_yaml().expect("yaml");
        assert_eq!(EdgeConfig::from_yaml(&yaml).expect("parses"), config);

        let upload = dist.spec.upload_acceleration.as_mut().expect("upload");
        upload.target_origin = "web".into();
        upload.max_object_size.0 = "lots".into();
        let blockers = edge_config(&dist, "web", &sizing()).expect_err("bad size");
        assert_eq!(
            blockers[0].message(),
            "spec.uploadAcceleration.maxObjectSize: \"lots\" is not a positive quantity of bytes such as 5Gi"
        );
        dist.spec
            .upload_acceleration
            .as_mut()
            .expect("upload")
            .max_object_size
            .0 = "1Gi".into();
        let blockers = edge_config(&dist, "web", &sizing()).expect_err("http origin");
        assert!(
            matches!(&blockers[0], Blocker::UnknownOrigin { field, message }
                if field == "uploadAcceleration.targetOrigin" && message.contains("not an s3 origin")),
            "{blockers:?}"
        );
        dist.spec.upload_acceleration.as_mut().expect("upload").enabled = false;
        assert_eq!(edge_config(&dist, "web", &sizing()).expect("valid").upload, None);
    }
}
