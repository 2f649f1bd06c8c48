//! Origin shield: edges outside the shield region fetch through the shield region's edge, so the
//! origin sees one fetch per object however many regions ask.
mod common;

use common::{Edge, Origin, Reply, base_config};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn regions_fetch_through_the_shield() {
    let origin = Origin::start().await;
    origin.route(
        "/asset.js",
        Reply::ok("console.log(1)").header("cache-control", "max-age=600"),
    );
    let mut config = base_config(&origin.url());
    config["aliases"] = json!(["cdn.example.com"]);

    // The shield's address is part of the one configuration every region shares.
    let shield_dir = tempfile::tempdir().expect("dir");
    let (shield_config, shield_data, shield_admin) = Edge::prepare(config.clone(), &shield_dir);
    let shared = |mut c: serde_json::Value| {
        c["originShield"] = json!({"region": "us-east", "url": format!("http://{shield_data}")});
        c
    };
    let config_path = shield_dir.path().join("edge.yaml");
    std::fs::write(
        &config_path,
        serde_json::to_vec(&shared(shield_config)).expect("json"),
    )
    .expect("write");
    let args = vec!["--config".to_owned(), config_path.to_string_lossy().into_owned()];
    let shield = Edge::spawn(
        &args,
        &[("EDGEFLEET_REGION", "us-east")],
        shield_dir,
        shield_data,
        shield_admin,
    )
    .await;
    let eu = Edge::start_with(shared(config.clone()), &[("EDGEFLEET_REGION", "eu-west")], None).await;
    let ap = Edge::start_with(shared(config), &[("EDGEFLEET_REGION", "ap-south")], None).await;

    let host = [("host", "cdn.example.com")];
    let from_eu = eu.get_with("/asset.js", &host).await;
    assert_eq!(from_eu.text(), "console.log(1)");
    assert_eq!(from_eu.header("x-edge-location"), "eu-west");
    assert_eq!(ap.get_with("/asset.js", &host).await.text(), "console.log(1)");
    assert_eq!(
        shield.get_with("/asset.js", &host).await.x_cache(),
        "Hit from edgefleet"
    );
    assert_eq!(origin.hits("/asset.js"), 1, "one origin fetch for three regions");
    let seen = origin.seen();
    assert!(
        seen[0].headers.get_all("via").iter().count() >= 1,
        "the shield says it forwarded: {:?}",
        seen[0].headers
    );
}
