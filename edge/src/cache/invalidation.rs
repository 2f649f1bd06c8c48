//! Invalidation paths (CloudFront's rules): start with `/`, case-sensitive, at most 4,000
//! characters, `*` only as the last character matching zero or more characters. An exact path
//! matches every stored variant of that path (headers, cookies, encodings); query-string variants
//! only through a trailing `*`.
use super::key::normalize_purge_path;

/// The longest invalidation path accepted.
pub(crate) const MAX_PATH_LEN: usize = 4_000;

/// One invalidation path, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PurgePattern {
    /// This path (and query string, if given) exactly.
    Exact(String),
    /// Every path starting with this prefix.
    Prefix(String),
}

impl PurgePattern {
    pub(crate) fn parse(path: &str) -> Result<Self, String> {
        if !path.starts_with('/') {
            return Err(format!("{path:?} must start with /"));
        }
        if path.len() > MAX_PATH_LEN {
            return Err(format!("a path is longer than {MAX_PATH_LEN} characters"));
        }
        match path.find('*') {
            None => Ok(Self::Exact(normalize_purge_path(path))),
            Some(i) if i == path.len() - 1 => Ok(Self::Prefix(path[..i].to_owned())),
            Some(_) => Err(format!("{path:?}: '*' is allowed only as the last character")),
        }
    }

    pub(crate) fn is_wildcard(&self) -> bool {
        matches!(self, Self::Prefix(_))
    }

    pub(crate) fn matches(&self, purge_path: &str) -> bool {
        match self {
            Self::Exact(p) => p == purge_path,
            Self::Prefix(p) => purge_path.starts_with(p.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_prefix() {
        let exact = PurgePattern::parse("/img/a.png").expect("valid");
        assert!(exact.matches("/img/a.png"));
        assert!(!exact.matches("/img/a.png?v=2"));
        assert!(!exact.matches("/IMG/a.png"));
        let prefix = PurgePattern::parse("/img/*").expect("valid");
        assert!(prefix.matches("/img/a.png?v=2") && prefix.matches("/img/") && !prefix.matches("/im"));
        assert!(PurgePattern::parse("/*").expect("valid").matches("/anything"));
        let query = PurgePattern::parse("/a?b=1&a=2").expect("valid");
        assert!(query.matches("/a?a=2&b=1"));
    }

    #[test]
    fn rejects_bad_paths() {
        assert!(PurgePattern::parse("img/a.png").is_err());
        assert!(PurgePattern::parse("/a*b").is_err());
        assert!(PurgePattern::parse(&format!("/{}", "a".repeat(MAX_PATH_LEN))).is_err());
    }
}
