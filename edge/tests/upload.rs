//! The upload port against a real S3 store (Versity S3 Gateway, built by tests/cluster/tools.sh)
//! with a real S3 client (boto3, as an application would use it): objects land in the bucket and
//! are served through the data port, multipart uploads arrive intact, bad signatures and unknown
//! keys are refused, the size limit holds, and nothing is left behind when an upload is refused.
mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use common::{Edge, base_config, free_port};
use edgefleet_e2e::{
    S3Server,
    boto3::boto3,
    process::run,
    s3::{ACCESS_KEY, REGION, SECRET_KEY},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::process::Command;

const BUCKET: &str = "uploads";
const CLIENT_KEY: &str = "uploader";
const CLIENT_SECRET: &str = "uploader-secret-0123456789";
const MIB: u64 = 1 << 20;

/// The calls the tests make through boto3 (`edgefleet_e2e::boto3`): `bucket op key [file [part size]]`.
const CALLS: &str = r#"
from boto3.s3.transfer import TransferConfig

def call(s3, args):
    bucket, op, key = args[:3]
    if op == "put":
        with open(args[3], "rb") as body:
            answer = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/plain",
                                   Metadata={"owner": "tests"})
        return {"etag": answer["ETag"]}
    if op == "put-trailer":
        # What boto3 sends over TLS (a TLS-terminating Ingress in front of the edge): an
        # aws-chunked body with a CRC32 trailer and STREAMING-UNSIGNED-PAYLOAD-TRAILER.
        import botocore.httpchecksum as checksums
        from urllib.parse import urlparse
        checksums.urlparse = lambda url: urlparse(url.replace("http://", "https://", 1))
        with open(args[3], "rb") as body:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        return None
    if op == "multipart":
        part = int(args[4])
        s3.upload_file(args[3], bucket, key, Config=TransferConfig(
            multipart_threshold=part, multipart_chunksize=part, max_concurrency=2))
        return None
    if op == "tamper":
        # Signed for one body, sent with another of the same length: a replayed or altered request.
        def swap(request, **kwargs):
            body = request.body if isinstance(request.body, bytes) else request.body.read()
            request.body = bytes(b ^ 1 for b in body)
        s3.meta.events.register("before-send.s3.PutObject", swap)
        with open(args[3], "rb") as body:
            s3.put_object(Bucket=bucket, Key=key, Body=body.read())
        return None
    if op == "presign":
        return {"url": s3.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)}
    raise ValueError(f"unknown call {op}")
"#;

struct Setup {
    server: S3Server,
    edge: Edge,
    upload: String,
    files: tempfile::TempDir,
}

impl Setup {
    async fn start(max_object_bytes: u64) -> Self {
        Self::start_with(max_object_bytes, 30).await
    }

    /// With the origin's read timeout, which bounds every silence of an upload.
    async fn start_with(max_object_bytes: u64, read_timeout_seconds: u64) -> Self {
        let server = S3Server::start().await.expect("S3 server");
        server.create_bucket(BUCKET).await.expect("bucket");
        let files = tempfile::tempdir().expect("files");
        let secret_file = |name: &str, value: &str| {
            let path = files.path().join(name);
            std::fs::write(&path, value).expect("secret file");
            path
        };
        let origin_key = secret_file("origin-key", ACCESS_KEY);
        let origin_secret = secret_file("origin-secret", SECRET_KEY);
        let client_keys = secret_file(
            "client-keys.json",
            &json!({CLIENT_KEY: CLIENT_SECRET, "other": "other-secret"}).to_string(),
        );
        let mut config = base_config("http://127.0.0.1:9");
        config["origins"] = json!([{"s3": {
            "id": "bucket",
            "endpoint": server.endpoint(),
            "bucket": BUCKET,
            "region": REGION,
            "pathStyle": true,
            "accessKeyIdFile": origin_key,
            "secretAccessKeyFile": origin_secret,
            "readTimeoutSeconds": read_timeout_seconds,
        }}]);
        config["defaultBehavior"] = json!({"targetOrigin": "bucket"});
        config["upload"] = json!({
            "targetOrigin": "bucket",
            "clientKeysFile": client_keys,
            "maxObjectBytes": max_object_bytes,
        });
        let upload = free_port();
        let edge = Edge::start_with(config, &[("EDGEFLEET_LISTEN_UPLOAD", &upload.to_string())], None).await;
        Self {
            server,
            edge,
            upload: format!("http://{upload}"),
            files,
        }
    }

