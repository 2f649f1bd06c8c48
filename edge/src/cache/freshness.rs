//! Freshness: how long an object may be served from cache, and what may happen once it is stale.
//!
//! CloudFront's TTL policy on top of RFC 9111: the origin's lifetime (`s-maxage` > `max-age` >
//! `Expires`, or `CDN-Cache-Control`'s when it has one) clamped to the behavior's [min, max] TTL,
//! the behavior's default TTL when the origin says nothing, no heuristic freshness, and `Age`
//! accounted for. Error responses follow the behavior's `errorCaching` rule. The lifetime is
//! computed when an object is looked up, from what the origin said, so a TTL change in the
//! configuration applies to objects already cached.
//!
//! Tested here: precedence, clamping, the default TTL, error caching under both rules, which
//! statuses are stored, `Age` parsing and accounting, and the stale windows.
use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use edgefleet_config::{DEFAULT_ERROR_CACHING_MIN_TTL, ErrorCaching, ErrorResponse};
use http::{HeaderMap, StatusCode, header};

use super::cache_control::{Directives, ViewerDirectives};

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
    pub(crate) fn from_response(headers: &HeaderMap) -> Self {
        Self::from_directives(headers, &Directives::of(headers))
    }

    pub(crate) fn from_directives(headers: &HeaderMap, directives: &Directives) -> Self {
        let cc = &directives.cc;
        let expires_lifetime = || {
            if directives.targeted {
                return None;
            }
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
    /// 2xx and 3xx: the behavior's TTL policy.
    Success,
    /// 4xx and 5xx: the error caching rule.
    Error,
    /// Never stored: partial content (ranges are served from whole objects), 304 (meaningful
    /// only to the request it answers), 416 (depends on the request's `Range`), 1xx.
    Never,
}

pub(crate) fn status_class(status: StatusCode) -> StatusClass {
    match status.as_u16() {
        206 | 304 | 416 => StatusClass::Never,
        200..=399 => StatusClass::Success,
        400..=599 => StatusClass::Error,
        _ => StatusClass::Never,
    }
}

/// Statuses CloudFront stores without explicit freshness (with the default TTL, or for errors
/// the error caching TTL); other statuses are stored only with explicit freshness.
fn cached_without_freshness(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 400 | 403 | 404 | 405 | 410 | 414 | 500 | 501 | 502 | 503 | 504
    )
}

/// Error statuses a cache may store heuristically (RFC 9110 §15.1).
fn heuristically_cacheable_error(status: u16) -> bool {
    matches!(status, 404 | 405 | 410 | 414 | 501)
}

/// How a stored object's TTL is decided for one request: the behavior's policy for successes,
/// its error caching rule and TTLs for errors.
pub(crate) struct Policy<'a> {
    pub(crate) ttl: TtlPolicy,
    pub(crate) stale_if_error: u64,
    pub(crate) error_caching: ErrorCaching,
    pub(crate) error_responses: &'a HashMap<u16, ErrorResponse>,
}

impl Policy<'_> {
    /// The TTL of a response in seconds, or `None` when it may not be stored for want of one
    /// (the status is never stored, the origin forbids it with the min TTL at 0, or it gives no
    /// freshness where it must).
    pub(crate) fn ttl(&self, status: StatusCode, origin: &OriginFreshness) -> Option<u64> {
        let code = status.as_u16();
        let ttl = match status_class(status) {
            StatusClass::Never => return None,
            StatusClass::Success if origin.uncacheable_by_origin => self.ttl.min,
            StatusClass::Success => {
                let lifetime = match origin.lifetime {
                    Some(lifetime) => lifetime,
                    None if cached_without_freshness(code) => self.ttl.default,
                    None => return None,
                };
                lifetime.clamp(self.ttl.min, self.ttl.max.max(self.ttl.min))
            }
            StatusClass::Error => {
                let minimum = self.error_caching_min_ttl(code);
                match (self.error_caching, origin.lifetime) {
                    (ErrorCaching::Origin, _) if origin.uncacheable_by_origin => return None,
                    (ErrorCaching::Origin, Some(lifetime)) => lifetime,
                    (ErrorCaching::Origin, None) if heuristically_cacheable_error(code) => minimum,
                    (ErrorCaching::Minimum, _) if origin.uncacheable_by_origin => minimum,
                    (ErrorCaching::Minimum, lifetime) if cached_without_freshness(code) => {
                        lifetime.unwrap_or(0).max(minimum)
                    }
                    (_, Some(lifetime)) => lifetime,
                    (_, None) => return None,
                }
            }
        };
        // Content the origin forbade storing, kept for a TTL of 0, would never be reusable.
        (ttl > 0 || !origin.uncacheable_by_origin).then_some(ttl)
    }

    /// The configured error caching TTL for a status, 10 s by default.
    fn error_caching_min_ttl(&self, status: u16) -> u64 {
        self.error_responses
            .get(&status)
            .map_or(DEFAULT_ERROR_CACHING_MIN_TTL, |e| e.error_caching_min_ttl)
    }
}

