//! Traffic through the fleets the operator builds: a counting HTTP origin, the ready edge pods
//! and their ports, and the requests the tests send them (data port, admin API).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::Api;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::{JoinHandle, JoinSet};

use crate::answer;
use crate::error::{Error, IoContext, Result};

/// An HTTP/1.1 origin that answers every GET (or HEAD) with a small body naming the path,
/// without Cache-Control (so the Distribution's default TTL applies), and counts the requests
/// per path. Enough HTTP for an edge's pooled keep-alive connections: requests without bodies,
/// one after the other. Stops (with its connections) when dropped.
#[derive(Debug)]
pub struct Origin {
    address: SocketAddr,
    requests: Arc<Mutex<BTreeMap<String, u32>>>,
    task: JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    /// An origin on a free port of 127.0.0.1 (reachable from edges that run on this host).
    pub async fn start() -> Result<Origin> {
        Self::start_on(IpAddr::from([127, 0, 0, 1])).await
    }

    /// An origin on a free port of `ip` (the cluster's host address, for edges on real nodes).
    pub async fn start_on(ip: IpAddr) -> Result<Origin> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .context(|| format!("the origin cannot listen on {ip}"))?;
        let address = listener
            .local_addr()
            .context(|| "the origin's address".to_owned())?;
        let requests = Arc::new(Mutex::new(BTreeMap::new()));
        let counted = requests.clone();
        let task = tokio::spawn(async move {
            // Owned here, so aborting the task closes every connection too.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream, counted.clone()));
            }
        });
        Ok(Origin {
            address,
            requests,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// How many requests for `path` the origin answered.
    pub async fn requests(&self, path: &str) -> u32 {
        self.requests.lock().await.get(path).copied().unwrap_or(0)
    }
}

async fn serve(mut stream: TcpStream, requests: Arc<Mutex<BTreeMap<String, u32>>>) {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0_u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        buffer.drain(..head_end);
        let mut request_line = head.split_whitespace();
        let method = request_line.next().unwrap_or_default();
        let path = request_line.next().unwrap_or_default().to_owned();
        *requests.lock().await.entry(path.clone()).or_default() += 1;
        let body = format!("object {path}\n");
        let mut response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if method != "HEAD" {
            response.push_str(&body);
        }
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A ready edge pod and where its ports are.
#[derive(Debug, Clone)]
pub struct Edge {
    pub name: String,
    pub uid: String,
    /// The node it runs on.
    pub node: String,
    pub data: SocketAddr,
    pub admin: SocketAddr,
}

impl Edge {
    /// The edge `pod` is, when it is ready and not going away.
    pub fn if_ready(pod: &Pod) -> Option<Edge> {
        let status = pod.status.as_ref()?;
        let ready = status
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready || pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let ip: IpAddr = status.pod_ip.as_ref()?.parse().ok()?;
        let spec = pod.spec.as_ref()?;
        let ports = spec.containers.first()?.ports.as_ref()?;
        let port = |name: &str| {
            let port = ports.iter().find(|p| p.name.as_deref() == Some(name))?;
            u16::try_from(port.container_port).ok()
        };
        Some(Edge {
            name: pod.name_any(),
            uid: pod.metadata.uid.clone()?,
            node: spec.node_name.clone()?,
            data: SocketAddr::new(ip, port("http")?),
            admin: SocketAddr::new(ip, port("admin")?),
        })
    }
}

/// What an edge answered to a GET: status, `X-Cache`, `X-Edge-Location`.
pub type Answer = (u16, String, String);

/// GETs `path` for `host` from an edge's data port, reading the whole body (so a Miss's fill has
/// been streamed to the end).
pub async fn get(http: &reqwest::Client, edge: &Edge, host: &str, path: &str) -> Result<Answer> {
    let failed = |e: reqwest::Error| Error::Invalid {
        what: format!("GET {path} from {}", edge.name),
        reason: e.to_string(),
    };
    let response = http
        .get(format!("http://{}{path}", edge.data))
        .header("host", host)
        .send()
        .await
        .map_err(failed)?;
    let header = |name: &str| answer::header(&response, name);
    let answer = (
        response.status().as_u16(),
        header("x-cache"),
        header("x-edge-location"),
    );
    response.bytes().await.map_err(failed)?;
    Ok(answer)
}

/// The fleet's admin token, from the Secret the operator renders for the edges.
pub async fn admin_token(secrets: &Api<Secret>, distribution: &str) -> Result<String> {
    let secret = secrets.get(&format!("{distribution}-edge")).await?;
    secret
        .data
        .as_ref()
        .and_then(|data| data.get("admin-token"))
        .and_then(|token| String::from_utf8(token.0.clone()).ok())
        .ok_or_else(|| Error::Invalid {
            what: format!("Secret {distribution}-edge"),
            reason: "no UTF-8 admin-token".to_owned(),
        })
}

/// What an edge reports on its admin API's `path` (e.g. `/status`), as JSON.
pub async fn admin_json(http: &reqwest::Client, edge: &Edge, token: &str, path: &str) -> Result<Value> {
    let failed = |e: reqwest::Error| Error::Invalid {
        what: format!("admin API {path} of {}", edge.name),
        reason: e.to_string(),
    };
    http.get(format!("http://{}{path}", edge.admin))
        .bearer_auth(token)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(failed)?
        .json()
        .await
        .map_err(failed)
}

/// The configuration generation an edge reports on its admin API.
pub async fn config_generation(http: &reqwest::Client, edge: &Edge, token: &str) -> Result<u64> {
    let status = admin_json(http, edge, token, "/status").await?;
    status["generation"].as_u64().ok_or_else(|| Error::Invalid {
        what: format!("/status of {}", edge.name),
        reason: format!("no generation in {status}"),
    })
}
