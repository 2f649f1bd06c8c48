//! Request collapsing: concurrent misses (or revalidations) for one key make one fill.
//!
//! The first request for a key becomes the leader of a [`Flight`] and gets its [`Lead`], the
//! only way to publish the outcome (the fill defines what that is); the others join as followers
//! and wait for it. A lead dropped without publishing (a fill that panicked or was cancelled)
//! releases the followers with no outcome, so nobody waits forever. A flight leaves the registry
//! when its fill lands, or when a purge detaches it, so later requests start their own.
//! Nothing here knows about HTTP: this is only the lock, and what waiting on it means.
//!
//! Tested here: one leader per key, followers seeing the outcome, detaching, and that a fill that
//! vanishes without an outcome never leaves its followers waiting.
use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::invalidation::PurgePattern;

/// The fills in progress, by key.
pub(crate) struct Flights<T> {
    map: Mutex<HashMap<String, Arc<Flight<T>>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

/// The role a request gets for a key.
pub(crate) enum Join<T> {
    /// Start the fill.
    Leader(Lead<T>),
    /// Wait for the leader's fill.
    Follower(Arc<Flight<T>>),
}

impl<T: Clone> Flights<T> {
    pub(crate) fn join(&self, key: &str, purge_path: &str) -> Join<T> {
        let mut map = self.map.lock();
        if let Some(flight) = map.get(key) {
            return Join::Follower(flight.clone());
        }
        let (tx, outcome) = watch::channel(None);
        let flight = Arc::new(Flight {
            key: key.to_owned(),
            purge_path: purge_path.to_owned(),
            outcome,
        });
        map.insert(key.to_owned(), flight.clone());
        Join::Leader(Lead { flight, tx })
    }

    /// Removes a flight so later requests start their own; only if it is still this flight.
    pub(crate) fn land(&self, flight: &Arc<Flight<T>>) {
        let mut map = self.map.lock();
        if map.get(&flight.key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(&flight.key);
        }
    }

    /// Removes the flights matching a purge, so requests after it start a fresh fill. Returns how
    /// many.
    pub(crate) fn detach(&self, patterns: &[PurgePattern]) -> usize {
        let mut map = self.map.lock();
        let before = map.len();
        map.retain(|_, flight| !patterns.iter().any(|p| p.matches(&flight.purge_path)));
        before - map.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// One fill in progress.
pub(crate) struct Flight<T> {
    key: String,
    purge_path: String,
    outcome: watch::Receiver<Option<T>>,
}

impl<T: Clone> Flight<T> {
    /// The key the flight fills.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Waits for the fill's outcome; `None` when the fill ended without one.
    pub(crate) async fn outcome(&self) -> Option<T> {
        let mut rx = self.outcome.clone();
        rx.wait_for(Option::is_some).await.ok().and_then(|o| o.clone())
    }
}

/// The leader's hold on a flight: what publishes its outcome.
pub(crate) struct Lead<T> {
    flight: Arc<Flight<T>>,
    tx: watch::Sender<Option<T>>,
}

impl<T: Clone> Lead<T> {
    pub(crate) fn flight(&self) -> &Arc<Flight<T>> {
        &self.flight
    }

    pub(crate) fn publish(&self, outcome: T) {
        self.tx.send_replace(Some(outcome));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first and the second to join a key.
    fn leader_and_follower(flights: &Flights<u32>) -> (Lead<u32>, Arc<Flight<u32>>) {
        let Join::Leader(leader) = flights.join("k", "/a") else {
            panic!("first is leader")
        };
        let Join::Follower(follower) = flights.join("k", "/a") else {
            panic!("second follows")
        };
        (leader, follower)
    }

    #[tokio::test]
    async fn one_leader_per_key_and_followers_see_its_outcome() {
        let flights = Flights::<u32>::default();
        let (leader, follower) = leader_and_follower(&flights);
        let waiting = tokio::spawn(async move { follower.outcome().await });
        leader.publish(7);
        assert_eq!(waiting.await.expect("joined"), Some(7));
        assert_eq!(leader.flight().outcome().await, Some(7));
    }

    #[tokio::test]
    async fn detached_flights_let_new_fills_start() {
        let flights = Flights::<u32>::default();
        let Join::Leader(old) = flights.join("k", "/a") else {
            panic!("first is leader")
        };
        assert_eq!(flights.detach(&[PurgePattern::parse("/a").expect("valid")]), 1);
        assert!(matches!(flights.join("k", "/a"), Join::Leader(_)));
        // Landing the old flight must not remove the new one.
        flights.land(old.flight());
        assert_eq!(flights.len(), 1);
    }

    #[tokio::test]
    async fn a_vanished_fill_releases_its_followers() {
        let flights = Flights::<u32>::default();
        let (leader, follower) = leader_and_follower(&flights);
        let waiting = tokio::spawn(async move { follower.outcome().await });
        drop(leader);
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the follower is released")
            .expect("joined");
        assert_eq!(outcome, None);
    }
}
