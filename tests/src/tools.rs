//! The pinned external tools (kubectl, helm, versitygw, ...), built and cached by `cluster/tools.sh`.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::error::{Error, IoContext, Result};

/// The directory holding `tools.sh` and `cluster.sh`.
pub fn scripts_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/cluster"))
}

/// The path of a pinned tool's binary, building it first if it is not cached yet (minutes; the
/// script prints its progress on stderr, which is passed through).
pub async fn tool(name: &str) -> Result<PathBuf> {
    let mut command = Command::new(scripts_dir().join("tools.sh"));
    command.args(["--which", name]);
    // Inherit stderr so a cold build's progress is visible while the tests wait for it.
    command
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    let output = command
        .output()
        .await
        .context(|| "cannot run cluster/tools.sh".to_owned())?;
    if !output.status.success() {
        return Err(Error::CommandFailed {
            command: format!("tools.sh --which {name}"),
            status: output.status,
            stderr: "see the build log printed above".to_owned(),
        });
    }
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Invalid {
            what: format!("path printed by tools.sh --which {name}"),
            reason: format!("{path:?} is not a file"),
        })
    }
}
