//! The target bucket: requests to the S3 origin, re-signed with the origin's credentials. The
//! body streams through as it arrives; the payload hash the client signed goes with it, so the
//! origin checks the bytes it receives against what the client signed. The origin's read timeout
//! applies to silences (of the client while it sends, of the origin once the body is complete),
//! never to the whole upload.
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
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use percent_encoding::utf8_percent_encode;

use edgefleet_config::S3Origin;

use super::{errors::S3Error, idle};
use crate::{
    error::{Error, Result},
    origin::{
        OriginBody,
        http::{OutgoingBody, PooledClient, pooled_client},
        s3::{KEY_ENCODE, read_secret},
    },
};

pub(crate) struct Bucket {
    pub(crate) origin: Arc<str>,
    pub(crate) name: String,
    pub(crate) region: String,
    scheme: String,
    /// `host[:port]` requests are sent to.
    host: String,
    /// `/bucket` in path style, empty in virtual-host style.
    bucket_path: String,
    credentials: Option<Credentials>,
    read_timeout: Duration,
    client: PooledClient,
}

impl Bucket {
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
            (Some(key_file), Some(secret_file)) => Some(Credentials::new(
                read_secret("the S3 access key id", key_file)?,
                read_secret("the S3 secret access key", secret_file)?,
                config
                    .session_token_file
                    .as_deref()
                    .map(|f| read_secret("the S3 session token", f))
                    .transpose()?,
                None,
                "edgefleet-config",
            )),
            _ => None,
        };
        Ok(Self {
            origin: config.id.as_str().into(),
            name: config.bucket.clone(),
            region: config.region.clone(),
            scheme: scheme.to_owned(),
            host,
            bucket_path,
            credentials,
            read_timeout: Duration::from_secs(config.read_timeout_seconds),
            client: pooled_client(Duration::from_secs(config.connect_timeout_seconds)),
        })
    }

    /// Sends one request for `key`. `query` is the operation's (already encoded, in S3's order);
    /// `payload` the hash the body is signed with.
    pub(crate) async fn send(
        &self,
        method: Method,
        key: &str,
        query: &str,
        mut headers: HeaderMap,
        payload: &str,
        body: OutgoingBody,
    ) -> Result<Response<OriginBody>, S3Error> {
        let failed = |reason: String| S3Error::bad_gateway(format!("origin {}: {reason}", self.origin));
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
        headers.insert(
            header::HOST,
            HeaderValue::from_str(&self.host).map_err(|e| failed(e.to_string()))?,
        );
        let (body, watch) = idle::watched(body, self.read_timeout);
        let mut request = Request::builder()
            .method(method)
            .uri(&url)
            .body(body)
            .map_err(|e| failed(format!("cannot form a request for {key:?}: {e}")))?;
        *request.headers_mut() = headers;
        if let Some(credentials) = &self.credentials {
            self.sign(&mut request, &url, payload, credentials)
                .map_err(|e| failed(format!("cannot sign the request: {e}")))?;
        } else if let Ok(value) = HeaderValue::from_str(payload) {
            request.headers_mut().insert(super::sigv4::CONTENT_SHA256, value);
        }
        let answer_due = async {
            watch.ended().await;
            tokio::time::sleep(self.read_timeout).await;
        };
        tokio::select! {
            answered = self.client.request(request) => match answered {
                Ok(response) => Ok(response.map(|b| OriginBody::new(b, self.origin.clone(), self.read_timeout))),
                Err(_) if watch.stalled() => Err(S3Error::new(
                    StatusCode::BAD_REQUEST,
                    "RequestTimeout",
                    format!(
                        "Your socket connection to the server was not read from or written to within the timeout period ({} s).",
                        self.read_timeout.as_secs()
                    ),
                )),
                Err(e) => Err(failed(innermost(&e))),
            },
            () = answer_due => Err(S3Error::new(
                StatusCode::GATEWAY_TIMEOUT,
                "GatewayTimeout",
                format!("origin {} did not answer within {} s of the upload's end", self.origin, self.read_timeout.as_secs()),
            )),
        }
    }

    fn sign(
        &self,
        request: &mut Request<OutgoingBody>,
        url: &str,
        payload: &str,
        credentials: &Credentials,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
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
        let signable = SignableRequest::new(
            request.method().as_str(),
            url,
            headers.into_iter(),
            SignableBody::Precomputed(payload.to_owned()),
        )?;
        let (instructions, _signature) = sign(signable, &params)?.into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

/// The innermost cause of a client error ("Connection refused"), which a person can act on.
fn innermost(error: &hyper_util::client::legacy::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
