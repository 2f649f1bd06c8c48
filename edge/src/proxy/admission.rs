//! What a viewer's request must satisfy before anything else happens: size limits, a host this
//! distribution serves, a path that cannot escape (no dot segments, raw or encoded). The result is
//! a normalized [`Viewer`] request: one spelling of the path for behaviors, keys and the origin.
use std::net::SocketAddr;

use http::{HeaderMap, Method, Version, header, request::Parts};
use percent_encoding::percent_decode_str;

use crate::{cache::key::normalize_encoding, config::runtime::Runtime, origin::Interim};

/// What the connection's smuggling guard concluded about a request's raw head, before hyper
/// parsed it (see `server::sniff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Clean,
    /// Serve it, then close the connection (its body was not followed).
    CloseAfter,
    /// Refuse it with 400 and close.
    Smuggling(&'static str),
}

/// A request that passed admission.
pub(crate) struct Viewer {
    pub(crate) method: Method,
    pub(crate) version: Version,
    /// Lowercase, without port or trailing dot.
    pub(crate) host: String,
    /// Percent-encodings normalized (RFC 3986 §6.2.2), the default root object applied.
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) client: SocketAddr,
    /// Where the origin's interim (1xx) responses go; never for HTTP/1.0 viewers (RFC 9110 §15.2).
    pub(crate) interim: Option<Interim>,
}

/// Why a request is refused before routing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    UriTooLong,
    HeadersTooLarge,
    BadRequest(&'static str),
    UnknownHost(String),
}

pub(crate) fn admit(
    parts: Parts,
    runtime: &Runtime,
    client: SocketAddr,
    interim: Option<Interim>,
) -> Result<Viewer, Rejection> {
    let target_len = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > runtime.limits.max_url_bytes {
        return Err(Rejection::UriTooLong);
    }
    let head_len: usize = target_len
        + parts.method.as_str().len()
        + 12
        + parts
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head_len > runtime.limits.max_header_bytes {
        return Err(Rejection::HeadersTooLarge);
    }
    // A body on GET/HEAD has no meaning here; a chunked one is a classic smuggling carrier.
    if matches!(parts.method, Method::GET | Method::HEAD)
        && parts.headers.contains_key(header::TRANSFER_ENCODING)
    {
        return Err(Rejection::BadRequest(
            "GET and HEAD requests must not carry a chunked body",
        ));
    }
    if parts.headers.get_all(header::HOST).iter().count() > 1 {
        return Err(Rejection::BadRequest("more than one Host header"));
    }
    let raw_host = match parts.uri.authority() {
        // Absolute-form targets carry the host, which then wins over the Host header.
        Some(authority) => authority.host().to_owned(),
        None => match parts.headers.get(header::HOST).map(|h| h.to_str()) {
            Some(Ok(h)) => h.to_owned(),
            Some(Err(_)) => return Err(Rejection::BadRequest("the Host header is not valid text")),
            None if parts.version == Version::HTTP_10 => String::new(),
            None => return Err(Rejection::BadRequest("missing Host header")),
        },
    };
    let host = normalize_host(&raw_host).ok_or(Rejection::BadRequest("invalid Host header"))?;
    if !runtime.serves_host(&host) {
        return Err(Rejection::UnknownHost(host));
    }
    let path = parts.uri.path();
    if !path.starts_with('/') {
        return Err(Rejection::BadRequest(
            "the request target must be an absolute path",
        ));
    }
    if escapes(path) {
        return Err(Rejection::BadRequest(
            "the path has dot segments or forbidden characters",
        ));
    }
    let path = match (&runtime.default_root_object, path) {
        (Some(root), "/") => root.clone(),
        _ => normalize_encoding(path).into_owned(),
    };
    let query = parts.uri.query().map(str::to_owned);
    Ok(Viewer {
        method: parts.method,
        interim: interim.filter(|_| parts.version != Version::HTTP_10),
        version: parts.version,
        host,
        path,
        query,
        headers: parts.headers,
        client,
    })
}

/// `Host` without port and trailing dot, lowercase; `None` if it is not a host name or address.
pub(crate) fn normalize_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // [IPv6]:port
        let end = rest.find(']')?;
        &raw[..end + 2]
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                raw
            }
        })
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    valid.then_some(host)
}

/// Whether a path has `.`/`..` segments (raw or percent-encoded, with `/` or `\` separators),
/// NUL or other control characters: such a path never reaches an origin.
pub(crate) fn escapes(path: &str) -> bool {
    let decoded = percent_decode_str(path).collect::<Vec<u8>>();
    if decoded.iter().any(|b| b.is_ascii_control()) {
        return true;
    }
    let dot_segment = |p: &[u8]| {
        p.split(|&b| b == b'/' || b == b'\\')
            .any(|s| s == b"." || s == b"..")
    };
    dot_segment(path.as_bytes()) || dot_segment(&decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("Example.COM:8080").as_deref(), Some("example.com"));
        assert_eq!(normalize_host("example.com.").as_deref(), Some("example.com"));
        assert_eq!(normalize_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("bad host"), None);
        assert_eq!(normalize_host(""), None);
    }

    #[test]
    fn traversal_in_any_spelling_is_caught() {
        for bad in [
            "/a/../b",
            "/..",
            "/a/%2e%2e/b",
            "/a/%2E./b",
            "/a%2f..%2fb",
            "/a\\..\\b",
            "/a/./b",
            "/a%00",
            "/%0d%0a",
        ] {
            assert!(escapes(bad), "{bad}");
        }
        for good in ["/", "/a/b.c", "/a..b/", "/...", "/a/.well-known/x", "/%20"] {
            assert!(!escapes(good), "{good}");
        }
    }
}
