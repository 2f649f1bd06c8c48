//! The upload port: an S3-compatible endpoint for PutObject and the multipart calls
//! (CreateMultipartUpload, UploadPart, CompleteMultipartUpload, AbortMultipartUpload) on the
//! bucket of one S3 origin.
//!
//! A request is checked in this order: the client's SigV4 signature against the client keys
//! (`sigv4`, `keys`), the operation and the object's address, the size limit (for multipart
//! uploads the sum of the parts, `ledger`); then it is sent on to the bucket re-signed with the
//! origin's credentials (`bucket`), the body streaming through without being held. What S3 makes
//! visible only at the end stays invisible on failure: a PUT cut short stores nothing, and a
//! multipart upload that goes over the limit or fails to complete is aborted at the origin.
//! After a write the edge purges its own cached copy of the object.
mod bucket;
mod errors;
mod idle;
mod keys;
mod ledger;
mod server;
mod sigv4;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header, request::Parts};
use http_body_util::{BodyExt, Empty, Full, Limited, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use parking_lot::RwLock;
use percent_encoding::{percent_decode_str, utf8_percent_encode};

use edgefleet_config::{EdgeConfig, Origin};

use crate::{
    cache::invalidation::PurgePattern,
    error::{Error, Result},
    metrics::UploadLabels,
    origin::{OriginBody, http::OutgoingBody, s3::KEY_ENCODE},
    state::Edge,
};
use bucket::Bucket;
use errors::{REQUEST_ID, S3Error};
use keys::ClientKeys;
use ledger::{Ledger, OverLimit};
pub(crate) use server::serve;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Response bodies of the upload port.
pub(crate) type UploadBody = UnsyncBoxBody<Bytes, BoxError>;

pub(crate) fn full(bytes: Bytes) -> UploadBody {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// S3's longest key, in bytes.
const MAX_KEY_BYTES: usize = 1024;
/// The largest CompleteMultipartUpload document accepted (10,000 parts fit easily).
const MAX_COMPLETE_BODY: usize = 4 << 20;
/// The largest XML answer read from the origin to look inside it.
const MAX_ORIGIN_XML: usize = 1 << 20;
/// Payload hashes of aws-chunked bodies; the one without a signature per chunk is passed on as
/// it is, the signed one cannot be (its chunk signatures use the client's key).
const STREAMING_UNSIGNED: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
const STREAMING_SIGNED_PREFIX: &str = "STREAMING-AWS4-";

/// Request headers passed to the bucket: the object's metadata, integrity checks and the body's
/// framing. Everything else (credentials, ACLs, copy sources...) stays at the edge.
const FORWARDED: [header::HeaderName; 8] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_DISPOSITION,
    header::CACHE_CONTROL,
    header::EXPIRES,
    header::HeaderName::from_static("content-md5"),
];
const FORWARDED_AMZ: [&str; 4] = [
    "x-amz-decoded-content-length",
    "x-amz-trailer",
    "x-amz-sdk-checksum-algorithm",
    "x-amz-checksum-algorithm",
];
const FORWARDED_AMZ_PREFIXES: [&str; 2] = ["x-amz-meta-", "x-amz-checksum-"];
/// Response headers passed back to the client.
const RETURNED: [&str; 4] = ["etag", "x-amz-version-id", "content-type", "content-length"];

/// The upload settings of one configuration, rebuilt (keys and credentials re-read) on every load.
pub(crate) struct Target {
    keys: ClientKeys,
    bucket: Bucket,
    max_object_bytes: u64,
}

impl Target {
    pub(crate) fn compile(config: &EdgeConfig) -> Result<Option<Self>> {
        let Some(upload) = &config.upload else {
            return Ok(None);
        };
        let origin = config
            .origins
            .iter()
            .find_map(|o| match o {
                Origin::S3(s3) if s3.id == upload.target_origin => Some(s3),
                _ => None,
            })
            .ok_or_else(|| Error::Origin {
                origin: upload.target_origin.clone(),
                reason: "upload.targetOrigin names no s3 origin".to_owned(),
            })?;
        Ok(Some(Self {
            keys: ClientKeys::load(&upload.client_keys_file)?,
            bucket: Bucket::new(origin)?,
            max_object_bytes: upload.max_object_bytes,
        }))
    }
}

/// The S3 calls served.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Operation {
    PutObject,
    CreateMultipartUpload,
    UploadPart { upload_id: String, number: u16 },
    CompleteMultipartUpload { upload_id: String },
    AbortMultipartUpload { upload_id: String },
}

