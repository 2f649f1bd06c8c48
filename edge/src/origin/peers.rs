//! The shield region's edges, as this edge currently knows them: a fixed list from the
//! configuration, or the ready endpoints of the shield's Service, followed through a watch of its
//! EndpointSlices when the edge runs in a cluster.
use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use edgefleet_config::{ShieldPeer, ShieldService};

use super::rendezvous::Seed;

/// The label EndpointSlices carry with the name of their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One edge of the shield region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Peer {
    pub(crate) address: SocketAddr,
    /// The pod's name (or the configured name), by which an edge recognises itself.
    pub(crate) name: Option<String>,
    pub(crate) seed: Seed,
}

impl Peer {
    fn new(address: SocketAddr, name: Option<String>) -> Self {
        // Every edge hashes the address, the one thing all of them see alike.
        Self {
            address,
            name,
            seed: Seed::of(&address.to_string()),
        }
    }
}

/// The peers, sorted by address; `None` until a list is known.
pub(crate) type PeerList = Option<Arc<[Peer]>>;

/// The cluster this edge runs in: where it can watch EndpointSlices.
#[derive(Clone)]
pub(crate) struct InCluster {
    pub(crate) client: kube::Client,
    pub(crate) namespace: String,
}

/// Where the list comes from; two equal sources give the same list, so a reload keeps the watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Fixed(Vec<ShieldPeer>),
    Service {
        namespace: String,
        service: ShieldService,
    },
}

/// A list of peers kept current; the watch (if any) stops when this is dropped.
pub(crate) struct Peers {
    pub(crate) source: Source,
    list: watch::Receiver<PeerList>,
    _stop: Option<DropGuard>,
}

impl Peers {
    pub(crate) fn fixed(peers: &[ShieldPeer]) -> Self {
        let list = sorted(
            peers
                .iter()
                .map(|p| Peer::new(p.address, p.name.clone()))
                .collect(),
        );
        let (_, receiver) = watch::channel(Some(list));
        Self {
            source: Source::Fixed(peers.to_vec()),
            list: receiver,
            _stop: None,
        }
    }

    /// Starts watching the Service's EndpointSlices; the list is unknown until the first listing
    /// arrives. Must be called within the Tokio runtime.
    pub(crate) fn watch(cluster: &InCluster, service: &ShieldService) -> Self {
        let (sender, receiver) = watch::channel(None);
        let stop = CancellationToken::new();
        let api: Api<EndpointSlice> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        tokio::spawn(follow(api, service.clone(), sender, stop.clone()));
        Self {
            source: Source::Service {
                namespace: cluster.namespace.clone(),
                service: service.clone(),
            },
            list: receiver,
            _stop: Some(stop.drop_guard()),
        }
    }

    pub(crate) fn current(&self) -> PeerList {
        self.list.borrow().clone()
    }

    /// What this edge waits for while it knows no list yet: the first listing of the Service's
    /// EndpointSlices.
    pub(crate) fn awaited(&self) -> Option<String> {
        if self.list.borrow().is_some() {
            return None;
        }
        match &self.source {
            Source::Fixed(_) => None,
            Source::Service { namespace, service } => Some(format!(
                "the EndpointSlices of Service {namespace}/{}",
                service.name
            )),
        }
    }
}

fn sorted(mut peers: Vec<Peer>) -> Arc<[Peer]> {
    peers.sort_by_key(|p| p.address);
    peers.dedup_by_key(|p| p.address);
    peers.into()
}

async fn follow(
    api: Api<EndpointSlice>,
    service: ShieldService,
    list: watch::Sender<PeerList>,
    stop: CancellationToken,
) {
    let selector = format!("{SERVICE_NAME_LABEL}={}", service.name);
    let mut events = watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .boxed();
    // Slice name → its ready peers. A relist is buffered whole, so a half-listed state is never
    // published.
    let mut slices: BTreeMap<String, Vec<Peer>> = BTreeMap::new();
    let mut relisting: Option<BTreeMap<String, Vec<Peer>>> = None;
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.next() => event,
        };
        let changed = match event {
            None => return,
            Some(Err(e)) => {
                tracing::warn!(service = %service.name, error = %e, "watching the shield's EndpointSlices; retrying");
                false
            }
            Some(Ok(watcher::Event::Init)) => {
                relisting = Some(BTreeMap::new());
                false
            }
            Some(Ok(watcher::Event::InitApply(slice))) => {
                if let Some(buffer) = &mut relisting {
                    buffer.insert(slice_name(&slice), ready_peers(&slice, &service.port));
                }
                false
            }
            Some(Ok(watcher::Event::InitDone)) => {
                slices = relisting.take().unwrap_or_default();
                true
            }
            Some(Ok(watcher::Event::Apply(slice))) => {
                slices.insert(slice_name(&slice), ready_peers(&slice, &service.port));
                true
            }
            Some(Ok(watcher::Event::Delete(slice))) => {
                slices.remove(&slice_name(&slice));
                true
            }
        };
        if changed {
            let peers = sorted(slices.values().flatten().cloned().collect());
            list.send_if_modified(|current| {
                if current.as_deref() == Some(&peers[..]) {
                    return false;
                }
                let addresses: Vec<String> = peers.iter().map(|p| p.address.to_string()).collect();
                tracing::info!(service = %service.name, peers = ?addresses, "origin shield edges");
                *current = Some(peers);
                true
            });
        }
    }
}

