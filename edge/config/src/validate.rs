//! The rules a parsed configuration must follow. Every problem is collected, each naming the
//! field it concerns, so one attempt shows everything to fix.
use std::{collections::HashSet, fmt};

use crate::model::{
    Behavior, EdgeConfig, ErrorResponse, HttpOrigin, KeyList, Method, Origin, OriginGroup, OriginShield,
    S3Origin, Upload,
};

/// One broken rule: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field, as a path such as `behaviors[2].targetOrigin`.
    pub field: String,
    /// What is wrong and, where it helps, what would be right.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }
}

/// CloudFront's limit on the length of a path pattern.
const MAX_PATH_PATTERN: usize = 255;

pub(crate) fn problems(config: &EdgeConfig) -> Vec<Problem> {
    let mut p = Problems::default();
    check_identity(config, &mut p);
    let origin_ids = check_origins(&config.origins, &mut p);
    let group_ids = check_groups(&config.origin_groups, &origin_ids, &mut p);
    if let Some(shield) = &config.origin_shield {
        check_shield(shield, &mut p);
    }
    let targets: HashSet<&str> = origin_ids.union(&group_ids).copied().collect();
    check_behavior("defaultBehavior", &config.default_behavior, &targets, &mut p);
    if let Some(pattern) = &config.default_behavior.path_pattern
        && pattern != "*"
    {
        p.add(
            "defaultBehavior.pathPattern",
            format!("the default behavior matches every path; leave pathPattern out (got {pattern:?})"),
        );
    }
    for (i, behavior) in config.behaviors.iter().enumerate() {
        let field = format!("behaviors[{i}]");
        check_behavior(&field, behavior, &targets, &mut p);
        match &behavior.path_pattern {
            None => p.add(format!("{field}.pathPattern"), "required for ordered behaviors"),
            Some(pattern) => check_path_pattern(&format!("{field}.pathPattern"), pattern, &mut p),
        }
    }
    if let Some(root) = &config.default_root_object
        && (root.trim_start_matches('/').is_empty() || has_dot_segment(root))
    {
        p.add("defaultRootObject", "must name an object, like index.html");
    }
    check_error_responses(&config.error_responses, &mut p);
    check_cache(config, &mut p);
    if let Some(upload) = &config.upload {
        check_upload(config, upload, &mut p);
    }
    if config.admin.token_file.as_os_str().is_empty() {
        p.add(
            "admin.tokenFile",
            "must be the path of the file holding the admin token",
        );
    }
    p.0
}

fn check_identity(config: &EdgeConfig, p: &mut Problems) {
    if !is_header_safe(&config.distribution) {
        p.add("distribution", "must be a non-empty name without spaces");
    }
    if let Some(region) = &config.region
        && !is_header_safe(region)
    {
        p.add("region", "must be a non-empty name without spaces");
    }
    if config.listen.data == config.listen.admin {
        p.add("listen.admin", "must differ from listen.data");
    }
    let mut seen = HashSet::new();
    for (i, alias) in config.aliases.iter().enumerate() {
        if !is_alias(alias) {
            p.add(
                format!("aliases[{i}]"),
                format!("{alias:?} is not a lowercase host name (a leading \"*.\" is allowed)"),
            );
        }
        if !seen.insert(alias.as_str()) {
            p.add(format!("aliases[{i}]"), format!("{alias:?} is listed twice"));
        }
    }
    let limits = &config.limits;
    if !(256..=65_536).contains(&limits.max_url_bytes) {
        p.add("limits.maxUrlBytes", "must be between 256 and 65536");
    }
    if !(1_024..=1_048_576).contains(&limits.max_header_bytes) {
        p.add("limits.maxHeaderBytes", "must be between 1024 and 1048576");
    } else if limits.max_header_bytes < limits.max_url_bytes {
        p.add("limits.maxHeaderBytes", "must be at least limits.maxUrlBytes");
    }
}

