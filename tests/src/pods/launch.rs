//! What to run for one container: program, arguments, environment and working directory, built
//! from the pod's own spec. Pure: every input from the API is passed in.
//!
//! The process runs on the host, not in a container, so two things a container runtime would
//! provide are emulated by rewriting the strings the spec hands to the program:
//! - its filesystem: every absolute path under a volume's `mountPath` (in command, args and env
//!   values) is rewritten to the host directory holding that volume;
//! - its network namespace: a listen address of `0.0.0.0` or `[::]` is rewritten to the pod's
//!   IP, so many pods can each listen on "all addresses" at the same port.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::fields::{field_value, resource_value};

/// One container's process, ready to spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LaunchPlan {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) working_dir: PathBuf,
}

/// ConfigMap and Secret contents, as the runner's caches hold them.
pub(crate) trait Sources {
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>>;
    fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>>;
}

/// Host stand-ins for the container's filesystem and network.
#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    /// `(mountPath, host directory)`, longest mount path first so nested mounts win.
    mounts: Vec<(String, PathBuf)>,
    pod_ip: String,
}

impl Sandbox {
    pub(crate) fn new(mounts: Vec<(String, PathBuf)>, pod_ip: &str) -> Self {
        let mut mounts: Vec<(String, PathBuf)> = mounts
            .into_iter()
            .map(|(path, dir)| (path.trim_end_matches('/').to_owned(), dir))
            .filter(|(path, _)| !path.is_empty())
            .collect();
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        Sandbox {
            mounts,
            pod_ip: pod_ip.to_owned(),
        }
    }

    /// `value` with container paths and wildcard listen addresses replaced by their host
    /// counterparts.
    pub(crate) fn rewrite(&self, value: &str) -> String {
        self.rewrite_addresses(&self.rewrite_paths(value))
    }

    /// The host path for a container path, when it lies under a mount.
    pub(crate) fn host_path(&self, container_path: &str) -> Option<PathBuf> {
        self.mounts.iter().find_map(|(mount, dir)| {
            let rest = container_path.strip_prefix(mount.as_str())?;
            if rest.is_empty() {
                Some(dir.clone())
            } else {
                rest.strip_prefix('/').map(|rest| dir.join(rest))
            }
        })
    }

    fn rewrite_paths(&self, value: &str) -> String {
        let mut out = String::with_capacity(value.len());
        let mut i = 0;
        while i < value.len() {
            let at_boundary = value[..i]
                .chars()
                .next_back()
                .is_none_or(|c| !continues_path(c) && c != '/');
            let replaced = at_boundary
                .then(|| {
                    self.mounts.iter().find(|(mount, _)| {
                        value[i..].starts_with(mount.as_str())
                            && value[i + mount.len()..]
                                .chars()
                                .next()
                                .is_none_or(|c| !continues_path(c))
                    })
                })
                .flatten();
            match replaced {
                Some((mount, dir)) => {
                    out.push_str(&dir.to_string_lossy());
                    i += mount.len();
                }
                None => {
                    let c = value[i..].chars().next().unwrap_or_default();
                    out.push(c);
                    i += c.len_utf8().max(1);
                }
            }
        }
        out
    }

    fn rewrite_addresses(&self, value: &str) -> String {
        let ip = &self.pod_ip;
        let value = value.replace("//0.0.0.0", &format!("//{ip}"));
        // Look at each word (split after spaces, '=' and ','), keeping the separators.
        value
            .split_inclusive([' ', '=', ','])
            .map(|part| {
                let word = part.trim_end_matches([' ', '=', ',']);
                let separator = &part[word.len()..];
                let word = match word {
                    "0.0.0.0" | "::" | "[::]" => ip.clone(),
                    _ => match word
                        .strip_prefix("0.0.0.0:")
                        .or_else(|| word.strip_prefix("[::]:"))
                    {
                        Some(port) => format!("{ip}:{port}"),
                        None => word.to_owned(),
                    },
                };
                word + separator
            })
            .collect()
    }
}

/// Whether `c` can be part of a path component name (so a mount path followed by it is a
/// different name, and a path preceded by it is not at the start of a path).
fn continues_path(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '~' | '$')
}

