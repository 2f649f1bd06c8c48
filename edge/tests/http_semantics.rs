//! Conditional requests (both ways), ranges, compression and HEAD.
mod common;

use std::{io::Read, time::Duration};

use common::{Edge, Origin, Reply, base_config};
use http::Method;
use serde_json::json;

const LAST_MODIFIED: &str = "Tue, 14 Nov 2023 22:13:20 GMT";

fn versioned(body: &str, etag: &str) -> Reply {
    Reply::ok(body.to_owned())
        .header("etag", etag)
        .header("last-modified", LAST_MODIFIED)
        .header("cache-control", "max-age=60")
}

#[tokio::test(flavor = "multi_thread")]
async fn viewers_get_304_from_cache() {
    let origin = Origin::start().await;
    origin.route("/doc", versioned("document", "\"v1\""));
    let edge = Edge::start(base_config(&origin.url())).await;
    edge.get("/doc").await;
    let r = edge
        .get_with("/doc", &[("if-none-match", "\"v0\", \"v1\"")])
        .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), "\"v1\"");
    assert_eq!(
        edge.get_with("/doc", &[("if-none-match", "W/\"v1\"")])
            .await
            .status,
        304,
        "weak comparison"
    );
    assert_eq!(
        edge.get_with("/doc", &[("if-none-match", "\"v2\"")]).await.status,
        200
    );
    assert_eq!(
        edge.get_with("/doc", &[("if-modified-since", LAST_MODIFIED)])
            .await
            .status,
        304
    );
    assert_eq!(
        edge.get_with("/doc", &[("if-modified-since", "Mon, 13 Nov 2023 00:00:00 GMT")])
            .await
            .status,
        200
    );
    assert_eq!(
        edge.get_with(
            "/doc",
            &[("if-none-match", "\"v2\""), ("if-modified-since", LAST_MODIFIED)]
        )
        .await
        .status,
        200,
        "If-None-Match wins over If-Modified-Since"
    );
    assert_eq!(origin.hits("/doc"), 1, "all answered from cache");
    assert!(
        origin.seen()[0].headers.get("if-none-match").is_none(),
        "the fill asked for the full object"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_objects_are_revalidated_and_a_304_refreshes_them() {
    let origin = Origin::start().await;
    origin.route(
        "/doc",
        versioned("document", "\"v1\"").header("cache-control", "max-age=1"),
    );
    let edge = Edge::start(base_config(&origin.url())).await;
    edge.get("/doc").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refreshed = edge.get("/doc").await;
    assert_eq!(refreshed.status, 200);
    assert_eq!(refreshed.text(), "document");
    assert_eq!(refreshed.x_cache(), "RefreshHit from edgefleet");
    let revalidation = origin.seen().pop().expect("revalidation");
    assert_eq!(
        revalidation
            .headers
            .get("if-none-match")
            .map(|v| v.to_str().unwrap_or("")),
        Some("\"v1\"")
    );
    assert_eq!(
        revalidation
            .headers
            .get("if-modified-since")
            .map(|v| v.to_str().unwrap_or("")),
        Some(LAST_MODIFIED)
    );
    assert_eq!(
        edge.get("/doc").await.x_cache(),
        "Hit from edgefleet",
        "fresh again after the 304"
    );
    assert_eq!(origin.hits("/doc"), 2);
    // A changed object replaces the stale one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.route(
        "/doc",
        versioned("new document", "\"v2\"").header("cache-control", "max-age=60"),
    );
    let changed = edge.get("/doc").await;
    assert_eq!(changed.text(), "new document");
    assert_eq!(changed.x_cache(), "Miss from edgefleet");
}

