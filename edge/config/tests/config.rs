//! The configuration's parsing, defaults, validation and rendering.
use edgefleet_config::{EdgeConfig, Error, KeyList, Method, Origin};

const EXAMPLE: &str = include_str!("../../../examples/edge-standalone.yaml");

const MINIMAL: &str = r#"
origins:
  - http: {id: site, url: "http://127.0.0.1:8000"}
defaultBehavior: {targetOrigin: site}
cache: {memoryBytes: 67108864}
admin: {tokenFile: /etc/edgefleet/admin/token}
"#;

fn problems(yaml: &str) -> Vec<String> {
    match EdgeConfig::from_yaml(yaml) {
        Err(Error::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
        other => panic!("expected validation problems, got {other:?}"),
    }
}

/// `yaml` is refused with exactly the `expect`ed problems (each the start of one message).
fn assert_problems(yaml: &str, expect: &[&str]) {
    let found = problems(yaml);
    for e in expect {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "missing problem {e:?} in:\n{}",
            found.join("\n")
        );
    }
    assert_eq!(
        found.len(),
        expect.len(),
        "unexpected extra problems:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_shipped_example_is_valid() {
    let config = EdgeConfig::from_yaml(EXAMPLE).expect("example parses");
    assert_eq!(config.region.as_deref(), Some("local"));
    assert_eq!(config.listen.data.port(), 8080);
    assert_eq!(config.listen.admin.port(), 9901);
    let Origin::Http(site) = &config.origins[0] else {
        panic!("example origin is http")
    };
    assert_eq!(site.url, "http://127.0.0.1:8000");
    assert_eq!(
        config.behaviors[0].cache_key.headers,
        KeyList::AllowList(vec!["accept-language".into()])
    );
}

#[test]
fn defaults_follow_cloudfront() {
    let config = EdgeConfig::from_yaml(MINIMAL).expect("minimal parses");
    let b = &config.default_behavior;
    assert_eq!((b.min_ttl, b.default_ttl, b.max_ttl), (0, 86_400, 31_536_000));
    assert_eq!(b.allowed_methods, vec![Method::Get, Method::Head]);
    assert_eq!(b.cache_key.query_strings, KeyList::None);
    assert!(!b.compress);
    assert_eq!(config.limits.max_url_bytes, 8_192);
    assert_eq!(config.limits.max_header_bytes, 20_480);
    assert_eq!(config.cache.max_object_bytes(), 67_108_864 / 8);
    let Origin::Http(site) = &config.origins[0] else {
        panic!("http origin")
    };
    assert_eq!(
        (site.connect_timeout_seconds, site.read_timeout_seconds),
        (10, 30)
    );
}

#[test]
fn json_is_accepted_and_rendering_round_trips() {
    let config = EdgeConfig::from_yaml(EXAMPLE).expect("example parses");
    let json = serde_json::to_string(&config).expect("json");
    assert_eq!(EdgeConfig::from_yaml(&json).expect("json parses"), config);
    let yaml = config.to_yaml().expect("yaml");
    assert_eq!(EdgeConfig::from_yaml(&yaml).expect("rendered parses"), config);
    assert!(yaml.contains("defaultBehavior:"), "camelCase field names: {yaml}");
}

#[test]
fn unknown_fields_are_refused_naming_the_field() {
    let err = EdgeConfig::from_yaml(&format!("{MINIMAL}\ncahce: {{}}\n")).expect_err("typo");
    assert!(err.to_string().contains("cahce"), "{err}");
}

#[test]
fn s3_origins_and_groups_parse() {
    let yaml = r#"
origins:
  - s3:
      id: bucket
      endpoint: http://127.0.0.1:8333
      bucket: site-assets
      pathStyle: true
      accessKeyIdFile: /secrets/s3/accessKeyId
      secretAccessKeyFile: /secrets/s3/secretAccessKey
  - http: {id: backup, url: "https://backup.example.com/static"}
originGroups:
  - {id: failover, primary: bucket, secondary: backup, failoverStatuses: [403, 404, 500]}
defaultBehavior: {targetOrigin: failover}
cache: {memoryBytes: 67108864}
admin: {tokenFile: /t}
"#;
    let config = EdgeConfig::from_yaml(yaml).expect("parses");
    let Origin::S3(s3) = &config.origins[0] else {
        panic!("s3 origin")
    };
    assert!(s3.path_style);
    assert_eq!(s3.region, "us-east-1");
    assert_eq!(config.origin_groups[0].failover_statuses, vec![403, 404, 500]);
}

#[test]
fn every_problem_is_reported_with_its_field() {
    let yaml = r#"
listen: {data: "127.0.0.1:8080", admin: "127.0.0.1:8080"}
aliases: [Example.com, ok.example.com, ok.example.com]
origins:
  - http: {id: site, url: "ftp://x", connectTimeoutSeconds: 0}
  - s3: {id: site, endpoint: "http://s3", bucket: "B", accessKeyIdFile: /a}
originGroups:
  - {id: g, primary: site, secondary: nowhere, failoverStatuses: [200]}
defaultBehavior: {targetOrigin: missing, minTtl: 100, maxTtl: 10, allowedMethods: [GET]}
behaviors:
  - {targetOrigin: site, cacheKey: {headers: {allowList: ["bad header"]}}}
errorResponses:
  - {errorCode: 200, responseCode: 200}
  - {errorCode: 404, responsePagePath: "errors/404.html"}
cache: {memoryBytes: 10, maxObjectBytes: 100}
admin: {tokenFile: ""}
"#;
    let expect = [
        "listen.admin: must differ from listen.data",
        "aliases[0]: \"Example.com\" is not a lowercase host name",
        "aliases[2]: \"ok.example.com\" is listed twice",
        "origins[0].http.url: \"ftp://x\" must be an absolute http:// or https:// URL",
        "origins[0].http.connectTimeoutSeconds: must be between 1 and 60",
        "origins[1].id: \"site\" is used by another origin",
        "origins[1].s3.bucket: \"B\" is not a bucket name",
        "origins[1].s3: accessKeyIdFile and secretAccessKeyFile go together",
        "originGroups[0].secondary: unknown origin \"nowhere\" (known: site)",
        "originGroups[0].failoverStatuses: 200 is not a 4xx or 5xx status",
        "defaultBehavior.targetOrigin: unknown origin or origin group \"missing\" (known: g, site)",
        "defaultBehavior.minTtl: 100 is above maxTtl 10",
        "defaultBehavior.allowedMethods: must include HEAD",
        "behaviors[0].cacheKey.headers: \"bad header\" is not a valid name",
        "behaviors[0].pathPattern: required for ordered behaviors",
        "errorResponses[0].errorCode: 200 is not a 4xx or 5xx status",
        "errorResponses[0].responseCode: needs responsePagePath",
        "errorResponses[1].responsePagePath: must be a path starting with /",
        "cache.memoryBytes: must be at least 1048576",
        "cache.maxObjectBytes: must be between 1 and cache.memoryBytes",
        "admin.tokenFile: must be the path",
    ];
    assert_problems(yaml, &expect);
}

#[test]
fn path_patterns_and_root_object_are_checked() {
    let yaml = format!(
        "{MINIMAL}behaviors:\n  - {{pathPattern: \"/a b/*\", targetOrigin: site}}\ndefaultRootObject: ../etc/passwd\n"
    );
    let found = problems(&yaml);
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("behaviors[0].pathPattern: ' ' is not allowed")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|f| f.starts_with("defaultRootObject:")),
        "{found:?}"
    );
}