/// Expands `$(NAME)` references the way Kubernetes does for env values, command and args:
/// known names are replaced, unknown ones kept verbatim, and `$$` stands for a literal `$`.
pub(crate) fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(') {
            match tail.find(')') {
                Some(end) => {
                    let name = &tail[..end];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &tail[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = tail;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Why a container cannot start yet (the kubelet's CreateContainerConfigError).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError(pub(crate) String);

/// The container's environment, in Kubernetes order: `envFrom` sources first, then `env`
/// entries (later ones override earlier ones), each value expanded against what came before.
/// Values are rewritten for the sandbox.
pub(crate) fn environment(
    pod: &Pod,
    container: &Container,
    node_allocatable: &BTreeMap<String, String>,
    sources: &dyn Sources,
    sandbox: &Sandbox,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| match env
        .iter_mut()
        .find(|(existing, _)| *existing == name)
    {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    };

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let (data, optional, what) = if let Some(source) = &from.config_map_ref {
            (
                sources.config_map(&source.name),
                source.optional.unwrap_or(false),
                format!("configmap {:?}", source.name),
            )
        } else if let Some(source) = &from.secret_ref {
            (
                sources.secret(&source.name),
                source.optional.unwrap_or(false),
                format!("secret {:?}", source.name),
            )
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (key, value) in data {
                    let value = String::from_utf8_lossy(&value).into_owned();
                    set(&mut env, format!("{prefix}{key}"), sandbox.rewrite(&value));
                }
            }
            None if optional => {}
            None => return Err(ConfigError(format!("{what} not found"))),
        }
    }

    for var in container.env.iter().flatten() {
        let value = if let Some(value) = &var.value {
            Some(expand(value, |name| lookup(&env, name)))
        } else if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                Some(field_value(pod, &field.field_path).ok_or_else(|| {
                    ConfigError(format!(
                        "env {}: unsupported field {:?}",
                        var.name, field.field_path
                    ))
                })?)
            } else if let Some(resource) = &from.resource_field_ref {
                Some(
                    resource_value(container, resource, node_allocatable)
                        .map_err(|reason| ConfigError(format!("env {}: {reason}", var.name)))?,
                )
            } else if let Some(key) = &from.config_map_key_ref {
                key_value(
                    sources.config_map(&key.name),
                    &key.key,
                    key.optional.unwrap_or(false),
                    &format!("configmap {:?}", key.name),
                )?
            } else if let Some(key) = &from.secret_key_ref {
                key_value(
                    sources.secret(&key.name),
                    &key.key,
                    key.optional.unwrap_or(false),
                    &format!("secret {:?}", key.name),
                )?
            } else {
                None
            }
        } else {
            Some(String::new())
        };
        if let Some(value) = value {
            set(&mut env, var.name.clone(), sandbox.rewrite(&value));
        }
    }
    Ok(env)
}

fn lookup(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
}

fn key_value(
    data: Option<BTreeMap<String, Vec<u8>>>,
    key: &str,
    optional: bool,
    what: &str,
) -> Result<Option<String>, ConfigError> {
    match data.and_then(|data| data.get(key).cloned()) {
        Some(value) => Ok(Some(String::from_utf8_lossy(&value).into_owned())),
        None if optional => Ok(None),
        None => Err(ConfigError(format!("key {key:?} of {what} not found"))),
    }
}

/// The process for `container`: the local binary standing in for its image's entrypoint, with
/// the spec's command (minus the entrypoint path itself) and args, expanded and rewritten.
pub(crate) fn plan(
    container: &Container,
    binary: &Path,
    env: Vec<(String, String)>,
    sandbox: &Sandbox,
    default_working_dir: &Path,
) -> LaunchPlan {
    let expand_all = |values: &[String]| -> Vec<String> {
        values
            .iter()
            .map(|value| sandbox.rewrite(&expand(value, |name| lookup(&env, name))))
            .collect()
    };
    // The image's entrypoint is the binary itself, so command[0] (its path inside the image)
    // is dropped; the rest of command comes before args, as in a container.
    let command = container.command.as_deref().unwrap_or_default();
    let mut args = expand_all(command.get(1..).unwrap_or_default());
    args.extend(expand_all(container.args.as_deref().unwrap_or_default()));
    let working_dir = container
        .working_dir
        .as_deref()
        .and_then(|dir| sandbox.host_path(dir))
        .unwrap_or_else(|| default_working_dir.to_owned());
    LaunchPlan {
        program: binary.to_owned(),
        args,
        env,
        working_dir,
    }
}

/// Where a pod's service-account credentials are mounted (token, ca.crt, namespace).
pub(crate) const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The in-cluster API access a pod's process gets, as a kubeconfig: a process cannot read the
/// service-account files at their fixed in-cluster path here, so it is pointed (`KUBECONFIG`)
/// at a kubeconfig using the very same files, wherever they were written. Clients that infer
/// their configuration (kubeconfig first, then in-cluster, as kube-rs and client-go do) get the
/// pod's own identity and RBAC either way.
pub(crate) fn kubeconfig(server: &str, credentials: &Path, namespace: &str) -> serde_json::Value {
    let path = |file: &str| credentials.join(file).to_string_lossy().into_owned();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "in-cluster",
            "cluster": { "server": server, "certificate-authority": path("ca.crt") },
        }],
        "users": [{ "name": "service-account", "user": { "tokenFile": path("token") } }],
        "contexts": [{
            "name": "in-cluster",
            "context": { "cluster": "in-cluster", "user": "service-account", "namespace": namespace },
        }],
        "current-context": "in-cluster",
    })
}

