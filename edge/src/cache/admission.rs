//! Whether a response from the origin may be stored and shared with other viewers: one pure
//! decision, [`decide`], from the response's status and headers, the request's credentials and the
//! behavior's policy. Its answer is [`Admission::Store`] with what storing needs, or
//! [`Admission::NoStore`] with the [`NoStore`] reason, which the fill counts in metrics
//! (`edgefleet_edge_cache_admissions_total`) and reports in `Cache-Status` when a viewer asks.
//! Reasons found later, while the body streams (too large, cut short, purged), are [`NoStore`]
//! values too.
//!
//! Tested here: each reason, and the precedence between them.
use std::sync::Arc;

use http::{HeaderMap, HeaderName, StatusCode, header};

use super::{
    cache_control::Directives,
    freshness::{OriginFreshness, Policy},
};

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum NoStore {
    /// 206, 304, 416 and 1xx are never stored, nor with `must-understand` a status without
    /// standard semantics.
    Status,
    /// `no-store` with the behavior's min TTL at 0.
    Forbidden,
    /// `private` with the behavior's min TTL at 0.
    Private,
    /// `no-cache` with the behavior's min TTL at 0.
    NoCache,
    /// No freshness where the status needs one, or a TTL of 0 without a validator to revalidate.
    NoLifetime,
    /// The request carried credentials and the response does not say it may be shared
    /// (`public`, `s-maxage` or `must-revalidate`), RFC 9111 §3.5.
    Authorization,
    /// `Vary: *`: no later request can match it.
    VaryAll,
    /// The response sets a cookie and the behavior does not store such responses.
    SetCookie,
    /// The body is larger than `cache.maxObjectBytes`.
    TooLarge,
    /// The origin's body ended before its `Content-Length`, or failed.
    BodyCutShort,
    /// A purge matched the object while it was being fetched.
    Purged,
}

impl NoStore {
    /// The reason's name in metrics and in `Cache-Status`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NoStore::Status => "status",
            NoStore::Forbidden => "no-store",
            NoStore::Private => "private",
            NoStore::NoCache => "no-cache",
            NoStore::NoLifetime => "no-lifetime",
            NoStore::Authorization => "authorization",
            NoStore::VaryAll => "vary-all",
            NoStore::SetCookie => "set-cookie",
            NoStore::TooLarge => "too-large",
            NoStore::BodyCutShort => "body-cut-short",
            NoStore::Purged => "purged",
        }
    }
}

/// What storing a response needs besides its status and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Storable {
    pub(crate) origin: OriginFreshness,
    /// The request headers the response varies on (sorted, without `Accept-Encoding`).
    pub(crate) vary: Option<Arc<[HeaderName]>>,
    /// The stored copy drops the response's `Set-Cookie` (the behavior stores such responses).
    pub(crate) strip_set_cookie: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    Store(Storable),
    NoStore(NoStore),
}

/// What the decision needs to know besides the response.
pub(crate) struct Rules<'a> {
    pub(crate) policy: &'a Policy<'a>,
    /// The request sent to the origin carried `Authorization`.
    pub(crate) authorization_forwarded: bool,
    /// The behavior stores responses that set cookies (without the cookies).
    pub(crate) cache_set_cookie_responses: bool,
}

