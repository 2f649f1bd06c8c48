//! Cache keys: which stored object a request maps to.
//!
//! The key is the host (aliases already normalized: lowercase, no port), the path, and what the
//! behavior selects of the query string, headers and cookies, each normalized so that equivalent
//! requests share an object: query parameters and cookies sorted, header names case-folded.
//! Whatever is keyed is also what is forwarded to the origin, so an origin can never answer
//! differently to requests the cache considers equal.
//!
//! URL spellings that RFC 3986 §6.2.2 makes equivalent are normalized, in the path (by
//! admission, so behaviors, keys and the origin all see one spelling), in query parameters and
//! in invalidation paths: percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//! decoded, and the hex digits of the other percent-encodings are uppercased (`%2f` is `%2F`).
//! Not normalized, because origins may tell them apart: reserved characters and their encodings
//! (`/` and `%2F`), `+` and `%20`, repeated slashes, a trailing slash, and the case of the path.
//! Dot segments are refused before this (400).
//!
//! Tested here: normalization and its idempotence, key equality and distinctness, and no panics
//! on arbitrary input.
use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use edgefleet_config::{CacheKey as KeyPolicy, KeyList};

/// Separates the key's parts; it cannot occur in a host, a URI, or a header value.
const PART: char = '\n';
/// Separates items within a part; a control character no header value or URI can hold.
const ITEM: char = '\u{1f}';

/// Headers that are never part of a key even when `headers: all`: connection management,
/// conditionals and ranges (served from the cached object), cookies (keyed separately),
/// encodings (negotiated by the edge) and viewers' cache directives (ignored, like CloudFront).
pub(crate) fn never_keyed(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "expect"
            | "host"
            | "if-match"
            | "if-none-match"
            | "if-modified-since"
            | "if-unmodified-since"
            | "if-range"
            | "range"
            | "cookie"
            | "accept-encoding"
            | "cache-control"
            | "pragma"
            | "via"
            | "x-forwarded-for"
    )
}

/// A request's key and what of it goes to the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keyed {
    /// The primary key; `Vary` and encodings extend it.
    pub(crate) primary: String,
    /// Path plus the keyed query string: what invalidation paths are matched against.
    pub(crate) purge_path: String,
    /// The keyed query string, normalized, without `?`.
    pub(crate) forward_query: Option<String>,
    /// The keyed cookies as one `Cookie` header.
    pub(crate) forward_cookie: Option<HeaderValue>,
}

/// The parts of a request a key is built from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyInput<'a> {
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) headers: &'a HeaderMap,
}

pub(crate) fn build(input: KeyInput<'_>, policy: &KeyPolicy) -> Keyed {
    let forward_query = select_query(input.query, &policy.query_strings);
    let cookies = select_cookies(input.headers, &policy.cookies);
    let mut primary = String::with_capacity(input.host.len() + input.path.len() + 16);
    primary.push_str(input.host);
    primary.push(PART);
    primary.push_str(input.path);
    let mut purge_path = input.path.to_owned();
    if let Some(q) = &forward_query {
        primary.push(PART);
        primary.push('?');
        primary.push_str(q);
        purge_path.push('?');
        purge_path.push_str(q);
    }
    if policy.headers != KeyList::None {
        primary.push(PART);
        primary.push('h');
        push_headers(&mut primary, input.headers, |name| {
            selected(&policy.headers, name.as_str(), true)
        });
    }
    if let Some(c) = &cookies {
        primary.push(PART);
        primary.push('c');
        primary.push_str(c);
    }
    Keyed {
        primary,
        purge_path,
        forward_query,
        // Cookie names and values are header-safe text, so this cannot fail; if it somehow did,
        // the cookie would simply not be forwarded.
        forward_cookie: cookies.and_then(|c| HeaderValue::from_str(&c.replace(ITEM, "; ")).ok()),
    }
}

/// Whether a header is forwarded to the origin for a cacheable request: everything not
/// `never_keyed`, except `Authorization`, which is forwarded only when keyed (a shared cache
/// must not mix viewers' credentials).
pub(crate) fn forwarded_header(policy: &KeyPolicy, name: &HeaderName) -> bool {
    if never_keyed(name) {
        return false;
    }
    if name == header::AUTHORIZATION {
        return selected(&policy.headers, name.as_str(), true);
    }
    true
}

