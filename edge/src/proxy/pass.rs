//! Methods that are allowed but never cached (PUT, POST, PATCH, DELETE, OPTIONS): passed to the
//! origin with their body streamed, the response streamed back.
use std::{sync::Arc, time::Instant};

use http::HeaderMap;

use super::{
    Edge,
    admission::Viewer,
    errors, fill, headers,
    respond::{self, Served},
};
use crate::{
    config::runtime::{Behavior, Runtime},
    origin::{OriginRequest, RequestBody},
};

pub(crate) async fn forward(
    edge: &Arc<Edge>,
    runtime: &Runtime,
    behavior: &Behavior,
    viewer: &Viewer,
    body: RequestBody,
) -> Served {
    let mut forwarded: HeaderMap = viewer.headers.clone();
    headers::strip_hop_by_hop(&mut forwarded);
    forwarded.remove(http::header::HOST);
    super::forwarded_for(&mut forwarded, viewer);
    let request = OriginRequest {
        method: viewer.method.clone(),
        path: viewer.path.clone(),
        query: viewer.query.clone(),
        headers: forwarded,
        viewer_host: viewer.host.clone(),
        forward_viewer_host: behavior.forward_host,
    };
    let started = Instant::now();
    let result = runtime
        .origins
        .send(&behavior.config.target_origin, &request, Some(body), false)
        .await;
    fill::record_origin(edge, &result, started);
    match result {
        // Nothing is cached here, so every Set-Cookie reaches the viewer.
        Ok(fetched) => respond::from_origin(viewer, fetched, true),
        Err(e) => errors::origin_failed(&e),
    }
}
