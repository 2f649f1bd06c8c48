//! What keeps a region's edge pods from running, from what the kubelet and the scheduler report
//! on them: pure, so every case is unit-tested here. The status turns a region's [`Problem`]
//! into the Degraded condition; the pod watch wakes a Distribution only when a pod's
//! [`Trouble`] changes (the kubelet's messages and restart counts change far more often).

use super::edge_pod::{EdgePod, Waiting};
use crate::api::reasons;

/// A kind of trouble, in precedence order: when a region's pods show several, the first is the
/// region's reason. An image that cannot be pulled or a container that cannot start stops every
/// pod of the template and never heals by itself; a crash loop may be the configuration or the
/// load; a pod the scheduler cannot place is often one surplus pod of a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Trouble {
    ImagePull,
    CannotStart,
    CrashLoop,
    Unschedulable,
}

impl Trouble {
    /// The condition reason.
    pub(super) fn reason(self) -> &'static str {
        match self {
            Trouble::ImagePull => reasons::EDGE_IMAGE_PULL_FAILED,
            Trouble::CannotStart => reasons::EDGE_CANNOT_START,
            Trouble::CrashLoop => reasons::EDGE_CRASH_LOOPING,
            Trouble::Unschedulable => reasons::EDGE_UNSCHEDULABLE,
        }
    }
}

/// Waiting reasons of a container whose image the kubelet cannot get.
const IMAGE_REASONS: [&str; 7] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
    "SignatureValidationFailed",
    "ImageInspectError",
];
/// Waiting reasons of a container the kubelet cannot create or start.
const START_REASONS: [&str; 3] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];
/// How a container's last run ended when its process never ran (containerd; Docker). The
/// kubelet alternates `RunContainerError` with a `CrashLoopBackOff` that ended so: both are one
/// trouble, or the reason (and an Event) would change with every retry.
const NEVER_RAN: [&str; 2] = ["StartError", "ContainerCannotRun"];

/// One region's trouble: the first [`Trouble`] among its pods, with a message naming the
/// region, the pod, the image and what the kubelet or the scheduler said, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Problem {
    pub(super) trouble: Trouble,
    pub(super) message: String,
}

/// What one pod shows, and the words that show it.
enum Finding<'a> {
    Image(&'a Waiting),
    Start(&'a Waiting),
    Crash(&'a Waiting),
    /// The scheduler's message.
    Unschedulable(&'a str),
}

impl Finding<'_> {
    fn trouble(&self) -> Trouble {
        match self {
            Finding::Image(_) => Trouble::ImagePull,
            Finding::Start(_) => Trouble::CannotStart,
            Finding::Crash(_) => Trouble::CrashLoop,
            Finding::Unschedulable(_) => Trouble::Unschedulable,
        }
    }
}

fn container_finding(waiting: &Waiting) -> Option<Finding<'_>> {
    let reason = &*waiting.reason;
    if IMAGE_REASONS.contains(&reason) {
        Some(Finding::Image(waiting))
    } else if START_REASONS.contains(&reason) {
        Some(Finding::Start(waiting))
    } else if reason == "CrashLoopBackOff" {
        let never_ran = waiting
            .last_exit
            .as_ref()
            .is_some_and(|exit| NEVER_RAN.contains(&&*exit.reason));
        Some(if never_ran {
            Finding::Start(waiting)
        } else {
            Finding::Crash(waiting)
        })
    } else {
        // ContainerCreating, PodInitializing: on its way.
        None
    }
}

/// The worst finding on a pod its ReplicaSet counts on.
fn finding(pod: &EdgePod) -> Option<Finding<'_>> {
    if !pod.live {
        return None;
    }
    pod.waiting
        .iter()
        .filter_map(container_finding)
        .min_by_key(Finding::trouble)
        .or_else(|| pod.unschedulable.as_deref().map(Finding::Unschedulable))
}

/// A pod's trouble, if it has one.
pub(super) fn trouble(pod: &EdgePod) -> Option<Trouble> {
    finding(pod).as_ref().map(Finding::trouble)
}

