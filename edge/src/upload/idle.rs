//! An upload body on its way to the origin, watched: a client that sends nothing for the idle
//! timeout ends the body early, which makes the origin request fail (its Content-Length is not
//! reached), so a stalled client never holds an origin connection for ever; and the moment the
//! body is complete is known, from which the origin gets the idle timeout to answer. (A timeout on
//! the whole exchange would cut off any upload slower than it.)
use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::{
    sync::Notify,
    time::{Instant, Sleep},
};

use crate::origin::http::OutgoingBody;

#[derive(Default)]
pub(crate) struct Watch {
    ended: Notify,
    stalled: AtomicBool,
}

impl Watch {
    /// Resolves once the whole body has been handed to the origin connection.
    pub(crate) async fn ended(&self) {
        self.ended.notified().await;
    }

    /// Whether the body was ended early because the client went quiet.
    pub(crate) fn stalled(&self) -> bool {
        self.stalled.load(Ordering::SeqCst)
    }
}

pub(crate) struct Watched {
    inner: OutgoingBody,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    watch: Arc<Watch>,
    done: bool,
}

pub(crate) fn watched(inner: OutgoingBody, idle: Duration) -> (OutgoingBody, Arc<Watch>) {
    let watch = Arc::new(Watch::default());
    let done = inner.is_end_stream();
    if done {
        // An empty body is never polled.
        watch.ended.notify_one();
    }
    let body = Watched {
        inner,
        idle,
        deadline: Box::pin(tokio::time::sleep(idle)),
        watch: watch.clone(),
        done,
    };
    (http_body_util::BodyExt::boxed_unsync(body), watch)
}

impl Watched {
    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            // A stored permit: the waiter may start waiting after this.
            self.watch.ended.notify_one();
        }
    }
}

impl Body for Watched {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = Instant::now() + this.idle;
                this.deadline.as_mut().reset(next);
                if this.inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.watch.stalled.store(true, Ordering::SeqCst);
                    // Ending short of the Content-Length fails the origin request: nothing is
                    // stored. Not `finish`: no answer is awaited for a body cut short.
                    this.done = true;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
