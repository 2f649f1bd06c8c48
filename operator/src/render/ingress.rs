//! Outside traffic, when the chart enables it: one Ingress per alias of a Distribution, routing
//! that host to the Service `<dist>` over every region, and one for the upload host
//! (`uploadAcceleration.host`), routing it to that Service's upload port.
//!
//! One Ingress per alias rather than one Ingress with a rule per alias, because each alias then
//! lives and fails alone: an ingress controller's admission webhook that refuses one host (already
//! claimed by another Ingress) does not take the other aliases down with it, cert-manager issues
//! and renews one certificate per Ingress independently, and removing an alias deletes exactly
//! its object.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::edge_config::{SERVICE_PORT, UPLOAD_SERVICE_PORT};
use super::{hash, metadata, names, secrets};
use crate::api::Distribution;

/// Longest name of a Kubernetes object that is a DNS subdomain (Ingress, Secret).
const MAX_NAME: usize = 253;
/// Annotation naming the alias an Ingress serves: its name may be shortened, the host is not.
const ALIAS_ANNOTATION: &str = "edgefleet.io/alias";
/// Annotation naming the upload host the upload Ingress serves.
const UPLOAD_HOST_ANNOTATION: &str = "edgefleet.io/upload-host";
/// Annotation with a hash of everything the operator renders into an Ingress. Applies are
/// skipped when the live object already contains the rendered one, so a field that the settings
/// no longer produce (TLS turned off, an annotation dropped) would otherwise linger: the hash
/// changes with the settings and makes the apply happen, which removes those fields.
const SETTINGS_HASH_ANNOTATION: &str = "edgefleet.io/ingress-settings-hash";

/// What the operator does about Ingresses, from the chart's `ingress` values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Ingresses {
    /// Neither rendered nor watched: the operator needs no permission on Ingresses.
    #[default]
    Disabled,
    /// None rendered; those rendered before are deleted. Needs `list`, `watch` and `delete`,
    /// so that turning Ingresses off removes what they exposed.
    Removing,
    /// One Ingress per alias.
    Enabled(IngressSettings),
}

impl Ingresses {
    /// Whether the operator watches Ingresses (to keep them converged, or to delete them).
    pub fn watched(&self) -> bool {
        !matches!(self, Ingresses::Disabled)
    }
}

/// How every Ingress is rendered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressSettings {
    /// `spec.ingressClassName`; `None` leaves the choice to the cluster's default class.
    pub class_name: Option<String>,
    /// Annotations of every Ingress (e.g. `cert-manager.io/cluster-issuer`).
    pub annotations: BTreeMap<String, String>,
    /// With TLS: the name of the Secret holding each alias's certificate.
    pub tls_secret: Option<SecretNameTemplate>,
}

/// The name of the TLS Secret of an Ingress, with `{ingress}` (the Ingress's name) and
/// `{distribution}` replaced: `{ingress}-tls` gives every alias its own certificate (what
/// cert-manager creates from the Ingress), `{distribution}-tls` one certificate for every alias.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretNameTemplate(String);

/// A TLS Secret name template that cannot give a valid Secret name.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} cannot name a Secret: use lower-case letters, digits, '-', '.' and the placeholders \
     {{ingress}} and {{distribution}}, e.g. \"{{ingress}}-tls\""
)]
pub struct InvalidSecretNameTemplate(String);

impl FromStr for SecretNameTemplate {
    type Err = InvalidSecretNameTemplate;

    fn from_str(template: &str) -> Result<Self, Self::Err> {
        // Placeholders stand for names that are valid themselves; what is around them must be.
        let literal = template.replace("{ingress}", "a").replace("{distribution}", "a");
        let valid_chars = literal
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        let alphanumeric_ends = literal.starts_with(|c: char| c.is_ascii_alphanumeric())
            && literal.ends_with(|c: char| c.is_ascii_alphanumeric());
        if valid_chars && alphanumeric_ends {
            Ok(Self(template.to_owned()))
        } else {
            Err(InvalidSecretNameTemplate(template.to_owned()))
        }
    }
}

impl SecretNameTemplate {
    fn render(&self, ingress: &str, distribution: &str) -> String {
        let name = self
            .0
            .replace("{ingress}", ingress)
            .replace("{distribution}", distribution);
        shortened(name, self.0.as_bytes())
    }
}

/// One Ingress: its name, and where it sends its host.
struct Route<'a> {
    name: String,
    host: &'a str,
    /// Port of the Service `<dist>`.
    port: i32,
    /// Annotation naming the host (the name may be shortened, the host is not).
    annotation: &'static str,
}

