//! `POST /invalidations`: purge by path, idempotent by id, answering once the objects are gone.
//!
//! The body and the answer are `edgefleet_config::admin`'s [`InvalidationRequest`] and
//! [`InvalidationReceipt`], the operator's side of the same contract; so are the rules for paths
//! and the limits (3,000 paths, 15 wildcards). The same id with the same paths returns the recorded
//! receipt without purging again; with other paths it is a 409. `/` purges the default root
//! object too, since that is what viewers asking for `/` are served.
use std::collections::{HashMap, VecDeque};

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use edgefleet_config::admin::{InvalidationReceipt, InvalidationRequest};
use tokio::sync::Mutex;

use super::{AdminState, error};
use crate::cache::invalidation::PurgePattern;

/// Invalidations remembered for idempotency; older ids are forgotten first.
const REMEMBERED: usize = 10_000;

/// Invalidations applied, by id. One lock serializes purges: two requests with one id never both
/// run.
#[derive(Default)]
pub(crate) struct Ledger {
    done: Mutex<(HashMap<String, InvalidationReceipt>, VecDeque<String>)>,
}

/// The patterns to purge for a request's paths: each parsed, and `/` (with any query) also as the
/// default root object it is served as.
fn patterns(paths: &[String], root_object: Option<&str>) -> Result<Vec<(PurgePattern, String)>, String> {
    let mut patterns = Vec::with_capacity(paths.len());
    for path in paths {
        patterns.push((PurgePattern::parse(path)?, path.clone()));
        let (bare, query) = path
            .split_once('?')
            .map_or((path.as_str(), None), |(p, q)| (p, Some(q)));
        if let (Some(root), "/") = (root_object, bare) {
            let as_root = match query {
                Some(q) => format!("{root}?{q}"),
                None => root.to_owned(),
            };
            patterns.push((PurgePattern::parse(&as_root)?, as_root));
        }
    }
    Ok(patterns)
}

pub(crate) async fn create(
    State(state): State<AdminState>,
    body: Result<Json<InvalidationRequest>, JsonRejection>,
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
    if let Err(why) = new.check() {
        return error(StatusCode::BAD_REQUEST, why);
    }
    let root_object = state.edge.runtime().default_root_object.clone();
    let patterns = match patterns(&new.paths, root_object.as_deref()) {
        Ok(patterns) => patterns,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };

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
    let receipt = InvalidationReceipt {
        id: new.id.clone(),
        paths: new.paths,
        status: "Completed".to_owned(),
        purged,
        created_at,
        completed_at: jiff::Timestamp::now().to_string(),
    };
    let (records, order) = &mut *done;
    records.insert(new.id.clone(), receipt.clone());
    order.push_back(new.id);
    while order.len() > REMEMBERED {
        if let Some(old) = order.pop_front() {
            records.remove(&old);
        }
    }
    Json(receipt).into_response()
}

pub(crate) async fn show(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match state.invalidations.done.lock().await.0.get(&id) {
        Some(record) => Json(record.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no invalidation {id:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purged(paths: &[&str], root: Option<&str>) -> Vec<String> {
        let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
        patterns(&paths, root)
            .expect("valid")
            .into_iter()
            .map(|(_, raw)| raw)
            .collect()
    }

    #[test]
    fn the_root_path_purges_the_default_root_object() {
        assert_eq!(purged(&["/"], Some("/index.html")), ["/", "/index.html"]);
        assert_eq!(
            purged(&["/?v=2"], Some("/index.html")),
            ["/?v=2", "/index.html?v=2"]
        );
        assert_eq!(purged(&["/"], None), ["/"]);
        assert_eq!(purged(&["/*", "/a"], Some("/index.html")), ["/*", "/a"]);
    }
}
