//! HTTP caching requirements of RFC 9111, RFC 9110 and RFC 9213, one test each, with a real
//! client against the real binary and a real origin; and CloudFront's defaults where they
//! deliberately differ, next to the setting that chooses the RFC (see edge/README.md).
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Edge, Origin, Reply, base_config, raw};
use http::Method;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// The configuration the public conformance suite is run with: TTLs 0/0/1 year, every query
/// string in the key, every method allowed.
fn rfc_config(origin: &Origin) -> Value {
    let mut config = base_config(&origin.url());
    config["defaultBehavior"] = json!({
        "targetOrigin": "origin",
        "minTtl": 0,
        "defaultTtl": 0,
        "maxTtl": 31_536_000,
        "cacheKey": {"queryStrings": "all"},
        "allowedMethods": ["GET", "HEAD", "OPTIONS", "PUT", "POST", "PATCH", "DELETE"],
    });
    config
}

fn http_date(offset_seconds: i64) -> String {
    let now = std::time::SystemTime::now();
    let at = if offset_seconds >= 0 {
        now + Duration::from_secs(offset_seconds as u64)
    } else {
        now - Duration::from_secs(offset_seconds.unsigned_abs())
    };
    httpdate::fmt_http_date(at)
}

/// Fetches a path twice and says whether the second answer came from the cache.
async fn reused(edge: &Edge, origin: &Origin, path: &str) -> bool {
    edge.get(path).await;
    edge.get(path).await;
    origin.hits(path) == 1
}

