//! The first configuration. In a cluster the edge may start before its ConfigMap exists (or while
//! it is invalid): exiting would put the pod into a crash loop whose back-off grows to minutes, so
//! the edge waits for it instead, answering the kubelet's probes on the admin port meanwhile:
//! `/healthz` is ok, `/readyz` is 503 with the reason. A configuration file given on the command
//! line is read once: a person is there to read the error.
use std::{future::Future, net::SocketAddr, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    admin,
    config::{Loader, runtime::Runtime},
    error::Result,
    server, upload,
};

/// The first configuration, compiled: what requests use, and the upload port's settings.
pub(crate) struct Loaded {
    pub(crate) runtime: Runtime,
    pub(crate) upload: Option<upload::Target>,
}

/// The longest pause between two attempts to load the configuration.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The first usable configuration, or `None` when `shutdown` ends the wait. `probes` is the
/// admin address known before any configuration (from the command line or environment).
pub(crate) async fn first_runtime(
    loader: &Loader,
    probes: Option<SocketAddr>,
    shutdown: impl Future<Output = Result<()>>,
) -> Result<Option<Loaded>> {
    let error = match load(loader).await {
        Ok(runtime) => return Ok(Some(runtime)),
        Err(error) if !loader.source.is_cluster() => return Err(error),
        Err(error) => error,
    };
    let (reason, waiting) = watch::channel(error.to_string());
    let stop = CancellationToken::new();
    let answering = match probes {
        Some(addr) => Some(tokio::spawn(server::serve_admin(
            server::bind(addr).await?,
            admin::waiting_router(waiting),
            stop.clone(),
        ))),
        None => None,
    };
    tokio::pin!(shutdown);
    let mut delay = Duration::from_millis(500);
    let outcome = loop {
        tracing::warn!(reason = %*reason.borrow(), retry_in = ?delay, "configuration not usable yet; waiting for it");
        tokio::select! {
            signalled = &mut shutdown => break signalled.map(|()| None),
            () = tokio::time::sleep(delay) => {}
        }
        match load(loader).await {
            Ok(runtime) => break Ok(Some(runtime)),
            Err(error) => {
                reason.send_replace(error.to_string());
            }
        }
        delay = (delay * 2).min(MAX_RETRY);
    };
    // The admin port is bound again by the real server once this one has let it go.
    stop.cancel();
    if let Some(answering) = answering {
        let _ = answering.await;
    }
    outcome
}

async fn load(loader: &Loader) -> Result<Loaded> {
    let config = loader.source.read().await?;
    let upload = upload::Target::compile(&config)?;
    Ok(Loaded {
        runtime: loader.compile(config, None)?,
        upload,
    })
}
