//! A fill: one origin request on behalf of every viewer waiting for a key, run in its own task so
//! that no viewer's disconnect cancels it.
//!
//! It revalidates a stale object when there is one (a 304 refreshes it), asks
//! [`admission::decide`] whether the response may be stored and shared, streams the body to the
//! waiting viewers while keeping it, and stores it only when it arrived complete and no purge
//! matched it meanwhile. A response that may not be shared goes to the viewer whose request
//! started the fill, and the others fetch on their own.
//!
//! When the fill revalidates an object that may be served stale if the origin fails, the new body
//! is held back until it is complete (it is at most `maxObjectBytes`, being storable): a body the
//! origin cuts short then leaves the viewers with the stale object, not with a truncated one.
//!
//! Tested through the binary (`tests/fills.rs`, `tests/resilience.rs`, `tests/purges.rs`) and
//! with the cache alone by the linearizability property (`linearizability.rs`).
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use edgefleet_config::{CacheKey as KeyPolicy, ErrorCaching, ErrorResponse};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use super::{
    Cache,
    admission::{self, Admission, NoStore, Rules},
    collapse::Lead,
    freshness::{self, OriginFreshness, Policy, TtlPolicy},
    key,
    object::{CachedObject, Entry},
    stream::{BodyError, BodyReader, Resume, SharedBody, Source},
};
use crate::origin::{Fetched, OriginError, strip_hop_by_hop};

/// Everything a fill needs, owned, since it outlives the request that started it.
#[derive(Clone)]
pub(crate) struct FillJob {
    /// The primary key (the flight's key may be a `Vary` variant's).
    pub(crate) primary: String,
    pub(crate) purge_path: String,
    pub(crate) source: Arc<dyn Source>,
    /// The request headers the origin receives: the key of a `Vary` variant is built from them.
    pub(crate) forwarded: HeaderMap,
    /// The stale object being revalidated.
    pub(crate) stale: Option<Arc<CachedObject>>,
    /// The stale object may be served if the origin fails.
    pub(crate) stale_on_error: bool,
    pub(crate) rules: FillRules,
}

/// The behavior's rules, owned.
#[derive(Clone)]
pub(crate) struct FillRules {
    pub(crate) ttl: TtlPolicy,
    pub(crate) error_caching: ErrorCaching,
    pub(crate) error_responses: Arc<HashMap<u16, ErrorResponse>>,
    pub(crate) key_policy: KeyPolicy,
    pub(crate) cache_set_cookie_responses: bool,
    pub(crate) max_object_bytes: u64,
}

/// What a fill published, as every viewer waiting for it sees it.
#[derive(Clone)]
pub(crate) enum Outcome {
    /// A response being stored (or, too large to store, streaming through): read its body.
    Streaming(Arc<SharedResponse>),
    /// A complete object: a stale one refreshed by a 304, or a derived variant.
    Ready(Arc<CachedObject>),
    /// The origin failed a revalidation: serve the stale object.
    KeepStale,
    /// The response may not be shared: the viewer that started the fill has it, the others fetch
    /// on their own.
    NotShared(NoStore),
    /// No response from the origin.
    Failed(OriginError),
}

/// What the fill hands the request that started it, besides the outcome.
pub(crate) enum Handoff {
    /// The response that may not be shared.
    Response(Fetched),
    /// A reader registered before the first byte, so the leader never misses the start of a
    /// body that is not kept; and the `Set-Cookie` lines kept out of the stored copy.
    Reader(BodyReader, Vec<HeaderValue>),
    /// The `Set-Cookie` lines of a 304, kept out of the refreshed object.
    Cookies(Vec<HeaderValue>),
}

/// A response being received from the origin and shared with every waiting viewer.
pub(crate) struct SharedResponse {
    pub(crate) status: StatusCode,
    /// As stored: without hop-by-hop headers, `Age` (recomputed when served) and `Set-Cookie`.
    pub(crate) headers: HeaderMap,
    /// The key the object will be stored under (primary, or extended by `Vary`).
    pub(crate) stored_key: String,
    /// The `Vary` header names, when the response had them.
    pub(crate) vary: Option<Arc<[HeaderName]>>,
    /// The body length announced by the origin.
    pub(crate) content_length: Option<u64>,
    /// The object fits `maxObjectBytes` and will be stored if it arrives complete.
    pub(crate) kept: bool,
    pub(crate) initial_age: Duration,
    pub(crate) body: Arc<SharedBody>,
    pub(crate) resume: Arc<Resume>,
    stored_at: SystemTime,
    origin: OriginFreshness,
    purge_path: Box<str>,
    epoch: u64,
}

