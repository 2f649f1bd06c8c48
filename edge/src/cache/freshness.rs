//! Freshness: how long an object may be served from cache, and what may happen once it is stale.
//!
//! CloudFront's TTL policy on top of RFC 9111: the origin's lifetime (`s-maxage` > `max-age` >
//! `Expires`) clamped to the behavior's [min, max] TTL, the behavior's default TTL when the origin
//! says nothing, no heuristic freshness, and `Age` accounted for. The lifetime is computed when an
//! object is looked up, from what the origin said, so a TTL change in the configuration applies to
//! objects already cached.
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode, header};

use super::cache_control::CacheControl;

/// A behavior's TTLs, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TtlPolicy {
    pub(crate) min: u64,
    pub(crate) default: u64,
    pub(crate) max: u64,
}

/// What the origin said about freshness, kept with the stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct OriginFreshness {
    /// Seconds from `s-maxage`, else `max-age`, else `Expires - Date`; `None` when the origin said
    /// nothing.
    pub(crate) lifetime: Option<u64>,
    /// `no-cache`, `no-store` or `private`: stored only because the min TTL is above 0.
    pub(crate) uncacheable_by_origin: bool,
    /// `must-revalidate`/`proxy-revalidate`: never served stale.
    pub(crate) must_revalidate: bool,
    pub(crate) stale_while_revalidate: u64,
    pub(crate) stale_if_error: u64,
}

impl OriginFreshness {
    pub(crate) fn from_response(headers: &HeaderMap, cc: &CacheControl) -> Self {
        let expires_lifetime = || {
            // An invalid Expires (such as "0") means already expired (RFC 9111 §5.3).
            let expires = headers.get(header::EXPIRES)?;
            let Some(expires) = http_date(expires.as_bytes()) else {
                return Some(0);
            };
            let date = headers
                .get(header::DATE)
                .and_then(|d| http_date(d.as_bytes()))
                .unwrap_or_else(SystemTime::now);
            Some(expires.duration_since(date).map_or(0, |d| d.as_secs()))
        };
        Self {
            lifetime: cc.s_maxage.or(cc.max_age).or_else(expires_lifetime),
            uncacheable_by_origin: cc.no_cache || cc.no_store || cc.private,
            must_revalidate: cc.must_revalidate,
            stale_while_revalidate: cc.stale_while_revalidate.unwrap_or(0),
            stale_if_error: cc.stale_if_error.unwrap_or(0),
        }
    }
}

/// How a response status is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusClass {
    /// Cached by the behavior's TTL policy.
    Success,
    /// Cached by the error caching TTL (CloudFront's list of cached error codes).
    Error,
    /// Never cached.
    Never,
}

pub(crate) fn status_class(status: StatusCode) -> StatusClass {
    match status.as_u16() {
        200 | 203 | 204 | 300 | 301 | 308 => StatusClass::Success,
        // 416 depends on the request's Range, so it is never cached.
        400 | 403 | 404 | 405 | 410 | 414 | 500 | 501 | 502 | 503 | 504 => StatusClass::Error,
        _ => StatusClass::Never,
    }
}

/// The TTL of a successful response under a behavior's policy, in seconds.
pub(crate) fn ttl(origin: &OriginFreshness, policy: &TtlPolicy) -> u64 {
    let (min, max) = (policy.min, policy.max.max(policy.min));
    if origin.uncacheable_by_origin {
        // Only stored when min > 0: CloudFront then caches for the min TTL.
        return min;
    }
    origin.lifetime.unwrap_or(policy.default).clamp(min, max)
}

/// The TTL of an error response: the longer of the origin's and the error caching minimum.
pub(crate) fn error_ttl(origin: &OriginFreshness, error_caching_min_ttl: u64) -> u64 {
    if origin.uncacheable_by_origin {
        return error_caching_min_ttl;
    }
    origin.lifetime.unwrap_or(0).max(error_caching_min_ttl)
}