/// The image reference without its tag or digest: `registry/repo:tag@sha256:..` → `registry/repo`.
pub(crate) fn image_repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
    match without_digest.rfind(':') {
        Some(colon) if !without_digest[colon..].contains('/') => &without_digest[..colon],
        _ => without_digest,
    }
}

/// The `/etc/resolv.conf` the kubelet gives a pod of `namespace` with `dnsPolicy: ClusterFirst`:
/// the cluster's DNS server, and search domains that make `<service>` and
/// `<service>.<namespace>` resolve.
pub(crate) fn resolv_conf(namespace: &str, dns: std::net::IpAddr) -> String {
    format!(
        "search {namespace}.svc.cluster.local svc.cluster.local cluster.local\nnameserver {dns}\noptions ndots:5\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector, SecretEnvSource,
    };
    use kube::api::ObjectMeta;

    struct Fixed;
    impl Sources for Fixed {
        fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            (name == "cfg").then(|| [("LEVEL".to_owned(), b"debug".to_vec())].into())
        }
        fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            (name == "creds").then(|| [("TOKEN".to_owned(), b"s3cr3t".to_vec())].into())
        }
    }

    fn sandbox() -> Sandbox {
        Sandbox::new(
            vec![
                ("/etc/edge".to_owned(), PathBuf::from("/tmp/pod/volumes/config")),
                (
                    "/etc/edge/secret/".to_owned(),
                    PathBuf::from("/tmp/pod/volumes/secret"),
                ),
                ("/var/cache".to_owned(), PathBuf::from("/tmp/pod/volumes/cache")),
            ],
            "198.18.0.7",
        )
    }

    #[test]
    fn paths_under_a_mount_are_rewritten_and_the_longest_mount_wins() {
        let sandbox = sandbox();
        assert_eq!(
            sandbox.rewrite("/etc/edge/config.yaml"),
            "/tmp/pod/volumes/config/config.yaml"
        );
        assert_eq!(
            sandbox.rewrite("--config=/etc/edge/c.yaml"),
            "--config=/tmp/pod/volumes/config/c.yaml"
        );
        assert_eq!(
            sandbox.rewrite("/etc/edge/secret/token"),
            "/tmp/pod/volumes/secret/token"
        );
        assert_eq!(sandbox.rewrite("/var/cache"), "/tmp/pod/volumes/cache");
        assert_eq!(
            sandbox.rewrite("ln -s /var/cache \"/etc/edge\";"),
            "ln -s /tmp/pod/volumes/cache \"/tmp/pod/volumes/config\";"
        );
        assert_eq!(
            sandbox.rewrite("/var/cache-2 /var/cached"),
            "/var/cache-2 /var/cached"
        );
        // Only whole path components, and only where a path can start.
        assert_eq!(sandbox.rewrite("/etc/edgefleet"), "/etc/edgefleet");
        assert_eq!(sandbox.rewrite("x/etc/edge"), "x/etc/edge");
        assert_eq!(
            sandbox.host_path("/etc/edge/secret/a"),
            Some(PathBuf::from("/tmp/pod/volumes/secret/a"))
        );
        assert_eq!(sandbox.host_path("/opt"), None);
    }

    #[test]
    fn wildcard_listen_addresses_become_the_pod_ip() {
        let sandbox = sandbox();
        assert_eq!(sandbox.rewrite("0.0.0.0:8080"), "198.18.0.7:8080");
        assert_eq!(
            sandbox.rewrite("--listen=0.0.0.0:8080"),
            "--listen=198.18.0.7:8080"
        );
        assert_eq!(sandbox.rewrite("[::]:9090"), "198.18.0.7:9090");
        assert_eq!(sandbox.rewrite("0.0.0.0"), "198.18.0.7");
        assert_eq!(sandbox.rewrite("http://0.0.0.0:80/x"), "http://198.18.0.7:80/x");
        assert_eq!(
            sandbox.rewrite("serve --bind 0.0.0.0 80"),
            "serve --bind 198.18.0.7 80"
        );
        assert_eq!(
            sandbox.rewrite("a=0.0.0.0:1,[::]:2"),
            "a=198.18.0.7:1,198.18.0.7:2"
        );
        assert_eq!(sandbox.rewrite("10.0.0.0:1"), "10.0.0.0:1");
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let lookup = |name: &str| (name == "A").then(|| "1".to_owned());
        assert_eq!(expand("x$(A)y", lookup), "x1y");
        assert_eq!(expand("$(B)", lookup), "$(B)");
        assert_eq!(expand("$$(A)", lookup), "$(A)");
        assert_eq!(expand("cost: $5 $(A", lookup), "cost: $5 $(A");
    }

    #[test]
    fn kubeconfig_uses_the_mounted_service_account_files() {
        let config = kubeconfig("https://127.0.0.1:6443", Path::new("/tmp/pod/volumes/sa"), "web");
        assert_eq!(
            config["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            config["clusters"][0]["cluster"]["certificate-authority"],
            "/tmp/pod/volumes/sa/ca.crt"
        );
        assert_eq!(
            config["users"][0]["user"]["tokenFile"],
            "/tmp/pod/volumes/sa/token"
        );
        assert_eq!(config["contexts"][0]["context"]["namespace"], "web");
    }

    #[test]
    fn image_repository_strips_tag_and_digest_but_not_a_registry_port() {
        assert_eq!(image_repository("edgefleet/edge:0.1.0"), "edgefleet/edge");
        assert_eq!(image_repository("localhost:5000/edge"), "localhost:5000/edge");
        assert_eq!(
            image_repository("localhost:5000/edge:1@sha256:ab"),
            "localhost:5000/edge"
        );
        assert_eq!(image_repository("edge"), "edge");
    }

    fn env_var(name: &str, value: Option<&str>, from: Option<EnvVarSource>) -> EnvVar {
        EnvVar {
            name: name.to_owned(),
            value: value.map(str::to_owned),
            value_from: from,
        }
    }

    #[test]
    fn environment_resolves_sources_in_kubernetes_order() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("edge-1".to_owned()),
                namespace: Some("ns".to_owned()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        let container = Container {
            name: "edge".to_owned(),
            env_from: Some(vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: "creds".to_owned(),
                    optional: None,
                }),
                prefix: Some("S3_".to_owned()),
                ..EnvFromSource::default()
            }]),
            env: Some(vec![
                env_var(
                    "POD",
                    None,
                    Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".to_owned(),
                            api_version: None,
                        }),
                        ..EnvVarSource::default()
                    }),
                ),
                env_var("ID", Some("$(POD).$(S3_TOKEN)"), None),
                env_var(
                    "LEVEL",
                    None,
                    Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "cfg".to_owned(),
                            key: "LEVEL".to_owned(),
                            optional: None,
                        }),
                        ..EnvVarSource::default()
                    }),
                ),
                env_var("CONFIG", Some("/etc/edge/config.yaml"), None),
            ]),
            ..Container::default()
        };
        let env = environment(&pod, &container, &BTreeMap::new(), &Fixed, &sandbox());
        assert_eq!(
            env,
            Ok(vec![
                ("S3_TOKEN".to_owned(), "s3cr3t".to_owned()),
                ("POD".to_owned(), "edge-1".to_owned()),
                ("ID".to_owned(), "edge-1.s3cr3t".to_owned()),
                ("LEVEL".to_owned(), "debug".to_owned()),
                (
                    "CONFIG".to_owned(),
                    "/tmp/pod/volumes/config/config.yaml".to_owned()
                ),
            ])
        );
    }

    #[test]
    fn a_missing_required_source_is_a_config_error() {
        let container = Container {
            env_from: Some(vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: "absent".to_owned(),
                    optional: None,
                }),
                ..EnvFromSource::default()
            }]),
            ..Container::default()
        };
        let env = environment(&Pod::default(), &container, &BTreeMap::new(), &Fixed, &sandbox());
        assert_eq!(env, Err(ConfigError("secret \"absent\" not found".to_owned())));
    }

    #[test]
    fn plan_drops_the_image_entrypoint_and_expands_args() {
        let container = Container {
            command: Some(vec!["/usr/local/bin/edge".to_owned(), "serve".to_owned()]),
            args: Some(vec![
                "--config=/etc/edge/c.yaml".to_owned(),
                "--id=$(POD)".to_owned(),
            ]),
            working_dir: Some("/var/cache".to_owned()),
            ..Container::default()
        };
        let env = vec![("POD".to_owned(), "edge-1".to_owned())];
        let plan = plan(
            &container,
            Path::new("/bin/edge"),
            env,
            &sandbox(),
            Path::new("/tmp/pod"),
        );
        assert_eq!(plan.program, PathBuf::from("/bin/edge"));
        assert_eq!(
            plan.args,
            ["serve", "--config=/tmp/pod/volumes/config/c.yaml", "--id=edge-1"]
        );
        assert_eq!(plan.working_dir, PathBuf::from("/tmp/pod/volumes/cache"));
    }
}