fn check_origins<'a>(origins: &'a [Origin], p: &mut Problems) -> HashSet<&'a str> {
    let mut ids = HashSet::new();
    if origins.is_empty() {
        p.add("origins", "at least one origin is required");
    }
    for (i, origin) in origins.iter().enumerate() {
        let field = format!("origins[{i}]");
        let id = origin.id();
        if !is_id(id) {
            p.add(
                format!("{field}.id"),
                format!("{id:?} must be letters, digits, '-', '_' or '.'"),
            );
        }
        if !ids.insert(id) {
            p.add(format!("{field}.id"), format!("{id:?} is used by another origin"));
        }
        match origin {
            Origin::Http(o) => check_http_origin(&format!("{field}.http"), o, p),
            Origin::S3(o) => check_s3_origin(&format!("{field}.s3"), o, p),
        }
    }
    ids
}

fn check_http_origin(field: &str, o: &HttpOrigin, p: &mut Problems) {
    check_base_url(&format!("{field}.url"), &o.url, p);
    if let Some(host) = &o.host_header
        && (host.is_empty() || http::HeaderValue::from_str(host).is_err())
    {
        p.add(format!("{field}.hostHeader"), "must be a valid Host header value");
    }
    check_timeouts(field, o.connect_timeout_seconds, o.read_timeout_seconds, p);
}

fn check_s3_origin(field: &str, o: &S3Origin, p: &mut Problems) {
    check_base_url(&format!("{field}.endpoint"), &o.endpoint, p);
    let bucket_ok = (3..=63).contains(&o.bucket.len())
        && o.bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !o.bucket.starts_with(['-', '.'])
        && !o.bucket.ends_with(['-', '.']);
    if !bucket_ok {
        p.add(
            format!("{field}.bucket"),
            format!("{:?} is not a bucket name (3-63 of a-z, 0-9, '-', '.')", o.bucket),
        );
    }
    if !is_id(&o.region) {
        p.add(
            format!("{field}.region"),
            "must be a region name such as us-east-1",
        );
    }
    match (&o.access_key_id_file, &o.secret_access_key_file) {
        (Some(_), Some(_)) | (None, None) => {}
        _ => p.add(
            field,
            "accessKeyIdFile and secretAccessKeyFile go together (both, or neither for anonymous access)",
        ),
    }
    if o.session_token_file.is_some() && o.access_key_id_file.is_none() {
        p.add(
            format!("{field}.sessionTokenFile"),
            "needs accessKeyIdFile and secretAccessKeyFile",
        );
    }
    check_timeouts(field, o.connect_timeout_seconds, o.read_timeout_seconds, p);
}

fn check_timeouts(field: &str, connect: u64, read: u64, p: &mut Problems) {
    if !(1..=60).contains(&connect) {
        p.add(
            format!("{field}.connectTimeoutSeconds"),
            "must be between 1 and 60",
        );
    }
    if !(1..=600).contains(&read) {
        p.add(format!("{field}.readTimeoutSeconds"), "must be between 1 and 600");
    }
}

fn check_base_url(field: &str, url: &str, p: &mut Problems) {
    match url.parse::<http::Uri>() {
        Ok(uri) => {
            let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
            if !scheme_ok || uri.host().is_none_or(str::is_empty) {
                p.add(
                    field,
                    format!("{url:?} must be an absolute http:// or https:// URL"),
                );
            } else if uri.query().is_some() {
                p.add(field, format!("{url:?} must not have a query string"));
            }
        }
        Err(e) => p.add(field, format!("{url:?} is not a URL: {e}")),
    }
}

