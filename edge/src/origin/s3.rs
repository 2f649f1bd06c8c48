//! S3-compatible origins: GET/HEAD of objects, signed with SigV4 (the `aws-sigv4` crate) when
//! credentials are configured, in path style (`endpoint/bucket/key`) or virtual-host style
//! (`bucket.endpoint/key`).
//!
//! Only object reads are ever sent: the key comes from a path the proxy has already refused if it
//! had dot segments, an empty key (which would address the bucket itself) is refused here, and
//! viewers' query strings are never forwarded (S3 reads `?acl`, `?list-type`... as operations).
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use aws_credential_types::Credentials;
use aws_sigv4::{
    http_request::{
        PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
        UriPathNormalizationMode, sign,
    },
    sign::v4,
};
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::{BodyExt, Empty};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use edgefleet_config::S3Origin;

use super::{
    OriginBody, OriginError, OriginRequest,
    http::{OutgoingBody, PooledClient, pooled_client, send},
};
use crate::{
    error::{Error, Result},
    secret::read_secret,
};

/// S3's unreserved characters plus `/`, which separates key segments and stays literal.
pub(crate) const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Request headers that S3 should see: conditionals (for revalidation), and a range with its
/// condition (for a reader continuing on its own; viewers' ranges never reach an origin).
const FORWARDED: [header::HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::RANGE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

pub(crate) struct S3Client {
    id: Arc<str>,
    endpoint: S3Endpoint,
    read_timeout: Duration,
    client: PooledClient,
}

/// Where an S3 origin's requests go and how they are signed: shared by object reads
/// ([`S3Client`]) and uploads (`upload::Bucket`), so both address and sign the same way.
pub(crate) struct S3Endpoint {
    scheme: String,
    /// `host[:port]` requests are sent to.
    host: String,
    /// Prefix of every object path: `/bucket` in path style, empty in virtual-host style.
    bucket_path: String,
    region: String,
    credentials: Option<Credentials>,
}

/// Why a request could not be signed (the `aws-sigv4` crate's errors have no common type).
pub(crate) type SigningError = Box<dyn std::error::Error + Send + Sync>;

impl S3Endpoint {
    pub(crate) fn new(config: &S3Origin) -> Result<Self> {
        let invalid = |reason: String| Error::Origin {
            origin: config.id.clone(),
            reason,
        };
        let endpoint: http::Uri = config
            .endpoint
            .parse()
            .map_err(|e| invalid(format!("invalid endpoint {:?}: {e}", config.endpoint)))?;
        let (Some(scheme), Some(authority)) = (endpoint.scheme_str(), endpoint.authority()) else {
            return Err(invalid(format!(
                "endpoint {:?} must be absolute",
                config.endpoint
            )));
        };
        let (host, bucket_path) = if config.path_style {
            (authority.to_string(), format!("/{}", config.bucket))
        } else {
            (format!("{}.{authority}", config.bucket), String::new())
        };
        let credentials = match (&config.access_key_id_file, &config.secret_access_key_file) {
            (Some(key_file), Some(secret_file)) => {
                let key = read_secret("the S3 access key id", key_file)?;
                let secret = read_secret("the S3 secret access key", secret_file)?;
                let token = config
                    .session_token_file
                    .as_deref()
                    .map(|f| read_secret("the S3 session token", f))
                    .transpose()?;
                Some(Credentials::new(key, secret, token, None, "edgefleet-config"))
            }
            _ => None,
        };
        Ok(Self {
            scheme: scheme.to_owned(),
            host,
            bucket_path,
            region: config.region.clone(),
            credentials,
        })
    }

    /// `host[:port]`, the `Host` header of every request.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn region(&self) -> &str {
        &self.region
    }

    /// Anonymous access: requests go unsigned.
    pub(crate) fn is_anonymous(&self) -> bool {
        self.credentials.is_none()
    }

    /// The URL of `key`, with `query` (already encoded, in S3's order) when not empty.
    pub(crate) fn url(&self, key: &str, query: &str) -> String {
        let mut url = format!(
            "{}://{}{}/{}",
            self.scheme,
            self.host,
            self.bucket_path,
            utf8_percent_encode(key, KEY_ENCODE)
        );
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    /// Signs `request` (sent to `url`, with the headers it already has) for S3; nothing to do
    /// for an anonymous origin.
    pub(crate) fn sign(
        &self,
        request: &mut Request<OutgoingBody>,
        url: &str,
        body: SignableBody<'_>,
    ) -> Result<(), SigningError> {
        let Some(credentials) = &self.credentials else {
            return Ok(());
        };
        let mut settings = SigningSettings::default();
        // S3 signs the path as sent (single encoding, no normalization) and wants the payload hash.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let identity = credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()?
            .into();
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
            .collect();
        let signable = SignableRequest::new(request.method().as_str(), url, headers.into_iter(), body)?;
        let (instructions, _signature) = sign(signable, &params)?.into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

impl S3Client {
    pub(crate) fn new(config: &S3Origin) -> Result<Self> {
        Ok(Self {
            id: config.id.as_str().into(),
            endpoint: S3Endpoint::new(config)?,
            read_timeout: Duration::from_secs(config.read_timeout_seconds),
            client: pooled_client(Duration::from_secs(config.connect_timeout_seconds)),
        })
    }

    pub(crate) fn id(&self) -> &Arc<str> {
        &self.id
    }

    pub(crate) async fn send(&self, request: &OriginRequest) -> Result<Response<OriginBody>, OriginError> {
        if request.method != Method::GET && request.method != Method::HEAD {
            return Err(OriginError::Refused {
                status: http::StatusCode::METHOD_NOT_ALLOWED,
                reason: format!("S3 origin {} serves only GET and HEAD", self.id),
            });
        }
        let key = object_key(&request.path).ok_or_else(|| OriginError::Refused {
            status: http::StatusCode::NOT_FOUND,
            reason: format!("no object for path {:?}", request.path),
        })?;
        let url = self.endpoint.url(&key, "");
        let mut outgoing: Request<OutgoingBody> = Request::builder()
            .method(request.method.clone())
            .uri(&url)
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .map_err(|e| OriginError::Refused {
                status: http::StatusCode::NOT_FOUND,
                reason: format!("cannot form an S3 request for {key:?}: {e}"),
            })?;
        let headers = outgoing.headers_mut();
        for name in FORWARDED {
            if let Some(v) = request.headers.get(&name) {
                headers.insert(name, v.clone());
            }
        }
        headers.insert(
            header::HOST,
            HeaderValue::from_str(self.endpoint.host()).map_err(|e| OriginError::Refused {
                status: http::StatusCode::NOT_FOUND,
                reason: e.to_string(),
            })?,
        );
        self.endpoint
            .sign(&mut outgoing, &url, SignableBody::Bytes(&[]))
            .map_err(|e| OriginError::Unreachable {
                origin: self.id.clone(),
                reason: format!("cannot sign the request: {e}"),
            })?;
        send(&self.client, &self.id, outgoing, self.read_timeout).await
    }
}

/// The object key for a request path: percent-decoded, without the leading `/`. `None` when the
/// path would address the bucket itself or escape it.
fn object_key(path: &str) -> Option<String> {
    let decoded = percent_decode_str(path).decode_utf8().ok()?;
    let key = decoded.strip_prefix('/')?;
    let escapes = key.split('/').any(|s| s == "." || s == "..") || key.contains('\\') || key.contains('\0');
    (!key.is_empty() && !escapes).then(|| key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_escape_or_address_the_bucket() {
        assert_eq!(object_key("/a/b%20c.txt").as_deref(), Some("a/b c.txt"));
        for bad in [
            "/",
            "",
            "/a/../b",
            "/a/%2e%2e/b",
            "/%2E%2E/x",
            "/./a",
            "/a\\..\\b",
            "/a%00b",
            "/%ff",
        ] {
            assert_eq!(object_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_are_encoded_like_s3_expects() {
        assert_eq!(
            utf8_percent_encode("a b/ü+&.txt", KEY_ENCODE).to_string(),
            "a%20b/%C3%BC%2B%26.txt"
        );
    }
}
