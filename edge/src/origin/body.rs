//! An origin's response body with a read timeout between frames, so a stalled origin ends the
//! response (and the fill) instead of holding it forever.
use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, combinators::BoxBody};
use tokio::time::{Instant, Sleep};

use super::OriginError;

pub(crate) struct OriginBody {
    inner: BoxBody<Bytes, hyper::Error>,
    origin: Arc<str>,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl OriginBody {
    pub(crate) fn new(
        inner: impl Body<Data = Bytes, Error = hyper::Error> + Send + Sync + 'static,
        origin: Arc<str>,
        timeout: Duration,
    ) -> Self {
        Self {
            inner: inner.boxed(),
            origin,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = OriginError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, OriginError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = Instant::now() + this.timeout;
                this.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(OriginError::Unreachable {
                origin: this.origin.clone(),
                reason: format!("response body failed: {e}"),
            }))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(OriginError::Timeout {
                    origin: this.origin.clone(),
                    after: this.timeout,
                }))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
