//! The HTTP cache: keys, freshness, storage and collapsing, each in its own module, joined here
//! into lookups whose outcomes are explicit states.
pub(crate) mod cache_control;
pub(crate) mod collapse;
pub(crate) mod freshness;
pub(crate) mod invalidation;
pub(crate) mod key;
pub(crate) mod object;
pub(crate) mod store;

use std::{collections::HashMap, sync::Arc, time::SystemTime};

use edgefleet_config::{CacheKey as KeyPolicy, DEFAULT_ERROR_CACHING_MIN_TTL, ErrorResponse};

use http::HeaderMap;
use parking_lot::RwLock;

use self::{
    collapse::{Flight, Flights},
    freshness::{Freshness, OriginFreshness, StatusClass, TtlPolicy},
    invalidation::PurgePattern,
    object::{CachedObject, Entry},
    store::Store,
};
use crate::error::Result;

/// How a stored object's TTL is decided for one request: the behavior's policy for successes,
/// the error caching TTLs for errors.
pub(crate) struct Policy<'a> {
    pub(crate) ttl: TtlPolicy,
    pub(crate) stale_if_error: u64,
    pub(crate) error_responses: &'a HashMap<u16, ErrorResponse>,
}

impl Policy<'_> {
    pub(crate) fn ttl_of(&self, object: &CachedObject) -> u64 {
        self.ttl_for(object.class, object.status.as_u16(), &object.origin)
    }

    pub(crate) fn ttl_for(&self, class: StatusClass, status: u16, origin: &OriginFreshness) -> u64 {
        match class {
            StatusClass::Error => freshness::error_ttl(origin, self.error_caching_min_ttl(status)),
            StatusClass::Success | StatusClass::Never => freshness::ttl(origin, &self.ttl),
        }
    }

    /// The configured error caching TTL for a status, 10 s by default.
    pub(crate) fn error_caching_min_ttl(&self, status: u16) -> u64 {
        self.error_responses
            .get(&status)
            .map_or(DEFAULT_ERROR_CACHING_MIN_TTL, |e| e.error_caching_min_ttl)
    }
}

/// What a lookup found.
pub(crate) enum Lookup {
    /// Fresh: serve it (found under this key).
    Hit(Arc<CachedObject>, String),
    /// Past its TTL: revalidate under `key`; it may be served meanwhile or on error.
    Stale {
        object: Arc<CachedObject>,
        key: String,
        while_revalidate: bool,
        if_error: bool,
    },
    /// Nothing stored: fill under `key`.
    Miss { key: String },
}

/// The cache shared by all requests.
pub(crate) struct Cache {
    pub(crate) store: Store,
    pub(crate) flights: Flights,
    /// Fills store under the read side, purges mark flights under the write side: a fill either
    /// stores before a purge scans (and is removed by it) or sees the purge and does not store.
    purge_lock: RwLock<()>,
}

impl Cache {
    pub(crate) fn new(store: Store) -> Self {
        Self {
            store,
            flights: Flights::default(),
            purge_lock: RwLock::new(()),
        }
    }

    /// Finds the object for a request: the primary key, or the variant its `Vary` selects.
    pub(crate) async fn lookup(
        &self,
        primary: &str,
        headers: &HeaderMap,
        key_policy: &KeyPolicy,
        policy: &Policy<'_>,
    ) -> Lookup {
        let (key, entry) = match self.store.get(primary).await {
            None => {
                return Lookup::Miss {
                    key: primary.to_owned(),
                };
            }
            Some(Entry::Vary { names, .. }) => {
                let key = key::with_vary(primary, &names, headers, key_policy);
                match self.store.get(&key).await {
                    Some(Entry::Object(object)) => (key, object),
                    Some(Entry::Vary { .. }) | None => return Lookup::Miss { key },
                }
            }
            Some(Entry::Object(object)) => (primary.to_owned(), object),
        };
        Self::judge(key, entry, policy)
    }

    /// Looks up an exact key (a compressed variant, an error page).
    pub(crate) async fn lookup_key(&self, key: &str, policy: &Policy<'_>) -> Lookup {
        match self.store.get(key).await {
            Some(Entry::Object(object)) => Self::judge(key.to_owned(), object, policy),
            Some(Entry::Vary { .. }) | None => Lookup::Miss { key: key.to_owned() },
        }
    }

    fn judge(key: String, object: Arc<CachedObject>, policy: &Policy<'_>) -> Lookup {
        let age = object.age(SystemTime::now());
        match freshness::evaluate(age, policy.ttl_of(&object), &object.origin, policy.stale_if_error) {
            Freshness::Fresh => Lookup::Hit(object, key),
            Freshness::Stale {
                while_revalidate,
                if_error,
            } => Lookup::Stale {
                object,
                key,
                while_revalidate,
                if_error,
            },
        }
    }

    /// Stores what a fill produced, unless a purge matched the flight meanwhile. Returns whether
    /// it was stored.
    pub(crate) fn store_fill(&self, flight: &Flight, entries: Vec<(String, Entry)>) -> bool {
        let _no_purge_now = self.purge_lock.read();
        if flight.purged() {
            return false;
        }
        for (key, entry) in entries {
            self.store.insert(key, entry);
        }
        true
    }

    /// Removes every object and in-flight fill matching the paths. Returns once they are gone.
    pub(crate) async fn purge(&self, patterns: &[(PurgePattern, String)]) -> Result<PurgeCount> {
        let parsed: Vec<PurgePattern> = patterns.iter().map(|(p, _)| p.clone()).collect();
        let fills = {
            let _exclusive = self.purge_lock.write();
            self.flights.purge(&parsed)
        };
        let objects = self.store.purge(patterns).await?;
        Ok(PurgeCount { objects, fills })
    }
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PurgeCount {
    /// Objects removed from memory (objects on disk are buried by tombstones and not counted).
    pub(crate) objects: usize,
    /// Fills in progress that will not be stored.
    pub(crate) fills: usize,
}