#[test]
fn malformed_yaml_is_a_parse_error() {
    let err = EdgeConfig::from_yaml("origins: [").expect_err("malformed");
    assert!(matches!(err, Error::Parse(_)), "{err:?}");
}

#[test]
fn a_shield_lists_its_edges_by_service_or_by_address() {
    let by_service = format!(
        "{MINIMAL}originShield:\n  region: eu-west\n  url: http://10.96.0.7:80\n  service: {{name: site-eu-west}}\n"
    );
    let config = EdgeConfig::from_yaml(&by_service).expect("parses");
    let shield = config.origin_shield.as_ref().expect("shield");
    let service = shield.service.as_ref().expect("service");
    assert_eq!(
        (service.name.as_str(), service.port.as_str()),
        ("site-eu-west", "http")
    );
    let yaml = config.to_yaml().expect("yaml");
    assert_eq!(EdgeConfig::from_yaml(&yaml).expect("round trip"), config);

    let by_address = format!(
        "{MINIMAL}originShield:\n  region: eu-west\n  url: http://127.0.0.1:8081\n  peers:\n    - {{address: \"127.0.0.1:8081\", name: shield-a}}\n    - {{address: \"[::1]:8082\"}}\n"
    );
    let config = EdgeConfig::from_yaml(&by_address).expect("parses");
    let peers = &config.origin_shield.as_ref().expect("shield").peers;
    assert_eq!(peers[0].name.as_deref(), Some("shield-a"));
    assert_eq!(peers[1].address.to_string(), "[::1]:8082");
}

