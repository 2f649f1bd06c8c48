//! GET and HEAD: served from the cache, filled from the origin on a miss, revalidated when stale,
//! compressed when the viewer accepts it.
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Version, header};
use tokio::sync::oneshot;

use super::{
    Edge,
    admission::Viewer,
    compress::{self, Encoding},
    errors,
    fill::{self, FillJob, Handoff},
    respond::{self, Served},
};
use crate::{
    cache::{
        Lookup, Policy,
        collapse::{BodyReader, Join, Phase, SharedResponse},
        key::{self, KeyInput, Keyed},
        object::{CachedObject, Entry},
    },
    config::runtime::{Behavior, Runtime},
    metrics::CacheResult,
    origin::{Fetched, OriginError, OriginRequest},
};

/// One request's view of the cache.
struct Ctx<'a> {
    edge: &'a Arc<Edge>,
    runtime: &'a Arc<Runtime>,
    behavior: &'a Behavior,
    viewer: &'a Viewer,
    keyed: Keyed,
    /// Built only when the origin is asked: hits never pay for it.
    request: OnceLock<OriginRequest>,
}

/// What the cache and the origin gave for a request.
enum Got {
    /// A complete object.
    Object {
        object: Arc<CachedObject>,
        key: String,
        cache: CacheResult,
    },
    /// A fill in progress that this viewer follows (with its reader, for the leader).
    Streaming(Arc<SharedResponse>, Option<BodyReader>),
    /// A response for this viewer alone.
    Pass(Fetched),
    Failed(OriginError),
}

pub(crate) async fn serve(
    edge: &Arc<Edge>,
    runtime: &Arc<Runtime>,
    behavior: &Behavior,
    viewer: &Viewer,
) -> Served {
    let input = KeyInput {
        host: &viewer.host,
        path: &viewer.path,
        query: viewer.query.as_deref(),
        headers: &viewer.headers,
    };
    let keyed = key::build(input, &behavior.config.cache_key);
    let ctx = Ctx {
        edge,
        runtime,
        behavior,
        viewer,
        keyed,
        request: OnceLock::new(),
    };
    match obtain(&ctx).await {
        Got::Object { object, key, cache } => serve_object(&ctx, object, &key, cache).await,
        Got::Streaming(shared, reader) => serve_streaming(&ctx, shared, reader).await,
        Got::Pass(fetched) => respond::from_origin(viewer, fetched, keep_set_cookie(behavior)),
        Got::Failed(e) => errors::origin_failed(&e),
    }
}

/// Set-Cookie reaches viewers only when cookies are part of the key (CloudFront's rule).
fn keep_set_cookie(behavior: &Behavior) -> bool {
    behavior.config.cache_key.cookies != edgefleet_config::KeyList::None
}