impl Operation {
    fn parse(method: &Method, query: &[(String, String)], headers: &HeaderMap) -> Result<Self, S3Error> {
        let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        if headers.contains_key("x-amz-copy-source") {
            return Err(S3Error::not_implemented(
                "copying objects is not served by the upload endpoint",
            ));
        }
        let upload_id = get("uploadId").filter(|id| !id.is_empty());
        match (method, upload_id, get("partNumber")) {
            (&Method::PUT, None, None) => Ok(Self::PutObject),
            (&Method::POST, None, None) if get("uploads").is_some() => Ok(Self::CreateMultipartUpload),
            (&Method::PUT, Some(upload_id), Some(number)) => {
                let number = number
                    .parse::<u16>()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| {
                        S3Error::invalid_argument(
                            "Part number must be an integer between 1 and 10000, inclusive",
                        )
                    })?;
                Ok(Self::UploadPart { upload_id, number })
            }
            (&Method::POST, Some(upload_id), None) => Ok(Self::CompleteMultipartUpload { upload_id }),
            (&Method::DELETE, Some(upload_id), None) => Ok(Self::AbortMultipartUpload { upload_id }),
            (method, ..) => Err(S3Error::not_implemented(format!(
                "{method} with this query is not served here: only PutObject and the multipart upload calls are"
            ))),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Self::PutObject => "PutObject",
            Self::CreateMultipartUpload => "CreateMultipartUpload",
            Self::UploadPart { .. } => "UploadPart",
            Self::CompleteMultipartUpload { .. } => "CompleteMultipartUpload",
            Self::AbortMultipartUpload { .. } => "AbortMultipartUpload",
        }
    }
}

/// The upload port's state: the edge (cache, metrics), the upload settings of the configuration
/// in force, and the multipart ledger, which outlives configuration reloads.
pub(crate) struct Uploads {
    edge: Arc<Edge>,
    /// Replaced by every reload; `None` once a reload removed the `upload` section.
    target: RwLock<Option<Arc<Target>>>,
    ledger: Ledger,
    requests: AtomicU64,
    started: u64,
}

impl Uploads {
    pub(crate) fn new(edge: Arc<Edge>, target: Option<Target>) -> Self {
        Self {
            edge,
            target: RwLock::new(target.map(Arc::new)),
            ledger: Ledger::default(),
            requests: AtomicU64::new(0),
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
        }
    }

    /// The upload settings of a newly applied configuration.
    pub(crate) fn set_target(&self, target: Option<Target>) {
        *self.target.write() = target.map(Arc::new);
    }

