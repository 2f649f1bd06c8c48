//! Checks a client's AWS Signature Version 4, in the `Authorization` header or in a presigned
//! URL's query. The canonical request and string to sign are built here (the thin, S3-specific
//! part); key derivation and the HMAC come from `aws-sigv4`, the crate that signs the edge's own
//! S3 requests. The payload hash the client signed is not checked against the body here: it is
//! passed to the origin under the edge's signature, and the origin checks it while the body
//! streams through, so nothing is buffered.
use std::time::{Duration, SystemTime};

use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};
use http::{HeaderMap, Method, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::errors::S3Error;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's date may be from the edge's clock (S3's limit).
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// The longest validity of a presigned URL (S3's limit: 7 days).
const MAX_EXPIRES: u64 = 7 * 24 * 3600;
/// SigV4's URI encoding: everything but the unreserved characters.
const URI_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub(crate) const CONTENT_SHA256: &str = "x-amz-content-sha256";
/// The payload hash of a presigned request.
pub(crate) const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// What a request claims about its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) access_key_id: String,
    /// `YYYYMMDDTHHMMSSZ`.
    amz_date: String,
    date: SystemTime,
    scope_date: String,
    pub(crate) region: String,
    service: String,
    /// Lowercase, in the order signed.
    signed_headers: Vec<String>,
    signature: String,
    /// The payload hash signed: a hex SHA-256, `UNSIGNED-PAYLOAD` or a streaming form.
    pub(crate) payload: String,
    /// Seconds a presigned URL is valid; `None` for header authentication.
    expires: Option<u64>,
}

/// The query string split into decoded pairs, in order.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
            (decode(k), decode(v))
        })
        .collect()
}

/// Reads the signature claim from the `Authorization` header or the presigned query. `None`:
/// the request is anonymous.
pub(crate) fn claim(headers: &HeaderMap, query: &[(String, String)]) -> Result<Option<Claim>, S3Error> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| S3Error::malformed("the Authorization header is not text"))?;
        return header_claim(value, headers).map(Some);
    }
    if query.iter().any(|(k, _)| k == "X-Amz-Signature") {
        return query_claim(query).map(Some);
    }
    if query.iter().any(|(k, _)| k == "AWSAccessKeyId") {
        return Err(S3Error::invalid_argument(
            "Signature Version 2 is not supported; presign with AWS4-HMAC-SHA256 (signature_version s3v4)",
        ));
    }
    Ok(None)
}

fn header_claim(value: &str, headers: &HeaderMap) -> Result<Claim, S3Error> {
    let Some(fields) = value.strip_prefix(ALGORITHM).and_then(|r| r.strip_prefix(' ')) else {
        return Err(if value.starts_with("AWS ") {
            S3Error::invalid_argument("Signature Version 2 is not supported; sign with AWS4-HMAC-SHA256")
        } else {
            S3Error::malformed(format!("the authorization algorithm must be {ALGORITHM}"))
        });
    };
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for field in fields.split(',') {
        match field.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(S3Error::malformed(
            "the Authorization header needs Credential, SignedHeaders and Signature",
        ));
    };
    let amz_date = header_text(headers, "x-amz-date")
        .ok_or_else(|| S3Error::access_denied("the request has no x-amz-date header"))?;
    let payload = header_text(headers, CONTENT_SHA256).ok_or_else(|| {
        S3Error::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "Missing required header for this request: x-amz-content-sha256",
        )
    })?;
    build(credential, signed, signature, amz_date, payload.to_owned(), None)
}

