//! The HTTP cache: the [`NetworkCache`] trait (Qt's QAbstractNetworkCache),
//! a [`MemoryCache`] and a [`DiskCache`] (Qt's QNetworkDiskCache).
//!
//! A cache only stores and returns entries. The rules of RFC 9111 —
//! freshness from Cache-Control, Expires and heuristics, validation with
//! If-None-Match and If-Modified-Since, the update of a stored response by a
//! 304, Vary, no-store, private against shared — are applied once by the
//! manager for every cache, with the `http-cache-semantics` crate, together
//! with WebCore's four [`CachePolicy`](crate::CachePolicy) values. A cache
//! implementation therefore never has to know them.
//!
//! What is stored is the response as it came off the wire: its headers
//! (less the hop-by-hop ones and Set-Cookie) and its body before content
//! decoding, so a cached response goes through the same decoding as a
//! network one.

use std::fmt;
use std::io::{self, Read};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode, Version};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, ErrorKind, Result};

mod disk;
pub(crate) mod hop;
mod lru;
mod memory;

pub use disk::DiskCache;
pub use memory::MemoryCache;

/// A store of responses, keyed by url (without fragment): Qt's
/// QAbstractNetworkCache. Give one to the manager with
/// [`ManagerBuilder::cache`](crate::ManagerBuilder::cache).
///
/// The manager decides what to store, when a stored response may be used and
/// how a 304 updates it; a cache keeps one entry per url, the last one
/// committed winning. Every method may be called from any thread at once.
pub trait NetworkCache: Send + Sync + 'static {
    /// The entry stored for `url`, if any. An entry that cannot be read back
    /// intact (truncated, corrupt, of an unknown format) is `None`, and the
    /// cache drops it: a damaged entry is a miss, never a wrong body.
    fn lookup(&self, url: &Url) -> Option<CacheEntry>;

    /// Starts storing a response described by `metadata`; its body follows
    /// through the writer, which replaces the url's entry when committed.
    /// `None` when the cache will not store it.
    fn prepare(&self, metadata: CacheMetadata) -> Option<Box<dyn CacheWriter>>;

    /// Replaces the metadata of the entry for `metadata.url`, keeping its
    /// body (after a 304). False when there was no entry to update.
    fn update_metadata(&self, metadata: CacheMetadata) -> bool;

    /// Removes the entry for `url`; false when there was none.
    fn remove(&self, url: &Url) -> bool;

    /// Bytes the cache holds now, as it counts them against its bound.
    fn size(&self) -> u64;

    /// Removes every entry.
    fn clear(&self);
}

impl fmt::Debug for dyn NetworkCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkCache({} bytes)", self.size())
    }
}

/// Receives the body of a response being stored, as it streams to the
/// application. Dropping a writer without [`commit`](Self::commit) discards
/// what it received: a body that did not complete is never stored.
pub trait CacheWriter: Send {
    /// Appends body bytes. An error abandons the entry (for instance a body
    /// past the cache's bound for one entry); the manager then stops writing.
    fn write(&mut self, chunk: &[u8]) -> io::Result<()>;

    /// Stores the entry, replacing any entry for the same url. Called once,
    /// when the whole body arrived.
    fn commit(self: Box<Self>) -> io::Result<()>;
}

/// What a cache stores besides the body: Qt's QNetworkCacheMetaData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMetadata {
    /// The url, without fragment: the entry's key.
    pub url: Url,
    /// Status of the stored response.
    pub status: StatusCode,
    /// Its reason phrase.
    pub reason: String,
    /// Its protocol version.
    pub version: Version,
    /// Its headers, in received order (hop-by-hop headers and Set-Cookie
    /// are not stored).
    pub headers: HeaderMap,
    /// The request headers the response varies on (its Vary list), with
    /// Cache-Control; credentials among them are kept only as digests.
    pub request_headers: HeaderMap,
    /// When the response was received (or last revalidated).
    pub response_time: SystemTime,
}

/// The serialized form of [`CacheMetadata`].
#[derive(Serialize, Deserialize)]
struct StoredMetadata {
    url: String,
    status: u16,
    reason: String,
    version: String,
    headers: Vec<StoredField>,
    request_headers: Vec<StoredField>,
    /// Milliseconds since the Unix epoch.
    response_time_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredField {
    name: String,
    /// The value as text when it is visible ASCII.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    /// Otherwise its bytes, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
}

fn bad_metadata(what: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("cache metadata does not decode: {what}"),
    )
}

fn store_fields(headers: &HeaderMap) -> Vec<StoredField> {
    use base64::Engine as _;
    headers
        .iter()
        .map(|(name, value)| match value.to_str() {
            Ok(text) => StoredField {
                name: name.as_str().to_owned(),
                text: Some(text.to_owned()),
                base64: None,
            },
            Err(_) => StoredField {
                name: name.as_str().to_owned(),
                text: None,
                base64: Some(base64::engine::general_purpose::STANDARD.encode(value.as_bytes())),
            },
        })
        .collect()
}

