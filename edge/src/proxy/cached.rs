//! GET and HEAD: the cache is asked (lookup, then fill on a miss or to revalidate) and its answer
//! is turned into the viewer's response, compressed when the viewer accepts it. How objects are
//! stored, shared and purged is the cache's business; this is the viewer's side of it.
//!
//! A viewer sending `X-Edgefleet-Debug: cache` gets a `Cache-Status` (RFC 9211) saying how the
//! edge handled the request: a hit, or what was forwarded and whether it was stored, with the
//! admission's reason when not.
//!
//! Tested through the binary: `tests/caching.rs`, `tests/http_semantics.rs`,
//! `tests/conformance.rs`.
use std::{
    fmt::Write as _,
    sync::{Arc, OnceLock},
    time::{Instant, SystemTime},
};

use bytes::{Bytes, BytesMut};
use edgefleet_config::ViewerCacheControl;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};

use super::{
    admission::Viewer,
    compress::{self, Encoding},
    errors, record_origin,
    respond::{self, Served},
};
use crate::{
    cache::{
        Ask, Filled, Found, Lookup,
        admission::NoStore,
        cache_control::ViewerDirectives,
        fill::{FillJob, FillRules, SharedResponse},
        freshness::{self, Policy},
        key::{self, KeyInput, Keyed},
        object::CachedObject,
        stream::{BodyReader, Source},
    },
    config::runtime::{Behavior, Runtime},
    metrics::{CacheResult, Metrics},
    origin::{Fetched, OriginError, OriginRequest},
    state::Edge,
};

/// The request header that asks for `Cache-Status`.
const DEBUG: HeaderName = HeaderName::from_static("x-edgefleet-debug");
const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// One request's view of the cache.
struct Ctx<'a> {
    edge: &'a Arc<Edge>,
    runtime: &'a Arc<Runtime>,
    behavior: &'a Behavior,
    viewer: &'a Viewer,
    keyed: Keyed,
    /// Built only when the origin is asked: hits never pay for it.
    source: OnceLock<Arc<OriginFetch>>,
}

/// How the edge handled a request, for `Cache-Status`.
enum Handling {
    Hit,
    StaleWhileRevalidate,
    StaleIfError,
    Refreshed,
    Forwarded {
        status: StatusCode,
        stored: Result<(), NoStore>,
    },
    OriginFailed,
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
    let ctx = Ctx {
        edge,
        runtime,
        behavior,
        viewer,
        keyed: key::build(input, &behavior.config.cache_key),
        source: OnceLock::new(),
    };
    let policy = behavior.policy(runtime);
    let ask = Ask {
        primary: &ctx.keyed.primary,
        headers: &viewer.headers,
        key_policy: &behavior.config.cache_key,
        policy: &policy,
    };
    let mut lookup = edge.cache.lookup(&ask).await;
    let asked = (behavior.config.viewer_cache_control == ViewerCacheControl::Honor)
        .then(|| ViewerDirectives::of(&viewer.headers));
    if let Some(asked) = &asked {
        lookup = match lookup {
            Lookup::Fresh(found) if !viewer_accepts(asked, &found.object, &policy) => Lookup::Stale {
                found,
                while_revalidate: false,
                if_error: false,
            },
            lookup => lookup,
        };
        let fresh = matches!(lookup, Lookup::Fresh(_));
        if asked.only_if_cached && !fresh {
            return errors::plain(
                StatusCode::GATEWAY_TIMEOUT,
                "only-if-cached: nothing fresh is stored for this request".to_owned(),
            );
        }
        if asked.no_store && !fresh {
            // RFC 9111 §5.2.1.5: nothing of this exchange is stored.
            return alone(&ctx, NoStore::Forbidden).await.0;
        }
    }
    let (mut served, handling) = match lookup {
        Lookup::Fresh(found) => (
            serve_object(&ctx, found.object, &found.key, CacheResult::Hit).await,
            Handling::Hit,
        ),
        Lookup::Stale {
            found,
            while_revalidate: true,
            ..
        } => {
            edge.cache
                .refresh_in_background(&found.key, ctx.job(Some(found.object.clone()), false));
            let served = serve_object(&ctx, found.object, &found.key, CacheResult::Hit).await;
            (served, Handling::StaleWhileRevalidate)
        }
        Lookup::Stale { found, if_error, .. } => {
            let job = ctx.job(Some(found.object.clone()), if_error);
            let filled = edge.cache.fill(&ask, &found.key, job).await;
            answer(&ctx, filled, Some(found)).await
        }
        Lookup::Miss { key } => {
            let filled = edge.cache.fill(&ask, &key, ctx.job(None, false)).await;
            answer(&ctx, filled, None).await
        }
    };
    if viewer
        .headers
        .get(DEBUG)
        .is_some_and(|v| v.as_bytes() == b"cache")
    {
        served
            .response
            .headers_mut()
            .insert(CACHE_STATUS, cache_status(&handling));
    }
    served
}

