//! The body of every response the edge sends: whole bytes from cache (no allocation beyond the
//! shared `Bytes`), or a stream (a shared fill, a passed-through origin body).
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{Stream, StreamExt, stream::BoxStream};
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::cache::stream::BodyReader;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) enum Body {
    Empty,
    Full(Option<Bytes>),
    Stream(BoxStream<'static, Result<Bytes, BoxError>>),
}

impl Body {
    pub(crate) fn empty() -> Self {
        Body::Empty
    }

    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Some(bytes.into()))
    }

    /// A viewer's view of a shared fill.
    pub(crate) fn shared(reader: BodyReader) -> Self {
        let stream = futures::stream::unfold(reader, |mut reader| async move {
            let next = reader.next().await?;
            Some((next.map_err(|e| Box::new(e) as BoxError), reader))
        });
        Body::Stream(stream.boxed())
    }

    /// Any other body, such as an origin's passed through.
    pub(crate) fn stream<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, BoxError>> + Send + 'static,
    {
        Body::Stream(stream.boxed())
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(stream) => stream
                .poll_next_unpin(cx)
                .map(|item| item.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty | Body::Full(None) => true,
            Body::Full(Some(_)) | Body::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty | Body::Full(None) => SizeHint::with_exact(0),
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

impl Body {
    /// Counts the bytes of this body into a metric as they are sent.
    pub(crate) fn counted(self, counter: prometheus_client::metrics::counter::Counter) -> Self {
        match self {
            Body::Empty => Body::Empty,
            Body::Full(bytes) => {
                counter.inc_by(bytes.as_ref().map_or(0, |b| b.len() as u64));
                Body::Full(bytes)
            }
            Body::Stream(stream) => Body::Stream(
                stream
                    .inspect(move |piece| {
                        if let Ok(bytes) = piece {
                            counter.inc_by(bytes.len() as u64);
                        }
                    })
                    .boxed(),
            ),
        }
    }
}
