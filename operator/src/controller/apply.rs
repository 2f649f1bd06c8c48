//! Writing the rendered objects: server-side apply as the one field manager, only where the live
//! object differs, and deletion of what a Distribution no longer renders.

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};

use super::FIELD_MANAGER;
use super::compare;
use super::stores::{Live, Stores};
use crate::render::{Blocker, Kind, Manifest};
use crate::{Error, Result};

/// What one apply did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    Created,
    Updated,
}

/// The result of applying one manifest.
pub(super) enum Applied {
    /// The live object already matched: no request was sent.
    Unchanged,
    /// Written; the object as the API server returned it.
    Written(Change, Box<DynamicObject>),
    /// The name is taken by an object this Distribution does not control.
    Conflict(Blocker),
}

fn api(client: &Client, namespace: &str, kind: Kind) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &kind.api_resource())
}

fn conflict(manifest: &Manifest) -> Blocker {
    Blocker::NameConflict {
        kind: manifest.kind.name().to_owned(),
        name: manifest.name.clone(),
    }
}

/// Whether `manifest` would take over an object somebody else controls.
pub(super) fn foreign(live: Option<&Live>, manifest: &Manifest, uid: &str) -> Option<Blocker> {
    let live = live?;
    match &live.controller_uid {
        Some(owner) if owner != uid => Some(conflict(manifest)),
        _ => None,
    }
}

/// Applies `manifest` unless `live` already contains it.
///
/// An object we already own is applied with `force`, which takes back fields someone edited
/// (drift). One missing from the cache is applied without it, so that an object by the same name
/// that someone else manages is refused with a conflict instead of being taken over.
pub(super) async fn apply(
    client: &Client,
    namespace: &str,
    uid: &str,
    manifest: &Manifest,
    live: Option<&Live>,
) -> Result<Applied> {
    if let Some(live) = live
        && compare::contains(&live.json, &manifest.body)
    {
        return Ok(Applied::Unchanged);
    }
    let api = api(client, namespace, manifest.kind);
    let patch = Patch::Apply(&manifest.body);
    let params = PatchParams::apply(FIELD_MANAGER);
    let change = if live.is_some() {
        Change::Updated
    } else {
        Change::Created
    };
    let live = match live {
        Some(old) if compare::needs_replacement(&old.json, &manifest.body) => {
            replace(&api, &manifest.name, old).await?;
            None
        }
        live => live,
    };
    let result = if live.is_some() {
        api.patch(&manifest.name, &params.force(), &patch).await
    } else {
        api.patch(&manifest.name, &params, &patch).await
    };
    match result {
        Ok(obj) => Ok(Applied::Written(change, Box::new(obj))),
        Err(kube::Error::Api(status)) if status.code == 409 && live.is_none() => {
            // Ours after all (the cache had not caught up) but edited by someone: take it back.
            let current = api.get(&manifest.name).await?;
            let controlled = current
                .owner_references()
                .iter()
                .any(|r| r.controller == Some(true) && r.uid == uid);
            if !controlled {
                return Ok(Applied::Conflict(conflict(manifest)));
            }
            let obj = api
                .patch(&manifest.name, &PatchParams::apply(FIELD_MANAGER).force(), &patch)
                .await?;
            Ok(Applied::Written(Change::Updated, Box::new(obj)))
        }
        Err(error) => Err(Error::Kube(error)),
    }
}

/// Deletes `old` so that it can be created anew: only that very object (by uid), at once (its
/// dependents, such as a Service's EndpointSlices, go after it), and nothing if it is gone or
/// was replaced already.
async fn replace(api: &Api<DynamicObject>, name: &str, old: &Live) -> Result<()> {
    let uid = old
        .json
        .pointer("/metadata/uid")
        .and_then(serde_json::Value::as_str);
    let params = DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(Error::Kube(error)),
    }
}

/// Deletes the objects the Distribution `uid` controls that are not in `manifests` (a region
/// that was removed); returns the kind and name of each.
pub(super) async fn delete_orphans(
    client: &Client,
    stores: &Stores,
    namespace: &str,
    distribution: &str,
    uid: &str,
    manifests: &[Manifest],
) -> Result<Vec<(Kind, String)>> {
    let mut deleted = Vec::new();
    for kind in Kind::ALL {
        for name in stores.owned_names(kind, namespace, distribution, uid) {
            if manifests.iter().any(|m| m.kind == kind && m.name == name) {
                continue;
            }
            match api(client, namespace, kind)
                .delete(&name, &DeleteParams::background())
                .await
            {
                Ok(_) => deleted.push((kind, name)),
                // Already gone: the cache had not caught up.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(Error::Kube(error)),
            }
        }
    }
    Ok(deleted)
}