impl SharedResponse {
    /// The object this response becomes with its complete body.
    pub(crate) fn object(&self, body: Bytes) -> CachedObject {
        CachedObject {
            status: self.status,
            headers: self.headers.clone(),
            body,
            stored_at: self.stored_at,
            initial_age: self.initial_age,
            origin: self.origin,
            purge_path: self.purge_path.clone(),
            epoch: self.epoch,
        }
    }

    /// The key of the variant a viewer's headers select.
    pub(crate) fn variant_for(&self, primary: &str, headers: &HeaderMap, key_policy: &KeyPolicy) -> String {
        match &self.vary {
            Some(names) => key::with_vary(primary, names, headers, key_policy),
            None => primary.to_owned(),
        }
    }
}

/// Lands the flight however the fill ends, so the key never stays blocked; dropping the lead
/// without an outcome releases the followers.
pub(super) struct Landing {
    pub(super) cache: Arc<Cache>,
    pub(super) lead: Lead<Outcome>,
}

impl Drop for Landing {
    fn drop(&mut self) {
        self.cache.flights.land(self.lead.flight());
    }
}

impl Landing {
    fn land(&self) {
        self.cache.flights.land(self.lead.flight());
    }
}

pub(super) async fn run(landing: Landing, job: FillJob, leader: oneshot::Sender<Handoff>) {
    let cache = landing.cache.clone();
    let epoch = cache.purges.epoch();
    let mut validators = HeaderMap::new();
    if let Some(stale) = &job.stale {
        if let Some(etag) = stale.etag() {
            validators.insert(header::IF_NONE_MATCH, etag.clone());
        }
        if let Some(modified) = stale.headers.get(header::LAST_MODIFIED) {
            validators.insert(header::IF_MODIFIED_SINCE, modified.clone());
        }
    }
    let request_time = SystemTime::now();
    let fetched = match job.source.clone().fetch(validators).await {
        Ok(fetched) => fetched,
        Err(e) if job.stale.is_some() && job.stale_on_error => {
            tracing::debug!(key = %job.primary, error = %e, "serving stale: the origin failed");
            return landing.lead.publish(Outcome::KeepStale);
        }
        Err(e) => return landing.lead.publish(Outcome::Failed(e)),
    };
    let response_time = SystemTime::now();
    let status = fetched.response.status();
    let (mut parts, body) = fetched.response.into_parts();
    // The origin's Age counts, though the stored headers drop it (it is recomputed when served).
    let initial_age = freshness::initial_age(&parts.headers, request_time, response_time);
    let upstream_age = parts.headers.get(header::AGE).cloned();
    let mut headers = storage_headers(std::mem::take(&mut parts.headers));
    let errors = job.rules.error_responses.clone();
    let policy = Policy {
        ttl: job.rules.ttl,
        stale_if_error: 0,
        error_caching: job.rules.error_caching,
        error_responses: &errors,
    };

    if let Some(stale) = &job.stale {
        if status == StatusCode::NOT_MODIFIED {
            let set_cookie = headers.get_all(header::SET_COOKIE).iter().cloned().collect();
            let _ = leader.send(Handoff::Cookies(set_cookie));
            let refreshed = Arc::new(stale.refreshed(&headers, initial_age, epoch));
            let content = refreshed.provenance();
            let entry = Entry::Object(refreshed.clone());
            let stored = cache.store_fill(&content, vec![(landing.lead.flight().key().to_owned(), entry)]);
            cache.count(if stored { Ok(()) } else { Err(NoStore::Purged) });
            return landing.lead.publish(Outcome::Ready(refreshed));
        }
        if job.stale_on_error && matches!(status.as_u16(), 500 | 502 | 503 | 504) {
            return landing.lead.publish(Outcome::KeepStale);
        }
    }

    let rules = Rules {
        policy: &policy,
        authorization_forwarded: job.forwarded.contains_key(header::AUTHORIZATION),
        cache_set_cookie_responses: job.rules.cache_set_cookie_responses,
    };
    let storable = match admission::decide(status, &headers, &rules) {
        Admission::Store(storable) => storable,
        Admission::NoStore(reason) => {
            cache.count(Err(reason));
            landing.land();
            parts.headers = headers;
            // Passed on as it came: its Age too.
            if let Some(age) = upstream_age {
                parts.headers.insert(header::AGE, age);
            }
            let response = http::Response::from_parts(parts, body);
            let _ = leader.send(Handoff::Response(Fetched {
                response,
                origin: fetched.origin,
            }));
            return landing.lead.publish(Outcome::NotShared(reason));
        }
    };

    let set_cookie: Vec<HeaderValue> = if storable.strip_set_cookie {
        headers.get_all(header::SET_COOKIE).iter().cloned().collect()
    } else {
        Vec::new()
    };
    headers.remove(header::SET_COOKIE);
    let stored_key = match &storable.vary {
        Some(names) => key::with_vary(&job.primary, names, &job.forwarded, &job.rules.key_policy),
        None => job.primary.clone(),
    };
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let max_object = job.rules.max_object_bytes;
    let mut keep = content_length.is_none_or(|len| len <= max_object);
    let resume = Arc::new(Resume::new(job.source.clone(), &headers, content_length));
    let shared = Arc::new(SharedResponse {
        status,
        headers,
        stored_key,
        vary: storable.vary,
        content_length,
        kept: keep,
        initial_age,
        body: Arc::new(SharedBody::default()),
        resume: resume.clone(),
        stored_at: response_time,
        origin: storable.origin,
        purge_path: job.purge_path.as_str().into(),
        epoch,
    });
    if let Some(reader) = shared.body.reader(None, Some(resume)) {
        let _ = leader.send(Handoff::Reader(reader, set_cookie));
    }
    if !keep {
        shared.body.stop_keeping();
        landing.land();
        cache.count(Err(NoStore::TooLarge));
    }
    // A revalidation that may fall back on the stale object shows the new body only once whole.
    let mut held_back = keep && job.stale.is_some() && job.stale_on_error;
    if !held_back {
        landing.lead.publish(Outcome::Streaming(shared.clone()));
    }

    let mut body = body;
    let mut stored = false;
    let cut_short = |why: String| {
        tracing::info!(key = %job.primary, reason = %why, "origin body cut short; not stored");
        shared.body.finish(Err(BodyError(why.into())));
    };
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => {
                cut_short(e.to_string());
                if keep {
                    cache.count(Err(NoStore::BodyCutShort));
                }
                if held_back {
                    landing.lead.publish(Outcome::KeepStale);
                }
                return;
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                cache.metrics.origin_bytes.inc_by(data.len() as u64);
                let received = shared.body.received() + data.len() as u64;
                if keep && received > max_object {
                    shared.body.stop_keeping();
                    landing.land();
                    cache.count(Err(NoStore::TooLarge));
                    keep = false;
                    if held_back {
                        held_back = false;
                        landing.lead.publish(Outcome::Streaming(shared.clone()));
                    }
                }
                if keep
                    && content_length == Some(received)
                    && let Some(bytes) = shared.body.collect_with(&data)
                {
                    // Viewers stop reading once they have Content-Length bytes, so the object is
                    // stored before the last bytes reach them: their next request finds it.
                    stored = store(&landing, &job, &shared, bytes);
                }
                shared.body.push(data).await;
                if !keep && !shared.body.has_readers() {
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
        cut_short(format!("origin sent {received} of {expected} bytes"));
        if keep {
            cache.count(Err(NoStore::BodyCutShort));
        }
        if held_back {
            landing.lead.publish(Outcome::KeepStale);
        }
        return;
    }
    if keep
        && !stored
        && let Some(bytes) = shared.body.collect_with(&[])
    {
        store(&landing, &job, &shared, bytes);
    }
    if held_back {
        landing.lead.publish(Outcome::Streaming(shared.clone()));
    }
    shared.body.finish(Ok(()));
}

/// Stores a complete response unless a purge matched it meanwhile; returns whether it did.
fn store(landing: &Landing, job: &FillJob, shared: &SharedResponse, bytes: Bytes) -> bool {
    let object = Arc::new(shared.object(bytes));
    let mut entries = Vec::with_capacity(2);
    if let Some(names) = &shared.vary {
        entries.push((
            job.primary.clone(),
            Entry::Vary {
                names: names.clone(),
                purge_path: job.purge_path.as_str().into(),
                stored_at: shared.stored_at,
            },
        ));
    }
    entries.push((shared.stored_key.clone(), Entry::Object(object.clone())));
    let stored = landing.cache.store_fill(&object.provenance(), entries);
    if stored {
        // From now on the store answers: a request arriving before this fill's viewers have
        // finished reading is a Hit, not a follower of a fill that is already complete.
        landing.land();
        landing.cache.count(Ok(()));
    } else {
        tracing::debug!(key = %job.primary, "purged while filling; not stored");
        landing.cache.count(Err(NoStore::Purged));
    }
    stored
}

/// The headers a response is stored and shared with: without hop-by-hop headers and `Age`.
fn storage_headers(mut headers: HeaderMap) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    headers.remove(header::AGE);
    headers
}
