//! The edge Secret: the fleet's admin token, the origin credentials and the upload client keys
//! copied from the Secrets a Distribution references. The edges read each value from a file under [`MOUNT_PATH`], and
//! notice when the kubelet updates a file (a rotated credential) without a restart.
//!
//! The configuration names these files relative to the edge's working directory, which is the
//! mount: the shared configuration then says nothing about the pod's file layout, and whatever
//! runs the container decides where the mount is.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::{Blocker, Inputs, metadata, names};
use crate::api::{Distribution, S3CredentialsRef};

/// Where the edge Secret is mounted in edge containers.
pub const MOUNT_PATH: &str = "/etc/edgefleet/secrets";
/// Key of the admin token in the edge Secret.
pub const ADMIN_TOKEN_KEY: &str = "admin-token";
/// Key of the upload client keys in the edge Secret: a JSON object, access key id → secret, the
/// form the edge's `upload.clientKeysFile` is read in.
pub const UPLOAD_KEYS_KEY: &str = "upload-client-keys";

/// Key of an origin's access key id in the edge Secret.
pub fn access_key_id_key(origin: &str) -> String {
    format!("origin-{origin}-access-key-id")
}

/// Key of an origin's secret access key in the edge Secret.
pub fn secret_access_key_key(origin: &str) -> String {
    format!("origin-{origin}-secret-access-key")
}

/// Path of the file holding `key` of the edge Secret, relative to the edge's working directory
/// ([`MOUNT_PATH`]).
pub fn file(key: &str) -> PathBuf {
    PathBuf::from(key)
}

/// An S3 access key pair, copied from a referenced Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// The access key id.
    pub access_key_id: Vec<u8>,
    /// The secret access key.
    pub secret_access_key: Vec<u8>,
}

// Never print credentials, not even in debug logs.
impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("S3Credentials(..)")
    }
}

/// The upload client keys: access key id → secret access key.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct UploadKeys(pub BTreeMap<String, String>);

// Never print secrets, not even in debug logs.
impl std::fmt::Debug for UploadKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UploadKeys({} keys)", self.0.len())
    }
}

/// Everything copied out of the Secrets a Distribution references.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Key pairs of the S3 origins that reference a credentials Secret, by origin name.
    pub origins: BTreeMap<String, S3Credentials>,
    /// The upload client keys, when upload acceleration is enabled.
    pub upload_keys: Option<UploadKeys>,
}

/// The upload settings, when upload acceleration is enabled.
pub(super) fn upload(dist: &Distribution) -> Option<&crate::api::UploadAcceleration> {
    dist.spec.upload_acceleration.as_ref().filter(|u| u.enabled)
}

/// The names of the Secrets `dist` references, each once.
pub fn referenced_secrets(dist: &Distribution) -> Vec<String> {
    let mut names: Vec<String> = dist
        .spec
        .origins
        .iter()
        .filter_map(|o| o.s3.as_ref()?.credentials_secret_ref.as_ref())
        .map(|r| r.name.clone())
        .chain(upload(dist).map(|u| u.client_keys_secret_ref.name.clone()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Copies each S3 origin's key pair and the upload client keys out of the referenced Secrets
/// (`secrets` maps a name to the Secret, or to `None` when it does not exist). Every missing
/// Secret or key is reported.
pub fn resolve_credentials(
    dist: &Distribution,
    secrets: &BTreeMap<String, Option<Secret>>,
) -> Result<Credentials, Vec<Blocker>> {
    let mut credentials = BTreeMap::new();
    let mut blockers = Vec::new();
    for origin in &dist.spec.origins {
        let Some(reference) = origin
            .s3
            .as_ref()
            .and_then(|s3| s3.credentials_secret_ref.as_ref())
        else {
            continue;
        };
        match secrets.get(&reference.name).and_then(Option::as_ref) {
            None => blockers.push(Blocker::OriginSecretMissing {
                origin: origin.name.clone(),
                secret: reference.name.clone(),
                missing_keys: Vec::new(),
            }),
            Some(secret) => match copy_pair(secret, reference) {
                Ok(pair) => {
                    credentials.insert(origin.name.clone(), pair);
                }
                Err(missing_keys) => blockers.push(Blocker::OriginSecretMissing {
                    origin: origin.name.clone(),
                    secret: reference.name.clone(),
                    missing_keys,
                }),
            },
        }
    }
    let upload_keys = match upload(dist) {
        None => None,
        Some(upload) => {
            let name = &upload.client_keys_secret_ref.name;
            match copy_upload_keys(secrets.get(name).and_then(Option::as_ref)) {
                Ok(keys) => Some(keys),
                Err(problem) => {
                    blockers.push(Blocker::UploadKeysUnusable {
                        secret: name.clone(),
                        problem,
                    });
                    None
                }
            }
        }
    };
    if blockers.is_empty() {
        Ok(Credentials {
            origins: credentials,
            upload_keys,
        })
    } else {
        Err(blockers)
    }
}

/// The client keys: every entry of the Secret, key = access key id, value = secret access key.
fn copy_upload_keys(secret: Option<&Secret>) -> Result<UploadKeys, String> {
    let secret = secret.ok_or("it does not exist in this namespace")?;
    let mut keys = BTreeMap::new();
    for (id, value) in secret.data.iter().flatten() {
        let value = std::str::from_utf8(&value.0)
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("the secret of access key id {id:?} is empty or not text"))?;
        keys.insert(id.clone(), value.to_owned());
    }
    if keys.is_empty() {
        return Err("it has no entries (each is an access key id and its secret access key)".to_owned());
    }
    Ok(UploadKeys(keys))
}

fn copy_pair(secret: &Secret, reference: &S3CredentialsRef) -> Result<S3Credentials, Vec<String>> {
    let value = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(|v| v.0.clone())
            .filter(|v| !v.is_empty())
    };
    let id = value(&reference.access_key_id_key);
    let key = value(&reference.secret_access_key_key);
    match (id, key) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(S3Credentials {
            access_key_id,
            secret_access_key,
        }),
        (id, key) => Err([
            (id.is_none(), &reference.access_key_id_key),
            (key.is_none(), &reference.secret_access_key_key),
        ]
        .into_iter()
        .filter(|(missing, _)| *missing)
        .map(|(_, name)| name.clone())
        .collect()),
    }
}

