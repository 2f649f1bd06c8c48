//! Request-smuggling guard. hyper resolves a request carrying both `Content-Length` and
//! `Transfer-Encoding` the RFC 9112 way (chunked wins, connection closed afterwards) but does not
//! let the application see that both were sent. This wrapper reads the same bytes hyper reads,
//! parses each request head with `httparse`, and queues a verdict per request, in order, for the
//! service to act on: such requests are refused with 400.
//!
//! Heads are followed across keep-alive requests by skipping `Content-Length` bodies. A chunked
//! body is not followed; instead that request's verdict asks for the connection to be closed after
//! the response, so no later request on it goes unchecked.
use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::proxy::admission::Verdict;

/// Verdicts in request order, shared between the connection's reader and its service.
#[derive(Clone, Default)]
pub(crate) struct Verdicts(Arc<Mutex<VecDeque<Verdict>>>);

impl Verdicts {
    /// The verdict for the next request hyper hands to the service. An empty queue (the guard
    /// stopped following) reads as `CloseAfter`: nothing unchecked is kept alive.
    pub(crate) fn next(&self) -> Verdict {
        self.0.lock().pop_front().unwrap_or(Verdict::CloseAfter)
    }

    fn push(&self, verdict: Verdict) {
        self.0.lock().push_back(verdict);
    }
}

enum State {
    /// Collecting a request head (only bytes of an incomplete head are buffered here).
    Head(Vec<u8>),
    /// Skipping this many body bytes.
    Body(u64),
    /// No longer following (chunked body, unparsable head): hyper decides, and the connection
    /// closes after the current request.
    Off,
}

pub(crate) struct Guarded<T> {
    inner: T,
    state: State,
    verdicts: Verdicts,
    max_head: usize,
}

impl<T> Guarded<T> {
    pub(crate) fn new(inner: T, max_head: usize) -> (Self, Verdicts) {
        let verdicts = Verdicts::default();
        (
            Self {
                inner,
                state: State::Head(Vec::new()),
                verdicts: verdicts.clone(),
                max_head,
            },
            verdicts,
        )
    }

    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Body(remaining) => {
                    let skip = (*remaining).min(bytes.len() as u64);
                    *remaining -= skip;
                    bytes = &bytes[skip as usize..];
                    if *remaining == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::Head(pending) => {
                    let before = pending.len();
                    let inspected = if before == 0 {
                        inspect(bytes)
                    } else {
                        pending.extend_from_slice(bytes);
                        inspect(pending)
                    };
                    match inspected {
                        Inspected::Incomplete => {
                            if before == 0 {
                                pending.extend_from_slice(bytes);
                            }
                            if pending.len() > self.max_head {
                                self.state = State::Off;
                            }
                            return;
                        }
                        Inspected::Invalid => {
                            // hyper refuses it and closes the connection; it never reaches the
                            // service, so no verdict is queued.
                            self.state = State::Off;
                            return;
                        }
                        Inspected::Head { len, verdict, next } => {
                            self.verdicts.push(verdict);
                            self.state = next;
                            bytes = &bytes[(len - before).min(bytes.len())..];
                        }
                    }
                }
            }
        }
    }
}

enum Inspected {
    Incomplete,
    Invalid,
    Head {
        len: usize,
        verdict: Verdict,
        next: State,
    },
}

/// Parses the head at the start of `bytes`.
fn inspect(bytes: &[u8]) -> Inspected {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Inspected::Incomplete,
        Err(_) => return Inspected::Invalid,
    };
    let mut lengths = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"));
    let first_length = lengths.next();
    let more_lengths = lengths.next().is_some();
    let chunked = request
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    let (verdict, next) = match (first_length, chunked) {
        (Some(_), true) => (
            Verdict::Smuggling("both Content-Length and Transfer-Encoding"),
            State::Off,
        ),
        (Some(_), false) if more_lengths => (Verdict::Smuggling("more than one Content-Length"), State::Off),
        (None, true) => (Verdict::CloseAfter, State::Off),
        (Some(h), false) => match std::str::from_utf8(h.value)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(0) => (Verdict::Clean, State::Head(Vec::new())),
            Some(n) => (Verdict::Clean, State::Body(n)),
            None => (Verdict::Smuggling("invalid Content-Length"), State::Off),
        },
        (None, false) => (Verdict::Clean, State::Head(Vec::new())),
    };
    Inspected::Head { len, verdict, next }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.observe(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(input: &[&[u8]]) -> Vec<Verdict> {
        let (mut guard, verdicts) = Guarded::new((), 64 * 1024);
        for piece in input {
            guard.observe(piece);
        }
        let mut out = Vec::new();
        while let Some(v) = verdicts.0.lock().pop_front() {
            out.push(v);
        }
        out
    }

    #[test]
    fn follows_pipelined_heads_and_bodies() {
        let two = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(verdicts(&[two]), vec![Verdict::Clean, Verdict::Clean]);
        // Split anywhere, the result is the same.
        for cut in 1..two.len() {
            assert_eq!(
                verdicts(&[&two[..cut], &two[cut..]]),
                vec![Verdict::Clean, Verdict::Clean],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn flags_smuggling_shapes() {
        let both = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n";
        assert_eq!(
            verdicts(&[both]),
            vec![Verdict::Smuggling("both Content-Length and Transfer-Encoding")]
        );
        let two_lengths = b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n";
        assert!(matches!(verdicts(&[two_lengths])[..], [Verdict::Smuggling(_)]));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(verdicts(&[chunked]), vec![Verdict::CloseAfter]);
    }

    #[test]
    fn never_panics_on_arbitrary_input() {
        use proptest::prelude::*;
        proptest!(ProptestConfig::with_cases(crate::fuzz::cases(5_000)), |(pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6))| {
            let slices: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
            let _ = verdicts(&slices);
        });
    }
}
