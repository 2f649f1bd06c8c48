//! A response body shared by every viewer collapsed onto one fill, each reading at its own pace.
//!
//! The fill appends what the origin sends; a reader follows from the start (or a byte range).
//! Two modes:
//! - **Kept** (the object will be stored, so it is at most `maxObjectBytes`): every byte is kept
//!   until the last reader is done, the fill runs at the origin's speed, and a slow or stalled
//!   reader holds back nobody. Once complete, the chunks are replaced by the one `Bytes` the cache
//!   stores, so readers and the store share the memory.
//! - **Windowed** (too large to store): at most [`WINDOW`] bytes are kept behind the fastest
//!   reader and at most [`WINDOW`] ahead of it, so memory stays bounded whatever the object's size;
//!   the fill runs at the pace of its fastest reader. A reader that falls further behind is
//!   detached from the shared body and continues on its own: it asks the origin for the rest
//!   (`Range: bytes=<offset>-`, conditional on the response's validator). Without a validator,
//!   or when the origin does not answer with exactly that range, its response ends early (the
//!   viewer sees fewer bytes than `Content-Length` announced), rather than splicing two different
//!   bodies together.
//!
//! Tested here: late readers, ranges, errors reaching every reader, the window's bound, that a
//! stalled reader never holds back a fast one (kept and windowed), detachment and resumption.
use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::origin::{Fetched, OriginBody, OriginError};

/// Bytes a windowed body keeps behind, and lets the origin run ahead of, its fastest reader.
pub(crate) const WINDOW: u64 = 4 << 20;

/// Why a body ended early.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BodyError(pub(crate) Arc<str>);

/// Where a fill's content comes from: one request, sent again with extra headers when needed
/// (validators for a revalidation, a range for a reader that continues on its own).
pub(crate) trait Source: Send + Sync + 'static {
    fn fetch(self: Arc<Self>, extra: HeaderMap) -> BoxFuture<'static, Result<Fetched, OriginError>>;
}

/// How a detached reader asks for the rest of the body: the fill's source and the validator
/// that makes sure the rest belongs to the same representation.
pub(crate) struct Resume {
    pub(crate) source: Arc<dyn Source>,
    /// `If-Match` with a strong ETag, else `If-Unmodified-Since` with the Last-Modified date.
    pub(crate) condition: Option<(HeaderName, HeaderValue)>,
    pub(crate) length: Option<u64>,
}

impl Resume {
    pub(crate) fn new(source: Arc<dyn Source>, headers: &HeaderMap, length: Option<u64>) -> Self {
        let strong_etag = headers
            .get(header::ETAG)
            .filter(|e| !e.as_bytes().starts_with(b"W/"));
        let condition = match (strong_etag, headers.get(header::LAST_MODIFIED)) {
            (Some(etag), _) => Some((header::IF_MATCH, etag.clone())),
            (None, Some(modified)) => Some((header::IF_UNMODIFIED_SINCE, modified.clone())),
            (None, None) => None,
        };
        Self {
            source,
            condition,
            length,
        }
    }

    /// The origin's body from `offset` to the end, if it can be had for this representation.
    async fn from(&self, offset: u64) -> Result<OriginBody, BodyError> {
        let fail = |why: String| {
            BodyError(format!("fell behind at byte {offset} and cannot continue: {why}").into())
        };
        let (Some((name, value)), Some(length)) = (&self.condition, self.length) else {
            return Err(fail("the response has no validator and length".into()));
        };
        let mut extra = HeaderMap::new();
        extra.insert(name.clone(), value.clone());
        let range = HeaderValue::from_str(&format!("bytes={offset}-")).map_err(|e| fail(e.to_string()))?;
        extra.insert(header::RANGE, range);
        let fetched = self
            .source
            .clone()
            .fetch(extra)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let response = fetched.response;
        let expected = format!("bytes {offset}-{}/{length}", length.saturating_sub(1));
        let matches = response.status() == StatusCode::PARTIAL_CONTENT
            && response
                .headers()
                .get(header::CONTENT_RANGE)
                .is_some_and(|r| r.as_bytes() == expected.as_bytes());
        if !matches {
            return Err(fail(format!(
                "the origin answered {} instead of {expected}",
                response.status()
            )));
        }
        Ok(response.into_body())
    }
}

