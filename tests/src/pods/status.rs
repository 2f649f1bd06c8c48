//! The pod status a kubelet would report for the runner's processes, as a patch. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

/// What one container's process is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    Waiting { reason: String, message: String },
    Running { started_at: Time },
}

/// How the previous run of a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Terminated {
    pub(crate) exit_code: i32,
    pub(crate) started_at: Time,
    pub(crate) finished_at: Time,
}

/// One container, as reported in `status.containerStatuses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerView {
    pub(crate) name: String,
    pub(crate) image: String,
    pub(crate) ready: bool,
    pub(crate) restart_count: i32,
    pub(crate) state: State,
    pub(crate) last_terminated: Option<Terminated>,
}

/// The pod as the runner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodView {
    pub(crate) containers: Vec<ContainerView>,
    /// When readiness last changed (the conditions' lastTransitionTime).
    pub(crate) readiness_changed_at: Time,
    /// Whether any container has started yet: the pod is Pending until then, Running after,
    /// even while a crashed container waits to restart.
    pub(crate) started: bool,
}

impl PodView {
    pub(crate) fn ready(&self) -> bool {
        !self.containers.is_empty() && self.containers.iter().all(|c| c.ready)
    }
}

fn time(t: &Time) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// A strategic-merge patch for the pod's status subresource: phase, the Ready and
/// ContainersReady conditions (merged by type, so kwok's other conditions stay), and every
/// container's status.
pub(crate) fn patch(view: &PodView) -> Value {
    let ready = view.ready();
    let condition = |kind: &str| {
        let mut condition = json!({
            "type": kind,
            "status": if ready { "True" } else { "False" },
            "lastTransitionTime": time(&view.readiness_changed_at),
        });
        if !ready {
            condition["reason"] = json!("ContainersNotReady");
        }
        condition
    };
    let containers: Vec<Value> = view.containers.iter().map(container_status).collect();
    json!({
        "status": {
            "phase": if view.started { "Running" } else { "Pending" },
            "conditions": [condition("Ready"), condition("ContainersReady")],
            "containerStatuses": containers,
        }
    })
}

fn container_status(container: &ContainerView) -> Value {
    let state = match &container.state {
        State::Waiting { reason, message } => json!({ "waiting": { "reason": reason, "message": message } }),
        State::Running { started_at } => json!({ "running": { "startedAt": time(started_at) } }),
    };
    let last_state = match &container.last_terminated {
        Some(last) => json!({
            "terminated": {
                "exitCode": last.exit_code,
                "reason": if last.exit_code == 0 { "Completed" } else { "Error" },
                "startedAt": time(&last.started_at),
                "finishedAt": time(&last.finished_at),
            }
        }),
        None => json!({}),
    };
    json!({
        "name": container.name,
        "image": container.image,
        "imageID": "",
        "ready": container.ready,
        "started": matches!(container.state, State::Running { .. }),
        "restartCount": container.restart_count,
        "state": state,
        "lastState": last_state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    fn container(ready: bool, state: State) -> ContainerView {
        ContainerView {
            name: "edge".to_owned(),
            image: "edgefleet/edge:dev".to_owned(),
            ready,
            restart_count: 1,
            state,
            last_terminated: Some(Terminated {
                exit_code: 2,
                started_at: at(0),
                finished_at: at(5),
            }),
        }
    }

    #[test]
    fn a_ready_running_container_makes_a_ready_running_pod() {
        let view = PodView {
            containers: vec![container(true, State::Running { started_at: at(10) })],
            readiness_changed_at: at(12),
            started: true,
        };
        let patch = patch(&view);
        assert_eq!(patch["status"]["phase"], "Running");
        assert_eq!(patch["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(patch["status"]["conditions"][0]["status"], "True");
        assert_eq!(
            patch["status"]["conditions"][0]["lastTransitionTime"],
            "1970-01-01T00:00:12Z"
        );
        let status = &patch["status"]["containerStatuses"][0];
        assert_eq!(status["ready"], true);
        assert_eq!(status["state"]["running"]["startedAt"], "1970-01-01T00:00:10Z");
        assert_eq!(status["lastState"]["terminated"]["exitCode"], 2);
        assert_eq!(status["lastState"]["terminated"]["reason"], "Error");
    }

    #[test]
    fn a_waiting_container_keeps_the_pod_pending_and_not_ready() {
        let waiting = State::Waiting {
            reason: "CreateContainerConfigError".to_owned(),
            message: "secret \"x\" not found".to_owned(),
        };
        let view = PodView {
            containers: vec![container(false, waiting)],
            readiness_changed_at: at(1),
            started: false,
        };
        let patch = patch(&view);
        assert_eq!(patch["status"]["phase"], "Pending");
        assert_eq!(patch["status"]["conditions"][1]["status"], "False");
        assert_eq!(patch["status"]["conditions"][1]["reason"], "ContainersNotReady");
        let state = &patch["status"]["containerStatuses"][0]["state"]["waiting"];
        assert_eq!(state["reason"], "CreateContainerConfigError");
    }
}