    pub(crate) async fn handle(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<UploadBody> {
        let request_id = format!(
            "{:08X}{:08X}",
            self.started & 0xFFFF_FFFF,
            self.requests.fetch_add(1, Ordering::Relaxed)
        );
        let resource = request.uri().path().to_owned();
        let method = request.method().clone();
        let mut operation = "Unknown";
        let outcome = self.serve(request, &mut operation).await;
        let result = match &outcome {
            Ok(response) if response.status().is_success() => "ok",
            Ok(_) => "OriginError",
            Err(e) => e.code,
        };
        self.edge
            .metrics
            .uploads
            .get_or_create(&UploadLabels { operation, result })
            .inc();
        let mut response = match outcome {
            Ok(response) => {
                tracing::info!(%client, %method, path = %resource, operation, status = response.status().as_u16(), request_id, "upload request");
                response
            }
            Err(error) => {
                tracing::info!(%client, %method, path = %resource, operation, code = error.code, message = %error.message, request_id, "upload request refused");
                error.response(&resource, &request_id)
            }
        };
        if let Ok(id) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID, id);
        }
        response
    }

    async fn serve(
        &self,
        request: Request<Incoming>,
        operation_label: &mut &'static str,
    ) -> Result<Response<UploadBody>, S3Error> {
        let target = self.target.read().clone();
        let Some(target) = target.as_deref() else {
            return Err(S3Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "uploads are not configured on this edge",
            ));
        };
        let (parts, body) = request.into_parts();
        let query = sigv4::query_pairs(parts.uri.query());
        // Known before authentication for the metrics; refused only once the caller is known.
        let operation = Operation::parse(&parts.method, &query, &parts.headers);
        if let Ok(operation) = &operation {
            *operation_label = operation.label();
        }
        let claim = authenticate(target, &parts, &query)?;
        let operation = operation?;
        let key = object_key(&parts, &target.bucket.name)?;
        let payload = claim.payload.as_str();
        if payload.starts_with(STREAMING_SIGNED_PREFIX) {
            return Err(S3Error::not_implemented(format!(
                "{payload} (a signature per chunk) is not supported; sign the payload's SHA-256, or send UNSIGNED-PAYLOAD or {STREAMING_UNSIGNED}"
            )));
        }
        let hashed = payload.len() == 64 && payload.bytes().all(|b| b.is_ascii_hexdigit());
        if !(hashed || payload == sigv4::UNSIGNED_PAYLOAD || payload == STREAMING_UNSIGNED) {
            return Err(S3Error::invalid_argument(format!(
                "x-amz-content-sha256 {payload:?} is not a SHA-256, UNSIGNED-PAYLOAD or {STREAMING_UNSIGNED}"
            )));
        }
        let call = Call {
            target,
            key: &key,
            headers: forwarded(&parts.headers),
            payload,
        };
        match operation {
            Operation::PutObject => self.put_object(call, &parts.headers, body).await,
            Operation::CreateMultipartUpload => self.create_multipart(call).await,
            Operation::UploadPart { upload_id, number } => {
                self.upload_part(call, &parts.headers, body, &upload_id, number)
                    .await
            }
            Operation::CompleteMultipartUpload { upload_id } => self.complete(call, body, &upload_id).await,
            Operation::AbortMultipartUpload { upload_id } => {
                let response = call
                    .send(Method::DELETE, &upload_query(&upload_id), empty())
                    .await?;
                if response.status().is_success() {
                    self.ledger.finish(&upload_id);
                }
                relay(response, &call.target.bucket)
            }
        }
    }

    async fn put_object(
        &self,
        call: Call<'_>,
        headers: &HeaderMap,
        body: Incoming,
    ) -> Result<Response<UploadBody>, S3Error> {
        let size = object_size(headers, call.payload)?;
        if size > call.target.max_object_bytes {
            return Err(S3Error::too_large(size, call.target.max_object_bytes));
        }
        let response = call.send(Method::PUT, "", self.counted(body)).await?;
        if response.status().is_success() {
            self.purge(call.key).await;
        }
        relay(response, &call.target.bucket)
    }

    async fn create_multipart(&self, call: Call<'_>) -> Result<Response<UploadBody>, S3Error> {
        let response = call.send(Method::POST, "uploads=", empty()).await?;
        if !response.status().is_success() {
            return relay(response, &call.target.bucket);
        }
        let (head, xml) = read_xml(response, &call.target.bucket).await?;
        match element(&xml, "UploadId") {
            Some(upload_id) => self.ledger.start(&upload_id),
            None => {
                return Err(S3Error::bad_gateway(
                    "the origin's CreateMultipartUpload answer has no UploadId",
                ));
            }
        }
        Ok(rebuild(head, xml))
    }

    async fn upload_part(
        &self,
        call: Call<'_>,
        headers: &HeaderMap,
        body: Incoming,
        upload_id: &str,
        number: u16,
    ) -> Result<Response<UploadBody>, S3Error> {
        let size = object_size(headers, call.payload)?;
        let limit = call.target.max_object_bytes;
        let previous = match self.ledger.reserve(upload_id, number, size, limit) {
            Ok(previous) => previous,
            Err(OverLimit(total)) => {
                // The object can never be completed: drop what the origin holds of it now.
                self.abort(&call, upload_id).await;
                return Err(S3Error::too_large(total, limit));
            }
        };
        let query = format!("partNumber={number}&uploadId={}", encode(upload_id));
        let sent = call.send(Method::PUT, &query, self.counted(body)).await;
        if !sent.as_ref().is_ok_and(|r| r.status().is_success()) {
            self.ledger.release(upload_id, number, previous);
        }
        relay(sent?, &call.target.bucket)
    }

    async fn complete(
        &self,
        call: Call<'_>,
        body: Incoming,
        upload_id: &str,
    ) -> Result<Response<UploadBody>, S3Error> {
        let document = Limited::new(body, MAX_COMPLETE_BODY)
            .collect()
            .await
            .map_err(|e| {
                S3Error::new(
                    StatusCode::BAD_REQUEST,
                    "MalformedXML",
                    format!("cannot read the parts list: {e}"),
                )
            })?
            .to_bytes();
        let body = Full::new(document).map_err(|never| match never {}).boxed_unsync();
        let response = match call.send(Method::POST, &upload_query(upload_id), body).await {
            Ok(response) => response,
            Err(e) => {
                self.abort(&call, upload_id).await;
                return Err(e);
            }
        };
        // Nothing partial becomes visible: on any failure the parts go with the upload.
        if !response.status().is_success() {
            self.abort(&call, upload_id).await;
            return relay(response, &call.target.bucket);
        }
        let (head, xml) = match read_xml(response, &call.target.bucket).await {
            Ok(answer) => answer,
            Err(e) => {
                self.abort(&call, upload_id).await;
                return Err(e);
            }
        };
        // S3 may answer 200 and still fail: the error is then in the document.
        if xml.contains("<Error>") {
            self.abort(&call, upload_id).await;
            return Ok(rebuild_with(head, xml, StatusCode::INTERNAL_SERVER_ERROR));
        }
        self.ledger.finish(upload_id);
        self.purge(call.key).await;
        Ok(rebuild(head, xml))
    }

    /// Aborts a multipart upload at the origin; a failure is logged (the bucket's lifecycle
    /// rules are the last resort for parts left behind).
    async fn abort(&self, call: &Call<'_>, upload_id: &str) {
        self.ledger.finish(upload_id);
        let headers = HeaderMap::new();
        let abort = Call {
            target: call.target,
            key: call.key,
            headers,
            payload: sigv4::UNSIGNED_PAYLOAD,
        };
        match abort
            .send(Method::DELETE, &upload_query(upload_id), empty())
            .await
        {
            Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_FOUND => {
                tracing::info!(key = %call.key, upload_id, "multipart upload aborted at the origin");
            }
            Ok(r) => {
                tracing::warn!(key = %call.key, upload_id, status = r.status().as_u16(), "the origin refused to abort a multipart upload")
            }
            Err(e) => {
                tracing::warn!(key = %call.key, upload_id, error = %e.message, "cannot abort a multipart upload at the origin")
            }
        }
    }

    /// The request body on its way to the origin, counted as it passes.
    fn counted(&self, body: Incoming) -> OutgoingBody {
        let bytes = self.edge.metrics.upload_bytes.clone();
        body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                bytes.inc_by(data.len() as u64);
            }
            frame
        })
        .boxed_unsync()
    }

    /// Removes the edge's cached copy of a written object (every variant, query strings included).
    async fn purge(&self, key: &str) {
        let path = format!("/{}", utf8_percent_encode(key, KEY_ENCODE));
        let patterns: Vec<(PurgePattern, String)> = [path.clone(), format!("{path}?*")]
            .into_iter()
            .filter_map(|p| Some((PurgePattern::parse(&p).ok()?, p)))
            .collect();
        match self.edge.cache.purge(&patterns).await {
            Ok(count) => {
                tracing::debug!(%path, objects = count.objects, "purged the uploaded object's cached copy")
            }
            Err(e) => tracing::warn!(%path, error = %e, "cannot purge the uploaded object's cached copy"),
        }
    }
}

