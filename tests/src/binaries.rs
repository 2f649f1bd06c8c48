//! The workspace's own binaries, as built by the `cargo test` run that is executing us.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Path of the workspace binary `name` (e.g. `edgefleet-operator`) next to the running test.
///
/// `cargo test --workspace` builds every package's binaries before any test runs; a binary that
/// is missing means this package's tests were run alone, so the error says what to build.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        context: "cannot locate the running test binary".to_owned(),
        source,
    })?;
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).map(PathBuf::from);
    let candidate = profile_dir.map(|dir| dir.join(name));
    match candidate {
        Some(path) if path.is_file() => Ok(path),
        _ => Err(Error::Io {
            context: format!("binary {name} is not built; run `cargo build --workspace --bins` first"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }),
    }
}
