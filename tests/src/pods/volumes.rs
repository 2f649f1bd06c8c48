//! A pod's volumes as host directories: what each volume holds (pure), and writing it the way
//! the kubelet does, so a program that watches its mounted files sees updates the same way.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use super::fields::{field_value, resource_value};
use super::launch::{ConfigError, Sources};

const DEFAULT_MODE: i32 = 0o644;

/// One file of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileEntry {
    pub(crate) data: Vec<u8>,
    pub(crate) mode: u32,
}

/// What a volume holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Content {
    /// A writable directory, empty at first.
    EmptyDir,
    /// Files written by the runner, keyed by relative path.
    Files(BTreeMap<String, FileEntry>),
}

/// Service-account tokens fetched for the pod, keyed by `(volume name, file path)`.
pub(crate) type Tokens = HashMap<(String, String), String>;

/// A projected service-account token the pod asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenSource {
    pub(crate) volume: String,
    pub(crate) path: String,
    pub(crate) audience: Option<String>,
    pub(crate) expiration_seconds: Option<i64>,
}

/// Every projected service-account token in the pod's volumes.
pub(crate) fn token_sources(pod: &Pod) -> Vec<TokenSource> {
    let volumes = pod.spec.iter().flat_map(|spec| spec.volumes.iter().flatten());
    volumes
        .flat_map(|volume| {
            let sources = volume.projected.iter().flat_map(|p| p.sources.iter().flatten());
            sources.filter_map(move |source| {
                let token = source.service_account_token.as_ref()?;
                Some(TokenSource {
                    volume: volume.name.clone(),
                    path: token.path.clone(),
                    audience: token.audience.clone(),
                    expiration_seconds: token.expiration_seconds,
                })
            })
        })
        .collect()
}

/// What `volume` holds right now.
pub(crate) fn content(
    pod: &Pod,
    volume: &Volume,
    sources: &dyn Sources,
    tokens: &Tokens,
    node_allocatable: &BTreeMap<String, String>,
) -> Result<Content, ConfigError> {
    let mut files = BTreeMap::new();
    if volume.empty_dir.is_some() {
        return Ok(Content::EmptyDir);
    } else if let Some(source) = &volume.config_map {
        let mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        let data = sources.config_map(&source.name);
        let what = format!("configmap {:?}", source.name);
        add_keys(
            &mut files,
            data,
            source.items.as_deref(),
            mode,
            source.optional,
            &what,
        )?;
    } else if let Some(source) = &volume.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        let mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        let what = format!("secret {name:?}");
        add_keys(
            &mut files,
            sources.secret(&name),
            source.items.as_deref(),
            mode,
            source.optional,
            &what,
        )?;
    } else if let Some(source) = &volume.downward_api {
        let mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        add_downward(
            &mut files,
            pod,
            source.items.as_deref().unwrap_or_default(),
            mode,
            node_allocatable,
        )?;
    } else if let Some(projected) = &volume.projected {
        let mode = projected.default_mode.unwrap_or(DEFAULT_MODE);
        for source in projected.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                let what = format!("configmap {:?}", cm.name);
                add_keys(
                    &mut files,
                    sources.config_map(&cm.name),
                    cm.items.as_deref(),
                    mode,
                    cm.optional,
                    &what,
                )?;
            } else if let Some(secret) = &source.secret {
                let what = format!("secret {:?}", secret.name);
                let data = sources.secret(&secret.name);
                add_keys(
                    &mut files,
                    data,
                    secret.items.as_deref(),
                    mode,
                    secret.optional,
                    &what,
                )?;
            } else if let Some(downward) = &source.downward_api {
                let items = downward.items.as_deref().unwrap_or_default();
                add_downward(&mut files, pod, items, mode, node_allocatable)?;
            } else if let Some(token) = &source.service_account_token {
                let key = (volume.name.clone(), token.path.clone());
                let token = tokens
                    .get(&key)
                    .ok_or_else(|| ConfigError(format!("no service-account token for {}", volume.name)))?;
                files.insert(key.1, entry(token.as_bytes().to_vec(), mode));
            } else {
                return Err(ConfigError(format!(
                    "volume {}: unsupported projected source",
                    volume.name
                )));
            }
        }
    } else {
        return Err(ConfigError(format!(
            "volume {}: only emptyDir, configMap, secret, downwardAPI and projected volumes are supported",
            volume.name
        )));
    }
    Ok(Content::Files(files))
}

fn entry(data: Vec<u8>, mode: i32) -> FileEntry {
    FileEntry {
        data,
        mode: u32::try_from(mode & 0o777).unwrap_or(0o644),
    }
}

fn add_keys(
    files: &mut BTreeMap<String, FileEntry>,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    mode: i32,
    optional: Option<bool>,
    what: &str,
) -> Result<(), ConfigError> {
    let Some(data) = data else {
        return if optional.unwrap_or(false) {
            Ok(())
        } else {
            Err(ConfigError(format!("{what} not found")))
        };
    };
    match items {
        None => {
            for (key, value) in data {
                files.insert(key, entry(value, mode));
            }
        }
        Some(items) => {
            for item in items {
                let value = data
                    .get(&item.key)
                    .ok_or_else(|| ConfigError(format!("key {:?} of {what} not found", item.key)))?;
                files.insert(item.path.clone(), entry(value.clone(), item.mode.unwrap_or(mode)));
            }
        }
    }
    Ok(())
}