#[tokio::test(flavor = "multi_thread")]
async fn ranges_are_served_from_the_cached_object() {
    let origin = Origin::start().await;
    let body: String = (0..1000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    origin.route("/file", versioned(&body, "\"r1\""));
    let edge = Edge::start(base_config(&origin.url())).await;

    let first = edge.get_with("/file", &[("range", "bytes=10-19")]).await;
    assert_eq!(first.status, 206, "a range miss still answers the range");
    assert_eq!(first.text(), &body[10..20]);
    assert_eq!(first.header("content-range"), "bytes 10-19/1000");
    assert!(
        origin.seen()[0].headers.get("range").is_none(),
        "the whole object was fetched for the cache"
    );

    let suffix = edge.get_with("/file", &[("range", "bytes=-5")]).await;
    assert_eq!(
        (suffix.status.as_u16(), suffix.text()),
        (206, body[995..].to_owned())
    );
    assert!(suffix.x_cache().starts_with("Hit"));
    let open = edge.get_with("/file", &[("range", "bytes=990-")]).await;
    assert_eq!(open.text(), &body[990..]);
    let unsatisfiable = edge.get_with("/file", &[("range", "bytes=5000-")]).await;
    assert_eq!(unsatisfiable.status, 416);
    assert_eq!(unsatisfiable.header("content-range"), "bytes */1000");
    let multi = edge.get_with("/file", &[("range", "bytes=0-1,5-6")]).await;
    assert_eq!(
        (multi.status.as_u16(), multi.body.len()),
        (200, 1000),
        "several ranges: the whole object"
    );
    let stale_if_range = edge
        .get_with("/file", &[("range", "bytes=0-1"), ("if-range", "\"old\"")])
        .await;
    assert_eq!(stale_if_range.status, 200, "If-Range mismatch: the whole object");
    let matching_if_range = edge
        .get_with("/file", &[("range", "bytes=0-1"), ("if-range", "\"r1\"")])
        .await;
    assert_eq!(matching_if_range.status, 206);
    assert_eq!(origin.hits("/file"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unsatisfiable_range_answers_are_not_cached_responses() {
    let origin = Origin::start().await;
    origin.route("/small", Reply::ok("tiny").header("cache-control", "max-age=60"));
    let edge = Edge::start(base_config(&origin.url())).await;
    assert_eq!(
        edge.get_with("/small", &[("range", "bytes=100-")]).await.status,
        416
    );
    let whole = edge.get("/small").await;
    assert_eq!(
        (whole.status.as_u16(), whole.text().as_str()),
        (200, "tiny"),
        "the object, not a cached 416"
    );
}

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut out)
        .expect("gzip body");
    out
}

fn unbrotli(bytes: &[u8]) -> String {
    let mut out = Vec::new();
    brotli::BrotliDecompress(&mut &bytes[..], &mut out).expect("br body");
    String::from_utf8(out).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread")]
async fn compressible_responses_are_compressed_once_per_encoding() {
    let origin = Origin::start().await;
    let text = "edgefleet compresses text. ".repeat(100);
    origin.route(
        "/page.html",
        versioned(&text, "\"p1\"").header("content-type", "text/html; charset=utf-8"),
    );
    origin.route(
        "/small.txt",
        Reply::ok("short").header("content-type", "text/plain"),
    );
    origin.route(
        "/image.png",
        Reply::ok(vec![1u8; 5000]).header("content-type", "image/png"),
    );
    let mut config = base_config(&origin.url());
    config["defaultBehavior"]["compress"] = json!(true);
    let edge = Edge::start(config).await;

    let br = edge
        .get_with("/page.html", &[("accept-encoding", "gzip, deflate, br")])
        .await;
    assert_eq!(br.header("content-encoding"), "br");
    assert_eq!(unbrotli(&br.body), text);
    assert_eq!(br.header("etag"), "W/\"p1\"", "a strong ETag becomes weak");
    assert!(br.header("vary").to_ascii_lowercase().contains("accept-encoding"));
    assert_eq!(br.header("content-length"), br.body.len().to_string());

    let gz = edge.get_with("/page.html", &[("accept-encoding", "gzip")]).await;
    assert_eq!(gz.header("content-encoding"), "gzip");
    assert_eq!(gunzip(&gz.body), text);
    let gz_again = edge
        .get_with("/page.html", &[("accept-encoding", "gzip;q=1, br;q=0")])
        .await;
    assert_eq!(gz_again.body, gz.body, "the stored gzip variant is reused");
    assert!(gz_again.x_cache().starts_with("Hit"));

    let identity = edge.get("/page.html").await;
    assert!(identity.headers.get("content-encoding").is_none());
    assert_eq!(identity.text(), text);
    assert!(
        identity
            .header("vary")
            .to_ascii_lowercase()
            .contains("accept-encoding")
    );
    assert_eq!(identity.header("etag"), "\"p1\"");
    assert_eq!(origin.hits("/page.html"), 1);

    for path in ["/small.txt", "/image.png"] {
        let r = edge.get_with(path, &[("accept-encoding", "br, gzip")]).await;
        assert!(
            r.headers.get("content-encoding").is_none(),
            "{path} is not compressed"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_compression_when_disabled_or_for_http_1_0() {
    let origin = Origin::start().await;
    let text = "text ".repeat(1000);
    origin.route(
        "/page",
        Reply::ok(text.clone()).header("content-type", "text/plain"),
    );
    let edge = Edge::start(base_config(&origin.url())).await;
    let r = edge.get_with("/page", &[("accept-encoding", "gzip, br")]).await;
    assert!(
        r.headers.get("content-encoding").is_none(),
        "compress is off by default"
    );

    let mut config = base_config(&origin.url());
    config["defaultBehavior"]["compress"] = json!(true);
    let edge = Edge::start(config).await;
    let answer = common::raw(
        edge.data,
        b"GET /page HTTP/1.0\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{}",
        &answer[..40.min(answer.len())]
    );
    assert!(
        !answer.to_ascii_lowercase().contains("content-encoding"),
        "HTTP/1.0 viewers are never sent compressed bodies"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn head_gets_the_headers_without_a_body() {
    let origin = Origin::start().await;
    origin.route(
        "/h",
        Reply::ok("twelve bytes").header("cache-control", "max-age=60"),
    );
    let edge = Edge::start(base_config(&origin.url())).await;
    let head = edge.request(Method::HEAD, "/h", &[], bytes::Bytes::new()).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), "12");
    assert!(head.body.is_empty());
    let get = edge.get("/h").await;
    assert_eq!(get.text(), "twelve bytes");
    assert_eq!(
        origin.hits("/h"),
        1,
        "a HEAD miss fills the cache with the full object"
    );
    assert_eq!(origin.seen()[0].method, Method::GET);
}