/// Whether a fresh stored object may answer a viewer who asked with these directives.
fn viewer_accepts(asked: &ViewerDirectives, object: &CachedObject, policy: &Policy<'_>) -> bool {
    let ttl = policy.ttl(object.status, &object.origin).unwrap_or(0);
    freshness::satisfies(asked, object.age(SystemTime::now()), ttl)
}

/// `Cache-Status` (RFC 9211) for a request's handling.
fn cache_status(handling: &Handling) -> HeaderValue {
    let mut value = String::from("edgefleet; ");
    let _ = match handling {
        Handling::Hit => write!(value, "hit"),
        Handling::StaleWhileRevalidate => write!(value, "hit; detail=\"stale-while-revalidate\""),
        Handling::StaleIfError => write!(value, "hit; fwd=stale; detail=\"stale-if-error\""),
        Handling::Refreshed => write!(value, "fwd=stale; fwd-status=304"),
        Handling::Forwarded { status, stored } => {
            let _ = write!(value, "fwd=miss; fwd-status={}", status.as_u16());
            match stored {
                Ok(()) => write!(value, "; stored"),
                Err(reason) => write!(value, "; detail=\"no-store: {}\"", reason.as_str()),
            }
        }
        Handling::OriginFailed => write!(value, "fwd=miss; detail=\"origin unavailable\""),
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("edgefleet"))
}

/// Turns what a fill gave into this viewer's response.
async fn answer(ctx: &Ctx<'_>, filled: Filled, stale: Option<Found>) -> (Served, Handling) {
    match filled {
        Filled::Streaming {
            shared,
            reader,
            set_cookie,
        } => {
            let handling = Handling::Forwarded {
                status: shared.status,
                stored: if shared.kept {
                    Ok(())
                } else {
                    Err(NoStore::TooLarge)
                },
            };
            let mut served = serve_streaming(ctx, shared, reader).await;
            with_cookies(&mut served, set_cookie);
            (served, handling)
        }
        Filled::Refreshed { object, set_cookie } => {
            let key = stale.map_or_else(|| ctx.keyed.primary.clone(), |found| found.key);
            let mut served = serve_object(ctx, object, &key, CacheResult::RefreshHit).await;
            with_cookies(&mut served, set_cookie);
            (served, Handling::Refreshed)
        }
        Filled::Stale => match stale {
            Some(found) => (
                serve_object(ctx, found.object, &found.key, CacheResult::Hit).await,
                Handling::StaleIfError,
            ),
            None => alone(ctx, NoStore::NoLifetime).await,
        },
        Filled::NotShared {
            reason,
            response: Some(fetched),
        } => {
            let status = fetched.response.status();
            (
                respond::from_origin(ctx.viewer, fetched),
                Handling::Forwarded {
                    status,
                    stored: Err(reason),
                },
            )
        }
        Filled::NotShared {
            reason,
            response: None,
        } => alone(ctx, reason).await,
        Filled::Failed(e) => (errors::origin_failed(&e), Handling::OriginFailed),
    }
}

/// Gives the viewer whose request fetched a response the cookies it set, which the stored copy
/// does not keep.
fn with_cookies(served: &mut Served, set_cookie: Vec<HeaderValue>) {
    for cookie in set_cookie {
        served.response.headers_mut().append(header::SET_COOKIE, cookie);
    }
}

/// The cache's view of a behavior's origin: the request a fill sends, again with extra headers
/// when the cache needs them.
struct OriginFetch {
    runtime: Arc<Runtime>,
    target: String,
    request: OriginRequest,
    metrics: Arc<Metrics>,
}

impl OriginFetch {
    async fn send(&self, extra: HeaderMap) -> Result<Fetched, OriginError> {
        let started = Instant::now();
        let result = if extra.is_empty() {
            self.runtime
                .origins
                .send(&self.target, &self.request, None, true)
                .await
        } else {
            let mut request = self.request.clone();
            request.headers.extend(extra);
            self.runtime
                .origins
                .send(&self.target, &request, None, true)
                .await
        };
        record_origin(&self.metrics, &result, started);
        result
    }
}

