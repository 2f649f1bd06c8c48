//! Test harness: a real origin server (hyper) that counts requests and can be told what to answer,
//! and the real `edgefleet-edge` binary started with a generated configuration.
#![allow(dead_code, unreachable_pub)] // Each test binary uses a different part of the harness.

use std::{
    collections::HashMap,
    convert::Infallible,
    io::Read,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{body::Frame, server::conn::http1, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-admin-token";

/// How an origin sends a body.
#[derive(Clone)]
pub enum BodyMode {
    /// All at once.
    Whole,
    /// Announce the full length, send only this many bytes, then break the connection.
    Truncate(usize),
    /// Send this many bytes, then never send more.
    StallAfter(usize),
    /// Send the first chunk of this size, wait for the gate, then the rest.
    Gated(usize, Arc<Notify>),
    /// No Content-Length: chunked in pieces of this size.
    Chunked(usize),
    /// Send the head, then the whole body once the gate opens.
    HeadThenGate(Arc<Notify>),
}

/// What the origin answers for a path.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub delay: Duration,
    pub mode: BodyMode,
    /// Appends the request's value of this header to the body and sends `Vary` for it.
    pub vary_echo: Option<String>,
}

impl Reply {
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
            mode: BodyMode::Whole,
            vary_echo: None,
        }
    }

    pub fn status(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            ..Self::ok(body)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn mode(mut self, mode: BodyMode) -> Self {
        self.mode = mode;
        self
    }

    pub fn vary_echo(mut self, header: &str) -> Self {
        self.vary_echo = Some(header.to_owned());
        self
    }
}

/// A request the origin received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Default)]
struct OriginState {
    routes: Mutex<HashMap<String, Reply>>,
    seen: Mutex<Vec<Seen>>,
}

/// A real HTTP origin on 127.0.0.1.
pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<OriginState>,
    stop: CancellationToken,
}

type OriginBody = BoxBody<Bytes, std::io::Error>;

