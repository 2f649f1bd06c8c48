//! Request collapsing: concurrent misses (or revalidations) for one key make one origin request.
//!
//! The first request for a key becomes the leader of a [`Flight`] and starts the fill in its own
//! task, so a viewer that disconnects never cancels what others wait for. Followers wait on the
//! flight's [`Phase`]. A body is shared through [`SharedBody`]: the fill appends chunks, every
//! reader follows at its own pace from the start. While the object is being stored the chunks are
//! kept (the stored copy is made of them); when it is not (too large), chunks every reader has
//! passed are dropped and the fill waits for the slowest reader, so memory stays bounded.
use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, StatusCode};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use super::{
    freshness::{OriginFreshness, StatusClass},
    invalidation::PurgePattern,
    object::CachedObject,
};
use crate::origin::OriginError;

/// Bytes a non-stored body may run ahead of its slowest reader.
const WINDOW: u64 = 4 << 20;

/// The fills in progress, by key.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, Arc<Flight>>>,
}

/// The role a request gets for a key.
pub(crate) enum Join {
    /// Start the fill.
    Leader(Arc<Flight>),
    /// Wait for the leader's fill.
    Follower(Arc<Flight>),
}

impl Flights {
    pub(crate) fn join(&self, key: &str, purge_path: &str) -> Join {
        let mut map = self.map.lock();
        if let Some(flight) = map.get(key) {
            return Join::Follower(flight.clone());
        }
        let flight = Arc::new(Flight::new(key, purge_path));
        map.insert(key.to_owned(), flight.clone());
        Join::Leader(flight)
    }

    /// Removes a flight so later requests start their own; only if it is still this flight.
    pub(crate) fn land(&self, flight: &Arc<Flight>) {
        let mut map = self.map.lock();
        if map.get(&flight.key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(&flight.key);
        }
    }

