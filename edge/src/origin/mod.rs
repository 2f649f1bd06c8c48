//! Origins: where objects come from. HTTP(S) servers and S3-compatible buckets, both reached
//! through one pooled hyper client per origin, and origin groups that fail over from a primary to
//! a secondary.
mod body;
pub(crate) mod http;
mod peers;
mod rendezvous;
mod resolve;
pub(crate) mod s3;
mod shield;

use std::{collections::HashMap, sync::Arc, time::Duration};

use ::http::{HeaderMap, Method, Response, StatusCode};

use edgefleet_config::{EdgeConfig, Origin as OriginConfig, OriginGroup};

use crate::error::Result;
pub(crate) use body::OriginBody;
pub(crate) use peers::InCluster;
use shield::{Shield, Then};

/// What the edge asks of an origin. The path is already validated (no dot segments) and the
/// headers already filtered to what may be forwarded.
#[derive(Debug, Clone)]
pub(crate) struct OriginRequest {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    /// The viewer's `Host`, normalized; sent to HTTP origins when the behavior keys on `host`,
    /// and always to an origin shield.
    pub(crate) viewer_host: String,
    pub(crate) forward_viewer_host: bool,
    /// Where interim (1xx) responses from the origin go: the viewer's connection.
    pub(crate) interim: Option<Interim>,
}

/// Receives the interim (1xx) responses an origin sends before its final one: a request's handle
/// on where they go (the viewer's connection).
#[derive(Clone)]
pub(crate) struct Interim {
    sink: Arc<dyn InterimSink>,
    request: u64,
}

/// Where interim responses go, by request.
pub(crate) trait InterimSink: Send + Sync {
    fn report(&self, request: u64, status: StatusCode, headers: &HeaderMap);
}

impl Interim {
    pub(crate) fn new(sink: Arc<dyn InterimSink>, request: u64) -> Self {
        Self { sink, request }
    }

    pub(crate) fn report(&self, status: StatusCode, headers: &HeaderMap) {
        self.sink.report(self.request, status, headers);
    }
}

impl std::fmt::Debug for Interim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interim")
    }
}

/// Why an origin gave no response.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum OriginError {
    /// Connection refused, reset, DNS failure, TLS failure, malformed response: 502.
    #[error("origin {origin} unreachable: {reason}")]
    Unreachable { origin: Arc<str>, reason: String },
    /// No response head (or no body bytes) within the read timeout: 504.
    #[error("origin {origin} did not respond within {after:?}")]
    Timeout { origin: Arc<str>, after: Duration },
    /// The request cannot be sent to this origin (an empty S3 key, a method S3 does not serve).
    #[error("{reason}")]
    Refused { status: StatusCode, reason: String },
}

impl OriginError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            OriginError::Unreachable { .. } => StatusCode::BAD_GATEWAY,
            OriginError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            OriginError::Refused { status, .. } => *status,
        }
    }
}

/// One origin's client.
pub(crate) enum Client {
    Http(http::HttpClient),
    S3(s3::S3Client),
}

/// A request body streamed to the origin (pass-through methods only).
pub(crate) type RequestBody = http::OutgoingBody;

impl Client {
    async fn send(
        &self,
        request: &OriginRequest,
        body: Option<RequestBody>,
    ) -> Result<Response<OriginBody>, OriginError> {
        match self {
            Client::Http(c) => c.send(request, body).await,
            // Only GET and HEAD reach S3 origins; other methods are refused before this.
            Client::S3(c) => c.send(request).await,
        }
    }

    fn id(&self) -> &Arc<str> {
        match self {
            Client::Http(c) => c.id(),
            Client::S3(c) => c.id(),
        }
    }
}

/// A behavior's target: one origin, or a group.
enum Target {
    Single(Arc<Client>),
    Group {
        primary: Arc<Client>,
        secondary: Arc<Client>,
        failover_statuses: Vec<u16>,
    },
}

/// Every origin of a configuration, by id, plus the shield when this edge takes part in one.
pub(crate) struct Origins {
    targets: HashMap<String, Target>,
    shield: Option<Shield>,
    /// Kept so a reload can reuse clients (and their warm connections) whose settings are
    /// unchanged.
    clients: HashMap<String, (OriginConfig, Arc<Client>)>,
}

/// The response and the origin that gave it.
pub(crate) struct Fetched {
    pub(crate) response: Response<OriginBody>,
    pub(crate) origin: Arc<str>,
}

impl Origins {
    /// Builds clients for a configuration, reusing those of `previous` whose settings and
    /// credentials are unchanged (and the shield's list of edges when its source is unchanged).
    /// `cluster` is where the edge runs, when it does in a cluster.
    pub(crate) fn build(
        config: &EdgeConfig,
        region: &str,
        via: &str,
        cluster: Option<&InCluster>,
        previous: Option<&Origins>,
    ) -> Result<Self> {
        let mut clients = HashMap::new();
        for origin in &config.origins {
            let client = match origin {
                OriginConfig::Http(o) => {
                    let reusable = previous
                        .and_then(|p| p.clients.get(&o.id))
                        .filter(|(old, _)| old == origin)
                        .map(|(_, c)| c.clone());
                    match reusable {
                        Some(c) => c,
                        None => Arc::new(Client::Http(http::HttpClient::new(o, via)?)),
                    }
                }
                // Credentials are re-read on every build, so S3 clients are always rebuilt.
                OriginConfig::S3(o) => Arc::new(Client::S3(s3::S3Client::new(o)?)),
            };
            clients.insert(origin.id().to_owned(), (origin.clone(), client));
        }
        let mut targets: HashMap<String, Target> = clients
            .iter()
            .map(|(id, (_, c))| (id.clone(), Target::Single(c.clone())))
            .collect();
        for OriginGroup {
            id,
            primary,
            secondary,
            failover_statuses,
        } in &config.origin_groups
        {
            // Validation guarantees both members exist; a missing one is skipped, not a panic.
            if let (Some((_, p)), Some((_, s))) = (clients.get(primary), clients.get(secondary)) {
                targets.insert(
                    id.clone(),
                    Target::Group {
                        primary: p.clone(),
                        secondary: s.clone(),
                        failover_statuses: failover_statuses.clone(),
                    },
                );
            }
        }
        let shield = match &config.origin_shield {
            Some(shield) => Shield::build(
                shield,
                region,
                via,
                cluster,
                previous.and_then(|p| p.shield.as_ref()),
            )?,
            None => None,
        };
        Ok(Self {
            targets,
            shield,
            clients,
        })
    }

