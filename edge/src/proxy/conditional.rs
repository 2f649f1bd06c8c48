//! Viewers' conditional requests answered from a cached object (RFC 9110 §13).
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, header};

use crate::cache::freshness::http_date;

/// Whether a GET/HEAD should get 304: `If-None-Match` (weak comparison) when present, else
/// `If-Modified-Since`.
pub(crate) fn not_modified(
    request: &HeaderMap,
    etag: Option<&HeaderValue>,
    last_modified: Option<SystemTime>,
) -> bool {
    if request.contains_key(header::IF_NONE_MATCH) {
        let Some(etag) = etag else { return false };
        return request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .any(|v| list_matches(v.as_bytes(), etag.as_bytes(), false));
    }
    match (
        request
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| http_date(v.as_bytes())),
        last_modified,
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// Whether `If-Range` lets a range be served: a strong ETag match, or the exact Last-Modified.
pub(crate) fn if_range_allows(
    request: &HeaderMap,
    etag: Option<&HeaderValue>,
    last_modified: Option<SystemTime>,
) -> bool {
    let Some(value) = request.get(header::IF_RANGE) else {
        return true;
    };
    let value = value.as_bytes();
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        return etag.is_some_and(|e| list_matches(value, e.as_bytes(), true));
    }
    matches!((http_date(value), last_modified), (Some(date), Some(modified)) if date == modified)
}

/// Whether a comma-separated entity-tag list (or `*`) matches `etag`.
fn list_matches(list: &[u8], etag: &[u8], strong: bool) -> bool {
    let list = trim(list);
    if list == b"*" {
        return true;
    }
    let (etag_weak, etag_opaque) = split_weak(trim(etag));
    if strong && etag_weak {
        return false;
    }
    list.split(|&b| b == b',').map(trim).any(|candidate| {
        let (weak, opaque) = split_weak(candidate);
        let comparable = !(strong && weak);
        comparable && !opaque.is_empty() && opaque == etag_opaque
    })
}

fn split_weak(tag: &[u8]) -> (bool, &[u8]) {
    match tag.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, tag),
    }
}

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn req(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    http::HeaderName::from_static(n),
                    HeaderValue::from_str(v).expect("value"),
                )
            })
            .collect()
    }

    #[test]
    fn if_none_match_uses_weak_comparison_and_wins_over_if_modified_since() {
        let etag = HeaderValue::from_static("\"v1\"");
        assert!(not_modified(
            &req(&[("if-none-match", "\"v0\", W/\"v1\"")]),
            Some(&etag),
            None
        ));
        assert!(not_modified(&req(&[("if-none-match", "*")]), Some(&etag), None));
        assert!(!not_modified(
            &req(&[("if-none-match", "\"v2\"")]),
            Some(&etag),
            None
        ));
        let now = SystemTime::now();
        let later = httpdate::fmt_http_date(now + Duration::from_secs(60));
        assert!(!not_modified(
            &req(&[("if-none-match", "\"v2\""), ("if-modified-since", &later)]),
            Some(&etag),
            Some(now)
        ));
    }

    #[test]
    fn if_modified_since() {
        let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let same = httpdate::fmt_http_date(modified);
        let earlier = httpdate::fmt_http_date(modified - Duration::from_secs(1));
        assert!(not_modified(
            &req(&[("if-modified-since", &same)]),
            None,
            Some(modified)
        ));
        assert!(!not_modified(
            &req(&[("if-modified-since", &earlier)]),
            None,
            Some(modified)
        ));
        assert!(!not_modified(
            &req(&[("if-modified-since", "garbage")]),
            None,
            Some(modified)
        ));
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let strong = HeaderValue::from_static("\"v1\"");
        let weak = HeaderValue::from_static("W/\"v1\"");
        assert!(if_range_allows(
            &req(&[("if-range", "\"v1\"")]),
            Some(&strong),
            None
        ));
        assert!(!if_range_allows(
            &req(&[("if-range", "\"v1\"")]),
            Some(&weak),
            None
        ));
        assert!(!if_range_allows(
            &req(&[("if-range", "\"v2\"")]),
            Some(&strong),
            None
        ));
        assert!(if_range_allows(&HeaderMap::new(), None, None));
    }
}