/// Decides whether a response may be stored and shared.
pub(crate) fn decide(status: StatusCode, headers: &HeaderMap, rules: &Rules<'_>) -> Admission {
    let directives = Directives::of(headers);
    let origin = OriginFreshness::from_directives(headers, &directives);
    let cc = &directives.cc;
    // RFC 9111 §5.2.2.3: only statuses whose semantics the cache knows.
    if cc.must_understand && status.canonical_reason().is_none() {
        return Admission::NoStore(NoStore::Status);
    }
    let Some(ttl) = rules.policy.ttl(status, &origin) else {
        let reason = if matches!(status.as_u16(), 206 | 304 | 416) || status.is_informational() {
            NoStore::Status
        } else if cc.no_store {
            NoStore::Forbidden
        } else if cc.private {
            NoStore::Private
        } else if cc.no_cache {
            NoStore::NoCache
        } else {
            NoStore::NoLifetime
        };
        return Admission::NoStore(reason);
    };
    if rules.authorization_forwarded && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
        return Admission::NoStore(NoStore::Authorization);
    }
    let vary = match vary_names(headers) {
        Vary::Any => return Admission::NoStore(NoStore::VaryAll),
        Vary::None => None,
        Vary::Names(names) => Some(names),
    };
    let sets_cookie = headers.contains_key(header::SET_COOKIE);
    if sets_cookie && !rules.cache_set_cookie_responses {
        return Admission::NoStore(NoStore::SetCookie);
    }
    let has_validator = headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    if ttl == 0 && !has_validator {
        return Admission::NoStore(NoStore::NoLifetime);
    }
    Admission::Store(Storable {
        origin,
        vary,
        strip_set_cookie: sets_cookie,
    })
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use edgefleet_config::ErrorCaching;
    use http::HeaderValue;

    use super::*;
    use crate::cache::freshness::TtlPolicy;

    fn decide_with(
        status: u16,
        pairs: &[(&'static str, &'static str)],
        auth: bool,
        cookies: bool,
        min: u64,
    ) -> Admission {
        let errors = HashMap::new();
        let policy = Policy {
            ttl: TtlPolicy {
                min,
                default: 0,
                max: 31_536_000,
            },
            stale_if_error: 0,
            error_caching: ErrorCaching::Minimum,
            error_responses: &errors,
        };
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        let rules = Rules {
            policy: &policy,
            authorization_forwarded: auth,
            cache_set_cookie_responses: cookies,
        };
        decide(StatusCode::from_u16(status).expect("status"), &headers, &rules)
    }

    fn reason(status: u16, pairs: &[(&'static str, &'static str)]) -> Option<NoStore> {
        match decide_with(status, pairs, false, false, 0) {
            Admission::NoStore(reason) => Some(reason),
            Admission::Store(_) => None,
        }
    }

    #[test]
    fn each_reason() {
        let fresh = ("cache-control", "max-age=60");
        assert_eq!(reason(200, &[fresh]), None);
        assert_eq!(reason(206, &[fresh]), Some(NoStore::Status));
        assert_eq!(
            reason(200, &[("cache-control", "no-store, max-age=60")]),
            Some(NoStore::Forbidden)
        );
        assert_eq!(
            reason(200, &[("cache-control", "private, max-age=60")]),
            Some(NoStore::Private)
        );
        assert_eq!(
            reason(200, &[("cache-control", "no-cache")]),
            Some(NoStore::NoCache)
        );
        assert_eq!(
            reason(200, &[]),
            Some(NoStore::NoLifetime),
            "default TTL 0, no validator"
        );
        assert_eq!(
            reason(200, &[("etag", "\"v\"")]),
            None,
            "TTL 0 with a validator: revalidated"
        );
        assert_eq!(reason(302, &[]), Some(NoStore::NoLifetime));
        assert_eq!(reason(302, &[fresh]), None);
        assert_eq!(
            reason(599, &[fresh]),
            None,
            "explicit freshness stores any status"
        );
        assert_eq!(
            reason(599, &[("cache-control", "max-age=60, must-understand")]),
            Some(NoStore::Status)
        );
        assert_eq!(
            reason(200, &[("cache-control", "max-age=60, must-understand")]),
            None
        );
        assert_eq!(reason(200, &[fresh, ("vary", "*")]), Some(NoStore::VaryAll));
        assert_eq!(
            reason(200, &[fresh, ("set-cookie", "id=1")]),
            Some(NoStore::SetCookie)
        );
        assert!(matches!(
            decide_with(200, &[fresh], true, false, 0),
            Admission::NoStore(NoStore::Authorization)
        ));
        assert!(matches!(
            decide_with(200, &[("cache-control", "max-age=60, public")], true, false, 0),
            Admission::Store(_)
        ));
    }

    #[test]
    fn cookies_are_stripped_when_the_behavior_stores_them() {
        let Admission::Store(storable) = decide_with(
            200,
            &[("cache-control", "max-age=60"), ("set-cookie", "id=1")],
            false,
            true,
            0,
        ) else {
            panic!("stored with the behavior's opt-in")
        };
        assert!(storable.strip_set_cookie);
    }

    #[test]
    fn a_min_ttl_stores_what_the_origin_forbids() {
        assert!(matches!(
            decide_with(200, &[("cache-control", "no-store")], false, false, 30),
            Admission::Store(_)
        ));
    }

    #[test]
    fn vary_names_are_sorted_without_accept_encoding() {
        let Admission::Store(storable) = decide_with(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("vary", "X-B, accept-encoding"),
                ("vary", "x-a"),
            ],
            false,
            false,
            0,
        ) else {
            panic!("stored")
        };
        let names: Vec<&str> = storable
            .vary
            .iter()
            .flat_map(|v| v.iter())
            .map(HeaderName::as_str)
            .collect();
        assert_eq!(names, ["x-a", "x-b"]);
    }
}