    /// Sends a request to a behavior's target. `cacheable` requests go through the shield when
    /// there is one (see [`shield`]). Groups fail over for GET, HEAD and OPTIONS only.
    pub(crate) async fn send(
        &self,
        target: &str,
        request: &OriginRequest,
        body: Option<RequestBody>,
        cacheable: bool,
    ) -> Result<Fetched, OriginError> {
        if cacheable && let Some(shield) = &self.shield {
            let plan = shield.plan(request);
            for peer in plan.peers {
                let Some(to) = shield::authority(peer) else {
                    continue;
                };
                // Cacheable fetches have no body, so one can be sent to several shield edges.
                match shield
                    .client
                    .exchange(Some(&to), request, None, Some(shield.routed()))
                    .await
                {
                    Ok(response) => {
                        return Ok(Fetched {
                            response,
                            origin: shield.client.id().clone(),
                        });
                    }
                    Err(failure) if failure.try_another => {
                        tracing::debug!(%peer, error = %failure.error, "shield edge unreachable; trying the next");
                    }
                    Err(failure) => return Err(failure.error),
                }
            }
            if plan.then == Then::Url {
                let response = shield.client.send(request, body).await?;
                return Ok(Fetched {
                    response,
                    origin: shield.client.id().clone(),
                });
            }
        }
        self.send_to_target(target, request, body).await
    }

    /// What this edge knows of the origin shield, for the admin API's status.
    /// What the edge waits for before it knows the shield's edges, if anything. Until then its
    /// misses would go through the shield's Service to any shield edge, and one object could be
    /// fetched from the origin by several of them.
    pub(crate) fn shield_awaited(&self) -> Option<String> {
        self.shield.as_ref()?.awaited()
    }

    pub(crate) fn shield_status(&self) -> Option<serde_json::Value> {
        self.shield.as_ref().map(Shield::status)
    }

    async fn send_to_target(
        &self,
        target: &str,
        request: &OriginRequest,
        body: Option<RequestBody>,
    ) -> Result<Fetched, OriginError> {
        match self.targets.get(target) {
            None => Err(OriginError::Unreachable {
                origin: target.into(),
                reason: "no such origin in the configuration".into(),
            }),
            Some(Target::Single(client)) => fetch(client, request, body).await,
            Some(Target::Group {
                primary,
                secondary,
                failover_statuses,
            }) => {
                // A streamed body cannot be sent twice, so requests with one never fail over.
                let may_fail_over =
                    body.is_none() && matches!(request.method, Method::GET | Method::HEAD | Method::OPTIONS);
                let first = fetch(primary, request, body).await;
                let fail_over = match &first {
                    Err(OriginError::Refused { .. }) => false,
                    Err(_) => true,
                    Ok(f) => failover_statuses.contains(&f.response.status().as_u16()),
                };
                if may_fail_over && fail_over {
                    tracing::debug!(primary = %primary.id(), secondary = %secondary.id(), "failing over");
                    fetch(secondary, request, None).await
                } else {
                    first
                }
            }
        }
    }
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), and those a `Connection` header names: they
/// concern one connection, never the next hop.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<::http::HeaderName> = headers
        .get_all(::http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| ::http::HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        ::http::header::CONNECTION,
        ::http::HeaderName::from_static("keep-alive"),
        ::http::HeaderName::from_static("proxy-connection"),
        ::http::header::PROXY_AUTHENTICATE,
        ::http::header::PROXY_AUTHORIZATION,
        ::http::header::TE,
        ::http::header::TRAILER,
        ::http::header::TRANSFER_ENCODING,
        ::http::header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

async fn fetch(
    client: &Client,
    request: &OriginRequest,
    body: Option<RequestBody>,
) -> Result<Fetched, OriginError> {
    let response = client.send(request, body).await?;
    Ok(Fetched {
        response,
        origin: client.id().clone(),
    })
}

/// Origin responses made in memory, for unit tests of what consumes them.
#[cfg(test)]
pub(crate) mod testing {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    use super::{Fetched, OriginBody};

    pub(crate) fn fetched(status: u16, headers: &[(&str, &str)], body: Bytes) -> Fetched {
        let mut response = ::http::Response::new(OriginBody::new(
            Full::new(body).map_err(|never| match never {}),
            "test".into(),
            std::time::Duration::from_secs(5),
        ));
        *response.status_mut() = ::http::StatusCode::from_u16(status).expect("status");
        for (name, value) in headers {
            response.headers_mut().append(
                ::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                ::http::HeaderValue::from_str(value).expect("value"),
            );
        }
        Fetched {
            response,
            origin: "test".into(),
        }
    }
}