fn check_shield(shield: &OriginShield, p: &mut Problems) {
    if !is_header_safe(&shield.region) {
        p.add("originShield.region", "must be a non-empty name without spaces");
    }
    check_base_url("originShield.url", &shield.url, p);
    if let Some(service) = &shield.service {
        if !is_dns_label(&service.name) {
            p.add(
                "originShield.service.name",
                format!("{:?} is not a Service name (a lowercase DNS label)", service.name),
            );
        }
        if !is_port_name(&service.port) {
            p.add(
                "originShield.service.port",
                format!(
                    "{:?} is not a port name (lowercase letters, digits and '-', at most 15)",
                    service.port
                ),
            );
        }
        if !shield.peers.is_empty() {
            p.add(
                "originShield.peers",
                "set either service (in a cluster) or peers (a fixed list), not both",
            );
        }
    }
    let mut addresses = HashSet::new();
    let mut names = HashSet::new();
    for (i, peer) in shield.peers.iter().enumerate() {
        if !addresses.insert(peer.address) {
            p.add(
                format!("originShield.peers[{i}].address"),
                format!("{} is listed twice", peer.address),
            );
        }
        if let Some(name) = &peer.name {
            if !is_header_safe(name) {
                p.add(
                    format!("originShield.peers[{i}].name"),
                    "must be a non-empty name without spaces",
                );
            }
            if !names.insert(name.as_str()) {
                p.add(
                    format!("originShield.peers[{i}].name"),
                    format!("{name:?} is listed twice"),
                );
            }
        }
    }
}

fn check_groups<'a>(
    groups: &'a [OriginGroup],
    origin_ids: &HashSet<&str>,
    p: &mut Problems,
) -> HashSet<&'a str> {
    let mut ids = HashSet::new();
    for (i, group) in groups.iter().enumerate() {
        let field = format!("originGroups[{i}]");
        if !is_id(&group.id) {
            p.add(format!("{field}.id"), "must be letters, digits, '-', '_' or '.'");
        }
        if origin_ids.contains(group.id.as_str()) || !ids.insert(group.id.as_str()) {
            p.add(format!("{field}.id"), format!("{:?} is already used", group.id));
        }
        for (name, member) in [("primary", &group.primary), ("secondary", &group.secondary)] {
            if !origin_ids.contains(member.as_str()) {
                p.add(
                    format!("{field}.{name}"),
                    format!("unknown origin {member:?} (known: {})", known(origin_ids)),
                );
            }
        }
        if group.primary == group.secondary {
            p.add(format!("{field}.secondary"), "must differ from primary");
        }
        if group.failover_statuses.is_empty() {
            p.add(format!("{field}.failoverStatuses"), "list at least one status");
        }
        for status in &group.failover_statuses {
            if !(400..=599).contains(status) {
                p.add(
                    format!("{field}.failoverStatuses"),
                    format!("{status} is not a 4xx or 5xx status"),
                );
            }
        }
    }
    ids
}

fn check_behavior(field: &str, b: &Behavior, targets: &HashSet<&str>, p: &mut Problems) {
    if !targets.contains(b.target_origin.as_str()) {
        p.add(
            format!("{field}.targetOrigin"),
            format!(
                "unknown origin or origin group {:?} (known: {})",
                b.target_origin,
                known(targets)
            ),
        );
    }
    if b.min_ttl > b.max_ttl {
        p.add(
            format!("{field}.minTtl"),
            format!("{} is above maxTtl {}", b.min_ttl, b.max_ttl),
        );
    }
    for method in [Method::Get, Method::Head] {
        if !b.allowed_methods.contains(&method) {
            p.add(
                format!("{field}.allowedMethods"),
                format!("must include {}", method.as_str()),
            );
        }
    }
    let distinct: HashSet<_> = b.allowed_methods.iter().collect();
    if distinct.len() != b.allowed_methods.len() {
        p.add(format!("{field}.allowedMethods"), "lists a method twice");
    }
    let key = &b.cache_key;
    check_key_list(
        &format!("{field}.cacheKey.queryStrings"),
        &key.query_strings,
        |_| true,
        p,
    );
    check_key_list(
        &format!("{field}.cacheKey.headers"),
        &key.headers,
        is_header_name,
        p,
    );
    check_key_list(&format!("{field}.cacheKey.cookies"), &key.cookies, is_token, p);
}

fn check_key_list(field: &str, list: &KeyList, valid: fn(&str) -> bool, p: &mut Problems) {
    if let KeyList::AllowList(names) = list {
        if names.is_empty() {
            p.add(field, "an empty allowList keys nothing; write `none`");
        }
        for name in names {
            if name.is_empty() || !valid(name) {
                p.add(field, format!("{name:?} is not a valid name"));
            }
        }
    }
}

