//! The disk tier: objects survive a restart, purges survive it too.
mod common;

use std::time::Duration;

use common::{Edge, Origin, Reply, base_config};
use serde_json::json;

fn with_disk(origin: &Origin, disk: &std::path::Path) -> serde_json::Value {
    let mut config = base_config(&origin.url());
    config["cache"] = json!({"memoryBytes": 16 << 20, "disk": {"path": disk, "bytes": 64 << 20}});
    config
}

async fn restart(edge: Edge, config: serde_json::Value) -> Edge {
    let mut edge = edge;
    edge.signal("TERM");
    assert!(
        edge.wait_exit(Duration::from_secs(10))
            .await
            .is_some_and(|s| s.success()),
        "clean exit:\n{}",
        edge.log()
    );
    drop(edge);
    Edge::start(config).await
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_on_disk_survive_a_restart() {
    let origin = Origin::start().await;
    origin.route(
        "/kept",
        Reply::ok(vec![4u8; 100_000]).header("cache-control", "max-age=600"),
    );
    let disk = tempfile::tempdir().expect("disk dir");
    let config = with_disk(&origin, disk.path());
    let edge = Edge::start(config.clone()).await;
    edge.get("/kept").await;
    let edge = restart(edge, config).await;
    let r = edge.get("/kept").await;
    assert_eq!(r.body.len(), 100_000);
    assert!(
        r.x_cache().starts_with("Hit"),
        "served from the disk tier after the restart"
    );
    assert_eq!(origin.hits("/kept"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn purged_objects_do_not_come_back_from_disk() {
    let origin = Origin::start().await;
    origin.route("/old", Reply::ok("old").header("cache-control", "max-age=600"));
    origin.route(
        "/other",
        Reply::ok("other").header("cache-control", "max-age=600"),
    );
    let disk = tempfile::tempdir().expect("disk dir");
    let config = with_disk(&origin, disk.path());
    let edge = Edge::start(config.clone()).await;
    edge.get("/old").await;
    edge.get("/other").await;
    // Restart so the objects are only on disk, then purge: the purge must reach the disk tier.
    let edge = restart(edge, config.clone()).await;
    edge.invalidate("purge-disk", &["/old"]).await;
    // Tombstones have millisecond resolution and bury same-millisecond objects (the safe side).
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(edge.get("/old").await.x_cache().starts_with("Miss"));
    assert!(edge.get("/other").await.x_cache().starts_with("Hit"));
    // And the purge holds across another restart for anything stored before it.
    origin.route("/old", Reply::ok("new").header("cache-control", "max-age=600"));
    let edge = restart(edge, config).await;
    assert_eq!(
        edge.get("/old").await.text(),
        "old",
        "the refill after the purge is what is on disk now"
    );
    assert_eq!(origin.hits("/old"), 2);
}
