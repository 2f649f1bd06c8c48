//! The response cache directives a shared cache acts on (RFC 9111 §5.2.2, RFC 5861), from
//! `CDN-Cache-Control` (RFC 9213) when the response has a valid one, else from `Cache-Control`.
//!
//! `Cache-Control` parsing never fails: unknown directives are ignored, and a freshness directive
//! with an invalid value is read as 0 so the response is treated as stale (RFC 9111 §4.2.1
//! "SHOULD consider responses with invalid freshness information to be stale").
//! `CDN-Cache-Control` is a Structured Field dictionary (RFC 9651): one that does not parse, or
//! whose known directives have values of the wrong type, is ignored as a whole, and then
//! `Cache-Control` applies (RFC 9213 §2.1).
//!
//! Tested here: both syntaxes, precedence, and no panics on arbitrary bytes.

use http::{HeaderMap, HeaderName, header};

/// Delta-seconds beyond this are read as this (RFC 9111 §1.2.2).
const MAX_DELTA_SECONDS: u64 = 2_147_483_648;

/// The field RFC 9213 targets at every CDN.
pub(crate) const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The directives this cache follows for a response, and where they came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Directives {
    pub(crate) cc: CacheControl,
    /// From `CDN-Cache-Control`: `Cache-Control` and `Expires` are then ignored.
    pub(crate) targeted: bool,
}

impl Directives {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        if let Some(cc) = targeted(headers) {
            return Self { cc, targeted: true };
        }
        Self {
            cc: CacheControl::parse(
                headers
                    .get_all(header::CACHE_CONTROL)
                    .iter()
                    .map(|v| v.as_bytes()),
            ),
            targeted: false,
        }
    }
}

/// What a viewer's request asks of the cache (RFC 9111 §5.2.1), read only when the behavior
/// honours it: `Cache-Control`, or `Pragma: no-cache` without one (RFC 9111 §5.4).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ViewerDirectives {
    pub(crate) no_cache: bool,
    pub(crate) no_store: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) min_fresh: Option<u64>,
    pub(crate) only_if_cached: bool,
}

impl ViewerDirectives {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut directives = Self::default();
        let values = headers.get_all(header::CACHE_CONTROL);
        if values.iter().next().is_none() {
            directives.no_cache = headers
                .get_all(header::PRAGMA)
                .iter()
                .any(|v| Tokens::new(v.as_bytes()).any(|(name, _)| name.eq_ignore_ascii_case(b"no-cache")));
            return directives;
        }
        for value in values {
            for (name, arg) in Tokens::new(value.as_bytes()) {
                let seconds = || Some(arg.map_or(0, delta_seconds));
                match name.to_ascii_lowercase().as_slice() {
                    b"no-cache" => directives.no_cache = true,
                    b"no-store" => directives.no_store = true,
                    b"max-age" => directives.max_age = seconds(),
                    b"min-fresh" => directives.min_fresh = seconds(),
                    b"only-if-cached" => directives.only_if_cached = true,
                    _ => {}
                }
            }
        }
        directives
    }
}

/// `CDN-Cache-Control` read as a Structured Field dictionary; `None` when absent, empty or invalid.
fn targeted(headers: &HeaderMap) -> Option<CacheControl> {
    let lines: Vec<&str> = headers
        .get_all(CDN_CACHE_CONTROL)
        .iter()
        .map(|v| v.to_str())
        .collect::<Result<_, _>>()
        .ok()?;
    let joined = lines.join(", ");
    if joined.trim().is_empty() {
        return None;
    }
    let dictionary: sfv::Dictionary = sfv::Parser::new(&joined).parse().ok()?;
    let mut cc = CacheControl::default();
    for (name, member) in &dictionary {
        let sfv::ListEntry::Item(item) = member else {
            if is_known(name.as_str()) {
                return None;
            }
            continue;
        };
        let seconds = || match &item.bare_item {
            sfv::BareItem::Integer(n) => u64::try_from(i64::from(*n))
                .ok()
                .map(|n| n.min(MAX_DELTA_SECONDS)),
            _ => None,
        };
        let flag = || match &item.bare_item {
            sfv::BareItem::Boolean(set) => Some(*set),
            _ => None,
        };
        match name.as_str() {
            "max-age" => cc.max_age = Some(seconds()?),
            "s-maxage" => cc.s_maxage = Some(seconds()?),
            "stale-while-revalidate" => cc.stale_while_revalidate = Some(seconds()?),
            "stale-if-error" => cc.stale_if_error = Some(seconds()?),
            "no-store" => cc.no_store = flag()?,
            // The qualified forms (a list of field names) count as the plain directive.
            "no-cache" => cc.no_cache = flag().unwrap_or(true),
            "private" => cc.private = flag().unwrap_or(true),
            "public" => cc.public = flag()?,
            "must-revalidate" | "proxy-revalidate" => cc.must_revalidate |= flag()?,
            "must-understand" => cc.must_understand = flag()?,
            _ => {}
        }
    }
    Some(cc)
}

