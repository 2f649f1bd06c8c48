//! Fills: request collapsing, streaming, truncated bodies, disconnects, uncacheable responses.
mod common;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use common::{BodyMode, Edge, Origin, Reply, base_config, client, eventually};
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_concurrent_cold_requests_make_one_origin_request() {
    let origin = Origin::start().await;
    let body = "x".repeat(4096);
    origin.route("/cold", Reply::ok(body.clone()).delay(Duration::from_millis(500)));
    let edge = Arc::new(Edge::start(base_config(&origin.url())).await);
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let edge = edge.clone();
        tasks.push(tokio::spawn(async move { edge.get("/cold").await }));
    }
    for task in tasks {
        let response = task.await.expect("task");
        assert_eq!(response.status, 200);
        assert_eq!(response.body.len(), body.len());
    }
    assert_eq!(origin.hits("/cold"), 1, "collapsed into one origin request");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_fill_wakes_every_waiter_with_the_error() {
    let origin = Origin::start().await;
    origin.route("/stuck", Reply::ok("never").delay(Duration::from_secs(30)));
    let mut config = base_config(&origin.url());
    config["origins"][0]["http"]["readTimeoutSeconds"] = json!(1);
    let edge = Arc::new(Edge::start(config).await);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let edge = edge.clone();
        tasks.push(tokio::spawn(async move { edge.get("/stuck").await }));
    }
    for task in tasks {
        let response = task.await.expect("task");
        assert_eq!(response.status, 504);
        assert!(
            response.text().contains("did not respond within"),
            "{}",
            response.text()
        );
        assert_eq!(response.x_cache(), "Error from edgefleet");
    }
    assert_eq!(origin.hits("/stuck"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_stream_through_before_the_origin_finishes() {
    let origin = Origin::start().await;
    let gate = Arc::new(Notify::new());
    let body = Bytes::from(vec![7u8; 1 << 20]);
    origin.route(
        "/big",
        Reply::ok(body.clone()).mode(BodyMode::Gated(1000, gate.clone())),
    );
    let edge = Edge::start(base_config(&origin.url())).await;
    let client = client();
    let request = Request::get(edge.url("/big"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let mut response = client.request(request).await.expect("response head");
    assert_eq!(response.headers()["content-length"], "1048576");
    let first = response
        .body_mut()
        .frame()
        .await
        .expect("a frame")
        .expect("no error");
    assert!(
        !first.data_ref().expect("data").is_empty(),
        "bytes arrive while the origin still holds the rest"
    );
    gate.notify_one();
    let rest = response.into_body().collect().await.expect("rest").to_bytes();
    assert_eq!(first.into_data().expect("data").len() + rest.len(), body.len());
    let again = edge.get("/big").await;
    assert_eq!(again.body, body);
    assert!(again.x_cache().starts_with("Hit"));
    assert_eq!(origin.hits("/big"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_cut_short_is_never_stored() {
    let origin = Origin::start().await;
    origin.route(
        "/cut",
        Reply::ok(vec![1u8; 20_000])
            .header("cache-control", "max-age=600")
            .mode(BodyMode::Truncate(5_000)),
    );
    let edge = Edge::start(base_config(&origin.url())).await;
    let client = client();
    for _ in 0..2 {
        let request = Request::get(edge.url("/cut"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let received = match client.request(request).await {
            Ok(r) => r.into_body().collect().await.map(|c| c.to_bytes().len()).ok(),
            Err(_) => None,
        };
        assert!(
            received.is_none_or(|n| n < 20_000),
            "the viewer sees the body end early: {received:?}"
        );
    }
    assert_eq!(origin.hits("/cut"), 2, "the truncated body was not cached");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_leaving_does_not_cancel_the_fill() {
    let origin = Origin::start().await;
    let gate = Arc::new(Notify::new());
    let body = Bytes::from(vec![3u8; 256 * 1024]);
    origin.route(
        "/slow",
        Reply::ok(body.clone()).mode(BodyMode::Gated(1000, gate.clone())),
    );
    let edge = Edge::start(base_config(&origin.url())).await;
    {
        let client = client();
        let request = Request::get(edge.url("/slow"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let mut response = client.request(request).await.expect("head");
        response.body_mut().frame().await.expect("a frame").expect("data");
        // The viewer goes away mid-body.
    }
    gate.notify_one();
    eventually(
        Duration::from_secs(5),
        "the fill completes and is stored",
        async || edge.metric("edgefleet_edge_cache_objects").await.unwrap_or(0.0) >= 1.0,
    )
    .await;
    let again = edge.get("/slow").await;
    assert_eq!(again.body, body);
    assert!(again.x_cache().starts_with("Hit"));
    assert_eq!(origin.hits("/slow"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn private_responses_are_not_shared_between_waiting_viewers() {
    let origin = Origin::start().await;
    origin.route(
        "/me",
        Reply::ok("mine")
            .header("cache-control", "private")
            .delay(Duration::from_millis(300)),
    );
    let edge = Arc::new(Edge::start(base_config(&origin.url())).await);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let edge = edge.clone();
            tokio::spawn(async move { edge.get("/me").await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task").text(), "mine");
    }
    assert_eq!(origin.hits("/me"), 20, "each viewer got its own origin response");
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_larger_than_the_limit_stream_through_uncached() {
    let origin = Origin::start().await;
    let body = Bytes::from((0..8 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    origin.route("/huge", Reply::ok(body.clone()));
    origin.route(
        "/huge-chunked",
        Reply::ok(body.clone()).mode(BodyMode::Chunked(64 * 1024)),
    );
    let mut config = base_config(&origin.url());
    config["cache"]["maxObjectBytes"] = json!(1 << 20);
    let edge = Edge::start(config).await;
    for path in ["/huge", "/huge-chunked"] {
        assert_eq!(edge.get(path).await.body, body, "{path} arrives whole");
        assert_eq!(edge.get(path).await.body, body);
        assert_eq!(
            origin.hits(path),
            2,
            "{path} is larger than maxObjectBytes: not stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_viewer_never_slows_another_on_a_large_object() {
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let origin = Origin::start().await;
    let gate = Arc::new(Notify::new());
    // Larger than every buffer between the edge and a viewer that reads nothing.
    let body = Bytes::from((0..64u32 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    origin.route(
        "/video",
        Reply::ok(body.clone())
            .header("etag", "\"v1\"")
            .delay(Duration::from_millis(300))
            .mode(BodyMode::HeadThenGate(gate.clone())),
    );
    let mut config = base_config(&origin.url());
    config["cache"]["maxObjectBytes"] = json!(1 << 20);
    let edge = Edge::start(config).await;

    // The stalled viewer asks first, through a small receive buffer (so the kernel does not read
    // for it), and reads nothing but the head; the fast one joins the same fill.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 << 10).expect("receive buffer");
    let mut stalled = socket.connect(edge.data).await.expect("connect");
    stalled
        .write_all(b"GET /video HTTP/1.1\r\nhost: example.com\r\nconnection: close\r\n\r\n")
        .await
        .expect("request");
    eventually(Duration::from_secs(10), "the fill started", async || {
        origin.hits("/video") == 1
    })
    .await;
    let fast = client().request(
        Request::get(edge.url("/video"))
            .header("host", "example.com")
            .body(Full::new(Bytes::new()))
            .expect("request"),
    );
    let fast = tokio::time::timeout(Duration::from_secs(10), fast)
        .await
        .expect("the fast viewer's head")
        .expect("response");
    let mut answer = Vec::new();
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0u8; 1024];
        let n = stalled.read(&mut buf).await.expect("read the head");
        assert!(n > 0, "the edge closed the stalled viewer's connection");
        answer.extend_from_slice(&buf[..n]);
    }

    // Both are following the fill; the origin sends the body, and the stalled viewer reads none.
    // Later requests for the object (the stalled viewer's continuation) are answered at once.
    gate.notify_one();
    origin.route("/video", Reply::ok(body.clone()).header("etag", "\"v1\""));
    let fast = tokio::time::timeout(Duration::from_secs(60), fast.into_body().collect())
        .await
        .expect("the fast viewer is not held back by the stalled one")
        .expect("the fast viewer's body")
        .to_bytes();
    assert_eq!(fast, body);

    // The stalled viewer, reading at last, gets the whole body too: past the shared window it
    // continued with its own range request.
    tokio::time::timeout(Duration::from_secs(60), stalled.read_to_end(&mut answer))
        .await
        .expect("the stalled viewer's answer completes")
        .expect("read");
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let received = &answer[head_end..];
    let ranges: Vec<_> = origin
        .seen()
        .iter()
        .filter_map(|s| s.headers.get("range").cloned())
        .collect();
    assert_eq!(
        received.len(),
        body.len(),
        "the stalled viewer's body is whole (ranges asked: {ranges:?})"
    );
    assert_eq!(
        Sha256::digest(received),
        Sha256::digest(&body),
        "the stalled viewer's body is the object (first difference at {:?})",
        received.iter().zip(body.iter()).position(|(a, b)| a != b)
    );
    assert!(
        origin
            .seen()
            .iter()
            .any(|s| s.headers.get("range").is_some_and(|r| r != "bytes=0-")),
        "the stalled viewer continued from where it was"
    );
    assert_eq!(origin.hits("/video"), 2, "one shared fill, one continuation");
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_responses_without_length_are_cached() {
    let origin = Origin::start().await;
    let body = Bytes::from(vec![9u8; 300_000]);
    origin.route(
        "/chunked",
        Reply::ok(body.clone()).mode(BodyMode::Chunked(10_000)),
    );
    let edge = Edge::start(base_config(&origin.url())).await;
    assert_eq!(edge.get("/chunked").await.body, body);
    let again = edge.get("/chunked").await;
    assert_eq!(again.body, body);
    assert_eq!(again.header("content-length"), "300000");
    assert_eq!(origin.hits("/chunked"), 1);
}
