//! `POST /invalidations`: purge by path, idempotent by id, answering once the objects are gone.
//!
//! Request: `{"id": "release-42", "paths": ["/index.html", "/assets/*"]}`. The same id with the
//! same paths returns the recorded result without purging again; with other paths it is a 409.
//! Limits follow CloudFront's: at most 3,000 paths, 15 of them wildcards.
use std::collections::{HashMap, VecDeque};

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{AdminState, error};
use crate::cache::{PurgeCount, invalidation::PurgePattern};

const MAX_PATHS: usize = 3_000;
const MAX_WILDCARDS: usize = 15;
/// Invalidations remembered for idempotency; older ids are forgotten first.
const REMEMBERED: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NewInvalidation {
    id: String,
    paths: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Invalidation {
    id: String,
    paths: Vec<String>,
    status: &'static str,
    purged: PurgeCount,
    created_at: String,
    completed_at: String,
}

/// Invalidations applied, by id. One lock serializes purges: two requests with one id never both
/// run.
#[derive(Default)]
pub(crate) struct Ledger {
    done: Mutex<(HashMap<String, Invalidation>, VecDeque<String>)>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 253
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

pub(crate) async fn create(
    State(state): State<AdminState>,
    body: Result<Json<NewInvalidation>, JsonRejection>,
) -> Response {
    let Json(new) = match body {
        Ok(body) => body,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"id\": ..., \"paths\": [...]}}: {e}"),
            );
        }
    };
    if !valid_id(&new.id) {
        return error(
            StatusCode::BAD_REQUEST,
            "id must be 1-253 characters of letters, digits, '-', '_', '.', ':'",
        );
    }
    if new.paths.is_empty() || new.paths.len() > MAX_PATHS {
        return error(StatusCode::BAD_REQUEST, format!("give 1 to {MAX_PATHS} paths"));
    }
    let mut patterns = Vec::with_capacity(new.paths.len());
    for path in &new.paths {
        match PurgePattern::parse(path) {
            Ok(p) => patterns.push((p, path.clone())),
            Err(why) => return error(StatusCode::BAD_REQUEST, why),
        }
    }
    let wildcards = patterns.iter().filter(|(p, _)| p.is_wildcard()).count();
    if wildcards > MAX_WILDCARDS {
        return error(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_WILDCARDS} wildcard paths per invalidation"),
        );
    }

    let mut done = state.invalidations.done.lock().await;
    if let Some(existing) = done.0.get(&new.id) {
        return if existing.paths == new.paths {
            Json(existing.clone()).into_response()
        } else {
            error(
                StatusCode::CONFLICT,
                format!(
                    "invalidation {:?} already exists with other paths; use a new id",
                    new.id
                ),
            )
        };
    }
    let created_at = jiff::Timestamp::now().to_string();
    let purged = match state.edge.cache.purge(&patterns).await {
        Ok(purged) => purged,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("purge failed: {e}")),
    };
    state.edge.metrics.invalidations.inc();
    state.edge.metrics.purged_objects.inc_by(purged.objects as u64);
    tracing::info!(id = %new.id, paths = new.paths.len(), objects = purged.objects, fills = purged.fills, "invalidation completed");
    let record = Invalidation {
        id: new.id.clone(),
        paths: new.paths,
        status: "Completed",
        purged,
        created_at,
        completed_at: jiff::Timestamp::now().to_string(),
    };
    let (records, order) = &mut *done;
    records.insert(new.id.clone(), record.clone());
    order.push_back(new.id);
    while order.len() > REMEMBERED {
        if let Some(old) = order.pop_front() {
            records.remove(&old);
        }
    }
    Json(record).into_response()
}

pub(crate) async fn show(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match state.invalidations.done.lock().await.0.get(&id) {
        Some(record) => Json(record.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no invalidation {id:?}")),
    }
}