fn check_path_pattern(field: &str, pattern: &str, p: &mut Problems) {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-.*$/~\"'@:+&?%=,;!".contains(c);
    if pattern.is_empty() || pattern.len() > MAX_PATH_PATTERN {
        p.add(field, format!("must be 1 to {MAX_PATH_PATTERN} characters"));
    } else if let Some(bad) = pattern.chars().find(|c| !allowed(*c)) {
        p.add(field, format!("{bad:?} is not allowed in a path pattern"));
    }
}

fn check_error_responses(responses: &[ErrorResponse], p: &mut Problems) {
    let mut seen = HashSet::new();
    for (i, r) in responses.iter().enumerate() {
        let field = format!("errorResponses[{i}]");
        if !(400..=599).contains(&r.error_code) {
            p.add(
                format!("{field}.errorCode"),
                format!("{} is not a 4xx or 5xx status", r.error_code),
            );
        }
        if !seen.insert(r.error_code) {
            p.add(
                format!("{field}.errorCode"),
                format!("{} is configured twice", r.error_code),
            );
        }
        if let Some(path) = &r.response_page_path
            && (!path.starts_with('/') || has_dot_segment(path))
        {
            p.add(
                format!("{field}.responsePagePath"),
                "must be a path starting with /",
            );
        }
        if let Some(code) = r.response_code {
            if !(200..=599).contains(&code) {
                p.add(
                    format!("{field}.responseCode"),
                    format!("{code} is not a status code"),
                );
            }
            if r.response_page_path.is_none() {
                p.add(format!("{field}.responseCode"), "needs responsePagePath");
            }
        }
    }
}

fn check_cache(config: &EdgeConfig, p: &mut Problems) {
    let cache = &config.cache;
    if cache.memory_bytes < 1 << 20 {
        p.add("cache.memoryBytes", "must be at least 1048576 (1 MiB)");
    }
    if let Some(max) = cache.max_object_bytes
        && (max == 0 || max > cache.memory_bytes)
    {
        p.add("cache.maxObjectBytes", "must be between 1 and cache.memoryBytes");
    }
    if let Some(disk) = &cache.disk {
        if disk.path.as_os_str().is_empty() {
            p.add("cache.disk.path", "must name a directory");
        }
        if disk.bytes < 16 << 20 {
            p.add("cache.disk.bytes", "must be at least 16777216 (16 MiB)");
        }
    }
}

fn check_upload(config: &EdgeConfig, upload: &Upload, p: &mut Problems) {
    let s3_ids: HashSet<&str> = config
        .origins
        .iter()
        .filter(|o| matches!(o, Origin::S3(_)))
        .map(Origin::id)
        .collect();
    if !s3_ids.contains(upload.target_origin.as_str()) {
        p.add(
            "upload.targetOrigin",
            format!(
                "{:?} is not an s3 origin (s3 origins: {})",
                upload.target_origin,
                known(&s3_ids)
            ),
        );
    }
    if upload.client_keys_file.as_os_str().is_empty() {
        p.add(
            "upload.clientKeysFile",
            "must be the path of the file holding the client keys",
        );
    }
    if upload.max_object_bytes == 0 {
        p.add("upload.maxObjectBytes", "must be at least 1");
    }
    let addr = config.listen.upload_addr();
    if addr == config.listen.data || addr == config.listen.admin {
        p.add("listen.upload", "must differ from listen.data and listen.admin");
    }
}

fn known(ids: &HashSet<&str>) -> String {
    let mut ids: Vec<&str> = ids.iter().copied().collect();
    ids.sort_unstable();
    if ids.is_empty() {
        "none".to_owned()
    } else {
        ids.join(", ")
    }
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn is_header_safe(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic())
}

/// RFC 1035 label, as Kubernetes requires of Service names.
fn is_dns_label(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An IANA service name, as Kubernetes requires of port names.
fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_token(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_header_name(s: &str) -> bool {
    http::HeaderName::from_bytes(s.as_bytes()).is_ok()
}

fn is_alias(s: &str) -> bool {
    let host = s.strip_prefix("*.").unwrap_or(s);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}