fn query_claim(query: &[(String, String)]) -> Result<Claim, S3Error> {
    let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if get("X-Amz-Algorithm") != Some(ALGORITHM) {
        return Err(S3Error::malformed(format!("X-Amz-Algorithm must be {ALGORITHM}")));
    }
    let (Some(credential), Some(signed), Some(signature), Some(date), Some(expires)) = (
        get("X-Amz-Credential"),
        get("X-Amz-SignedHeaders"),
        get("X-Amz-Signature"),
        get("X-Amz-Date"),
        get("X-Amz-Expires"),
    ) else {
        return Err(S3Error::malformed(
            "a presigned URL needs X-Amz-Credential, X-Amz-SignedHeaders, X-Amz-Signature, X-Amz-Date and X-Amz-Expires",
        ));
    };
    let expires = expires
        .parse::<u64>()
        .ok()
        .filter(|e| (1..=MAX_EXPIRES).contains(e))
        .ok_or_else(|| S3Error::malformed(format!("X-Amz-Expires must be 1 to {MAX_EXPIRES} seconds")))?;
    build(
        credential,
        signed,
        signature,
        date,
        UNSIGNED_PAYLOAD.to_owned(),
        Some(expires),
    )
}

fn build(
    credential: &str,
    signed: &str,
    signature: &str,
    amz_date: &str,
    payload: String,
    expires: Option<u64>,
) -> Result<Claim, S3Error> {
    // AKID/date/region/service/aws4_request; the key id itself never contains '/'.
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key_id, scope_date, region, service, "aws4_request"] = parts[..] else {
        return Err(S3Error::malformed(format!(
            "the credential {credential:?} is not KEY/DATE/REGION/SERVICE/aws4_request"
        )));
    };
    let date = parse_amz_date(amz_date)
        .ok_or_else(|| S3Error::access_denied(format!("x-amz-date {amz_date:?} is not YYYYMMDDTHHMMSSZ")))?;
    if !amz_date.starts_with(scope_date) || scope_date.len() != 8 {
        return Err(S3Error::malformed(format!(
            "the credential's date {scope_date} is not the request's date {amz_date}"
        )));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_owned).collect();
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(S3Error::access_denied("the host header must be signed"));
    }
    Ok(Claim {
        access_key_id: access_key_id.to_owned(),
        amz_date: amz_date.to_owned(),
        date,
        scope_date: scope_date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers,
        signature: signature.to_owned(),
        payload,
        expires,
    })
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let civil = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", text).ok()?;
    let zoned = civil.to_zoned(jiff::tz::TimeZone::UTC).ok()?;
    Some(SystemTime::from(zoned.timestamp()))
}

/// The parts of the request the signature covers.
pub(crate) struct Signed<'a> {
    pub(crate) method: &'a Method,
    /// The path as received (S3 signs it without normalizing or re-encoding).
    pub(crate) path: &'a str,
    pub(crate) query: &'a [(String, String)],
    pub(crate) headers: &'a HeaderMap,
}

