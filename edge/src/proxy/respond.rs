//! Viewer responses built from what the cache or the origin produced: conditionals answered with
//! 304, ranges with 206/416, HEAD without a body. `X-Cache`, `Age`, `Via` and `X-Edge-Location`
//! are added last, by the request path.
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures::TryStreamExt;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::BodyExt;

use super::{
    admission::Viewer,
    body::{Body, BoxError},
    conditional,
    range::{self, RangeAnswer},
};
use crate::{
    cache::{fill::SharedResponse, freshness::http_date, object::CachedObject, stream::BodyReader},
    metrics::CacheResult,
    origin::{Fetched, strip_hop_by_hop},
};

/// A response and what `finish` needs to label it.
pub(crate) struct Served {
    pub(crate) response: Response<Body>,
    pub(crate) cache: CacheResult,
    pub(crate) age: Option<Duration>,
}

impl Served {
    pub(crate) fn new(response: Response<Body>, cache: CacheResult) -> Self {
        Self {
            response,
            cache,
            age: None,
        }
    }
}

/// Headers a 304 repeats from the full response (RFC 9110 §15.4.5).
const NOT_MODIFIED_HEADERS: [header::HeaderName; 6] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
];

fn not_modified(headers: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    for name in NOT_MODIFIED_HEADERS {
        for value in headers.get_all(&name) {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
}

fn last_modified(headers: &HeaderMap) -> Option<SystemTime> {
    headers
        .get(header::LAST_MODIFIED)
        .and_then(|v| http_date(v.as_bytes()))
}

/// What a complete body answers to the viewer's conditionals and range.
enum Shape {
    NotModified,
    Whole,
    Part { first: u64, last: u64 },
    Unsatisfiable,
}

fn shape(viewer: &Viewer, status: StatusCode, headers: &HeaderMap, len: Option<u64>) -> Shape {
    if status != StatusCode::OK {
        return Shape::Whole;
    }
    let etag = headers.get(header::ETAG);
    let modified = last_modified(headers);
    if conditional::not_modified(&viewer.headers, etag, modified) {
        return Shape::NotModified;
    }
    let (Some(range), Some(len)) = (viewer.headers.get(header::RANGE), len) else {
        return Shape::Whole;
    };
    if viewer.method != Method::GET || !conditional::if_range_allows(&viewer.headers, etag, modified) {
        return Shape::Whole;
    }
    match range::answer(range.as_bytes(), len) {
        RangeAnswer::Full => Shape::Whole,
        RangeAnswer::Partial { first, last } => Shape::Part { first, last },
        RangeAnswer::Unsatisfiable => Shape::Unsatisfiable,
    }
}

fn with_headers(status: StatusCode, headers: &HeaderMap, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers.clone();
    response
}

fn set_length(response: &mut Response<Body>, len: u64) {
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

fn unsatisfiable(len: u64) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    let range =
        HeaderValue::from_str(&format!("bytes */{len}")).unwrap_or(HeaderValue::from_static("bytes */0"));
    response.headers_mut().insert(header::CONTENT_RANGE, range);
    set_length(&mut response, 0);
    response
}

fn partial_headers(response: &mut Response<Body>, first: u64, last: u64, len: u64) {
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    set_length(response, last - first + 1);
}

/// A response from a complete stored object.
pub(crate) fn from_object(viewer: &Viewer, object: &CachedObject, cache: CacheResult) -> Served {
    from_parts(
        viewer,
        object.status,
        &object.headers,
        &object.body,
        cache,
        Some(object.age(SystemTime::now())),
    )
}

/// A response from complete headers and body (a stored object or a compressed variant).
pub(crate) fn from_parts(
    viewer: &Viewer,
    status: StatusCode,
    headers: &HeaderMap,
    body: &Bytes,
    cache: CacheResult,
    age: Option<Duration>,
) -> Served {
    let len = body.len() as u64;
    let head = viewer.method == Method::HEAD;
    let response = match shape(viewer, status, headers, Some(len)) {
        Shape::NotModified => not_modified(headers),
        Shape::Unsatisfiable => unsatisfiable(len),
        Shape::Part { first, last } => {
            let part = if head {
                Body::empty()
            } else {
                Body::full(body.slice(first as usize..=last as usize))
            };
            let mut response = with_headers(status, headers, part);
            partial_headers(&mut response, first, last, len);
            response
        }
        Shape::Whole => {
            let mut response = with_headers(
                status,
                headers,
                if head {
                    Body::empty()
                } else {
                    Body::full(body.clone())
                },
            );
            set_length(&mut response, len);
            response
        }
    };
    Served { response, cache, age }
}

/// A response that follows a fill as it streams in. `None` when the shared body can no longer be
/// joined from the start (the caller then fetches on its own).
pub(crate) fn from_shared(
    viewer: &Viewer,
    shared: &Arc<SharedResponse>,
    reader: Option<BodyReader>,
    cache: CacheResult,
    age: Option<Duration>,
) -> Option<Served> {
    let reader = |range: Option<(u64, u64)>| match reader {
        Some(r) => Some(r.limit(range)),
        None => shared.body.reader(range, Some(shared.resume.clone())),
    };
    let head = viewer.method == Method::HEAD;
    let len = shared.content_length;
    let response = match shape(viewer, shared.status, &shared.headers, len) {
        Shape::NotModified => not_modified(&shared.headers),
        Shape::Unsatisfiable => unsatisfiable(len.unwrap_or(0)),
        Shape::Part { first, last } => {
            let body = if head {
                Body::empty()
            } else {
                Body::shared(reader(Some((first, last)))?)
            };
            let mut response = with_headers(shared.status, &shared.headers, body);
            partial_headers(&mut response, first, last, len.unwrap_or(0));
            response
        }
        Shape::Whole => {
            let body = if head {
                Body::empty()
            } else {
                Body::shared(reader(None)?)
            };
            let mut response = with_headers(shared.status, &shared.headers, body);
            if let Some(len) = len {
                set_length(&mut response, len);
            }
            response
        }
    };
    Some(Served { response, cache, age })
}

/// An origin response for this viewer alone, passed through unchanged (uncacheable, or a method
/// other than GET and HEAD): its `Set-Cookie` included.
pub(crate) fn from_origin(viewer: &Viewer, fetched: Fetched) -> Served {
    let (mut parts, body) = fetched.response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let cache = if parts.status.is_client_error() || parts.status.is_server_error() {
        CacheResult::Error
    } else {
        CacheResult::Miss
    };
    let body = if viewer.method == Method::HEAD {
        Body::empty()
    } else {
        Body::stream(body.into_data_stream().map_err(|e| Box::new(e) as BoxError))
    };
    Served::new(Response::from_parts(parts, body), cache)
}
