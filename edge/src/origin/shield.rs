//! Origin shield routing: which shield edge fetches a cacheable object.
//!
//! Each shield edge has its own cache, so for the origin to see one fetch per object, every
//! fetch of one object must reach the same shield edge. Every edge ranks the shield's edges for
//! the object's host, path and query by rendezvous hashing (all edges see the same list, so all
//! agree) and asks the first; when it cannot connect, the next (and after a few, the configured
//! URL: the region's Service). A request sent that way carries
//! [`ROUTED`], and the shield edge receiving it fetches it itself.
//!
//! Edges of the shield region take part too: a viewer's miss on an object another shield edge
//! owns is fetched from that edge, so an object asked of every shield edge is still fetched
//! from the origin once. An edge recognises itself in the list by name (its pod's name); one
//! that cannot, or that receives an already-routed request, fetches from the origin, so a
//! request crosses at most one shield hop and never loops, whatever the edges' views.
//!
//! With no list known (not yet, or none configured), edges outside the region fetch through the
//! configured URL (the region's Service) unmarked, and a shield edge receiving that routes it.
//!
//! A viewer can send [`ROUTED`] itself; the worst it gets is what a cache miss costs anyway: the
//! shield edge it reached fetches from the origin.
use std::{net::SocketAddr, sync::Arc};

use http::{HeaderName, HeaderValue, uri::Authority};
use serde_json::{Value, json};

use edgefleet_config::OriginShield;

use super::{
    OriginRequest,
    http::HttpClient,
    peers::{InCluster, Peer, Peers, Source},
    rendezvous,
};
use crate::error::Result;

/// Marks a request sent to the shield edge that owns it; its value names the sender's region.
pub(crate) const ROUTED: HeaderName = HeaderName::from_static("x-edgefleet-shield");

/// Shield edges tried for one fetch at most, so a dead shield region costs a bounded delay.
const MAX_TRIES: usize = 3;

/// This edge's part in the shield.
pub(crate) struct Shield {
    /// The configured URL, and the client (with the shield's request semantics: the viewer's
    /// `Host`) through which shield edges are reached.
    pub(crate) client: HttpClient,
    /// This edge runs in the shield region.
    member: bool,
    peers: Option<Arc<Peers>>,
    /// This edge's name, to find itself among the peers.
    me: Option<String>,
    routed: HeaderValue,
}

/// Where one fetch goes: the shield edges to try in order, then what to do when none answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) peers: Vec<SocketAddr>,
    pub(crate) then: Then,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Then {
    /// Fetch from the behavior's origin (this edge is the shield).
    Origin,
    /// Fetch through the configured URL: the region's Service may know edges this edge does
    /// not know yet.
    Url,
}

impl Shield {
    /// This edge's shield, or `None` when it fetches from the origins as if there were none (it
    /// is in the shield region and knows no other shield edge to hand misses to).
    pub(crate) fn build(
        config: &OriginShield,
        region: &str,
        via: &str,
        cluster: Option<&InCluster>,
        previous: Option<&Shield>,
    ) -> Result<Option<Self>> {
        let member = config.region == region;
        let peers = peers(config, cluster, previous.and_then(|p| p.peers.as_ref()));
        if member && peers.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            client: HttpClient::shield(&config.url, via)?,
            member,
            peers,
            me: own_name(),
            routed: HeaderValue::from_str(region).unwrap_or(HeaderValue::from_static("edge")),
        }))
    }

    /// What this edge waits for before it knows the shield's edges (see [`Peers::awaited`]).
    pub(crate) fn awaited(&self) -> Option<String> {
        self.peers.as_ref()?.awaited()
    }

    pub(crate) fn routed(&self) -> &HeaderValue {
        &self.routed
    }

    /// Where a cacheable fetch goes.
    pub(crate) fn plan(&self, request: &OriginRequest) -> Plan {
        let list = self.peers.as_ref().and_then(|p| p.current());
        let key = routing_key(request);
        plan(
            self.member,
            request.headers.contains_key(&ROUTED),
            list.as_deref(),
            self.me.as_deref(),
            key.as_bytes(),
        )
    }

    /// What this edge knows of the shield, for the admin API's status.
    pub(crate) fn status(&self) -> Value {
        let list = self.peers.as_ref().and_then(|p| p.current());
        let peers: Option<Vec<Value>> = list.as_deref().map(|list| {
            list.iter()
                .map(|p| json!({"address": p.address.to_string(), "name": p.name}))
                .collect()
        });
        let listed = list
            .as_deref()
            .is_some_and(|l| find_self(l, self.me.as_deref()).is_some());
        json!({
            "role": if self.member { "shield" } else { "outside" },
            "url": self.client.base_url(),
            "name": self.me,
            "peers": peers,
            "selfListed": listed,
        })
    }
}

