//! The target bucket: requests to the S3 origin, re-signed with the origin's credentials. The
//! body streams through as it arrives; the payload hash the client signed goes with it, so the
//! origin checks the bytes it receives against what the client signed. The origin's read timeout
//! applies to silences (of the client while it sends, of the origin once the body is complete),
//! never to the whole upload.
use std::{sync::Arc, time::Duration};

use aws_sigv4::http_request::SignableBody;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use edgefleet_config::S3Origin;

use super::{errors::S3Error, idle};
use crate::{
    error::Result,
    origin::{
        OriginBody,
        http::{OutgoingBody, PooledClient, innermost_cause, pooled_client},
        s3::S3Endpoint,
    },
};

pub(crate) struct Bucket {
    pub(crate) origin: Arc<str>,
    pub(crate) name: String,
    endpoint: S3Endpoint,
    read_timeout: Duration,
    client: PooledClient,
}

impl Bucket {
    pub(crate) fn new(config: &S3Origin) -> Result<Self> {
        Ok(Self {
            origin: config.id.as_str().into(),
            name: config.bucket.clone(),
            endpoint: S3Endpoint::new(config)?,
            read_timeout: Duration::from_secs(config.read_timeout_seconds),
            client: pooled_client(Duration::from_secs(config.connect_timeout_seconds)),
        })
    }

    /// The region requests are signed for, which clients must sign for too.
    pub(crate) fn region(&self) -> &str {
        self.endpoint.region()
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
        let url = self.endpoint.url(key, query);
        headers.insert(
            header::HOST,
            HeaderValue::from_str(self.endpoint.host()).map_err(|e| failed(e.to_string()))?,
        );
        let (body, watch) = idle::watched(body, self.read_timeout);
        let mut request = Request::builder()
            .method(method)
            .uri(&url)
            .body(body)
            .map_err(|e| failed(format!("cannot form a request for {key:?}: {e}")))?;
        *request.headers_mut() = headers;
        if self.endpoint.is_anonymous() {
            // Unsigned, the payload hash still tells the origin how the body is encoded
            // (aws-chunked streams) and what to check it against.
            if let Ok(value) = HeaderValue::from_str(payload) {
                request.headers_mut().insert(super::sigv4::CONTENT_SHA256, value);
            }
        } else {
            self.endpoint
                .sign(&mut request, &url, SignableBody::Precomputed(payload.to_owned()))
                .map_err(|e| failed(format!("cannot sign the request: {e}")))?;
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
                Err(e) => Err(failed(innermost_cause(&e))),
            },
            () = answer_due => Err(S3Error::new(
                StatusCode::GATEWAY_TIMEOUT,
                "GatewayTimeout",
                format!("origin {} did not answer within {} s of the upload's end", self.origin, self.read_timeout.as_secs()),
            )),
        }
    }
}