fn load_fields(fields: Vec<StoredField>) -> Result<HeaderMap> {
    use base64::Engine as _;
    let mut headers = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(bad_metadata)?;
        let bytes = match (f.text, f.base64) {
            (Some(t), None) => t.into_bytes(),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(bad_metadata)?,
            _ => return Err(bad_metadata("a header field has no single value")),
        };
        let value = HeaderValue::from_bytes(&bytes).map_err(bad_metadata)?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn parse_version(v: &str) -> Option<Version> {
    Some(match v {
        "HTTP/0.9" => Version::HTTP_09,
        "HTTP/1.0" => Version::HTTP_10,
        "HTTP/1.1" => Version::HTTP_11,
        "HTTP/2" => Version::HTTP_2,
        "HTTP/3" => Version::HTTP_3,
        _ => return None,
    })
}

impl CacheMetadata {
    /// The metadata as bytes (JSON), for caches that persist it; read back
    /// with [`CacheMetadata::decode`].
    pub fn encode(&self) -> Vec<u8> {
        let ms = self
            .response_time
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let stored = StoredMetadata {
            url: self.url.as_str().to_owned(),
            status: self.status.as_u16(),
            reason: self.reason.clone(),
            version: crate::response::version_str(self.version).to_owned(),
            headers: store_fields(&self.headers),
            request_headers: store_fields(&self.request_headers),
            response_time_ms: u64::try_from(ms).unwrap_or(u64::MAX),
        };
        // Strings, numbers and lists only: serializing cannot fail.
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// Metadata written by [`CacheMetadata::encode`]; an `io` error when the
    /// bytes are not such metadata.
    pub fn decode(bytes: &[u8]) -> Result<CacheMetadata> {
        let s: StoredMetadata = serde_json::from_slice(bytes).map_err(bad_metadata)?;
        let url = Url::parse(&s.url).map_err(bad_metadata)?;
        let status = StatusCode::from_u16(s.status).map_err(bad_metadata)?;
        let version = parse_version(&s.version)
            .ok_or_else(|| bad_metadata(format!("unknown version {:?}", s.version)))?;
        let response_time = UNIX_EPOCH
            .checked_add(Duration::from_millis(s.response_time_ms))
            .ok_or_else(|| bad_metadata("response time out of range"))?;
        Ok(CacheMetadata {
            url,
            status,
            reason: s.reason,
            version,
            headers: load_fields(s.headers)?,
            request_headers: load_fields(s.request_headers)?,
            response_time,
        })
    }

    /// About how many bytes the metadata takes (what caches count against
    /// their bound besides the body).
    pub fn approximate_size(&self) -> u64 {
        let fields = |h: &HeaderMap| -> usize {
            h.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum()
        };
        (self.url.as_str().len()
            + self.reason.len()
            + fields(&self.headers)
            + fields(&self.request_headers)
            + 64) as u64
    }
}

/// A stored response: its metadata and its body.
#[derive(Debug)]
pub struct CacheEntry {
    /// Status, headers and the rest.
    pub metadata: CacheMetadata,
    /// The body as stored (before content decoding).
    pub body: CachedBody,
}

/// The body of a [`CacheEntry`]: bytes in memory, or a reader of known
/// length (a file), streamed to the application as it reads.
pub struct CachedBody {
    source: BodySource,
    len: u64,
}

enum BodySource {
    Bytes(Bytes),
    Reader(Box<dyn Read + Send>),
}

impl CachedBody {
    /// A body held in memory.
    pub fn from_bytes(bytes: Bytes) -> Self {
        CachedBody {
            len: bytes.len() as u64,
            source: BodySource::Bytes(bytes),
        }
    }

    /// A body read from `reader`, which yields exactly `len` bytes (fewer
    /// fails the load with `body_truncated`; more are not read).
    pub fn from_reader(reader: impl Read + Send + 'static, len: u64) -> Self {
        CachedBody {
            source: BodySource::Reader(Box::new(reader)),
            len,
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the whole body into memory.
    pub fn into_bytes(self) -> io::Result<Bytes> {
        match self.source {
            BodySource::Bytes(b) => Ok(b),
            BodySource::Reader(r) => {
                let mut buf = Vec::new();
                r.take(self.len).read_to_end(&mut buf)?;
                if (buf.len() as u64) < self.len {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Ok(Bytes::from(buf))
            }
        }
    }
}

impl fmt::Debug for CachedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.source {
            BodySource::Bytes(_) => "memory",
            BodySource::Reader(_) => "reader",
        };
        write!(f, "CachedBody({} bytes, {kind})", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> CacheMetadata {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.append("etag", HeaderValue::from_static("\"v1\""));
        headers.append("x-bin", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let mut request_headers = HeaderMap::new();
        request_headers.append("accept-language", HeaderValue::from_static("fr"));
        CacheMetadata {
            url: Url::parse("http://a.test/p?q=1").unwrap(),
            status: StatusCode::OK,
            reason: "OK".into(),
            version: Version::HTTP_11,
            headers,
            request_headers,
            response_time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        }
    }

    #[test]
    fn metadata_survives_encoding() {
        let m = meta();
        let back = CacheMetadata::decode(&m.encode()).unwrap();
        assert_eq!(back, m);
        let values: Vec<_> = back.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn garbage_metadata_is_an_io_error() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"url\":\"nope\"}",
            b"\xff\xfe",
            br#"{"url":"http://a.test/","status":99,"reason":"","version":"HTTP/1.1","headers":[],"request_headers":[],"response_time_ms":0}"#,
            br#"{"url":"http://a.test/","status":200,"reason":"","version":"SPDY","headers":[],"request_headers":[],"response_time_ms":0}"#,
            br#"{"url":"http://a.test/","status":200,"reason":"","version":"HTTP/1.1","headers":[{"name":"x"}],"request_headers":[],"response_time_ms":0}"#,
            br#"{"url":"http://a.test/","status":200,"reason":"","version":"HTTP/1.1","headers":[{"name":"a b","text":"1"}],"request_headers":[],"response_time_ms":0}"#,
        ] {
            let e = CacheMetadata::decode(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Io, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn reader_bodies_read_whole() {
        let b = CachedBody::from_reader(io::Cursor::new(b"hello".to_vec()), 5);
        assert_eq!(b.len(), 5);
        assert_eq!(b.into_bytes().unwrap(), "hello");
        let short = CachedBody::from_reader(io::Cursor::new(b"he".to_vec()), 5);
        assert!(short.into_bytes().is_err());
    }
}
