//! Listeners and connections: the data port (hyper HTTP/1.1, keep-alive) and the admin port
//! (axum), with graceful shutdown: stop accepting, finish in-flight requests within a deadline.
mod interim;
mod sniff;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulConnection, GracefulShutdown},
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::{
    error::{Error, Result},
    proxy,
    state::Edge,
};

/// A client (viewer or uploader) has this long to send a complete request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

/// Accepts viewers until `stop`, then lets open connections finish within `deadline`.
pub(crate) async fn serve_data(
    listener: TcpListener,
    edge: Arc<Edge>,
    stop: CancellationToken,
    deadline: Duration,
) {
    serve_http1("data", listener, stop, deadline, |stream, client| {
        let limits = edge.runtime().limits.clone();
        let buffer = (limits.max_header_bytes + limits.max_url_bytes).max(16 << 10);
        let (stream, verdicts) = sniff::Guarded::new(stream, buffer);
        let queue = Arc::new(interim::InterimQueue::default());
        let stream = interim::WithInterim::new(stream, queue.clone());
        let edge = edge.clone();
        let service = service_fn(move |request| {
            let (edge, verdict, queue) = (edge.clone(), verdicts.next(), queue.clone());
            let (id, sink) = queue.begin();
            async move {
                let response = proxy::handle(edge, request, client, verdict, Some(sink)).await;
                queue.end(id);
                Ok::<_, Infallible>(response)
            }
        });
        http1_builder()
            // Room for a head at the configured limits, so oversize requests get a precise 414/431
            // from admission; anything beyond this gets hyper's 431.
            .max_buf_size(buffer)
            .serve_connection(TokioIo::new(stream), service)
    })
    .await
}

/// HTTP/1.1 with the timeouts every port applies.
pub(crate) fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
}

/// One HTTP/1.1 port (`port` names it in logs): accepts until `stop`, each connection served by
/// what `connect` makes of it, then lets open connections finish within `deadline`.
pub(crate) async fn serve_http1<C>(
    port: &'static str,
    listener: TcpListener,
    stop: CancellationToken,
    deadline: Duration,
    mut connect: impl FnMut(TcpStream, SocketAddr) -> C,
) where
    C: GracefulConnection + Send + 'static,
    C::Error: std::fmt::Display + Send,
{
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, client) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(port, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = graceful.watch(connect(stream, client));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(port, error = %e, %client, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!(port, "all connections closed"),
        _ = tokio::time::sleep(deadline) => tracing::warn!(port, ?deadline, "shutdown deadline passed; closing remaining connections"),
    }
}

/// Serves the admin API until `stop`.
pub(crate) async fn serve_admin(listener: TcpListener, router: axum::Router, stop: CancellationToken) {
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "admin server failed");
    }
}