/// One request to the bucket for the object being written.
struct Call<'a> {
    target: &'a Target,
    key: &'a str,
    headers: HeaderMap,
    payload: &'a str,
}

impl Call<'_> {
    async fn send(
        &self,
        method: Method,
        query: &str,
        body: OutgoingBody,
    ) -> Result<Response<OriginBody>, S3Error> {
        self.target
            .bucket
            .send(method, self.key, query, self.headers.clone(), self.payload, body)
            .await
    }
}

fn authenticate(target: &Target, parts: &Parts, query: &[(String, String)]) -> Result<sigv4::Claim, S3Error> {
    let claim = sigv4::claim(&parts.headers, query)?.ok_or_else(|| {
        S3Error::access_denied("anonymous uploads are not allowed: sign the request with SigV4")
    })?;
    let secret = target.keys.secret(&claim.access_key_id).ok_or_else(|| {
        S3Error::new(
            StatusCode::FORBIDDEN,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        )
    })?;
    let signed = sigv4::Signed {
        method: &parts.method,
        path: parts.uri.path(),
        query,
        headers: &parts.headers,
    };
    sigv4::verify(&claim, &signed, secret, target.bucket.region(), SystemTime::now())?;
    Ok(claim)
}

/// The object key a request addresses: path style (`/bucket/key`) or virtual-host style
/// (`Host: bucket.edge...`, `/key`). Only the target bucket exists here.
fn object_key(parts: &Parts, bucket: &str) -> Result<String, S3Error> {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let path = parts.uri.path().strip_prefix('/').unwrap_or(parts.uri.path());
    let virtual_host = host
        .strip_prefix(bucket)
        .is_some_and(|rest| rest.starts_with('.'));
    let (named, raw_key) = if virtual_host {
        (bucket, path)
    } else {
        path.split_once('/').unwrap_or((path, ""))
    };
    if named != bucket {
        return Err(S3Error::new(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            format!("The specified bucket does not exist: only {bucket} takes uploads here"),
        ));
    }
    let key = percent_decode_str(raw_key)
        .decode_utf8()
        .map_err(|_| S3Error::invalid_argument("the object key is not UTF-8"))?;
    if key.is_empty() {
        return Err(S3Error::not_implemented(
            "bucket operations are not served here; name an object",
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "KeyTooLongError",
            format!("Your key is too long (at most {MAX_KEY_BYTES} bytes)"),
        ));
    }
    // Such keys could never be served through the edge (it refuses dot segments), and some
    // stores would resolve them out of the bucket.
    let unsafe_key =
        key.split('/').any(|s| s == "." || s == "..") || key.chars().any(|c| c == '\\' || c.is_control());
    if unsafe_key {
        return Err(S3Error::invalid_argument(
            "object keys with '.' or '..' segments, backslashes or control characters are refused",
        ));
    }
    Ok(key.into_owned())
}