/// Whether a freshly received response may be stored at all, before size and `Vary` checks.
pub(crate) fn storable(class: StatusClass, origin: &OriginFreshness, ttl: u64) -> bool {
    match class {
        StatusClass::Never => false,
        StatusClass::Success | StatusClass::Error => !(origin.uncacheable_by_origin && ttl == 0),
    }
}

/// The corrected initial age of a response (RFC 9111 §4.2.3).
pub(crate) fn initial_age(
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let age_value = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let apparent_age = headers
        .get(header::DATE)
        .and_then(|d| http_date(d.as_bytes()))
        .and_then(|date| response_time.duration_since(date).ok())
        .unwrap_or(Duration::ZERO);
    let response_delay = response_time
        .duration_since(request_time)
        .unwrap_or(Duration::ZERO);
    apparent_age.max(age_value + response_delay)
}

/// The age of a stored object now.
pub(crate) fn current_age(initial_age: Duration, stored_at: SystemTime, now: SystemTime) -> Duration {
    initial_age + now.duration_since(stored_at).unwrap_or(Duration::ZERO)
}

/// Where a stored object stands, given its age and TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Servable as is.
    Fresh,
    /// Past its TTL. It must be revalidated, but may be served meanwhile or on failure within
    /// these windows.
    Stale {
        /// Within `stale-while-revalidate`: serve now, refresh in the background.
        while_revalidate: bool,
        /// Within `stale-if-error` (origin's or behavior's): serve if the origin fails.
        if_error: bool,
    },
}

pub(crate) fn evaluate(
    age: Duration,
    ttl: u64,
    origin: &OriginFreshness,
    behavior_stale_if_error: u64,
) -> Freshness {
    let ttl = Duration::from_secs(ttl);
    if age < ttl {
        return Freshness::Fresh;
    }
    if origin.must_revalidate {
        return Freshness::Stale {
            while_revalidate: false,
            if_error: false,
        };
    }
    let staleness = age - ttl;
    let window = |secs: u64| staleness < Duration::from_secs(secs);
    Freshness::Stale {
        while_revalidate: window(origin.stale_while_revalidate),
        if_error: window(origin.stale_if_error.max(behavior_stale_if_error)),
    }
}

