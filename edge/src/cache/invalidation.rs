//! Invalidations: which stored objects a purge path matches, and the log that makes purges
//! linearizable.
//!
//! Paths follow CloudFront's rules (checked by `edgefleet_config::admin::check_path`): start with
//! `/`, case-sensitive, `*` only as the last character. An exact path matches every stored
//! variant of that path (headers, cookies, encodings); query-string variants only through a
//! trailing `*`. Paths are normalized like cache keys (`key::normalize_encoding`), so `/a%62c`
//! purges what `/abc` stored.
//!
//! **Linearizability.** Every stored object carries the *epoch* at which the request that
//! produced its content was sent (a compressed variant carries its source's). A purge takes the
//! next epoch and is logged before anything is removed; from then on:
//! - storing content whose epoch precedes a logged purge matching its path is refused, atomically
//!   with respect to purges (so a fill or a compression in flight never stores the old content);
//! - a lookup finding such an object while the purge is still removing objects treats it as a miss;
//! - once removal is complete, objects still present were not matched (or stored after the purge).
//!
//! So after `POST /invalidations` returns, no variant of content fetched before it is served or
//! stored by this edge. Objects read back from the disk tier carry no epoch; the tombstones the
//! store keeps on disk bury them, and the log's timestamps cover the moments before.
//!
//! Tested here: matching, and the log's rules for stores and lookups around a purge.
use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::SystemTime,
};

use parking_lot::RwLock;

use super::key::{normalize_purge_path, normalize_purge_prefix};

/// The epoch of content whose fetch time is unknown (read back from the disk tier).
pub(crate) const UNKNOWN_EPOCH: u64 = 0;
/// Purges remembered in memory; older ones have completed, so only fills that started before
/// them are affected (they do not store).
const REMEMBERED: usize = 4096;

/// One invalidation path, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PurgePattern {
    /// This path (and query string, if given) exactly.
    Exact(String),
    /// Every path starting with this prefix.
    Prefix(String),
}

impl PurgePattern {
    /// Parses a path already checked against the admin contract's rules.
    pub(crate) fn parse(path: &str) -> Result<Self, String> {
        edgefleet_config::admin::check_path(path)?;
        Ok(match path.strip_suffix('*') {
            None => Self::Exact(normalize_purge_path(path)),
            Some(prefix) => Self::Prefix(normalize_purge_prefix(prefix)),
        })
    }

    pub(crate) fn matches(&self, purge_path: &str) -> bool {
        match self {
            Self::Exact(p) => p == purge_path,
            Self::Prefix(p) => purge_path.starts_with(p.as_str()),
        }
    }
}

struct Logged {
    epoch: u64,
    at: SystemTime,
    patterns: Arc<[PurgePattern]>,
    /// Every object it matched has been removed.
    removed: bool,
}

struct LogState {
    /// The epoch of the latest purge (the current epoch).
    epoch: u64,
    entries: VecDeque<Logged>,
    /// Purges up to this epoch are no longer in `entries`.
    forgotten: u64,
}

/// The purges an edge has applied, in order.
pub(crate) struct PurgeLog {
    state: RwLock<LogState>,
    /// Purges still removing objects: lookups consult the log only while there are any, so a
    /// hit costs one atomic load here.
    removing: AtomicUsize,
}

impl Default for PurgeLog {
    fn default() -> Self {
        Self {
            state: RwLock::new(LogState {
                epoch: UNKNOWN_EPOCH + 1,
                entries: VecDeque::new(),
                forgotten: UNKNOWN_EPOCH + 1,
            }),
            removing: AtomicUsize::new(0),
        }
    }
}

/// Content produced at `epoch` (or, for unknown epochs, stored at `stored_at`) for `purge_path`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Provenance<'a> {
    pub(crate) epoch: u64,
    pub(crate) stored_at: SystemTime,
    pub(crate) purge_path: &'a str,
}

impl Logged {
    fn buries(&self, content: &Provenance<'_>) -> bool {
        let later = if content.epoch == UNKNOWN_EPOCH {
            self.at >= content.stored_at
        } else {
            self.epoch > content.epoch
        };
        later && self.patterns.iter().any(|p| p.matches(content.purge_path))
    }
}

impl PurgeLog {
    /// The epoch to record for content whose request is sent now.
    pub(crate) fn epoch(&self) -> u64 {
        self.state.read().epoch
    }