fn slice_name(slice: &EndpointSlice) -> String {
    slice.metadata.name.clone().unwrap_or_default()
}

/// The ready endpoints of a slice, at the port named `port` (or the slice's only port).
/// Terminating endpoints are not ready; an absent `ready` means ready, as the API says.
fn ready_peers(slice: &EndpointSlice, port: &str) -> Vec<Peer> {
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return Vec::new();
    }
    let ports = slice.ports.as_deref().unwrap_or_default();
    let number = ports
        .iter()
        .find(|p| p.name.as_deref() == Some(port))
        .or(match ports {
            [only] => Some(only),
            _ => None,
        })
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok());
    let Some(number) = number else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| {
            // The addresses of one endpoint are fungible; the API says to use the first.
            let ip: std::net::IpAddr = e.addresses.first()?.parse().ok()?;
            let name = e.target_ref.as_ref().and_then(|r| r.name.clone());
            Some(Peer::new(SocketAddr::new(ip, number), name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).expect("an EndpointSlice")
    }

    #[test]
    fn only_ready_endpoints_at_the_named_port_are_peers() {
        let s = slice(json!({
            "metadata": {"name": "site-eu-west-abcde"},
            "addressType": "IPv4",
            "ports": [{"name": "admin", "port": 9901}, {"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.2"], "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "site-eu-west-b"}},
                {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "site-eu-west-a"}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false, "terminating": true}},
                {"addresses": ["not-an-ip"]}
            ]
        }));
        let peers = sorted(ready_peers(&s, "http"));
        let found: Vec<(String, Option<&str>)> = peers
            .iter()
            .map(|p| (p.address.to_string(), p.name.as_deref()))
            .collect();
        assert_eq!(
            found,
            [
                ("10.0.0.1:8080".to_owned(), Some("site-eu-west-a")),
                ("10.0.0.2:8080".to_owned(), Some("site-eu-west-b")),
            ]
        );
    }

    #[test]
    fn a_single_unnamed_port_is_used_and_unknown_ports_give_nothing() {
        let one = slice(json!({
            "metadata": {"name": "s"}, "addressType": "IPv6",
            "ports": [{"port": 8080}], "endpoints": [{"addresses": ["fd00::1"]}]
        }));
        assert_eq!(ready_peers(&one, "http")[0].address.to_string(), "[fd00::1]:8080");
        let two = slice(json!({
            "metadata": {"name": "s"}, "addressType": "IPv4",
            "ports": [{"name": "a", "port": 1}, {"name": "b", "port": 2}],
            "endpoints": [{"addresses": ["10.0.0.1"]}]
        }));
        assert!(ready_peers(&two, "http").is_empty());
        let fqdn = slice(json!({
            "metadata": {"name": "s"}, "addressType": "FQDN",
            "ports": [{"name": "http", "port": 80}], "endpoints": [{"addresses": ["shield.example"]}]
        }));
        assert!(ready_peers(&fqdn, "http").is_empty());
    }

    #[test]
    fn a_fixed_list_is_known_at_once_sorted_and_without_duplicates() {
        let peers = Peers::fixed(&[
            ShieldPeer {
                address: "127.0.0.2:80".parse().expect("addr"),
                name: None,
            },
            ShieldPeer {
                address: "127.0.0.1:80".parse().expect("addr"),
                name: Some("a".into()),
            },
        ]);
        let list = peers.current().expect("known");
        assert_eq!(list[0].name.as_deref(), Some("a"));
        assert_eq!(list.len(), 2);
    }
}