    /// Runs the boto3 client against the upload port.
    async fn client(&self, key_id: &str, secret: &str, args: &[&str]) -> Value {
        let args: Vec<&str> = [BUCKET].into_iter().chain(args.iter().copied()).collect();
        boto3(&self.upload, key_id, secret, CALLS, &args)
            .await
            .unwrap_or_else(|e| panic!("boto3 client failed: {e}\nedge log:\n{}", self.edge.log()))
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.files.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    /// The object as the store keeps it (the POSIX backend: bucket = directory).
    fn stored(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.server.data_dir().join(BUCKET).join(key)).ok()
    }

    /// Multipart uploads the store still holds for the bucket.
    async fn open_uploads(&self) -> Vec<Value> {
        let output = self
            .server
            .aws(&["s3api", "list-multipart-uploads", "--bucket", BUCKET])
            .await
            .expect("aws")
            .ok()
            .expect("list-multipart-uploads");
        let listing: Value = if output.stdout.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&output.stdout).expect("json")
        };
        listing["Uploads"].as_array().cloned().unwrap_or_default()
    }

    async fn metrics(&self) -> String {
        self.edge
            .admin_request(http::Method::GET, "/metrics", None, true)
            .await
            .expect("metrics")
            .text()
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Bytes that differ at every offset, so a reordered or repeated part shows in the digest.
fn pattern(len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len as usize);
    let mut x: u32 = 0x9E37_79B9;
    while (out.len() as u64) < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len as usize);
    out
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_put_lands_in_the_bucket_and_replaces_the_cached_copy() {
    let setup = Setup::start(24 * MIB).await;
    let first = setup.file("v1.txt", b"first version");
    let answer = setup
        .client(
            CLIENT_KEY,
            CLIENT_SECRET,
            &["put", "docs/hello world.txt", path_str(&first)],
        )
        .await;
    assert_eq!(answer["ok"], true, "{answer}\n{}", setup.edge.log());
    assert_eq!(
        setup.stored("docs/hello world.txt").as_deref(),
        Some(&b"first version"[..])
    );

    // Served through the data port, then from the cache.
    let served = setup.edge.get("/docs/hello%20world.txt").await;
    assert_eq!(
        (served.status.as_u16(), served.text().as_str()),
        (200, "first version")
    );
    assert_eq!(served.header("content-type"), "text/plain");
    assert!(
        setup
            .edge
            .get("/docs/hello%20world.txt")
            .await
            .x_cache()
            .starts_with("Hit")
    );

    // A new version through the upload port purges the edge's cached copy.
    let second = setup.file("v2.txt", b"second version");
    let answer = setup
        .client(
            CLIENT_KEY,
            CLIENT_SECRET,
            &["put", "docs/hello world.txt", path_str(&second)],
        )
        .await;
    assert_eq!(answer["ok"], true, "{answer}");
    let served = setup.edge.get("/docs/hello%20world.txt").await;
    assert_eq!(served.text(), "second version");
    assert!(served.x_cache().starts_with("Miss"), "{}", served.x_cache());

    // A presigned URL works for a client without the SDK.
    let presigned = setup
        .client(CLIENT_KEY, CLIENT_SECRET, &["presign", "presigned.txt"])
        .await;
    let url = presigned["url"].as_str().expect("url");
    let put = common::send(
        &common::client(),
        http::Method::PUT,
        url,
        &[],
        Bytes::from_static(b"via presigned URL"),
    )
    .await
    .expect("presigned PUT");
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(
        setup.stored("presigned.txt").as_deref(),
        Some(&b"via presigned URL"[..])
    );
    let tampered = url.replace("presigned.txt", "elsewhere.txt");
    let put = common::send(
        &common::client(),
        http::Method::PUT,
        &tampered,
        &[],
        Bytes::from_static(b"x"),
    )
    .await
    .expect("tampered PUT");
    assert_eq!(put.status, 403);
    assert!(
        put.text().contains("<Code>SignatureDoesNotMatch</Code>"),
        "{}",
        put.text()
    );
    assert_eq!(setup.stored("elsewhere.txt"), None);

    let metrics = setup.metrics().await;
    assert!(
        metrics.contains("edgefleet_edge_uploads_total{operation=\"PutObject\",result=\"ok\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "edgefleet_edge_uploads_total{operation=\"PutObject\",result=\"SignatureDoesNotMatch\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multipart_upload_arrives_intact() {
    let setup = Setup::start(24 * MIB).await;
    let body = pattern(20 * MIB);
    let file = setup.file("big.bin", &body);
    let answer = setup
        .client(
            CLIENT_KEY,
            CLIENT_SECRET,
            &[
                "multipart",
                "media/big.bin",
                path_str(&file),
                &(5 * MIB).to_string(),
            ],
        )
        .await;
    assert_eq!(answer["ok"], true, "{answer}\n{}", setup.edge.log());
    let stored = setup.stored("media/big.bin").expect("object stored");
    assert_eq!((stored.len() as u64, sha256(&stored)), (20 * MIB, sha256(&body)));
    assert!(setup.open_uploads().await.is_empty());
    let metrics = setup.metrics().await;
    for line in [
        "edgefleet_edge_uploads_total{operation=\"CreateMultipartUpload\",result=\"ok\"} 1",
        "edgefleet_edge_uploads_total{operation=\"UploadPart\",result=\"ok\"} 4",
        "edgefleet_edge_uploads_total{operation=\"CompleteMultipartUpload\",result=\"ok\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    let bytes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("edgefleet_edge_upload_body_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("upload bytes metric");
    assert!(bytes >= 20 * MIB, "{bytes} bytes counted");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_signatures_and_unknown_keys_write_nothing() {
    let setup = Setup::start(24 * MIB).await;
    let file = setup.file("x.txt", b"should not land");
    let wrong = setup
        .client(CLIENT_KEY, "not-the-secret", &["put", "x.txt", path_str(&file)])
        .await;
    assert_eq!(
        (&wrong["ok"], &wrong["status"], &wrong["code"]),
        (&json!(false), &json!(403), &json!("SignatureDoesNotMatch")),
        "{wrong}"
    );
    let unknown = setup
        .client("nobody", CLIENT_SECRET, &["put", "x.txt", path_str(&file)])
        .await;
    assert_eq!(
        (&unknown["status"], &unknown["code"]),
        (&json!(403), &json!("InvalidAccessKeyId")),
        "{unknown}"
    );
    // The origin's own keys are not client keys.
    let origin_keys = setup
        .client(ACCESS_KEY, SECRET_KEY, &["put", "x.txt", path_str(&file)])
        .await;
    assert_eq!(origin_keys["code"], "InvalidAccessKeyId", "{origin_keys}");
    let anonymous = common::send(
        &common::client(),
        http::Method::PUT,
        &format!("{}/{BUCKET}/x.txt", setup.upload),
        &[],
        Bytes::from_static(b"anonymous"),
    )
    .await
    .expect("anonymous PUT");
    assert_eq!(anonymous.status, 403);
    assert!(
        anonymous.text().contains("<Code>AccessDenied</Code>"),
        "{}",
        anonymous.text()
    );
    assert_eq!(setup.stored("x.txt"), None);
    // A multipart upload started with a wrong key gets no further.
    let multipart = setup
        .client(
            CLIENT_KEY,
            "not-the-secret",
            &[
                "multipart",
                "y.bin",
                path_str(&setup.file("y.bin", &pattern(6 * MIB))),
                &(5 * MIB).to_string(),
            ],
        )
        .await;
    assert_eq!(multipart["ok"], false, "{multipart}");
    assert!(setup.open_uploads().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_size_limit_holds_for_objects_and_for_the_sum_of_parts() {
    let setup = Setup::start(12 * MIB).await;
    let big = setup.file("big.bin", &pattern(13 * MIB));
    let single = setup
        .client(CLIENT_KEY, CLIENT_SECRET, &["put", "big.bin", path_str(&big)])
        .await;
    assert_eq!(
        (&single["status"], &single["code"]),
        (&json!(413), &json!("EntityTooLarge")),
        "{single}"
    );
    assert_eq!(setup.stored("big.bin"), None);

    // Each 5 MiB part is allowed; the third takes the sum over the limit.
    let multipart = setup
        .client(
            CLIENT_KEY,
            CLIENT_SECRET,
            &["multipart", "parts.bin", path_str(&big), &(5 * MIB).to_string()],
        )
        .await;
    assert_eq!(multipart["ok"], false, "{multipart}");
    assert!(
        multipart["message"]
            .as_str()
            .unwrap_or("")
            .contains("EntityTooLarge"),
        "{multipart}"
    );
    assert_eq!(setup.stored("parts.bin"), None);
    assert!(
        setup.open_uploads().await.is_empty(),
        "the refused upload was aborted at the origin"
    );
    let metrics = setup.metrics().await;
    assert!(
        metrics
            .contains("edgefleet_edge_uploads_total{operation=\"UploadPart\",result=\"EntityTooLarge\"} 1"),
        "{metrics}"
    );
}

/// The edge's peak RSS while a 256 MiB object streams through (a figure for the README; the
/// bound asserted is loose: the body is never held whole).
#[tokio::test(flavor = "multi_thread")]
async fn a_large_upload_streams_in_bounded_memory() {
    let size = 256 * MIB;
    let setup = Setup::start(size).await;
    let body = pattern(size);
    let file = setup.file("large.bin", &body);
    let before = peak_rss_kib(setup.edge.pid());
    let answer = setup
        .client(CLIENT_KEY, CLIENT_SECRET, &["put", "large.bin", path_str(&file)])
        .await;
    assert_eq!(answer["ok"], true, "{answer}");
    let after = peak_rss_kib(setup.edge.pid());
    let stored = setup.stored("large.bin").expect("stored");
    assert_eq!(sha256(&stored), sha256(&body));
    println!(
        "edge peak RSS: {} MiB before, {} MiB after a {} MiB upload",
        before / 1024,
        after / 1024,
        size / MIB
    );
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .expect("VmHWM of the edge")
}

/// curl's own SigV4 signer (`--aws-sigv4`), a client independent of the AWS SDKs.
#[tokio::test(flavor = "multi_thread")]
async fn curl_signing_with_aws_sigv4_uploads() {
    let setup = Setup::start(24 * MIB).await;
    let file = setup.file("curl.txt", b"signed by curl");
    let curl = |secret: &str| {
        let mut command = Command::new("curl");
        command.args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-T",
            path_str(&file),
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
            &format!("{CLIENT_KEY}:{secret}"),
            "-H",
            "x-amz-content-sha256: UNSIGNED-PAYLOAD",
            &format!("{}/{BUCKET}/by-curl.txt", setup.upload),
        ]);
        command
    };
    let wrong = run(curl("wrong"), None).await.expect("curl runs");
    assert_eq!(wrong.stdout, "403", "{}", wrong.stderr);
    assert_eq!(setup.stored("by-curl.txt"), None);
    let output = run(curl(CLIENT_SECRET), None).await.expect("curl runs");
    assert_eq!(output.stdout, "200", "{}\n{}", output.stderr, setup.edge.log());
    assert_eq!(
        setup.stored("by-curl.txt").as_deref(),
        Some(&b"signed by curl"[..])
    );
}

/// The SHA-256 the client signed travels to the bucket under the edge's signature, so a body that
/// is not the one signed is refused by the bucket as it streams, and nothing is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_other_than_the_signed_one_is_refused() {
    let setup = Setup::start(24 * MIB).await;
    let file = setup.file("signed.txt", b"the body that was signed");
    let answer = setup
        .client(
            CLIENT_KEY,
            CLIENT_SECRET,
            &["tamper", "tampered.txt", path_str(&file)],
        )
        .await;
    assert_eq!(
        (&answer["status"], &answer["code"]),
        (&json!(400), &json!("XAmzContentSHA256Mismatch")),
        "{answer}"
    );
    assert_eq!(setup.stored("tampered.txt"), None);
}

/// Sends a presigned PUT by hand, `parts` of the body `gap` apart, and returns the answer.
async fn paced_put(upload: &str, url: &str, parts: &[&[u8]], declared: usize, gap: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = upload.trim_start_matches("http://");
    let target = url
        .split_once(address)
        .map(|(_, t)| t)
        .expect("URL on the upload port");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "PUT {target} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    for part in parts {
        stream.write_all(part).await.expect("part");
        tokio::time::sleep(gap).await;
    }
    let mut answer = String::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_string(&mut answer)).await;
    assert!(read.is_ok(), "no answer within 20 s; got {answer:?}");
    answer
}

/// The origin's read timeout (2 s here) bounds silences, not uploads: a client that keeps
/// sending for longer succeeds, one that goes quiet is cut off and nothing is stored.
#[tokio::test(flavor = "multi_thread")]
async fn slow_uploads_succeed_and_stalled_ones_are_cut_off() {
    let setup = Setup::start_with(24 * MIB, 2).await;
    let presign = async |key: &str| {
        let answer = setup.client(CLIENT_KEY, CLIENT_SECRET, &["presign", key]).await;
        answer["url"].as_str().expect("url").to_owned()
    };
    let slow_url = presign("slow.txt").await;
    let parts: Vec<&[u8]> = vec![b"0123456789"; 6];
    let answer = paced_put(&setup.upload, &slow_url, &parts, 60, Duration::from_millis(700)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer}\n{}",
        setup.edge.log()
    );
    assert_eq!(setup.stored("slow.txt").map(|b| b.len()), Some(60));

    let stalled_url = presign("stalled.txt").await;
    let answer = paced_put(&setup.upload, &stalled_url, &[b"0123456789"], 100, Duration::ZERO).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("<Code>RequestTimeout</Code>"), "{answer}");
    assert_eq!(setup.stored("stalled.txt"), None);
}

