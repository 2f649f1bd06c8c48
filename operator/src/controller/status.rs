//! A Distribution's status from what the controller observed: pure, so every condition and
//! message is unit-tested.
//!
//! What stands in the way, in precedence order: a [`Blocker`] (the spec cannot be applied, so
//! nothing is written and the pods of the last good spec say nothing about this one), then per
//! region a missing node label (no pod of the region can be placed, whatever the pods say), then
//! the region's pod trouble ([`diagnosis`](super::diagnosis)). With several regions in trouble
//! the Degraded message names each, and its reason (and Ready's) is the worst one's: a missing
//! label before any pod trouble, pod troubles in the order of
//! [`Trouble`](super::diagnosis::Trouble), ties in the order of `spec.regions`.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::diagnosis::{Problem, Trouble};
use crate::api::DistributionStatus;
use crate::api::RegionStatus;
use crate::api::reasons;
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
    /// The zones `spec.regions[].zones` limits the region to (empty: any).
    pub(super) zones: Vec<String>,
    /// What keeps the region's pods from running, when they do not.
    pub(super) pods: Option<Problem>,
    /// The region's Service.
    pub(super) service: String,
}

impl RegionObservation {
    /// Replica counts from a Deployment (absent: nothing runs yet).
    /// No pod problem yet: see [`RegionObservation::pods`].
    pub(super) fn from_deployment(
        name: &str,
        desired: i32,
        deployment: Option<&Deployment>,
        nodes: usize,
        zones: &[String],
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
            zones: zones.to_vec(),
            pods: None,
            service,
        }
    }

    fn ready(&self) -> bool {
        self.rolled_out && self.ready >= self.desired
    }

    /// Whether the region should serve but does not, so its pods are worth diagnosing.
    pub(super) fn falls_short(&self) -> bool {
        self.desired > 0 && !self.ready()
    }
}

/// Everything the status is computed from.
pub(super) struct Observation<'a> {
    pub(super) generation: Option<i64>,
    pub(super) enabled: bool,
    pub(super) region_label: &'a str,
    pub(super) zone_label: &'a str,
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
    let mut obstacles: Vec<Obstacle> = obs.regions.iter().filter_map(|r| obstacle(r, obs)).collect();
    // Stable: equal ranks stay in the order of spec.regions.
    obstacles.sort_by_key(|o| o.rank);
    let headline = obstacles.first().map(|o| o.rank.reason());

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
    } else if let Some(reason) = headline {
        let messages: Vec<&str> = obstacles.iter().map(|o| o.message.as_str()).collect();
        condition("Degraded", true, reason, format!("{}.", messages.join(". ")))
    } else {
        condition(
            "Degraded",
            false,
            reasons::AS_EXPECTED,
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
            reasons::ROLLOUT_COMPLETE,
            "Every region runs the current edges.".to_owned(),
        )
    } else {
        condition(
            "Progressing",
            true,
            reasons::ROLLOUT_IN_PROGRESS,
            waiting_for(&pending),
        )
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
            reasons::DISABLED,
            "spec.enabled is false: every region is scaled to zero. Set it to true to serve again."
                .to_owned(),
        )
    } else if pending.is_empty() {
        condition(
            "Ready",
            true,
            reasons::ALL_REGIONS_READY,
            format!("{serving}/{total} regions ready."),
        )
    } else {
        condition(
            "Ready",
            false,
            headline.unwrap_or(reasons::ROLLOUT_IN_PROGRESS),
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

/// How much of a region an obstacle takes down, most first (see the module's doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    NoNodes,
    Pods(Trouble),
}

impl Rank {
    fn reason(self) -> &'static str {
        match self {
            Rank::NoNodes => reasons::NO_NODES_IN_REGION,
            Rank::Pods(trouble) => trouble.reason(),
        }
    }
}

/// What keeps one region from serving.
struct Obstacle {
    rank: Rank,
    message: String,
}

