//! S3 origins against a real S3-compatible server (Versity S3 Gateway, built by
//! tests/cluster/tools.sh): SigV4-signed GET/HEAD, path and virtual-host style, revalidation,
//! errors, and keys that can never escape.
mod common;

use std::{path::Path, process::Stdio, time::Duration};

use common::{Edge, base_config};
use edgefleet_e2e::{
    S3Server,
    s3::{ACCESS_KEY, REGION, SECRET_KEY},
};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

async fn put(server: &S3Server, bucket: &str, key: &str, body: &[u8], content_type: &str) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), body).expect("write object");
    let path = file.path().to_string_lossy().into_owned();
    server
        .aws(&[
            "s3api",
            "put-object",
            "--bucket",
            bucket,
            "--key",
            key,
            "--body",
            &path,
            "--content-type",
            content_type,
        ])
        .await
        .expect("aws put-object")
        .ok()
        .expect("put-object succeeded");
}

fn credential_files(dir: &Path, secret: &str) -> (String, String) {
    let (key, secret_file) = (dir.join("accessKeyId"), dir.join("secretAccessKey"));
    std::fs::write(&key, ACCESS_KEY).expect("key file");
    std::fs::write(&secret_file, secret).expect("secret file");
    (
        key.to_string_lossy().into_owned(),
        secret_file.to_string_lossy().into_owned(),
    )
}

