//! What the cache stores: complete responses, and `Vary` markers that point lookups at variants;
//! and how they are written to the disk tier. Tested here: the disk encoding round-trips and
//! refuses damaged bytes.
use std::{
    io::{Read, Write},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use foyer::{Code, Error as CodeError, ErrorKind};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use super::{
    freshness::{self, OriginFreshness},
    invalidation::{Provenance, UNKNOWN_EPOCH},
};

/// A complete response as stored. Bodies are stored whole, so a range or a conditional is always
/// answered from a complete object.
#[derive(Debug, Clone)]
pub(crate) struct CachedObject {
    pub(crate) status: StatusCode,
    /// End-to-end headers as received, without `Age` (recomputed when served).
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) stored_at: SystemTime,
    pub(crate) initial_age: Duration,
    pub(crate) origin: OriginFreshness,
    pub(crate) purge_path: Box<str>,
    /// When the request that produced the content was sent (see `invalidation`); not kept on
    /// disk, so objects read back from it have [`UNKNOWN_EPOCH`].
    pub(crate) epoch: u64,
}

impl CachedObject {
    /// What purges judge the object by.
    pub(crate) fn provenance(&self) -> Provenance<'_> {
        Provenance {
            epoch: self.epoch,
            stored_at: self.stored_at,
            purge_path: &self.purge_path,
        }
    }

    pub(crate) fn age(&self, now: SystemTime) -> Duration {
        freshness::current_age(self.initial_age, self.stored_at, now)
    }

    pub(crate) fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(header::ETAG)
    }

    /// The object refreshed by a 304 to a request sent at `epoch`: the 304's headers replace the
    /// stored ones of the same name (RFC 9111 §3.2, §4.3.4), except those the stored body depends
    /// on and `Set-Cookie` (never stored), and the age restarts from the 304.
    pub(crate) fn refreshed(&self, not_modified: &HeaderMap, initial_age: Duration, epoch: u64) -> Self {
        let mut headers = self.headers.clone();
        for name in not_modified.keys() {
            // The stored body depends on these: a 304 cannot change how it is encoded, which part
            // of what it is, or which representation it is.
            if matches!(
                *name,
                header::CONTENT_LENGTH
                    | header::AGE
                    | header::TRANSFER_ENCODING
                    | header::CONTENT_ENCODING
                    | header::CONTENT_RANGE
                    | header::ETAG
                    | header::SET_COOKIE
            ) || name.as_str() == "content-md5"
            {
                continue;
            }
            headers.remove(name);
            for value in not_modified.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        // The updated headers say how fresh it is now (a 304 may repeat none of them).
        Self {
            origin: OriginFreshness::from_response(&headers),
            headers,
            stored_at: SystemTime::now(),
            initial_age,
            epoch,
            ..self.clone()
        }
    }

    /// Bytes charged against the cache's capacity.
    pub(crate) fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        self.body.len() + headers + self.purge_path.len() + 256
    }
}

/// A cache value.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    Object(Arc<CachedObject>),
    /// Stored under a primary key whose response had `Vary`: variants live under keys extended
    /// with the request's values of these headers.
    Vary {
        names: Arc<[HeaderName]>,
        purge_path: Box<str>,
        stored_at: SystemTime,
    },
}

impl Entry {
    pub(crate) fn purge_path(&self) -> &str {
        match self {
            Entry::Object(o) => &o.purge_path,
            Entry::Vary { purge_path, .. } => purge_path,
        }
    }

    pub(crate) fn stored_at(&self) -> SystemTime {
        match self {
            Entry::Object(o) => o.stored_at,
            Entry::Vary { stored_at, .. } => *stored_at,
        }
    }

    pub(crate) fn weight(&self) -> usize {
        match self {
            Entry::Object(o) => o.weight(),
            Entry::Vary {
                names, purge_path, ..
            } => names.iter().map(|n| n.as_str().len()).sum::<usize>() + purge_path.len() + 128,
        }
    }
}

