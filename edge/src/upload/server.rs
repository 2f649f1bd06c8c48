//! The upload port's listener: HTTP/1.1 connections, each request handed to [`Uploads`], with
//! graceful shutdown (stop accepting, let uploads in flight finish within a deadline).
use std::{convert::Infallible, sync::Arc, time::Duration};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Uploads;
use crate::server::{http1_builder, serve_http1};

pub(crate) async fn serve(
    listener: TcpListener,
    uploads: Arc<Uploads>,
    stop: CancellationToken,
    deadline: Duration,
) {
    serve_http1("upload", listener, stop, deadline, |stream, client| {
        let uploads = uploads.clone();
        let service = service_fn(move |request| {
            let uploads = uploads.clone();
            async move { Ok::<_, Infallible>(uploads.handle(request, client).await) }
        });
        http1_builder().serve_connection(TokioIo::new(stream), service)
    })
    .await
}