    /// Marks matching flights as purged (their result will not be stored) and removes them, so
    /// requests after the purge start a fresh fill.
    pub(crate) fn purge(&self, patterns: &[PurgePattern]) -> usize {
        let mut map = self.map.lock();
        let before = map.len();
        map.retain(|_, flight| {
            let hit = patterns.iter().any(|p| p.matches(&flight.purge_path));
            if hit {
                flight.purged.store(true, Ordering::SeqCst);
            }
            !hit
        });
        before - map.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// One fill in progress.
pub(crate) struct Flight {
    key: String,
    purge_path: String,
    purged: AtomicBool,
    phase: watch::Sender<Phase>,
}

/// Where a fill stands, as followers see it.
#[derive(Clone)]
pub(crate) enum Phase {
    Pending,
    /// A cacheable response is streaming; read it from the shared body.
    Streaming(Arc<SharedResponse>),
    /// A complete object: revalidated by a 304, or a compressed variant.
    Ready(Arc<CachedObject>),
    /// The origin answered 5xx to a revalidation: serve the stale object (stale-if-error).
    KeepStale,
    /// The response may not be shared (private, uncacheable): fetch on your own.
    Pass,
    /// No response from the origin.
    Failed(OriginError),
}

impl Flight {
    fn new(key: &str, purge_path: &str) -> Self {
        Self {
            key: key.to_owned(),
            purge_path: purge_path.to_owned(),
            purged: AtomicBool::new(false),
            phase: watch::Sender::new(Phase::Pending),
        }
    }

    pub(crate) fn purged(&self) -> bool {
        self.purged.load(Ordering::SeqCst)
    }

    pub(crate) fn publish(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// Waits until the fill has a result. A fill task that vanished without one reads as a
    /// failure, so no follower waits forever.
    pub(crate) async fn outcome(&self) -> Phase {
        let mut rx = self.phase.subscribe();
        match rx.wait_for(|p| !matches!(p, Phase::Pending)).await {
            Ok(phase) => phase.clone(),
            Err(_) => Phase::Failed(OriginError::Unreachable {
                origin: "fill".into(),
                reason: "the fill ended without a response".into(),
            }),
        }
    }
}

/// A response being received from the origin and shared with every waiting viewer.
pub(crate) struct SharedResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// How the object will be stored, body aside.
    pub(crate) stored: StoredHead,
    /// The key the object will be stored under (primary, or extended by `Vary`).
    pub(crate) stored_key: String,
    /// The `Vary` header names, when the response had them.
    pub(crate) vary: Option<Arc<[HeaderName]>>,
    /// The body length announced by the origin.
    pub(crate) content_length: Option<u64>,
    pub(crate) body: Arc<SharedBody>,
}

/// What a stored object records besides status, headers and body.
#[derive(Clone)]
pub(crate) struct StoredHead {
    pub(crate) stored_at: SystemTime,
    pub(crate) initial_age: Duration,
    pub(crate) origin: OriginFreshness,
    pub(crate) class: StatusClass,
    pub(crate) purge_path: Box<str>,
}

impl SharedResponse {
    /// The object this response becomes with its complete body.
    pub(crate) fn object(&self, body: Bytes) -> CachedObject {
        CachedObject {
            status: self.status,
            headers: self.headers.clone(),
            body,
            stored_at: self.stored.stored_at,
            initial_age: self.stored.initial_age,
            origin: self.stored.origin,
            class: self.stored.class,
            purge_path: self.stored.purge_path.clone(),
        }
    }
}

/// Why a shared body ended early.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BodyError(pub(crate) Arc<str>);

#[derive(Default)]
pub(crate) struct SharedBody {
    state: Mutex<BodyState>,
    readable: Notify,
    writable: Notify,
}

#[derive(Default)]
struct BodyState {
    chunks: VecDeque<Bytes>,
    /// Position of `chunks[0]` in the whole body's chunk sequence.
    first: usize,
    /// Bytes currently held in `chunks`.
    held: u64,
    received: u64,
    /// Reader id → position of the next chunk it reads.
    readers: HashMap<u64, usize>,
    next_reader: u64,
    windowed: bool,
    end: Option<Result<(), BodyError>>,
}

impl BodyState {
    /// In windowed mode, drops chunks every reader has passed.
    fn trim(&mut self) {
        if !self.windowed {
            return;
        }
        let min = self
            .readers
            .values()
            .copied()
            .min()
            .unwrap_or(self.first + self.chunks.len());
        while self.first < min {
            match self.chunks.pop_front() {
                Some(chunk) => {
                    self.held -= chunk.len() as u64;
                    self.first += 1;
                }
                None => break,
            }
        }
    }
}

impl SharedBody {
    /// Appends a chunk. In windowed mode, waits while the slowest reader is too far behind.
    pub(crate) async fn push(&self, chunk: Bytes) {
        loop {
            let writable = self.writable.notified();
            tokio::pin!(writable);
            writable.as_mut().enable();
            {
                let mut state = self.state.lock();
                if !state.windowed || state.held < WINDOW || state.readers.is_empty() {
                    state.received += chunk.len() as u64;
                    state.held += chunk.len() as u64;
                    state.chunks.push_back(chunk);
                    state.trim();
                    drop(state);
                    self.readable.notify_waiters();
                    return;
                }
            }
            writable.await;
        }
    }

    /// Stops keeping the whole body: it will not be stored. New readers can no longer join.
    pub(crate) fn stop_retaining(&self) {
        let mut state = self.state.lock();
        state.windowed = true;
        state.trim();
    }

    pub(crate) fn finish(&self, result: Result<(), BodyError>) {
        self.state.lock().end = Some(result);
        self.readable.notify_waiters();
    }

    pub(crate) fn received(&self) -> u64 {
        self.state.lock().received
    }

    /// Whether anyone still reads (a non-stored fill with no readers can stop).
    pub(crate) fn has_readers(&self) -> bool {
        !self.state.lock().readers.is_empty()
    }

    /// The whole body received so far followed by `last`, when it was retained and has not
    /// failed. The fill calls it once it knows the body is complete.
    pub(crate) fn collect_with(&self, last: &[u8]) -> Option<Bytes> {
        let state = self.state.lock();
        if state.windowed || state.first != 0 || matches!(state.end, Some(Err(_))) {
            return None;
        }
        if last.is_empty() && state.chunks.len() == 1 {
            return state.chunks.front().cloned();
        }
        let mut all = BytesMut::with_capacity(state.received as usize + last.len());
        for chunk in &state.chunks {
            all.extend_from_slice(chunk);
        }
        all.extend_from_slice(last);
        Some(all.freeze())
    }

    /// A reader from the start, limited to `range` (inclusive byte offsets) if given; `None`
    /// once the start has been dropped.
    pub(crate) fn reader(self: &Arc<Self>, range: Option<(u64, u64)>) -> Option<BodyReader> {
        let mut state = self.state.lock();
        if state.first != 0 {
            return None;
        }
        let id = state.next_reader;
        state.next_reader += 1;
        state.readers.insert(id, 0);
        Some(BodyReader {
            body: self.clone(),
            id,
            offset: 0,
            range,
        })
    }
}

/// One viewer's position in a shared body. Dropping it (the viewer went away) releases the fill
/// from waiting for it.
pub(crate) struct BodyReader {
    body: Arc<SharedBody>,
    id: u64,
    /// Byte offset of the next chunk.
    offset: u64,
    range: Option<(u64, u64)>,
}

impl BodyReader {
    /// Limits the reader to a byte range (inclusive); meant for a reader that has read nothing.
    pub(crate) fn limit(mut self, range: Option<(u64, u64)>) -> Self {
        self.range = range;
        self
    }

    /// The next piece of the body, `None` at the end.
    pub(crate) async fn next(&mut self) -> Option<Result<Bytes, BodyError>> {
        loop {
            let readable = self.body.readable.notified();
            tokio::pin!(readable);
            readable.as_mut().enable();
            let chunk = {
                let mut state = self.body.state.lock();
                let position = state.readers.get(&self.id).copied().unwrap_or(usize::MAX);
                if position >= state.first && position < state.first + state.chunks.len() {
                    let chunk = state.chunks[position - state.first].clone();
                    state.readers.insert(self.id, position + 1);
                    if state.windowed {
                        state.trim();
                        self.body.writable.notify_waiters();
                    }
                    Some(chunk)
                } else {
                    match &state.end {
                        Some(Ok(())) => return None,
                        Some(Err(e)) => return Some(Err(e.clone())),
                        None => None,
                    }
                }
            };
            match chunk {
                Some(chunk) => {
                    let start = self.offset;
                    self.offset += chunk.len() as u64;
                    let Some((first, last)) = self.range else {
                        return Some(Ok(chunk));
                    };
                    if start > last {
                        return None;
                    }
                    let from = first.saturating_sub(start).min(chunk.len() as u64) as usize;
                    let to = (last + 1).saturating_sub(start).min(chunk.len() as u64) as usize;
                    if from < to {
                        return Some(Ok(chunk.slice(from..to)));
                    }
                }
                None => readable.await,
            }
        }
    }
}

impl Drop for BodyReader {
    fn drop(&mut self) {
        let mut state = self.body.state.lock();
        state.readers.remove(&self.id);
        state.trim();
        drop(state);
        self.body.writable.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn chunk(n: usize, byte: u8) -> Bytes {
        Bytes::from(vec![byte; n])
    }

    async fn read_all(mut reader: BodyReader) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        while let Some(piece) = reader.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn readers_joining_late_read_from_the_start() {
        let body = Arc::new(SharedBody::default());
        let early = body.reader(None).expect("joinable");
        body.push(chunk(3, b'a')).await;
        let late = body.reader(Some((2, 4))).expect("still joinable while retained");
        body.push(chunk(3, b'b')).await;
        body.finish(Ok(()));
        assert_eq!(read_all(early).await.expect("complete"), b"aaabbb");
        assert_eq!(read_all(late).await.expect("complete"), b"abb");
        assert_eq!(
            body.collect_with(&[]).expect("retained"),
            Bytes::from_static(b"aaabbb")
        );
    }

    #[tokio::test]
    async fn errors_reach_every_reader_and_nothing_is_collected() {
        let body = Arc::new(SharedBody::default());
        let a = body.reader(None).expect("joinable");
        let b = body.reader(None).expect("joinable");
        body.push(chunk(1, b'x')).await;
        body.finish(Err(BodyError("cut short".into())));
        assert!(read_all(a).await.is_err());
        assert!(read_all(b).await.is_err());
        assert!(body.collect_with(&[]).is_none());
    }

    #[tokio::test]
    async fn windowed_bodies_stay_bounded_and_wait_for_the_slowest_reader() {
        let body = Arc::new(SharedBody::default());
        body.stop_retaining();
        let mut slow = body.reader(None).expect("joinable before anything was dropped");
        let writer = {
            let body = body.clone();
            tokio::spawn(async move {
                for _ in 0..16 {
                    body.push(chunk(1 << 20, b'z')).await;
                }
                body.finish(Ok(()));
            })
        };
        // The writer stops at the window while the reader reads nothing.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(body.state.lock().held <= WINDOW + (1 << 20));
        let mut total = slow.next().await.expect("a chunk").expect("no error").len();
        assert!(
            body.reader(None).is_none(),
            "the start was dropped once every reader passed it"
        );
        while let Some(piece) = slow.next().await {
            total += piece.expect("no error").len();
            assert!(body.state.lock().held <= WINDOW + (1 << 20));
        }
        assert_eq!(total, 16 << 20);
        writer.await.expect("writer finished");
        assert!(body.collect_with(&[]).is_none());
    }

    #[tokio::test]
    async fn a_dropped_reader_releases_the_writer() {
        let body = Arc::new(SharedBody::default());
        body.stop_retaining();
        let reader = body.reader(None).expect("joinable");
        let writer = {
            let body = body.clone();
            tokio::spawn(async move {
                for _ in 0..16 {
                    body.push(chunk(1 << 20, b'z')).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(reader);
        tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("writer not stuck")
            .expect("writer finished");
        assert!(!body.has_readers());
    }

    #[tokio::test]
    async fn one_leader_per_key_and_purge_detaches_flights() {
        let flights = Flights::default();
        let Join::Leader(leader) = flights.join("k", "/a") else {
            panic!("first is leader")
        };
        assert!(matches!(flights.join("k", "/a"), Join::Follower(_)));
        assert_eq!(flights.purge(&[PurgePattern::parse("/a").expect("valid")]), 1);
        assert!(leader.purged());
        assert!(matches!(flights.join("k", "/a"), Join::Leader(_)));
        // Landing the old flight must not remove the new one.
        flights.land(&leader);
        assert_eq!(flights.len(), 1);
    }
}
