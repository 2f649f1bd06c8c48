//! Hostile and malformed requests: limits, smuggling, traversal, unknown hosts, methods.
mod common;

use std::time::Duration;

use common::{Edge, Origin, Reply, base_config, raw};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(3);

fn status_of(response: &str) -> &str {
    response.split(' ').nth(1).unwrap_or("")
}

async fn edge_with_post(origin: &Origin) -> Edge {
    let mut config = base_config(&origin.url());
    config["defaultBehavior"]["allowedMethods"] = json!(["GET", "HEAD", "POST"]);
    config["aliases"] = json!(["example.com", "*.example.net"]);
    Edge::start(config).await
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_uris_get_414_and_oversized_heads_431() {
    let origin = Origin::start().await;
    let edge = Edge::start(base_config(&origin.url())).await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9_000));
    assert_eq!(status_of(&raw(edge.data, long_uri.as_bytes(), WAIT).await), "414");
    let huge_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
    let answer = raw(edge.data, huge_uri.as_bytes(), WAIT).await;
    assert!(matches!(status_of(&answer), "414" | "431"), "{answer}");
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-Filler: yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\r\n".repeat(300)
    );
    assert_eq!(status_of(&raw(edge.data, big_head.as_bytes(), WAIT).await), "431");
    let huge_head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "z".repeat(200_000)
    );
    assert_eq!(
        status_of(&raw(edge.data, huge_head.as_bytes(), WAIT).await),
        "431"
    );
    assert_eq!(origin.total(), 0, "nothing oversized reached the origin");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_400() {
    let origin = Origin::start().await;
    origin.route("/", Reply::ok("root"));
    let edge = Edge::start(base_config(&origin.url())).await;
    for request in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: bad host\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    ] {
        let answer = raw(edge.data, request, WAIT).await;
        assert_eq!(
            status_of(&answer),
            "400",
            "{:?} -> {answer}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(origin.total(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_attempts_are_refused() {
    let origin = Origin::start().await;
    origin.route("/", Reply::ok("root"));
    origin.route("/smuggled", Reply::ok("should never be asked for"));
    let edge = edge_with_post(&origin).await;
    let attempts: [&[u8]; 4] = [
        b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcdGET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n",
    ];
    for attempt in attempts {
        let answer = raw(edge.data, attempt, WAIT).await;
        assert_eq!(
            status_of(&answer),
            "400",
            "{:?} -> {answer}",
            String::from_utf8_lossy(attempt)
        );
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "nothing after the refused request is answered: {answer}"
        );
    }
    let bad_chunks =
        b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    assert_eq!(status_of(&raw(edge.data, bad_chunks, WAIT).await), "400");
    assert_eq!(
        origin.hits("/smuggled"),
        0,
        "the smuggled request never reached the origin"
    );
    let clean = b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n";
    let answer = raw(edge.data, clean, WAIT).await;
    assert_eq!(
        answer.matches("HTTP/1.1 200").count(),
        2,
        "pipelined requests with bodies still work: {answer}"
    );
    assert!(
        origin
            .seen()
            .iter()
            .any(|s| s.method == http::Method::POST && &s.body[..] == b"hello")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn path_traversal_never_reaches_the_origin() {
    let origin = Origin::start().await;
    let edge = Edge::start(base_config(&origin.url())).await;
    for path in [
        "/a/../etc/passwd",
        "/a/%2e%2e/etc/passwd",
        "/a/%2E%2E%2Fetc",
        "/..%5c..%5cwindows",
        "/a/./b",
        "/%00",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let answer = raw(edge.data, request.as_bytes(), WAIT).await;
        assert_eq!(status_of(&answer), "400", "{path} -> {answer}");
    }
    assert_eq!(origin.total(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_hosts_get_404_naming_the_host() {
    let origin = Origin::start().await;
    origin.route("/", Reply::ok("root"));
    let edge = edge_with_post(&origin).await;
    let r = edge.get_with("/", &[("host", "evil.test")]).await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("evil.test"), "{}", r.text());
    assert_eq!(origin.total(), 0, "not the origin's answer");
    for host in [
        "example.com",
        "EXAMPLE.com:8080",
        "a.example.net",
        "b.c.example.net",
    ] {
        assert_eq!(edge.get_with("/", &[("host", host)]).await.status, 200, "{host}");
    }
    assert_eq!(edge.get_with("/", &[("host", "example.net")]).await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn methods_outside_the_behavior_get_405() {
    let origin = Origin::start().await;
    let edge = Edge::start(base_config(&origin.url())).await;
    let r = edge
        .request(http::Method::DELETE, "/x", &[], bytes::Bytes::new())
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), "GET, HEAD");
    assert_eq!(origin.total(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn arbitrary_bytes_never_take_the_edge_down() {
    let origin = Origin::start().await;
    origin.route("/", Reply::ok("alive"));
    let edge = Edge::start(base_config(&origin.url())).await;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..200 {
        let mut bytes = Vec::new();
        for _ in 0..(round * 7 % 400) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push(seed as u8);
        }
        if round % 3 == 0 {
            bytes.splice(0..0, b"GET /".iter().copied());
        }
        raw(edge.data, &bytes, Duration::from_millis(100)).await;
    }
    assert_eq!(edge.get("/").await.text(), "alive");
}
