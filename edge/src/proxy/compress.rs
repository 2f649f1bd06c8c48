//! Compression (CloudFront's rules): br or gzip, br preferred, when the behavior enables it and
//! the viewer accepts it, for compressible types of 1,000 to 10,000,000 bytes that the origin did
//! not already encode. The compressed variant is stored once and served to every viewer that
//! accepts it; a strong ETag becomes weak on it.
use std::io::Write;

use http::{HeaderMap, HeaderValue, StatusCode, header};

pub(crate) const MIN_BYTES: u64 = 1_000;
pub(crate) const MAX_BYTES: u64 = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Br,
    Gzip,
}

impl Encoding {
    pub(crate) fn token(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }
}

/// The encoding to use for a viewer's `Accept-Encoding`: br if acceptable, else gzip.
pub(crate) fn negotiate(headers: &HeaderMap) -> Option<Encoding> {
    let (mut br, mut gzip) = (false, false);
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            // q=0 means "not acceptable".
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            if coding.eq_ignore_ascii_case("br") {
                br = true;
            } else if coding.eq_ignore_ascii_case("gzip") {
                gzip = true;
            }
        }
    }
    if br {
        Some(Encoding::Br)
    } else if gzip {
        Some(Encoding::Gzip)
    } else {
        None
    }
}

/// Whether a response is worth compressing at all (ignoring the viewer). Never one the origin
/// marks `no-transform` (RFC 9110 §7.7).
pub(crate) fn compressible(status: StatusCode, headers: &HeaderMap, len: Option<u64>) -> bool {
    let no_transform = headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    });
    status == StatusCode::OK
        && !no_transform
        && !headers.contains_key(header::CONTENT_ENCODING)
        && len.is_some_and(|l| (MIN_BYTES..=MAX_BYTES).contains(&l))
        && headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| compressible_type(t.as_bytes()))
}

fn compressible_type(content_type: &[u8]) -> bool {
    let Ok(t) = std::str::from_utf8(content_type) else {
        return false;
    };
    let t = t.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    t.starts_with("text/")
        || t.starts_with("font/")
        || t.ends_with("+json")
        || t.ends_with("+xml")
        || matches!(
            t.as_str(),
            "application/json"
                | "application/javascript"
                | "application/x-javascript"
                | "application/ecmascript"
                | "application/xml"
                | "application/wasm"
                | "application/vnd.apple.mpegurl"
                | "application/x-mpegurl"
                | "application/vnd.ms-fontobject"
                | "application/x-font-ttf"
                | "application/x-font-opentype"
                | "application/x-font-truetype"
                | "image/svg+xml"
                | "image/x-icon"
                | "image/vnd.microsoft.icon"
        )
}

/// Compresses a body (CPU-bound: call from a blocking thread).
pub(crate) fn compress(encoding: Encoding, body: &[u8]) -> std::io::Result<Vec<u8>> {
    match encoding {
        Encoding::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 3),
                flate2::Compression::new(6),
            );
            encoder.write_all(body)?;
            encoder.finish()
        }
        Encoding::Br => {
            let mut out = Vec::with_capacity(body.len() / 3);
            // Quality 5 is near gzip's speed with better ratios; the result is cached anyway.
            let params = brotli::enc::BrotliEncoderParams {
                quality: 5,
                lgwin: 22,
                ..Default::default()
            };
            brotli::BrotliCompress(&mut &body[..], &mut out, &params)?;
            Ok(out)
        }
    }
}

/// A strong ETag made weak for a compressed variant (already weak ones are kept).
pub(crate) fn weaken(etag: &HeaderValue) -> HeaderValue {
    if etag.as_bytes().starts_with(b"W/") {
        return etag.clone();
    }
    let mut weak = b"W/".to_vec();
    weak.extend_from_slice(etag.as_bytes());
    HeaderValue::from_bytes(&weak).unwrap_or_else(|_| etag.clone())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn ae(value: &'static str) -> HeaderMap {
        HeaderMap::from_iter([(header::ACCEPT_ENCODING, HeaderValue::from_static(value))])
    }

    #[test]
    fn br_is_preferred_and_q0_refuses() {
        assert_eq!(negotiate(&ae("gzip, deflate, br")), Some(Encoding::Br));
        assert_eq!(negotiate(&ae("gzip;q=1.0, br;q=0")), Some(Encoding::Gzip));
        assert_eq!(negotiate(&ae("identity")), None);
        assert_eq!(negotiate(&HeaderMap::new()), None);
    }

    #[test]
    fn only_compressible_types_and_sizes() {
        let typed =
            |t: &'static str| HeaderMap::from_iter([(header::CONTENT_TYPE, HeaderValue::from_static(t))]);
        assert!(compressible(
            StatusCode::OK,
            &typed("text/html; charset=utf-8"),
            Some(5000)
        ));
        assert!(compressible(
            StatusCode::OK,
            &typed("application/json"),
            Some(1000)
        ));
        assert!(!compressible(StatusCode::OK, &typed("image/png"), Some(5000)));
        assert!(!compressible(StatusCode::OK, &typed("text/plain"), Some(999)));
        assert!(!compressible(
            StatusCode::OK,
            &typed("text/plain"),
            Some(10_000_001)
        ));
        assert!(!compressible(StatusCode::OK, &typed("text/plain"), None));
        assert!(!compressible(
            StatusCode::NOT_FOUND,
            &typed("text/plain"),
            Some(5000)
        ));
        let mut encoded = typed("text/plain");
        encoded.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(!compressible(StatusCode::OK, &encoded, Some(5000)));
        let mut untouchable = typed("text/plain");
        untouchable.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60, No-Transform"),
        );
        assert!(!compressible(StatusCode::OK, &untouchable, Some(5000)));
    }

    #[test]
    fn round_trips() {
        let body = "hello edgefleet ".repeat(200);
        let gz = compress(Encoding::Gzip, body.as_bytes()).expect("gzip");
        let mut back = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut back)
            .expect("gunzip");
        assert_eq!(back, body);
        let br = compress(Encoding::Br, body.as_bytes()).expect("br");
        let mut back = Vec::new();
        brotli::BrotliDecompress(&mut &br[..], &mut back).expect("unbrotli");
        assert_eq!(back, body.as_bytes());
        assert!(br.len() < body.len() / 10);
    }

    #[test]
    fn etags_become_weak() {
        assert_eq!(weaken(&HeaderValue::from_static("\"a\"")), "W/\"a\"");
        assert_eq!(weaken(&HeaderValue::from_static("W/\"a\"")), "W/\"a\"");
    }
}