/// The chunks of a shared body and the readers following it.
#[derive(Default)]
struct BodyState {
    /// `(offset, bytes)`, contiguous.
    chunks: VecDeque<(u64, Bytes)>,
    /// Bytes received so far (the offset after the last chunk).
    received: u64,
    /// Reader id → offset of the next byte it reads.
    readers: HashMap<u64, u64>,
    next_reader: u64,
    windowed: bool,
    end: Option<Result<(), BodyError>>,
}

impl BodyState {
    /// The offset of the first byte still held.
    fn start(&self) -> u64 {
        self.chunks.front().map_or(self.received, |(offset, _)| *offset)
    }

    /// The offset of the fastest reader, or `None` without readers.
    fn fastest(&self) -> Option<u64> {
        self.readers.values().copied().max()
    }

    /// Windowed: drops what lies more than a window behind the fastest reader.
    fn trim(&mut self) {
        if !self.windowed {
            return;
        }
        let keep_from = self.fastest().unwrap_or(self.received).saturating_sub(WINDOW);
        while let Some((offset, bytes)) = self.chunks.front() {
            if offset + bytes.len() as u64 > keep_from {
                break;
            }
            self.chunks.pop_front();
        }
    }

    /// The held bytes from `offset` on, up to the end of the chunk that holds it.
    fn piece_at(&self, offset: u64) -> Option<Bytes> {
        let index = self
            .chunks
            .partition_point(|(start, bytes)| start + bytes.len() as u64 <= offset);
        let (start, bytes) = self.chunks.get(index)?;
        (*start <= offset).then(|| bytes.slice((offset - start) as usize..))
    }
}

#[derive(Default)]
pub(crate) struct SharedBody {
    state: Mutex<BodyState>,
    readable: Notify,
    writable: Notify,
}

impl SharedBody {
    /// Appends a chunk. Windowed, waits while the fastest reader is a window behind the origin.
    pub(crate) async fn push(&self, chunk: Bytes) {
        loop {
            let writable = self.writable.notified();
            tokio::pin!(writable);
            writable.as_mut().enable();
            {
                let mut state = self.state.lock();
                let ahead = state
                    .fastest()
                    .map_or(0, |fastest| state.received.saturating_sub(fastest));
                if !state.windowed || ahead < WINDOW {
                    let offset = state.received;
                    state.received += chunk.len() as u64;
                    state.chunks.push_back((offset, chunk));
                    state.trim();
                    drop(state);
                    self.readable.notify_waiters();
                    return;
                }
            }
            writable.await;
        }
    }

    /// Stops keeping the whole body: it will not be stored.
    pub(crate) fn stop_keeping(&self) {
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

    /// Whether anyone still reads (a windowed fill with no readers can stop).
    pub(crate) fn has_readers(&self) -> bool {
        !self.state.lock().readers.is_empty()
    }

    /// The whole body received so far followed by `last`, when it was kept. The chunks are
    /// replaced by the result, so readers still following and the stored object share it.
    pub(crate) fn collect_with(&self, last: &[u8]) -> Option<Bytes> {
        let mut state = self.state.lock();
        if state.windowed || state.start() != 0 {
            return None;
        }
        let whole = if last.is_empty() && state.chunks.len() == 1 {
            state.chunks.front().map(|(_, b)| b.clone()).unwrap_or_default()
        } else {
            let mut all = BytesMut::with_capacity(state.received as usize + last.len());
            for (_, chunk) in &state.chunks {
                all.extend_from_slice(chunk);
            }
            all.extend_from_slice(last);
            all.freeze()
        };
        // `last` is pushed by the fill right after; keep only what was received.
        let received = state.received as usize;
        state.chunks.clear();
        if received > 0 {
            state.chunks.push_back((0, whole.slice(..received)));
        }
        Some(whole)
    }

    /// A reader from the start, limited to `range` (inclusive byte offsets) if given; `None`
    /// once the start has been dropped.
    pub(crate) fn reader(
        self: &Arc<Self>,
        range: Option<(u64, u64)>,
        resume: Option<Arc<Resume>>,
    ) -> Option<BodyReader> {
        let mut state = self.state.lock();
        if state.start() != 0 {
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
            resume,
            alone: None,
        })
    }
}

