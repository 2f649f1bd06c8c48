//! The upload port's listener: HTTP/1.1 connections, each request handed to [`Uploads`], with
//! graceful shutdown (stop accepting, let uploads in flight finish within a deadline).
use std::{convert::Infallible, sync::Arc, time::Duration};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Uploads;

/// A client has this long to send a complete request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn serve(
    listener: TcpListener,
    uploads: Arc<Uploads>,
    stop: CancellationToken,
    deadline: Duration,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, client) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "upload port: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let uploads = uploads.clone();
        let service = service_fn(move |request| {
            let uploads = uploads.clone();
            async move { Ok::<_, Infallible>(uploads.handle(request, client).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %client, "upload connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("upload port: all connections closed"),
        _ = tokio::time::sleep(deadline) => tracing::warn!(?deadline, "upload port: shutdown deadline passed; closing remaining connections"),
    }
}
