//! Services: one per region, and one over every region that keeps traffic in the client's own
//! zone when an edge there is ready.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::edge_config::{SERVICE_PORT, UPLOAD_PORT_NAME, UPLOAD_SERVICE_PORT};
use super::{metadata, names, secrets};
use crate::api::{Distribution, Region};

/// The Service `<dist>-<region>`: that region's edges only.
pub(super) fn regional_service(dist: &Distribution, region: &Region) -> Service {
    let name = dist.metadata.name.clone().unwrap_or_default();
    service(
        dist,
        names::regional(&name, &region.name),
        names::regional_labels(&name, &region.name),
        names::region_selector(&name, &region.name),
        None,
    )
}

/// The Service `<dist>`: every region, preferring endpoints close to the client (its zone) through
/// the topology hints the EndpointSlice controller derives from the nodes' zone labels.
pub(super) fn fleet_service(dist: &Distribution) -> Service {
    let name = dist.metadata.name.clone().unwrap_or_default();
    service(
        dist,
        name.clone(),
        names::labels(&name),
        names::fleet_selector(&name),
        Some("PreferClose".to_owned()),
    )
}

/// Where clients upload, when upload acceleration is enabled: the Service over every region, so
/// an upload goes to an edge close to the client, as a `host:port` inside the cluster.
pub fn upload_endpoint(dist: &Distribution, namespace: &str) -> Option<String> {
    secrets::upload(dist)?;
    let name = dist.metadata.name.as_deref()?;
    Some(format!("{name}.{namespace}.svc:{UPLOAD_SERVICE_PORT}"))
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

fn service(
    dist: &Distribution,
    name: String,
    labels: BTreeMap<String, String>,
    selector: BTreeMap<String, String>,
    traffic_distribution: Option<String>,
) -> Service {
    Service {
        metadata: metadata(dist, name, labels),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector),
            ports: Some(
                std::iter::once(service_port("http", SERVICE_PORT))
                    .chain(secrets::upload(dist).map(|_| service_port(UPLOAD_PORT_NAME, UPLOAD_SERVICE_PORT)))
                    .collect(),
            ),
            traffic_distribution,
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::{example, uploads};

    #[test]
    fn the_upload_port_is_on_every_service_when_uploads_are_enabled() {
        let mut dist = example();
        let port_names = |service: &Service| -> Vec<String> {
            service
                .spec
                .iter()
                .flat_map(|s| s.ports.iter().flatten())
                .filter_map(|p| p.name.clone())
                .collect()
        };
        assert_eq!(
            port_names(&regional_service(&dist, &dist.spec.regions[0])),
            ["http"]
        );
        assert_eq!(upload_endpoint(&dist, "web"), None);
        dist.spec.upload_acceleration = uploads("1Gi");
        assert_eq!(
            port_names(&regional_service(&dist, &dist.spec.regions[0])),
            ["http", "upload"]
        );
        assert_eq!(port_names(&fleet_service(&dist)), ["http", "upload"]);
        assert_eq!(
            upload_endpoint(&dist, "web").as_deref(),
            Some("site.web.svc:8090")
        );
    }
}