/// What keeps one region's edge pods from running; `None` when nothing does (they may still be
/// starting). Of the pods with the first trouble, the first by name is the one described, so
/// the message does not change with the order pods are listed in.
pub(super) fn diagnose<'a>(pods: impl IntoIterator<Item = &'a EdgePod>) -> Option<Problem> {
    let mut found: Vec<(Trouble, &EdgePod, Finding<'_>)> = pods
        .into_iter()
        .filter_map(|pod| finding(pod).map(|f| (f.trouble(), pod, f)))
        .collect();
    found.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    let (trouble, pod, finding) = found.first()?;
    let alike = found.iter().filter(|(t, _, _)| t == trouble).count();
    Some(Problem {
        trouble: *trouble,
        message: describe(pod, finding, alike),
    })
}

fn describe(pod: &EdgePod, finding: &Finding<'_>, alike: usize) -> String {
    let region = &pod.region;
    let (namespace, name) = (&pod.namespace, &pod.name);
    let pods = match alike {
        1 => format!("pod {name}"),
        n => format!("pod {name} (and {} more)", n - 1),
    };
    let on = pod
        .node
        .as_deref()
        .map(|node| format!(" on node {node}"))
        .unwrap_or_default();
    match finding {
        Finding::Image(w) => format!(
            "region {region}: {pods} cannot pull image {:?}{on} ({}). Fix spec.edge.image (or the \
             chart's edgeImage), or let the node pull it (registry reachable, credentials)",
            w.image,
            kubelet_said(w),
        ),
        Finding::Start(w) => format!(
            "region {region}: {pods} cannot start container {} from image {:?}{on} ({}{}). Check \
             that the image is an edgefleet edge image that runs on this node; details: kubectl -n \
             {namespace} describe pod {name}",
            w.container,
            w.image,
            kubelet_said(w),
            last_exit(w),
        ),
        Finding::Crash(w) => {
            let out_of_memory = w
                .last_exit
                .as_ref()
                .is_some_and(|exit| &*exit.reason == "OOMKilled");
            format!(
                "region {region}: container {} of {pods} keeps exiting{on} (image {:?}; {}{}; \
                 restarted {} times). {}: kubectl -n {namespace} logs {name} -c {} --previous",
                w.container,
                w.image,
                kubelet_said(w),
                last_exit(w),
                w.restarts,
                if out_of_memory {
                    "It ran out of memory: raise the memory limit in spec.edge.resources or lower \
                     spec.edge.cacheMemory; its last words"
                } else {
                    "Why it exits"
                },
                w.container,
            )
        }
        Finding::Unschedulable(said) => format!(
            "region {region}: {pods} cannot be scheduled: {}. Make room on the region's nodes \
             (capacity, taints) or ask for less (spec.edge.resources, the region's replicas)",
            said.trim_end_matches('.'),
        ),
    }
}

/// `Reason: message`, or the reason alone.
fn kubelet_said(waiting: &Waiting) -> String {
    match &*waiting.message {
        "" => waiting.reason.to_string(),
        message => format!("{}: {message}", waiting.reason),
    }
}

/// `; last exit code 1 (Error)`, or nothing when the container never ended.
fn last_exit(waiting: &Waiting) -> String {
    match &waiting.last_exit {
        None => String::new(),
        Some(exit) if exit.reason.is_empty() => format!("; last exit code {}", exit.code),
        Some(exit) => format!("; last exit code {} ({})", exit.code, exit.reason),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::edge_pod::tests::edge_pod;
    use super::*;

    /// A pod whose one container waits with `reason` and `message`, after a last run that
    /// ended as `last` (exit code, reason) if given.
    fn waiting(name: &str, reason: &str, message: &str, last: Option<(i32, &str)>) -> EdgePod {
        let last_state = last.map_or(
            Value::Null,
            |(code, reason)| json!({"terminated": {"exitCode": code, "reason": reason}}),
        );
        edge_pod(
            name,
            json!({
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{
                    "name": "edge", "image": "registry.example/edge:bad", "restartCount": 3,
                    "state": {"waiting": {"reason": reason, "message": message}},
                    "lastState": last_state
                }]
            }),
        )
    }

    fn unschedulable(name: &str) -> EdgePod {
        edge_pod(
            name,
            json!({
                "phase": "Pending",
                "conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/12 nodes are available: 2 Insufficient cpu, 10 node(s) didn't match Pod's node affinity/selector."
                }]
            }),
        )
    }

    fn running(name: &str) -> EdgePod {
        edge_pod(
            name,
            json!({
                "phase": "Running",
                "containerStatuses": [{
                    "name": "edge", "image": "registry.example/edge:1", "restartCount": 0, "ready": true,
                    "state": {"running": {"startedAt": "2026-12-01T10:00:00Z"}}
                }]
            }),
        )
    }

    fn diagnosed(pods: &[EdgePod]) -> Problem {
        diagnose(pods).expect("a problem")
    }

    #[test]
    fn every_image_pull_reason_is_an_image_pull_failure_naming_pod_node_image_and_kubelet() {
        for reason in IMAGE_REASONS {
            let problem = diagnosed(&[waiting("site-eu-west-a", reason, "rpc error: not found", None)]);
            assert_eq!(problem.trouble, Trouble::ImagePull, "{reason}");
            assert_eq!(problem.trouble.reason(), "EdgeImagePullFailed");
            assert_eq!(
                problem.message,
                format!(
                    "region eu-west: pod site-eu-west-a cannot pull image \"registry.example/edge:bad\" on \
                     node node-1 ({reason}: rpc error: not found). Fix spec.edge.image (or the chart's \
                     edgeImage), or let the node pull it (registry reachable, credentials)"
                )
            );
        }
    }

    #[test]
    fn a_container_that_cannot_be_created_or_started_cannot_start() {
        for reason in START_REASONS {
            let problem = diagnosed(&[waiting("p", reason, "container has runAsNonRoot", None)]);
            assert_eq!(problem.trouble, Trouble::CannotStart, "{reason}");
            assert_eq!(problem.trouble.reason(), "EdgeCannotStart");
            assert!(
                problem.message.starts_with(&format!(
                    "region eu-west: pod p cannot start container edge from image \
                     \"registry.example/edge:bad\" on node node-1 ({reason}: container has runAsNonRoot)"
                )),
                "{}",
                problem.message
            );
            assert!(problem.message.ends_with("kubectl -n web describe pod p"));
        }
    }

    #[test]
    fn a_crash_loop_after_a_start_that_failed_still_cannot_start() {
        // The kubelet alternates these two while runc cannot exec the entrypoint.
        for reason in ["StartError", "ContainerCannotRun"] {
            let problem = diagnosed(&[waiting(
                "p",
                "CrashLoopBackOff",
                "back-off 20s restarting failed container",
                Some((128, reason)),
            )]);
            assert_eq!(problem.trouble, Trouble::CannotStart);
            assert!(
                problem
                    .message
                    .contains(&format!("; last exit code 128 ({reason}))")),
                "{}",
                problem.message
            );
        }
    }

    #[test]
    fn a_crash_loop_names_the_exit_and_where_to_read_why() {
        let problem = diagnosed(&[waiting(
            "p",
            "CrashLoopBackOff",
            "back-off 40s restarting failed container=edge",
            Some((1, "Error")),
        )]);
        assert_eq!(problem.trouble, Trouble::CrashLoop);
        assert_eq!(problem.trouble.reason(), "EdgeCrashLooping");
        assert_eq!(
            problem.message,
            "region eu-west: container edge of pod p keeps exiting on node node-1 (image \
             \"registry.example/edge:bad\"; CrashLoopBackOff: back-off 40s restarting failed \
             container=edge; last exit code 1 (Error); restarted 3 times). Why it exits: kubectl -n \
             web logs p -c edge --previous"
        );
        let oom = diagnosed(&[waiting("p", "CrashLoopBackOff", "", Some((137, "OOMKilled")))]);
        assert!(
            oom.message.contains("last exit code 137 (OOMKilled)")
                && oom
                    .message
                    .contains("raise the memory limit in spec.edge.resources"),
            "{}",
            oom.message
        );
    }

    #[test]
    fn an_unschedulable_pod_carries_the_schedulers_message() {
        let problem = diagnosed(&[unschedulable("p")]);
        assert_eq!(problem.trouble, Trouble::Unschedulable);
        assert_eq!(problem.trouble.reason(), "EdgeUnschedulable");
        assert_eq!(
            problem.message,
            "region eu-west: pod p cannot be scheduled: 0/12 nodes are available: 2 Insufficient \
             cpu, 10 node(s) didn't match Pod's node affinity/selector. Make room on the region's \
             nodes (capacity, taints) or ask for less (spec.edge.resources, the region's replicas)"
        );
    }

    #[test]
    fn starting_running_finished_and_deleted_pods_have_no_trouble() {
        let creating = waiting("a", "ContainerCreating", "", None);
        let mut evicted = waiting("b", "ImagePullBackOff", "", None);
        evicted.live = false;
        let pods = [creating, running("c"), evicted];
        assert_eq!(diagnose(&pods), None);
        assert!(pods.iter().all(|pod| trouble(pod).is_none()));
        assert_eq!(diagnose(&[]), None);
    }

    #[test]
    fn the_first_trouble_wins_and_its_first_pod_by_name_is_described() {
        let pods = [
            unschedulable("a"),
            waiting("d", "CrashLoopBackOff", "", Some((1, "Error"))),
            waiting("c", "ErrImagePull", "", None),
            waiting("b", "ImagePullBackOff", "", None),
            running("e"),
        ];
        let problem = diagnosed(&pods);
        assert_eq!(problem.trouble, Trouble::ImagePull);
        assert!(
            problem
                .message
                .starts_with("region eu-west: pod b (and 1 more) cannot pull"),
            "{}",
            problem.message
        );
        // The same pods in another order: the same problem.
        let mut reversed = pods;
        reversed.reverse();
        assert_eq!(diagnosed(&reversed), problem);
    }

    #[test]
    fn a_waiting_container_outranks_the_pods_scheduling() {
        // A pod that was unschedulable has no containers yet; one with a waiting container was
        // scheduled. Both at once only in a stale status: the container is newer news.
        let mut pod = waiting("p", "ErrImagePull", "", None);
        pod.unschedulable = Some("0/1 nodes are available.".into());
        assert_eq!(trouble(&pod), Some(Trouble::ImagePull));
    }
}