fn is_known(name: &str) -> bool {
    matches!(
        name,
        "max-age"
            | "s-maxage"
            | "stale-while-revalidate"
            | "stale-if-error"
            | "no-store"
            | "public"
            | "must-revalidate"
            | "proxy-revalidate"
            | "must-understand"
    )
}

/// The directives that matter to this cache. Viewers' `Cache-Control` is never parsed: like
/// CloudFront, the edge ignores it for caching decisions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
    pub(crate) no_store: bool,
    /// Also set by the qualified form `no-cache="field"`, which is treated as unqualified.
    pub(crate) no_cache: bool,
    /// Also set by the qualified form `private="field"`.
    pub(crate) private: bool,
    pub(crate) public: bool,
    /// `must-revalidate` or `proxy-revalidate`: stale content is never served.
    pub(crate) must_revalidate: bool,
    /// `must-understand`: stored only if the cache knows the status code's semantics.
    pub(crate) must_understand: bool,
    pub(crate) stale_while_revalidate: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
}

impl CacheControl {
    /// Parses every `Cache-Control` field value of a response, in order.
    pub(crate) fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut cc = CacheControl::default();
        for value in values {
            for (name, arg) in Tokens::new(value) {
                cc.apply(name, arg);
            }
        }
        cc
    }

    fn apply(&mut self, name: &[u8], arg: Option<&[u8]>) {
        let seconds = || arg.map_or(0, delta_seconds);
        // A directive repeated with different values keeps the smallest: the safe reading.
        let keep_min = |slot: &mut Option<u64>, v: u64| *slot = Some(slot.map_or(v, |o| o.min(v)));
        match name.to_ascii_lowercase().as_slice() {
            b"max-age" => keep_min(&mut self.max_age, seconds()),
            b"s-maxage" => keep_min(&mut self.s_maxage, seconds()),
            b"no-store" => self.no_store = true,
            b"no-cache" => self.no_cache = true,
            b"private" => self.private = true,
            b"public" => self.public = true,
            b"must-revalidate" | b"proxy-revalidate" => self.must_revalidate = true,
            b"must-understand" => self.must_understand = true,
            b"stale-while-revalidate" => keep_min(&mut self.stale_while_revalidate, seconds()),
            b"stale-if-error" => keep_min(&mut self.stale_if_error, seconds()),
            _ => {}
        }
    }
}

/// `1*DIGIT`; anything else is invalid and reads as 0.
fn delta_seconds(arg: &[u8]) -> u64 {
    if arg.is_empty() || !arg.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    arg.iter().fold(0u64, |acc, d| {
        acc.saturating_mul(10)
            .saturating_add(u64::from(d - b'0'))
            .min(MAX_DELTA_SECONDS)
    })
}

/// Iterates `name[=token|"quoted"]` directives separated by commas, skipping empty ones.
struct Tokens<'a> {
    rest: &'a [u8],
}