// RFC 9111 §4.2 and §4.2.1: a response whose freshness lifetime has passed is stale and not reused
// without validation. CloudFront's error caching keeps errors for at least errorCachingMinTtl;
// `errorCaching: origin` makes the origin's explicit freshness win.
#[tokio::test(flavor = "multi_thread")]
async fn error_responses_follow_the_origins_freshness_with_error_caching_origin() {
    let origin = Origin::start().await;
    let past = http_date(-3_600);
    origin.route(
        "/gone-stale",
        Reply::status(503, "busy")
            .header("expires", &past)
            .header("date", &http_date(0)),
    );
    let modified = http_date(-86_400);
    for status in [403, 502, 503, 504] {
        origin.route(
            &format!("/lm-{status}"),
            Reply::status(status, "error").header("last-modified", &modified),
        );
    }
    origin.route(
        "/lm-404",
        Reply::status(404, "missing").header("last-modified", &modified),
    );

    let mut config = rfc_config(&origin);
    config["defaultBehavior"]["errorCaching"] = json!("origin");
    let edge = Edge::start(config).await;
    assert!(
        !reused(&edge, &origin, "/gone-stale").await,
        "already stale: not reused"
    );
    for status in [403, 502, 503, 504] {
        assert!(
            !reused(&edge, &origin, &format!("/lm-{status}")).await,
            "{status} with only Last-Modified is not heuristically cacheable"
        );
    }
    assert!(
        reused(&edge, &origin, "/lm-404").await,
        "404 may be reused heuristically"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn error_caching_keeps_cloudfronts_minimum_by_default() {
    let origin = Origin::start().await;
    origin.route(
        "/gone-stale",
        Reply::status(503, "busy")
            .header("expires", &http_date(-3_600))
            .header("date", &http_date(0)),
    );
    let edge = Edge::start(rfc_config(&origin)).await;
    assert!(
        reused(&edge, &origin, "/gone-stale").await,
        "cached for errorCachingMinTtl"
    );
}

// RFC 9111 §4.4: a non-error response to an unsafe method invalidates the target URI, and the
// URIs in Location and Content-Location on the same host.
#[tokio::test(flavor = "multi_thread")]
async fn successful_unsafe_requests_invalidate_the_target_and_its_locations() {
    let origin = Origin::start().await;
    for path in ["/items", "/items/7", "/items/7/summary", "/elsewhere"] {
        origin.route(
            path,
            Reply::ok(format!("{path} v1")).header("cache-control", "max-age=600"),
        );
    }
    let edge = Edge::start(rfc_config(&origin)).await;
    for path in ["/items?page=1", "/items/7", "/items/7/summary", "/elsewhere"] {
        edge.get(path).await;
        assert_eq!(edge.get(path).await.x_cache(), "Hit from edgefleet", "{path}");
    }
    origin.route(
        "/items",
        Reply::status(201, "created")
            .header("location", "/items/7")
            .header(
                "content-location",
                &format!("http://{}/items/7/summary", edge.data),
            ),
    );
    let posted = edge
        .request(Method::POST, "/items?page=1", &[], Bytes::from_static(b"{}"))
        .await;
    assert_eq!(posted.status, 201);
    for path in ["/items?page=1", "/items/7", "/items/7/summary"] {
        assert_eq!(
            edge.get(path).await.x_cache(),
            "Miss from edgefleet",
            "{path} invalidated"
        );
    }
    assert_eq!(
        edge.get("/elsewhere").await.x_cache(),
        "Hit from edgefleet",
        "other URIs stay"
    );

    // An error answer invalidates nothing.
    origin.route("/items/7", Reply::status(409, "conflict"));
    edge.get("/items/7/summary").await;
    edge.request(Method::DELETE, "/items/7", &[], Bytes::new()).await;
    assert_eq!(edge.get("/items/7/summary").await.x_cache(), "Hit from edgefleet");
}

// RFC 9111 §5.1: an Age list counts its first member.
#[tokio::test(flavor = "multi_thread")]
async fn an_age_list_counts_its_first_member() {
    let origin = Origin::start().await;
    origin.route(
        "/aged",
        Reply::ok("old")
            .header("cache-control", "max-age=3600")
            .header("age", "7200, 0"),
    );
    origin.route(
        "/young",
        Reply::ok("new")
            .header("cache-control", "max-age=3600")
            .header("age", "0, 7200"),
    );
    let edge = Edge::start(rfc_config(&origin)).await;
    let first = edge.get("/aged").await;
    let age: u64 = first.header("age").parse().expect("an Age header");
    assert!(age >= 7200, "the age sent on is the first member's: {age}");
    assert!(
        !reused(&edge, &origin, "/aged").await,
        "7200 s old with max-age 3600 is stale"
    );
    assert!(reused(&edge, &origin, "/young").await);
}

// RFC 9213 §2.1: CDN-Cache-Control takes precedence over Cache-Control (and Expires) for the
// edge; private, no-store, no-cache and max-age in it are honoured; an invalid one is ignored.
#[tokio::test(flavor = "multi_thread")]
async fn cdn_cache_control_takes_precedence_over_cache_control() {
    let origin = Origin::start().await;
    let cases = [
        ("/cdn-fresh", "no-store", "max-age=600", true),
        ("/cdn-no-store", "max-age=600", "no-store", false),
        ("/cdn-private", "max-age=600", "private", false),
        ("/cdn-no-cache", "max-age=600", "no-cache", false),
        ("/cdn-zero", "max-age=600", "max-age=0", false),
        ("/cdn-invalid", "no-store", "max-age=\"600\"", false),
    ];
    for (path, cache_control, cdn, _) in cases {
        origin.route(
            path,
            Reply::ok(path)
                .header("cache-control", cache_control)
                .header("expires", &http_date(600))
                .header("cdn-cache-control", cdn),
        );
    }
    let edge = Edge::start(rfc_config(&origin)).await;
    for (path, cache_control, cdn, expected) in cases {
        assert_eq!(
            reused(&edge, &origin, path).await,
            expected,
            "Cache-Control: {cache_control}, CDN-Cache-Control: {cdn}"
        );
    }
    assert_eq!(
        edge.get("/cdn-fresh").await.header("cdn-cache-control"),
        "max-age=600",
        "passed on"
    );
}

// RFC 9111 §3: any final status may be stored when the response has explicit freshness.
#[tokio::test(flavor = "multi_thread")]
async fn any_status_with_explicit_freshness_is_reused() {
    let origin = Origin::start().await;
    for status in [302, 307, 410] {
        origin.route(
            &format!("/s{status}"),
            Reply::status(status, "moved")
                .header("cache-control", "max-age=600")
                .header("location", "/target"),
        );
        origin.route(
            &format!("/plain{status}"),
            Reply::status(status, "moved").header("location", "/target"),
        );
    }
    let edge = Edge::start(rfc_config(&origin)).await;
    for status in [302, 307, 410] {
        assert!(
            reused(&edge, &origin, &format!("/s{status}")).await,
            "{status} with max-age"
        );
    }
    for status in [302, 307] {
        assert!(
            !reused(&edge, &origin, &format!("/plain{status}")).await,
            "{status} without freshness"
        );
    }
}

/// An origin that sends `interim` (raw 1xx heads) before a 200 on every connection.
async fn interim_origin(interim: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "{interim}HTTP/1.1 200 OK\r\ncache-control: max-age=600\r\ncontent-length: 5\r\n\r\nfinal"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

// RFC 9110 §15.2: a proxy forwards 1xx responses (other than 100 Continue it handles itself and
// 101) to HTTP/1.1 viewers.
#[tokio::test(flavor = "multi_thread")]
async fn interim_responses_reach_the_viewer() {
    let addr =
        interim_origin("HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n").await;
    let mut config = base_config(&format!("http://{addr}"));
    config["defaultBehavior"]["allowedMethods"] = json!(["GET", "HEAD", "POST"]);
    let edge = Edge::start(config).await;
    for (method, path) in [("GET", "/page"), ("POST", "/form")] {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: example.com\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        let answer = raw(edge.data, request.as_bytes(), Duration::from_secs(10)).await;
        let hints = answer
            .find("HTTP/1.1 103 Early Hints")
            .unwrap_or_else(|| panic!("{method}: no 103 in {answer:?}"));
        let final_head = answer.find("HTTP/1.1 200").expect("a final response");
        assert!(hints < final_head, "{answer}");
        assert!(
            answer[hints..final_head].contains("</style.css>; rel=preload"),
            "{answer}"
        );
        assert!(answer.ends_with("final"), "{answer}");
    }
    // A cached answer has no interim response to repeat.
    let again = raw(
        edge.data,
        b"GET /page HTTP/1.1\r\nhost: example.com\r\nconnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    let old = raw(
        edge.data,
        b"GET /other HTTP/1.0\r\nhost: example.com\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(!old.contains(" 103 "), "never to HTTP/1.0 viewers: {old}");
}

// RFC 9111 §3 and §7.3 (Set-Cookie in a shared cache): the viewer whose request fetched a
// response that sets a cookie gets the cookie; no other viewer is served that response from cache,
// unless the behavior stores such responses, and then without the cookie.
#[tokio::test(flavor = "multi_thread")]
async fn set_cookie_reaches_its_viewer_and_no_other() {
    let origin = Origin::start().await;
    origin.route(
        "/login",
        Reply::ok("welcome")
            .header("cache-control", "max-age=600")
            .header("set-cookie", "session=fresh-secret"),
    );
    for cookies in [json!("none"), json!("all")] {
        let mut config = rfc_config(&origin);
        config["defaultBehavior"]["cacheKey"]["cookies"] = cookies.clone();
        let edge = Edge::start(config).await;
        let before = origin.hits("/login");
        let first = edge.get("/login").await;
        assert_eq!(
            first.header("set-cookie"),
            "session=fresh-secret",
            "cookies {cookies}"
        );
        let second = edge.get("/login").await;
        assert_eq!(
            second.header("set-cookie"),
            "session=fresh-secret",
            "a fresh fetch, its own cookie"
        );
        assert_eq!(
            origin.hits("/login") - before,
            2,
            "never served from cache (cookies {cookies})"
        );
    }

    let mut config = rfc_config(&origin);
    config["defaultBehavior"]["cacheSetCookieResponses"] = json!(true);
    let edge = Edge::start(config).await;
    let before = origin.hits("/login");
    assert_eq!(
        edge.get("/login").await.header("set-cookie"),
        "session=fresh-secret"
    );
    let cached = edge.get("/login").await;
    assert_eq!(cached.x_cache(), "Hit from edgefleet");
    assert!(
        !cached.headers.contains_key("set-cookie"),
        "the stored copy has no cookie"
    );
    assert_eq!(origin.hits("/login") - before, 1);
}

// Cache-Status (RFC 9211), when asked: what the edge did and why it did not store.
#[tokio::test(flavor = "multi_thread")]
async fn cache_status_says_why_a_response_was_not_stored() {
    let origin = Origin::start().await;
    origin.route(
        "/private",
        Reply::ok("mine").header("cache-control", "private, max-age=60"),
    );
    origin.route("/shared", Reply::ok("ours").header("cache-control", "max-age=60"));
    let edge = Edge::start(rfc_config(&origin)).await;
    let debug = [("x-edgefleet-debug", "cache")];
    let private = edge.get_with("/private", &debug).await;
    assert_eq!(
        private.header("cache-status"),
        "edgefleet; fwd=miss; fwd-status=200; detail=\"no-store: private\""
    );
    assert_eq!(
        edge.get_with("/shared", &debug).await.header("cache-status"),
        "edgefleet; fwd=miss; fwd-status=200; stored"
    );
    assert_eq!(
        edge.get_with("/shared", &debug).await.header("cache-status"),
        "edgefleet; hit"
    );
    assert!(
        !edge.get("/shared").await.headers.contains_key("cache-status"),
        "only when asked"
    );
    let metrics = edge.admin(Method::GET, "/metrics", None).await.text();
    assert!(
        metrics.contains("edgefleet_edge_cache_admissions_total{decision=\"no-store\",reason=\"private\"} 1"),
        "{metrics}"
    );
}

// RFC 9111 §5.2.1: request directives. CloudFront ignores them (the default); `viewerCacheControl:
// honor` follows the RFC.
#[tokio::test(flavor = "multi_thread")]
async fn viewer_cache_control_counts_only_when_the_behavior_honours_it() {
    let origin = Origin::start().await;
    origin.route(
        "/page",
        Reply::ok("page")
            .header("cache-control", "max-age=600")
            .header("etag", "\"p1\""),
    );
    origin.route(
        "/private-copy",
        Reply::ok("copy").header("cache-control", "max-age=600"),
    );
    let edge = Edge::start(rfc_config(&origin)).await;
    edge.get("/page").await;
    for asked in [
        ("cache-control", "no-cache"),
        ("cache-control", "max-age=0"),
        ("pragma", "no-cache"),
    ] {
        assert_eq!(
            edge.get_with("/page", &[asked]).await.x_cache(),
            "Hit from edgefleet",
            "{asked:?} ignored"
        );
    }
    assert_eq!(origin.hits("/page"), 1);

    let mut config = rfc_config(&origin);
    config["defaultBehavior"]["viewerCacheControl"] = json!("honor");
    let edge = Edge::start(config).await;
    edge.get("/page").await;
    let before = origin.hits("/page");
    for asked in [
        ("cache-control", "no-cache"),
        ("cache-control", "max-age=0"),
        ("pragma", "no-cache"),
    ] {
        let r = edge.get_with("/page", &[asked]).await;
        assert_eq!(r.x_cache(), "RefreshHit from edgefleet", "{asked:?}: revalidated");
    }
    assert_eq!(origin.hits("/page") - before, 3);
    assert!(
        origin
            .seen()
            .iter()
            .rev()
            .take(3)
            .all(|s| s.headers.get("if-none-match").is_some()),
        "revalidated with the stored validator"
    );
    assert_eq!(
        edge.get("/page").await.x_cache(),
        "Hit from edgefleet",
        "still stored"
    );

    let uncached = edge
        .get_with("/private-copy", &[("cache-control", "no-store")])
        .await;
    assert_eq!(uncached.text(), "copy");
    assert_eq!(
        edge.get("/private-copy").await.x_cache(),
        "Miss from edgefleet",
        "no-store: not stored"
    );
    let only = edge
        .get_with("/never-asked", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(only.status, 504);
    assert_eq!(origin.hits("/never-asked"), 0);
}