/// The edge Secret `<dist>-edge`.
pub(super) fn secret(dist: &Distribution, inputs: &Inputs) -> Secret {
    let mut data = BTreeMap::from([(
        ADMIN_TOKEN_KEY.to_owned(),
        ByteString(inputs.admin_token.as_bytes().to_vec()),
    )]);
    for (origin, pair) in &inputs.credentials.origins {
        data.insert(access_key_id_key(origin), ByteString(pair.access_key_id.clone()));
        data.insert(
            secret_access_key_key(origin),
            ByteString(pair.secret_access_key.clone()),
        );
    }
    if let Some(keys) = &inputs.credentials.upload_keys {
        // A map of strings always serializes.
        let json = serde_json::to_vec(&keys.0).unwrap_or_default();
        data.insert(UPLOAD_KEYS_KEY.to_owned(), ByteString(json));
    }
    Secret {
        metadata: metadata(
            dist,
            names::edge(&dist_name(dist)),
            names::labels(&dist_name(dist)),
        ),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

fn dist_name(dist: &Distribution) -> String {
    dist.metadata.name.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::{example, uploads};

    fn secret_with(pairs: &[(&str, &str)]) -> Option<Secret> {
        Some(Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        })
    }

    #[test]
    fn copies_the_pair_from_the_referenced_secret() {
        let dist = example();
        let secrets = BTreeMap::from([(
            "site-origin".to_owned(),
            secret_with(&[("AWS_ACCESS_KEY_ID", "id"), ("AWS_SECRET_ACCESS_KEY", "key")]),
        )]);
        let credentials = resolve_credentials(&dist, &secrets).expect("resolved");
        assert_eq!(credentials.origins["bucket"].access_key_id, b"id");
        assert_eq!(credentials.origins["bucket"].secret_access_key, b"key");
        assert_eq!(credentials.upload_keys, None);
    }

    #[test]
    fn a_missing_secret_or_key_is_reported_with_the_origin() {
        let dist = example();
        let missing = BTreeMap::from([("site-origin".to_owned(), None)]);
        let blockers = resolve_credentials(&dist, &missing).expect_err("missing");
        assert_eq!(
            blockers,
            [Blocker::OriginSecretMissing {
                origin: "bucket".into(),
                secret: "site-origin".into(),
                missing_keys: vec![],
            }]
        );
        let partial = BTreeMap::from([(
            "site-origin".to_owned(),
            secret_with(&[("AWS_ACCESS_KEY_ID", "id"), ("AWS_SECRET_ACCESS_KEY", "")]),
        )]);
        let blockers = resolve_credentials(&dist, &partial).expect_err("missing key");
        assert!(
            blockers[0].message().contains("AWS_SECRET_ACCESS_KEY"),
            "{}",
            blockers[0].message()
        );
    }

    #[test]
    fn upload_client_keys_are_copied_into_the_edge_secret() {
        let mut dist = example();
        dist.spec.upload_acceleration = uploads("1Gi");
        assert!(referenced_secrets(&dist).contains(&"uploaders".to_owned()));
        let origin = secret_with(&[("AWS_ACCESS_KEY_ID", "id"), ("AWS_SECRET_ACCESS_KEY", "key")]);
        let secrets = BTreeMap::from([
            ("site-origin".to_owned(), origin.clone()),
            (
                "uploaders".to_owned(),
                secret_with(&[("AKIDONE", "secret-one"), ("AKIDTWO", "secret-two\n")]),
            ),
        ]);
        let credentials = resolve_credentials(&dist, &secrets).expect("resolved");
        let mut inputs = crate::render::tests::inputs();
        inputs.credentials = credentials;
        let rendered = secret(&dist, &inputs);
        let data = rendered.data.expect("data");
        let keys: serde_json::Value = serde_json::from_slice(&data[UPLOAD_KEYS_KEY].0).expect("json");
        assert_eq!(
            keys,
            serde_json::json!({"AKIDONE": "secret-one", "AKIDTWO": "secret-two"})
        );

        for (uploaders, problem) in [
            (None, "does not exist"),
            (secret_with(&[]), "no entries"),
            (secret_with(&[("AKID", " ")]), "\"AKID\" is empty"),
        ] {
            let secrets = BTreeMap::from([
                ("site-origin".to_owned(), origin.clone()),
                ("uploaders".to_owned(), uploaders),
            ]);
            let blockers = resolve_credentials(&dist, &secrets).expect_err("unusable keys");
            assert_eq!(blockers[0].reason(), "UploadKeysSecretMissing");
            assert!(
                blockers[0].message().contains(problem),
                "{}",
                blockers[0].message()
            );
        }
        // Disabled: the Secret is neither referenced nor needed.
        dist.spec.upload_acceleration.as_mut().expect("upload").enabled = false;
        assert!(!referenced_secrets(&dist).contains(&"uploaders".to_owned()));
    }
}
