//! A fill: one origin request on behalf of every viewer waiting for a key, run in its own task
//! so that no viewer's disconnect cancels it. It revalidates a stale object (304 refreshes it),
//! decides whether the response may be stored and shared, streams the body to the waiting viewers
//! while keeping it, and stores it only when it arrived complete.
use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use http::{HeaderMap, HeaderName, StatusCode, header};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use super::{Edge, headers};
use crate::{
    cache::{
        Policy,
        cache_control::CacheControl,
        collapse::{BodyError, BodyReader, Flight, Phase, SharedBody, SharedResponse, StoredHead},
        freshness::{self, OriginFreshness, TtlPolicy},
        key,
        object::{CachedObject, Entry},
    },
    config::runtime::Runtime,
    metrics::{OriginLabels, OriginOutcomeLabels},
    origin::{Fetched, OriginError, OriginRequest},
};

/// Everything a fill needs, owned, since it outlives the request that started it.
pub(crate) struct FillJob {
    /// The primary key (the flight's key may be a `Vary` variant's).
    pub(crate) primary: String,
    pub(crate) purge_path: String,
    pub(crate) target: String,
    /// A GET with the forwarded headers; validators are added here for a revalidation.
    pub(crate) request: OriginRequest,
    /// The stale object being revalidated, and the key it is stored under.
    pub(crate) stale: Option<(Arc<CachedObject>, String)>,
    /// The stale object may be served if the origin answers 5xx.
    pub(crate) stale_on_error: bool,
    pub(crate) ttl: TtlPolicy,
    pub(crate) keep_set_cookie: bool,
    pub(crate) authorization_forwarded: bool,
    pub(crate) key_policy: edgefleet_config::CacheKey,
}

/// What the fill hands the request that started it.
pub(crate) enum Handoff {
    /// The response may not be shared: it is this viewer's alone.
    Pass(Fetched),
    /// A reader registered before the first byte, so the leader never misses the start of a
    /// body that is not kept.
    Reader(BodyReader),
}

/// Lands the flight however the fill ends, so the key never stays blocked.
struct Landing {
    edge: Arc<Edge>,
    flight: Arc<Flight>,
}

impl Drop for Landing {
    fn drop(&mut self) {
        self.edge.cache.flights.land(&self.flight);
    }
}

pub(crate) async fn run(
    edge: Arc<Edge>,
    runtime: Arc<Runtime>,
    flight: Arc<Flight>,
    job: FillJob,
    leader: oneshot::Sender<Handoff>,
) {
    let landing = Landing {
        edge: edge.clone(),
        flight: flight.clone(),
    };
    let mut request = job.request.clone();
    if let Some((stale, _)) = &job.stale {
        if let Some(etag) = stale.etag() {
            request.headers.insert(header::IF_NONE_MATCH, etag.clone());
        }
        if let Some(modified) = stale.headers.get(header::LAST_MODIFIED) {
            request
                .headers
                .insert(header::IF_MODIFIED_SINCE, modified.clone());
        }
    }
    let request_time = SystemTime::now();
    let started = Instant::now();
    let result = runtime.origins.send(&job.target, &request, None, true).await;
    record_origin(&edge, &result, started);
    let fetched = match result {
        Ok(fetched) => fetched,
        Err(e) => return flight.publish(Phase::Failed(e)),
    };
    let response_time = SystemTime::now();
    let status = fetched.response.status();

    if let Some((stale, stale_key)) = &job.stale {
        if status == StatusCode::NOT_MODIFIED {
            let headers =
                headers::response_for_storage(fetched.response.headers().clone(), job.keep_set_cookie);
            let origin = freshness_of(&headers);
            let age = freshness::initial_age(fetched.response.headers(), request_time, response_time);
            let refreshed = Arc::new(stale.refreshed(&headers, age, origin));
            edge.cache.store_fill(
                &flight,
                vec![(stale_key.clone(), Entry::Object(refreshed.clone()))],
            );
            return flight.publish(Phase::Ready(refreshed));
        }
        if job.stale_on_error && matches!(status.as_u16(), 500 | 502 | 503 | 504) {
            // Keep the stale object; every waiter serves it.
            return flight.publish(Phase::KeepStale);
        }
    }

    let (mut parts, body) = fetched.response.into_parts();
    // The origin's Age counts, though the stored headers drop it (it is recomputed when served).
    let initial_age = freshness::initial_age(&parts.headers, request_time, response_time);
    let headers = headers::response_for_storage(std::mem::take(&mut parts.headers), job.keep_set_cookie);
    let cc = CacheControl::parse(
        headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .map(|v| v.as_bytes()),
    );
    let origin = OriginFreshness::from_response(&headers, &cc);
    let class = freshness::status_class(status);
    let policy = Policy {
        ttl: job.ttl,
        stale_if_error: 0,
        error_responses: &runtime.error_responses,
    };
    let ttl = policy.ttl_for(class, status.as_u16(), &origin);
    let vary = vary_names(&headers);
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let has_validator = headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    // RFC 9111 §3.5: a response to a request with credentials is shared only when it says so.
    let credentials_ok =
        !job.authorization_forwarded || cc.public || cc.s_maxage.is_some() || cc.must_revalidate;
    let shareable = freshness::storable(class, &origin, ttl)
        && !matches!(vary, Vary::Any)
        && credentials_ok
        && (ttl > 0 || has_validator);
    if !shareable {
        drop(landing);
        parts.headers = headers;
        let _ = leader.send(Handoff::Pass(Fetched {
            response: http::Response::from_parts(parts, body),
            origin: fetched.origin,
        }));
        return flight.publish(Phase::Pass);
    }

    let (stored_key, vary) = match vary {
        Vary::Names(names) => (
            key::with_vary(&job.primary, &names, &job.request.headers, &job.key_policy),
            Some(names),
        ),
        Vary::None | Vary::Any => (job.primary.clone(), None),
    };
    let stored = StoredHead {
        stored_at: response_time,
        initial_age,
        origin,
        class,
        purge_path: job.purge_path.as_str().into(),
    };
    let shared = Arc::new(SharedResponse {
        status,
        headers,
        stored,
        stored_key,
        vary,
        content_length,
        body: Arc::new(SharedBody::default()),
    });
    if let Some(reader) = shared.body.reader(None) {
        let _ = leader.send(Handoff::Reader(reader));
    }
    let max_object = runtime.max_object_bytes;
    let mut retain = content_length.is_none_or(|len| len <= max_object);
    if !retain {
        shared.body.stop_retaining();
        edge.cache.flights.land(&flight);
    }
    flight.publish(Phase::Streaming(shared.clone()));

    let mut body = body;
    let mut stored = false;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => {
                tracing::info!(key = %job.primary, error = %e, "origin body failed; not stored");
                return shared.body.finish(Err(BodyError(e.to_string().into())));
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                edge.metrics.origin_bytes.inc_by(data.len() as u64);
                if retain && shared.body.received() + data.len() as u64 > max_object {
                    shared.body.stop_retaining();
                    edge.cache.flights.land(&flight);
                    retain = false;
                }
                let completes = content_length == Some(shared.body.received() + data.len() as u64);
                if retain
                    && completes
                    && let Some(bytes) = shared.body.collect_with(&data)
                {
                    // Viewers stop reading once they have Content-Length bytes, so the object is
                    // stored before the last bytes reach them: their next request finds it.
                    store(&edge, &flight, &job, &shared, bytes);
                    stored = true;
                }
                shared.body.push(data).await;
                if !retain && !shared.body.has_readers() {
                    // Nobody reads and nothing is stored: stop pulling from the origin.
                    return shared
                        .body
                        .finish(Err(BodyError("abandoned: no viewer left".into())));
                }
            }
        }
    }
    let received = shared.body.received();
    if let Some(expected) = content_length
        && received != expected
    {
        tracing::info!(key = %job.primary, received, expected, "origin body shorter than Content-Length; not stored");
        return shared.body.finish(Err(BodyError(
            format!("origin sent {received} of {expected} bytes").into(),
        )));
    }
    // Stored before the viewers see the end of the body, so a viewer's next request finds it.
    if retain
        && !stored
        && let Some(bytes) = shared.body.collect_with(&[])
    {
        store(&edge, &flight, &job, &shared, bytes);
    }
    shared.body.finish(Ok(()));
    drop(landing);
}

