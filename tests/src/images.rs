//! The container images real nodes run, built by `cluster/images.sh` (release binaries, a base
//! from Debian packages, crane) once per process and cached across runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;
use tokio::sync::OnceCell;

use crate::error::{Error, IoContext, Result};
use crate::tools::scripts_dir;

static BUILT: OnceCell<Images> = OnceCell::const_new();

/// The built image tarballs and the references they carry.
#[derive(Debug, Clone)]
pub struct Images {
    /// The directory of the tarballs (`<name>.tar`).
    pub dir: PathBuf,
    /// The release binaries the images hold (`target/release`).
    binaries: PathBuf,
    references: BTreeMap<String, String>,
}

impl Images {
    /// Builds whatever is stale (a release build of the workspace's binaries the first time:
    /// minutes, printed as it goes) and returns the images.
    pub async fn built() -> Result<&'static Images> {
        BUILT.get_or_try_init(build).await
    }

    /// The reference of image `name` (`operator`, `edge`, `pause`, `origin`).
    pub fn reference(&self, name: &str) -> Result<&str> {
        self.references
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| Error::Invalid {
                what: format!("image name {name:?}"),
                reason: format!("images.sh builds {:?}", self.references.keys()),
            })
    }

    /// The image tarball of `name`.
    pub fn tarball(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.tar"))
    }

    /// The release build of the workspace binary `name` that the images hold (the pod runner
    /// runs the same one for pods on simulated nodes).
    pub fn binary(&self, name: &str) -> PathBuf {
        self.binaries.join(name)
    }
}

async fn build() -> Result<Images> {
    let script = scripts_dir().join("images.sh");
    let output = images_sh(&script, &[], Stdio::inherit()).await?;
    let printed = |key: &str| {
        output
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .map(PathBuf::from)
            .ok_or_else(|| Error::Invalid {
                what: "the answer of images.sh".to_owned(),
                reason: format!("no {key}= line in {output:?}"),
            })
    };
    let dir = printed("images")?;
    let binaries = printed("binaries")?;
    let listing = images_sh(&script, &["--list"], Stdio::piped()).await?;
    Ok(Images {
        references: parse_list(&listing, &dir)?,
        dir,
        binaries,
    })
}

/// Runs `images.sh args`; its progress goes to our stderr, its answer (stdout) is returned.
async fn images_sh(script: &Path, args: &[&str], stderr: Stdio) -> Result<String> {
    let output = Command::new("bash")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .output()
        .await
        .context(|| format!("cannot run {}", script.display()))?;
    if !output.status.success() {
        return Err(Error::CommandFailed {
            command: format!("images.sh {}", args.join(" ")),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `<name>.tar <reference>` lines → name → reference, each tarball present in `dir`.
fn parse_list(listing: &str, dir: &Path) -> Result<BTreeMap<String, String>> {
    listing
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let invalid = |reason: &str| Error::Invalid {
                what: format!("images.sh --list line {line:?}"),
                reason: reason.to_owned(),
            };
            let (file, reference) = line.split_once(' ').ok_or_else(|| invalid("no reference"))?;
            let name = file.strip_suffix(".tar").ok_or_else(|| invalid("not a .tar"))?;
            if !dir.join(file).is_file() {
                return Err(invalid("the tarball was not built"));
            }
            Ok((name.to_owned(), reference.to_owned()))
        })
        .collect()
}