/// The Ingresses of `dist`: one per distinct alias, in `spec.aliases` order, then the upload
/// host's when uploads are enabled and have one. None without a host: an Ingress without a host
/// would route every host to this Distribution.
pub(super) fn ingresses(dist: &Distribution, settings: &IngressSettings) -> Vec<Ingress> {
    let distribution = dist.metadata.name.clone().unwrap_or_default();
    let mut taken = BTreeSet::new();
    let mut routes: Vec<Route> = Vec::new();
    for alias in &dist.spec.aliases {
        let mut name = ingress_name(&distribution, alias);
        if !taken.insert(name.clone()) {
            if routes.iter().any(|r| r.host == alias) {
                continue; // the same alias twice
            }
            // Two aliases with one name (`*.example.com` and `wildcard.example.com`).
            name = with_hash(&name, alias.as_bytes());
            taken.insert(name.clone());
        }
        routes.push(Route {
            name,
            host: alias,
            port: SERVICE_PORT,
            annotation: ALIAS_ANNOTATION,
        });
    }
    if let Some(host) = secrets::upload(dist).and_then(|upload| upload.host.as_deref()) {
        // `<dist>-upload`, unless an alias's Ingress took that name (an alias `upload`).
        let mut name = shortened(format!("{distribution}-upload"), host.as_bytes());
        if taken.contains(&name) {
            name = with_hash(&name, host.as_bytes());
        }
        routes.push(Route {
            name,
            host,
            port: UPLOAD_SERVICE_PORT,
            annotation: UPLOAD_HOST_ANNOTATION,
        });
    }
    let settings_hash = settings_hash(settings);
    routes
        .iter()
        .map(|route| ingress(dist, &distribution, route, settings, &settings_hash))
        .collect()
}

fn ingress(
    dist: &Distribution,
    distribution: &str,
    route: &Route<'_>,
    settings: &IngressSettings,
    settings_hash: &str,
) -> Ingress {
    let mut annotations = settings.annotations.clone();
    annotations.insert(route.annotation.to_owned(), route.host.to_owned());
    annotations.insert(SETTINGS_HASH_ANNOTATION.to_owned(), settings_hash.to_owned());
    let mut meta = metadata(dist, route.name.clone(), names::labels(distribution));
    meta.annotations = Some(annotations);
    let tls = settings.tls_secret.as_ref().map(|template| {
        vec![IngressTLS {
            hosts: Some(vec![route.host.to_owned()]),
            secret_name: Some(template.render(&route.name, distribution)),
        }]
    });
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: distribution.to_owned(),
            port: Some(ServiceBackendPort {
                number: Some(route.port),
                ..ServiceBackendPort::default()
            }),
        }),
        ..IngressBackend::default()
    };
    Ingress {
        metadata: meta,
        spec: Some(IngressSpec {
            ingress_class_name: settings.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(route.host.to_owned()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".to_owned()),
                        path_type: "Prefix".to_owned(),
                        backend,
                    }],
                }),
            }]),
            tls,
            ..IngressSpec::default()
        }),
        status: None,
    }
}

/// `<dist>-<alias>`, with a leading `*.` spelled `wildcard.` (names cannot hold `*`), shortened
/// with a hash when it would be too long.
fn ingress_name(distribution: &str, alias: &str) -> String {
    let host = match alias.strip_prefix("*.") {
        Some(rest) => format!("wildcard.{rest}"),
        None => alias.to_owned(),
    };
    shortened(format!("{distribution}-{host}"), alias.as_bytes())
}

/// `name` if it fits in [`MAX_NAME`], else its start and a hash of `seed`.
fn shortened(name: String, seed: &[u8]) -> String {
    if name.len() <= MAX_NAME {
        name
    } else {
        with_hash(&name, seed)
    }
}

/// The start of `name` and a hash of `seed`, within [`MAX_NAME`] and ending alphanumeric.
fn with_hash(name: &str, seed: &[u8]) -> String {
    let suffix = hash::short_hash([name.as_bytes(), seed]);
    // Names here are ASCII (the API's patterns for Distribution names and aliases), so any byte
    // index is a char boundary.
    let keep = name.len().min(MAX_NAME - suffix.len() - 1);
    let start = name[..keep].trim_end_matches(['-', '.']);
    format!("{start}-{suffix}")
}