#[test]
fn shield_problems_name_their_field() {
    let yaml = format!(
        r#"{MINIMAL}originShield:
  region: eu-west
  url: http://shield
  service: {{name: Site_EU, port: "--"}}
  peers:
    - {{address: "127.0.0.1:8081", name: a}}
    - {{address: "127.0.0.1:8081", name: a}}
"#
    );
    let expect = [
        "originShield.service.name: \"Site_EU\" is not a Service name",
        "originShield.service.port: \"--\" is not a port name",
        "originShield.peers: set either service (in a cluster) or peers",
        "originShield.peers[1].address: 127.0.0.1:8081 is listed twice",
        "originShield.peers[1].name: \"a\" is listed twice",
    ];
    assert_problems(&yaml, &expect);
    let bad_address =
        format!("{MINIMAL}originShield:\n  region: r\n  url: http://s\n  peers: [{{address: shield:80}}]\n");
    assert!(matches!(
        EdgeConfig::from_yaml(&bad_address),
        Err(Error::Parse(_))
    ));
}

#[test]
fn an_upload_section_targets_an_s3_origin() {
    let yaml = r#"
origins:
  - http: {id: site, url: "http://127.0.0.1:8000"}
  - s3: {id: bucket, endpoint: "http://127.0.0.1:7070", bucket: uploads, pathStyle: true}
defaultBehavior: {targetOrigin: site}
cache: {memoryBytes: 67108864}
admin: {tokenFile: admin-token}
upload: {targetOrigin: bucket, clientKeysFile: upload-client-keys}
"#;
    let config = EdgeConfig::from_yaml(yaml).expect("parses");
    let upload = config.upload.as_ref().expect("upload");
    assert_eq!(
        upload.max_object_bytes,
        edgefleet_config::DEFAULT_MAX_UPLOAD_BYTES
    );
    assert_eq!(config.listen.upload_addr().port(), 8090);
    let rendered = config.to_yaml().expect("yaml");
    assert_eq!(EdgeConfig::from_yaml(&rendered).expect("round trip"), config);
    // No upload section: nothing about uploads is written.
    assert!(
        !EdgeConfig::from_yaml(MINIMAL)
            .expect("minimal")
            .to_yaml()
            .expect("yaml")
            .contains("upload")
    );

    let bad = yaml
        .replace(
            "targetOrigin: bucket, clientKeysFile: upload-client-keys",
            "targetOrigin: site, clientKeysFile: \"\", maxObjectBytes: 0",
        )
        .replace(
            "admin: {tokenFile",
            "listen: {upload: \"0.0.0.0:8080\"}\nadmin: {tokenFile",
        );
    let expect = [
        "upload.targetOrigin: \"site\" is not an s3 origin (s3 origins: bucket)",
        "upload.clientKeysFile: must be the path",
        "upload.maxObjectBytes: must be at least 1",
        "listen.upload: must differ from listen.data and listen.admin",
    ];
    assert_problems(&bad, &expect);
}