/// The key of the variant a `Vary` response was stored for: the primary key plus the values of
/// the named headers among those forwarded to the origin (the origin cannot vary on others). The
/// same key results from the viewer's headers and from the forwarded ones.
pub(crate) fn with_vary(
    primary: &str,
    names: &[HeaderName],
    headers: &HeaderMap,
    policy: &KeyPolicy,
) -> String {
    let mut key = String::with_capacity(primary.len() + 32);
    key.push_str(primary);
    key.push(PART);
    key.push('v');
    let counts = |name: &HeaderName| names.contains(name) && forwarded_header(policy, name);
    push_headers(&mut key, headers, counts);
    // Names absent from the request still count: "absent" differs from "present and empty".
    for name in names {
        if !(headers.contains_key(name) && forwarded_header(policy, name)) {
            key.push(ITEM);
            key.push_str(name.as_str());
            key.push('!');
        }
    }
    key
}

/// An invalidation path normalized like stored purge paths (percent-encodings normalized, query
/// parameters sorted), so `/a?b=1&a=2` matches the object stored for `/a?a=2&b=1`.
pub(crate) fn normalize_purge_path(path: &str) -> String {
    match path.split_once('?') {
        Some((p, q)) => match select_query(Some(q), &KeyList::All) {
            Some(q) => format!("{}?{q}", normalize_encoding(p)),
            None => normalize_encoding(p).into_owned(),
        },
        None => normalize_encoding(path).into_owned(),
    }
}

/// The prefix of an invalidation path ending in `*`: percent-encodings normalized, the order of
/// any query parameters kept (a prefix may end inside one).
pub(crate) fn normalize_purge_prefix(prefix: &str) -> String {
    match prefix.split_once('?') {
        Some((p, q)) => format!("{}?{}", normalize_encoding(p), normalize_encoding(q)),
        None => normalize_encoding(prefix).into_owned(),
    }
}

/// RFC 3986 §6.2.2 normalization of percent-encodings: unreserved characters decoded, the hex
/// digits of the others uppercased. Text with a malformed `%` sequence is left as it is: decoding
/// next to a stray `%` could make a new escape (`%%30` would become `%0`).
pub(crate) fn normalize_encoding(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if !text.contains('%') || !well_formed {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match escaped {
            Some((high, low)) => {
                let byte = high << 4 | low;
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    out.push(char::from(byte));
                } else {
                    out.push('%');
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(high)]));
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(low)]));
                }
                i += 3;
            }
            None => {
                // Copies up to the next `%` at once; `text` is UTF-8 and `%` is ASCII, so the
                // cut is on a character boundary.
                let next = bytes[i + 1..]
                    .iter()
                    .position(|&b| b == b'%')
                    .map_or(bytes.len(), |p| i + 1 + p);
                out.push_str(&text[i..next]);
                i = next;
            }
        }
    }
    Cow::Owned(out)
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|d| d as u8)
}

/// The key of a compressed variant.
pub(crate) fn with_encoding(key: &str, encoding: &str) -> String {
    format!("{key}{PART}e{encoding}")
}

fn selected(list: &KeyList, name: &str, case_insensitive: bool) -> bool {
    match list {
        KeyList::None => false,
        KeyList::All => true,
        KeyList::AllowList(names) => names.iter().any(|n| {
            if case_insensitive {
                n.eq_ignore_ascii_case(name)
            } else {
                n == name
            }
        }),
    }
}

/// Appends `name=value` items for the selected headers, sorted by name; several field lines of
/// one header are joined with commas, as HTTP defines.
fn push_headers(out: &mut String, headers: &HeaderMap, mut include: impl FnMut(&HeaderName) -> bool) {
    let mut names: Vec<&HeaderName> = headers.keys().filter(|n| !never_keyed(n) && include(n)).collect();
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    for name in names {
        out.push(ITEM);
        out.push_str(name.as_str());
        out.push('=');
        for (i, value) in headers.get_all(name).iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Header values may hold obs-text bytes; keep them exactly but unambiguously.
            out.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
    }
}

