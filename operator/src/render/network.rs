//! Services: one per region, and one over every region that keeps traffic in the client's own
//! zone when an edge there is ready.
//!
//! Only the Service over every region has a ClusterIP. The regional ones are headless: what
//! reaches a region's edges addresses them one by one (the shield routes each object to the edge
//! that owns it, and a ClusterIP would spread the object over all of them), their DNS names
//! resolve to the ready edges, and a ClusterIP costs an address from the cluster's Service range
//! and a step the API server takes one Service at a time (a fleet of 1000 Distributions would
//! take 4000 of them instead of 1000).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::edge_config::{SERVICE_PORT, UPLOAD_PORT_NAME, UPLOAD_SERVICE_PORT};
use super::{metadata, names, secrets};
use crate::api::{Distribution, Region};

/// The headless Service `<dist>-<region>`: that region's edges only.
pub(super) fn regional_service(dist: &Distribution, region: &Region) -> Service {
    let name = dist.metadata.name.clone().unwrap_or_default();
    service(
        dist,
        names::regional(&name, &region.name),
        names::regional_labels(&name, &region.name),
        names::region_selector(&name, &region.name),
        Routing::Headless,
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
        Routing::PreferClose,
    )
}

/// How a Service's traffic reaches its endpoints.
enum Routing {
    /// No ClusterIP: clients address the endpoints themselves.
    Headless,
    /// A ClusterIP, with endpoints in the client's zone preferred.
    PreferClose,
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
    routing: Routing,
) -> Service {
    let (cluster_ip, traffic_distribution) = match routing {
        Routing::Headless => (Some("None".to_owned()), None),
        Routing::PreferClose => (None, Some("PreferClose".to_owned())),
    };
    Service {
        metadata: metadata(dist, name, labels),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            cluster_ip,
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

    #[test]
    fn only_the_service_over_every_region_has_a_cluster_ip() {
        let dist = example();
        let regional = regional_service(&dist, &dist.spec.regions[0]).spec.expect("spec");
        assert_eq!(regional.cluster_ip.as_deref(), Some("None"));
        assert_eq!(regional.traffic_distribution, None);
        let fleet = fleet_service(&dist).spec.expect("spec");
        assert_eq!(fleet.cluster_ip, None, "allocated by the API server");
        assert_eq!(fleet.traffic_distribution.as_deref(), Some("PreferClose"));
    }
}
