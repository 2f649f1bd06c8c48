//! Interim (1xx) responses to viewers. hyper's server cannot send a 1xx response, so this wrapper
//! writes them on the connection itself: an origin's `103 Early Hints` (or `102 Processing`)
//! received while a request is being served is queued, and written before anything hyper writes
//! next, which is that request's final response (HTTP/1.1 answers one request at a time).
//!
//! A request accepts interim responses only until its handler returns: one arriving later (from a
//! background revalidation started by it, say) is dropped, never written into another response.
//!
//! Tested here: queued heads precede the final response, and late ones are dropped.
use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::origin::Interim;

#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    /// The request whose interim responses are accepted; 0: none.
    accepting: u64,
    last_request: u64,
    /// The connection's task, woken to write what was queued.
    waker: Option<Waker>,
}

/// A connection's interim responses, shared by its IO and its requests.
#[derive(Clone, Default)]
pub(crate) struct InterimQueue(Arc<Mutex<Queue>>);

impl InterimQueue {
    /// Starts accepting interim responses for a new request; returns the sink its origin
    /// requests report them to.
    pub(crate) fn begin(&self) -> (u64, Interim) {
        let mut queue = self.0.lock();
        queue.last_request += 1;
        let request = queue.last_request;
        queue.accepting = request;
        let this = self.clone();
        let sink = Interim::new(move |status, headers| this.push(request, status, headers));
        (request, sink)
    }

    /// Stops accepting interim responses for a request: its final response follows.
    pub(crate) fn end(&self, request: u64) {
        let mut queue = self.0.lock();
        if queue.accepting == request {
            queue.accepting = 0;
        }
    }

    fn push(&self, request: u64, status: StatusCode, headers: &HeaderMap) {
        if !status.is_informational() || matches!(status.as_u16(), 100 | 101) {
            return;
        }
        let mut queue = self.0.lock();
        if queue.accepting != request {
            return;
        }
        let reason = status.canonical_reason().unwrap_or("");
        queue
            .bytes
            .extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", status.as_u16()).as_bytes());
        for (name, value) in headers {
            queue.bytes.extend_from_slice(name.as_str().as_bytes());
            queue.bytes.extend_from_slice(b": ");
            queue.bytes.extend_from_slice(value.as_bytes());
            queue.bytes.extend_from_slice(b"\r\n");
        }
        queue.bytes.extend_from_slice(b"\r\n");
        if let Some(waker) = queue.waker.take() {
            waker.wake();
        }
    }
}

/// A connection that writes queued interim responses before anything else.
pub(crate) struct WithInterim<T> {
    inner: T,
    queue: InterimQueue,
}

impl<T: AsyncWrite + Unpin> WithInterim<T> {
    pub(crate) fn new(inner: T, queue: InterimQueue) -> Self {
        Self { inner, queue }
    }

    /// Writes what is queued; `Pending` until all of it is written.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut queue = self.queue.0.lock();
        queue.waker = Some(cx.waker().clone());
        while !queue.bytes.is_empty() {
            let written = match Pin::new(&mut self.inner).poll_write(cx, &queue.bytes) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            queue.bytes.drain(..written);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for WithInterim<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.queue.0.lock().waker = Some(cx.waker().clone());
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
        let queue = InterimQueue::default();
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
