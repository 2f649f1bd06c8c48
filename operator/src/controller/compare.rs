//! Does a live object already say everything the rendered one says? Then applying it would
//! change nothing and the write is skipped.
//!
//! The API server adds defaults, status and metadata of its own, so the rendered object only has
//! to be contained in the live one: every field it sets must be there with the same value. Lists
//! must have the same length (the operator owns them whole). Quantities count as equal when they
//! stand for the same amount, as the API server rewrites them (`1024Mi` becomes `1Gi`).

use serde_json::Value;

use crate::render::quantity;

/// Keys under which the values are Kubernetes quantities.
const QUANTITY_MAPS: [&str; 2] = ["requests", "limits"];
const QUANTITY_FIELDS: [&str; 1] = ["sizeLimit"];

/// Whether `live` contains everything `desired` sets.
pub(super) fn contains(live: &Value, desired: &Value) -> bool {
    within(live, desired, Context::Plain)
}

#[derive(Clone, Copy, PartialEq)]
enum Context {
    Plain,
    Quantity,
    QuantityMap,
}

fn within(live: &Value, desired: &Value, context: Context) -> bool {
    match (live, desired) {
        (_, Value::Null) => true,
        (Value::Object(live), Value::Object(desired)) => desired.iter().all(|(key, want)| {
            let inner = if context == Context::QuantityMap {
                Context::Quantity
            } else if QUANTITY_MAPS.contains(&key.as_str()) {
                Context::QuantityMap
            } else if QUANTITY_FIELDS.contains(&key.as_str()) {
                Context::Quantity
            } else {
                Context::Plain
            };
            match live.get(key) {
                Some(have) => within(have, want, inner),
                // The API server drops empty maps and lists.
                None => is_empty(want),
            }
        }),
        (Value::Array(live), Value::Array(desired)) => {
            live.len() == desired.len() && live.iter().zip(desired).all(|(l, d)| within(l, d, context))
        }
        (Value::String(live), Value::String(desired)) if context == Context::Quantity => {
            live == desired || quantity::same_amount(live, desired)
        }
        (live, desired) => live == desired,
    }
}

/// Whether `live` must be deleted and created anew to become `desired`: it holds a value the API
/// server never lets change (a Service's ClusterIP; regional Services were not always headless).
pub(super) fn needs_replacement(live: &Value, desired: &Value) -> bool {
    let cluster_ip = |object: &Value| {
        object
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .filter(|ip| !ip.is_empty())
            .map(str::to_owned)
    };
    desired["kind"] == "Service"
        && matches!((cluster_ip(live), cluster_ip(desired)), (Some(have), Some(want)) if have != want)
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn server_defaults_and_status_do_not_count_as_drift() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}, "metadata": {"labels": {}}});
        let live = json!({
            "spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.0.0.1"},
            "metadata": {"resourceVersion": "7"},
            "status": {"readyReplicas": 1}
        });
        assert!(contains(&live, &desired));
    }

    #[test]
    fn a_changed_value_missing_field_or_extra_item_is_drift() {
        let desired = json!({"spec": {"replicas": 2, "args": ["a"]}});
        assert!(!contains(
            &json!({"spec": {"replicas": 3, "args": ["a"]}}),
            &desired
        ));
        assert!(!contains(&json!({"spec": {"args": ["a"]}}), &desired));
        assert!(!contains(
            &json!({"spec": {"replicas": 2, "args": ["a", "b"]}}),
            &desired
        ));
    }

    #[test]
    fn quantities_compare_by_amount_only_where_they_are_quantities() {
        let desired =
            json!({"resources": {"limits": {"memory": "1024Mi"}}, "sizeLimit": "1000M", "name": "1Gi"});
        let live = json!({"resources": {"limits": {"memory": "1Gi"}}, "sizeLimit": "1G", "name": "1Gi"});
        assert!(contains(&live, &desired));
        let renamed =
            json!({"resources": {"limits": {"memory": "1Gi"}}, "sizeLimit": "1G", "name": "1024Mi"});
        assert!(!contains(&renamed, &desired), "a name is not a quantity");
    }

    #[test]
    fn only_a_service_whose_cluster_ip_must_change_is_replaced() {
        let headless = json!({"kind": "Service", "spec": {"clusterIP": "None"}});
        let allocated = json!({"kind": "Service", "spec": {"clusterIP": "10.96.0.7"}});
        assert!(needs_replacement(&allocated, &headless));
        assert!(!needs_replacement(&headless, &headless));
        // A Service that does not ask for an address keeps the one it has.
        let any_address = json!({"kind": "Service", "spec": {"ports": []}});
        assert!(!needs_replacement(&allocated, &any_address));
        assert!(!needs_replacement(
            &json!({"kind": "Deployment", "spec": {"clusterIP": "10.96.0.7"}}),
            &json!({"kind": "Deployment", "spec": {"clusterIP": "None"}}),
        ));
    }
}
