//! `edgefleet-operator`: runs the controllers, or (`crdgen`) prints the CRDs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use edgefleet_operator::controller::{self, Context, Settings};
use edgefleet_operator::render::{IngressSettings, Ingresses, SecretNameTemplate};
use edgefleet_operator::server::{self, Health};
use edgefleet_operator::telemetry::{self, LogFormat, Metrics};
use edgefleet_operator::{Error, api};
use futures::FutureExt;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

#[derive(Parser)]
#[command(name = "edgefleet-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers (the default).
    Run,
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD into `--out`.
    Crdgen {
        /// Directory to write `<plural>.<group>.yaml` files into.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Flags of `run`; global, so they may come before or after the subcommand.
#[derive(clap::Args)]
struct RunArgs {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        global = true,
        env = "EDGEFLEET_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: SocketAddr,
    /// Log filter, e.g. `info` or `edgefleet_operator=debug`.
    #[arg(long, global = true, env = "EDGEFLEET_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "EDGEFLEET_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Take the leader Lease before reconciling, so that only one replica writes.
    #[arg(long, global = true, env = "EDGEFLEET_LEADER_ELECT", default_value_t = false)]
    leader_elect: bool,
    /// Namespace of the leader Lease (the operator's own namespace).
    #[arg(
        long,
        global = true,
        env = "POD_NAMESPACE",
        default_value = "edgefleet-system"
    )]
    lease_namespace: String,
    /// This replica's name, in the Lease and in Events.
    #[arg(long, global = true, env = "POD_NAME", default_value = "edgefleet-operator")]
    identity: String,
    /// Node label holding the region name.
    #[arg(
        long,
        global = true,
        env = "EDGEFLEET_REGION_LABEL",
        default_value = "topology.kubernetes.io/region"
    )]
    region_label: String,
    /// Node label holding the zone name.
    #[arg(
        long,
        global = true,
        env = "EDGEFLEET_ZONE_LABEL",
        default_value = "topology.kubernetes.io/zone"
    )]
    zone_label: String,
    /// Edge image used unless a Distribution names its own.
    #[arg(
        long,
        global = true,
        env = "EDGEFLEET_EDGE_IMAGE",
        default_value = "ghcr.io/edgefleet/edge:0.1.0"
    )]
    edge_image: String,
    /// How the kubelet pulls edge images: Always, IfNotPresent or Never (default: the kubelet's
    /// own default for the image's tag).
    #[arg(long, global = true, env = "EDGEFLEET_EDGE_IMAGE_PULL_POLICY", value_parser = ["Always", "IfNotPresent", "Never"])]
    edge_image_pull_policy: Option<String>,
    /// Secrets the kubelet pulls edge images with (comma-separated names; each must exist in the
    /// namespace of every Distribution).
    #[arg(
        long,
        global = true,
        env = "EDGEFLEET_EDGE_IMAGE_PULL_SECRETS",
        value_delimiter = ','
    )]
    edge_image_pull_secrets: Vec<String>,
    /// Reconcile only the Distributions and Invalidations of this namespace (default: all).
    #[arg(long, global = true, env = "EDGEFLEET_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// An Ingress per alias of every Distribution (`enabled`), none (`disabled`: Ingresses are
    /// not even watched), or none and those made before deleted (`remove`).
    #[arg(
        long,
        global = true,
        env = "EDGEFLEET_INGRESS",
        value_enum,
        default_value = "disabled"
    )]
    ingress: IngressMode,
    /// `spec.ingressClassName` of every Ingress (default: the cluster's default class).
    #[arg(long, global = true, env = "EDGEFLEET_INGRESS_CLASS_NAME")]
    ingress_class_name: Option<String>,
    /// Annotations of every Ingress, as a JSON object of strings.
    #[arg(long, global = true, env = "EDGEFLEET_INGRESS_ANNOTATIONS", value_parser = annotations)]
    ingress_annotations: Option<BTreeMap<String, String>>,
    /// Serve TLS with the certificate in the Secret this names: `{ingress}` and `{distribution}`
    /// are replaced, e.g. `{ingress}-tls` (default: no TLS).
    #[arg(long, global = true, env = "EDGEFLEET_INGRESS_TLS_SECRET")]
    ingress_tls_secret: Option<SecretNameTemplate>,
}

/// What the operator does about Ingresses.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum IngressMode {
    Disabled,
    Enabled,
    Remove,
}

impl RunArgs {
    fn ingresses(&self) -> Ingresses {
        match self.ingress {
            IngressMode::Disabled => Ingresses::Disabled,
            IngressMode::Remove => Ingresses::Removing,
            IngressMode::Enabled => Ingresses::Enabled(IngressSettings {
                class_name: self.ingress_class_name.clone().filter(|c| !c.is_empty()),
                annotations: self.ingress_annotations.clone().unwrap_or_default(),
                tls_secret: self.ingress_tls_secret.clone(),
            }),
        }
    }
}