fn store(edge: &Edge, flight: &Arc<Flight>, job: &FillJob, shared: &SharedResponse, bytes: bytes::Bytes) {
    let response_time = shared.stored.stored_at;
    let object = Arc::new(shared.object(bytes));
    let mut entries = Vec::with_capacity(2);
    if let Some(names) = &shared.vary {
        entries.push((
            job.primary.clone(),
            Entry::Vary {
                names: names.clone(),
                purge_path: job.purge_path.as_str().into(),
                stored_at: response_time,
            },
        ));
    }
    entries.push((shared.stored_key.clone(), Entry::Object(object)));
    if edge.cache.store_fill(flight, entries) {
        // From now on the store answers: a request arriving before this fill's viewers have
        // finished reading is a Hit, not a follower of a fill that is already complete.
        edge.cache.flights.land(flight);
    } else {
        tracing::debug!(key = %job.primary, "purged while filling; not stored");
    }
}

fn freshness_of(headers: &HeaderMap) -> OriginFreshness {
    let cc = CacheControl::parse(
        headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .map(|v| v.as_bytes()),
    );
    OriginFreshness::from_response(headers, &cc)
}

enum Vary {
    None,
    /// `Vary: *`: never the same twice, so never stored.
    Any,
    Names(Arc<[HeaderName]>),
}

/// The request headers a response varies on. `Accept-Encoding` is left out: origins are asked
/// for identity and the edge keys its own compressed variants.
fn vary_names(headers: &HeaderMap) -> Vary {
    let mut names: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::VARY) {
        let Ok(value) = value.to_str() else { continue };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return Vary::Any;
            }
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes())
                && name != header::ACCEPT_ENCODING
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
    }
    if names.is_empty() {
        Vary::None
    } else {
        names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        Vary::Names(names.into())
    }
}

/// Origin request metrics: latency to the response head, outcome by status or failure.
pub(crate) fn record_origin(edge: &Edge, result: &Result<Fetched, OriginError>, started: Instant) {
    let (origin, outcome) = match result {
        Ok(f) => (f.origin.to_string(), f.response.status().as_str().to_owned()),
        Err(OriginError::Unreachable { origin, .. }) => (origin.to_string(), "unreachable".to_owned()),
        Err(OriginError::Timeout { origin, .. }) => (origin.to_string(), "timeout".to_owned()),
        Err(OriginError::Refused { .. }) => return,
    };
    edge.metrics
        .origin_duration
        .get_or_create(&OriginLabels {
            origin: origin.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    edge.metrics
        .origin_requests
        .get_or_create(&OriginOutcomeLabels { origin, outcome })
        .inc();
}

/// The key of the variant of a shared response that a viewer's headers select.
pub(crate) fn variant_key(
    primary: &str,
    shared: &SharedResponse,
    headers: &HeaderMap,
    key_policy: &edgefleet_config::CacheKey,
) -> String {
    match &shared.vary {
        Some(names) => key::with_vary(primary, names, headers, key_policy),
        None => primary.to_owned(),
    }
}
