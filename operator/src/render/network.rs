//! Services: one per region, and one over every region that keeps traffic in the client's own
//! zone when an edge there is ready.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::edge_config::SERVICE_PORT;
use super::{metadata, names};
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
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String("http".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            traffic_distribution,
            ..ServiceSpec::default()
        }),
        status: None,
    }
}
