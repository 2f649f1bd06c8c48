//! `Range` requests (RFC 9110 §14) against a complete object of known length.
//!
//! One satisfiable range gets 206. Several ranges get the whole object with 200 (allowed by
//! RFC 9110, and what CloudFront does for unordered or overlapping ones); a header with invalid
//! syntax is ignored (200); a well-formed header with no satisfiable range gets 416.

/// What to answer to a `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeAnswer {
    /// Serve everything with 200.
    Full,
    /// Serve these bytes (inclusive) with 206.
    Partial { first: u64, last: u64 },
    /// 416 with `Content-Range: bytes */<len>`.
    Unsatisfiable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-` or `first-last`.
    From { first: u64, last: Option<u64> },
    /// `-suffix`: the last `suffix` bytes.
    Suffix(u64),
}

/// Decides how to answer `Range: <value>` for an object of `len` bytes.
pub(crate) fn answer(value: &[u8], len: u64) -> RangeAnswer {
    let Some(specs) = parse(value) else {
        return RangeAnswer::Full;
    };
    let satisfiable: Vec<(u64, u64)> = specs.iter().filter_map(|s| resolve(*s, len)).collect();
    match (specs.len(), satisfiable.as_slice()) {
        (_, []) => RangeAnswer::Unsatisfiable,
        (1, [(first, last)]) => RangeAnswer::Partial {
            first: *first,
            last: *last,
        },
        _ => RangeAnswer::Full,
    }
}

fn resolve(spec: Spec, len: u64) -> Option<(u64, u64)> {
    match spec {
        Spec::From { first, last } => {
            (first < len).then(|| (first, last.map_or(len - 1, |l| l.min(len - 1))))
        }
        Spec::Suffix(n) => (n > 0 && len > 0).then(|| (len - n.min(len), len - 1)),
    }
}

/// `bytes=spec[,spec]*`; `None` for anything malformed.
fn parse(value: &[u8]) -> Option<Vec<Spec>> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (unit, set) = value.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    for part in set.split(',') {
        let part = part.trim();
        if part.is_empty() {
            // Empty list elements are allowed by the list syntax.
            continue;
        }
        // A request asking for thousands of ranges is abuse, not a real client.
        if specs.len() >= 100 {
            return None;
        }
        let (first, last) = part.split_once('-')?;
        let (first, last) = (first.trim(), last.trim());
        let spec = if first.is_empty() {
            Spec::Suffix(number(last)?)
        } else {
            let first = number(first)?;
            let last = if last.is_empty() {
                None
            } else {
                Some(number(last)?)
            };
            if last.is_some_and(|l| l < first) {
                return None;
            }
            Spec::From { first, last }
        };
        specs.push(spec);
    }
    (!specs.is_empty()).then_some(specs)
}

/// `1*DIGIT`, saturating: an absurdly large position is just past any object.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn a(value: &str, len: u64) -> RangeAnswer {
        answer(value.as_bytes(), len)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(a("bytes=0-9", 100), RangeAnswer::Partial { first: 0, last: 9 });
        assert_eq!(a("bytes=90-", 100), RangeAnswer::Partial { first: 90, last: 99 });
        assert_eq!(a("bytes=-10", 100), RangeAnswer::Partial { first: 90, last: 99 });
        assert_eq!(a("bytes=-1000", 100), RangeAnswer::Partial { first: 0, last: 99 });
        assert_eq!(
            a("bytes=50-1000", 100),
            RangeAnswer::Partial { first: 50, last: 99 }
        );
        assert_eq!(a("Bytes = 1-1", 100), RangeAnswer::Partial { first: 1, last: 1 });
    }

    #[test]
    fn unsatisfiable_and_invalid() {
        assert_eq!(a("bytes=100-", 100), RangeAnswer::Unsatisfiable);
        assert_eq!(a("bytes=-0", 100), RangeAnswer::Unsatisfiable);
        assert_eq!(a("bytes=0-0", 0), RangeAnswer::Unsatisfiable);
        assert_eq!(
            a("bytes=99999999999999999999999-", 100),
            RangeAnswer::Unsatisfiable
        );
        for invalid in [
            "bytes=9-1",
            "items=0-1",
            "bytes=a-b",
            "bytes=",
            "bytes=-",
            "0-1",
            "bytes=1--2",
        ] {
            assert_eq!(a(invalid, 100), RangeAnswer::Full, "{invalid}");
        }
    }

    #[test]
    fn several_ranges_get_the_whole_object() {
        assert_eq!(a("bytes=0-1,5-6", 100), RangeAnswer::Full);
        assert_eq!(a("bytes=0-1,500-600", 100), RangeAnswer::Full);
        assert_eq!(a("bytes=500-600,700-", 100), RangeAnswer::Unsatisfiable);
    }

    proptest! {
        // Fuzzing: 20,000 arbitrary headers and 20,000 generated ranges (see edge/README.md).
        #![proptest_config(ProptestConfig::with_cases(crate::fuzz::cases(20_000)))]

        #[test]
        fn never_panics_and_partial_ranges_are_within_the_object(value in proptest::collection::vec(any::<u8>(), 0..64), len in 0u64..1_000_000) {
            if let RangeAnswer::Partial { first, last } = answer(&value, len) {
                prop_assert!(first <= last && last < len);
            }
        }

        #[test]
        fn generated_ranges_resolve_exactly(first in 0u64..2000, span in 0u64..2000, len in 1u64..3000, suffix: bool) {
            let value = if suffix { format!("bytes=-{span}") } else { format!("bytes={first}-{}", first + span) };
            let got = answer(value.as_bytes(), len);
            let expected = if suffix {
                if span == 0 { RangeAnswer::Unsatisfiable } else { RangeAnswer::Partial { first: len - span.min(len), last: len - 1 } }
            } else if first >= len {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Partial { first, last: (first + span).min(len - 1) }
            };
            prop_assert_eq!(got, expected);
        }
    }
}
