//! Methods that are allowed but never cached (PUT, POST, PATCH, DELETE, OPTIONS): passed to the
//! origin with their body streamed, the response streamed back.
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
use http::StatusCode;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use http::HeaderMap;

use super::{
    Edge,
    admission::Viewer,
    errors, fill, headers,
    respond::{self, Served},
};
use crate::{
    config::runtime::{Behavior, Runtime},
    origin::OriginRequest,
};

pub(crate) async fn forward(
    edge: &Arc<Edge>,
    runtime: &Runtime,
    behavior: &Behavior,
    viewer: &Viewer,
    body: Incoming,
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
    fill::record_origin(edge, &result, started);
    match result {
        // Nothing is cached here, so every Set-Cookie reaches the viewer.
        Ok(fetched) => respond::from_origin(viewer, fetched, true),
        // The viewer's body broke (bad chunking, cut short): the viewer's fault, not the origin's.
        Err(_) if malformed.load(Ordering::SeqCst) => errors::plain(
            StatusCode::BAD_REQUEST,
            "bad request: the request body is malformed or incomplete".to_owned(),
        ),
        Err(e) => errors::origin_failed(&e),
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
