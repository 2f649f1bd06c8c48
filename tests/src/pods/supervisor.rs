//! One pod's life as a kubelet would run it: prepare volumes and environment, start a process
//! per container, restart it when it exits, probe readiness, report status, and stop it when the
//! pod goes away.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use tokio::process::Child;
use tokio::sync::watch;
use tokio::time::Instant;

use super::launch::{self, ConfigError, LaunchPlan, Sandbox, Sources};
use super::probe::{self, Check, Timing};
use super::status::{self, ContainerView, PodView, State, Terminated};
use super::volumes::{self, Content, Tokens};

/// How often the supervisor looks at its processes.
const TICK: Duration = Duration::from_millis(100);
/// Probe cadence until a container is first ready: tests wait on readiness, so don't idle.
const EAGER_PROBE: Duration = Duration::from_millis(200);
/// Upper bound for the probe period once ready (the kubelet's default is 10 s).
const MAX_PROBE_PERIOD: Duration = Duration::from_secs(1);
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(10);
/// Upper bound on the grace period after SIGTERM.
const MAX_GRACE: Duration = Duration::from_secs(10);
/// The PATH a container image usually sets.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What every pod supervisor shares.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) config_maps: Store<ConfigMap>,
    pub(crate) secrets: Store<Secret>,
    /// Bumped whenever a ConfigMap or Secret changes.
    pub(crate) sources_changed: watch::Receiver<u64>,
    /// Image repository → the local binary that stands in for it.
    pub(crate) images: BTreeMap<String, PathBuf>,
    pub(crate) root: PathBuf,
    pub(crate) http: reqwest::Client,
    /// The API server's URL, for the processes' in-cluster access.
    pub(crate) api_server: String,
    /// The nodes this runner plays the kubelet for (the rest are real).
    pub(crate) simulated_nodes: HashSet<String>,
    /// The cluster's DNS server, which the pods' processes resolve names with, if it has one.
    pub(crate) cluster_dns: Option<IpAddr>,
}

/// The ConfigMaps and Secrets of one namespace, read from the runner's caches.
struct NamespaceSources<'a> {
    shared: &'a Shared,
    namespace: &'a str,
}

impl Sources for NamespaceSources<'_> {
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let map = self
            .shared
            .config_maps
            .get(&ObjectRef::new(name).within(self.namespace))?;
        let text = map
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()));
        let binary = map
            .binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()));
        Some(text.chain(binary).collect())
    }

    fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let secret = self
            .shared
            .secrets
            .get(&ObjectRef::new(name).within(self.namespace))?;
        Some(
            secret
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
        )
    }
}

/// The directory holding one pod's volumes and logs.
pub(crate) fn pod_dir(root: &Path, namespace: &str, name: &str) -> PathBuf {
    root.join(format!("{namespace}_{name}"))
}

/// One container's process and what the kubelet would know about it.
struct Run {
    plan: LaunchPlan,
    check: Check,
    timing: Timing,
    child: Option<Child>,
    view: ContainerView,
    started_at: Option<Time>,
    successes: u32,
    failures: u32,
    next_probe: Instant,
    restart_at: Option<Instant>,
    backoff: Duration,
    log: PathBuf,
    /// The pod's `/etc/resolv.conf` (with the cluster's DNS), when the cluster has DNS.
    resolv_conf: Option<PathBuf>,
}

