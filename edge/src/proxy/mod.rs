//! The request path, top to bottom: admission (limits, host, path), behavior, method, then the
//! cache (GET/HEAD) or a pass-through (other allowed methods), custom error pages, and the
//! headers every response carries.
pub(crate) mod admission;
pub(crate) mod behavior;
mod body;
mod cached;
mod compress;
mod conditional;
mod errors;
mod fill;
mod headers;
mod pass;
mod range;
mod respond;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, header};
use hyper::body::Incoming;
use parking_lot::RwLock;

pub(crate) use body::Body;
use respond::Served;

use crate::{
    cache::Cache,
    config::runtime::Runtime,
    metrics::{CacheResult, Metrics, RequestLabels},
    server::Verdict,
};

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const X_EDGE_LOCATION: HeaderName = HeaderName::from_static("x-edge-location");

/// The state every request shares.
pub(crate) struct Edge {
    runtime: RwLock<Arc<Runtime>>,
    pub(crate) cache: Cache,
    pub(crate) metrics: Arc<Metrics>,
    draining: AtomicBool,
}

impl Edge {
    pub(crate) fn new(runtime: Runtime, cache: Cache, metrics: Arc<Metrics>) -> Self {
        metrics.config_generation.set(runtime.generation as i64);
        Self {
            runtime: RwLock::new(Arc::new(runtime)),
            cache,
            metrics,
            draining: AtomicBool::new(false),
        }
    }

    /// The configuration in force now; a request keeps the one it started with.
    pub(crate) fn runtime(&self) -> Arc<Runtime> {
        self.runtime.read().clone()
    }

    /// Swaps in a new configuration. The cache is untouched.
    pub(crate) fn replace_runtime(&self, runtime: Runtime) {
        self.metrics.config_generation.set(runtime.generation as i64);
        *self.runtime.write() = Arc::new(runtime);
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Serves one viewer request. `verdict` is the connection guard's view of its raw head.
pub(crate) async fn handle(
    edge: Arc<Edge>,
    request: Request<Incoming>,
    client: SocketAddr,
    verdict: Verdict,
) -> Response<Body> {
    let runtime = edge.runtime();
    let (parts, body) = request.into_parts();
    let mut close = verdict != Verdict::Clean;
    let served = match (verdict, admission::admit(parts, &runtime, client)) {
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
        headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
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
