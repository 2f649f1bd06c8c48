//! HTTP(S) origins through a pooled, kept-warm hyper client.
use std::{sync::Arc, time::Duration};

use http::{
    HeaderValue, Method, Request, Response, Uri, header,
    uri::{Authority, PathAndQuery},
};
use http_body_util::{BodyExt, Empty, combinators::UnsyncBoxBody};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

use edgefleet_config::HttpOrigin;

use super::{OriginBody, OriginError, OriginRequest, RequestBody, resolve::Resolver, shield::ROUTED};
use crate::error::{Error, Result};

/// Idle origin connections are kept this long for reuse.
const POOL_IDLE: Duration = Duration::from_secs(90);

pub(crate) type OutgoingBody = UnsyncBoxBody<bytes::Bytes, hyper::Error>;
pub(crate) type PooledClient = Client<HttpsConnector<HttpConnector<Resolver>>, OutgoingBody>;

/// A pooled client with connect and read timeouts.
pub(crate) fn pooled_client(connect_timeout: Duration) -> PooledClient {
    let mut http = HttpConnector::new_with_resolver(Resolver::new());
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(1024)
        .build(https)
}

/// Sends a request, mapping failures to 502/504 reasons.
pub(crate) async fn send(
    client: &PooledClient,
    origin: &Arc<str>,
    request: Request<OutgoingBody>,
    read_timeout: Duration,
) -> Result<Response<OriginBody>, OriginError> {
    exchange(client, origin, request, read_timeout)
        .await
        .map_err(|f| f.error)
}

/// Why an exchange failed, and whether another server of the same kind may do better: only when
/// no connection could be made, so the request never reached this one.
pub(crate) struct Failure {
    pub(crate) error: OriginError,
    pub(crate) try_another: bool,
}

async fn exchange(
    client: &PooledClient,
    origin: &Arc<str>,
    request: Request<OutgoingBody>,
    read_timeout: Duration,
) -> Result<Response<OriginBody>, Failure> {
    match tokio::time::timeout(read_timeout, client.request(request)).await {
        Err(_) => Err(Failure {
            error: OriginError::Timeout {
                origin: origin.clone(),
                after: read_timeout,
            },
            try_another: false,
        }),
        Ok(Err(e)) => Err(Failure {
            error: OriginError::Unreachable {
                origin: origin.clone(),
                reason: describe(&e),
            },
            try_another: e.is_connect(),
        }),
        Ok(Ok(response)) => Ok(response.map(|body| OriginBody::new(body, origin.clone(), read_timeout))),
    }
}

fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let last = innermost_cause(e);
    if e.is_connect() {
        format!("cannot connect: {last}")
    } else {
        last
    }
}

