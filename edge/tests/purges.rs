//! Purges are linearizable: once `POST /invalidations` has answered, no variant of content fetched
//! before it (encodings, query strings, spellings of the path, the default root object) is
//! served or stored by the edge, fills and compressions in flight included.
mod common;

use std::{sync::Arc, time::Duration};

use common::{BodyMode, Edge, Origin, Reply, base_config};
use serde_json::json;
use tokio::sync::Notify;

fn text(version: &str) -> String {
    format!("{version} ").repeat(2_000)
}

fn gunzip(bytes: &[u8]) -> String {
    use std::io::Read;
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut out)
        .expect("gzip body");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_purge_during_a_compressed_fill_leaves_no_old_compressed_variant() {
    let origin = Origin::start().await;
    let gate = Arc::new(Notify::new());
    let old = text("v1");
    origin.route(
        "/app.js",
        Reply::ok(old.clone())
            .header("content-type", "application/javascript")
            .header("cache-control", "max-age=600")
            .mode(BodyMode::Gated(1_000, gate.clone())),
    );
    let mut config = base_config(&origin.url());
    config["defaultBehavior"]["compress"] = json!(true);
    let edge = Arc::new(Edge::start(config).await);

    // A gzip viewer's miss: the fill streams, and compression waits for the whole body.
    let first = {
        let edge = edge.clone();
        tokio::spawn(async move { edge.get_with("/app.js", &[("accept-encoding", "gzip")]).await })
    };
    common::eventually(
        Duration::from_secs(10),
        "the fill reached the origin",
        async || origin.hits("/app.js") == 1,
    )
    .await;
    let purge = edge.invalidate("during-fill", &["/app.js"]).await;
    assert_eq!(purge.status, 200, "{}", purge.text());

    // The origin has new content; the old body completes only now, after the purge.
    origin.route(
        "/app.js",
        Reply::ok(text("v2"))
            .header("content-type", "application/javascript")
            .header("cache-control", "max-age=600"),
    );
    gate.notify_one();
    let first = first.await.expect("first viewer");
    assert_eq!(
        gunzip(&first.body),
        old,
        "the viewer waiting before the purge gets the old body"
    );

    for encoding in ["gzip", "identity"] {
        let after = edge.get_with("/app.js", &[("accept-encoding", encoding)]).await;
        let body = if encoding == "gzip" {
            gunzip(&after.body)
        } else {
            after.text()
        };
        assert_eq!(
            body,
            text("v2"),
            "{encoding} viewers after the purge get the new body"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn purging_the_root_path_purges_the_default_root_object() {
    let origin = Origin::start().await;
    origin.route(
        "/index.html",
        Reply::ok("home v1").header("cache-control", "max-age=600"),
    );
    let mut config = base_config(&origin.url());
    config["defaultRootObject"] = json!("index.html");
    let edge = Edge::start(config).await;
    edge.get("/").await;
    assert_eq!(edge.get("/").await.x_cache(), "Hit from edgefleet");

    origin.route(
        "/index.html",
        Reply::ok("home v2").header("cache-control", "max-age=600"),
    );
    let purge = edge.invalidate("root", &["/"]).await;
    assert_eq!(purge.status, 200, "{}", purge.text());
    assert_eq!(purge.json()["purged"]["objects"], 1, "{}", purge.text());
    let after = edge.get("/").await;
    assert_eq!(after.text(), "home v2");
    assert_eq!(after.x_cache(), "Miss from edgefleet");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_purge_matches_every_spelling_of_a_path() {
    let origin = Origin::start().await;
    origin.route("/gen/abc", Reply::ok("v1").header("cache-control", "max-age=600"));
    let edge = Edge::start(base_config(&origin.url())).await;
    assert_eq!(edge.get("/gen/abc").await.text(), "v1");
    assert_eq!(edge.get("/gen/%61bc").await.x_cache(), "Hit from edgefleet");

    origin.route("/gen/abc", Reply::ok("v2").header("cache-control", "max-age=600"));
    let purge = edge.invalidate("spelling", &["/gen/%61b%63"]).await;
    assert_eq!(purge.status, 200, "{}", purge.text());
    for spelling in ["/gen/abc", "/gen/%61bc", "/gen/a%62c"] {
        assert_eq!(edge.get(spelling).await.text(), "v2", "{spelling}");
    }
    assert_eq!(
        origin.hits("/gen/abc"),
        2,
        "one object for every spelling, fetched twice"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_fills_and_purges_never_serve_purged_content_afterwards() {
    // Every purge bumps the origin's version first; a viewer whose request starts after the
    // purge answered must never see an older version, whatever was in flight.
    let origin = Origin::start().await;
    let version = |v: u32| {
        Reply::ok(format!("version {v:06} ").repeat(300))
            .header("content-type", "text/plain")
            .header("cache-control", "max-age=600")
    };
    for path in ["/p/a", "/p/b"] {
        origin.route(path, version(0).delay(Duration::from_millis(5)));
    }
    let mut config = base_config(&origin.url());
    config["defaultBehavior"]["compress"] = json!(true);
    let edge = Arc::new(Edge::start(config).await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let floor = Arc::new(std::sync::atomic::AtomicU32::new(0));

    let mut viewers = Vec::new();
    for viewer in 0..6 {
        let (edge, stop, floor) = (edge.clone(), stop.clone(), floor.clone());
        viewers.push(tokio::spawn(async move {
            let mut checked = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let path = if viewer % 2 == 0 { "/p/a" } else { "/p/b" };
                let encoding = ["gzip", "br", "identity"][viewer % 3];
                let at_least = floor.load(std::sync::atomic::Ordering::SeqCst);
                let r = edge.get_with(path, &[("accept-encoding", encoding)]).await;
                let body = match r.header("content-encoding") {
                    "gzip" => gunzip(&r.body),
                    "br" => {
                        let mut out = Vec::new();
                        brotli::BrotliDecompress(&mut &r.body[..], &mut out).expect("br body");
                        String::from_utf8(out).expect("text")
                    }
                    _ => r.text(),
                };
                let seen: u32 = body[8..14].parse().expect("a version");
                assert!(
                    seen >= at_least,
                    "{path} ({encoding}): version {seen} after purge {at_least}"
                );
                checked += 1;
            }
            checked
        }));
    }
    for v in 1..=30u32 {
        for path in ["/p/a", "/p/b"] {
            origin.route(path, version(v).delay(Duration::from_millis(5)));
        }
        let purge = edge.invalidate(&format!("round-{v}"), &["/p/*"]).await;
        assert_eq!(purge.status, 200, "{}", purge.text());
        floor.store(v, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    for viewer in viewers {
        total += viewer.await.expect("a viewer saw only current content");
    }
    assert!(total > 60, "the viewers made {total} requests");
}
