//! Secrets the configuration names by file (the admin token, S3 credentials, upload client keys):
//! read whole on every (re)load, trimmed, never logged.
use std::path::Path;

use crate::error::{Error, Result};

/// A secret from a file the configuration names (trimmed; an empty one is an error).
pub(crate) fn read_secret(what: &'static str, path: &Path) -> Result<String> {
    let value = std::fs::read_to_string(path).map_err(|source| Error::SecretFile {
        what,
        path: path.to_owned(),
        source,
    })?;
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::EmptySecret {
            what,
            path: path.to_owned(),
        });
    }
    Ok(value.to_owned())
}