/// The innermost cause of a client error is what a person can act on ("Connection refused").
pub(crate) fn innermost_cause(error: &hyper_util::client::legacy::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

pub(crate) struct HttpClient {
    id: Arc<str>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    base_path: String,
    host: HeaderValue,
    /// `hostHeader` was configured: never replaced by the viewer's.
    host_is_fixed: bool,
    /// A shield: the viewer's `Host` always goes through.
    shield: bool,
    read_timeout: Duration,
    via: HeaderValue,
    client: PooledClient,
}

impl HttpClient {
    pub(crate) fn new(config: &HttpOrigin, via: &str) -> Result<Self> {
        let host = config.host_header.as_deref();
        Self::build(
            &config.id,
            &config.url,
            host,
            Duration::from_secs(config.connect_timeout_seconds),
            Duration::from_secs(config.read_timeout_seconds),
            via,
        )
    }

    /// The client an edge outside the shield region uses to reach the shield: the viewer's
    /// `Host` is always forwarded so the shield serves the same distribution.
    pub(crate) fn shield(url: &str, via: &str) -> Result<Self> {
        let mut client = Self::build(
            "shield",
            url,
            None,
            Duration::from_secs(5),
            Duration::from_secs(60),
            via,
        )?;
        client.shield = true;
        Ok(client)
    }

    fn build(
        id: &str,
        url: &str,
        host_header: Option<&str>,
        connect_timeout: Duration,
        read_timeout: Duration,
        via: &str,
    ) -> Result<Self> {
        let invalid = |reason: String| Error::Origin {
            origin: id.to_owned(),
            reason,
        };
        let uri: Uri = url
            .parse()
            .map_err(|e| invalid(format!("invalid URL {url:?}: {e}")))?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
            return Err(invalid(format!("URL {url:?} must be absolute")));
        };
        let host = HeaderValue::from_str(host_header.unwrap_or(authority.as_str()))
            .map_err(|e| invalid(format!("invalid host header: {e}")))?;
        Ok(Self {
            id: id.into(),
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            host,
            host_is_fixed: host_header.is_some(),
            shield: false,
            read_timeout,
            via: HeaderValue::from_str(via).map_err(|e| invalid(format!("invalid Via: {e}")))?,
            client: pooled_client(connect_timeout),
        })
    }

    pub(crate) fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// Where requests go (unless sent elsewhere by [`HttpClient::exchange`]).
    pub(crate) fn base_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.base_path)
    }

    pub(crate) async fn send(
        &self,
        request: &OriginRequest,
        body: Option<RequestBody>,
    ) -> Result<Response<OriginBody>, OriginError> {
        self.exchange(None, request, body, None)
            .await
            .map_err(|f| f.error)
    }

    /// Sends a request to this origin, or (a shield client) to one shield edge at `to`, marked
    /// with `routed` as already routed to its owner. A viewer's own marker never goes further.
    pub(crate) async fn exchange(
        &self,
        to: Option<&Authority>,
        request: &OriginRequest,
        body: Option<RequestBody>,
        routed: Option<&HeaderValue>,
    ) -> Result<Response<OriginBody>, Failure> {
        let refused = |reason: String| Failure {
            error: OriginError::Refused {
                status: http::StatusCode::NOT_FOUND,
                reason,
            },
            try_another: false,
        };
        let path_and_query = match &request.query {
            Some(q) => format!("{}{}?{q}", self.base_path, request.path),
            None => format!("{}{}", self.base_path, request.path),
        };
        let uri = PathAndQuery::try_from(path_and_query)
            .ok()
            .and_then(|pq| {
                Uri::builder()
                    .scheme(self.scheme.clone())
                    .authority(to.unwrap_or(&self.authority).clone())
                    .path_and_query(pq)
                    .build()
                    .ok()
            })
            .ok_or_else(|| refused(format!("cannot form an origin URL for {:?}", request.path)))?;
        let body: OutgoingBody = match body {
            Some(b) => b,
            None => Empty::new().map_err(|never| match never {}).boxed_unsync(),
        };
        let mut outgoing = Request::builder()
            .method(request.method.clone())
            .uri(uri)
            .body(body)
            .map_err(|e| refused(format!("cannot form an origin request: {e}")))?;
        let headers = outgoing.headers_mut();
        headers.clone_from(&request.headers);
        headers.remove(&ROUTED);
        if let Some(value) = routed {
            headers.insert(ROUTED, value.clone());
        }
        let host = if self.shield || (request.forward_viewer_host && !self.host_is_fixed) {
            HeaderValue::from_str(&request.viewer_host).unwrap_or_else(|_| self.host.clone())
        } else {
            self.host.clone()
        };
        headers.insert(header::HOST, host);
        headers.append(header::VIA, self.via.clone());
        if request.method == Method::GET || request.method == Method::HEAD {
            headers.remove(header::CONTENT_LENGTH);
        }
        if let Some(interim) = request.interim.clone() {
            hyper::ext::on_informational(&mut outgoing, move |response| {
                interim.report(response.status(), response.headers());
            });
        }
        exchange(&self.client, &self.id, outgoing, self.read_timeout).await
    }
}
