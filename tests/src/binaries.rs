//! The workspace's own binaries, as built by the `cargo test` run that is executing us.

use std::path::{Path, PathBuf};

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
    // A test runs from target/<profile>/deps/, a binary such as the demo from target/<profile>/.
    let exe_dir = exe.parent();
    let candidates = [exe_dir, exe_dir.and_then(Path::parent)];
    match candidates
        .into_iter()
        .flatten()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
    {
        Some(path) => Ok(path),
        None => Err(Error::Io {
            context: format!("binary {name} is not built; run `cargo build --workspace --bins` first"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }),
    }
}