fn settings_hash(settings: &IngressSettings) -> String {
    let class = settings.class_name.as_deref().unwrap_or_default();
    let annotations = serde_json::to_string(&settings.annotations).unwrap_or_default();
    let tls = settings
        .tls_secret
        .as_ref()
        .map(|t| t.0.as_str())
        .unwrap_or_default();
    hash::short_hash([class.as_bytes(), annotations.as_bytes(), tls.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::example;

    fn settings() -> IngressSettings {
        IngressSettings {
            class_name: Some("nginx".into()),
            annotations: BTreeMap::from([(
                "cert-manager.io/cluster-issuer".to_owned(),
                "letsencrypt".to_owned(),
            )]),
            tls_secret: Some("{ingress}-tls".parse().expect("valid template")),
        }
    }

    fn with_aliases(aliases: &[&str]) -> Distribution {
        let mut dist = example();
        dist.spec.aliases = aliases.iter().map(|a| (*a).to_owned()).collect();
        dist
    }

    fn host(ingress: &Ingress) -> &str {
        let rules = ingress.spec.as_ref().and_then(|s| s.rules.as_ref());
        rules.and_then(|r| r[0].host.as_deref()).unwrap_or_default()
    }

    #[test]
    fn the_upload_host_gets_an_ingress_to_the_upload_port_when_uploads_are_on() {
        let mut dist = with_aliases(&["www.example.com"]);
        let mut upload = crate::render::tests::uploads("1Gi").expect("uploads");
        upload.host = Some("upload.example.com".into());
        dist.spec.upload_acceleration = Some(upload);
        let rendered = ingresses(&dist, &settings());
        let names: Vec<_> = rendered.iter().map(|i| i.metadata.name.as_deref()).collect();
        assert_eq!(names, [Some("site-www.example.com"), Some("site-upload")]);
        let upload = &rendered[1];
        assert_eq!(host(upload), "upload.example.com");
        let rules = upload
            .spec
            .as_ref()
            .and_then(|s| s.rules.as_ref())
            .expect("rules");
        let service = rules[0].http.as_ref().expect("http").paths[0]
            .backend
            .service
            .as_ref()
            .expect("a Service backend");
        assert_eq!(
            (
                service.name.as_str(),
                service.port.as_ref().and_then(|p| p.number)
            ),
            ("site", Some(8090))
        );
        let annotations = upload.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(annotations[UPLOAD_HOST_ANNOTATION], "upload.example.com");
        assert!(!annotations.contains_key(ALIAS_ANNOTATION));
        let tls = &upload.spec.as_ref().and_then(|s| s.tls.as_ref()).expect("tls")[0];
        assert_eq!(tls.secret_name.as_deref(), Some("site-upload-tls"));

        // An alias named `upload` keeps its name; the upload Ingress gets a hashed one.
        let mut clash = dist.clone();
        clash.spec.aliases = vec!["upload".into()];
        let names: Vec<String> = ingresses(&clash, &settings())
            .iter()
            .filter_map(|i| i.metadata.name.clone())
            .collect();
        assert_eq!(names[0], "site-upload");
        assert!(
            names[1].starts_with("site-upload-") && names[1] != names[0],
            "{names:?}"
        );

        // Disabled uploads, or no host: no upload Ingress.
        let mut disabled = dist.clone();
        if let Some(upload) = disabled.spec.upload_acceleration.as_mut() {
            upload.enabled = false;
        }
        assert_eq!(ingresses(&disabled, &settings()).len(), 1);
        let mut no_host = dist;
        if let Some(upload) = no_host.spec.upload_acceleration.as_mut() {
            upload.host = None;
        }
        assert_eq!(ingresses(&no_host, &settings()).len(), 1);
    }

    #[test]
    fn one_ingress_per_alias_routes_its_host_to_the_service_over_every_region() {
        let dist = with_aliases(&["www.example.com", "cdn.example.com"]);
        let ingresses = ingresses(&dist, &settings());
        let names: Vec<_> = ingresses.iter().map(|i| i.metadata.name.as_deref()).collect();
        assert_eq!(
            names,
            [Some("site-www.example.com"), Some("site-cdn.example.com")]
        );
        for (ingress, alias) in ingresses.iter().zip(["www.example.com", "cdn.example.com"]) {
            let spec = ingress.spec.as_ref().expect("spec");
            assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
            let rules = spec.rules.as_ref().expect("rules");
            assert_eq!(rules.len(), 1);
            assert_eq!(rules[0].host.as_deref(), Some(alias));
            let path = &rules[0].http.as_ref().expect("http").paths[0];
            assert_eq!(
                (path.path.as_deref(), path.path_type.as_str()),
                (Some("/"), "Prefix")
            );
            let service = path.backend.service.as_ref().expect("a Service backend");
            assert_eq!(service.name, "site");
            assert_eq!(service.port.as_ref().and_then(|p| p.number), Some(80));
            let tls = &spec.tls.as_ref().expect("tls")[0];
            assert_eq!(tls.hosts.as_deref(), Some(&[alias.to_owned()][..]));
            let secret = format!("site-{alias}-tls");
            assert_eq!(tls.secret_name.as_deref(), Some(secret.as_str()));
            let annotations = ingress.metadata.annotations.as_ref().expect("annotations");
            assert_eq!(annotations["cert-manager.io/cluster-issuer"], "letsencrypt");
            assert_eq!(annotations[ALIAS_ANNOTATION], alias);
            let owner = &ingress.metadata.owner_references.as_ref().expect("owner")[0];
            assert_eq!(
                (owner.kind.as_str(), owner.controller),
                ("Distribution", Some(true))
            );
            let labels = ingress.metadata.labels.as_ref().expect("labels");
            assert_eq!(labels[names::DISTRIBUTION_LABEL], "site");
            assert_eq!(labels["app.kubernetes.io/managed-by"], names::MANAGED_BY);
        }
    }

    #[test]
    fn no_alias_no_ingress() {
        assert!(ingresses(&with_aliases(&[]), &settings()).is_empty());
    }

    #[test]
    fn without_class_or_tls_the_cluster_defaults_apply() {
        let plain = IngressSettings::default();
        let ingress = &ingresses(&with_aliases(&["www.example.com"]), &plain)[0];
        let spec = ingress.spec.as_ref().expect("spec");
        assert_eq!(spec.ingress_class_name, None);
        assert_eq!(spec.tls, None);
    }

    #[test]
    fn a_shared_certificate_names_one_secret_for_every_alias() {
        let shared = IngressSettings {
            tls_secret: Some("{distribution}-tls".parse().expect("valid template")),
            ..IngressSettings::default()
        };
        for ingress in ingresses(&with_aliases(&["a.example.com", "b.example.com"]), &shared) {
            let tls = &ingress.spec.expect("spec").tls.expect("tls")[0];
            assert_eq!(tls.secret_name.as_deref(), Some("site-tls"));
        }
    }

    #[test]
    fn wildcards_repeats_and_lookalikes_get_one_valid_distinct_name_each() {
        let dist = with_aliases(&[
            "*.example.com",
            "wildcard.example.com",
            "*.example.com",
            "www.example.com",
        ]);
        let ingresses = ingresses(&dist, &settings());
        let hosts: Vec<&str> = ingresses.iter().map(host).collect();
        assert_eq!(
            hosts,
            ["*.example.com", "wildcard.example.com", "www.example.com"]
        );
        let names: BTreeSet<&str> = ingresses
            .iter()
            .filter_map(|i| i.metadata.name.as_deref())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains("site-wildcard.example.com"), "{names:?}");
        for name in names {
            assert!(is_dns_subdomain(name), "{name}");
        }
    }

    #[test]
    fn long_aliases_give_names_that_fit_and_stay_distinct() {
        let label = "a".repeat(63);
        let long = |tld: &str| format!("{label}.{label}.{label}.{tld}");
        let (one, two) = (long("com"), long("org"));
        let dist = with_aliases(&[&one, &two]);
        let ingresses = ingresses(&dist, &settings());
        let names: Vec<&str> = ingresses
            .iter()
            .filter_map(|i| i.metadata.name.as_deref())
            .collect();
        assert_ne!(names[0], names[1]);
        for ingress in &ingresses {
            let name = ingress.metadata.name.as_deref().expect("name");
            assert!(name.len() <= MAX_NAME && is_dns_subdomain(name), "{name}");
            let tls = &ingress.spec.as_ref().and_then(|s| s.tls.clone()).expect("tls")[0];
            let secret = tls.secret_name.as_deref().expect("secret");
            assert!(secret.len() <= MAX_NAME && is_dns_subdomain(secret), "{secret}");
        }
        assert_eq!(host(&ingresses[0]), one, "the host itself is never shortened");
    }

    #[test]
    fn a_settings_change_changes_what_is_applied() {
        let dist = with_aliases(&["www.example.com"]);
        let before = &ingresses(&dist, &settings())[0];
        let without_tls = IngressSettings {
            tls_secret: None,
            ..settings()
        };
        let after = &ingresses(&dist, &without_tls)[0];
        let hash = |i: &Ingress| {
            i.metadata.annotations.as_ref().expect("annotations")[SETTINGS_HASH_ANNOTATION].clone()
        };
        assert_ne!(hash(before), hash(after));
    }

    #[test]
    fn secret_name_templates_are_checked() {
        for good in [
            "{ingress}-tls",
            "{distribution}-tls",
            "wildcard-cert",
            "tls.{ingress}",
        ] {
            assert!(good.parse::<SecretNameTemplate>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "{ingress}_tls",
            "{alias}-tls",
            "-{ingress}",
            "TLS-{ingress}",
            "{ingress}-",
        ] {
            let error = bad.parse::<SecretNameTemplate>().expect_err(bad);
            assert!(error.to_string().contains("{ingress}-tls"), "{error}");
        }
    }

    fn is_dns_subdomain(name: &str) -> bool {
        name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
    }
}