/// One viewer's position in a shared body. Dropping it (the viewer went away) releases the fill
/// from waiting for it.
pub(crate) struct BodyReader {
    body: Arc<SharedBody>,
    id: u64,
    /// Offset of the next byte.
    offset: u64,
    range: Option<(u64, u64)>,
    resume: Option<Arc<Resume>>,
    /// Once detached: the rest of the body, from the origin for this reader alone.
    alone: Option<OriginBody>,
}

/// What the shared state had for a reader.
enum Next {
    Piece(Bytes),
    End(Option<Result<(), BodyError>>),
    Wait,
    Detached,
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
            if let Some((_, last)) = self.range
                && self.offset > last
            {
                return None;
            }
            let piece = match self.alone.as_mut() {
                Some(body) => match body.frame().await {
                    None => return None,
                    Some(Err(e)) => return Some(Err(BodyError(e.to_string().into()))),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => data,
                        Err(_) => continue,
                    },
                },
                None => match self.shared().await {
                    Next::Piece(piece) => piece,
                    Next::End(end) => return end.and_then(Result::err).map(Err),
                    Next::Wait => continue,
                    Next::Detached => {
                        let resume = self.resume.clone();
                        let result = match resume {
                            Some(resume) => resume.from(self.offset).await,
                            None => Err(BodyError("fell behind the shared body".into())),
                        };
                        match result {
                            Ok(body) => {
                                tracing::debug!(offset = self.offset, "a slow viewer continues on its own");
                                self.alone = Some(body);
                                continue;
                            }
                            Err(e) => {
                                tracing::info!(error = %e, "a slow viewer's response ends early");
                                return Some(Err(e));
                            }
                        }
                    }
                },
            };
            let start = self.offset;
            self.offset += piece.len() as u64;
            let Some((first, last)) = self.range else {
                return Some(Ok(piece));
            };
            let from = first.saturating_sub(start).min(piece.len() as u64) as usize;
            let to = (last + 1).saturating_sub(start).min(piece.len() as u64) as usize;
            if from < to {
                return Some(Ok(piece.slice(from..to)));
            }
        }
    }

    /// The next piece from the shared body, waiting for the fill when there is none yet.
    async fn shared(&mut self) -> Next {
        let readable = self.body.readable.notified();
        tokio::pin!(readable);
        readable.as_mut().enable();
        let next = {
            let mut state = self.body.state.lock();
            if self.offset < state.start() {
                state.readers.remove(&self.id);
                Next::Detached
            } else if let Some(piece) = state.piece_at(self.offset) {
                let position = self.offset + piece.len() as u64;
                state.readers.insert(self.id, position);
                if state.windowed {
                    state.trim();
                }
                Next::Piece(piece)
            } else if let Some(end) = &state.end {
                Next::End(Some(end.clone()))
            } else {
                Next::Wait
            }
        };
        match next {
            Next::Piece(_) | Next::Detached => self.body.writable.notify_waiters(),
            Next::Wait => readable.await,
            Next::End(_) => {}
        }
        next
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
        let early = body.reader(None, None).expect("joinable");
        body.push(chunk(3, b'a')).await;
        let late = body
            .reader(Some((2, 4)), None)
            .expect("still joinable while kept");
        body.push(chunk(3, b'b')).await;
        body.finish(Ok(()));
        assert_eq!(read_all(early).await.expect("complete"), b"aaabbb");
        assert_eq!(read_all(late).await.expect("complete"), b"abb");
        assert_eq!(
            body.collect_with(&[]).expect("kept"),
            Bytes::from_static(b"aaabbb")
        );
    }

    #[tokio::test]
    async fn collected_bodies_are_shared_with_readers_still_following() {
        let body = Arc::new(SharedBody::default());
        let reader = body.reader(None, None).expect("joinable");
        body.push(chunk(3, b'a')).await;
        let whole = body.collect_with(b"bb").expect("kept");
        body.push(Bytes::from_static(b"bb")).await;
        body.finish(Ok(()));
        assert_eq!(whole, Bytes::from_static(b"aaabb"));
        assert_eq!(read_all(reader).await.expect("complete"), b"aaabb");
    }

    #[tokio::test]
    async fn errors_reach_every_reader_and_nothing_is_collected() {
        let body = Arc::new(SharedBody::default());
        let a = body.reader(None, None).expect("joinable");
        let b = body.reader(None, None).expect("joinable");
        body.push(chunk(1, b'x')).await;
        body.finish(Err(BodyError("cut short".into())));
        assert!(read_all(a).await.is_err());
        assert!(read_all(b).await.is_err());
    }

    #[tokio::test]
    async fn a_stalled_reader_never_holds_back_a_kept_body() {
        let body = Arc::new(SharedBody::default());
        let stalled = body.reader(None, None).expect("joinable");
        let fast = body.reader(None, None).expect("joinable");
        for _ in 0..16 {
            tokio::time::timeout(Duration::from_secs(5), body.push(chunk(1 << 20, b'k')))
                .await
                .expect("a kept body never waits for readers");
        }
        body.finish(Ok(()));
        assert_eq!(read_all(fast).await.expect("complete").len(), 16 << 20);
        assert_eq!(read_all(stalled).await.expect("complete").len(), 16 << 20);
    }

    #[tokio::test]
    async fn windowed_bodies_stay_bounded_and_follow_the_fastest_reader() {
        let body = Arc::new(SharedBody::default());
        body.stop_keeping();
        let stalled = body
            .reader(None, None)
            .expect("joinable before anything was dropped");
        let fast = body.reader(None, None).expect("joinable");
        let writer = {
            let body = body.clone();
            tokio::spawn(async move {
                for _ in 0..32 {
                    body.push(chunk(1 << 20, b'z')).await;
                    let state = body.state.lock();
                    let held: u64 = state.chunks.iter().map(|(_, b)| b.len() as u64).sum();
                    assert!(held <= 2 * WINDOW + (1 << 20), "held {held}");
                }
                body.finish(Ok(()));
            })
        };
        let read = tokio::time::timeout(Duration::from_secs(10), read_all(fast))
            .await
            .expect("the fast reader is not held back by the stalled one")
            .expect("complete");
        assert_eq!(read.len(), 32 << 20);
        writer.await.expect("writer finished");
        // Without a way to continue on its own, the stalled reader's body ends early.
        assert!(read_all(stalled).await.is_err());
    }

    /// A source answering ranges of a fixed body, as an origin with a strong ETag does.
    struct Ranges(Bytes);

    impl Source for Ranges {
        fn fetch(self: Arc<Self>, extra: HeaderMap) -> BoxFuture<'static, Result<Fetched, OriginError>> {
            let body = self.0.clone();
            Box::pin(async move {
                let range = extra
                    .get(header::RANGE)
                    .and_then(|r| r.to_str().ok())
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.strip_suffix('-'))
                    .and_then(|r| r.parse::<usize>().ok())
                    .expect("a range request");
                assert_eq!(extra.get(header::IF_MATCH).expect("conditional"), "\"v1\"");
                let content_range = format!("bytes {range}-{}/{}", body.len() - 1, body.len());
                Ok(crate::origin::testing::fetched(
                    206,
                    &[("content-range", &content_range)],
                    body.slice(range..),
                ))
            })
        }
    }

    #[tokio::test]
    async fn a_detached_reader_continues_with_its_own_range_request() {
        let whole: Bytes = (0..(24u32 << 20))
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        let resume = Arc::new(Resume::new(
            Arc::new(Ranges(whole.clone())),
            &headers,
            Some(whole.len() as u64),
        ));
        let body = Arc::new(SharedBody::default());
        body.stop_keeping();
        let slow = body.reader(None, Some(resume.clone())).expect("joinable");
        let fast = body.reader(None, Some(resume)).expect("joinable");
        let writer = {
            let (body, whole) = (body.clone(), whole.clone());
            tokio::spawn(async move {
                for piece in whole.chunks(1 << 20) {
                    body.push(Bytes::copy_from_slice(piece)).await;
                }
                body.finish(Ok(()));
            })
        };
        assert_eq!(read_all(fast).await.expect("complete"), whole);
        writer.await.expect("writer finished");
        assert_eq!(read_all(slow).await.expect("continued alone"), whole);
    }

    #[tokio::test]
    async fn a_dropped_reader_releases_the_writer() {
        let body = Arc::new(SharedBody::default());
        body.stop_keeping();
        let reader = body.reader(None, None).expect("joinable");
        let writer = {
            let body = body.clone();
            tokio::spawn(async move {
                for _ in 0..16 {
                    body.push(chunk(1 << 20, b'z')).await;
                }
            })
        };
        drop(reader);
        tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("writer not stuck")
            .expect("writer finished");
        assert!(!body.has_readers());
    }
}