/// The GET sent to the origin: the viewer's end-to-end headers that may be forwarded, the keyed
/// cookies and query string.
fn origin_request(behavior: &Behavior, viewer: &Viewer, keyed: &Keyed) -> OriginRequest {
    let mut headers = HeaderMap::with_capacity(viewer.headers.len() + 2);
    for (name, value) in &viewer.headers {
        if key::forwarded_header(&behavior.config.cache_key, name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(cookie) = &keyed.forward_cookie {
        headers.insert(header::COOKIE, cookie.clone());
    }
    super::forwarded_for(&mut headers, viewer);
    OriginRequest {
        method: Method::GET,
        path: viewer.path.clone(),
        query: keyed.forward_query.clone(),
        headers,
        viewer_host: viewer.host.clone(),
        forward_viewer_host: behavior.forward_host,
    }
}

impl Ctx<'_> {
    fn request(&self) -> &OriginRequest {
        self.request
            .get_or_init(|| origin_request(self.behavior, self.viewer, &self.keyed))
    }

    fn policy(&self) -> Policy<'_> {
        Policy {
            ttl: self.behavior.ttl,
            stale_if_error: self.behavior.config.stale_if_error_seconds,
            error_responses: &self.runtime.error_responses,
        }
    }

    fn job(&self, stale: Option<(Arc<CachedObject>, String)>, stale_on_error: bool) -> FillJob {
        FillJob {
            primary: self.keyed.primary.clone(),
            purge_path: self.keyed.purge_path.clone(),
            target: self.behavior.config.target_origin.clone(),
            request: self.request().clone(),
            stale,
            stale_on_error,
            ttl: self.behavior.ttl,
            keep_set_cookie: keep_set_cookie(self.behavior),
            authorization_forwarded: self.request().headers.contains_key(header::AUTHORIZATION),
            key_policy: self.behavior.config.cache_key.clone(),
        }
    }

    /// Joins (or starts) the fill for `key`; returns its outcome and, for the leader of a fill
    /// that was not shareable, the origin's response.
    async fn fill(
        &self,
        key: &str,
        stale: Option<(Arc<CachedObject>, String)>,
        stale_on_error: bool,
    ) -> (Phase, Option<Handoff>) {
        match self.edge.cache.flights.join(key, &self.keyed.purge_path) {
            Join::Leader(flight) => {
                let (tx, rx) = oneshot::channel();
                let job = self.job(stale, stale_on_error);
                tokio::spawn(fill::run(
                    self.edge.clone(),
                    self.runtime.clone(),
                    flight.clone(),
                    job,
                    tx,
                ));
                let phase = flight.outcome().await;
                // The fill hands over before it publishes these phases.
                let handoff = match phase {
                    Phase::Pass | Phase::Streaming(_) => rx.await.ok(),
                    _ => None,
                };
                (phase, handoff)
            }
            Join::Follower(flight) => (flight.outcome().await, None),
        }
    }

    /// Refreshes a stale object in the background, unless a refresh is already running.
    fn revalidate_in_background(&self, object: &Arc<CachedObject>, key: &str) {
        if let Join::Leader(flight) = self.edge.cache.flights.join(key, &self.keyed.purge_path) {
            let (tx, _) = oneshot::channel();
            let job = self.job(Some((object.clone(), key.to_owned())), false);
            tokio::spawn(fill::run(
                self.edge.clone(),
                self.runtime.clone(),
                flight,
                job,
                tx,
            ));
        }
    }

    /// An uncollapsed origin request for this viewer alone.
    async fn fetch_alone(&self) -> Result<Fetched, OriginError> {
        let started = std::time::Instant::now();
        let result = self
            .runtime
            .origins
            .send(&self.behavior.config.target_origin, self.request(), None, true)
            .await;
        fill::record_origin(self.edge, &result, started);
        result
    }

    async fn got_alone(&self) -> Got {
        match self.fetch_alone().await {
            Ok(fetched) => Got::Pass(fetched),
            Err(e) => Got::Failed(e),
        }
    }
}

/// Lookup, then hit, revalidation or fill.
async fn obtain(ctx: &Ctx<'_>) -> Got {
    let policy = ctx.policy();
    match ctx
        .edge
        .cache
        .lookup(
            &ctx.keyed.primary,
            &ctx.viewer.headers,
            &ctx.behavior.config.cache_key,
            &policy,
        )
        .await
    {
        Lookup::Hit(object, key) => Got::Object {
            object,
            key,
            cache: CacheResult::Hit,
        },
        Lookup::Stale {
            object,
            key,
            while_revalidate: true,
            ..
        } => {
            ctx.revalidate_in_background(&object, &key);
            Got::Object {
                object,
                key,
                cache: CacheResult::Hit,
            }
        }
        Lookup::Stale {
            object,
            key,
            if_error,
            ..
        } => {
            let (phase, handoff) = ctx
                .fill(&key, Some((object.clone(), key.clone())), if_error)
                .await;
            match phase {
                Phase::Ready(fresh) => Got::Object {
                    object: fresh,
                    key,
                    cache: CacheResult::RefreshHit,
                },
                Phase::KeepStale => Got::Object {
                    object,
                    key,
                    cache: CacheResult::Hit,
                },
                Phase::Failed(e) if if_error => {
                    tracing::debug!(error = %e, "serving stale: origin failed");
                    Got::Object {
                        object,
                        key,
                        cache: CacheResult::Hit,
                    }
                }
                phase => settle(ctx, phase, handoff, true).await,
            }
        }
        Lookup::Miss { key } => {
            let (phase, handoff) = ctx.fill(&key, None, false).await;
            settle(ctx, phase, handoff, true).await
        }
    }
}