/// Runs the pod whose latest version `pod` carries until the sender is dropped (the pod was
/// deleted) or the pod gets a deletion timestamp.
pub(crate) async fn supervise(shared: Arc<Shared>, mut pod: watch::Receiver<Pod>) {
    let mut current = pod.borrow_and_update().clone();
    let namespace = current.namespace().unwrap_or_default();
    let name = current.name_any();
    let mut supervisor = Supervisor {
        shared: shared.clone(),
        pods: Api::namespaced(shared.client.clone(), &namespace),
        dir: pod_dir(&shared.root, &namespace, &name),
        label: format!("{namespace}/{name}"),
        name,
        runs: Vec::new(),
        waiting: None,
        readiness_changed_at: now(),
        reported: None,
        written: BTreeMap::new(),
        tokens: None,
        node_allocatable: None,
        started: false,
    };
    let mut sources_changed = shared.sources_changed.clone();

    // Like a kubelet, start only once the pod's sandbox (here: the IP kwok assigns) exists and
    // everything it references is there; retry whenever the pod or a source changes.
    loop {
        match supervisor.prepare(&current).await {
            Prepared::Yes => break,
            Prepared::NotYet => {}
            Prepared::Blocked { reason, message } => {
                supervisor.waiting = Some(waiting_views(&current, &reason, &message));
                if !supervisor.report().await {
                    return;
                }
            }
        }
        tokio::select! {
            changed = pod.changed() => match changed {
                Ok(()) => current = pod.borrow_and_update().clone(),
                Err(_) => return,
            },
            _ = sources_changed.changed() => {}
            // Service-account tokens and nodes are not watched: look again now and then.
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if current.metadata.deletion_timestamp.is_some() {
            return;
        }
    }
    supervisor.waiting = None;

    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            changed = pod.changed() => match changed {
                Ok(()) => {
                    current = pod.borrow_and_update().clone();
                    if current.metadata.deletion_timestamp.is_some() {
                        break;
                    }
                }
                Err(_) => break,
            },
            _ = sources_changed.changed() => supervisor.refresh_volumes(&current),
            _ = tick.tick() => {
                supervisor.step().await;
                if !supervisor.report().await {
                    break;
                }
            }
        }
    }
    let grace = current
        .spec
        .as_ref()
        .and_then(|spec| spec.termination_grace_period_seconds)
        .and_then(|seconds| u64::try_from(seconds).ok())
        .map_or(MAX_GRACE, |seconds| Duration::from_secs(seconds).min(MAX_GRACE));
    supervisor.stop(grace).await;
}

enum Prepared {
    Yes,
    /// Waiting for the pod's IP.
    NotYet,
    /// Something the pod references is missing or unusable (reported in its status).
    Blocked {
        reason: String,
        message: String,
    },
}

fn blocked(reason: &str, message: impl Into<String>) -> Prepared {
    Prepared::Blocked {
        reason: reason.to_owned(),
        message: message.into(),
    }
}

struct Supervisor {
    shared: Arc<Shared>,
    pods: Api<Pod>,
    dir: PathBuf,
    name: String,
    label: String,
    runs: Vec<Run>,
    /// Container statuses to report while the pod cannot start.
    waiting: Option<Vec<ContainerView>>,
    readiness_changed_at: Time,
    reported: Option<PodView>,
    /// Volume name → what was last written, so unchanged sources cause no rewrite.
    written: BTreeMap<String, Content>,
    tokens: Option<Tokens>,
    node_allocatable: Option<BTreeMap<String, String>>,
    started: bool,
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn waiting_views(pod: &Pod, reason: &str, message: &str) -> Vec<ContainerView> {
    let containers = pod.spec.iter().flat_map(|spec| spec.containers.iter());
    containers
        .map(|container| ContainerView {
            name: container.name.clone(),
            image: container.image.clone().unwrap_or_default(),
            ready: false,
            restart_count: 0,
            state: State::Waiting {
                reason: reason.to_owned(),
                message: message.to_owned(),
            },
            last_terminated: None,
        })
        .collect()
}

/// What the kubelet and the container runtime add to every container's environment, unless
/// the pod sets it, plus the API access `launch::kubeconfig` explains. HOME is the pod's own
/// directory, so nothing from the machine's home (such as ~/.kube/config) leaks in.
fn add_default_env(
    env: &mut Vec<(String, String)>,
    pod: &Pod,
    home: &Path,
    kubeconfig: &Path,
    api_server: &str,
) {
    let address = api_server.trim_start_matches("https://");
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "443"));
    let defaults = [
        ("HOSTNAME", pod.name_any()),
        ("PATH", DEFAULT_PATH.to_owned()),
        ("HOME", home.to_string_lossy().into_owned()),
        ("KUBERNETES_SERVICE_HOST", host.to_owned()),
        ("KUBERNETES_SERVICE_PORT", port.to_owned()),
        ("KUBECONFIG", kubeconfig.to_string_lossy().into_owned()),
    ];
    for (name, value) in defaults {
        if !env.iter().any(|(existing, _)| existing == name) {
            env.push((name.to_owned(), value));
        }
    }
}

impl Supervisor {
    fn sources<'a>(&'a self, namespace: &'a str) -> NamespaceSources<'a> {
        NamespaceSources {
            shared: &self.shared,
            namespace,
        }
    }

