//! Origin shield: edges outside the shield region fetch through the shield region's edge, so the
//! origin sees one fetch per object however many regions ask.
mod common;

use common::{Edge, Origin, Reply, base_config};
use http::Method;
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

/// Two shield edges that know each other by name, and an edge outside the shield region that
/// knows both by address: each object is fetched from the origin by one shield edge only,
/// whichever edge a viewer asks, and with a shield edge gone the other one takes its objects.
#[tokio::test(flavor = "multi_thread")]
async fn each_object_lives_on_one_shield_edge_and_survives_losing_one() {
    let origin = Origin::start().await;
    let sets = ["warm", "cold", "after"];
    for set in sets {
        for i in 0..OBJECTS {
            origin.route(
                &format!("/{set}/{i}.css"),
                Reply::ok(format!("{set} {i}")).header("cache-control", "max-age=600"),
            );
        }
    }
    let mut config = base_config(&origin.url());
    config["aliases"] = json!(["cdn.example.com"]);

    // Addresses first: the list of shield edges is part of every edge's configuration.
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let prepared: Vec<_> = dirs.iter().map(|d| Edge::prepare(config.clone(), d)).collect();
    let peers: Vec<serde_json::Value> = prepared
        .iter()
        .zip(["shield-a", "shield-b"])
        .map(|((_, data, _), name)| json!({"address": data.to_string(), "name": name}))
        .collect();
    let shielded = |mut c: serde_json::Value| {
        // Nothing listens at the URL: with the shield edges listed, it is never used.
        c["originShield"] = json!({"region": "us-east", "url": "http://127.0.0.1:9", "peers": peers});
        c
    };
    let mut shields = Vec::new();
    for ((dir, (c, data, admin)), name) in dirs.into_iter().zip(prepared).zip(["shield-a", "shield-b"]) {
        let path = dir.path().join("edge.yaml");
        std::fs::write(&path, serde_json::to_vec(&shielded(c)).expect("json")).expect("write");
        let args = vec!["--config".to_owned(), path.to_string_lossy().into_owned()];
        let env = [("EDGEFLEET_REGION", "us-east"), ("HOSTNAME", name)];
        shields.push(Edge::spawn(&args, &env, dir, data, admin).await);
    }
    let outer = Edge::start_with(
        shielded(config),
        &[("EDGEFLEET_REGION", "eu-west"), ("HOSTNAME", "outer")],
        None,
    )
    .await;
    let status = outer.admin(Method::GET, "/status", None).await;
    let status: serde_json::Value = serde_json::from_slice(&status.body).expect("status json");
    assert_eq!(status["originShield"]["role"], "outside");
    assert_eq!(status["originShield"]["peers"].as_array().map(Vec::len), Some(2));
    let status = shields[0].admin(Method::GET, "/status", None).await;
    let status: serde_json::Value = serde_json::from_slice(&status.body).expect("status json");
    assert_eq!(
        (
            &status["originShield"]["role"],
            &status["originShield"]["selfListed"]
        ),
        (&json!("shield"), &json!(true)),
        "{status}"
    );

    // Through the edge outside: one origin fetch per object, spread over both shield edges.
    let get = async |edge: &Edge, path: &str| {
        let r = edge.get_with(path, &[("host", "cdn.example.com")]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r
    };
    for i in 0..OBJECTS {
        get(&outer, &format!("/warm/{i}.css")).await;
    }
    let mut held = Vec::new();
    for shield in &shields {
        let status = shield.admin(Method::GET, "/status", None).await;
        let status: serde_json::Value = serde_json::from_slice(&status.body).expect("status json");
        held.push(status["cache"]["objects"].as_u64().expect("objects"));
    }
    assert_eq!(
        held.iter().sum::<u64>(),
        OBJECTS as u64,
        "each object on one shield edge: {held:?}"
    );
    assert!(
        held.iter().all(|&n| n >= OBJECTS as u64 / 5),
        "both take a share: {held:?}"
    );
    // Asked of the shield edges directly, those objects come from the edge that holds them.
    for i in 0..OBJECTS {
        for shield in &shields {
            get(shield, &format!("/warm/{i}.css")).await;
        }
    }
    // Objects asked of the shield edges first, then of the edge outside.
    for i in 0..OBJECTS {
        let path = format!("/cold/{i}.css");
        for edge in [&shields[1], &shields[0], &outer] {
            assert_eq!(get(edge, &path).await.text(), format!("cold {i}"));
        }
    }
    for set in ["warm", "cold"] {
        for i in 0..OBJECTS {
            let path = format!("/{set}/{i}.css");
            assert_eq!(origin.hits(&path), 1, "{path} fetched once from the origin");
        }
    }

    // One shield edge gone: the other fetches its objects, still once each, whoever asks.
    drop(shields.pop());
    for i in 0..OBJECTS {
        let path = format!("/after/{i}.css");
        assert_eq!(get(&outer, &path).await.text(), format!("after {i}"));
        assert_eq!(
            get(&shields[0], &path).await.x_cache(),
            "Hit from edgefleet",
            "{path}"
        );
        assert_eq!(origin.hits(&path), 1, "{path} fetched once from the origin");
    }
    assert!(
        origin
            .seen()
            .iter()
            .all(|s| !s.headers.contains_key("x-edgefleet-shield")),
        "the routing mark stays between edges"
    );
}

/// Objects per set in the test above: enough that both shield edges own some.
const OBJECTS: usize = 40;
