//! A userspace kube-proxy for the local cluster: every Service's ClusterIP (a local address, see
//! `cluster.sh`) listens on its TCP ports and forwards each connection to one of the Service's
//! ready endpoints, taken from its EndpointSlices at connect time. No DNS: clients use the
//! ClusterIP (or the `<SERVICE>_SERVICE_HOST` style address they were given).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The label linking an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Where a listener's connections go: one port of one Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Target {
    pub(crate) namespace: String,
    pub(crate) service: String,
    /// The Service port's name, which its EndpointSlice ports carry too ("" when unnamed).
    pub(crate) port_name: String,
}

/// The listeners the Services call for: ClusterIP:port → target. Only TCP ports of Services
/// with a ClusterIP (not headless, not ExternalName).
pub(crate) fn listeners(services: &[Arc<Service>]) -> BTreeMap<SocketAddr, Target> {
    let mut wanted = BTreeMap::new();
    for service in services {
        let Some(spec) = &service.spec else {
            continue;
        };
        let ips = spec
            .cluster_ips
            .clone()
            .unwrap_or_else(|| spec.cluster_ip.clone().into_iter().collect());
        for ip in ips.iter().filter_map(|ip| ip.parse::<std::net::IpAddr>().ok()) {
            for port in spec.ports.iter().flatten() {
                if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                    continue;
                }
                let Ok(number) = u16::try_from(port.port) else {
                    continue;
                };
                wanted.insert(
                    SocketAddr::new(ip, number),
                    Target {
                        namespace: service.namespace().unwrap_or_default(),
                        service: service.name_any(),
                        port_name: port.name.clone().unwrap_or_default(),
                    },
                );
            }
        }
    }
    wanted
}

/// The ready endpoints of `target`, from the EndpointSlices of its namespace.
pub(crate) fn endpoints(slices: &[Arc<EndpointSlice>], target: &Target) -> Vec<SocketAddr> {
    let mut addresses = Vec::new();
    for slice in slices {
        let owned = slice.namespace().as_deref() == Some(target.namespace.as_str())
            && slice.labels().get(SERVICE_NAME_LABEL) == Some(&target.service);
        if !owned {
            continue;
        }
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|port| port.name.clone().unwrap_or_default() == target.port_name)
            .and_then(|port| port.port)
            .and_then(|port| u16::try_from(port).ok());
        let Some(port) = port else {
            continue;
        };
        for endpoint in &slice.endpoints {
            // As kube-proxy: an endpoint counts unless it is explicitly not ready.
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let ips = endpoint
                .addresses
                .iter()
                .filter_map(|a| a.parse::<std::net::IpAddr>().ok());
            addresses.extend(ips.map(|ip| SocketAddr::new(ip, port)));
        }
    }
    addresses.sort();
    addresses
}

