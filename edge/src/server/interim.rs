//! Interim (1xx) responses to viewers. hyper's server cannot send a 1xx response, so this wrapper
//! writes them on the connection itself: an origin's `103 Early Hints` (or `102 Processing`)
//! received while a request is being served is queued, and written before anything hyper writes
//! next, which is that request's final response (HTTP/1.1 answers one request at a time).
//!
//! A request accepts interim responses only until its handler returns: one arriving later (from a
//! background revalidation started by it, say) is dropped, never written into another response.
//! Connections with nothing queued pay one atomic load per write.
//!
//! Tested here: queued heads precede the final response, and late ones are dropped.
use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use futures::task::AtomicWaker;
use http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::origin::{Interim, InterimSink};

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The request whose interim responses are accepted; 0: none.
    accepting: u64,
    last_request: u64,
}

/// A connection's interim responses, shared by its IO and its requests.
#[derive(Default)]
pub(crate) struct InterimQueue {
    pending: Mutex<Pending>,
    /// Bytes are waiting to be written.
    queued: AtomicBool,
    /// The connection's task, woken to write what was queued.
    waker: AtomicWaker,
}

impl InterimQueue {
    /// Starts accepting interim responses for a new request; returns the request's id and the
    /// handle its origin requests report them to.
    pub(crate) fn begin(self: &Arc<Self>) -> (u64, Interim) {
        let mut pending = self.pending.lock();
        pending.last_request += 1;
        pending.accepting = pending.last_request;
        (pending.accepting, Interim::new(self.clone(), pending.accepting))
    }

    /// Stops accepting interim responses for a request: its final response follows.
    pub(crate) fn end(&self, request: u64) {
        let mut pending = self.pending.lock();
        if pending.accepting == request {
            pending.accepting = 0;
        }
    }
}

impl InterimSink for InterimQueue {
    fn report(&self, request: u64, status: StatusCode, headers: &HeaderMap) {
        if !status.is_informational() || matches!(status.as_u16(), 100 | 101) {
            return;
        }
        let mut pending = self.pending.lock();
        if pending.accepting != request {
            return;
        }
        let reason = status.canonical_reason().unwrap_or("");
        let bytes = &mut pending.bytes;
        bytes.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", status.as_u16()).as_bytes());
        for (name, value) in headers {
            bytes.extend_from_slice(name.as_str().as_bytes());
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(value.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"\r\n");
        self.queued.store(true, Ordering::Release);
        drop(pending);
        self.waker.wake();
    }
}

/// A connection that writes queued interim responses before anything else.
pub(crate) struct WithInterim<T> {
    inner: T,
    queue: Arc<InterimQueue>,
}

impl<T: AsyncWrite + Unpin> WithInterim<T> {
    pub(crate) fn new(inner: T, queue: Arc<InterimQueue>) -> Self {
        Self { inner, queue }
    }

    /// Writes what is queued; `Pending` until all of it is written.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.queue.waker.register(cx.waker());
        if !self.queue.queued.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        let mut pending = self.queue.pending.lock();
        while !pending.bytes.is_empty() {
            let written = match Pin::new(&mut self.inner).poll_write(cx, &pending.bytes) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            pending.bytes.drain(..written);
        }
        self.queue.queued.store(false, Ordering::Release);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for WithInterim<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // hyper polls the read side while a request is being served: this is the task to wake.
        self.queue.waker.register(cx.waker());
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WithInterim<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn interim_heads_precede_the_final_response_and_late_ones_are_dropped() {
        let queue = Arc::new(InterimQueue::default());
        let mut connection = WithInterim::new(Vec::new(), queue.clone());
        let (request, sink) = queue.begin();
        let mut hints = HeaderMap::new();
        hints.insert("link", http::HeaderValue::from_static("</a.css>; rel=preload"));
        sink.report(StatusCode::from_u16(103).expect("status"), &hints);
        sink.report(StatusCode::CONTINUE, &HeaderMap::new());
        queue.end(request);
        sink.report(StatusCode::from_u16(103).expect("status"), &hints);
        connection
            .write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("write");
        let written = String::from_utf8(connection.inner).expect("text");
        assert_eq!(
            written,
            "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
        );
    }
}