// The disk tier's encoding. Decoding never trusts the bytes: every length is bounded and every
// value re-validated, so a damaged file yields an error (a miss), not a panic.

// Tag 1 was an object with a status class; such entries now read as damaged (a miss).
const TAG_OBJECT: u8 = 3;
const TAG_VARY: u8 = 2;
/// Larger lengths can only come from a damaged file.
const MAX_FIELD: u64 = 1 << 32;

fn parse_error(what: &str) -> CodeError {
    CodeError::new(ErrorKind::Parse, format!("damaged cache entry: {what}"))
}

fn put_u64(w: &mut impl Write, v: u64) -> foyer::Result<()> {
    w.write_all(&v.to_le_bytes()).map_err(CodeError::io_error)
}

fn put_bytes(w: &mut impl Write, b: &[u8]) -> foyer::Result<()> {
    put_u64(w, b.len() as u64)?;
    w.write_all(b).map_err(CodeError::io_error)
}

fn get_u64(r: &mut impl Read) -> foyer::Result<u64> {
    let mut buf = [0u8; 8];
    r.read_exact(&mut buf).map_err(CodeError::io_error)?;
    Ok(u64::from_le_bytes(buf))
}

fn get_bytes(r: &mut impl Read) -> foyer::Result<Vec<u8>> {
    let len = get_u64(r)?;
    if len > MAX_FIELD {
        return Err(parse_error("length out of range"));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).map_err(CodeError::io_error)?;
    Ok(buf)
}

fn get_string(r: &mut impl Read) -> foyer::Result<Box<str>> {
    String::from_utf8(get_bytes(r)?)
        .map(String::into_boxed_str)
        .map_err(|_| parse_error("text is not UTF-8"))
}

fn put_time(w: &mut impl Write, t: SystemTime) -> foyer::Result<()> {
    put_u64(
        w,
        t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
    )
}

fn get_time(r: &mut impl Read) -> foyer::Result<SystemTime> {
    Ok(UNIX_EPOCH + Duration::from_millis(get_u64(r)?))
}

fn put_option(w: &mut impl Write, v: Option<u64>) -> foyer::Result<()> {
    put_u64(w, v.map_or(u64::MAX, |v| v.min(u64::MAX - 1)))
}

fn get_option(r: &mut impl Read) -> foyer::Result<Option<u64>> {
    let v = get_u64(r)?;
    Ok((v != u64::MAX).then_some(v))
}

fn put_freshness(w: &mut impl Write, f: &OriginFreshness) -> foyer::Result<()> {
    put_option(w, f.lifetime)?;
    let flags = u64::from(f.uncacheable_by_origin) | (u64::from(f.must_revalidate) << 1);
    put_u64(w, flags)?;
    put_u64(w, f.stale_while_revalidate)?;
    put_u64(w, f.stale_if_error)
}

fn get_freshness(r: &mut impl Read) -> foyer::Result<OriginFreshness> {
    let lifetime = get_option(r)?;
    let flags = get_u64(r)?;
    Ok(OriginFreshness {
        lifetime,
        uncacheable_by_origin: flags & 1 != 0,
        must_revalidate: flags & 2 != 0,
        stale_while_revalidate: get_u64(r)?,
        stale_if_error: get_u64(r)?,
    })
}

