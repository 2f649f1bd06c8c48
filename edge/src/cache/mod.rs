//! The HTTP cache. It owns everything about a stored object: lookup, the admission decision,
//! collapsing, the streamed fill, storing and purging. The request path asks it and answers the
//! viewer with what it gets.
//!
//! ```text
//!  lookup ──┬── Fresh ─────────────────────────────────────────────► Hit
//!           ├── Stale ──┬── within stale-while-revalidate ──────────► Hit, refreshed in the background
//!           │           └── fill (revalidate) ──┬── 304 ───────────► RefreshHit (Ready)
//!           │                                   ├── failed + stale-if-error ► Hit (KeepStale)
//!           │                                   └── new response ──┐
//!           └── Miss ───── fill (collapsed) ───────────────────────┴► admission ─┬─ Store ──► Streaming ─► stored
//!                                                                                └─ NoStore(reason) ─► the leader's alone
//! ```
//!
//! Each concern has its module, tested alone: `key` (what a request maps to), `cache_control`
//! and `freshness` (what the origin said, and for how long that holds), `admission` (store or
//! not, and why), `collapse` (one fill per key), `stream` (one body, many readers), `fill` (the
//! origin request and what becomes of it), `object` and `store` (what is kept, and where; foyer
//! evicts), `invalidation` (purges and their log).
pub(crate) mod admission;
pub(crate) mod cache_control;
mod collapse;
pub(crate) mod fill;
pub(crate) mod freshness;
pub(crate) mod invalidation;
pub(crate) mod key;
#[cfg(test)]
mod linearizability;
pub(crate) mod object;
pub(crate) mod store;
pub(crate) mod stream;

use std::{sync::Arc, time::SystemTime};

use edgefleet_config::{CacheKey as KeyPolicy, admin::Purged};
use http::{HeaderMap, HeaderValue};
use tokio::sync::oneshot;

use self::{
    admission::NoStore,
    collapse::{Flights, Join},
    fill::{FillJob, Handoff, Landing, Outcome, SharedResponse},
    freshness::{Freshness, Policy},
    invalidation::{Provenance, PurgeLog, PurgePattern},
    object::{CachedObject, Entry},
    store::Store,
    stream::BodyReader,
};
use crate::{
    error::Result,
    metrics::{AdmissionLabels, Metrics},
    origin::{Fetched, OriginError},
};

/// What a lookup found.
pub(crate) enum Lookup {
    /// Servable as is.
    Fresh(Found),
    /// Past its TTL: revalidate it; it may be served meanwhile or if the origin fails.
    Stale {
        found: Found,
        while_revalidate: bool,
        if_error: bool,
    },
    /// Nothing stored: fill under `key`.
    Miss { key: String },
}

/// A stored object and the key it was found under.
pub(crate) struct Found {
    pub(crate) object: Arc<CachedObject>,
    pub(crate) key: String,
}

/// A request as the cache sees it.
pub(crate) struct Ask<'a> {
    pub(crate) primary: &'a str,
    /// The viewer's request headers: `Vary` selects a variant with them.
    pub(crate) headers: &'a HeaderMap,
    pub(crate) key_policy: &'a KeyPolicy,
    pub(crate) policy: &'a Policy<'a>,
}

/// What a fill gave one viewer.
pub(crate) enum Filled {
    /// A response streaming from the origin, shared: follow it with the reader (the leader's,
    /// registered before the first byte), or a new one. `set_cookie` are the leader's own cookies,
    /// kept out of the stored copy.
    Streaming {
        shared: Arc<SharedResponse>,
        reader: Option<BodyReader>,
        set_cookie: Vec<HeaderValue>,
    },
    /// A complete object: a stale one the origin confirmed (304), with the leader's cookies.
    Refreshed {
        object: Arc<CachedObject>,
        set_cookie: Vec<HeaderValue>,
    },
    /// The origin failed while the stale object may be served: serve it.
    Stale,
    /// The response may not be shared. The viewer that started the fill has it; the others
    /// fetch on their own.
    NotShared {
        reason: NoStore,
        response: Option<Fetched>,
    },
    Failed(OriginError),
}

/// The cache shared by all requests.
pub(crate) struct Cache {
    pub(crate) store: Store,
    flights: Flights<Outcome>,
    purges: PurgeLog,
    metrics: Arc<Metrics>,
}

