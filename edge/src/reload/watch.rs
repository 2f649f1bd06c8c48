//! Reload triggers: SIGHUP, changes to the config file or the secret files it names (polled:
//! ConfigMap and Secret volumes change by symlink swaps that inotify handles poorly), and the
//! ConfigMap watch.
use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use edgefleet_config::{EdgeConfig, Origin};
use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::Reloader;
use crate::{
    config::{Source, from_config_map},
    error::Result,
};

const POLL: Duration = Duration::from_secs(1);

pub(crate) fn spawn_watchers(reloader: Arc<Reloader>, stop: CancellationToken) -> Result<()> {
    let mut hangups = signal(SignalKind::hangup())
        .map_err(|e| crate::error::Error::io("installing the SIGHUP handler", e))?;
    {
        let (reloader, stop) = (reloader.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    received = hangups.recv() => {
                        if received.is_none() { return; }
                        tracing::info!("SIGHUP: reloading the configuration");
                        let _ = reloader.reload().await;
                    }
                }
            }
        });
    }
    {
        let (reloader, stop) = (reloader.clone(), stop.clone());
        tokio::spawn(async move { poll_files(&reloader, &stop).await });
    }
    if let Source::ConfigMap { api, namespace, name } = &reloader.loader.source {
        let (api, namespace, name) = ((**api).clone(), namespace.clone(), name.clone());
        let reloader = reloader.clone();
        tokio::spawn(async move {
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let mut events = watcher(api, config).default_backoff().applied_objects().boxed();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    event = events.next() => match event {
                        None => return,
                        Some(Ok(config_map)) => {
                            let config = from_config_map(&config_map, &namespace, &name);
                            if config.as_ref().is_ok_and(|c| *c == reloader.edge.runtime().config) {
                                continue;
                            }
                            let _ = reloader.apply_read(config);
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, "watching the ConfigMap; retrying"),
                    },
                }
            }
        });
    }
    Ok(())
}

/// The files whose change means "reload": the config file itself and every secret file.
fn watched_files(source: &Source, config: &EdgeConfig) -> Vec<PathBuf> {
    let mut files = vec![config.admin.token_file.clone()];
    if let Source::File(path) = source {
        files.push(path.clone());
    }
    for origin in &config.origins {
        if let Origin::S3(s3) = origin {
            files.extend(
                [
                    &s3.access_key_id_file,
                    &s3.secret_access_key_file,
                    &s3.session_token_file,
                ]
                .into_iter()
                .flatten()
                .cloned(),
            );
        }
    }
    if let Some(upload) = &config.upload {
        files.push(upload.client_keys_file.clone());
    }
    files
}

type Fingerprint = Vec<Option<(SystemTime, u64)>>;

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

async fn poll_files(reloader: &Reloader, stop: &CancellationToken) {
    let source = &reloader.loader.source;
    let mut files = watched_files(source, &reloader.edge.runtime().config);
    let mut last = fingerprint(&files);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        let current_files = watched_files(source, &reloader.edge.runtime().config);
        if current_files != files {
            // A reload changed which files matter; start comparing those.
            last = fingerprint(&current_files);
            files = current_files;
            continue;
        }
        let now = fingerprint(&files);
        if now != last {
            last = now;
            tracing::info!("a configuration or secret file changed: reloading");
            let _ = reloader.reload().await;
        }
    }
}