impl Code for Entry {
    fn encode(&self, w: &mut impl Write) -> foyer::Result<()> {
        match self {
            Entry::Object(o) => {
                w.write_all(&[TAG_OBJECT]).map_err(CodeError::io_error)?;
                put_u64(w, u64::from(o.status.as_u16()))?;
                put_time(w, o.stored_at)?;
                put_u64(w, o.initial_age.as_millis() as u64)?;
                put_freshness(w, &o.origin)?;
                put_bytes(w, o.purge_path.as_bytes())?;
                put_u64(w, o.headers.len() as u64)?;
                for (name, value) in &o.headers {
                    put_bytes(w, name.as_str().as_bytes())?;
                    put_bytes(w, value.as_bytes())?;
                }
                put_bytes(w, &o.body)
            }
            Entry::Vary {
                names,
                purge_path,
                stored_at,
            } => {
                w.write_all(&[TAG_VARY]).map_err(CodeError::io_error)?;
                put_time(w, *stored_at)?;
                put_bytes(w, purge_path.as_bytes())?;
                put_u64(w, names.len() as u64)?;
                names.iter().try_for_each(|n| put_bytes(w, n.as_str().as_bytes()))
            }
        }
    }

    fn decode(r: &mut impl Read) -> foyer::Result<Self> {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag).map_err(CodeError::io_error)?;
        let header_name = |b: Vec<u8>| HeaderName::from_bytes(&b).map_err(|_| parse_error("header name"));
        match tag[0] {
            TAG_OBJECT => {
                let status = u16::try_from(get_u64(r)?)
                    .ok()
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .ok_or_else(|| parse_error("status"))?;
                let stored_at = get_time(r)?;
                let initial_age = Duration::from_millis(get_u64(r)?);
                let origin = get_freshness(r)?;
                let purge_path = get_string(r)?;
                let count = get_u64(r)?;
                if count > 10_000 {
                    return Err(parse_error("header count"));
                }
                let mut headers = HeaderMap::with_capacity(count as usize);
                for _ in 0..count {
                    let name = header_name(get_bytes(r)?)?;
                    let value =
                        HeaderValue::from_bytes(&get_bytes(r)?).map_err(|_| parse_error("header value"))?;
                    headers.append(name, value);
                }
                let body = Bytes::from(get_bytes(r)?);
                Ok(Entry::Object(Arc::new(CachedObject {
                    status,
                    headers,
                    body,
                    stored_at,
                    initial_age,
                    origin,
                    purge_path,
                    epoch: UNKNOWN_EPOCH,
                })))
            }
            TAG_VARY => {
                let stored_at = get_time(r)?;
                let purge_path = get_string(r)?;
                let count = get_u64(r)?;
                if count > 1_000 {
                    return Err(parse_error("vary count"));
                }
                let names = (0..count)
                    .map(|_| header_name(get_bytes(r)?))
                    .collect::<foyer::Result<Vec<_>>>()?;
                Ok(Entry::Vary {
                    names: names.into(),
                    purge_path,
                    stored_at,
                })
            }
            _ => Err(parse_error("unknown tag")),
        }
    }

    fn estimated_size(&self) -> usize {
        self.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_encoding_round_trips_and_rejects_damage() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let object = CachedObject {
            status: StatusCode::NOT_FOUND,
            headers,
            body: Bytes::from_static(b"body"),
            stored_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            initial_age: Duration::from_millis(1500),
            origin: OriginFreshness {
                lifetime: Some(60),
                must_revalidate: true,
                ..Default::default()
            },
            purge_path: "/a?x=1".into(),
            epoch: 7,
        };
        let mut buf = Vec::new();
        Entry::Object(Arc::new(object.clone()))
            .encode(&mut buf)
            .expect("encode");
        let Entry::Object(back) = Entry::decode(&mut buf.as_slice()).expect("decode") else {
            panic!("object expected")
        };
        assert_eq!(back.status, object.status);
        assert_eq!(back.headers, object.headers);
        assert_eq!(back.body, object.body);
        assert_eq!(back.stored_at, object.stored_at);
        assert_eq!(back.origin, object.origin);
        assert_eq!(back.epoch, UNKNOWN_EPOCH, "epochs belong to this process");
        for cut in 0..buf.len() {
            assert!(Entry::decode(&mut &buf[..cut]).is_err(), "truncated at {cut}");
        }
        let mut damaged = buf.clone();
        damaged[0] = 9;
        assert!(Entry::decode(&mut damaged.as_slice()).is_err());
    }
}