fn add_downward(
    files: &mut BTreeMap<String, FileEntry>,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    mode: i32,
    node_allocatable: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            field_value(pod, &field.field_path)
                .ok_or_else(|| ConfigError(format!("unsupported field {:?}", field.field_path)))?
        } else if let Some(resource) = &item.resource_field_ref {
            let containers = pod.spec.iter().flat_map(|spec| spec.containers.iter());
            let mut containers = containers.filter(|c| Some(&c.name) == resource.container_name.as_ref());
            let container = containers
                .next()
                .ok_or_else(|| ConfigError(format!("{}: no such container", item.path)))?;
            resource_value(container, resource, node_allocatable).map_err(ConfigError)?
        } else {
            continue;
        };
        files.insert(
            item.path.clone(),
            entry(value.into_bytes(), item.mode.unwrap_or(mode)),
        );
    }
    Ok(())
}

/// Writes a volume's files into `dir` atomically, like the kubelet: the files live in a
/// timestamped directory, `..data` points at it, and each top-level name is a symlink through
/// `..data`. An update writes a new directory and swaps `..data` with one rename, so a reader
/// never sees a mix of old and new files.
pub(crate) fn write_atomically(dir: &Path, files: &BTreeMap<String, FileEntry>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let previous = std::fs::read_link(dir.join("..data")).ok();
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let target = dir.join(&stamp);
    std::fs::create_dir(&target)?;
    for (path, file) in files {
        let relative = safe_relative(path)?;
        let full = target.join(relative);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&full, &file.data)?;
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(file.mode))?;
    }
    let staging = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&staging);
    std::os::unix::fs::symlink(&stamp, &staging)?;
    std::fs::rename(&staging, dir.join("..data"))?;

    let wanted: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|path| path.split('/').next().map(str::to_owned))
        .collect();
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !wanted.contains(&name) {
            std::fs::remove_file(dir.join(&name))?;
        }
    }
    if let Some(previous) = previous.filter(|previous| previous != Path::new(&stamp)) {
        std::fs::remove_dir_all(dir.join(previous))?;
    }
    Ok(())
}

/// Rejects absolute paths and `..` components: volume item paths must stay inside the volume.
fn safe_relative(path: &str) -> std::io::Result<PathBuf> {
    let relative = PathBuf::from(path);
    let ok = !path.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(relative)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("volume file path {path:?} leaves the volume"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, EmptyDirVolumeSource, SecretVolumeSource};

    struct Fixed;
    impl Sources for Fixed {
        fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            (name == "cfg").then(|| {
                [
                    ("config.yaml".to_owned(), b"ttl: 60\n".to_vec()),
                    ("other".to_owned(), b"x".to_vec()),
                ]
                .into()
            })
        }
        fn secret(&self, _: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            None
        }
    }

    fn volume(name: &str) -> Volume {
        Volume {
            name: name.to_owned(),
            ..Volume::default()
        }
    }

    #[test]
    fn config_map_items_select_and_rename_keys() {
        let volume = Volume {
            config_map: Some(ConfigMapVolumeSource {
                name: "cfg".to_owned(),
                items: Some(vec![KeyToPath {
                    key: "config.yaml".to_owned(),
                    path: "edge/config.yaml".to_owned(),
                    mode: Some(0o600),
                }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..volume("config")
        };
        let content = content(&Pod::default(), &volume, &Fixed, &Tokens::new(), &BTreeMap::new());
        let expected = [(
            "edge/config.yaml".to_owned(),
            FileEntry {
                data: b"ttl: 60\n".to_vec(),
                mode: 0o600,
            },
        )];
        assert_eq!(content, Ok(Content::Files(expected.into())));
    }

    #[test]
    fn missing_sources_block_the_pod_unless_optional() {
        let mut secret = Volume {
            secret: Some(SecretVolumeSource {
                secret_name: Some("creds".to_owned()),
                ..SecretVolumeSource::default()
            }),
            ..volume("creds")
        };
        let result = content(&Pod::default(), &secret, &Fixed, &Tokens::new(), &BTreeMap::new());
        assert_eq!(result, Err(ConfigError("secret \"creds\" not found".to_owned())));
        if let Some(source) = secret.secret.as_mut() {
            source.optional = Some(true);
        }
        let result = content(&Pod::default(), &secret, &Fixed, &Tokens::new(), &BTreeMap::new());
        assert_eq!(result, Ok(Content::Files(BTreeMap::new())));

        let empty = Volume {
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..volume("cache")
        };
        let result = content(&Pod::default(), &empty, &Fixed, &Tokens::new(), &BTreeMap::new());
        assert_eq!(result, Ok(Content::EmptyDir));
    }

    #[test]
    fn atomic_writes_swap_the_whole_volume() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = |data: &[u8]| FileEntry {
            data: data.to_vec(),
            mode: 0o644,
        };
        let first = [("a".to_owned(), file(b"1")), ("sub/b".to_owned(), file(b"2"))].into();
        write_atomically(dir.path(), &first)?;
        assert_eq!(std::fs::read(dir.path().join("a"))?, b"1");
        assert_eq!(std::fs::read(dir.path().join("sub/b"))?, b"2");

        let second = [("a".to_owned(), file(b"3"))].into();
        write_atomically(dir.path(), &second)?;
        assert_eq!(std::fs::read(dir.path().join("a"))?, b"3");
        assert!(
            std::fs::symlink_metadata(dir.path().join("sub")).is_err(),
            "stale entry kept"
        );
        let stamped = std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("..1"))
            .count();
        assert_eq!(stamped, 1, "the previous generation was not removed");
        Ok(())
    }

    #[test]
    fn item_paths_cannot_leave_the_volume() {
        let dir = tempfile::tempdir().ok();
        let bad = [(
            "../escape".to_owned(),
            FileEntry {
                data: vec![],
                mode: 0o644,
            },
        )]
        .into();
        let result = dir.map(|dir| write_atomically(dir.path(), &bad));
        assert!(matches!(result, Some(Err(_))), "{result:?}");
    }
}