    /// Runs `store` unless a purge since `content`'s epoch matches it; purges wait meanwhile.
    /// Returns whether it stored.
    pub(crate) fn store_unless_purged(&self, content: &Provenance<'_>, store: impl FnOnce()) -> bool {
        let state = self.state.read();
        let buried = if content.epoch == UNKNOWN_EPOCH {
            state.entries.iter().any(|e| e.buries(content))
        } else {
            // Entries are in epoch order: only the purges since the content's epoch matter.
            content.epoch < state.forgotten
                || state
                    .entries
                    .iter()
                    .rev()
                    .take_while(|e| e.epoch > content.epoch)
                    .any(|e| e.buries(content))
        };
        if !buried {
            store();
        }
        !buried
    }

    /// Whether a purge still removing objects matches content found by a lookup.
    pub(crate) fn being_purged(&self, content: &Provenance<'_>) -> bool {
        self.removing.load(Ordering::Acquire) > 0
            && self
                .state
                .read()
                .entries
                .iter()
                .any(|e| !e.removed && e.buries(content))
    }

    /// Logs a purge; returns its epoch, for [`PurgeLog::removed`].
    pub(crate) fn record(&self, patterns: Arc<[PurgePattern]>) -> u64 {
        let mut state = self.state.write();
        self.removing.fetch_add(1, Ordering::AcqRel);
        state.epoch += 1;
        let epoch = state.epoch;
        state.entries.push_back(Logged {
            epoch,
            at: SystemTime::now(),
            patterns,
            removed: false,
        });
        epoch
    }

    /// Notes that a purge's objects are gone, and forgets the oldest completed purges.
    pub(crate) fn removed(&self, epoch: u64) {
        let mut state = self.state.write();
        if let Some(entry) = state.entries.iter_mut().find(|e| e.epoch == epoch && !e.removed) {
            entry.removed = true;
            self.removing.fetch_sub(1, Ordering::AcqRel);
        }
        while state.entries.len() > REMEMBERED && state.entries.front().is_some_and(|e| e.removed) {
            if let Some(old) = state.entries.pop_front() {
                state.forgotten = old.epoch;
            }
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
    fn equivalent_spellings_match() {
        assert!(
            PurgePattern::parse("/gen/%61bc")
                .expect("valid")
                .matches("/gen/abc")
        );
        assert!(
            PurgePattern::parse("/gen/%61*")
                .expect("valid")
                .matches("/gen/abc")
        );
        assert!(PurgePattern::parse("/a?x=%7e").expect("valid").matches("/a?x=~"));
    }

    #[test]
    fn rejects_bad_paths() {
        assert!(PurgePattern::parse("img/a.png").is_err());
        assert!(PurgePattern::parse("/a*b").is_err());
        assert!(PurgePattern::parse(&format!("/{}", "a".repeat(4_000))).is_err());
    }

    fn content(epoch: u64, path: &str) -> Provenance<'_> {
        Provenance {
            epoch,
            stored_at: SystemTime::now(),
            purge_path: path,
        }
    }

    #[test]
    fn content_fetched_before_a_purge_is_never_stored_after_it() {
        let log = PurgeLog::default();
        let before = log.epoch();
        let purge = log.record([PurgePattern::parse("/a").expect("valid")].into());
        let after = log.epoch();
        let mut stored = Vec::new();
        assert!(!log.store_unless_purged(&content(before, "/a"), || stored.push("old a")));
        assert!(log.store_unless_purged(&content(before, "/b"), || stored.push("old b")));
        assert!(log.store_unless_purged(&content(after, "/a"), || stored.push("new a")));
        assert_eq!(stored, ["old b", "new a"]);
        // A lookup during the removal treats the old object as gone; after it, the store decides.
        assert!(log.being_purged(&content(before, "/a")));
        log.removed(purge);
        assert!(!log.being_purged(&content(before, "/a")));
    }

    #[test]
    fn objects_of_unknown_epoch_are_judged_by_time() {
        let log = PurgeLog::default();
        let old = Provenance {
            epoch: UNKNOWN_EPOCH,
            stored_at: SystemTime::now() - std::time::Duration::from_secs(5),
            purge_path: "/a",
        };
        log.record([PurgePattern::parse("/*").expect("valid")].into());
        assert!(log.being_purged(&old));
        let newer = Provenance {
            stored_at: SystemTime::now() + std::time::Duration::from_secs(5),
            ..old
        };
        assert!(!log.being_purged(&newer));
    }

    #[test]
    fn fills_older_than_the_remembered_purges_do_not_store() {
        let log = PurgeLog::default();
        let ancient = log.epoch();
        for _ in 0..=REMEMBERED {
            let epoch = log.record([PurgePattern::parse("/other").expect("valid")].into());
            log.removed(epoch);
        }
        assert!(!log.store_unless_purged(&content(ancient, "/a"), || {}));
        assert!(log.store_unless_purged(&content(log.epoch(), "/a"), || {}));
    }
}