/// Turns a fill's outcome into what this viewer gets.
async fn settle(ctx: &Ctx<'_>, phase: Phase, handoff: Option<Handoff>, may_retry: bool) -> Got {
    match (phase, handoff) {
        (Phase::Streaming(shared), handoff) => {
            let own = fill::variant_key(
                &ctx.keyed.primary,
                &shared,
                &ctx.viewer.headers,
                &ctx.behavior.config.cache_key,
            );
            if own == shared.stored_key {
                let reader = match handoff {
                    Some(Handoff::Reader(reader)) => Some(reader),
                    _ => None,
                };
                return Got::Streaming(shared, reader);
            }
            // The response varies on a header whose value differs for this viewer: fill the
            // viewer's own variant (collapsed with others wanting the same one).
            if may_retry {
                let (phase, handoff) = ctx.fill(&own, None, false).await;
                return Box::pin(settle(ctx, phase, handoff, false)).await;
            }
            ctx.got_alone().await
        }
        (Phase::Ready(object), _) => Got::Object {
            key: ctx.keyed.primary.clone(),
            object,
            cache: CacheResult::RefreshHit,
        },
        (Phase::Failed(e), _) => Got::Failed(e),
        (Phase::Pass, Some(Handoff::Pass(fetched))) => Got::Pass(fetched),
        (Phase::Pass | Phase::KeepStale | Phase::Pending, _) => ctx.got_alone().await,
    }
}

/// The encoding to compress a response with for this viewer, if any.
fn encoding_for(ctx: &Ctx<'_>) -> Option<Encoding> {
    let viewer = ctx.viewer;
    if !ctx.behavior.config.compress
        || viewer.version == Version::HTTP_10
        || viewer.headers.contains_key(header::RANGE)
    {
        return None;
    }
    compress::negotiate(&viewer.headers)
}