/// The shield's edges: kept from `previous` when their source is unchanged (a reload then keeps
/// its watch and the list it knows), else started anew.
fn peers(
    config: &OriginShield,
    cluster: Option<&InCluster>,
    previous: Option<&Arc<Peers>>,
) -> Option<Arc<Peers>> {
    let source = if !config.peers.is_empty() {
        Source::Fixed(config.peers.clone())
    } else if let Some(service) = &config.service {
        let Some(cluster) = cluster else {
            tracing::warn!(
                service = %service.name,
                "originShield.service is set but this edge does not run from a ConfigMap in a cluster; \
                 fetching through originShield.url"
            );
            return None;
        };
        Source::Service {
            namespace: cluster.namespace.clone(),
            service: service.clone(),
        }
    } else {
        return None;
    };
    if let Some(previous) = previous.filter(|p| p.source == source) {
        return Some(previous.clone());
    }
    match source {
        Source::Fixed(list) => Some(Arc::new(Peers::fixed(&list))),
        Source::Service { service, .. } => {
            let cluster = cluster?;
            if tokio::runtime::Handle::try_current().is_err() {
                tracing::warn!(
                    "no async runtime to watch the shield's EndpointSlices; fetching through originShield.url"
                );
                return None;
            }
            Some(Arc::new(Peers::watch(cluster, &service)))
        }
    }
}

/// Who this edge is: its pod's name, which container runtimes put in `HOSTNAME` and which is
/// also the host name inside a pod.
fn own_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| hostname::get().ok().and_then(|h| h.into_string().ok()))
}

/// What one object is routed by: host, path and forwarded query, all part of its cache key, so
/// every variant of an object (by headers or cookies) lives on the same shield edge.
fn routing_key(request: &OriginRequest) -> String {
    let query = request.query.as_deref().unwrap_or_default();
    let mut key = String::with_capacity(request.viewer_host.len() + request.path.len() + query.len() + 2);
    key.push_str(&request.viewer_host);
    key.push('\n');
    key.push_str(&request.path);
    key.push('?');
    key.push_str(query);
    key
}

fn find_self(list: &[Peer], me: Option<&str>) -> Option<usize> {
    let me = me?;
    list.iter().position(|p| p.name.as_deref() == Some(me))
}

/// The routing decision, apart from any I/O.
fn plan(member: bool, routed: bool, list: Option<&[Peer]>, me: Option<&str>, key: &[u8]) -> Plan {
    let origin = Plan {
        peers: Vec::new(),
        then: Then::Origin,
    };
    let list = match list {
        Some(list) if !list.is_empty() => list,
        // Nobody to route to: the region's Service, or (being the shield) the origin.
        _ if member => return origin,
        _ => {
            return Plan {
                peers: Vec::new(),
                then: Then::Url,
            };
        }
    };
    let seeds: Vec<rendezvous::Seed> = list.iter().map(|p| p.seed).collect();
    let ranked = rendezvous::rank(&seeds, key);
    if !member {
        return Plan {
            peers: ranked.iter().take(MAX_TRIES).map(|&i| list[i].address).collect(),
            then: Then::Url,
        };
    }
    let Some(me) = find_self(list, me).filter(|_| !routed) else {
        return origin;
    };
    // The shield edges ranked above this one, then this one (the origin).
    Plan {
        peers: ranked
            .iter()
            .take_while(|&&i| i != me)
            .take(MAX_TRIES)
            .map(|&i| list[i].address)
            .collect(),
        then: Then::Origin,
    }
}