impl Source for OriginFetch {
    fn fetch(self: Arc<Self>, extra: HeaderMap) -> BoxFuture<'static, Result<Fetched, OriginError>> {
        Box::pin(async move { self.send(extra).await })
    }
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
        interim: viewer.interim.clone(),
    }
}

impl Ctx<'_> {
    fn source(&self) -> &Arc<OriginFetch> {
        self.source.get_or_init(|| {
            Arc::new(OriginFetch {
                runtime: self.runtime.clone(),
                target: self.behavior.config.target_origin.clone(),
                request: origin_request(self.behavior, self.viewer, &self.keyed),
                metrics: self.edge.metrics.clone(),
            })
        })
    }

    fn job(&self, stale: Option<Arc<CachedObject>>, stale_on_error: bool) -> FillJob {
        let source = self.source();
        FillJob {
            primary: self.keyed.primary.clone(),
            purge_path: self.keyed.purge_path.clone(),
            forwarded: source.request.headers.clone(),
            source: source.clone(),
            stale,
            stale_on_error,
            rules: FillRules {
                ttl: self.behavior.ttl,
                error_caching: self.behavior.config.error_caching,
                error_responses: self.runtime.error_responses.clone(),
                key_policy: self.behavior.config.cache_key.clone(),
                cache_set_cookie_responses: self.behavior.config.cache_set_cookie_responses,
                max_object_bytes: self.runtime.max_object_bytes,
            },
        }
    }
}

/// Serves this viewer from its own origin request, when the fill's response is not shared.
async fn alone(ctx: &Ctx<'_>, reason: NoStore) -> (Served, Handling) {
    match ctx.source().send(HeaderMap::new()).await {
        Ok(fetched) => {
            let status = fetched.response.status();
            (
                respond::from_origin(ctx.viewer, fetched),
                Handling::Forwarded {
                    status,
                    stored: Err(reason),
                },
            )
        }
        Err(e) => (errors::origin_failed(&e), Handling::OriginFailed),
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
    if compressible && shared.kept && encoding_for(ctx).is_some() {
        // Compression needs the whole body (at most 10 MB by the rule above): wait for it.
        return match complete(&shared, reader).await {
            Some(object) => serve_object(ctx, Arc::new(object), &shared.stored_key, CacheResult::Miss).await,
            None => alone(ctx, NoStore::BodyCutShort).await.0,
        };
    }
    match respond::from_shared(
        ctx.viewer,
        &shared,
        reader,
        CacheResult::Miss,
        Some(shared.initial_age),
    ) {
        Some(mut served) => {
            if compressible {
                vary_on_encoding(&mut served);
            }
            served
        }
        None => alone(ctx, NoStore::TooLarge).await.0,
    }
}

/// Reads a shared body to its end, as the object the fill is storing.
async fn complete(shared: &SharedResponse, reader: Option<BodyReader>) -> Option<CachedObject> {
    let mut reader = match reader {
        Some(reader) => reader,
        None => shared.body.reader(None, None)?,
    };
    let mut body = BytesMut::with_capacity(shared.content_length.unwrap_or(0) as usize);
    while let Some(piece) = reader.next().await {
        body.extend_from_slice(&piece.ok()?);
    }
    Some(shared.object(body.freeze()))
}

/// Serves the compressed variant, made once (collapsed) and stored on a miss.
async fn serve_compressed(
    ctx: &Ctx<'_>,
    identity: Arc<CachedObject>,
    key: &str,
    encoding: Encoding,
    cache: CacheResult,
) -> Served {
    let variant_key = key::with_encoding(key, encoding.token());
    let policy = ctx.behavior.policy(ctx.runtime);
    if let Lookup::Fresh(found) = ctx.edge.cache.lookup_key(&variant_key, &policy).await {
        return respond::from_object(ctx.viewer, &found.object, cache);
    }
    let made = ctx
        .edge
        .cache
        .derive(&variant_key, &identity, move |identity| {
            compressed_variant(identity, encoding)
        })
        .await;
    match made {
        Some(variant) => respond::from_object(ctx.viewer, &variant, cache),
        None => {
            let mut served = respond::from_object(ctx.viewer, &identity, cache);
            vary_on_encoding(&mut served);
            served
        }
    }
}

/// The compressed variant of an identity object: same freshness, weak ETag, new length.
fn compressed_variant(identity: &CachedObject, encoding: Encoding) -> std::io::Result<CachedObject> {
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
        ..identity.clone()
    })
}