impl Cache {
    pub(crate) fn new(store: Store, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            flights: Flights::default(),
            purges: PurgeLog::default(),
            metrics,
        }
    }

    /// Finds the object for a request: the primary key, or the variant its `Vary` selects.
    pub(crate) async fn lookup(&self, ask: &Ask<'_>) -> Lookup {
        let (key, object) = match self.store.get(ask.primary).await {
            None => {
                return Lookup::Miss {
                    key: ask.primary.to_owned(),
                };
            }
            Some(Entry::Vary { names, .. }) => {
                let key = key::with_vary(ask.primary, &names, ask.headers, ask.key_policy);
                match self.store.get(&key).await {
                    Some(Entry::Object(object)) => (key, object),
                    Some(Entry::Vary { .. }) | None => return Lookup::Miss { key },
                }
            }
            Some(Entry::Object(object)) => (ask.primary.to_owned(), object),
        };
        self.judge(key, object, ask.policy)
    }

    /// Looks up an exact key (a compressed variant, an error page).
    pub(crate) async fn lookup_key(&self, key: &str, policy: &Policy<'_>) -> Lookup {
        match self.store.get(key).await {
            Some(Entry::Object(object)) => self.judge(key.to_owned(), object, policy),
            Some(Entry::Vary { .. }) | None => Lookup::Miss { key: key.to_owned() },
        }
    }

    fn judge(&self, key: String, object: Arc<CachedObject>, policy: &Policy<'_>) -> Lookup {
        if self.purges.being_purged(&object.provenance()) {
            return Lookup::Miss { key };
        }
        let age = object.age(SystemTime::now());
        let ttl = policy.ttl(object.status, &object.origin).unwrap_or(0);
        let found = Found { object, key };
        match freshness::evaluate(age, ttl, &found.object.origin, policy.stale_if_error) {
            Freshness::Fresh => Lookup::Fresh(found),
            Freshness::Stale {
                while_revalidate,
                if_error,
            } => Lookup::Stale {
                found,
                while_revalidate,
                if_error,
            },
        }
    }

    /// Joins (or starts) the fill for `key` and returns what it gives this viewer. A response
    /// that varies on a header whose value differs for this viewer makes it fill its own variant
    /// (collapsed with others wanting the same one).
    pub(crate) async fn fill(self: &Arc<Self>, ask: &Ask<'_>, key: &str, job: FillJob) -> Filled {
        let filled = self.fill_once(key, &job).await;
        if let Filled::Streaming { shared, .. } = &filled {
            let own = shared.variant_for(ask.primary, ask.headers, ask.key_policy);
            if own != shared.stored_key {
                return match self.fill_once(&own, &job).await {
                    Filled::Streaming { shared, .. } if shared.stored_key != own => Filled::NotShared {
                        reason: NoStore::VaryAll,
                        response: None,
                    },
                    filled => filled,
                };
            }
        }
        filled
    }

    async fn fill_once(self: &Arc<Self>, key: &str, job: &FillJob) -> Filled {
        let (flight, handoff) = match self.flights.join(key, &job.purge_path) {
            Join::Leader(lead) => {
                let flight = lead.flight().clone();
                let (tx, rx) = oneshot::channel();
                let landing = Landing {
                    cache: self.clone(),
                    lead,
                };
                tokio::spawn(fill::run(landing, job.clone(), tx));
                (flight, Some(rx))
            }
            Join::Follower(flight) => (flight, None),
        };
        let outcome = flight.outcome().await;
        // The fill hands over before it publishes.
        let handoff = match handoff {
            Some(rx) => rx.await.ok(),
            None => None,
        };
        match (outcome, handoff) {
            (Some(Outcome::Streaming(shared)), Some(Handoff::Reader(reader, set_cookie))) => {
                Filled::Streaming {
                    shared,
                    reader: Some(reader),
                    set_cookie,
                }
            }
            (Some(Outcome::Streaming(shared)), _) => Filled::Streaming {
                shared,
                reader: None,
                set_cookie: Vec::new(),
            },
            (Some(Outcome::Ready(object)), Some(Handoff::Cookies(set_cookie))) => {
                Filled::Refreshed { object, set_cookie }
            }
            (Some(Outcome::Ready(object)), _) => Filled::Refreshed {
                object,
                set_cookie: Vec::new(),
            },
            (Some(Outcome::KeepStale), _) => Filled::Stale,
            (Some(Outcome::NotShared(reason)), Some(Handoff::Response(response))) => Filled::NotShared {
                reason,
                response: Some(response),
            },
            (Some(Outcome::NotShared(reason)), _) => Filled::NotShared {
                reason,
                response: None,
            },
            (Some(Outcome::Failed(e)), _) => Filled::Failed(e),
            (None, _) => Filled::Failed(OriginError::Unreachable {
                origin: "fill".into(),
                reason: "the fill ended without a response".into(),
            }),
        }
    }

    /// Refreshes a stale object in the background, unless a refresh is already running.
    pub(crate) fn refresh_in_background(self: &Arc<Self>, key: &str, job: FillJob) {
        if let Join::Leader(lead) = self.flights.join(key, &job.purge_path) {
            let (tx, _) = oneshot::channel();
            let landing = Landing {
                cache: self.clone(),
                lead,
            };
            tokio::spawn(fill::run(landing, job, tx));
        }
    }

    /// A variant derived from a stored object (a compressed one), made once however many ask
    /// (on a blocking thread) and stored under `key` unless a purge matched its source since the
    /// source was fetched. `None` when it cannot be made.
    ///
    /// Only derivations from content of one epoch are collapsed: a viewer holding content fetched
    /// after a purge never waits for (and is never served) a variant of content from before it.
    pub(crate) async fn derive<F>(
        self: &Arc<Self>,
        key: &str,
        source: &Arc<CachedObject>,
        make: F,
    ) -> Option<Arc<CachedObject>>
    where
        F: FnOnce(&CachedObject) -> std::io::Result<CachedObject> + Send + 'static,
    {
        let flight_key = format!("{key}\n@{}", source.epoch);
        let flight = match self.flights.join(&flight_key, &source.purge_path) {
            Join::Leader(lead) => {
                let flight = lead.flight().clone();
                let landing = Landing {
                    cache: self.clone(),
                    lead,
                };
                let (key, source) = (key.to_owned(), source.clone());
                tokio::spawn(async move {
                    let from = source.clone();
                    match tokio::task::spawn_blocking(move || make(&from)).await {
                        Ok(Ok(variant)) => {
                            let variant = Arc::new(variant);
                            let content = source.provenance();
                            if !landing
                                .cache
                                .store_fill(&content, vec![(key, Entry::Object(variant.clone()))])
                            {
                                landing.cache.count(Err(NoStore::Purged));
                            }
                            landing.lead.publish(Outcome::Ready(variant));
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "cannot derive a variant; serving the object itself")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "deriving a variant failed; serving the object itself")
                        }
                    }
                });
                flight
            }
            Join::Follower(flight) => flight,
        };
        match flight.outcome().await {
            Some(Outcome::Ready(variant)) => Some(variant),
            _ => None,
        }
    }

    /// Stores what a fill produced, unless a purge matched it since its content was fetched.
    /// Returns whether it was stored.
    fn store_fill(&self, content: &Provenance<'_>, entries: Vec<(String, Entry)>) -> bool {
        self.purges.store_unless_purged(content, || {
            for (key, entry) in entries {
                self.store.insert(key, entry);
            }
        })
    }

    /// Counts an admission: stored, or the reason not.
    fn count(&self, admission: std::result::Result<(), NoStore>) {
        let labels = match admission {
            Ok(()) => AdmissionLabels {
                decision: "store",
                reason: "",
            },
            Err(reason) => AdmissionLabels {
                decision: "no-store",
                reason: reason.as_str(),
            },
        };
        self.metrics.admissions.get_or_create(&labels).inc();
    }

    /// Removes every object and in-flight fill matching the paths. Returns once they are gone:
    /// from then on nothing fetched before the purge is served or stored (see `invalidation`).
    pub(crate) async fn purge(&self, patterns: &[(PurgePattern, String)]) -> Result<Purged> {
        let parsed: Arc<[PurgePattern]> = patterns.iter().map(|(p, _)| p.clone()).collect();
        let epoch = self.purges.record(parsed.clone());
        let fills = self.flights.detach(&parsed);
        let objects = self.store.purge(patterns).await?;
        self.purges.removed(epoch);
        Ok(Purged { objects, fills })
    }

    /// Fills in progress.
    pub(crate) fn fills_in_flight(&self) -> usize {
        self.flights.len()
    }
}