/// The authority a peer is reached at.
pub(crate) fn authority(address: SocketAddr) -> Option<Authority> {
    Authority::try_from(address.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(address: &str, name: &str) -> Peer {
        let address: SocketAddr = address.parse().expect("address");
        Peer {
            address,
            name: Some(name.to_owned()),
            seed: rendezvous::Seed::of(&address.to_string()),
        }
    }

    fn list() -> Vec<Peer> {
        vec![
            peer("10.0.0.1:8080", "a"),
            peer("10.0.0.2:8080", "b"),
            peer("10.0.0.3:8080", "c"),
        ]
    }

    /// A key whose ranking puts `first` first.
    fn key_owned_by(list: &[Peer], first: &str) -> Vec<u8> {
        let seeds: Vec<_> = list.iter().map(|p| p.seed).collect();
        (0..)
            .map(|i| format!("host\n/object-{i}?").into_bytes())
            .find(|k| list[rendezvous::rank(&seeds, k)[0]].name.as_deref() == Some(first))
            .expect("some key")
    }

    #[test]
    fn outside_the_region_every_shield_edge_is_a_candidate_in_rank_order() {
        let list = list();
        let key = key_owned_by(&list, "b");
        let plan = plan(false, false, Some(&list), Some("x"), &key);
        assert_eq!(plan.peers.len(), 3);
        assert_eq!(plan.peers[0], list[1].address);
        assert_eq!(plan.then, Then::Url, "when none of them can be reached");
        // The same whoever asks, and whether or not a viewer marked the request.
        assert_eq!(super::plan(false, true, Some(&list), None, &key), plan);
    }

    #[test]
    fn without_a_list_edges_outside_use_the_url_and_shield_edges_the_origin() {
        for list in [None, Some(&[][..])] {
            assert_eq!(plan(false, false, list, Some("a"), b"k").then, Then::Url);
            assert_eq!(plan(true, false, list, Some("a"), b"k").then, Then::Origin);
        }
    }

    #[test]
    fn a_shield_edge_hands_a_miss_to_its_owner_and_fetches_its_own() {
        let list = list();
        let key = key_owned_by(&list, "b");
        let from_a = plan(true, false, Some(&list), Some("a"), &key);
        assert_eq!(from_a.peers.first(), Some(&list[1].address), "b owns it");
        assert!(!from_a.peers.contains(&list[0].address), "never itself");
        assert_eq!(from_a.then, Then::Origin, "when b cannot be reached");
        let from_b = plan(true, false, Some(&list), Some("b"), &key);
        assert_eq!(
            from_b,
            Plan {
                peers: vec![],
                then: Then::Origin
            }
        );
    }

    #[test]
    fn routed_requests_and_edges_that_cannot_find_themselves_go_to_the_origin() {
        let list = list();
        let key = key_owned_by(&list, "b");
        let origin = Plan {
            peers: vec![],
            then: Then::Origin,
        };
        assert_eq!(
            plan(true, true, Some(&list), Some("a"), &key),
            origin,
            "one hop at most"
        );
        assert_eq!(
            plan(true, false, Some(&list), Some("z"), &key),
            origin,
            "not listed"
        );
        assert_eq!(plan(true, false, Some(&list), None, &key), origin, "nameless");
    }

    #[test]
    fn a_reload_keeps_the_list_while_its_source_is_unchanged() {
        let config = |port: u16| OriginShield {
            region: "eu-west".into(),
            url: "http://shield".into(),
            service: None,
            peers: vec![edgefleet_config::ShieldPeer {
                address: SocketAddr::from(([127, 0, 0, 1], port)),
                name: None,
            }],
        };
        let first = peers(&config(1), None, None).expect("a fixed list");
        let kept = peers(&config(1), None, Some(&first)).expect("a fixed list");
        assert!(Arc::ptr_eq(&first, &kept));
        let changed = peers(&config(2), None, Some(&first)).expect("a fixed list");
        assert!(!Arc::ptr_eq(&first, &changed));
        let mut by_service = config(1);
        by_service.peers.clear();
        by_service.service = Some(edgefleet_config::ShieldService {
            name: "site-eu-west".into(),
            port: "http".into(),
        });
        assert!(
            peers(&by_service, None, Some(&first)).is_none(),
            "outside a cluster a Service cannot be watched: the URL is used"
        );
    }

    #[test]
    fn the_routing_key_is_host_path_and_query() {
        let request = |host: &str, path: &str, query: Option<&str>| OriginRequest {
            method: http::Method::GET,
            path: path.into(),
            query: query.map(Into::into),
            headers: http::HeaderMap::new(),
            viewer_host: host.into(),
            forward_viewer_host: false,
            interim: None,
        };
        let a = routing_key(&request("a.example", "/x", Some("v=1")));
        assert_eq!(a, "a.example\n/x?v=1");
        assert_ne!(a, routing_key(&request("a.example", "/x", None)));
        assert_ne!(a, routing_key(&request("b.example", "/x", Some("v=1"))));
    }
}