pub(crate) fn http_date(value: &[u8]) -> Option<SystemTime> {
    httpdate::parse_http_date(std::str::from_utf8(value).ok()?.trim()).ok()
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const CLOUDFRONT_DEFAULTS: TtlPolicy = TtlPolicy {
        min: 0,
        default: 86_400,
        max: 31_536_000,
    };

    fn origin(headers: &[(&'static str, &str)]) -> OriginFreshness {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_str(value).expect("test header"));
        }
        let cc = CacheControl::parse(map.get_all(header::CACHE_CONTROL).iter().map(|v| v.as_bytes()));
        OriginFreshness::from_response(&map, &cc)
    }

    #[test]
    fn s_maxage_beats_max_age_beats_expires() {
        let now = httpdate::fmt_http_date(SystemTime::now());
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(500));
        let all = origin(&[
            ("cache-control", "max-age=60, s-maxage=120"),
            ("expires", &later),
            ("date", &now),
        ]);
        assert_eq!(ttl(&all, &CLOUDFRONT_DEFAULTS), 120);
        let no_s = origin(&[
            ("cache-control", "max-age=60"),
            ("expires", &later),
            ("date", &now),
        ]);
        assert_eq!(ttl(&no_s, &CLOUDFRONT_DEFAULTS), 60);
        let expires_only = origin(&[("expires", &later), ("date", &now)]);
        assert!((499..=500).contains(&ttl(&expires_only, &CLOUDFRONT_DEFAULTS)));
        assert_eq!(ttl(&origin(&[("expires", "0")]), &CLOUDFRONT_DEFAULTS), 0);
    }

    #[test]
    fn default_ttl_only_when_the_origin_is_silent() {
        assert_eq!(ttl(&origin(&[]), &CLOUDFRONT_DEFAULTS), 86_400);
        assert_eq!(
            ttl(&origin(&[("cache-control", "max-age=0")]), &CLOUDFRONT_DEFAULTS),
            0
        );
    }

    #[test]
    fn clamped_to_min_and_max() {
        let policy = TtlPolicy {
            min: 100,
            default: 200,
            max: 300,
        };
        assert_eq!(ttl(&origin(&[("cache-control", "max-age=5")]), &policy), 100);
        assert_eq!(ttl(&origin(&[("cache-control", "max-age=5000")]), &policy), 300);
        let inverted_default = TtlPolicy {
            min: 10,
            default: 86_400,
            max: 60,
        };
        assert_eq!(ttl(&origin(&[]), &inverted_default), 60);
    }

    #[test]
    fn no_cache_like_directives_depend_on_min_ttl() {
        for directive in ["no-cache", "no-store", "private"] {
            let o = origin(&[("cache-control", directive)]);
            let zero = ttl(&o, &CLOUDFRONT_DEFAULTS);
            assert!(
                !storable(StatusClass::Success, &o, zero),
                "{directive} with min 0"
            );
            let policy = TtlPolicy {
                min: 30,
                ..CLOUDFRONT_DEFAULTS
            };
            let min = ttl(&o, &policy);
            assert_eq!(min, 30);
            assert!(storable(StatusClass::Success, &o, min), "{directive} with min 30");
        }
    }

    #[test]
    fn errors_use_the_longer_of_origin_and_error_caching_ttl() {
        assert_eq!(error_ttl(&origin(&[]), 10), 10);
        assert_eq!(error_ttl(&origin(&[("cache-control", "max-age=60")]), 10), 60);
        assert_eq!(error_ttl(&origin(&[("cache-control", "max-age=1")]), 10), 10);
        assert_eq!(
            status_class(StatusCode::RANGE_NOT_SATISFIABLE),
            StatusClass::Never
        );
        assert_eq!(status_class(StatusCode::NOT_FOUND), StatusClass::Error);
        assert_eq!(status_class(StatusCode::FOUND), StatusClass::Never);
    }

    #[test]
    fn age_is_accounted_for() {
        let t0 = SystemTime::now();
        let mut headers = HeaderMap::new();
        headers.insert(header::AGE, HeaderValue::from_static("50"));
        let age = initial_age(&headers, t0, t0 + Duration::from_secs(2));
        assert_eq!(age, Duration::from_secs(52));
        let o = origin(&[("cache-control", "max-age=60")]);
        let policy_ttl = ttl(&o, &CLOUDFRONT_DEFAULTS);
        let at = |secs| current_age(age, t0, t0 + Duration::from_secs(secs));
        assert_eq!(evaluate(at(7), policy_ttl, &o, 0), Freshness::Fresh);
        assert!(matches!(
            evaluate(at(8), policy_ttl, &o, 0),
            Freshness::Stale { .. }
        ));
    }

    #[test]
    fn stale_windows() {
        let o = origin(&[(
            "cache-control",
            "max-age=10, stale-while-revalidate=5, stale-if-error=20",
        )]);
        let at = |secs| evaluate(Duration::from_secs(secs), 10, &o, 0);
        assert_eq!(
            at(12),
            Freshness::Stale {
                while_revalidate: true,
                if_error: true
            }
        );
        assert_eq!(
            at(16),
            Freshness::Stale {
                while_revalidate: false,
                if_error: true
            }
        );
        assert_eq!(
            at(31),
            Freshness::Stale {
                while_revalidate: false,
                if_error: false
            }
        );
        // The behavior's window extends the origin's.
        assert_eq!(
            evaluate(Duration::from_secs(31), 10, &o, 60),
            Freshness::Stale {
                while_revalidate: false,
                if_error: true
            }
        );
        let strict = origin(&[("cache-control", "max-age=10, must-revalidate, stale-if-error=20")]);
        assert_eq!(
            evaluate(Duration::from_secs(12), 10, &strict, 60),
            Freshness::Stale {
                while_revalidate: false,
                if_error: false
            }
        );
    }
}
