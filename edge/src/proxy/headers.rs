//! Header hygiene between viewer, edge and origin.
use http::{HeaderMap, HeaderName, header};

/// Hop-by-hop headers (RFC 9110 §7.6.1), plus those a `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// The headers an origin response is stored and served with.
pub(crate) fn response_for_storage(mut headers: HeaderMap, keep_set_cookie: bool) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    headers.remove(header::AGE);
    if !keep_set_cookie {
        // Like CloudFront: without cookies in the cache key the origin never saw any, and a
        // cookie it sets must not be handed to every viewer of a shared object.
        headers.remove(header::SET_COOKIE);
    }
    headers
}