impl<'a> Tokens<'a> {
    fn new(value: &'a [u8]) -> Self {
        Self { rest: value }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.rest = trim_start(self.rest);
            if self.rest.is_empty() {
                return None;
            }
            let name_end = self
                .rest
                .iter()
                .position(|&b| b == b',' || b == b'=')
                .unwrap_or(self.rest.len());
            let name = trim(&self.rest[..name_end]);
            self.rest = &self.rest[name_end..];
            let mut arg = None;
            if let Some((&b'=', after)) = self.rest.split_first() {
                let after = trim_start(after);
                if let Some((&b'"', quoted)) = after.split_first() {
                    // Quoted-string: up to the closing quote, honouring backslash escapes.
                    let mut i = 0;
                    while i < quoted.len() && quoted[i] != b'"' {
                        i += if quoted[i] == b'\\' { 2 } else { 1 };
                    }
                    let end = i.min(quoted.len());
                    arg = Some(&quoted[..end]);
                    self.rest = quoted.get(end + 1..).unwrap_or(&[]);
                    // Skip anything between the closing quote and the next comma.
                    let skip = self
                        .rest
                        .iter()
                        .position(|&b| b == b',')
                        .unwrap_or(self.rest.len());
                    self.rest = &self.rest[skip..];
                } else {
                    let end = after.iter().position(|&b| b == b',').unwrap_or(after.len());
                    arg = Some(trim(&after[..end]));
                    self.rest = &after[end..];
                }
            }
            if let Some((&b',', after)) = self.rest.split_first() {
                self.rest = after;
            }
            if !name.is_empty() {
                return Some((name, arg));
            }
        }
    }
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    &s[start..]
}

