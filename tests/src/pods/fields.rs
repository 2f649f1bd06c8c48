//! The downward API: pod fields and container resources as strings. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};

/// The value of a `fieldRef` path, or `None` when the path is not one Kubernetes supports.
pub(crate) fn field_value(pod: &Pod, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    if let Some(key) = bracketed(path, "metadata.labels") {
        return Some(meta.labels.as_ref()?.get(key).cloned().unwrap_or_default());
    }
    if let Some(key) = bracketed(path, "metadata.annotations") {
        return Some(meta.annotations.as_ref()?.get(key).cloned().unwrap_or_default());
    }
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "metadata.labels" => Some(key_value_lines(meta.labels.as_ref())),
        "metadata.annotations" => Some(key_value_lines(meta.annotations.as_ref())),
        "spec.nodeName" => spec.and_then(|spec| spec.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|spec| spec.service_account_name.clone()),
        "status.hostIP" => status.and_then(|status| status.host_ip.clone()),
        "status.podIP" => status.and_then(|status| status.pod_ip.clone()),
        "status.hostIPs" => status.map(|status| {
            let ips = status.host_ips.iter().flatten().map(|ip| ip.ip.as_str());
            ips.collect::<Vec<_>>().join(",")
        }),
        "status.podIPs" => status.map(|status| {
            let ips = status.pod_ips.iter().flatten().map(|ip| ip.ip.as_str());
            ips.collect::<Vec<_>>().join(",")
        }),
        _ => return None,
    };
    Some(value.unwrap_or_default())
}

/// `metadata.labels['key']` → `key`.
fn bracketed<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let inner = path.strip_prefix(prefix)?.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .strip_prefix('\'')
        .and_then(|key| key.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|key| key.strip_suffix('"')))
}

/// `key="value"` lines, sorted, as the downward API writes whole label/annotation maps.
fn key_value_lines(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(key, value)| format!("{key}={value:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a `resourceFieldRef`: the container's limit or request divided by the divisor,
/// rounded up. An unset limit falls back to the node's allocatable amount, as in Kubernetes.
pub(crate) fn resource_value(
    container: &Container,
    selector: &ResourceFieldSelector,
    node_allocatable: &BTreeMap<String, String>,
) -> Result<String, String> {
    let (kind, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {:?}", selector.resource))?;
    let resources = container.resources.as_ref();
    let set = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported resource {:?}", selector.resource)),
    };
    let amount = match set.and_then(|set| set.get(resource)) {
        Some(quantity) => parse_quantity(&quantity.0)?,
        None if kind == "limits" => match node_allocatable.get(resource) {
            Some(quantity) => parse_quantity(quantity)?,
            None => return Err(format!("node has no allocatable {resource}")),
        },
        None => 0.0,
    };
    let divisor = match &selector.divisor {
        Some(divisor) => parse_quantity(&divisor.0)?,
        None => 1.0,
    };
    if divisor <= 0.0 {
        return Err(format!("divisor of {} must be positive", selector.resource));
    }
    Ok(format!("{}", (amount / divisor).ceil()))
}

/// A Kubernetes quantity ("500m", "64Mi", "2", "1e3") as a number.
pub(crate) fn parse_quantity(quantity: &str) -> Result<f64, String> {
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Pi", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Ei", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let quantity = quantity.trim();
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| quantity.strip_suffix(suffix).map(|number| (number, *factor)))
        .unwrap_or((quantity, 1.0));
    number
        .parse::<f64>()
        .map(|n| n * factor)
        .map_err(|_| format!("invalid quantity {quantity:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodIP, PodSpec, PodStatus, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kube::api::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("edge-1".to_owned()),
                namespace: Some("ns".to_owned()),
                labels: Some([("region".to_owned(), "eu-west".to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("kwok-eu-west-a-0".to_owned()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some("198.18.0.1".to_owned()),
                pod_ips: Some(vec![PodIP {
                    ip: "198.18.0.1".to_owned(),
                }]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn pod_fields() {
        let pod = pod();
        assert_eq!(field_value(&pod, "metadata.name").as_deref(), Some("edge-1"));
        assert_eq!(
            field_value(&pod, "metadata.labels['region']").as_deref(),
            Some("eu-west")
        );
        assert_eq!(
            field_value(&pod, "metadata.labels['absent']").as_deref(),
            Some("")
        );
        assert_eq!(
            field_value(&pod, "metadata.labels").as_deref(),
            Some("region=\"eu-west\"")
        );
        assert_eq!(
            field_value(&pod, "spec.nodeName").as_deref(),
            Some("kwok-eu-west-a-0")
        );
        assert_eq!(field_value(&pod, "status.podIPs").as_deref(), Some("198.18.0.1"));
        assert_eq!(field_value(&pod, "spec.containers"), None);
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("500m"), Ok(0.5));
        assert_eq!(parse_quantity("64Mi"), Ok(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("2"), Ok(2.0));
        assert_eq!(parse_quantity("1e3"), Ok(1000.0));
        assert!(parse_quantity("lots").is_err());
    }

    #[test]
    fn resources_round_up_and_fall_back_to_the_node() {
        let container = Container {
            resources: Some(ResourceRequirements {
                limits: Some([("memory".to_owned(), Quantity("96Mi".to_owned()))].into()),
                requests: Some([("cpu".to_owned(), Quantity("250m".to_owned()))].into()),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        };
        let node = [("cpu".to_owned(), "64".to_owned())].into();
        let selector = |resource: &str, divisor: Option<&str>| ResourceFieldSelector {
            resource: resource.to_owned(),
            divisor: divisor.map(|d| Quantity(d.to_owned())),
            container_name: None,
        };
        let value = |resource, divisor| resource_value(&container, &selector(resource, divisor), &node);
        assert_eq!(value("limits.memory", Some("1Mi")), Ok("96".to_owned()));
        assert_eq!(value("requests.cpu", None), Ok("1".to_owned()));
        assert_eq!(value("requests.cpu", Some("1m")), Ok("250".to_owned()));
        assert_eq!(value("limits.cpu", None), Ok("64".to_owned()));
    }
}
