//! The edges' own identity: a ServiceAccount allowed to read and watch exactly one object, their
//! ConfigMap, so a configuration change reaches them within seconds and without a restart.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::{metadata, names};
use crate::api::Distribution;

pub(super) fn service_account(dist: &Distribution) -> ServiceAccount {
    let name = dist.metadata.name.clone().unwrap_or_default();
    ServiceAccount {
        metadata: metadata(dist, names::edge(&name), names::labels(&name)),
        ..ServiceAccount::default()
    }
}

/// `get`, `list` and `watch` of the one ConfigMap (a list or watch must select it with
/// `fieldSelector=metadata.name=<name>` to be allowed by `resourceNames`).
pub(super) fn role(dist: &Distribution) -> Role {
    let name = dist.metadata.name.clone().unwrap_or_default();
    Role {
        metadata: metadata(dist, names::edge(&name), names::labels(&name)),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".to_owned()]),
            resource_names: Some(vec![names::config_map(&name)]),
            verbs: vec!["get".to_owned(), "list".to_owned(), "watch".to_owned()],
            ..PolicyRule::default()
        }]),
    }
}

pub(super) fn role_binding(dist: &Distribution, namespace: &str) -> RoleBinding {
    let name = dist.metadata.name.clone().unwrap_or_default();
    RoleBinding {
        metadata: metadata(dist, names::edge(&name), names::labels(&name)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: names::edge(&name),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: names::edge(&name),
            namespace: Some(namespace.to_owned()),
            ..Subject::default()
        }]),
    }
}
