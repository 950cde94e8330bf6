//! `ResourceRequest`: what to load, after WebCore's ResourceRequest.
//!
//! Building a request validates it once, for every backend alike: a url that
//! does not parse, a scheme nobody handles, a header with CR, LF or NUL, or a
//! method that is not a token never reaches a backend.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use url::Url;

use crate::body::RequestBody;
use crate::error::{Error, ErrorKind, Result};
use crate::manager::redirect::RedirectPolicy;

/// WebCore's cache policies. Carried on the request; the cache honours them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CachePolicy {
    /// Follow the protocol's rules (freshness, revalidation).
    #[default]
    UseProtocolCachePolicy,
    /// Load from the network, ignoring cached data.
    ReloadIgnoringCacheData,
    /// Use cached data whatever its age, else load.
    ReturnCacheDataElseLoad,
    /// Use cached data only; fail when nothing is cached.
    ReturnCacheDataDontLoad,
}

/// What the loaded resource is for (WebCore's target type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub enum TargetType {
    MainFrame,
    Subframe,
    Stylesheet,
    Script,
    Image,
    Font,
    Object,
    Media,
    Worker,
    Prefetch,
    Xhr,
    #[default]
    Other,
}

/// Scheduling priority; higher loads are started first when a host is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
#[allow(missing_docs)]
pub enum Priority {
    VeryLow,
    Low,
    #[default]
    Medium,
    High,
    VeryHigh,
}

/// Which HTTP version to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpVersionPref {
    /// HTTP/1.1 only.
    #[default]
    Http1,
    /// HTTP/2 where negotiated with ALPN over TLS, else HTTP/1.1.
    Http2,
    /// HTTP/2 without negotiation (prior knowledge), also in cleartext.
    Http2PriorKnowledge,
}

/// One load's description. Build it with [`ResourceRequest::get`] or
/// [`ResourceRequest::builder`].
///
/// ```
/// use handle_api::ResourceRequest;
/// let req = ResourceRequest::get("http://example.test/a?b=c")
///     .header("x-trace", "1")
///     .user_agent("demo/1.0")
///     .build()
///     .unwrap();
/// assert_eq!(req.url().path(), "/a");
/// ```
#[derive(Debug)]
pub struct ResourceRequest {
    pub(crate) url: Url,
    pub(crate) method: Method,
    pub(crate) headers: HeaderMap,
    pub(crate) user_agent: Option<HeaderValue>,
    pub(crate) referrer: Option<HeaderValue>,
    pub(crate) body: RequestBody,
    pub(crate) timeout: Option<Duration>,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) cache_policy: CachePolicy,
    pub(crate) allow_cookies: bool,
    pub(crate) target_type: TargetType,
    pub(crate) priority: Priority,
    pub(crate) http_version: HttpVersionPref,
    pub(crate) decode_content: bool,
    pub(crate) redirect_policy: Option<RedirectPolicy>,
    pub(crate) max_redirects: Option<u32>,
}

impl ResourceRequest {
    /// A builder for `method` on `url`.
    pub fn builder(method: impl AsRef<str>, url: impl AsRef<str>) -> RequestBuilder {
        RequestBuilder::new(method.as_ref(), url.as_ref())
    }

    /// A builder for GET on `url`.
    pub fn get(url: impl AsRef<str>) -> RequestBuilder {
        RequestBuilder::new("GET", url.as_ref())
    }

    /// A builder for POST on `url`.
    pub fn post(url: impl AsRef<str>) -> RequestBuilder {
        RequestBuilder::new("POST", url.as_ref())
    }

    /// The url, fragment included (backends never send the fragment).
    pub fn url(&self) -> &Url {
        &self.url
    }
    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }
    /// Headers set by the application, in order, repeated names kept.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    /// The User-Agent to send, when set on the request.
    pub fn user_agent(&self) -> Option<&HeaderValue> {
        self.user_agent.as_ref()
    }
    /// The Referer to send.
    pub fn referrer(&self) -> Option<&HeaderValue> {
        self.referrer.as_ref()
    }
    /// The body.
    pub fn body(&self) -> &RequestBody {
        &self.body
    }
    /// Replaces the body, returning the old one.
    pub fn take_body(&mut self) -> RequestBody {
        std::mem::take(&mut self.body)
    }
    /// The total timeout for the whole load.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
    /// The timeout for establishing a connection.
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }
    /// The idle timeout: the longest the load may go without a byte from the server.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }
    /// The cache policy.
    pub fn cache_policy(&self) -> CachePolicy {
        self.cache_policy
    }
    /// Whether cookies may be sent and stored.
    pub fn allow_cookies(&self) -> bool {
        self.allow_cookies
    }
    /// What the resource is for.
    pub fn target_type(&self) -> TargetType {
        self.target_type
    }
    /// Scheduling priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }
    /// HTTP version preference.
    pub fn http_version(&self) -> HttpVersionPref {
        self.http_version
    }
    /// Whether the manager asks for and decodes compressed content.
    pub fn decode_content(&self) -> bool {
        self.decode_content
    }
    /// The redirect policy, when the request overrides the manager's.
    pub fn redirect_policy(&self) -> Option<&RedirectPolicy> {
        self.redirect_policy.as_ref()
    }
    /// The redirect maximum, when the request overrides the manager's.
    pub fn max_redirects(&self) -> Option<u32> {
        self.max_redirects
    }

    /// The request as an `http::Request` with its in-memory body; `None` for
    /// file and stream bodies, which cannot be copied.
    pub fn to_http(&self) -> Option<http::Request<Bytes>> {
        let body = match &self.body {
            RequestBody::Empty => Bytes::new(),
            RequestBody::Bytes(b) => b.clone(),
            _ => return None,
        };
        let mut req = http::Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.url.as_str().parse().ok()?;
        *req.headers_mut() = self.headers.clone();
        if let Some(ua) = &self.user_agent {
            req.headers_mut()
                .insert(http::header::USER_AGENT, ua.clone());
        }
        if let Some(r) = &self.referrer {
            req.headers_mut().insert(http::header::REFERER, r.clone());
        }
        Some(req)
    }
}