/// The corrected initial age of a response (RFC 9111 §4.2.3).
pub(crate) fn initial_age(
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let age_value = age(headers).map_or(Duration::ZERO, Duration::from_secs);
    let apparent_age = headers
        .get(header::DATE)
        .and_then(|d| http_date(d.as_bytes()))
        .and_then(|date| response_time.duration_since(date).ok())
        .unwrap_or(Duration::ZERO);
    let response_delay = response_time
        .duration_since(request_time)
        .unwrap_or(Duration::ZERO);
    apparent_age.max(age_value.saturating_add(response_delay))
}

/// The `Age` a response carries: the first member when it is a list, on one line or several
/// (RFC 9111 §5.1). `None` when absent, or when that member is not a non-negative integer: an
/// invalid `Age` is ignored.
pub(crate) fn age(headers: &HeaderMap) -> Option<u64> {
    let first = headers.get(header::AGE)?.to_str().ok()?.split(',').next()?.trim();
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Larger ages than u64 holds are as stale as can be.
    Some(first.parse().unwrap_or(u64::MAX))
}

/// The age of a stored object now.
pub(crate) fn current_age(initial_age: Duration, stored_at: SystemTime, now: SystemTime) -> Duration {
    initial_age.saturating_add(now.duration_since(stored_at).unwrap_or(Duration::ZERO))
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

/// Whether a stored response that is fresh may answer a viewer who asked with these directives
/// (RFC 9111 §5.2.1): not with `no-cache`, not older than its `max-age`, not fresh for less than
/// its `min-fresh`.
pub(crate) fn satisfies(viewer: &ViewerDirectives, age: Duration, ttl: u64) -> bool {
    let left = Duration::from_secs(ttl).saturating_sub(age);
    !viewer.no_cache
        && viewer.max_age.is_none_or(|max| age <= Duration::from_secs(max))
        && viewer
            .min_fresh
            .is_none_or(|min| left >= Duration::from_secs(min))
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

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("test header"));
        }
        map
    }

    fn origin(pairs: &[(&'static str, &str)]) -> OriginFreshness {
        OriginFreshness::from_response(&headers(pairs))
    }

    fn policy(ttl: TtlPolicy, error_caching: ErrorCaching) -> Policy<'static> {
        static NONE: std::sync::LazyLock<HashMap<u16, ErrorResponse>> =
            std::sync::LazyLock::new(HashMap::new);
        Policy {
            ttl,
            stale_if_error: 0,
            error_caching,
            error_responses: &NONE,
        }
    }

    fn ttl(o: &OriginFreshness, ttl: &TtlPolicy) -> Option<u64> {
        policy(*ttl, ErrorCaching::Minimum).ttl(StatusCode::OK, o)
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
        assert_eq!(ttl(&all, &CLOUDFRONT_DEFAULTS), Some(120));
        let no_s = origin(&[
            ("cache-control", "max-age=60"),
            ("expires", &later),
            ("date", &now),
        ]);
        assert_eq!(ttl(&no_s, &CLOUDFRONT_DEFAULTS), Some(60));
        let expires_only = origin(&[("expires", &later), ("date", &now)]);
        assert!((499..=500).contains(&ttl(&expires_only, &CLOUDFRONT_DEFAULTS).expect("stored")));
        assert_eq!(ttl(&origin(&[("expires", "0")]), &CLOUDFRONT_DEFAULTS), Some(0));
    }

    #[test]
    fn cdn_cache_control_replaces_cache_control_and_expires() {
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(10_000));
        let o = origin(&[
            ("cache-control", "max-age=3600"),
            ("expires", &later),
            ("cdn-cache-control", "max-age=0"),
        ]);
        assert_eq!(ttl(&o, &CLOUDFRONT_DEFAULTS), Some(0));
        let o = origin(&[("cdn-cache-control", "max-age=60"), ("expires", "0")]);
        assert_eq!(ttl(&o, &CLOUDFRONT_DEFAULTS), Some(60));
    }

    #[test]
    fn default_ttl_only_when_the_origin_is_silent() {
        assert_eq!(ttl(&origin(&[]), &CLOUDFRONT_DEFAULTS), Some(86_400));
        assert_eq!(
            ttl(&origin(&[("cache-control", "max-age=0")]), &CLOUDFRONT_DEFAULTS),
            Some(0)
        );
    }

    #[test]
    fn clamped_to_min_and_max() {
        let policy = TtlPolicy {
            min: 100,
            default: 200,
            max: 300,
        };
        assert_eq!(
            ttl(&origin(&[("cache-control", "max-age=5")]), &policy),
            Some(100)
        );
        assert_eq!(
            ttl(&origin(&[("cache-control", "max-age=5000")]), &policy),
            Some(300)
        );
        let inverted_default = TtlPolicy {
            min: 10,
            default: 86_400,
            max: 60,
        };
        assert_eq!(ttl(&origin(&[]), &inverted_default), Some(60));
    }

    #[test]
    fn no_cache_like_directives_depend_on_min_ttl() {
        for directive in ["no-cache", "no-store", "private"] {
            let o = origin(&[("cache-control", directive)]);
            assert_eq!(ttl(&o, &CLOUDFRONT_DEFAULTS), None, "{directive} with min 0");
            let min = TtlPolicy {
                min: 30,
                ..CLOUDFRONT_DEFAULTS
            };
            assert_eq!(ttl(&o, &min), Some(30), "{directive} with min 30");
        }
    }

    #[test]
    fn any_status_with_explicit_freshness_is_stored() {
        let p = policy(CLOUDFRONT_DEFAULTS, ErrorCaching::Minimum);
        let fresh = origin(&[("cache-control", "max-age=60")]);
        for status in [302, 307, 410, 418, 429] {
            let status = StatusCode::from_u16(status).expect("status");
            assert!(p.ttl(status, &fresh).is_some_and(|t| t >= 60), "{status}");
        }
        for status in [302, 307, 418] {
            let status = StatusCode::from_u16(status).expect("status");
            assert_eq!(p.ttl(status, &origin(&[])), None, "{status}");
        }
        for status in [206, 304, 416] {
            let status = StatusCode::from_u16(status).expect("status");
            assert_eq!(p.ttl(status, &fresh), None, "{status}");
        }
    }

    #[test]
    fn error_caching_minimum_is_cloudfronts_rule() {
        let p = policy(CLOUDFRONT_DEFAULTS, ErrorCaching::Minimum);
        let ttl = |status: u16, o: &OriginFreshness| p.ttl(StatusCode::from_u16(status).expect("status"), o);
        assert_eq!(ttl(404, &origin(&[])), Some(10));
        assert_eq!(ttl(503, &origin(&[("cache-control", "max-age=60")])), Some(60));
        assert_eq!(ttl(503, &origin(&[("cache-control", "max-age=1")])), Some(10));
        assert_eq!(ttl(403, &origin(&[("expires", "0")])), Some(10));
        assert_eq!(ttl(500, &origin(&[("cache-control", "no-store")])), Some(10));
        assert_eq!(ttl(409, &origin(&[])), None);
    }

    #[test]
    fn error_caching_origin_is_rfc_9111s_rule() {
        let p = policy(CLOUDFRONT_DEFAULTS, ErrorCaching::Origin);
        let ttl = |status: u16, o: &OriginFreshness| p.ttl(StatusCode::from_u16(status).expect("status"), o);
        let last_modified = origin(&[("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")]);
        assert_eq!(ttl(404, &last_modified), Some(10), "heuristically cacheable");
        for status in [403, 502, 503, 504] {
            assert_eq!(ttl(status, &last_modified), None, "{status}");
        }
        assert_eq!(ttl(503, &origin(&[("expires", "0")])), Some(0), "already stale");
        assert_eq!(ttl(503, &origin(&[("cache-control", "max-age=1")])), Some(1));
        assert_eq!(ttl(404, &origin(&[("cache-control", "no-store")])), None);
    }

    #[test]
    fn age_is_the_first_member() {
        let age = |pairs: &[(&'static str, &str)]| age(&headers(pairs));
        assert_eq!(age(&[("age", "7200, 0")]), Some(7200));
        assert_eq!(age(&[("age", "0,7200")]), Some(0));
        assert_eq!(age(&[("age", "7200"), ("age", "0")]), Some(7200));
        assert_eq!(age(&[("age", "99999999999999999999999")]), Some(u64::MAX));
        assert_eq!(age(&[]), None);
        for invalid in ["abc", "-7200", "7200.0", "", "7200;foo=bar"] {
            assert_eq!(age(&[("age", invalid)]), None, "{invalid}");
        }
    }

    #[test]
    fn age_is_accounted_for() {
        let t0 = SystemTime::now();
        let mut h = HeaderMap::new();
        h.insert(header::AGE, HeaderValue::from_static("50"));
        let age = initial_age(&h, t0, t0 + Duration::from_secs(2));
        assert_eq!(age, Duration::from_secs(52));
        let o = origin(&[("cache-control", "max-age=60")]);
        let policy_ttl = ttl(&o, &CLOUDFRONT_DEFAULTS).expect("stored");
        let at = |secs| current_age(age, t0, t0 + Duration::from_secs(secs));
        assert_eq!(evaluate(at(7), policy_ttl, &o, 0), Freshness::Fresh);
        assert!(matches!(
            evaluate(at(8), policy_ttl, &o, 0),
            Freshness::Stale { .. }
        ));
        h.insert(header::AGE, HeaderValue::from_static("99999999999999999999999"));
        assert!(initial_age(&h, t0, t0 + Duration::from_secs(2)) > Duration::from_secs(1 << 40));
    }

    #[test]
    fn viewers_may_ask_for_fresher_than_stored() {
        let asked = |cc: &'static str| ViewerDirectives::of(&headers(&[("cache-control", cc)]));
        let age = Duration::from_secs(100);
        assert!(satisfies(&ViewerDirectives::default(), age, 600));
        assert!(!satisfies(&asked("no-cache"), age, 600));
        assert!(!satisfies(&asked("max-age=0"), age, 600));
        assert!(satisfies(&asked("max-age=100"), age, 600));
        assert!(satisfies(&asked("min-fresh=500"), age, 600));
        assert!(!satisfies(&asked("min-fresh=501"), age, 600));
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
