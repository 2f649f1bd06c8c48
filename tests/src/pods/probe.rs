//! Readiness probes, run against the real process the way the kubelet runs them.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;

/// How to check one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// No readiness probe: ready as soon as the process runs.
    None,
    Http {
        url: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        address: String,
    },
    /// A probe kind the runner cannot perform (exec, grpc): never ready, with the reason logged.
    Unsupported(String),
}

/// Probe timing, from the spec with the kubelet's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    pub(crate) initial_delay: Duration,
    pub(crate) timeout: Duration,
    pub(crate) period: Duration,
    pub(crate) success_threshold: u32,
    pub(crate) failure_threshold: u32,
}

/// The readiness check of `container` in a pod at `pod_ip`.
pub(crate) fn readiness_check(container: &Container, pod_ip: &str) -> (Check, Timing) {
    let Some(probe) = &container.readiness_probe else {
        return (Check::None, timing(None));
    };
    (check(probe, container, pod_ip), timing(Some(probe)))
}

fn check(probe: &Probe, container: &Container, pod_ip: &str) -> Check {
    if let Some(http) = &probe.http_get {
        let Some(port) = resolve_port(&http.port, container) else {
            return Check::Unsupported(format!("unknown port {:?}", http.port));
        };
        let scheme = http.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
        let host = http.host.as_deref().unwrap_or(pod_ip);
        let path = http.path.as_deref().unwrap_or("/");
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let headers = http.http_headers.iter().flatten();
        Check::Http {
            url: format!("{scheme}://{host}:{port}{path}"),
            headers: headers.map(|h| (h.name.clone(), h.value.clone())).collect(),
        }
    } else if let Some(tcp) = &probe.tcp_socket {
        match resolve_port(&tcp.port, container) {
            Some(port) => Check::Tcp {
                address: format!("{}:{port}", tcp.host.as_deref().unwrap_or(pod_ip)),
            },
            None => Check::Unsupported(format!("unknown port {:?}", tcp.port)),
        }
    } else if probe.exec.is_some() {
        Check::Unsupported("exec probes cannot run outside a container".to_owned())
    } else if probe.grpc.is_some() {
        Check::Unsupported("grpc probes are not supported by the test runner".to_owned())
    } else {
        Check::None
    }
}

fn timing(probe: Option<&Probe>) -> Timing {
    let seconds = |value: Option<i32>, default: u64| {
        Duration::from_secs(
            value
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(default)
                .max(1),
        )
    };
    let count = |value: Option<i32>, default: u32| {
        value
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(default)
            .max(1)
    };
    let delay = probe
        .and_then(|p| p.initial_delay_seconds)
        .and_then(|v| u64::try_from(v).ok());
    Timing {
        initial_delay: Duration::from_secs(delay.unwrap_or(0)),
        timeout: seconds(probe.and_then(|p| p.timeout_seconds), 1),
        period: seconds(probe.and_then(|p| p.period_seconds), 10),
        success_threshold: count(probe.and_then(|p| p.success_threshold), 1),
        failure_threshold: count(probe.and_then(|p| p.failure_threshold), 3),
    }
}

fn resolve_port(port: &IntOrString, container: &Container) -> Option<i32> {
    match port {
        IntOrString::Int(port) => Some(*port),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

/// Runs one probe; `true` when it passes (HTTP 2xx/3xx, or a TCP connection accepted).
pub(crate) async fn passes(check: &Check, client: &reqwest::Client, timeout: Duration) -> bool {
    match check {
        Check::None => true,
        Check::Unsupported(_) => false,
        Check::Tcp { address } => tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .is_ok_and(|connected| connected.is_ok()),
        Check::Http { url, headers } => {
            let request = headers
                .iter()
                .fold(client.get(url).timeout(timeout), |request, (name, value)| {
                    request.header(name, value)
                });
            request
                .send()
                .await
                .is_ok_and(|response| response.status().is_success() || response.status().is_redirection())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction};

    #[test]
    fn http_probe_on_a_named_port_targets_the_pod_ip() {
        let container = Container {
            ports: Some(vec![ContainerPort {
                name: Some("admin".to_owned()),
                container_port: 9901,
                ..ContainerPort::default()
            }]),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/readyz".to_owned()),
                    port: IntOrString::String("admin".to_owned()),
                    ..HTTPGetAction::default()
                }),
                period_seconds: Some(2),
                ..Probe::default()
            }),
            ..Container::default()
        };
        let (check, timing) = readiness_check(&container, "198.18.0.3");
        assert_eq!(
            check,
            Check::Http {
                url: "http://198.18.0.3:9901/readyz".to_owned(),
                headers: vec![],
            }
        );
        assert_eq!(timing.period, Duration::from_secs(2));
        assert_eq!(timing.failure_threshold, 3);
    }

    #[test]
    fn no_probe_means_ready_when_running() {
        assert_eq!(
            readiness_check(&Container::default(), "198.18.0.3").0,
            Check::None
        );
    }
}
