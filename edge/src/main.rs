//! edgefleet-edge: the caching reverse proxy each region runs.
//!
//! `edgefleet-edge --config edge.yaml` runs it standalone; in a cluster the operator starts it
//! with `--config-map NAMESPACE/NAME` and `EDGEFLEET_REGION`. See `edge/README.md`.
#![forbid(unsafe_code)]

mod admin;
mod cache;
mod config;
mod error;
mod metrics;
mod origin;
mod proxy;
mod reload;
mod secret;
mod server;
mod startup;
mod state;
mod upload;

/// Fuzzing knobs for the property tests.
#[cfg(test)]
mod fuzz {
    /// Cases per property: `EDGEFLEET_FUZZ_CASES` when set (long runs), else the default.
    pub(crate) fn cases(default: u32) -> u32 {
        std::env::var("EDGEFLEET_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
}

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::{Parser, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::{
    cache::{Cache, store::Store},
    config::{Loader, Source},
    error::Result,
    metrics::Metrics,
    reload::Reloader,
    state::Edge,
    upload::Uploads,
};

#[derive(Debug, Parser)]
#[command(version, about = "edgefleet's caching edge proxy")]
struct Cli {
    /// Configuration file (YAML or JSON); reloaded on SIGHUP and when it changes.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "config_map",
        conflicts_with = "config_map"
    )]
    config: Option<PathBuf>,
    /// ConfigMap to load and watch (key `edge.yaml`), using the pod's service account.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    config_map: Option<String>,
    /// Region served (sent as X-Edge-Location); overrides the configuration's `region`.
    #[arg(long, env = edgefleet_config::REGION_ENV)]
    region: Option<String>,
    /// Data port address; overrides the configuration's `listen.data` (takes effect at start).
    #[arg(long, env = edgefleet_config::LISTEN_DATA_ENV, value_name = "ADDR")]
    listen_data: Option<std::net::SocketAddr>,
    /// Admin port address; overrides the configuration's `listen.admin` (takes effect at start).
    #[arg(long, env = edgefleet_config::LISTEN_ADMIN_ENV, value_name = "ADDR")]
    listen_admin: Option<std::net::SocketAddr>,
    /// Upload port address; overrides the configuration's `listen.upload` (takes effect at start;
    /// the port is opened only when the configuration has an `upload` section).
    #[arg(long, env = edgefleet_config::LISTEN_UPLOAD_ENV, value_name = "ADDR")]
    listen_upload: Option<std::net::SocketAddr>,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, default_value_t = 25, value_name = "SECONDS")]
    shutdown_timeout: u64,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("edgefleet-edge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "edgefleet-edge failed");
            eprintln!("edgefleet-edge: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let source = match (&cli.config, &cli.config_map) {
        (Some(file), _) => Source::File(file.clone()),
        (None, Some(spec)) => Source::config_map(spec).await?,
        (None, None) => return Err(error::Error::NoSource),
    };
    let loader = Loader::new(source, cli.region.clone());
    let Some(loaded) = startup::first_runtime(&loader, cli.listen_admin, wait_for_shutdown_signal()).await?
    else {
        tracing::info!("stopped before any configuration was loaded");
        return Ok(());
    };
    let runtime = loaded.runtime;
    let mut listen = runtime.config.listen.clone();
    listen.data = cli.listen_data.unwrap_or(listen.data);
    listen.admin = cli.listen_admin.unwrap_or(listen.admin);
    listen.upload = cli.listen_upload.or(listen.upload);
    let store = Store::open(&runtime.config.cache).await?;
    let metrics = Metrics::new();
    let edge = Arc::new(Edge::new(
        runtime,
        Arc::new(Cache::new(store, metrics.clone())),
        metrics,
    ));

    let data_listener = server::bind(listen.data).await?;
    let admin_listener = server::bind(listen.admin).await?;
    // Opened when the first configuration has an `upload` section (listen addresses take effect
    // at start only).
    let (upload_listener, uploads) = match loaded.upload {
        Some(target) => (
            Some(server::bind(listen.upload_addr()).await?),
            Some(Arc::new(Uploads::new(edge.clone(), Some(target)))),
        ),
        None => (None, None),
    };
    tracing::info!(data = %listen.data, admin = %listen.admin, region = %edge.runtime().region, "edge serving");

    let stop = CancellationToken::new();
    let reloader = Reloader::new(loader, edge.clone(), uploads.clone());
    reload::spawn_watchers(reloader.clone(), stop.clone())?;
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(server::serve_admin(
        admin_listener,
        admin::router(admin::AdminState::new(edge.clone(), reloader)),
        admin_stop.clone(),
    ));
    let data = tokio::spawn(server::serve_data(
        data_listener,
        edge.clone(),
        stop.clone(),
        Duration::from_secs(cli.shutdown_timeout),
    ));
    let uploads = upload_listener.zip(uploads).map(|(listener, uploads)| {
        tracing::info!(upload = %listen.upload_addr(), "upload port serving");
        tokio::spawn(upload::serve(
            listener,
            uploads,
            stop.clone(),
            Duration::from_secs(cli.shutdown_timeout),
        ))
    });

    wait_for_shutdown_signal().await?;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    edge.start_draining();
    stop.cancel();
    let _ = data.await;
    if let Some(uploads) = uploads {
        let _ = uploads.await;
    }
    admin_stop.cancel();
    let _ = admin.await;
    edge.cache.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_shutdown_signal() -> Result<()> {
    let install = |kind| signal(kind).map_err(|e| error::Error::io("installing signal handlers", e));
    let mut terminate = install(SignalKind::terminate())?;
    let mut interrupt = install(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