impl Origin {
    pub async fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let state = Arc::new(OriginState::default());
        let stop = CancellationToken::new();
        let (st, stop2) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = stop2.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (st, stop3) = (st.clone(), stop2.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(answer(&st, req).await) }
                    });
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop3.cancelled() => {}
                    }
                });
            }
        });
        Self { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn route(&self, path: &str, reply: Reply) {
        self.state.routes.lock().insert(path.to_owned(), reply);
    }

    /// Requests received for a path (query strings included in `target`, not in this count's key).
    pub fn hits(&self, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.target.split('?').next() == Some(path))
            .count()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().clone()
    }

    pub fn total(&self) -> usize {
        self.state.seen.lock().len()
    }

    /// Stops listening and closes every connection.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn answer(state: &OriginState, req: Request<hyper::body::Incoming>) -> Response<OriginBody> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map_or("/".to_owned(), |pq| pq.as_str().to_owned());
    state.seen.lock().push(Seen {
        method: parts.method.clone(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body,
    });
    let path = parts.uri.path().to_owned();
    let reply = state.routes.lock().get(&path).cloned();
    let Some(reply) = reply else {
        return Response::builder()
            .status(404)
            .body(full(Bytes::from_static(b"no such route")))
            .expect("response");
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut builder = Response::builder().status(reply.status);
    let mut etag = None;
    for (n, v) in &reply.headers {
        if n.eq_ignore_ascii_case("etag") {
            etag = Some(v.clone());
        }
        builder = builder.header(n.as_str(), v.as_str());
    }
    // Conditional GET: answer 304 when the validator matches.
    if let (Some(etag), Some(inm)) = (&etag, parts.headers.get(header::IF_NONE_MATCH))
        && inm.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag.trim_start_matches("W/"))
        })
    {
        return builder.status(304).body(full(Bytes::new())).expect("304");
    }
    let mut body = reply.body.clone();
    // Ranges of whole bodies, conditional on the ETag (as a resuming reader asks for them).
    if let (BodyMode::Whole, 200, Some(range)) = (&reply.mode, reply.status, parts.headers.get(header::RANGE))
    {
        let if_match = parts.headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
        if if_match.is_some_and(|tag| Some(tag) != etag.as_deref()) {
            return builder.status(412).body(full(Bytes::new())).expect("412");
        }
        let from = range
            .to_str()
            .ok()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|r| r.parse::<usize>().ok());
        if let Some(from) = from.filter(|f| *f < body.len()) {
            return builder
                .status(206)
                .header(
                    "content-range",
                    format!("bytes {from}-{}/{}", body.len() - 1, body.len()),
                )
                .header("content-length", body.len() - from)
                .body(full(body.slice(from..)))
                .expect("206");
        }
    }
    if let Some(name) = &reply.vary_echo {
        let value = parts
            .headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        body = Bytes::from(format!("{}{value}", String::from_utf8_lossy(&body)));
        builder = builder.header("vary", name.as_str());
    }
    if parts.method == Method::HEAD {
        return builder
            .header("content-length", body.len())
            .body(full(Bytes::new()))
            .expect("head");
    }
    match reply.mode {
        BodyMode::Whole => builder
            .header("content-length", body.len())
            .body(full(body))
            .expect("whole"),
        BodyMode::Truncate(n) => {
            let first = body.slice(..n.min(body.len()));
            let stream = futures::stream::iter(vec![
                Ok(Frame::data(first)),
                Err(std::io::Error::other("origin cut the body short")),
            ]);
            builder
                .header("content-length", body.len())
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .expect("truncated")
        }
        BodyMode::StallAfter(n) => {
            let first = body.slice(..n.min(body.len()));
            let stream =
                futures::stream::iter(vec![Ok(Frame::data(first))]).chain(futures::stream::pending());
            builder
                .header("content-length", body.len())
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .expect("stalled")
        }
        BodyMode::Gated(n, gate) => {
            let first = body.slice(..n.min(body.len()));
            let rest = body.slice(n.min(body.len())..);
            let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(Frame::data(first))]).chain(
                futures::stream::once(async move {
                    gate.notified().await;
                    Ok(Frame::data(rest))
                }),
            );
            builder
                .header("content-length", body.len())
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .expect("gated")
        }
        BodyMode::HeadThenGate(gate) => {
            let stream = futures::stream::once(async move {
                gate.notified().await;
                Ok::<_, std::io::Error>(Frame::data(body))
            });
            builder
                .header("content-length", reply.body.len())
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .expect("gated head")
        }
        BodyMode::Chunked(size) => {
            let pieces: Vec<Result<Frame<Bytes>, std::io::Error>> = body
                .chunks(size.max(1))
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            builder
                .body(BodyExt::boxed(StreamBody::new(futures::stream::iter(pieces))))
                .expect("chunked")
        }
    }
}

