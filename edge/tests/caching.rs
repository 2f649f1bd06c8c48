//! Caching rules: hits and misses, behaviors, freshness, cache keys, Vary, response headers.
mod common;

use std::time::Duration;

use common::{Edge, Origin, Reply, base_config};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn miss_then_hit_with_the_edge_headers() {
    let origin = Origin::start().await;
    origin.route("/a.txt", Reply::ok("hello").header("cache-control", "max-age=60"));
    let edge = Edge::start(base_config(&origin.url())).await;

    let first = edge.get("/a.txt").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "hello");
    assert_eq!(first.x_cache(), "Miss from edgefleet");
    let second = edge.get("/a.txt").await;
    assert_eq!(second.text(), "hello");
    assert_eq!(second.x_cache(), "Hit from edgefleet");
    assert_eq!(second.header("x-edge-location"), "test-region");
    assert!(
        second.header("via").contains("(edgefleet)"),
        "via: {}",
        second.header("via")
    );
    assert!(second.headers.contains_key("age"));
    assert_eq!(origin.hits("/a.txt"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn region_comes_from_the_environment_when_set() {
    let origin = Origin::start().await;
    origin.route("/", Reply::ok("root"));
    let edge = Edge::start_with(
        base_config(&origin.url()),
        &[("EDGEFLEET_REGION", "eu-west")],
        None,
    )
    .await;
    assert_eq!(edge.get("/").await.header("x-edge-location"), "eu-west");
}

#[tokio::test(flavor = "multi_thread")]
async fn first_matching_behavior_wins() {
    let origin = Origin::start().await;
    for path in ["/api/users", "/api/static/logo", "/page"] {
        origin.route(path, Reply::ok(path.to_owned()));
    }
    let mut config = base_config(&origin.url());
    config["behaviors"] = json!([
        {"pathPattern": "/api/static/*", "targetOrigin": "origin"},
        {"pathPattern": "api/*", "targetOrigin": "origin", "defaultTtl": 0, "maxTtl": 0},
    ]);
    let edge = Edge::start(config).await;
    for _ in 0..2 {
        edge.get("/api/users").await;
        edge.get("/api/static/logo").await;
        edge.get("/page").await;
    }
    assert_eq!(
        origin.hits("/api/users"),
        2,
        "api/* has TTL 0 and no validator: never cached"
    );
    assert_eq!(
        origin.hits("/api/static/logo"),
        1,
        "the earlier, more specific behavior wins"
    );
    assert_eq!(origin.hits("/page"), 1, "default behavior: default TTL");
}

#[tokio::test(flavor = "multi_thread")]
async fn freshness_follows_s_maxage_then_max_age_then_expires() {
    let origin = Origin::start().await;
    origin.route(
        "/s",
        Reply::ok("s").header("cache-control", "max-age=100, s-maxage=1"),
    );
    origin.route("/m", Reply::ok("m").header("cache-control", "max-age=1"));
    let expires = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(2));
    origin.route("/e", Reply::ok("e").header("expires", &expires));
    origin.route("/long", Reply::ok("l").header("cache-control", "max-age=100"));
    let edge = Edge::start(base_config(&origin.url())).await;
    for path in ["/s", "/m", "/e", "/long"] {
        edge.get(path).await;
        assert!(edge.get(path).await.x_cache().starts_with("Hit"), "{path} cached");
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for path in ["/s", "/m", "/e"] {
        edge.get(path).await;
        assert_eq!(origin.hits(path), 2, "{path} expired after its lifetime");
    }
    edge.get("/long").await;
    assert_eq!(origin.hits("/long"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn ttls_are_clamped_and_min_ttl_overrides_no_store() {
    let origin = Origin::start().await;
    origin.route("/nostore", Reply::ok("n").header("cache-control", "no-store"));
    origin.route(
        "/private",
        Reply::ok("p").header("cache-control", "private, max-age=600"),
    );
    origin.route(
        "/forced/nostore",
        Reply::ok("f").header("cache-control", "no-store"),
    );
    origin.route(
        "/capped/long",
        Reply::ok("c").header("cache-control", "max-age=600"),
    );
    let mut config = base_config(&origin.url());
    config["behaviors"] = json!([
        {"pathPattern": "/forced/*", "targetOrigin": "origin", "minTtl": 60},
        {"pathPattern": "/capped/*", "targetOrigin": "origin", "maxTtl": 1, "defaultTtl": 1},
    ]);
    let edge = Edge::start(config).await;
    for path in ["/nostore", "/private", "/forced/nostore", "/capped/long"] {
        edge.get(path).await;
        edge.get(path).await;
    }
    assert_eq!(
        origin.hits("/nostore"),
        2,
        "no-store with min TTL 0 is not cached"
    );
    assert_eq!(origin.hits("/private"), 2, "private with min TTL 0 is not cached");
    assert_eq!(
        origin.hits("/forced/nostore"),
        1,
        "min TTL > 0 caches even no-store"
    );
    assert_eq!(origin.hits("/capped/long"), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    edge.get("/capped/long").await;
    assert_eq!(origin.hits("/capped/long"), 2, "max TTL 1 caps max-age=600");
}

#[tokio::test(flavor = "multi_thread")]
async fn age_from_upstream_counts_against_freshness() {
    let origin = Origin::start().await;
    origin.route(
        "/aged",
        Reply::ok("a")
            .header("cache-control", "max-age=60")
            .header("age", "59"),
    );
    let edge = Edge::start(base_config(&origin.url())).await;
    let first = edge.get("/aged").await;
    assert_eq!(first.header("age"), "59");
    assert!(edge.get("/aged").await.x_cache().starts_with("Hit"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    edge.get("/aged").await;
    assert_eq!(
        origin.hits("/aged"),
        2,
        "59 s old with max-age=60 expires a second later"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_key_selects_query_headers_and_cookies() {
    let origin = Origin::start().await;
    origin.route("/none", Reply::ok("n"));
    origin.route("/q", Reply::ok("q"));
    origin.route("/h", Reply::ok("h"));
    origin.route("/c", Reply::ok("c"));
    let mut config = base_config(&origin.url());
    config["behaviors"] = json!([
        {"pathPattern": "/q", "targetOrigin": "origin", "cacheKey": {"queryStrings": {"allowList": ["a", "b"]}}},
        {"pathPattern": "/h", "targetOrigin": "origin", "cacheKey": {"headers": {"allowList": ["X-Tenant"]}}},
        {"pathPattern": "/c", "targetOrigin": "origin", "cacheKey": {"cookies": {"allowList": ["lang"]}}},
    ]);
    let edge = Edge::start(config).await;

    edge.get("/none?a=1").await;
    edge.get("/none?a=2").await;
    assert_eq!(origin.hits("/none"), 1, "query strings not keyed by default");
    assert_eq!(origin.seen()[0].target, "/none", "and not forwarded");

    edge.get("/q?b=2&a=1&utm=x").await;
    edge.get("/q?a=1&b=2&utm=y").await;
    assert_eq!(
        origin.hits("/q"),
        1,
        "order normalized, unlisted parameters ignored"
    );
    edge.get("/q?a=1&b=3").await;
    assert_eq!(origin.hits("/q"), 2);
    assert!(
        origin.seen().iter().any(|s| s.target == "/q?a=1&b=2"),
        "only keyed parameters are forwarded"
    );

    edge.get_with("/h", &[("x-tenant", "one")]).await;
    edge.get_with("/h", &[("X-TENANT", "one")]).await;
    edge.get_with("/h", &[("x-tenant", "two")]).await;
    assert_eq!(origin.hits("/h"), 2);

    edge.get_with("/c", &[("cookie", "lang=de; session=1")]).await;
    edge.get_with("/c", &[("cookie", "session=2; lang=de")]).await;
    edge.get_with("/c", &[("cookie", "lang=fr")]).await;
    assert_eq!(origin.hits("/c"), 2);
    let forwarded = origin
        .seen()
        .into_iter()
        .find(|s| s.target == "/c")
        .expect("seen /c");
    assert_eq!(
        forwarded.headers.get("cookie").map(|v| v.to_str().unwrap_or("")),
        Some("lang=de")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn vary_keeps_variants_apart() {
    let origin = Origin::start().await;
    origin.route(
        "/greeting",
        Reply::ok("hello-")
            .header("cache-control", "max-age=60")
            .vary_echo("accept-language"),
    );
    let edge = Edge::start(base_config(&origin.url())).await;
    let de = edge.get_with("/greeting", &[("accept-language", "de")]).await;
    let fr = edge.get_with("/greeting", &[("accept-language", "fr")]).await;
    assert_eq!(de.text(), "hello-de");
    assert_eq!(fr.text(), "hello-fr");
    let de2 = edge.get_with("/greeting", &[("accept-language", "de")]).await;
    let fr2 = edge.get_with("/greeting", &[("accept-language", "fr")]).await;
    assert_eq!(
        (de2.text().as_str(), fr2.text().as_str()),
        ("hello-de", "hello-fr")
    );
    assert!(de2.x_cache().starts_with("Hit") && fr2.x_cache().starts_with("Hit"));
    assert_eq!(origin.hits("/greeting"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn equivalent_url_spellings_share_one_object() {
    let origin = Origin::start().await;
    origin.route(
        "/gen/abc",
        Reply::ok("one object").header("cache-control", "max-age=600"),
    );
    origin.route("/q", Reply::ok("by query").header("cache-control", "max-age=600"));
    origin.route(
        "/a%2Fb",
        Reply::ok("encoded slash").header("cache-control", "max-age=600"),
    );
    let mut config = base_config(&origin.url());
    config["defaultBehavior"]["cacheKey"] = json!({"queryStrings": "all"});
    let edge = Edge::start(config).await;
    for spelling in ["/gen/abc", "/gen/%61bc", "/gen/%61%62%63", "/%67en/abc"] {
        assert_eq!(edge.get(spelling).await.text(), "one object", "{spelling}");
    }
    assert_eq!(
        origin.hits("/gen/abc"),
        1,
        "every spelling is one key: {:?}",
        origin.seen()
    );
    assert!(
        origin.seen().iter().all(|s| s.target != "/gen/%61bc"),
        "the origin sees one spelling"
    );
    for spelling in ["/q?name=%7Euser", "/q?name=~user", "/q?name=%7euser"] {
        assert_eq!(edge.get(spelling).await.text(), "by query", "{spelling}");
    }
    assert_eq!(origin.hits("/q"), 1);
    // Reserved characters keep their encoding: `%2F` is not `/`.
    assert_eq!(edge.get("/a%2fb").await.text(), "encoded slash");
    assert_eq!(edge.get("/a%2Fb").await.x_cache(), "Hit from edgefleet");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ordered_catch_all_behavior_matches_everything() {
    let origin = Origin::start().await;
    origin.route("/any/path", Reply::ok("x"));
    let mut config = base_config(&origin.url());
    config["behaviors"] =
        json!([{"pathPattern": "*", "targetOrigin": "origin", "defaultTtl": 0, "maxTtl": 0}]);
    let edge = Edge::start(config).await;
    edge.get("/any/path").await;
    edge.get("/any/path").await;
    assert_eq!(
        origin.hits("/any/path"),
        2,
        "the `*` behavior (TTL 0) wins over the default"
    );
}