fn s3_config(endpoint: &str, path_style: bool, key_file: &str, secret_file: &str) -> Value {
    let mut config = base_config("http://127.0.0.1:9");
    config["origins"] = json!([{"s3": {
        "id": "bucket",
        "endpoint": endpoint,
        "bucket": "site",
        "region": REGION,
        "pathStyle": path_style,
        "accessKeyIdFile": key_file,
        "secretAccessKeyFile": secret_file,
    }}]);
    config["defaultBehavior"] = json!({"targetOrigin": "bucket"});
    config["behaviors"] =
        json!([{"pathPattern": "/live/*", "targetOrigin": "bucket", "defaultTtl": 0, "maxTtl": 0}]);
    config["defaultRootObject"] = json!("index.html");
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_bucket_is_served_path_style_with_sigv4() {
    let server = S3Server::start().await.expect("S3 server");
    server.create_bucket("site").await.expect("bucket");
    put(&server, "site", "index.html", b"<h1>home</h1>", "text/html").await;
    put(
        &server,
        "site",
        "dir/with space+plus.txt",
        b"spaced",
        "text/plain",
    )
    .await;
    put(
        &server,
        "site",
        "live/feed.json",
        b"{\"n\":1}",
        "application/json",
    )
    .await;
    let secrets = tempfile::tempdir().expect("secrets");
    let (key, secret) = credential_files(secrets.path(), SECRET_KEY);
    let edge = Edge::start(s3_config(&server.endpoint(), true, &key, &secret)).await;

    let home = edge.get("/").await;
    assert_eq!(
        (home.status.as_u16(), home.text().as_str()),
        (200, "<h1>home</h1>"),
        "{}",
        home.text()
    );
    assert_eq!(home.header("content-type"), "text/html");
    assert!(edge.get("/").await.x_cache().starts_with("Hit"));
    assert_eq!(edge.get("/dir/with%20space+plus.txt").await.text(), "spaced");

    let missing = edge.get("/nothing-here").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.x_cache(), "Error from edgefleet");

    // TTL 0 with validators: every request revalidates with S3, which answers 304.
    let first = edge.get("/live/feed.json").await;
    assert_eq!(first.text(), "{\"n\":1}");
    let again = edge.get("/live/feed.json").await;
    assert_eq!(
        again.x_cache(),
        "RefreshHit from edgefleet",
        "signed conditional GET answered 304 by S3"
    );
    assert_eq!(again.text(), "{\"n\":1}");

    let head = edge
        .request(
            http::Method::HEAD,
            "/dir/with%20space+plus.txt",
            &[],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!((head.status.as_u16(), head.header("content-length")), (200, "6"));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_are_refused_by_the_bucket() {
    let server = S3Server::start().await.expect("S3 server");
    server.create_bucket("site").await.expect("bucket");
    put(&server, "site", "index.html", b"secret home", "text/html").await;
    let secrets = tempfile::tempdir().expect("secrets");
    let (key, secret) = credential_files(secrets.path(), "not-the-secret");
    let edge = Edge::start(s3_config(&server.endpoint(), true, &key, &secret)).await;
    let r = edge.get("/index.html").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(!r.text().contains("secret home"));
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_never_escape_the_bucket() {
    let server = S3Server::start().await.expect("S3 server");
    server.create_bucket("site").await.expect("bucket");
    server.create_bucket("other").await.expect("bucket");
    put(
        &server,
        "other",
        "secret.txt",
        b"other bucket's secret",
        "text/plain",
    )
    .await;
    let secrets = tempfile::tempdir().expect("secrets");
    let (key, secret) = credential_files(secrets.path(), SECRET_KEY);
    let mut config = s3_config(&server.endpoint(), true, &key, &secret);
    config["defaultRootObject"] = Value::Null;
    let edge = Edge::start(config).await;
    for path in [
        "/../other/secret.txt",
        "/%2e%2e/other/secret.txt",
        "/..%2Fother%2Fsecret.txt",
        "/a/..%5c..%5cother/secret.txt",
    ] {
        let answer = common::raw(
            edge.data,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            Duration::from_secs(3),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path} -> {answer}");
        assert!(!answer.contains("other bucket's secret"));
    }
    // "/" without a default root object would address the bucket itself (a listing): refused.
    let root = edge.get("/").await;
    assert_eq!(root.status, 404);
    assert!(!root.text().contains("ListBucketResult"));
    assert!(root.text().contains("no object"), "{}", root.text());
    // Query strings would be S3 operations (?acl, ?list-type): they never reach the bucket.
    let mut with_query = s3_config(&server.endpoint(), true, &key, &secret);
    with_query["defaultBehavior"]["cacheKey"] = json!({"queryStrings": "all"});
    let edge = Edge::start(with_query).await;
    put(&server, "site", "index.html", b"home", "text/html").await;
    let r = edge.get("/index.html?acl").await;
    assert_eq!(r.text(), "home", "the object, not its ACL");
}

/// A second gateway with virtual-host addressing under `localhost`, which the edge resolves to
/// loopback itself (RFC 6761), so `site.localhost` needs no DNS.
struct VirtualHostGateway {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Drop for VirtualHostGateway {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl VirtualHostGateway {
    async fn start() -> Self {
        let binary = edgefleet_e2e::tools::tool("versitygw").await.expect("versitygw");
        let data = tempfile::tempdir().expect("data");
        let port = edgefleet_e2e::process::free_port().expect("port");
        let child = Command::new(binary)
            .arg("--port")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--region")
            .arg(REGION)
            .arg("--virtual-domain")
            .arg("localhost")
            .arg("posix")
            .arg(data.path())
            .env("ROOT_ACCESS_KEY", ACCESS_KEY)
            .env("ROOT_SECRET_KEY", SECRET_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn versitygw");
        common::eventually(Duration::from_secs(20), "the gateway listens", async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        Self {
            child,
            port,
            _data: data,
        }
    }

    async fn aws(&self, args: &[&str]) {
        let status = Command::new("aws")
            .arg("--endpoint-url")
            .arg(format!("http://127.0.0.1:{}", self.port))
            .args(args)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_DEFAULT_REGION", REGION)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(Stdio::null())
            .status()
            .await
            .expect("aws");
        assert!(status.success(), "aws {args:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn virtual_host_style_endpoints_work() {
    let gateway = VirtualHostGateway::start().await;
    gateway.aws(&["s3api", "create-bucket", "--bucket", "site"]).await;
    let object = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(object.path(), "virtual hosted").expect("write");
    gateway
        .aws(&[
            "s3api",
            "put-object",
            "--bucket",
            "site",
            "--key",
            "v.txt",
            "--body",
            &object.path().to_string_lossy(),
        ])
        .await;
    let secrets = tempfile::tempdir().expect("secrets");
    let (key, secret) = credential_files(secrets.path(), SECRET_KEY);
    let edge = Edge::start(s3_config(
        &format!("http://localhost:{}", gateway.port),
        false,
        &key,
        &secret,
    ))
    .await;
    let r = edge.get("/v.txt").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "virtual hosted"),
        "{}",
        r.text()
    );
}
