//! The admin API on its own port. `/healthz` and `/readyz` answer anyone (kubelet probes carry no
//! secrets); everything else requires `Authorization: Bearer <token>` with the token from the
//! configured file.
mod invalidations;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use edgefleet_config::admin;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::{reload::Reloader, state::Edge};

#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) edge: Arc<Edge>,
    pub(crate) reloader: Arc<Reloader>,
    pub(crate) invalidations: Arc<invalidations::Ledger>,
    /// `/readyz` has answered ready once: from then on only draining makes it not ready.
    started: Arc<AtomicBool>,
}

impl AdminState {
    pub(crate) fn new(edge: Arc<Edge>, reloader: Arc<Reloader>) -> Self {
        Self {
            edge,
            reloader,
            invalidations: Arc::new(invalidations::Ledger::default()),
            started: Arc::new(AtomicBool::new(false)),
        }
    }
}

pub(crate) fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route(admin::INVALIDATIONS_PATH, post(invalidations::create))
        .route(
            &format!("{}/{{id}}", admin::INVALIDATIONS_PATH),
            get(invalidations::show),
        )
        .route("/reload", post(reload))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route(admin::HEALTH_PATH, get(|| async { "ok\n" }))
        .route(admin::READY_PATH, get(readyz))
        .merge(protected)
        .with_state(state)
}

/// An error answer with a JSON body `{"error": "..."}`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let expected = state.edge.runtime().admin_token.clone();
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => next.run(request).await,
        _ => {
            let mut response = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"edgefleet-edge\""),
            );
            response
        }
    }
}

/// The admin port while the edge waits for its first configuration: alive, not ready, and why.
pub(crate) fn waiting_router(reason: tokio::sync::watch::Receiver<String>) -> Router {
    Router::new()
        .route(admin::HEALTH_PATH, get(|| async { "ok\n" }))
        .route(
            admin::READY_PATH,
            get(move || {
                let why = reason.borrow().clone();
                async move {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("waiting for configuration: {why}\n"),
                    )
                        .into_response()
                }
            }),
        )
}

/// Ready once a configuration is loaded (until then [`waiting_router`] answers) and, at start,
/// the origin shield's edges are known; until shutdown begins, so load balancers stop sending
/// before connections close.
///
/// A reload that brings a new shield does not make a serving edge unready: every edge reloads at
/// once, and the fleet would leave its Services together. Until the new list arrives its misses
/// go through the shield's Service.
async fn readyz(State(state): State<AdminState>) -> Response {
    if state.edge.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    if !state.started.load(Ordering::Relaxed)
        && let Some(awaited) = state.edge.runtime().origins.shield_awaited()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("waiting for the origin shield's edges: {awaited}\n"),
        )
            .into_response();
    }
    state.started.store(true, Ordering::Relaxed);
    (StatusCode::OK, "ready\n").into_response()
}

async fn reload(State(state): State<AdminState>) -> Response {
    match state.reloader.reload().await {
        Ok(generation) => Json(json!({ "generation": generation })).into_response(),
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            format!("configuration rejected, the running one stays: {e}"),
        ),
    }
}

async fn status(State(state): State<AdminState>) -> Response {
    let runtime = state.edge.runtime();
    let usage = state.edge.cache.store.usage();
    Json(json!({
        "distribution": runtime.config.distribution,
        "region": runtime.region,
        "generation": runtime.generation,
        "draining": state.edge.draining(),
        "cache": {
            "bytes": usage.bytes,
            "capacityBytes": usage.capacity,
            "objects": usage.items,
            "evictions": usage.evictions,
            "fillsInFlight": state.edge.cache.fills_in_flight(),
        },
        "originShield": runtime.origins.shield_status(),
    }))
    .into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let edge = &state.edge;
    edge.metrics
        .observe_cache(edge.cache.store.usage(), edge.cache.fills_in_flight());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        edge.metrics.encode(),
    )
        .into_response()
}