/// Adds `Vary: Accept-Encoding` to a response whose encoding depends on the viewer.
fn vary_on_encoding(served: &mut Served) {
    let headers = served.response.headers_mut();
    let listed = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|n| n.trim().eq_ignore_ascii_case("accept-encoding"))
        })
    });
    if !listed {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

async fn serve_object(ctx: &Ctx<'_>, object: Arc<CachedObject>, key: &str, cache: CacheResult) -> Served {
    let compressible = ctx.behavior.config.compress
        && compress::compressible(object.status, &object.headers, Some(object.body.len() as u64));
    if compressible && let Some(encoding) = encoding_for(ctx) {
        return serve_compressed(ctx, object, key, encoding, cache).await;
    }
    let mut served = respond::from_object(ctx.viewer, &object, cache);
    if compressible {
        vary_on_encoding(&mut served);
    }
    served
}

async fn serve_streaming(ctx: &Ctx<'_>, shared: Arc<SharedResponse>, reader: Option<BodyReader>) -> Served {
    let compressible = ctx.behavior.config.compress
        && compress::compressible(shared.status, &shared.headers, shared.content_length);
    // Only objects the cache keeps get a stored compressed variant.
    let kept = shared
        .content_length
        .is_some_and(|len| len <= ctx.runtime.max_object_bytes);
    if compressible && kept && encoding_for(ctx).is_some() {
        // Compression needs the whole body (at most 10 MB by the rule above): wait for it.
        return match complete(&shared, reader).await {
            Some(object) => serve_object(ctx, Arc::new(object), &shared.stored_key, CacheResult::Miss).await,
            None => alone(ctx).await,
        };
    }
    match respond::from_shared(
        ctx.viewer,
        &shared,
        reader,
        CacheResult::Miss,
        Some(shared.stored.initial_age),
    ) {
        Some(mut served) => {
            if compressible {
                vary_on_encoding(&mut served);
            }
            served
        }
        None => alone(ctx).await,
    }
}

/// Serves this viewer from its own origin request, when a shared body cannot be joined.
async fn alone(ctx: &Ctx<'_>) -> Served {
    match ctx.fetch_alone().await {
        Ok(fetched) => respond::from_origin(ctx.viewer, fetched, keep_set_cookie(ctx.behavior)),
        Err(e) => errors::origin_failed(&e),
    }
}

/// Reads a shared body to its end, as the object the fill is storing.
async fn complete(shared: &SharedResponse, reader: Option<BodyReader>) -> Option<CachedObject> {
    let mut reader = match reader {
        Some(reader) => reader,
        None => shared.body.reader(None)?,
    };
    let mut body = BytesMut::with_capacity(shared.content_length.unwrap_or(0) as usize);
    while let Some(piece) = reader.next().await {
        body.extend_from_slice(&piece.ok()?);
    }
    Some(shared.object(body.freeze()))
}

/// Serves the compressed variant, compressing (once, collapsed) and storing it on a miss.
async fn serve_compressed(
    ctx: &Ctx<'_>,
    identity: Arc<CachedObject>,
    key: &str,
    encoding: Encoding,
    cache: CacheResult,
) -> Served {
    let variant_key = key::with_encoding(key, encoding.token());
    let policy = ctx.policy();
    if let Lookup::Hit(variant, _) = ctx.edge.cache.lookup_key(&variant_key, &policy).await {
        return respond::from_object(ctx.viewer, &variant, cache);
    }
    let flight = match ctx.edge.cache.flights.join(&variant_key, &ctx.keyed.purge_path) {
        Join::Leader(flight) => {
            let (edge, identity, variant_key) = (ctx.edge.clone(), identity.clone(), variant_key.clone());
            let purge_path = ctx.keyed.purge_path.clone();
            let leader = flight.clone();
            tokio::spawn(async move {
                let source = identity.clone();
                let built =
                    tokio::task::spawn_blocking(move || compressed_variant(&source, encoding, &purge_path))
                        .await;
                match built {
                    Ok(Ok(variant)) => {
                        let variant = Arc::new(variant);
                        edge.cache
                            .store_fill(&leader, vec![(variant_key, Entry::Object(variant.clone()))]);
                        leader.publish(Phase::Ready(variant));
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "compression failed; serving identity");
                        leader.publish(Phase::Pass);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "compression task failed; serving identity");
                        leader.publish(Phase::Pass);
                    }
                }
                edge.cache.flights.land(&leader);
            });
            flight
        }
        Join::Follower(flight) => flight,
    };
    match flight.outcome().await {
        Phase::Ready(variant) => respond::from_object(ctx.viewer, &variant, cache),
        _ => {
            let mut served = respond::from_object(ctx.viewer, &identity, cache);
            vary_on_encoding(&mut served);
            served
        }
    }
}

/// The compressed variant of an identity object: same freshness, weak ETag, new length.
fn compressed_variant(
    identity: &CachedObject,
    encoding: Encoding,
    purge_path: &str,
) -> std::io::Result<CachedObject> {
    let body = compress::compress(encoding, &identity.body)?;
    let mut headers = identity.headers.clone();
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(encoding.token()),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if let Some(etag) = headers.get(header::ETAG) {
        let weak = compress::weaken(etag);
        headers.insert(header::ETAG, weak);
    }
    headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    Ok(CachedObject {
        body: Bytes::from(body),
        headers,
        purge_path: purge_path.into(),
        ..identity.clone()
    })
}
