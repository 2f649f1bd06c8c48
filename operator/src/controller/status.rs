//! A Distribution's status from what the controller observed: pure, so every condition and
//! message is unit-tested.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::DistributionStatus;
use crate::api::RegionStatus;
use crate::render::Blocker;

/// One region as observed.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RegionObservation {
    pub(super) name: String,
    /// Replicas asked for (0 when the Distribution is disabled).
    pub(super) desired: i32,
    /// Replicas ready to serve.
    pub(super) ready: i32,
    /// The Deployment runs only pods of its current template, as many as asked for.
    pub(super) rolled_out: bool,
    /// Nodes carrying the region (and zone) labels.
    pub(super) nodes: usize,
    /// The region's Service.
    pub(super) service: String,
}

impl RegionObservation {
    /// Replica counts from a Deployment (absent: nothing runs yet).
    pub(super) fn from_deployment(
        name: &str,
        desired: i32,
        deployment: Option<&Deployment>,
        nodes: usize,
        service: String,
    ) -> Self {
        let status = deployment.and_then(|d| d.status.clone()).unwrap_or_default();
        let generation = deployment.and_then(|d| d.metadata.generation);
        let observed = status.observed_generation;
        let spec_replicas = deployment.and_then(|d| d.spec.as_ref()?.replicas);
        let ready = status.ready_replicas.unwrap_or(0);
        let rolled_out = deployment.is_some()
            && spec_replicas == Some(desired)
            && observed.is_some()
            && observed >= generation
            && status.updated_replicas.unwrap_or(0) == desired
            && status.replicas.unwrap_or(0) == desired
            && ready == desired;
        Self {
            name: name.to_owned(),
            desired,
            ready,
            rolled_out,
            nodes,
            service,
        }
    }

    fn ready(&self) -> bool {
        self.rolled_out && self.ready >= self.desired
    }
}

/// Everything the status is computed from.
pub(super) struct Observation<'a> {
    pub(super) generation: Option<i64>,
    pub(super) enabled: bool,
    pub(super) region_label: &'a str,
    pub(super) regions: Vec<RegionObservation>,
    /// Why the spec could not be applied; empty when it was.
    pub(super) blockers: &'a [Blocker],
    /// The Service over every region.
    pub(super) service: String,
}

/// The status to write; conditions keep their transition time unless their status changed.
pub(super) fn status(obs: &Observation<'_>, previous: &DistributionStatus, now: &Time) -> DistributionStatus {
    let generation = obs.generation;
    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" };
        let last_transition_time = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time,
        }
    };

    let serving = obs.regions.iter().filter(|r| r.desired > 0 && r.ready()).count();
    let total = obs.regions.len();
    let pending: Vec<&RegionObservation> = obs.regions.iter().filter(|r| !r.ready()).collect();
    let without_nodes: Vec<&RegionObservation> = obs
        .regions
        .iter()
        .filter(|r| r.desired > 0 && r.nodes == 0)
        .collect();

    let degraded = if let Some(first) = obs.blockers.first() {
        let messages: Vec<String> = obs.blockers.iter().map(Blocker::message).collect();
        condition(
            "Degraded",
            true,
            first.reason(),
            format!(
                "{}. Nothing is written until this is fixed; edges already running keep their current configuration.",
                messages.join("; ")
            ),
        )
    } else if !without_nodes.is_empty() {
        let regions: Vec<String> = without_nodes
            .iter()
            .map(|r| format!("{}={}", obs.region_label, r.name))
            .collect();
        condition(
            "Degraded",
            true,
            "NoNodesInRegion",
            format!(
                "no node is labelled {}: the edges of {} cannot be scheduled; add nodes with that label \
                 or remove the region from spec.regions",
                regions.join(" or "),
                if regions.len() == 1 {
                    "that region"
                } else {
                    "those regions"
                },
            ),
        )
    } else {
        condition(
            "Degraded",
            false,
            "AsExpected",
            "Every region can run its edges.".to_owned(),
        )
    };

    let progressing = if let Some(first) = obs.blockers.first() {
        condition(
            "Progressing",
            false,
            first.reason(),
            "Nothing is rolled out until the Degraded condition is resolved.".to_owned(),
        )
    } else if pending.is_empty() {
        condition(
            "Progressing",
            false,
            "RolloutComplete",
            "Every region runs the current edges.".to_owned(),
        )
    } else {
        condition("Progressing", true, "RolloutInProgress", waiting_for(&pending))
    };

    let ready = if let Some(first) = obs.blockers.first() {
        condition(
            "Ready",
            false,
            first.reason(),
            "The spec cannot be applied; see the Degraded condition.".to_owned(),
        )
    } else if !obs.enabled {
        condition(
            "Ready",
            false,
            "Disabled",
            "spec.enabled is false: every region is scaled to zero. Set it to true to serve again."
                .to_owned(),
        )
    } else if pending.is_empty() {
        condition(
            "Ready",
            true,
            "AllRegionsReady",
            format!("{serving}/{total} regions ready."),
        )
    } else {
        let reason = if without_nodes.is_empty() {
            "RolloutInProgress"
        } else {
            "NoNodesInRegion"
        };
        condition(
            "Ready",
            false,
            reason,
            format!("{serving}/{total} regions ready; {}", waiting_for(&pending)),
        )
    };

    DistributionStatus {
        observed_generation: generation,
        conditions: vec![ready, progressing, degraded],
        ready_regions: Some(format!("{serving}/{total}")),
        regions: obs
            .regions
            .iter()
            .map(|r| RegionStatus {
                name: r.name.clone(),
                desired_replicas: r.desired,
                ready_replicas: r.ready,
                service: r.service.clone(),
            })
            .collect(),
        service: Some(obs.service.clone()),
        // From the spec, not from observations: set by the reconciler (render::upload_endpoint).
        upload_endpoint: None,
    }
}

