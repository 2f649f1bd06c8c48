//! Methods that are allowed but never cached (PUT, POST, PATCH, DELETE, OPTIONS): passed to the
//! origin with their body streamed, the response streamed back.
//!
//! A non-error response to an unsafe method (all of those but OPTIONS) invalidates what the edge
//! stored for the target URI, and for the URIs in `Location` and `Content-Location` when they
//! are on the same host (RFC 9111 §4.4): the next GET asks the origin.
use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{
    admission::Viewer,
    errors, record_origin,
    respond::{self, Served},
};
use crate::{
    cache::{
        invalidation::PurgePattern,
        key::{self, KeyInput, normalize_encoding},
    },
    config::runtime::{Behavior, Runtime},
    origin::{OriginRequest, strip_hop_by_hop},
    state::Edge,
};

pub(crate) async fn forward(
    edge: &Arc<Edge>,
    runtime: &Runtime,
    behavior: &Behavior,
    viewer: &Viewer,
    body: Incoming,
) -> Served {
    let mut forwarded: HeaderMap = viewer.headers.clone();
    strip_hop_by_hop(&mut forwarded);
    forwarded.remove(http::header::HOST);
    super::forwarded_for(&mut forwarded, viewer);
    let request = OriginRequest {
        method: viewer.method.clone(),
        path: viewer.path.clone(),
        query: viewer.query.clone(),
        headers: forwarded,
        viewer_host: viewer.host.clone(),
        forward_viewer_host: behavior.forward_host,
        interim: viewer.interim.clone(),
    };
    let malformed = Arc::new(AtomicBool::new(false));
    let body = Watched {
        inner: body,
        malformed: malformed.clone(),
    }
    .boxed_unsync();
    let started = Instant::now();
    let result = runtime
        .origins
        .send(&behavior.config.target_origin, &request, Some(body), false)
        .await;
    record_origin(&edge.metrics, &result, started);
    match result {
        Ok(fetched) => {
            let status = fetched.response.status();
            if viewer.method != Method::OPTIONS && (status.is_success() || status.is_redirection()) {
                invalidate(edge, runtime, viewer, fetched.response.headers()).await;
            }
            respond::from_origin(viewer, fetched)
        }
        // The viewer's body broke (bad chunking, cut short): the viewer's fault, not the origin's.
        Err(_) if malformed.load(Ordering::SeqCst) => errors::plain(
            StatusCode::BAD_REQUEST,
            "bad request: the request body is malformed or incomplete".to_owned(),
        ),
        Err(e) => errors::origin_failed(&e),
    }
}

/// Purges what the edge stored for the target URI of a successful unsafe request, and for its
/// `Location` and `Content-Location` on the same host.
async fn invalidate(edge: &Edge, runtime: &Runtime, viewer: &Viewer, response: &HeaderMap) {
    let mut targets = vec![(viewer.path.clone(), viewer.query.clone())];
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(uri) = response
            .get(&name)
            .and_then(|v| v.to_str().ok()?.parse::<Uri>().ok())
        else {
            continue;
        };
        let same_host = uri.host().is_none_or(|host| {
            super::admission::normalize_host(host).as_deref() == Some(viewer.host.as_str())
        });
        if same_host && uri.path().starts_with('/') {
            targets.push((
                normalize_encoding(uri.path()).into_owned(),
                uri.query().map(str::to_owned),
            ));
        }
    }
    let patterns: Vec<(PurgePattern, String)> = targets
        .iter()
        .map(|(path, query)| {
            let behavior = runtime.behavior_for(path);
            let input = KeyInput {
                host: &viewer.host,
                path,
                query: query.as_deref(),
                headers: &viewer.headers,
            };
            let purge_path = key::build(input, &behavior.config.cache_key).purge_path;
            (PurgePattern::Exact(purge_path.clone()), purge_path)
        })
        .collect();
    if let Err(e) = edge.cache.purge(&patterns).await {
        tracing::warn!(error = %e, path = %viewer.path, "cannot invalidate after an unsafe request");
    }
}

/// The viewer's request body, noting whether it failed.
struct Watched {
    inner: Incoming,
    malformed: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.malformed.store(true, Ordering::SeqCst);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