    /// Writes the volumes and plans every container's process.
    async fn prepare(&mut self, pod: &Pod) -> Prepared {
        let (Some(ip), Some(spec)) = (
            pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
            pod.spec.as_ref(),
        ) else {
            return Prepared::NotYet;
        };
        if self.node_allocatable.is_none() {
            match self.fetch_allocatable(spec.node_name.as_deref()).await {
                Ok(allocatable) => self.node_allocatable = Some(allocatable),
                Err(message) => return blocked("NodeUnknown", message),
            }
        }
        if self.tokens.is_none() {
            match self.fetch_tokens(pod).await {
                Ok(tokens) => self.tokens = Some(tokens),
                Err(message) => return blocked("CreateContainerConfigError", message),
            }
        }
        let dirs = [self.dir.join("logs"), self.dir.join("home")];
        if let Err(error) = dirs.iter().try_for_each(std::fs::create_dir_all) {
            return blocked(
                "RunContainerError",
                format!("cannot create {}: {error}", self.dir.display()),
            );
        }
        let volume_dirs = match self.write_volumes(pod) {
            Ok(dirs) => dirs,
            Err(message) => return blocked("CreateContainerConfigError", message),
        };
        let namespace = pod.namespace().unwrap_or_default();
        let resolv_conf = match self.shared.cluster_dns {
            Some(dns) => {
                let path = self.dir.join("resolv.conf");
                if let Err(error) = std::fs::write(&path, launch::resolv_conf(&namespace, dns)) {
                    return blocked(
                        "RunContainerError",
                        format!("cannot write {}: {error}", path.display()),
                    );
                }
                Some(path)
            }
            None => None,
        };
        let allocatable = self.node_allocatable.clone().unwrap_or_default();
        let mut runs = Vec::new();
        for container in &spec.containers {
            let image = container.image.as_deref().unwrap_or_default();
            let Some(binary) = self.shared.images.get(launch::image_repository(image)) else {
                return blocked(
                    "ErrImagePull",
                    format!("the pod runner has no local binary for image {image:?}"),
                );
            };
            let mounts = container
                .volume_mounts
                .iter()
                .flatten()
                .filter_map(|mount| {
                    let dir = volume_dirs.get(&mount.name)?;
                    let dir = match mount.sub_path.as_deref() {
                        Some(sub) if !sub.is_empty() => dir.join(sub),
                        _ => dir.clone(),
                    };
                    Some((mount.mount_path.clone(), dir))
                })
                .collect();
            let sandbox = Sandbox::new(mounts, &ip);
            let sources = self.sources(&namespace);
            let mut env = match launch::environment(pod, container, &allocatable, &sources, &sandbox) {
                Ok(env) => env,
                Err(ConfigError(message)) => return blocked("CreateContainerConfigError", message),
            };
            let kubeconfig = match self.write_kubeconfig(&sandbox, &container.name, &namespace) {
                Ok(path) => path,
                Err(message) => return blocked("RunContainerError", message),
            };
            let home = self.dir.join("home");
            add_default_env(&mut env, pod, &home, &kubeconfig, &self.shared.api_server);
            let plan = launch::plan(container, binary, env, &sandbox, &self.dir);
            let (check, timing) = probe::readiness_check(container, &ip);
            if let Check::Unsupported(reason) = &check {
                eprintln!(
                    "[pod-runner] {}: readiness probe of {}: {reason}",
                    self.label, container.name
                );
            }
            runs.push(Run {
                plan,
                check,
                timing,
                child: None,
                view: ContainerView {
                    name: container.name.clone(),
                    image: image.to_owned(),
                    ready: false,
                    restart_count: 0,
                    state: State::Waiting {
                        reason: "ContainerCreating".to_owned(),
                        message: String::new(),
                    },
                    last_terminated: None,
                },
                started_at: None,
                successes: 0,
                failures: 0,
                next_probe: Instant::now(),
                restart_at: Some(Instant::now()),
                backoff: Duration::from_secs(1),
                log: self.dir.join("logs").join(format!("{}.log", container.name)),
                resolv_conf: resolv_conf.clone(),
            });
        }
        self.runs = runs;
        Prepared::Yes
    }

    /// The kubeconfig for a container's in-cluster API access; without a service-account
    /// mount it points nowhere, so the process has no credentials, as in a real pod.
    fn write_kubeconfig(
        &self,
        sandbox: &Sandbox,
        container: &str,
        namespace: &str,
    ) -> Result<PathBuf, String> {
        let path = self.dir.join(format!("{container}.kubeconfig"));
        let Some(credentials) = sandbox.host_path(launch::SERVICE_ACCOUNT_DIR) else {
            return Ok(path);
        };
        let config = launch::kubeconfig(&self.shared.api_server, &credentials, namespace);
        std::fs::write(&path, config.to_string())
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        Ok(path)
    }

