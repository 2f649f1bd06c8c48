//! The admin API: authentication, invalidations, metrics, reloads, and graceful shutdown.
mod common;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use common::{BodyMode, Edge, Origin, Reply, TOKEN, base_config, client, eventually};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::sync::Notify;

fn cached(origin: &Origin, path: &str) {
    origin.route(
        path,
        Reply::ok(format!("body of {path}")).header("cache-control", "max-age=600"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_health_and_readiness_are_open() {
    let origin = Origin::start().await;
    let edge = Edge::start(base_config(&origin.url())).await;
    for path in ["/healthz", "/readyz"] {
        let r = edge
            .admin_request(Method::GET, path, None, false)
            .await
            .expect("probe");
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    for (method, path) in [
        (Method::GET, "/metrics"),
        (Method::POST, "/invalidations"),
        (Method::POST, "/reload"),
        (Method::GET, "/status"),
    ] {
        let r = edge
            .admin_request(method.clone(), path, None, false)
            .await
            .expect("request");
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
        assert!(r.header("www-authenticate").starts_with("Bearer"));
    }
    let wrong = common::send(
        &client(),
        Method::GET,
        &format!("http://{}/metrics", edge.admin),
        &[("authorization", "Bearer not-the-token")],
        Bytes::new(),
    )
    .await
    .expect("request");
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        edge.admin(Method::GET, "/metrics", None).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalidation_removes_exact_paths_and_prefixes_only() {
    let origin = Origin::start().await;
    for path in ["/a", "/b", "/img/1.png", "/img/2.png", "/imgx"] {
        cached(&origin, path);
    }
    let edge = Edge::start(base_config(&origin.url())).await;
    for path in ["/a", "/b", "/img/1.png", "/img/2.png", "/imgx"] {
        edge.get(path).await;
    }
    let r = edge.invalidate("first", &["/a", "/img/*"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(body["status"], "Completed");
    assert_eq!(body["purged"]["objects"], 3);
    for (path, expect) in [
        ("/a", "Miss"),
        ("/img/1.png", "Miss"),
        ("/img/2.png", "Miss"),
        ("/b", "Hit"),
        ("/imgx", "Hit"),
    ] {
        assert!(
            edge.get(path).await.x_cache().starts_with(expect),
            "{path} should be a {expect}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalidation_reaches_every_variant() {
    let origin = Origin::start().await;
    let page = |version: &str| {
        Reply::ok(format!("{version} ").repeat(300))
            .header("content-type", "text/plain")
            .header("cache-control", "max-age=600")
            .vary_echo("x-variant")
    };
    origin.route("/page", page("v1"));
    let mut config = base_config(&origin.url());
    config["defaultBehavior"]["compress"] = json!(true);
    let edge = Edge::start(config).await;
    let variants: [&[(&str, &str)]; 3] = [
        &[("x-variant", "a")],
        &[("x-variant", "b")],
        &[("x-variant", "a"), ("accept-encoding", "gzip")],
    ];
    let text = |r: &common::Resp| {
        if r.header("content-encoding") == "gzip" {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut out)
                .expect("gunzip");
            out
        } else {
            r.text()
        }
    };
    for headers in variants {
        edge.get_with("/page", headers).await;
        let again = edge.get_with("/page", headers).await;
        assert!(again.x_cache().starts_with("Hit"));
        assert!(text(&again).starts_with("v1"));
    }
    origin.route("/page", page("v2"));
    edge.invalidate("variants", &["/page"]).await;
    for headers in variants {
        let r = edge.get_with("/page", headers).await;
        assert!(
            text(&r).starts_with("v2"),
            "{headers:?} still served the purged v1"
        );
    }
    assert_eq!(
        origin.hits("/page"),
        4,
        "two header variants fetched twice; the gzip variant is made from variant a"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalidations_are_idempotent_by_id() {
    let origin = Origin::start().await;
    cached(&origin, "/x");
    let edge = Edge::start(base_config(&origin.url())).await;
    edge.get("/x").await;
    let first = edge.invalidate("release-1", &["/x"]).await;
    edge.get("/x").await; // refilled after the purge
    assert!(edge.get("/x").await.x_cache().starts_with("Hit"));
    let again = edge.invalidate("release-1", &["/x"]).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body, "the recorded result, not a new purge");
    assert!(
        edge.get("/x").await.x_cache().starts_with("Hit"),
        "not purged a second time"
    );
    let conflict = edge.invalidate("release-1", &["/y"]).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    let shown = edge.admin(Method::GET, "/invalidations/release-1", None).await;
    assert_eq!(shown.body, first.body);
    assert_eq!(
        edge.admin(Method::GET, "/invalidations/unknown", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalidation_paths_are_validated() {
    let origin = Origin::start().await;
    let edge = Edge::start(base_config(&origin.url())).await;
    let wildcards: Vec<String> = (0..16).map(|i| format!("/w{i}/*")).collect();
    let wildcards: Vec<&str> = wildcards.iter().map(String::as_str).collect();
    for (paths, why) in [
        (vec!["no-slash"], "must start with /"),
        (vec!["/a*b"], "last character"),
        (vec![], "1 to 3000"),
        (wildcards, "wildcard"),
    ] {
        let r = edge.invalidate("bad", &paths).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{paths:?}");
        assert!(r.text().contains(why), "{} should mention {why}", r.text());
    }
    let malformed = edge
        .admin(Method::POST, "/invalidations", Some(json!({"paths": ["/a"]})))
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fill_in_progress_during_a_purge_is_not_stored() {
    let origin = Origin::start().await;
    let gate = Arc::new(Notify::new());
    origin.route(
        "/filling",
        Reply::ok(vec![5u8; 100_000])
            .header("cache-control", "max-age=600")
            .mode(BodyMode::Gated(1000, gate.clone())),
    );
    let edge = Edge::start(base_config(&origin.url())).await;
    let client = client();
    let request = Request::get(edge.url("/filling"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let mut response = client.request(request).await.expect("head");
    response.body_mut().frame().await.expect("frame").expect("data");
    origin.route(
        "/filling",
        Reply::ok(vec![6u8; 100_000]).header("cache-control", "max-age=600"),
    );
    let purge = edge.invalidate("mid-fill", &["/filling"]).await;
    let purged: Value = serde_json::from_slice(&purge.body).expect("json");
    assert_eq!(purged["purged"]["fills"], 1, "{purged}");
    gate.notify_one();
    let rest = response.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(
        rest.len(),
        99_000,
        "the viewer that started before the purge still gets its response"
    );
    let after = edge.get("/filling").await;
    assert!(
        after.x_cache().starts_with("Miss"),
        "the pre-purge fill was not stored"
    );
    assert_eq!(origin.hits("/filling"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_prometheus_text() {
    let origin = Origin::start().await;
    cached(&origin, "/m");
    let edge = Edge::start(base_config(&origin.url())).await;
    edge.get("/m").await;
    edge.get("/m").await;
    let text = edge.admin(Method::GET, "/metrics", None).await.text();
    for needle in [
        "edgefleet_edge_requests_total{status=\"200\",cache=\"Hit\"} 1",
        "edgefleet_edge_requests_total{status=\"200\",cache=\"Miss\"} 1",
        "edgefleet_edge_response_body_bytes_total",
        "edgefleet_edge_origin_request_duration_seconds_bucket{le=\"0.001\",origin=\"origin\"}",
        "edgefleet_edge_origin_requests_total{origin=\"origin\",outcome=\"200\"} 1",
        "edgefleet_edge_cache_bytes",
        "edgefleet_edge_cache_objects 1",
        "edgefleet_edge_cache_evictions_total",
        "edgefleet_edge_fills_in_flight 0",
        "# EOF",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn evictions_keep_memory_within_the_configured_bytes() {
    let origin = Origin::start().await;
    for i in 0..40 {
        cached(&origin, &format!("/obj{i}"));
        origin.route(
            &format!("/obj{i}"),
            Reply::ok(vec![i as u8; 256 * 1024]).header("cache-control", "max-age=600"),
        );
    }
    let mut config = base_config(&origin.url());
    config["cache"] = json!({"memoryBytes": 4 << 20, "maxObjectBytes": 512 * 1024});
    let edge = Edge::start(config).await;
    for i in 0..40 {
        assert_eq!(edge.get(&format!("/obj{i}")).await.body.len(), 256 * 1024);
    }
    let bytes = edge
        .metric("edgefleet_edge_cache_bytes ")
        .await
        .expect("cache bytes");
    assert!(bytes <= (4 << 20) as f64, "cache holds {bytes} bytes");
    assert!(
        edge.metric("edgefleet_edge_cache_evictions_total")
            .await
            .expect("evictions")
            > 0.0
    );
}

async fn generation(edge: &Edge) -> u64 {
    let status: Value =
        serde_json::from_slice(&edge.admin(Method::GET, "/status", None).await.body).expect("status json");
    status["generation"].as_u64().expect("generation")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_config_file_applies_without_emptying_the_cache() {
    let origin = Origin::start().await;
    cached(&origin, "/kept");
    origin.route("/ttl", Reply::ok("no cache-control: default TTL"));
    let config = base_config(&origin.url());
    let edge = Edge::start(config.clone()).await;
    edge.get("/kept").await;
    edge.get("/ttl").await;
    assert!(edge.get("/ttl").await.x_cache().starts_with("Hit"));

    let mut changed = config.clone();
    changed["defaultBehavior"]["defaultTtl"] = json!(1);
    edge.rewrite_config(changed);
    eventually(
        Duration::from_secs(5),
        "the file change is picked up",
        async || generation(&edge).await == 2,
    )
    .await;
    assert!(
        edge.get("/kept").await.x_cache().starts_with("Hit"),
        "cache kept across the reload"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    edge.get("/ttl").await;
    assert_eq!(
        origin.hits("/ttl"),
        2,
        "the new default TTL applies to the cached object"
    );
    assert_eq!(origin.hits("/kept"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_and_the_reload_endpoint_reload_and_bad_configs_are_refused() {
    let origin = Origin::start().await;
    let config = base_config(&origin.url());
    let edge = Edge::start(config.clone()).await;
    edge.signal("HUP");
    eventually(Duration::from_secs(5), "SIGHUP reload", async || {
        generation(&edge).await >= 2
    })
    .await;
    let r = edge.admin(Method::POST, "/reload", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let reloaded: Value = serde_json::from_slice(&r.body).expect("json");
    assert!(reloaded["generation"].as_u64().expect("generation") >= 3);

    let mut broken = config.clone();
    broken["defaultBehavior"]["targetOrigin"] = json!("nowhere");
    edge.rewrite_config(broken);
    let refused = edge.admin(Method::POST, "/reload", None).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.text().contains("nowhere"), "{}", refused.text());
    origin.route("/still", Reply::ok("served by the old config"));
    assert_eq!(edge.get("/still").await.text(), "served by the old config");
    assert!(
        edge.metric("edgefleet_edge_config_reloads_total{result=\"rejected\"}")
            .await
            .expect("metric")
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_admin_token_takes_effect() {
    let origin = Origin::start().await;
    let edge = Edge::start(base_config(&origin.url())).await;
    std::fs::write(edge.dir.path().join("token"), "rotated-token").expect("rotate");
    eventually(
        Duration::from_secs(5),
        "the old token stops working",
        async || {
            edge.admin_request(Method::GET, "/status", None, true)
                .await
                .expect("request")
                .status
                == StatusCode::UNAUTHORIZED
        },
    )
    .await;
    let r = common::send(
        &client(),
        Method::GET,
        &format!("http://{}/status", edge.admin),
        &[("authorization", "Bearer rotated-token")],
        Bytes::new(),
    )
    .await
    .expect("request");
    assert_eq!(r.status, StatusCode::OK);
    let _ = TOKEN;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_finishes_in_flight_requests_then_exits() {
    let origin = Origin::start().await;
    origin.route("/slow", Reply::ok("finished").delay(Duration::from_millis(1500)));
    let mut edge = Edge::start(base_config(&origin.url())).await;
    let url = edge.url("/slow");
    let in_flight =
        tokio::spawn(async move { common::send(&client(), Method::GET, &url, &[], Bytes::new()).await });
    eventually(
        Duration::from_secs(5),
        "the request reaches the origin",
        async || origin.hits("/slow") == 1,
    )
    .await;
    edge.signal("TERM");
    eventually(Duration::from_secs(5), "readiness turns off", async || {
        edge.admin_request(Method::GET, "/readyz", None, false)
            .await
            .is_ok_and(|r| r.status == StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    // Readiness turns off first, then the listener closes (an instant later, in its own task).
    let data = edge.data;
    eventually(
        Duration::from_secs(5),
        "no new connections while draining",
        async || tokio::net::TcpStream::connect(data).await.is_err(),
    )
    .await;
    let done = in_flight
        .await
        .expect("task")
        .expect("the in-flight request completes");
    assert_eq!(done.text(), "finished");
    let status = edge.wait_exit(Duration::from_secs(10)).await.expect("exits");
    assert!(status.success(), "{status}");
}