fn waiting_for(pending: &[&RegionObservation]) -> String {
    let regions: Vec<String> = pending
        .iter()
        .map(|r| format!("{} ({}/{} edges ready)", r.name, r.ready, r.desired))
        .collect();
    format!("waiting for {}.", regions.join(", "))
}

/// Whether two statuses differ in anything but condition transition times.
pub(super) fn differs(a: &DistributionStatus, b: &DistributionStatus) -> bool {
    let strip = |s: &DistributionStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) != strip(b)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn region(name: &str, desired: i32, ready: i32, nodes: usize) -> RegionObservation {
        RegionObservation {
            name: name.into(),
            desired,
            ready,
            rolled_out: ready == desired,
            nodes,
            service: format!("site-{name}"),
        }
    }

    fn observe(regions: Vec<RegionObservation>, blockers: &[Blocker]) -> DistributionStatus {
        let obs = Observation {
            generation: Some(3),
            enabled: true,
            region_label: "topology.kubernetes.io/region",
            regions,
            blockers,
            service: "site".into(),
        };
        status(&obs, &DistributionStatus::default(), &Time(Timestamp::UNIX_EPOCH))
    }

    fn condition<'a>(status: &'a DistributionStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition present")
    }

    #[test]
    fn all_regions_ready() {
        let s = observe(vec![region("a", 2, 2, 4), region("b", 1, 1, 4)], &[]);
        assert_eq!(condition(&s, "Ready").status, "True");
        assert_eq!(condition(&s, "Progressing").reason, "RolloutComplete");
        assert_eq!(condition(&s, "Degraded").status, "False");
        assert_eq!(s.ready_regions.as_deref(), Some("2/2"));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.regions[1].service, "site-b");
    }

    #[test]
    fn a_rollout_in_progress_names_the_waiting_region() {
        let s = observe(vec![region("a", 2, 1, 4), region("b", 1, 1, 4)], &[]);
        let ready = condition(&s, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "RolloutInProgress")
        );
        assert!(ready.message.contains("a (1/2 edges ready)"), "{}", ready.message);
        assert_eq!(condition(&s, "Progressing").status, "True");
        assert_eq!(s.ready_regions.as_deref(), Some("1/2"));
    }

    #[test]
    fn a_region_without_nodes_is_degraded_with_the_label_to_add() {
        let s = observe(vec![region("a", 2, 2, 4), region("mars", 1, 0, 0)], &[]);
        let degraded = condition(&s, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "NoNodesInRegion")
        );
        assert!(
            degraded.message.contains("topology.kubernetes.io/region=mars"),
            "{}",
            degraded.message
        );
        assert_eq!(condition(&s, "Ready").reason, "NoNodesInRegion");
    }

    #[test]
    fn a_blocker_is_the_reason_everywhere() {
        let blockers = [Blocker::OriginSecretMissing {
            origin: "bucket".into(),
            secret: "site-origin".into(),
            missing_keys: vec![],
        }];
        let s = observe(vec![region("a", 2, 2, 4)], &blockers);
        for type_ in ["Ready", "Degraded", "Progressing"] {
            assert_eq!(condition(&s, type_).reason, "OriginSecretMissing", "{type_}");
        }
        assert!(condition(&s, "Degraded").message.contains("\"site-origin\""));
    }

    #[test]
    fn disabled_says_so() {
        let obs = Observation {
            generation: Some(1),
            enabled: false,
            region_label: "r",
            regions: vec![region("a", 0, 0, 4)],
            blockers: &[],
            service: "site".into(),
        };
        let s = status(&obs, &DistributionStatus::default(), &Time(Timestamp::UNIX_EPOCH));
        assert_eq!(condition(&s, "Ready").reason, "Disabled");
        assert_eq!(s.ready_regions.as_deref(), Some("0/1"));
    }

    #[test]
    fn transition_times_survive_an_unchanged_status() {
        let first = observe(vec![region("a", 1, 1, 1)], &[]);
        let obs = Observation {
            generation: Some(3),
            enabled: true,
            region_label: "r",
            regions: vec![region("a", 1, 1, 1)],
            blockers: &[],
            service: "site".into(),
        };
        let later = Time(Timestamp::from_second(1_000_000).expect("valid"));
        let again = status(&obs, &first, &later);
        assert_eq!(again, first);
        assert!(!differs(&again, &first));
    }
}
