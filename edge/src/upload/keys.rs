//! The client keys uploads are verified against: a JSON object in a file (a mounted Secret),
//! access key id → secret access key. Re-read with every configuration load, so a rotated key
//! takes effect without a restart.
use std::{collections::HashMap, fmt, path::Path};

use crate::error::{Error, Result};

pub(crate) struct ClientKeys(HashMap<String, String>);

// Never print secrets, not even in debug logs.
impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKeys({} keys)", self.0.len())
    }
}

impl ClientKeys {
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::SecretFile {
            what: "the upload client keys",
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| Error::UploadKeys {
            path: path.to_owned(),
            reason,
        })
    }

    fn parse(text: &str) -> Result<Self, String> {
        let keys: HashMap<String, String> = serde_json::from_str(text)
            .map_err(|e| format!("expected a JSON object of access key id to secret: {e}"))?;
        if keys.is_empty() {
            return Err("no keys: every upload would be refused".to_owned());
        }
        for (id, secret) in &keys {
            let id_ok =
                !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
            if !id_ok {
                return Err(format!("{id:?} is not an access key id (printable, no '/')"));
            }
            if secret.trim().is_empty() {
                return Err(format!("the secret of {id:?} is empty"));
            }
        }
        Ok(Self(keys))
    }

    pub(crate) fn secret(&self, access_key_id: &str) -> Option<&str> {
        self.0.get(access_key_id).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_object_of_ids_and_secrets() {
        let keys = ClientKeys::parse(r#"{"AKID1": "s1", "AKID2": "s2"}"#).expect("keys");
        assert_eq!(keys.secret("AKID2"), Some("s2"));
        assert_eq!(keys.secret("akid2"), None);
        assert!(!format!("{keys:?}").contains("s1"));
        for bad in ["{}", "[]", r#"{"a/b": "s"}"#, r#"{"a": " "}"#, "AKID:secret"] {
            assert!(ClientKeys::parse(bad).is_err(), "{bad}");
        }
    }
}
