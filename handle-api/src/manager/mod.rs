//! `NetworkAccessManager`: one per application, after Qt's QNetworkAccessManager.
//!
//! It holds the backend and the configuration every load shares, turns each
//! [`ResourceRequest`] into the exchange a backend puts on the wire, and hands
//! back a [`ResourceHandle`]. Policy decided here is the same whichever
//! backend is compiled.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, ACCEPT, REFERER, USER_AGENT};
use http::Method;

use crate::backend::{
    BackendConfig, BackendFactory, BodyFraming, Capabilities, Exchange, HostOverrides,
    ResourceHandleManager, WireRequest,
};
use crate::body::UploadBody;
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::ExchangeSink;
use crate::handle::ResourceHandle;
use crate::request::ResourceRequest;

/// The User-Agent sent when neither the request nor the manager sets one.
pub const DEFAULT_USER_AGENT: &str = concat!("resource-handle/", env!("CARGO_PKG_VERSION"));

/// The application-wide loader. Cheap to clone; clones share everything.
///
/// ```no_run
/// # fn demo(factory: impl handle_api::BackendFactory) -> handle_api::Result<()> {
/// use handle_api::{NetworkAccessManager, ResourceRequest};
/// let nam = NetworkAccessManager::builder().build(factory)?;
/// let mut handle = nam.load(ResourceRequest::get("http://example.test/").build()?);
/// let status = handle.response_blocking()?.status();
/// let body = handle.bytes_blocking()?;
/// # let _ = (status, body); Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct NetworkAccessManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backend: Arc<dyn ResourceHandleManager>,
    user_agent: HeaderValue,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
}

/// Configures a [`NetworkAccessManager`].
#[derive(Debug)]
#[must_use]
pub struct ManagerBuilder {
    backend: BackendConfig,
    user_agent: HeaderValue,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
}

impl Default for ManagerBuilder {
    fn default() -> Self {
        ManagerBuilder {
            backend: BackendConfig::default(),
            user_agent: HeaderValue::from_static(DEFAULT_USER_AGENT),
            timeout: None,
            connect_timeout: None,
        }
    }
}

impl ManagerBuilder {
    /// Maps `host:port` to `addrs`, like curl's `--resolve`; an empty list makes
    /// the name unresolvable (a `dns` error).
    pub fn resolve(
        mut self,
        host: &str,
        port: u16,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        self.backend
            .resolve
            .insert(host, port, addrs.into_iter().collect());
        self
    }

    /// Replaces all host-name overrides.
    pub fn host_overrides(mut self, overrides: HostOverrides) -> Self {
        self.backend.resolve = overrides;
        self
    }

    /// The default User-Agent for requests that set none.
    pub fn user_agent(mut self, ua: &str) -> Result<Self> {
        self.user_agent = HeaderValue::from_str(ua).map_err(|_| {
            Error::new(ErrorKind::InvalidRequest, "user agent has a forbidden byte")
        })?;
        Ok(self)
    }

    /// The default total timeout for requests that set none.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// The default connect timeout for requests that set none.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = Some(t);
        self
    }

    /// Connections kept per scheme+host+port (default 6).
    pub fn max_connections_per_host(mut self, n: usize) -> Self {
        self.backend.max_connections_per_host = n.max(1);
        self
    }

    /// How long idle pooled connections are kept (default 90 s).
    pub fn idle_connection_timeout(mut self, t: Duration) -> Self {
        self.backend.idle_timeout = t;
        self
    }

    /// Creates the backend with `factory` and returns the manager.
    pub fn build(self, factory: impl BackendFactory) -> Result<NetworkAccessManager> {
        let backend = factory.create(&self.backend)?;
        Ok(NetworkAccessManager {
            inner: Arc::new(Inner {
                backend,
                user_agent: self.user_agent,
                timeout: self.timeout,
                connect_timeout: self.connect_timeout,
            }),
        })
    }
}

impl NetworkAccessManager {
    /// A manager with default settings over the backend `factory` makes.
    pub fn new(factory: impl BackendFactory) -> Result<Self> {
        ManagerBuilder::default().build(factory)
    }

    /// A builder for a configured manager.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// The backend's capabilities.
    pub fn capabilities(&self) -> &Capabilities {
        self.inner.backend.capabilities()
    }

    /// Starts a load. Never blocks; every outcome, errors included, arrives
    /// through the returned handle.
    pub fn load(&self, mut request: ResourceRequest) -> ResourceHandle {
        let mut url = request.url.clone();
        url.set_fragment(None);
        let (sink, shared) = ExchangeSink::new(url.clone());
        let mut handle = ResourceHandle::new(shared, request.url.clone());
        handle.keep_backend(self.inner.backend.clone());
        let body = match UploadBody::open(request.take_body()) {
            Ok(b) => b,
            Err(e) => {
                sink.fail(Error::new(ErrorKind::Io, e.to_string()).with_source(e));
                return handle;
            }
        };
        let wire = self.wire_request(request, url, body, &sink);
        self.inner.backend.start(Exchange {
            request: wire,
            sink,
        });
        handle
    }

    /// Builds a GET request for `url` and starts it.
    pub fn get(&self, url: &str) -> Result<ResourceHandle> {
        Ok(self.load(ResourceRequest::get(url).build()?))
    }

    fn wire_request(
        &self,
        request: ResourceRequest,
        url: url::Url,
        mut body: UploadBody,
        sink: &ExchangeSink,
    ) -> WireRequest {
        let mut headers = request.headers;
        // Framing is the backend's to write, from `framing` below; an
        // application value would only conflict with it.
        headers.remove(http::header::CONTENT_LENGTH);
        headers.remove(http::header::TRANSFER_ENCODING);
        if !headers.contains_key(USER_AGENT) {
            let ua = request
                .user_agent
                .unwrap_or_else(|| self.inner.user_agent.clone());
            headers.insert(USER_AGENT, ua);
        }
        if !headers.contains_key(ACCEPT) {
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        }
        if let Some(referrer) = request.referrer {
            headers.insert(REFERER, referrer);
        }
        let framing = framing(&request.method, &body);
        body.attach(sink.shared().clone());
        WireRequest {
            method: request.method,
            url,
            headers,
            body,
            framing,
            timeout: request.timeout.or(self.inner.timeout),
            connect_timeout: request.connect_timeout.or(self.inner.connect_timeout),
            http_version: request.http_version,
        }
    }
}

/// The framing rule every backend follows: a known length is sent as
/// Content-Length (0 included for methods that define a body), an unknown
/// one chunked, and no body means no framing header.
fn framing(method: &Method, body: &UploadBody) -> BodyFraming {
    match body.len() {
        None => BodyFraming::Chunked,
        Some(0) if body.is_empty() => {
            if matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
                BodyFraming::Length(0)
            } else {
                BodyFraming::None
            }
        }
        Some(n) => BodyFraming::Length(n),
    }
}