fn full(bytes: Bytes) -> OriginBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// A free port on 127.0.0.1 (see [`edgefleet_e2e::process::free_port`]).
pub fn free_port() -> SocketAddr {
    let port = edgefleet_e2e::process::free_port().expect("a free port");
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The base configuration tests start from: one HTTP origin, default behavior, 64 MiB cache.
pub fn base_config(origin: &str) -> Value {
    json!({
        "distribution": "test",
        "region": "test-region",
        "origins": [{"http": {"id": "origin", "url": origin, "connectTimeoutSeconds": 2, "readTimeoutSeconds": 2}}],
        "defaultBehavior": {"targetOrigin": "origin"},
        "cache": {"memoryBytes": 67_108_864},
    })
}

/// A running `edgefleet-edge`, killed on drop.
pub struct Edge {
    child: Child,
    pub data: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A complete response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn x_cache(&self) -> &str {
        self.header("x-cache")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(2048)
        .build_http()
}

impl Edge {
    /// Starts the edge with `config` (listen addresses and admin token filled in).
    pub async fn start(config: Value) -> Self {
        Self::start_with(config, &[], None).await
    }

    pub async fn start_with(config: Value, env: &[(&str, &str)], dir: Option<tempfile::TempDir>) -> Self {
        let dir = dir.unwrap_or_else(|| tempfile::tempdir().expect("tempdir"));
        let (config, data, admin) = Self::prepare(config, &dir);
        let config_path = dir.path().join("edge.yaml");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).expect("json")).expect("config");
        let args = vec!["--config".to_owned(), config_path.to_string_lossy().into_owned()];
        Self::spawn(&args, env, dir, data, admin).await
    }

    /// Fills in listen addresses and the admin token file (written into `dir`).
    pub fn prepare(mut config: Value, dir: &tempfile::TempDir) -> (Value, SocketAddr, SocketAddr) {
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
        let (data, admin) = (free_port(), free_port());
        config["listen"] = json!({"data": data.to_string(), "admin": admin.to_string()});
        config["admin"] = json!({"tokenFile": token_file});
        (config, data, admin)
    }

    /// Starts the binary with `args` and waits until it is ready.
    pub async fn spawn(
        args: &[String],
        env: &[(&str, &str)],
        dir: tempfile::TempDir,
        data: SocketAddr,
        admin: SocketAddr,
    ) -> Self {
        let mut edge = Self::launch(args, env, dir, data, admin);
        edge.wait_ready().await;
        edge
    }

    /// Starts the binary with `args` without waiting for it.
    pub fn launch(
        args: &[String],
        env: &[(&str, &str)],
        dir: tempfile::TempDir,
        data: SocketAddr,
        admin: SocketAddr,
    ) -> Self {
        let config_path = dir.path().join("edge.yaml");
        let log = std::fs::File::create(dir.path().join("edge.log")).expect("log file");
        // EDGEFLEET_EDGE_BIN runs the tests against another build (an earlier one, to see a new
        // test fail before its fix).
        let binary = std::env::var_os("EDGEFLEET_EDGE_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_edgefleet-edge")),
            PathBuf::from,
        );
        let mut command = Command::new(binary);
        command
            .args(args)
            .arg("--shutdown-timeout")
            .arg("5")
            .env("RUST_LOG", "edgefleet_edge=debug,info")
            .env_remove("EDGEFLEET_REGION")
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn edgefleet-edge");
        Self {
            child,
            data,
            admin,
            dir,
            config_path,
            client: client(),
        }
    }

    /// Waits for `/readyz`, failing with the edge's log if it exits or takes too long.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("edge exited with {status} before becoming ready:\n{}", self.log());
            }
            if let Ok(r) = self.admin_request(Method::GET, "/readyz", None, false).await
                && r.status == StatusCode::OK
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "edge not ready within 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("edge.log")) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`HUP`, `TERM`) to the edge.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, up to `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.data)
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request(Method::GET, path, headers, Bytes::new()).await
    }

    pub async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Bytes) -> Resp {
        send(&self.client, method, &self.url(path), headers, body)
            .await
            .expect("request to the edge")
    }

    pub async fn admin_request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        auth: bool,
    ) -> Result<Resp, String> {
        let mut headers = vec![];
        let token = format!("Bearer {TOKEN}");
        if auth {
            headers.push(("authorization", token.as_str()));
        }
        let bytes = match &body {
            Some(v) => {
                headers.push(("content-type", "application/json"));
                Bytes::from(serde_json::to_vec(v).expect("json"))
            }
            None => Bytes::new(),
        };
        send(
            &self.client,
            method,
            &format!("http://{}{path}", self.admin),
            &headers,
            bytes,
        )
        .await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.admin_request(method, path, body, true)
            .await
            .expect("admin request")
    }

    pub async fn invalidate(&self, id: &str, paths: &[&str]) -> Resp {
        self.admin(
            Method::POST,
            "/invalidations",
            Some(json!({"id": id, "paths": paths})),
        )
        .await
    }

    /// Rewrites the configuration file (listen and admin kept).
    pub fn rewrite_config(&self, mut config: Value) {
        config["listen"] = json!({"data": self.data.to_string(), "admin": self.admin.to_string()});
        config["admin"] = json!({"tokenFile": self.dir.path().join("token")});
        let tmp = self.dir.path().join("edge.yaml.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&config).expect("json")).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("replace config");
    }

    /// The value of a metric line starting with `prefix` (labels included), if present.
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let text = self.admin(Method::GET, "/metrics", None).await.text();
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Resp, String> {
    let mut request = Request::builder().method(method).uri(url);
    for (n, v) in headers {
        request = request.header(
            HeaderName::from_bytes(n.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| format!("{e:?}"))?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Polls `check` until it is true, failing after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Sends raw bytes on a fresh connection and returns everything the edge answers until it
/// closes the connection or `limit` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