    async fn fetch_allocatable(&self, node: Option<&str>) -> Result<BTreeMap<String, String>, String> {
        let node = node.ok_or_else(|| "the pod is not bound to a node".to_owned())?;
        let nodes: Api<Node> = Api::all(self.shared.client.clone());
        let node = nodes
            .get(node)
            .await
            .map_err(|error| format!("cannot read node {node}: {error}"))?;
        let allocatable = node
            .status
            .and_then(|status| status.allocatable)
            .unwrap_or_default();
        Ok(allocatable.into_iter().map(|(k, v)| (k, v.0)).collect())
    }

    /// Service-account tokens for projected volumes, bound to the pod as the kubelet's are.
    async fn fetch_tokens(&self, pod: &Pod) -> Result<Tokens, String> {
        let mut tokens = Tokens::new();
        let sources = volumes::token_sources(pod);
        if sources.is_empty() {
            return Ok(tokens);
        }
        let namespace = pod.namespace().unwrap_or_default();
        let account = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.service_account_name.clone())
            .unwrap_or_else(|| "default".to_owned());
        let accounts: Api<ServiceAccount> = Api::namespaced(self.shared.client.clone(), &namespace);
        for source in sources {
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: source.audience.clone().into_iter().collect(),
                    expiration_seconds: source.expiration_seconds,
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".to_owned()),
                        kind: Some("Pod".to_owned()),
                        name: Some(pod.name_any()),
                        uid: pod.metadata.uid.clone(),
                    }),
                },
                ..TokenRequest::default()
            };
            let response: TokenRequest = accounts
                .create_subresource("token", &account, &PostParams::default(), &request)
                .await
                .map_err(|error| format!("cannot get a token for service account {account}: {error}"))?;
            let token = response.status.map(|status| status.token).unwrap_or_default();
            tokens.insert((source.volume, source.path), token);
        }
        Ok(tokens)
    }

    /// Writes every volume whose content changed; returns volume name → host directory.
    fn write_volumes(&mut self, pod: &Pod) -> Result<BTreeMap<String, PathBuf>, String> {
        let namespace = pod.namespace().unwrap_or_default();
        let tokens = self.tokens.clone().unwrap_or_default();
        let allocatable = self.node_allocatable.clone().unwrap_or_default();
        let mut dirs = BTreeMap::new();
        for volume in pod.spec.iter().flat_map(|spec| spec.volumes.iter().flatten()) {
            let dir = self.dir.join("volumes").join(&volume.name);
            let content = volumes::content(pod, volume, &self.sources(&namespace), &tokens, &allocatable)
                .map_err(|ConfigError(message)| message)?;
            if self.written.get(&volume.name) != Some(&content) {
                let written = match &content {
                    Content::EmptyDir => std::fs::create_dir_all(&dir),
                    Content::Files(files) => volumes::write_atomically(&dir, files),
                };
                written.map_err(|error| format!("cannot write volume {}: {error}", volume.name))?;
                self.written.insert(volume.name.clone(), content);
            }
            dirs.insert(volume.name.clone(), dir);
        }
        Ok(dirs)
    }

    /// A ConfigMap or Secret changed: update mounted files, as the kubelet does (environment
    /// variables keep their values until the container restarts, also as in Kubernetes).
    fn refresh_volumes(&mut self, pod: &Pod) {
        if let Err(error) = self.write_volumes(pod) {
            eprintln!(
                "[pod-runner] {}: keeping the previous volume contents: {error}",
                self.label
            );
        }
    }

    /// One look at every container: reap exits, restart when due, probe when due.
    async fn step(&mut self) {
        let ready_before = self.runs.iter().all(|run| run.view.ready);
        for run in &mut self.runs {
            reap(run, &self.label);
            if run.child.is_none() && run.restart_at.is_some_and(|at| Instant::now() >= at) {
                start(run, &self.label);
                self.started |= run.child.is_some();
            }
            if run.child.is_some() && Instant::now() >= run.next_probe {
                let passed = probe::passes(&run.check, &self.shared.http, run.timing.timeout).await;
                record_probe(run, passed);
            }
        }
        if self.runs.iter().all(|run| run.view.ready) != ready_before {
            self.readiness_changed_at = now();
        }
    }

    fn view(&self) -> PodView {
        let containers = match &self.waiting {
            Some(waiting) => waiting.clone(),
            None => self.runs.iter().map(|run| run.view.clone()).collect(),
        };
        PodView {
            containers,
            readiness_changed_at: self.readiness_changed_at.clone(),
            started: self.started,
        }
    }

    /// Patches the pod's status if it changed; `false` once the pod is gone.
    async fn report(&mut self) -> bool {
        let view = self.view();
        if self.reported.as_ref() == Some(&view) {
            return true;
        }
        let patch = Patch::Strategic(status::patch(&view));
        match self
            .pods
            .patch_status(&self.name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                self.reported = Some(view);
                true
            }
            Err(kube::Error::Api(status)) if status.code == 404 => false,
            Err(error) => {
                eprintln!("[pod-runner] {}: cannot report status: {error}", self.label);
                true
            }
        }
    }

    /// SIGTERM every process, then SIGKILL what is still running after `grace`.
    async fn stop(&mut self, grace: Duration) {
        for run in &self.runs {
            let pid = run.child.as_ref().and_then(Child::id);
            let pid = pid
                .and_then(|pid| i32::try_from(pid).ok())
                .and_then(rustix::process::Pid::from_raw);
            if let Some(pid) = pid {
                // The process may have exited in the meantime; nothing to do then.
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let deadline = Instant::now() + grace;
        for run in &mut self.runs {
            if let Some(mut child) = run.child.take()
                && tokio::time::timeout_at(deadline, child.wait()).await.is_err()
            {
                // Already-dead children make these fail harmlessly.
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
        if let Err(error) = std::fs::remove_dir_all(self.dir.join("volumes")) {
            eprintln!("[pod-runner] {}: cannot remove volumes: {error}", self.label);
        }
    }
}

/// Notices a process that exited and schedules its restart (restartPolicy Always), with the
/// kubelet's doubling back-off.
fn reap(run: &mut Run, label: &str) {
    let Some(child) = run.child.as_mut() else {
        return;
    };
    let exit = match child.try_wait() {
        Ok(Some(status)) => status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Ok(None) => return,
        Err(error) => {
            eprintln!("[pod-runner] {label}: cannot poll {}: {error}", run.view.name);
            return;
        }
    };
    eprintln!(
        "[pod-runner] {label}: container {} exited with {exit}; restarting in {:?} (log: {})",
        run.view.name,
        run.backoff,
        run.log.display()
    );
    run.child = None;
    run.view.ready = false;
    run.view.restart_count += 1;
    run.view.last_terminated = Some(Terminated {
        exit_code: exit,
        started_at: run.started_at.clone().unwrap_or_else(now),
        finished_at: now(),
    });
    run.view.state = State::Waiting {
        reason: "CrashLoopBackOff".to_owned(),
        message: format!("back-off {:?} restarting failed container", run.backoff),
    };
    run.successes = 0;
    run.failures = 0;
    run.restart_at = Some(Instant::now() + run.backoff);
    run.backoff = (run.backoff * 2).min(MAX_RESTART_BACKOFF);
}

fn start(run: &mut Run, label: &str) {
    let plan = &run.plan;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&run.log);
    let (stdout, stderr) = match log.and_then(|file| Ok((file.try_clone()?, file))) {
        Ok((out, err)) => (Stdio::from(out), Stdio::from(err)),
        Err(error) => {
            eprintln!("[pod-runner] {label}: cannot open {}: {error}", run.log.display());
            (Stdio::null(), Stdio::null())
        }
    };
    let mut command = match &run.resolv_conf {
        Some(resolv_conf) => crate::process::command_dying_with_parent_resolving(&plan.program, resolv_conf),
        None => crate::process::command_dying_with_parent(&plan.program),
    };
    command
        .args(&plan.args)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&plan.working_dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true);
    match command.spawn() {
        Ok(child) => {
            let started_at = now();
            run.child = Some(child);
            run.started_at = Some(started_at.clone());
            run.view.state = State::Running { started_at };
            run.restart_at = None;
            run.next_probe = Instant::now() + run.timing.initial_delay;
            run.view.ready = run.check == Check::None;
        }
        Err(error) => {
            run.view.state = State::Waiting {
                reason: "RunContainerError".to_owned(),
                message: format!("cannot start {}: {error}", plan.program.display()),
            };
            run.restart_at = Some(Instant::now() + run.backoff);
            run.backoff = (run.backoff * 2).min(MAX_RESTART_BACKOFF);
        }
    }
}

/// Applies one probe result with the probe's thresholds, and schedules the next probe.
fn record_probe(run: &mut Run, passed: bool) {
    if passed {
        run.successes += 1;
        run.failures = 0;
        if run.successes >= run.timing.success_threshold {
            run.view.ready = true;
            // Like the kubelet, a container that made it forgets its crash back-off.
            run.backoff = Duration::from_secs(1);
        }
    } else {
        run.failures += 1;
        run.successes = 0;
        if run.failures >= run.timing.failure_threshold {
            run.view.ready = false;
        }
    }
    let period = if run.view.ready {
        run.timing.period.min(MAX_PROBE_PERIOD)
    } else {
        EAGER_PROBE
    };
    run.next_probe = Instant::now() + period;
}
