//! When origins fail: stale-if-error, stale-while-revalidate, origin-group failover, error
//! caching, custom error pages, 502/504, and methods passed through.
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Edge, Origin, Reply, base_config, eventually, free_port};
use http::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn stale_if_error_from_the_behavior_serves_stale_when_the_origin_fails() {
    let origin = Origin::start().await;
    origin.route(
        "/s",
        Reply::ok("stale but useful").header("cache-control", "max-age=1"),
    );
    origin.route(
        "/nope",
        Reply::ok("no window").header("cache-control", "max-age=1"),
    );
    let mut config = base_config(&origin.url());
    config["behaviors"] = json!([{"pathPattern": "/s", "targetOrigin": "origin", "staleIfErrorSeconds": 60}]);
    let edge = Edge::start(config).await;
    edge.get("/s").await;
    edge.get("/nope").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    origin.route("/s", Reply::status(503, "down"));
    let r = edge.get("/s").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "stale but useful"),
        "5xx: stale served"
    );
    origin.route("/nope", Reply::status(503, "down"));
    assert_eq!(
        edge.get("/nope").await.status,
        503,
        "without a stale-if-error window the error goes through"
    );

    origin.stop();
    let r = edge.get("/s").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "stale but useful"),
        "unreachable: stale served"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revalidation_cut_short_serves_the_stale_object() {
    let origin = Origin::start().await;
    // Stored already stale (its Age is past max-age), servable on error for ten minutes.
    let stale = Reply::ok("stale but whole")
        .header("cache-control", "max-age=60, stale-if-error=600")
        .header("age", "100");
    origin.route("/s", stale);
    let edge = Edge::start(base_config(&origin.url())).await;
    assert_eq!(edge.get("/s").await.text(), "stale but whole");

    // Large enough that the edge has the new response's head and a first part of its body before
    // the origin breaks the connection.
    origin.route(
        "/s",
        Reply::ok(vec![b'n'; 2 << 20])
            .header("cache-control", "max-age=60")
            .mode(common::BodyMode::Truncate(1 << 20)),
    );
    let r = edge.get("/s").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "stale but whole"),
        "the stale object, not a truncated new one"
    );
    assert_eq!(origin.hits("/s"), 2, "the revalidation reached the origin");
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_if_error_from_the_origin_is_honoured_and_must_revalidate_is_not_bent() {
    let origin = Origin::start().await;
    origin.route(
        "/o",
        Reply::ok("origin said so").header("cache-control", "max-age=1, stale-if-error=60"),
    );
    origin.route(
        "/strict",
        Reply::ok("strict").header("cache-control", "max-age=1, stale-if-error=60, must-revalidate"),
    );
    let edge = Edge::start(base_config(&origin.url())).await;
    edge.get("/o").await;
    edge.get("/strict").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.route("/o", Reply::status(500, "broken"));
    origin.route("/strict", Reply::status(500, "broken"));
    assert_eq!(edge.get("/o").await.text(), "origin said so");
    assert_eq!(edge.get("/strict").await.status, 500);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background() {
    let origin = Origin::start().await;
    origin.route(
        "/swr",
        Reply::ok("v1").header("cache-control", "max-age=1, stale-while-revalidate=30"),
    );
    let edge = Edge::start(base_config(&origin.url())).await;
    edge.get("/swr").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.route(
        "/swr",
        Reply::ok("v2")
            .header("cache-control", "max-age=60")
            .delay(Duration::from_millis(300)),
    );
    for _ in 0..5 {
        let r = edge.get("/swr").await;
        assert_eq!(r.text(), "v1", "stale served at once while the refresh runs");
        assert!(r.x_cache().starts_with("Hit"));
    }
    eventually(
        Duration::from_secs(5),
        "the background refresh lands",
        async || edge.get("/swr").await.text() == "v2",
    )
    .await;
    assert_eq!(origin.hits("/swr"), 2, "exactly one background refresh");
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_groups_fail_over_on_statuses_and_connection_errors() {
    let primary = Origin::start().await;
    let secondary = Origin::start().await;
    primary.route("/status", Reply::status(503, "primary down"));
    primary.route("/ok", Reply::ok("from primary"));
    secondary.route("/status", Reply::ok("from secondary"));
    secondary.route("/refused", Reply::ok("secondary after refusal"));
    secondary.route("/ok", Reply::ok("from secondary"));
    let dead = free_port();
    let mut config = base_config(&primary.url());
    config["origins"] = json!([
        {"http": {"id": "primary", "url": primary.url(), "connectTimeoutSeconds": 1}},
        {"http": {"id": "secondary", "url": secondary.url()}},
        {"http": {"id": "dead", "url": format!("http://{dead}"), "connectTimeoutSeconds": 1}},
    ]);
    config["originGroups"] = json!([
        {"id": "group", "primary": "primary", "secondary": "secondary", "failoverStatuses": [503]},
        {"id": "dead-group", "primary": "dead", "secondary": "secondary"},
    ]);
    config["defaultBehavior"] = json!({"targetOrigin": "group", "allowedMethods": ["GET", "HEAD", "POST"]});
    config["behaviors"] = json!([{"pathPattern": "/refused", "targetOrigin": "dead-group"}]);
    let edge = Edge::start(config).await;
    assert_eq!(edge.get("/status").await.text(), "from secondary");
    assert_eq!(edge.get("/refused").await.text(), "secondary after refusal");
    assert_eq!(edge.get("/ok").await.text(), "from primary");
    let post = edge
        .request(Method::POST, "/status", &[], Bytes::from_static(b"x"))
        .await;
    assert_eq!(post.status, 503, "POST never fails over");
    assert_eq!(
        secondary
            .seen()
            .iter()
            .filter(|s| s.method == Method::POST)
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_cached_for_the_error_caching_ttl_and_416_never() {
    let origin = Origin::start().await;
    origin.route("/missing", Reply::status(404, "no such thing"));
    origin.route("/gone", Reply::status(410, "gone"));
    origin.route("/odd", Reply::status(416, "odd range answer"));
    let mut config = base_config(&origin.url());
    config["errorResponses"] = json!([{"errorCode": 410, "errorCachingMinTtl": 1}]);
    let edge = Edge::start(config).await;
    for path in ["/missing", "/gone", "/odd"] {
        let r = edge.get(path).await;
        assert_eq!(r.x_cache(), "Error from edgefleet");
        edge.get(path).await;
    }
    assert_eq!(origin.hits("/missing"), 1, "404 cached for the default 10 s");
    assert_eq!(origin.hits("/gone"), 1);
    assert_eq!(origin.hits("/odd"), 2, "416 is never cached");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    edge.get("/gone").await;
    edge.get("/missing").await;
    assert_eq!(origin.hits("/gone"), 2, "the configured 1 s error TTL expired");
    assert_eq!(origin.hits("/missing"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_error_pages_replace_error_bodies() {
    let origin = Origin::start().await;
    origin.route("/missing", Reply::status(404, "origin's ugly 404"));
    origin.route(
        "/errors/404.html",
        Reply::ok("<h1>Not here</h1>").header("content-type", "text/html"),
    );
    origin.route(
        "/errors/5xx.html",
        Reply::ok("<h1>Back soon</h1>").header("content-type", "text/html"),
    );
    let dead = free_port();
    let mut config = base_config(&origin.url());
    config["origins"] = json!([
        {"http": {"id": "origin", "url": origin.url()}},
        {"http": {"id": "dead", "url": format!("http://{dead}"), "connectTimeoutSeconds": 1}},
    ]);
    config["behaviors"] = json!([{"pathPattern": "/broken/*", "targetOrigin": "dead"}]);
    config["errorResponses"] = json!([
        {"errorCode": 404, "responsePagePath": "/errors/404.html", "responseCode": 200},
        {"errorCode": 502, "responsePagePath": "/errors/5xx.html"},
    ]);
    let edge = Edge::start(config).await;
    let r = edge.get("/missing").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "<h1>Not here</h1>"));
    assert_eq!(r.header("content-type"), "text/html");
    let r = edge.get("/broken/x").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (502, "<h1>Back soon</h1>")
    );
    edge.get("/missing").await;
    assert_eq!(origin.hits("/errors/404.html"), 1, "the page itself is cached");
    assert_eq!(origin.hits("/missing"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_origins_get_502_and_slow_ones_504_with_the_reason() {
    let slow = Origin::start().await;
    slow.route("/slow", Reply::ok("late").delay(Duration::from_secs(5)));
    let dead = free_port();
    let mut config = base_config(&slow.url());
    config["origins"] = json!([
        {"http": {"id": "slow", "url": slow.url(), "readTimeoutSeconds": 1}},
        {"http": {"id": "dead", "url": format!("http://{dead}"), "connectTimeoutSeconds": 1}},
    ]);
    config["defaultBehavior"] = json!({"targetOrigin": "slow"});
    config["behaviors"] = json!([{"pathPattern": "/dead/*", "targetOrigin": "dead"}]);
    let edge = Edge::start(config).await;
    let r = edge.get("/dead/x").await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("origin dead unreachable"), "{}", r.text());
    assert!(r.text().to_ascii_lowercase().contains("connect"), "{}", r.text());
    let r = edge.get("/slow").await;
    assert_eq!(r.status, 504);
    assert!(
        r.text().contains("origin slow did not respond within 1s"),
        "{}",
        r.text()
    );
    assert_eq!(r.x_cache(), "Error from edgefleet");
}

#[tokio::test(flavor = "multi_thread")]
async fn other_allowed_methods_pass_through_uncached() {
    let origin = Origin::start().await;
    origin.route(
        "/api",
        Reply::ok("created")
            .header("cache-control", "max-age=600")
            .header("set-cookie", "id=1"),
    );
    let mut config = base_config(&origin.url());
    config["defaultBehavior"]["allowedMethods"] =
        json!(["GET", "HEAD", "OPTIONS", "PUT", "POST", "PATCH", "DELETE"]);
    let edge = Edge::start(config).await;
    for method in [
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ] {
        let r = edge
            .request(
                method.clone(),
                "/api?x=1",
                &[("x-custom", "kept")],
                Bytes::from_static(b"payload"),
            )
            .await;
        assert_eq!(r.text(), "created", "{method}");
        assert_eq!(
            r.header("set-cookie"),
            "id=1",
            "nothing cached, so Set-Cookie goes through"
        );
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 5, "every one reached the origin");
    assert!(
        seen.iter()
            .all(|s| &s.body[..] == b"payload" && s.target == "/api?x=1")
    );
    assert!(seen.iter().all(|s| s.headers.get("x-custom").is_some()));
    edge.get("/api").await;
    assert_eq!(origin.total(), 6, "a POST never fills the cache");
}