fn obstacle(region: &RegionObservation, obs: &Observation<'_>) -> Option<Obstacle> {
    if region.desired > 0 && region.nodes == 0 {
        return Some(Obstacle {
            rank: Rank::NoNodes,
            message: no_nodes(region, obs),
        });
    }
    let problem = region.pods.as_ref()?;
    Some(Obstacle {
        rank: Rank::Pods(problem.trouble),
        message: problem.message.clone(),
    })
}

/// Which labels the region's nodes lack, and how to add them.
fn no_nodes(region: &RegionObservation, obs: &Observation<'_>) -> String {
    let name = &region.name;
    let region_label = format!("{}={name}", obs.region_label);
    let (labels, command) = match region.zones.as_slice() {
        [] => (region_label.clone(), region_label),
        zones => (
            format!(
                "{region_label} and {}={}",
                obs.zone_label,
                zones.join(&format!(" or {}=", obs.zone_label))
            ),
            format!("{region_label} {}=<zone>", obs.zone_label),
        ),
    };
    format!(
        "region {name}: no node is labelled {labels}, so its edges cannot be scheduled. Label the \
         nodes that should serve it (kubectl label node <node> {command}) or remove the region \
         from spec.regions"
    )
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
            zones: Vec::new(),
            pods: None,
            service: format!("site-{name}"),
        }
    }

    /// A region whose pods show `trouble`.
    fn troubled(name: &str, trouble: Trouble) -> RegionObservation {
        RegionObservation {
            pods: Some(Problem {
                trouble,
                message: format!("region {name}: pod site-{name}-a is in trouble"),
            }),
            ..region(name, 2, 0, 4)
        }
    }

    fn observation(regions: Vec<RegionObservation>, blockers: &[Blocker]) -> Observation<'_> {
        Observation {
            generation: Some(3),
            enabled: true,
            region_label: "topology.kubernetes.io/region",
            zone_label: "topology.kubernetes.io/zone",
            regions,
            blockers,
            service: "site".into(),
        }
    }

    fn observe(regions: Vec<RegionObservation>, blockers: &[Blocker]) -> DistributionStatus {
        status(
            &observation(regions, blockers),
            &DistributionStatus::default(),
            &Time(Timestamp::UNIX_EPOCH),
        )
    }

    /// `(status, reason)` of a condition.
    fn said<'a>(status: &'a DistributionStatus, type_: &str) -> (&'a str, &'a str) {
        let c = condition(status, type_);
        (c.status.as_str(), c.reason.as_str())
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
        assert_eq!(said(&s, "Degraded"), ("True", "NoNodesInRegion"));
        assert_eq!(
            condition(&s, "Degraded").message,
            "region mars: no node is labelled topology.kubernetes.io/region=mars, so its edges cannot \
             be scheduled. Label the nodes that should serve it (kubectl label node <node> \
             topology.kubernetes.io/region=mars) or remove the region from spec.regions."
        );
        assert_eq!(said(&s, "Ready"), ("False", "NoNodesInRegion"));
    }

    #[test]
    fn a_region_limited_to_zones_without_nodes_names_both_labels() {
        let zoned = RegionObservation {
            zones: vec!["mars-a".into(), "mars-b".into()],
            ..region("mars", 1, 0, 0)
        };
        let s = observe(vec![zoned], &[]);
        let message = &condition(&s, "Degraded").message;
        assert!(
            message.contains(
                "no node is labelled topology.kubernetes.io/region=mars and \
                 topology.kubernetes.io/zone=mars-a or topology.kubernetes.io/zone=mars-b,"
            ) && message.contains(
                "kubectl label node <node> topology.kubernetes.io/region=mars \
                 topology.kubernetes.io/zone=<zone>"
            ),
            "{message}"
        );
    }

    #[test]
    fn pod_trouble_is_the_reason_of_degraded_and_ready_until_it_clears() {
        for (trouble, reason) in [
            (Trouble::ImagePull, "EdgeImagePullFailed"),
            (Trouble::CannotStart, "EdgeCannotStart"),
            (Trouble::CrashLoop, "EdgeCrashLooping"),
            (Trouble::Unschedulable, "EdgeUnschedulable"),
        ] {
            let s = observe(vec![region("a", 1, 1, 4), troubled("b", trouble)], &[]);
            assert_eq!(said(&s, "Degraded"), ("True", reason));
            assert_eq!(
                condition(&s, "Degraded").message,
                "region b: pod site-b-a is in trouble."
            );
            assert_eq!(said(&s, "Ready"), ("False", reason));
            assert!(
                condition(&s, "Ready").message.contains("b (0/2 edges ready)"),
                "{}",
                condition(&s, "Ready").message
            );
            assert_eq!(said(&s, "Progressing"), ("True", "RolloutInProgress"));
        }
        // The pods recovered: nothing but a rollout to wait for.
        let s = observe(vec![region("a", 1, 1, 4), region("b", 2, 1, 4)], &[]);
        assert_eq!(said(&s, "Degraded"), ("False", "AsExpected"));
        assert_eq!(said(&s, "Ready"), ("False", "RolloutInProgress"));
    }

    #[test]
    fn every_region_in_trouble_is_named_and_the_worst_is_the_reason() {
        let s = observe(
            vec![
                troubled("a", Trouble::Unschedulable),
                troubled("b", Trouble::CrashLoop),
                troubled("c", Trouble::ImagePull),
                region("d", 1, 0, 0),
            ],
            &[],
        );
        assert_eq!(said(&s, "Degraded"), ("True", "NoNodesInRegion"));
        let message = &condition(&s, "Degraded").message;
        let order: Vec<usize> = ["region d:", "region c:", "region b:", "region a:"]
            .iter()
            .map(|r| {
                message
                    .find(r)
                    .unwrap_or_else(|| panic!("{r} missing: {message}"))
            })
            .collect();
        assert!(order.is_sorted(), "{message}");
        let s = observe(
            vec![
                troubled("a", Trouble::Unschedulable),
                troubled("b", Trouble::CrashLoop),
            ],
            &[],
        );
        assert_eq!(said(&s, "Ready"), ("False", "EdgeCrashLooping"));
    }

    #[test]
    fn a_region_without_nodes_is_not_blamed_on_its_pods() {
        let stuck = RegionObservation {
            nodes: 0,
            ..troubled("mars", Trouble::Unschedulable)
        };
        let s = observe(vec![stuck], &[]);
        assert_eq!(said(&s, "Degraded"), ("True", "NoNodesInRegion"));
        assert!(!condition(&s, "Degraded").message.contains("in trouble"));
    }

    #[test]
    fn a_blocker_is_the_reason_everywhere() {
        let blockers = [Blocker::OriginSecretMissing {
            origin: "bucket".into(),
            secret: "site-origin".into(),
            missing_keys: vec![],
        }];
        // Pods of the last good spec say nothing about this one.
        let s = observe(vec![troubled("a", Trouble::ImagePull)], &blockers);
        for type_ in ["Ready", "Degraded", "Progressing"] {
            assert_eq!(condition(&s, type_).reason, "OriginSecretMissing", "{type_}");
        }
        assert!(condition(&s, "Degraded").message.contains("\"site-origin\""));
    }

    #[test]
    fn disabled_says_so() {
        let obs = Observation {
            enabled: false,
            ..observation(vec![region("a", 0, 0, 4)], &[])
        };
        let s = status(&obs, &DistributionStatus::default(), &Time(Timestamp::UNIX_EPOCH));
        assert_eq!(condition(&s, "Ready").reason, "Disabled");
        assert_eq!(s.ready_regions.as_deref(), Some("0/1"));
    }

    #[test]
    fn transition_times_survive_an_unchanged_status() {
        let first = observe(vec![region("a", 1, 1, 1)], &[]);
        let obs = observation(vec![region("a", 1, 1, 1)], &[]);
        let later = Time(Timestamp::from_second(1_000_000).expect("valid"));
        let again = status(&obs, &first, &later);
        assert_eq!(again, first);
        assert!(!differs(&again, &first));
    }
}