fn annotations(json: &str) -> Result<BTreeMap<String, String>, serde_json::Error> {
    serde_json::from_str(json)
}

const LEASE_NAME: &str = "edgefleet-operator-leader";

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crdgen { out }) => crdgen(out),
        Some(Command::Run) | None => {
            telemetry::init_logging(cli.run.log_format, &cli.run.log_level);
            match run(cli.run).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn crdgen(out: Option<PathBuf>) -> ExitCode {
    let files = match api::crd_files() {
        Ok(files) => files,
        Err(error) => {
            eprintln!("could not render the CRDs: {error}");
            return ExitCode::FAILURE;
        }
    };
    for (name, yaml) in files {
        match &out {
            None => print!("---\n{yaml}"),
            Some(dir) => {
                let path = dir.join(name);
                if let Err(error) = std::fs::write(&path, yaml) {
                    eprintln!("could not write {}: {error}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}

async fn run(args: RunArgs) -> Result<(), Error> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
        .boxed()
        .shared()
    };

    let metrics = Arc::new(Metrics::default());
    let client = counted_client(metrics.clone()).await?;
    let health = Arc::new(Health::default());
    let server = tokio::spawn(server::serve(
        args.metrics_addr,
        health.clone(),
        metrics.clone(),
        stopped(),
    ));

    let settings = Settings {
        ingress: args.ingresses(),
        region_label: args.region_label,
        zone_label: args.zone_label,
        edge_image: args.edge_image,
        edge_image_pull_policy: args.edge_image_pull_policy,
        edge_image_pull_secrets: args
            .edge_image_pull_secrets
            .into_iter()
            .filter(|name| !name.is_empty())
            .collect(),
    };
    let ctx = Arc::new(
        Context::new(client.clone(), metrics.clone(), settings, args.identity.clone())
            .watching(args.watch_namespace.filter(|ns| !ns.is_empty())),
    );

    let result = if args.leader_elect {
        let lease = LeaseManagerBuilder::new(client, LEASE_NAME)
            .with_namespace(&args.lease_namespace)
            .with_identity(&args.identity)
            .with_duration(15)
            .with_grace(5)
            .build()
            .await?;
        let (mut leading, lease_task) = lease.watch().await;
        // Followers are healthy and ready: they only wait for the Lease.
        health.set_ready();
        tracing::info!(lease = LEASE_NAME, identity = %args.identity, "waiting for leadership");
        let became_leader = tokio::select! {
            _ = stopped() => false,
            changed = leading.wait_for(|leader| *leader) => changed.is_ok(),
        };
        let outcome = if became_leader {
            tracing::info!("became leader");
            metrics.set_leader(true);
            lead(ctx, &mut leading, stopped).await
        } else {
            Ok(())
        };
        drop(leading);
        // The lease task releases the Lease once its channel is closed, so the next leader need
        // not wait for it to expire.
        let _ = lease_task.await;
        outcome
    } else {
        metrics.set_leader(true);
        health.set_ready();
        controller::run(ctx, stopped()).await
    };
    let _ = server.await;
    result
}

/// Runs the controllers while this replica leads; losing the Lease stops them at once.
async fn lead<F, Fut>(ctx: Arc<Context>, leading: &mut watch::Receiver<bool>, stopped: F) -> Result<(), Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
{
    let (lost_tx, lost_rx) = watch::channel(false);
    let stop_or_lost = {
        let stop = stopped();
        async move {
            let mut lost = lost_rx;
            tokio::select! {
                _ = stop => {},
                _ = lost.wait_for(|lost| *lost) => {},
            }
        }
    };
    let controllers = controller::run(ctx, stop_or_lost.boxed().shared());
    tokio::pin!(controllers);
    tokio::select! {
        result = &mut controllers => result,
        _ = leading.wait_for(|leader| !*leader) => {
            tracing::error!("lost leadership; stopping controllers");
            let _ = lost_tx.send(true);
            let _ = controllers.await;
            Err(Error::LeadershipLost)
        }
    }
}

/// A client configured from the environment (in-cluster or kubeconfig) that counts every API
/// request in the metrics, so writes per reconcile can be measured.
async fn counted_client(metrics: Arc<Metrics>) -> Result<kube::Client, Error> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| Error::Kube(kube::Error::InferConfig(e)))?;
    let counter = tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
        metrics.api_request(request.method());
        request
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&counter)
        .build())
}

async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate => {},
    }
}
