//! Responses the edge makes itself (refusals, 502/504 naming the reason) and custom error pages.
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::BodyExt;

use super::{
    admission::{Rejection, Viewer},
    body::Body,
    cached,
    respond::Served,
};
use crate::{
    config::runtime::{Behavior, Runtime},
    metrics::CacheResult,
    origin::OriginError,
    state::Edge,
};

/// A short plain-text response; edge-made responses are never cached downstream.
pub(crate) fn plain(status: StatusCode, message: String) -> Served {
    let body = format!("edgefleet: {message}\n");
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Served::new(response, CacheResult::Error)
}

pub(crate) fn rejection(rejection: Rejection, runtime: &Runtime) -> Served {
    match rejection {
        Rejection::UriTooLong => plain(
            StatusCode::URI_TOO_LONG,
            format!(
                "the request target is longer than {} bytes",
                runtime.limits.max_url_bytes
            ),
        ),
        Rejection::HeadersTooLarge => plain(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request head is larger than {} bytes",
                runtime.limits.max_header_bytes
            ),
        ),
        Rejection::BadRequest(why) => plain(StatusCode::BAD_REQUEST, format!("bad request: {why}")),
        Rejection::UnknownHost(host) => plain(
            StatusCode::NOT_FOUND,
            format!("no distribution here serves host {host:?}"),
        ),
    }
}

pub(crate) fn method_not_allowed(method: &Method, behavior: &Behavior) -> Served {
    let mut served = plain(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed here (allowed: {})",
            behavior.allow_header()
        ),
    );
    if let Ok(allow) = HeaderValue::from_str(&behavior.allow_header()) {
        served.response.headers_mut().insert(header::ALLOW, allow);
    }
    served
}

/// 502 when the origin is unreachable, 504 when it timed out, each naming the reason.
pub(crate) fn origin_failed(error: &OriginError) -> Served {
    plain(error.status(), error.to_string())
}

/// Replaces an error response by the configured page, fetched through the cache like any
/// object, with the configured status. Without a configured page, or when the page itself cannot
/// be had, the original response stands.
pub(crate) async fn custom_page(
    edge: &Arc<Edge>,
    runtime: &Arc<Runtime>,
    viewer: &Viewer,
    served: Served,
) -> Served {
    let status = served.response.status();
    let Some(config) = runtime.error_responses.get(&status.as_u16()) else {
        return served;
    };
    let Some(page_path) = &config.response_page_path else {
        return served;
    };
    let page_viewer = Viewer {
        method: Method::GET,
        version: viewer.version,
        host: viewer.host.clone(),
        path: page_path.clone(),
        query: None,
        headers: viewer
            .headers
            .iter()
            .filter(|(name, _)| {
                !matches!(
                    name.as_str(),
                    "range" | "if-range" | "if-none-match" | "if-modified-since" | "accept-encoding"
                )
            })
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect(),
        client: viewer.client,
        interim: None,
    };
    let behavior = runtime.behavior_for(page_path);
    let page = cached::serve(edge, runtime, behavior, &page_viewer).await;
    if page.response.status() != StatusCode::OK {
        tracing::warn!(page = %page_path, status = %page.response.status(), "custom error page unavailable");
        return served;
    }
    let (mut parts, body) = page.response.into_parts();
    let Ok(collected) = body.collect().await else {
        return served;
    };
    let bytes: Bytes = collected.to_bytes();
    parts.status = config
        .response_code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(status);
    parts.headers.remove(header::CONTENT_RANGE);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let body = if viewer.method == Method::HEAD {
        Body::empty()
    } else {
        Body::full(bytes)
    };
    Served {
        response: Response::from_parts(parts, body),
        cache: CacheResult::Error,
        age: served.age,
    }
}