fn trim(s: &[u8]) -> &[u8] {
    let s = trim_start(s);
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    &s[..end]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(s: &str) -> CacheControl {
        CacheControl::parse([s.as_bytes()])
    }

    #[test]
    fn reads_the_directives_a_shared_cache_needs() {
        let cc =
            parse(r#"public, max-age=60, s-maxage="120", stale-while-revalidate=30, stale-if-error=600"#);
        assert_eq!(cc.max_age, Some(60));
        assert_eq!(cc.s_maxage, Some(120));
        assert!(cc.public && !cc.private && !cc.no_store);
        assert_eq!(cc.stale_while_revalidate, Some(30));
        assert_eq!(cc.stale_if_error, Some(600));
    }

    #[test]
    fn names_are_case_insensitive_and_qualified_forms_count() {
        let cc = parse(r#"No-Cache="Set-Cookie, X-Foo", PRIVATE, Proxy-Revalidate, no-store"#);
        assert!(cc.no_cache && cc.private && cc.must_revalidate && cc.no_store);
    }

    #[test]
    fn invalid_or_conflicting_ages_are_read_safely() {
        assert_eq!(parse("max-age=abc").max_age, Some(0));
        assert_eq!(parse("max-age=").max_age, Some(0));
        assert_eq!(parse("max-age=-5").max_age, Some(0));
        assert_eq!(parse("max-age=300, max-age=10").max_age, Some(10));
        assert_eq!(
            parse("max-age=99999999999999999999999").max_age,
            Some(MAX_DELTA_SECONDS)
        );
    }

    #[test]
    fn several_field_lines_combine() {
        let cc = CacheControl::parse([&b"max-age=5"[..], &b"s-maxage=7, must-revalidate"[..]]);
        assert_eq!(
            (cc.max_age, cc.s_maxage, cc.must_revalidate),
            (Some(5), Some(7), true)
        );
    }

    fn directives(pairs: &[(&'static str, &'static str)]) -> Directives {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, http::HeaderValue::from_static(value));
        }
        Directives::of(&headers)
    }

    #[test]
    fn cdn_cache_control_wins_over_cache_control() {
        let d = directives(&[
            ("cache-control", "max-age=3600"),
            ("cdn-cache-control", "max-age=1"),
        ]);
        assert!(d.targeted);
        assert_eq!(d.cc.max_age, Some(1));
        let d = directives(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=600"),
        ]);
        assert!(d.targeted && !d.cc.no_store);
        for flag in ["private", "no-store", "no-cache"] {
            let mut headers = HeaderMap::new();
            headers.insert("cache-control", http::HeaderValue::from_static("max-age=600"));
            headers.insert(CDN_CACHE_CONTROL, http::HeaderValue::from_static(flag));
            let d = Directives::of(&headers);
            assert!(d.cc.private || d.cc.no_store || d.cc.no_cache, "{flag}");
        }
        let d = directives(&[
            ("cdn-cache-control", "foobar, max-age=3600"),
            ("cdn-cache-control", "must-revalidate"),
        ]);
        assert_eq!((d.cc.max_age, d.cc.must_revalidate), (Some(3600), true));
    }

    #[test]
    fn invalid_cdn_cache_control_is_ignored_whole() {
        for invalid in [
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "max-age =100",
            "max-age= 100",
            "MaX-aGe=3600",
            "max-age=-1",
            "",
        ] {
            let d = directives(&[("cache-control", "max-age=1"), ("cdn-cache-control", invalid)]);
            assert!(!d.targeted, "{invalid}");
            assert_eq!(d.cc.max_age, Some(1), "{invalid}");
        }
    }

    #[test]
    fn viewer_directives_and_pragma() {
        let of = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(*name, http::HeaderValue::from_static(value));
            }
            ViewerDirectives::of(&headers)
        };
        let d = of(&[(
            "cache-control",
            "max-age=0, min-fresh=30, only-if-cached, no-store",
        )]);
        assert_eq!(
            (d.max_age, d.min_fresh, d.only_if_cached, d.no_store),
            (Some(0), Some(30), true, true)
        );
        assert!(of(&[("pragma", "no-cache")]).no_cache);
        assert!(
            !of(&[("pragma", "no-cache"), ("cache-control", "max-age=5")]).no_cache,
            "Cache-Control wins"
        );
        assert_eq!(of(&[]), ViewerDirectives::default());
    }

    #[test]
    fn commas_inside_quotes_do_not_split() {
        let cc = parse(r#"private="a,max-age=1", max-age=9"#);
        assert!(cc.private);
        assert_eq!(cc.max_age, Some(9));
    }

    #[derive(Debug, Clone)]
    struct Generated {
        max_age: Option<u64>,
        s_maxage: Option<u64>,
        swr: Option<u64>,
        no_store: bool,
        private: bool,
    }

    fn render(g: &Generated, quote: bool, upper: bool) -> String {
        let mut parts = Vec::new();
        let num = |n: u64| if quote { format!("\"{n}\"") } else { n.to_string() };
        if let Some(n) = g.max_age {
            parts.push(format!("max-age={}", num(n)));
        }
        if let Some(n) = g.s_maxage {
            parts.push(format!("s-maxage = {}", num(n)));
        }
        if let Some(n) = g.swr {
            parts.push(format!("stale-while-revalidate={}", num(n)));
        }
        if g.no_store {
            parts.push("no-store".into());
        }
        if g.private {
            parts.push("private=\"x, y\"".into());
        }
        parts.push("x-unknown=\"a,b\"".into());
        let s = parts.join(" , ");
        if upper { s.to_ascii_uppercase() } else { s }
    }

    proptest! {
        // Fuzzing: 20,000 cases of arbitrary bytes plus 20,000 of generated directive lists
        // (see edge/README.md for run times).
        #![proptest_config(ProptestConfig::with_cases(crate::fuzz::cases(20_000)))]

        #[test]
        fn never_panics_on_arbitrary_bytes(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..4)) {
            let _ = CacheControl::parse(values.iter().map(Vec::as_slice));
            let mut headers = HeaderMap::new();
            for value in &values {
                if let Ok(v) = http::HeaderValue::from_bytes(value) {
                    headers.append(CDN_CACHE_CONTROL, v);
                }
            }
            let _ = Directives::of(&headers);
        }

        #[test]
        fn generated_directives_parse_back(
            max_age in proptest::option::of(0u64..10_000_000),
            s_maxage in proptest::option::of(0u64..10_000_000),
            swr in proptest::option::of(0u64..100_000),
            no_store: bool,
            private: bool,
            quote: bool,
            upper: bool,
        ) {
            let g = Generated { max_age, s_maxage, swr, no_store, private };
            let cc = parse(&render(&g, quote, upper));
            prop_assert_eq!(cc.max_age, g.max_age);
            prop_assert_eq!(cc.s_maxage, g.s_maxage);
            prop_assert_eq!(cc.stale_while_revalidate, g.swr);
            prop_assert_eq!(cc.no_store, g.no_store);
            prop_assert_eq!(cc.private, g.private);
        }
    }
}
