//! The edges' own identity: a ServiceAccount allowed to read and watch exactly one object, their
//! ConfigMap, so a configuration change reaches them within seconds and without a restart, and,
//! behind an origin shield, the EndpointSlices that list the shield's edges.

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
/// `fieldSelector=metadata.name=<name>` to be allowed by `resourceNames`). With an origin shield,
/// also `list` and `watch` of EndpointSlices, from which the edges learn the shield's ready edges:
/// RBAC cannot narrow that to one Service's slices (they are selected by label, and their names
/// are generated), so the namespace's slices it is, and only for a shielded Distribution.
pub(super) fn role(dist: &Distribution) -> Role {
    let name = dist.metadata.name.clone().unwrap_or_default();
    let mut rules = vec![PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".to_owned()]),
        resource_names: Some(vec![names::config_map(&name)]),
        verbs: vec!["get".to_owned(), "list".to_owned(), "watch".to_owned()],
        ..PolicyRule::default()
    }];
    if dist.spec.origin_shield.is_some() {
        rules.push(PolicyRule {
            api_groups: Some(vec!["discovery.k8s.io".to_owned()]),
            resources: Some(vec!["endpointslices".to_owned()]),
            verbs: vec!["list".to_owned(), "watch".to_owned()],
            ..PolicyRule::default()
        });
    }
    Role {
        metadata: metadata(dist, names::edge(&name), names::labels(&name)),
        rules: Some(rules),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::example;

    fn verbs_on(role: &Role, resource: &str) -> Option<(Vec<String>, Option<Vec<String>>)> {
        let rule = role.rules.as_ref()?.iter().find(|r| {
            r.resources
                .as_ref()
                .is_some_and(|rs| rs.iter().any(|x| x == resource))
        })?;
        Some((rule.verbs.clone(), rule.resource_names.clone()))
    }

    #[test]
    fn edges_read_endpoint_slices_only_behind_a_shield() {
        let shielded = role(&example());
        let (verbs, names) = verbs_on(&shielded, "endpointslices").expect("a rule for the shield");
        assert_eq!(verbs, ["list", "watch"], "read-only, and no get of single slices");
        assert_eq!(names, None, "slices are selected by label, not name");
        let (verbs, names) = verbs_on(&shielded, "configmaps").expect("the ConfigMap rule");
        assert_eq!(verbs, ["get", "list", "watch"]);
        assert_eq!(names, Some(vec!["site-edge-config".to_owned()]));

        let mut plain = example();
        plain.spec.origin_shield = None;
        assert_eq!(verbs_on(&role(&plain), "endpointslices"), None);
    }
}