/// The selected query parameters, sorted by name then value, joined with `&`.
fn select_query(query: Option<&str>, list: &KeyList) -> Option<String> {
    let query = query.filter(|q| !q.is_empty())?;
    if *list == KeyList::None {
        return None;
    }
    let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(n, _)| n);
            (
                percent_encoding::percent_decode_str(name).decode_utf8_lossy(),
                normalize_encoding(pair),
            )
        })
        .filter(|(name, _)| selected(list, name, false))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    pairs.sort_unstable();
    Some(
        pairs
            .iter()
            .map(|(_, pair)| pair.as_ref())
            .collect::<Vec<_>>()
            .join("&"),
    )
}

/// The selected cookies, sorted, joined with [`ITEM`].
fn select_cookies(headers: &HeaderMap, list: &KeyList) -> Option<String> {
    if *list == KeyList::None {
        return None;
    }
    let mut cookies: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .filter(|c| selected(list, c.split_once('=').map_or(*c, |(n, _)| n.trim()), false))
        .collect();
    if cookies.is_empty() {
        return None;
    }
    cookies.sort_unstable();
    Some(cookies.join(&ITEM.to_string()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy(q: KeyList, h: KeyList, c: KeyList) -> KeyPolicy {
        KeyPolicy {
            query_strings: q,
            headers: h,
            cookies: c,
        }
    }

    fn allow(names: &[&str]) -> KeyList {
        KeyList::AllowList(names.iter().map(|s| s.to_string()).collect())
    }

    fn key(query: Option<&str>, headers: &[(&str, &str)], p: &KeyPolicy) -> Keyed {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        build(
            KeyInput {
                host: "example.com",
                path: "/a",
                query,
                headers: &map,
            },
            p,
        )
    }

    #[test]
    fn nothing_selected_means_host_and_path_only() {
        let p = KeyPolicy::default();
        let a = key(Some("x=1"), &[("accept-language", "de"), ("cookie", "s=1")], &p);
        let b = key(None, &[], &p);
        assert_eq!(a, b);
        assert_eq!(a.purge_path, "/a");
        assert_eq!(a.forward_query, None);
        assert_eq!(a.forward_cookie, None);
    }

    #[test]
    fn query_order_is_normalized_and_allow_list_filters() {
        let p = policy(allow(&["b", "a"]), KeyList::None, KeyList::None);
        let a = key(Some("b=2&utm=x&a=1"), &[], &p);
        let b = key(Some("a=1&b=2"), &[], &p);
        assert_eq!(a.primary, b.primary);
        assert_eq!(a.forward_query.as_deref(), Some("a=1&b=2"));
        assert_eq!(a.purge_path, "/a?a=1&b=2");
        assert_ne!(a.primary, key(Some("a=1&b=3"), &[], &p).primary);
    }

    #[test]
    fn header_names_are_case_insensitive_and_cookies_sorted() {
        let p = policy(KeyList::None, allow(&["X-Variant"]), allow(&["lang", "theme"]));
        let a = key(
            None,
            &[("x-variant", "v1"), ("cookie", "theme=dark; lang=de; session=9")],
            &p,
        );
        let b = key(
            None,
            &[
                ("X-VARIANT", "v1"),
                ("cookie", "lang=de"),
                ("cookie", "theme=dark"),
            ],
            &p,
        );
        assert_eq!(a.primary, b.primary);
        assert_eq!(
            a.forward_cookie,
            Some(HeaderValue::from_static("lang=de; theme=dark"))
        );
        assert_ne!(
            a.primary,
            key(
                None,
                &[("x-variant", "v2"), ("cookie", "theme=dark; lang=de")],
                &p
            )
            .primary
        );
    }

    #[test]
    fn equivalent_spellings_share_a_key() {
        assert_eq!(normalize_encoding("/gen/%61bc"), "/gen/abc");
        assert_eq!(normalize_encoding("/a%2fb%7E%2D"), "/a%2Fb~-");
        assert_eq!(normalize_encoding("/100%"), "/100%");
        assert_eq!(normalize_encoding("/%zz%4"), "/%zz%4");
        assert_eq!(normalize_encoding("/%%300"), "/%%300", "malformed: left alone");
        assert_eq!(normalize_encoding("/caf\u{e9}%41"), "/caf\u{e9}A");
        assert!(matches!(normalize_encoding("/plain"), Cow::Borrowed(_)));
        let p = policy(KeyList::All, KeyList::None, KeyList::None);
        assert_eq!(
            key(Some("q=%7euser&b=1"), &[], &p),
            key(Some("b=1&q=~user"), &[], &p)
        );
        assert_ne!(
            key(Some("q=a%2Bb"), &[], &p).primary,
            key(Some("q=a+b"), &[], &p).primary
        );
        assert_eq!(normalize_purge_path("/%61?b=%31&a=1"), "/a?a=1&b=1");
        assert_eq!(normalize_purge_prefix("/%61?b=%3"), "/a?b=%3");
    }

    #[test]
    fn vary_distinguishes_absent_from_empty() {
        let names = [HeaderName::from_static("accept-language")];
        let mut empty = HeaderMap::new();
        empty.insert("accept-language", HeaderValue::from_static(""));
        assert_ne!(
            with_vary("k", &names, &empty, &KeyPolicy::default()),
            with_vary("k", &names, &HeaderMap::new(), &KeyPolicy::default())
        );
    }

    proptest! {
        // Fuzzing: 10,000 cases each (see edge/README.md for run times).
        #![proptest_config(ProptestConfig::with_cases(crate::fuzz::cases(10_000)))]

        #[test]
        fn never_panics_on_arbitrary_queries_and_cookies(
            query in ".{0,300}",
            cookie in "[ -~]{0,300}",
            list in prop_oneof![Just(KeyList::All), Just(KeyList::None), Just(allow(&["a", "b"]))],
        ) {
            let p = policy(list.clone(), list.clone(), list);
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                headers.insert(header::COOKIE, v);
            }
            let keyed = build(KeyInput { host: "h", path: "/p", query: Some(&query), headers: &headers }, &p);
            prop_assert!(keyed.primary.starts_with("h\n/p"));
        }

        #[test]
        fn normalization_is_idempotent_and_keeps_meaning(text in "[a-zA-Z0-9%/~._+-]{0,40}") {
            let once = normalize_encoding(&text).into_owned();
            prop_assert_eq!(normalize_encoding(&once), once.as_str());
            let decoded = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
            prop_assert_eq!(decoded(&once), decoded(&text));
        }

        #[test]
        fn parameter_order_never_changes_the_key(
            params in proptest::collection::vec(("[a-d]{1,2}", "[a-z0-9%]{0,4}"), 0..8),
            seed in any::<u64>(),
        ) {
            let p = policy(KeyList::All, KeyList::None, KeyList::None);
            let pairs: Vec<String> = params.iter().map(|(n, v)| format!("{n}={v}")).collect();
            let mut shuffled = pairs.clone();
            // A deterministic shuffle driven by the seed.
            let n = shuffled.len();
            for i in 0..n {
                let j = (seed.rotate_left(i as u32) as usize) % n;
                shuffled.swap(i, j);
            }
            let a = key(Some(&pairs.join("&")), &[], &p);
            let b = key(Some(&shuffled.join("&")), &[], &p);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn distinct_selected_values_give_distinct_keys(
            a in proptest::collection::vec(("[ab]", "[a-z=&;]{0,3}"), 0..4),
            b in proptest::collection::vec(("[ab]", "[a-z=&;]{0,3}"), 0..4),
        ) {
            // Values containing separators must not make different selections collide.
            let p = policy(KeyList::None, allow(&["a", "b"]), KeyList::None);
            let to_headers = |pairs: &Vec<(String, String)>| {
                let mut sorted = pairs.clone();
                sorted.sort();
                sorted
            };
            let (sa, sb) = (to_headers(&a), to_headers(&b));
            let pairs_a: Vec<(&str, &str)> = sa.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let pairs_b: Vec<(&str, &str)> = sb.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let ka = key(None, &pairs_a, &p);
            let kb = key(None, &pairs_b, &p);
            // Equal keys only if, header by header, the joined values are equal.
            let joined = |pairs: &[(&str, &str)]| {
                ["a", "b"].map(|n| {
                    let vals: Vec<&str> = pairs.iter().filter(|(k, _)| *k == n).map(|(_, v)| *v).collect();
                    if vals.is_empty() { None } else { Some(vals.join(",")) }
                })
            };
            prop_assert_eq!(ka.primary == kb.primary, joined(&pairs_a) == joined(&pairs_b));
        }
    }
}