/// Keeps one listener per Service port until dropped (the task is aborted with the runner).
pub(crate) async fn proxy(client: Client, namespace: Option<String>) {
    let (services, services_writer) = reflector::store();
    let (slices, slices_writer) = reflector::store();
    let service_api: Api<Service> = super::api(&client, namespace.as_deref());
    let slice_api: Api<EndpointSlice> = super::api(&client, namespace.as_deref());
    let mut service_events = reflector(
        services_writer,
        watcher::watcher(service_api, watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .boxed();
    let slice_events = reflector(
        slices_writer,
        watcher::watcher(slice_api, watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    // EndpointSlices are read at connect time from the store; their stream only has to run.
    let slice_task = AbortOnDrop(tokio::spawn(slice_events.for_each(|event| async move {
        if let Err(error) = event {
            eprintln!("[pod-runner] watching EndpointSlices: {error}");
        }
    })));

    let mut running: BTreeMap<SocketAddr, (Target, AbortOnDrop)> = BTreeMap::new();
    while let Some(event) = service_events.next().await {
        if let Err(error) = event {
            eprintln!("[pod-runner] watching Services: {error}");
            continue;
        }
        let wanted = listeners(&services.state());
        running.retain(|address, (target, _)| wanted.get(address) == Some(target));
        for (address, target) in wanted {
            if running.contains_key(&address) {
                continue;
            }
            match TcpListener::bind(address).await {
                Ok(listener) => {
                    let task = tokio::spawn(serve(listener, target.clone(), slices.clone()));
                    running.insert(address, (target, AbortOnDrop(task)));
                }
                Err(error) => eprintln!(
                    "[pod-runner] cannot listen on {address} for service {}/{}: {error}",
                    target.namespace, target.service
                ),
            }
        }
    }
    drop(slice_task);
}

/// Aborts the task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve(listener: TcpListener, target: Target, slices: Store<EndpointSlice>) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let mut client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(error) => {
                // Out of descriptors or similar: don't spin, try again shortly.
                eprintln!(
                    "[pod-runner] service {}/{}: accept: {error}",
                    target.namespace, target.service
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let backends = endpoints(&slices.state(), &target);
        if backends.is_empty() {
            // No ready endpoint: refuse, as kube-proxy's reject rule does.
            drop(client);
            continue;
        }
        let backend = backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()];
        tokio::spawn(async move {
            if let Ok(mut upstream) = TcpStream::connect(backend).await {
                // Either side closing ends the connection; errors just end it too.
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use kube::api::ObjectMeta;

    fn service(name: &str, ip: Option<&str>, ports: &[(&str, i32, &str)]) -> Arc<Service> {
        Arc::new(Service {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("ns".to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: ip.map(str::to_owned),
                ports: Some(
                    ports
                        .iter()
                        .map(|(name, port, protocol)| ServicePort {
                            name: Some((*name).to_owned()),
                            port: *port,
                            protocol: Some((*protocol).to_owned()),
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        })
    }

    #[test]
    fn one_listener_per_tcp_port_of_services_with_a_cluster_ip() {
        let services = [
            service(
                "web",
                Some("198.18.128.10"),
                &[("http", 80, "TCP"), ("dns", 53, "UDP")],
            ),
            service("headless", Some("None"), &[("http", 80, "TCP")]),
            service("external", None, &[("http", 80, "TCP")]),
        ];
        let wanted = listeners(&services);
        let addresses: Vec<String> = wanted.keys().map(ToString::to_string).collect();
        assert_eq!(addresses, ["198.18.128.10:80"]);
        let target = wanted
            .values()
            .next()
            .map(|t| (t.service.as_str(), t.port_name.as_str()));
        assert_eq!(target, Some(("web", "http")));
    }

    fn slice(service: &str, port: (&str, i32), endpoints: &[(&str, Option<bool>)]) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("ns".to_owned()),
                labels: Some([(SERVICE_NAME_LABEL.to_owned(), service.to_owned())].into()),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".to_owned(),
            ports: Some(vec![EndpointPort {
                name: Some(port.0.to_owned()),
                port: Some(port.1),
                ..EndpointPort::default()
            }]),
            endpoints: endpoints
                .iter()
                .map(|(ip, ready)| Endpoint {
                    addresses: vec![(*ip).to_owned()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
        })
    }

    #[test]
    fn endpoints_are_the_ready_ones_on_the_named_port() {
        let slices = [
            slice(
                "web",
                ("http", 8080),
                &[("198.18.0.2", Some(true)), ("198.18.0.3", Some(false))],
            ),
            slice("web", ("http", 8080), &[("198.18.0.1", None)]),
            slice("web", ("admin", 9901), &[("198.18.0.4", Some(true))]),
            slice("other", ("http", 8080), &[("198.18.0.5", Some(true))]),
        ];
        let target = Target {
            namespace: "ns".to_owned(),
            service: "web".to_owned(),
            port_name: "http".to_owned(),
        };
        let found: Vec<String> = endpoints(&slices, &target)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found, ["198.18.0.1:8080", "198.18.0.2:8080"]);
    }
}
