//! Behavior selection: path patterns in listed order, first match wins, else the default.
//! `*` matches any run of characters (including `/`), `?` exactly one; a leading `/` on either
//! side makes no difference; matching is case-sensitive (CloudFront's rules).

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathPattern(Vec<char>);

impl PathPattern {
    pub(crate) fn new(pattern: &str) -> Self {
        Self(pattern.trim_start_matches('/').chars().collect())
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        let path: Vec<char> = path.trim_start_matches('/').chars().collect();
        glob(&self.0, &path)
    }
}

/// Wildcard matching with a single backtrack point: linear for the common patterns, and at
/// worst O(pattern × path), never exponential.
fn glob(pattern: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudfront_examples() {
        let m = |pattern: &str, path: &str| PathPattern::new(pattern).matches(path);
        assert!(m("/images/*.jpg", "/images/a.jpg"));
        assert!(m("images/*.jpg", "/images/sub/dir/a.jpg"));
        assert!(!m("/images/*.jpg", "/images/a.png"));
        assert!(m("/*.gif", "/a/b.gif"));
        assert!(m("/a?c", "/abc") && !m("/a?c", "/ac"));
        assert!(!m("/Images/*", "/images/a"));
        assert!(m("*", "/") && m("/api/*", "/api/") && !m("/api/*", "/api"));
        assert!(m("/a*b*c", "/aXbYbZc") && !m("/a*b*c", "/aXbYbZ"));
    }
}
