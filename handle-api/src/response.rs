//! `ResourceResponse`: what came back, after WebCore's ResourceResponse.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, StatusCode, Version};
use url::Url;

/// Where a response came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseSource {
    /// Loaded from the network.
    #[default]
    Network,
    /// Served from the cache without contacting the server.
    Cache,
    /// Served from the cache after the server confirmed it (304).
    Revalidated,
    /// Served by the manager itself (`data:`, `file:`, a registered scheme).
    Local,
}

impl ResponseSource {
    /// The stable name used in traces.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseSource::Network => "network",
            ResponseSource::Cache => "cache",
            ResponseSource::Revalidated => "revalidated",
            ResponseSource::Local => "local",
        }
    }
}

/// Load timing, after WebCore's NetworkLoadMetrics: each phase is the time
/// from the start of the exchange, or `None` when the backend cannot tell
/// (never made up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadTiming {
    /// Name resolution done.
    pub dns: Option<Duration>,
    /// TCP connection established.
    pub connect: Option<Duration>,
    /// TLS handshake done.
    pub tls: Option<Duration>,
    /// Request fully sent.
    pub request_sent: Option<Duration>,
    /// First byte of the response head received.
    pub first_byte: Option<Duration>,
    /// Body complete.
    pub complete: Option<Duration>,
}

/// The response head as a backend reports it. handle-api turns it into a
/// [`ResourceResponse`], deriving everything else once for every backend.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ResponseHead {
    /// Status code.
    pub status: StatusCode,
    /// Reason phrase as received, when the library exposes it.
    pub reason: Option<String>,
    /// Protocol version.
    pub version: Version,
    /// Headers in received order.
    pub headers: HeaderMap,
    /// Address of the peer.
    pub remote_addr: Option<SocketAddr>,
    /// Timing the backend measured.
    pub timing: LoadTiming,
}

impl ResponseHead {
    /// A head with status, version and headers; the rest empty.
    pub fn new(status: StatusCode, version: Version, headers: HeaderMap) -> Self {
        ResponseHead {
            status,
            reason: None,
            version,
            headers,
            remote_addr: None,
            timing: LoadTiming::default(),
        }
    }
}

/// What the server answered, with what handle-api derived from it.
#[derive(Debug, Clone)]
pub struct ResourceResponse {
    pub(crate) url: Url,
    pub(crate) status: StatusCode,
    pub(crate) reason: String,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) expected_content_length: Option<u64>,
    pub(crate) source: ResponseSource,
    pub(crate) redirect_count: u32,
    pub(crate) remote_addr: Option<SocketAddr>,
    pub(crate) timing: LoadTiming,
}

impl ResourceResponse {
    pub(crate) fn from_head(url: Url, head: ResponseHead) -> Self {
        let reason = head
            .reason
            .filter(|r| !r.is_empty())
            .or_else(|| head.status.canonical_reason().map(str::to_owned))
            .unwrap_or_default();
        let expected_content_length = content_length(&head.headers);
        ResourceResponse {
            url,
            status: head.status,
            reason,
            version: head.version,
            headers: head.headers,
            expected_content_length,
            source: ResponseSource::Network,
            redirect_count: 0,
            remote_addr: head.remote_addr,
            timing: head.timing,
        }
    }

    /// The final url (after redirects).
    pub fn url(&self) -> &Url {
        &self.url
    }
    /// Status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }
    /// Reason phrase: as received, or the canonical one when the library hides it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
    /// Protocol version.
    pub fn version(&self) -> Version {
        self.version
    }
    /// Headers in received order.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    /// The MIME type from Content-Type, lower-cased, without parameters.
    pub fn mime_type(&self) -> Option<String> {
        let ct = self
            .headers
            .get(http::header::CONTENT_TYPE)?
            .to_str()
            .ok()?;
        let essence = ct.split(';').next()?.trim();
        (!essence.is_empty()).then(|| essence.to_ascii_lowercase())
    }
    /// The charset parameter of Content-Type.
    pub fn text_encoding(&self) -> Option<String> {
        let ct = self
            .headers
            .get(http::header::CONTENT_TYPE)?
            .to_str()
            .ok()?;
        ct.split(';').skip(1).find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("charset")
                .then(|| v.trim().trim_matches('"').to_ascii_lowercase())
        })
    }
    /// The file name the server suggests for saving the body, from
    /// Content-Disposition (RFC 6266, `filename*` of RFC 8187 first), reduced
    /// to its last path component; `None` without a usable name.
    pub fn suggested_filename(&self) -> Option<String> {
        let value = self
            .headers
            .get(http::header::CONTENT_DISPOSITION)?
            .as_bytes();
        // Servers send raw UTF-8, or ISO-8859-1 bytes (obs-text), in `filename`.
        let text = match std::str::from_utf8(value) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => value.iter().map(|&b| char::from(b)).collect(),
        };
        crate::disposition::suggested_filename(&text)
    }
    /// Content-Length, when the response declared one.
    pub fn expected_content_length(&self) -> Option<u64> {
        self.expected_content_length
    }
    /// Where the response came from.
    pub fn source(&self) -> ResponseSource {
        self.source
    }
    /// Redirects followed to reach this response.
    pub fn redirect_count(&self) -> u32 {
        self.redirect_count
    }
    /// Address of the peer, when known.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }
    /// Load timing phases.
    pub fn timing(&self) -> &LoadTiming {
        &self.timing
    }
    /// The HTTP version as it is written on the wire (`HTTP/1.1`).
    pub fn version_str(&self) -> &'static str {
        version_str(self.version)
    }

    /// The head as an `http::Response<()>`.
    pub fn to_http(&self) -> http::Response<()> {
        let mut r = http::Response::new(());
        *r.status_mut() = self.status;
        *r.version_mut() = self.version;
        *r.headers_mut() = self.headers.clone();
        r
    }
}

/// The wire spelling of an HTTP version.
pub fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

/// The Content-Length of a head, when present and a plain decimal; several
/// equal values count as one.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut found: Option<u64> = None;
    for v in headers.get_all(http::header::CONTENT_LENGTH) {
        for part in v.to_str().ok()?.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u64 = part.parse().ok()?;
            match found {
                Some(prev) if prev != n => return None,
                _ => found = Some(n),
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(headers: &[(&str, &str)]) -> ResourceResponse {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        ResourceResponse::from_head(
            Url::parse("http://a.test/").unwrap(),
            ResponseHead::new(StatusCode::OK, Version::HTTP_11, map),
        )
    }

    #[test]
    fn mime_and_charset() {
        let r = resp(&[("content-type", "Text/HTML; Charset=\"UTF-8\"")]);
        assert_eq!(r.mime_type().as_deref(), Some("text/html"));
        assert_eq!(r.text_encoding().as_deref(), Some("utf-8"));
        assert_eq!(r.reason(), "OK");
    }

    #[test]
    fn content_length_rules() {
        assert_eq!(
            resp(&[("content-length", "6")]).expected_content_length(),
            Some(6)
        );
        assert_eq!(
            resp(&[("content-length", "6, 6")]).expected_content_length(),
            Some(6)
        );
        assert_eq!(
            resp(&[("content-length", "6"), ("content-length", "7")]).expected_content_length(),
            None
        );
        assert_eq!(
            resp(&[("content-length", "+6")]).expected_content_length(),
            None
        );
    }
}