/// Checks the claim against `secret`, the region served and the clock.
pub(crate) fn verify(
    claim: &Claim,
    request: &Signed<'_>,
    secret: &str,
    region: &str,
    now: SystemTime,
) -> Result<(), S3Error> {
    if claim.service != "s3" {
        return Err(S3Error::malformed(format!(
            "the credential is for service {:?}; expecting \"s3\"",
            claim.service
        )));
    }
    if claim.region != region {
        return Err(S3Error::malformed(format!(
            "the region {:?} is wrong; expecting {region:?}",
            claim.region
        )));
    }
    match claim.expires {
        None => {
            let skew = now
                .duration_since(claim.date)
                .or_else(|e| Ok::<_, ()>(e.duration()))
                .unwrap_or_default();
            if skew > MAX_SKEW {
                return Err(S3Error::new(
                    StatusCode::FORBIDDEN,
                    "RequestTimeTooSkewed",
                    "The difference between the request time and the server's time is too large.",
                ));
            }
        }
        Some(expires) => {
            let too_early = claim.date.duration_since(now).is_ok_and(|d| d > MAX_SKEW);
            if too_early || now > claim.date + Duration::from_secs(expires) {
                return Err(S3Error::access_denied("Request has expired"));
            }
        }
    }
    // Every x-amz-* header must be covered, or one could be added to a signed request.
    if let Some(unsigned) = request.headers.keys().find(|name| {
        name.as_str().starts_with("x-amz-") && !claim.signed_headers.iter().any(|s| s == name.as_str())
    }) {
        return Err(S3Error::access_denied(format!(
            "the header {unsigned} must be signed"
        )));
    }
    let canonical = canonical_request(claim, request)?;
    let scope = format!(
        "{}/{}/{}/aws4_request",
        claim.scope_date, claim.region, claim.service
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{scope}\n{}",
        claim.amz_date,
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = generate_signing_key(secret, claim.date, &claim.region, &claim.service);
    let expected = calculate_signature(key, string_to_sign.as_bytes());
    if bool::from(expected.as_bytes().ct_eq(claim.signature.as_bytes())) {
        Ok(())
    } else {
        Err(S3Error::signature_mismatch())
    }
}

fn canonical_request(claim: &Claim, request: &Signed<'_>) -> Result<String, S3Error> {
    let mut query: Vec<(String, String)> = request
        .query
        .iter()
        .filter(|(k, _)| claim.expires.is_none() || k != "X-Amz-Signature")
        .map(|(k, v)| (encode(k), encode(v)))
        .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut headers = String::new();
    for name in &claim.signed_headers {
        let values: Vec<String> = request
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| {
                // Trimmed, with runs of spaces collapsed, as SigV4 canonicalizes them.
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if values.is_empty() {
            return Err(S3Error::access_denied(format!(
                "the signed header {name} is not in the request"
            )));
        }
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let path = if request.path.is_empty() {
        "/"
    } else {
        request.path
    };
    Ok(format!(
        "{}\n{path}\n{query}\n{headers}\n{}\n{}",
        request.method,
        claim.signed_headers.join(";"),
        claim.payload
    ))
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, URI_ENCODE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{
        PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation,
        SigningSettings, UriPathNormalizationMode, sign,
    };
    use http::{HeaderValue, Request};

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn signed_parts(request: &Request<()>) -> (Vec<(String, String)>, Signed<'_>) {
        let query = query_pairs(request.uri().query());
        let signed = Signed {
            method: request.method(),
            path: request.uri().path(),
            query: &[],
            headers: request.headers(),
        };
        (query, signed)
    }

    fn check(request: &Request<()>, secret: &str, now: SystemTime) -> Result<(), S3Error> {
        let (query, mut signed) = signed_parts(request);
        signed.query = &query;
        let claim = claim(request.headers(), &query)?.ok_or_else(|| S3Error::access_denied("anonymous"))?;
        verify(&claim, &signed, secret, "us-east-1", now)
    }

    /// The GET example of the S3 SigV4 documentation ("Example: GET Object").
    #[test]
    fn the_documented_example_verifies() {
        let request = Request::get("/test.txt")
            .header("host", "examplebucket.s3.amazonaws.com")
            .header("range", "bytes=0-9")
            .header(
                CONTENT_SHA256,
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            )
            .header("x-amz-date", "20130524T000000Z")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
            )
            .body(())
            .expect("request");
        let at = parse_amz_date("20130524T000000Z").expect("date");
        check(&request, SECRET, at).expect("documented signature verifies");
        assert_eq!(
            check(&request, "another-secret", at),
            Err(S3Error::signature_mismatch())
        );
        let late = at + Duration::from_secs(16 * 60);
        assert_eq!(
            check(&request, SECRET, late).map_err(|e| e.code),
            Err("RequestTimeTooSkewed")
        );
    }

    fn sign_with_aws_sigv4(request: &mut Request<()>, secret: &str, location: SignatureLocation) {
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.signature_location = location;
        if location == SignatureLocation::QueryParams {
            settings.expires_in = Some(Duration::from_secs(300));
        } else {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        let identity = Credentials::new("client", secret, None, None, "test").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .expect("params")
            .into();
        let uri = request.uri().to_string();
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().expect("text")))
            .collect();
        let body = if location == SignatureLocation::QueryParams {
            SignableBody::UnsignedPayload
        } else {
            SignableBody::Precomputed(UNSIGNED_PAYLOAD.to_owned())
        };
        let signable = SignableRequest::new(request.method().as_str(), &uri, headers.into_iter(), body)
            .expect("signable");
        let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
        instructions.apply_to_request_http1x(request);
    }

    fn upload_part() -> Request<()> {
        Request::put("http://edge.example:8090/bucket/dir/a%20b%2Bc.txt?uploadId=2~x%2By&partNumber=3")
            .header("host", "edge.example:8090")
            .header("content-length", "5")
            .header("content-type", "text/plain")
            .header("x-amz-meta-owner", "  two   spaces ")
            .body(())
            .expect("request")
    }

    #[test]
    fn requests_signed_by_aws_sigv4_verify_in_header_and_query() {
        for location in [SignatureLocation::Headers, SignatureLocation::QueryParams] {
            let mut request = upload_part();
            sign_with_aws_sigv4(&mut request, "client-secret", location);
            check(&request, "client-secret", SystemTime::now())
                .unwrap_or_else(|e| panic!("{location:?}: {e:?}"));
            assert_eq!(
                check(&request, "other-secret", SystemTime::now()),
                Err(S3Error::signature_mismatch()),
                "{location:?}"
            );
            let mut tampered = request.clone();
            tampered
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("text/html"));
            assert_eq!(
                check(&tampered, "client-secret", SystemTime::now()),
                Err(S3Error::signature_mismatch()),
                "{location:?}: a changed signed header"
            );
            let mut added = request.clone();
            added
                .headers_mut()
                .insert("x-amz-meta-extra", HeaderValue::from_static("1"));
            assert_eq!(
                check(&added, "client-secret", SystemTime::now()).map_err(|e| e.code),
                Err("AccessDenied"),
                "{location:?}: an unsigned x-amz header"
            );
        }
    }

    #[test]
    fn presigned_urls_expire_and_claims_are_checked() {
        let mut request = upload_part();
        sign_with_aws_sigv4(&mut request, "s", SignatureLocation::QueryParams);
        let later = SystemTime::now() + Duration::from_secs(301);
        assert_eq!(
            check(&request, "s", later).map_err(|e| e.message),
            Err("Request has expired".to_owned())
        );
        let malformed = |auth: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("authorization", HeaderValue::from_str(auth).expect("value"));
            headers.insert("x-amz-date", HeaderValue::from_static("20240101T000000Z"));
            headers.insert(CONTENT_SHA256, HeaderValue::from_static(UNSIGNED_PAYLOAD));
            claim(&headers, &[]).map(|_| ()).map_err(|e| e.code)
        };
        assert_eq!(malformed("AWS AKID:sig"), Err("InvalidArgument"));
        assert_eq!(
            malformed("AWS4-HMAC-SHA256 Credential=a/20240101/us-east-1/s3, SignedHeaders=host, Signature=x"),
            Err("AuthorizationHeaderMalformed")
        );
        assert_eq!(
            malformed(
                "AWS4-HMAC-SHA256 Credential=a/20240102/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=x"
            ),
            Err("AuthorizationHeaderMalformed")
        );
        assert_eq!(
            malformed(
                "AWS4-HMAC-SHA256 Credential=a/20240101/us-east-1/s3/aws4_request, SignedHeaders=x-amz-date, Signature=x"
            ),
            Err("AccessDenied")
        );
        assert_eq!(claim(&HeaderMap::new(), &[]), Ok(None));
        let v2 = query_pairs(Some("AWSAccessKeyId=a&Signature=s&Expires=1"));
        assert_eq!(
            claim(&HeaderMap::new(), &v2).map_err(|e| e.code),
            Err("InvalidArgument")
        );
    }

    #[test]
    fn query_pairs_are_decoded_in_order() {
        assert_eq!(
            query_pairs(Some("uploads&a=b%20c&partNumber=1")),
            [
                ("uploads".to_owned(), String::new()),
                ("a".to_owned(), "b c".to_owned()),
                ("partNumber".to_owned(), "1".to_owned())
            ]
        );
    }
}