/// The object's size as the client declares it; the origin holds the body to it.
fn object_size(headers: &HeaderMap, payload: &str) -> Result<u64, S3Error> {
    let name = if payload == STREAMING_UNSIGNED {
        "x-amz-decoded-content-length"
    } else {
        "content-length"
    };
    headers
        .get(name)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .ok_or_else(|| {
            S3Error::new(
                StatusCode::LENGTH_REQUIRED,
                "MissingContentLength",
                format!("You must provide the {name} HTTP header."),
            )
        })
}

fn forwarded(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        let keep = FORWARDED.contains(name)
            || FORWARDED_AMZ.contains(&n)
            || FORWARDED_AMZ_PREFIXES.iter().any(|p| n.starts_with(p));
        if keep {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

fn upload_query(upload_id: &str) -> String {
    format!("uploadId={}", encode(upload_id))
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn empty() -> OutgoingBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The origin's answer, passed on; a 403 means the edge's own credentials were refused, which
/// the client must not take for a problem with its signature.
fn relay(response: Response<OriginBody>, bucket: &Bucket) -> Result<Response<UploadBody>, S3Error> {
    if response.status() == StatusCode::FORBIDDEN {
        return Err(S3Error::bad_gateway(format!(
            "the origin {} refused the edge's credentials for bucket {}",
            bucket.origin, bucket.name
        )));
    }
    let (head, body) = response.into_parts();
    let mut out = Response::new(body.map_err(|e| Box::new(e) as BoxError).boxed_unsync());
    *out.status_mut() = head.status;
    copy_returned(&head.headers, out.headers_mut());
    Ok(out)
}

fn copy_returned(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if RETURNED.contains(&name.as_str()) || name.as_str().starts_with("x-amz-checksum-") {
            to.append(name.clone(), value.clone());
        }
    }
}

async fn read_xml(
    response: Response<OriginBody>,
    bucket: &Bucket,
) -> Result<(http::response::Parts, String), S3Error> {
    let (head, body) = response.into_parts();
    let bytes = Limited::new(body, MAX_ORIGIN_XML)
        .collect()
        .await
        .map_err(|e| S3Error::bad_gateway(format!("reading the answer of origin {}: {e}", bucket.origin)))?
        .to_bytes();
    Ok((head, String::from_utf8_lossy(&bytes).into_owned()))
}

fn rebuild(head: http::response::Parts, xml: String) -> Response<UploadBody> {
    let status = head.status;
    rebuild_with(head, xml, status)
}

fn rebuild_with(head: http::response::Parts, xml: String, status: StatusCode) -> Response<UploadBody> {
    let mut out = Response::new(full(Bytes::from(xml)));
    *out.status_mut() = status;
    copy_returned(&head.headers, out.headers_mut());
    // The length is the document's, set by hyper.
    out.headers_mut().remove(header::CONTENT_LENGTH);
    out
}

/// The text of the first `<name>` element, unescaped (S3's answers are flat enough for this).
fn element(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, uri: &str, host: &str) -> Parts {
        let (parts, ()) = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", host)
            .body(())
            .expect("request")
            .into_parts();
        parts
    }

    #[test]
    fn operations_from_method_and_query() {
        let op = |m: Method, q: &str| {
            Operation::parse(&m, &sigv4::query_pairs(Some(q)), &HeaderMap::new()).map_err(|e| e.code)
        };
        assert_eq!(op(Method::PUT, ""), Ok(Operation::PutObject));
        assert_eq!(op(Method::POST, "uploads"), Ok(Operation::CreateMultipartUpload));
        assert_eq!(
            op(Method::PUT, "partNumber=2&uploadId=a%2Bb"),
            Ok(Operation::UploadPart {
                upload_id: "a+b".into(),
                number: 2
            })
        );
        assert_eq!(op(Method::PUT, "partNumber=0&uploadId=x"), Err("InvalidArgument"));
        assert_eq!(
            op(Method::POST, "uploadId=x"),
            Ok(Operation::CompleteMultipartUpload {
                upload_id: "x".into()
            })
        );
        assert_eq!(
            op(Method::DELETE, "uploadId=x"),
            Ok(Operation::AbortMultipartUpload {
                upload_id: "x".into()
            })
        );
        for (m, q) in [
            (Method::GET, ""),
            (Method::DELETE, ""),
            (Method::POST, "delete"),
            (Method::GET, "uploads"),
        ] {
            assert_eq!(op(m.clone(), q), Err("NotImplemented"), "{m} ?{q}");
        }
        let mut copy = HeaderMap::new();
        copy.insert("x-amz-copy-source", HeaderValue::from_static("/b/k"));
        assert!(Operation::parse(&Method::PUT, &[], &copy).is_err());
    }

    #[test]
    fn keys_in_path_and_virtual_host_style_never_leave_the_bucket() {
        let key =
            |uri: &str, host: &str| object_key(&parts(Method::PUT, uri, host), "uploads").map_err(|e| e.code);
        assert_eq!(key("/uploads/a/b%20c.txt", "edge:8090"), Ok("a/b c.txt".into()));
        assert_eq!(key("/a/b.txt", "uploads.edge.example"), Ok("a/b.txt".into()));
        assert_eq!(key("/other/a.txt", "edge:8090"), Err("NoSuchBucket"));
        assert_eq!(key("/uploads", "edge:8090"), Err("NotImplemented"));
        assert_eq!(key("/uploads/", "edge:8090"), Err("NotImplemented"));
        for bad in [
            "/uploads/../other/x",
            "/uploads/a/%2e%2e/x",
            "/uploads/a%5cb",
            "/uploads/a%00",
            "/uploads/%ff",
        ] {
            assert_eq!(key(bad, "edge"), Err("InvalidArgument"), "{bad}");
        }
        let long = format!("/uploads/{}", "k".repeat(MAX_KEY_BYTES + 1));
        assert_eq!(key(&long, "edge"), Err("KeyTooLongError"));
    }

    #[test]
    fn sizes_come_from_the_decoded_length_of_chunked_bodies() {
        let mut headers = HeaderMap::new();
        headers.insert("content-length", HeaderValue::from_static("120"));
        assert_eq!(object_size(&headers, sigv4::UNSIGNED_PAYLOAD), Ok(120));
        assert_eq!(
            object_size(&headers, STREAMING_UNSIGNED).map_err(|e| e.code),
            Err("MissingContentLength")
        );
        headers.insert("x-amz-decoded-content-length", HeaderValue::from_static("100"));
        assert_eq!(object_size(&headers, STREAMING_UNSIGNED), Ok(100));
    }

    #[test]
    fn only_object_headers_are_forwarded() {
        let mut headers = HeaderMap::new();
        for (n, v) in [
            ("content-type", "text/plain"),
            ("x-amz-meta-owner", "a"),
            ("x-amz-checksum-crc32", "AAAAAA=="),
            ("authorization", "AWS4-HMAC-SHA256 ..."),
            ("x-amz-acl", "public-read"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ("expect", "100-continue"),
        ] {
            headers.insert(header::HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let forwarded = forwarded(&headers);
        let mut kept: Vec<&str> = forwarded.keys().map(|n| n.as_str()).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["content-type", "x-amz-checksum-crc32", "x-amz-meta-owner"]);
    }

    #[test]
    fn upload_ids_are_read_from_the_answer() {
        let xml = "<?xml version=\"1.0\"?><InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>abc-123</UploadId></InitiateMultipartUploadResult>";
        assert_eq!(element(xml, "UploadId").as_deref(), Some("abc-123"));
        assert_eq!(
            element("<UploadId>a&amp;b&lt;c</UploadId>", "UploadId").as_deref(),
            Some("a&b<c")
        );
        assert_eq!(element(xml, "Missing"), None);
    }
}
