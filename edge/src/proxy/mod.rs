//! The request path, top to bottom: admission (limits, host, path), behavior, method, then the
//! cache (GET/HEAD) or a pass-through (other allowed methods), custom error pages, and the
//! headers every response carries.
pub(crate) mod admission;
mod body;
mod cached;
mod compress;
mod conditional;
mod errors;
mod pass;
mod range;
mod respond;

use std::{net::SocketAddr, sync::Arc, time::Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, header};
use hyper::body::Incoming;

pub(crate) use body::Body;
use respond::Served;

use self::admission::Verdict;
use crate::{
    config::runtime::Runtime,
    metrics::{CacheResult, Metrics, OriginLabels, OriginOutcomeLabels, RequestLabels},
    origin::{Fetched, Interim, OriginError},
    state::Edge,
};

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const X_EDGE_LOCATION: HeaderName = HeaderName::from_static("x-edge-location");

/// Serves one viewer request. `verdict` is the connection guard's view of its raw head;
/// `interim` takes the origin's 1xx responses to the viewer's connection.
pub(crate) async fn handle(
    edge: Arc<Edge>,
    request: Request<Incoming>,
    client: SocketAddr,
    verdict: Verdict,
    interim: Option<Interim>,
) -> Response<Body> {
    let runtime = edge.runtime();
    let (parts, body) = request.into_parts();
    let mut close = verdict != Verdict::Clean;
    let served = match (verdict, admission::admit(parts, &runtime, client, interim)) {
        (Verdict::Smuggling(why), _) => errors::rejection(admission::Rejection::BadRequest(why), &runtime),
        (_, Err(rejection)) => {
            // Whatever follows a refused request on this connection is not trusted either.
            close = true;
            errors::rejection(rejection, &runtime)
        }
        (_, Ok(viewer)) => route(&edge, &runtime, viewer, body).await,
    };
    let mut response = finish(&edge, &runtime, served);
    if close {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn route(
    edge: &Arc<Edge>,
    runtime: &Arc<Runtime>,
    viewer: admission::Viewer,
    body: Incoming,
) -> Served {
    let behavior = runtime.behavior_for(&viewer.path);
    if !behavior.allows(&viewer.method) {
        return errors::method_not_allowed(&viewer.method, behavior);
    }
    let served = if matches!(viewer.method, Method::GET | Method::HEAD) {
        drop(body);
        cached::serve(edge, runtime, behavior, &viewer).await
    } else {
        pass::forward(edge, runtime, behavior, &viewer, body).await
    };
    if served.response.status().is_client_error() || served.response.status().is_server_error() {
        return errors::custom_page(edge, runtime, &viewer, served).await;
    }
    served
}

/// Labels the response (`X-Cache`, `Age`, `Via`, `X-Edge-Location`) and counts it.
fn finish(edge: &Edge, runtime: &Runtime, served: Served) -> Response<Body> {
    let Served { response, cache, age } = served;
    let (mut parts, body) = response.into_parts();
    let cache = if parts.status.is_client_error() || parts.status.is_server_error() {
        CacheResult::Error
    } else {
        cache
    };
    let headers = &mut parts.headers;
    headers.insert(X_CACHE, cache.header());
    headers.insert(X_EDGE_LOCATION, runtime.location.clone());
    headers.append(header::VIA, runtime.via.clone());
    if let Some(age) = age {
        // RFC 9111 §1.2.2: ages beyond 2^31 are sent as 2^31.
        headers.insert(header::AGE, HeaderValue::from(age.as_secs().min(2_147_483_648)));
    }
    edge.metrics
        .requests
        .get_or_create(&RequestLabels {
            status: parts.status.as_u16(),
            cache,
        })
        .inc();
    let body = body.counted(edge.metrics.response_bytes.clone());
    Response::from_parts(parts, body)
}

/// Appends the viewer's address to `X-Forwarded-For`.
fn forwarded_for(headers: &mut HeaderMap, viewer: &admission::Viewer) {
    let ip = viewer.client.ip().to_string();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, {ip}"),
        None => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", value);
    }
}

/// Origin request metrics: latency to the response head, outcome by status or failure.
fn record_origin(metrics: &Metrics, result: &Result<Fetched, OriginError>, started: Instant) {
    let (origin, outcome) = match result {
        Ok(f) => (f.origin.to_string(), f.response.status().as_str().to_owned()),
        Err(OriginError::Unreachable { origin, .. }) => (origin.to_string(), "unreachable".to_owned()),
        Err(OriginError::Timeout { origin, .. }) => (origin.to_string(), "timeout".to_owned()),
        Err(OriginError::Refused { .. }) => return,
    };
    metrics
        .origin_duration
        .get_or_create(&OriginLabels {
            origin: origin.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .origin_requests
        .get_or_create(&OriginOutcomeLabels { origin, outcome })
        .inc();
}