/// boto3 behind TLS sends aws-chunked bodies with a trailing checksum
/// (STREAMING-UNSIGNED-PAYLOAD-TRAILER, no Content-Length): they are passed on as they are, the
/// bucket checks the trailer, and the size limit applies to the decoded length.
#[tokio::test(flavor = "multi_thread")]
async fn aws_chunked_bodies_with_a_trailing_checksum_are_passed_on() {
    let setup = Setup::start(4 * MIB).await;
    let body = pattern(3 * MIB);
    let file = setup.file("chunked.bin", &body);
    let answer = setup
        .client(
            CLIENT_KEY,
            CLIENT_SECRET,
            &["put-trailer", "chunked.bin", path_str(&file)],
        )
        .await;
    assert_eq!(answer["ok"], true, "{answer}\n{}", setup.edge.log());
    let stored = setup.stored("chunked.bin").expect("stored");
    assert_eq!(sha256(&stored), sha256(&body));

    let big = setup.file("too-big.bin", &pattern(5 * MIB));
    let answer = setup
        .client(
            CLIENT_KEY,
            CLIENT_SECRET,
            &["put-trailer", "too-big.bin", path_str(&big)],
        )
        .await;
    assert_eq!(
        (&answer["status"], &answer["code"]),
        (&json!(413), &json!("EntityTooLarge")),
        "{answer}"
    );
    assert_eq!(setup.stored("too-big.bin"), None);
}