impl<B: Into<RequestBody>> TryFrom<http::Request<B>> for ResourceRequest {
    type Error = Error;

    fn try_from(req: http::Request<B>) -> Result<Self> {
        let (parts, body) = req.into_parts();
        let mut b = RequestBuilder::new(parts.method.as_str(), &parts.uri.to_string());
        for (name, value) in parts.headers.iter() {
            b = b.header(name.as_str(), value.as_bytes());
        }
        b.body(body).build()
    }
}

/// The validating builder of [`ResourceRequest`]. Errors are kept until
/// [`RequestBuilder::build`], which reports the first one.
#[derive(Debug)]
#[must_use]
pub struct RequestBuilder {
    req: Result<ResourceRequest>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidRequest, msg)
}

fn header_value(what: &str, value: &[u8]) -> Result<HeaderValue> {
    HeaderValue::from_bytes(value).map_err(|_| {
        invalid(format!(
            "{what} contains a forbidden byte (CR, LF, NUL or other control)"
        ))
    })
}

impl RequestBuilder {
    fn new(method: &str, url: &str) -> Self {
        let req = Self::parse(method, url);
        RequestBuilder { req }
    }

    fn parse(method: &str, url: &str) -> Result<ResourceRequest> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| invalid(format!("{method:?} is not a valid method token")))?;
        if url.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(invalid("url contains CR, LF or NUL"));
        }
        let url = Url::parse(url)
            .map_err(|e| invalid(format!("url {url:?} does not parse: {e}")).with_source(e))?;
        // http, https, data, file and the schemes applications registered.
        if !crate::manager::schemes::is_known_scheme(url.scheme()) {
            return Err(Error::new(
                ErrorKind::UnsupportedScheme,
                format!("no handler for the {:?} scheme", url.scheme()),
            )
            .with_url(&url));
        }
        // data: and file: urls have no host, nor need custom schemes one.
        let needs_host = matches!(url.scheme(), "http" | "https");
        if needs_host && url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("url has no host").with_url(&url));
        }
        Ok(ResourceRequest {
            url,
            method,
            headers: HeaderMap::new(),
            user_agent: None,
            referrer: None,
            body: RequestBody::Empty,
            timeout: None,
            connect_timeout: None,
            read_timeout: None,
            cache_policy: CachePolicy::default(),
            allow_cookies: true,
            target_type: TargetType::default(),
            priority: Priority::default(),
            http_version: HttpVersionPref::default(),
            decode_content: true,
            redirect_policy: None,
            max_redirects: None,
        })
    }

    fn with(mut self, f: impl FnOnce(&mut ResourceRequest) -> Result<()>) -> Self {
        if let Ok(req) = &mut self.req {
            if let Err(e) = f(req) {
                self.req = Err(e);
            }
        }
        self
    }

    /// Appends a header; repeated names are kept, in order.
    pub fn header(self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        let (name, value) = (name.as_ref().to_vec(), value.as_ref().to_vec());
        self.with(move |r| {
            let n = HeaderName::from_bytes(&name).map_err(|_| {
                invalid(format!(
                    "header name {:?} is not a valid token",
                    String::from_utf8_lossy(&name)
                ))
            })?;
            let v = header_value(&format!("value of header {n}"), &value)?;
            r.headers.append(n, v);
            Ok(())
        })
    }

    /// Sets the User-Agent.
    pub fn user_agent(self, ua: impl AsRef<str>) -> Self {
        let ua = ua.as_ref().to_owned();
        self.with(move |r| {
            r.user_agent = Some(header_value("user agent", ua.as_bytes())?);
            Ok(())
        })
    }

    /// Sets the referrer (sent as Referer).
    pub fn referrer(self, referrer: impl AsRef<str>) -> Self {
        let referrer = referrer.as_ref().to_owned();
        self.with(move |r| {
            r.referrer = Some(header_value("referrer", referrer.as_bytes())?);
            Ok(())
        })
    }

    /// Sets the body.
    pub fn body(self, body: impl Into<RequestBody>) -> Self {
        let body = body.into();
        self.with(move |r| {
            r.body = body;
            Ok(())
        })
    }

    /// Sets the total timeout for the whole load, body included.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.with(move |r| {
            r.timeout = Some(timeout);
            Ok(())
        })
    }

    /// Sets the timeout for establishing a connection.
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        self.with(move |r| {
            r.connect_timeout = Some(timeout);
            Ok(())
        })
    }

    /// Sets the idle timeout: once connected, the longest the load may go
    /// without receiving a byte (or, while the body is uploaded, without
    /// sending one) before it fails with a timeout in
    /// [`TimeoutPhase::Idle`](crate::TimeoutPhase::Idle). Unlike
    /// [`timeout`](Self::timeout) it restarts with every byte, so a slow
    /// transfer that keeps moving is never cut; unlike
    /// [`connect_timeout`](Self::connect_timeout) it does not cover
    /// establishing the connection. It does not run while the application
    /// holds the body back (backpressure is not the server's fault).
    pub fn read_timeout(self, timeout: Duration) -> Self {
        self.with(move |r| {
            r.read_timeout = Some(timeout);
            Ok(())
        })
    }

    /// Sets the cache policy.
    pub fn cache_policy(self, policy: CachePolicy) -> Self {
        self.with(move |r| {
            r.cache_policy = policy;
            Ok(())
        })
    }

    /// Allows or forbids cookies for this load.
    pub fn allow_cookies(self, allow: bool) -> Self {
        self.with(move |r| {
            r.allow_cookies = allow;
            Ok(())
        })
    }

    /// Sets what the resource is for.
    pub fn target_type(self, target: TargetType) -> Self {
        self.with(move |r| {
            r.target_type = target;
            Ok(())
        })
    }

    /// Sets the scheduling priority.
    pub fn priority(self, priority: Priority) -> Self {
        self.with(move |r| {
            r.priority = priority;
            Ok(())
        })
    }

    /// Sets the HTTP version preference.
    pub fn http_version(self, pref: HttpVersionPref) -> Self {
        self.with(move |r| {
            r.http_version = pref;
            Ok(())
        })
    }

    /// Asks for compressed content and decodes it (the default), or, with
    /// `false`, sends no Accept-Encoding of its own and delivers the bytes as received.
    pub fn decode_content(self, decode: bool) -> Self {
        self.with(move |r| {
            r.decode_content = decode;
            Ok(())
        })
    }

    /// Overrides the manager's redirect policy for this load.
    pub fn redirect_policy(self, policy: RedirectPolicy) -> Self {
        self.with(move |r| {
            r.redirect_policy = Some(policy);
            Ok(())
        })
    }

    /// Overrides the manager's redirect maximum for this load.
    pub fn max_redirects(self, n: u32) -> Self {
        self.with(move |r| {
            r.max_redirects = Some(n);
            Ok(())
        })
    }

    /// Validates and returns the request, or the first error met.
    pub fn build(self) -> Result<ResourceRequest> {
        self.req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_injection_is_refused() {
        let e = ResourceRequest::get("http://a.test/")
            .header("x-a", "1\r\nx-b: 2")
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
        let e = ResourceRequest::get("http://a.test/")
            .header("x a", "1")
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
        let e = ResourceRequest::get("http://a.test/")
            .user_agent("ua\0")
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    }

    #[test]
    fn urls_and_schemes_are_checked() {
        let e = ResourceRequest::get("http://[::1").build().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
        let e = ResourceRequest::get("gopher://a.test/")
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnsupportedScheme);
        for url in ["data:,x", "file:///tmp/x", "file://localhost/tmp/x"] {
            assert!(ResourceRequest::get(url).build().is_ok(), "{url}");
        }
        let e = ResourceRequest::get("http://a.test/\r\nx")
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    }

    #[test]
    fn methods_must_be_tokens() {
        assert!(ResourceRequest::builder("PURGE", "http://a.test/")
            .build()
            .is_ok());
        let e = ResourceRequest::builder("GE T", "http://a.test/")
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    }

    #[test]
    fn repeated_headers_keep_order() {
        let r = ResourceRequest::get("http://a.test/")
            .header("x-r", "1")
            .header("x-r", "2")
            .build()
            .unwrap();
        let v: Vec<_> = r.headers().get_all("x-r").iter().collect();
        assert_eq!(v, ["1", "2"]);
    }

    #[test]
    fn converts_from_http_request() {
        let h = http::Request::post("http://a.test/p")
            .header("x-a", "b")
            .body("data")
            .unwrap();
        let r = ResourceRequest::try_from(h).unwrap();
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.headers()["x-a"], "b");
        let back = r.to_http().unwrap();
        assert_eq!(back.body().as_ref(), b"data");
    }
}
