//! `NetworkAccessManager`: one per application, after Qt's QNetworkAccessManager.
//!
//! It holds the backend and the configuration every load shares, turns each
//! [`ResourceRequest`] into the exchange a backend puts on the wire, and hands
//! back a [`ResourceHandle`]. Policy decided here is the same whichever
//! backend is compiled.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;

use crate::backend::{
    BackendConfig, BackendFactory, Capabilities, Capability, HostOverrides, ResourceHandleManager,
};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::ResourceHandle;
use crate::proxy::ProxyConfig;
use crate::request::ResourceRequest;
use crate::tls::{Certificate, Identity};

pub(crate) mod decode;
mod load;
mod queue;
pub(crate) mod redirect;
pub(crate) mod schemes;

pub(crate) use load::Load;
use load::{Plan, ReplayBody};
use queue::Scheduler;
use redirect::{RedirectPolicy, RedirectRules, DEFAULT_MAX_REDIRECTS};
use schemes::{DataScheme, FileScheme, SchemeHandler};

/// The User-Agent sent when neither the request nor the manager sets one.
pub const DEFAULT_USER_AGENT: &str = concat!("resource-handle/", env!("CARGO_PKG_VERSION"));

/// The default limit on a decoded body (a decompression bomb stops here).
pub const DEFAULT_MAX_DECODED_BYTES: u64 = 1 << 30;

/// The default limit on loads in flight across all hosts.
pub const DEFAULT_MAX_LOADS_TOTAL: usize = 256;

/// The application-wide loader. Cheap to clone; clones share everything.
///
/// It starts at most 6 loads per scheme+host+port at once (configurable)
/// and queues the rest by priority, follows redirects, decodes content and
/// serves `data:`, `file:` and registered schemes, the same way whichever
/// backend carries the loads.
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
#[derive(Clone)]
pub struct NetworkAccessManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NetworkAccessManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkAccessManager")
            .field("backend", &self.inner.backend.name())
            .finish()
    }
}

pub(crate) struct Inner {
    pub(crate) backend: Arc<dyn ResourceHandleManager>,
    pub(crate) scheduler: Arc<Scheduler>,
    pub(crate) schemes: HashMap<String, Arc<dyn SchemeHandler>>,
    user_agent: HeaderValue,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    redirect: RedirectRules,
    max_decoded: u64,
    pub(crate) proxy: ProxyConfig,
}

/// Configures a [`NetworkAccessManager`].
#[must_use]
pub struct ManagerBuilder {
    backend: BackendConfig,
    user_agent: HeaderValue,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    max_total: usize,
    redirect: RedirectRules,
    max_decoded: u64,
    schemes: HashMap<String, Arc<dyn SchemeHandler>>,
    proxy: ProxyConfig,
}

impl std::fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("backend", &self.backend)
            .field("redirect", &self.redirect)
            .finish_non_exhaustive()
    }
}

impl Default for ManagerBuilder {
    fn default() -> Self {
        ManagerBuilder {
            backend: BackendConfig::default(),
            user_agent: HeaderValue::from_static(DEFAULT_USER_AGENT),
            timeout: None,
            connect_timeout: None,
            read_timeout: None,
            max_total: DEFAULT_MAX_LOADS_TOTAL,
            redirect: RedirectRules {
                policy: RedirectPolicy::Follow,
                max: DEFAULT_MAX_REDIRECTS,
                allow_downgrade: false,
            },
            max_decoded: DEFAULT_MAX_DECODED_BYTES,
            schemes: HashMap::new(),
            proxy: ProxyConfig::None,
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

    /// The default idle timeout for requests that set none: once connected,
    /// the longest a load may go without a byte from the server before it
    /// fails with a timeout in [`TimeoutPhase::Idle`](crate::TimeoutPhase::Idle).
    /// See [`RequestBuilder::read_timeout`](crate::RequestBuilder::read_timeout).
    pub fn read_timeout(mut self, t: Duration) -> Self {
        self.read_timeout = Some(t);
        self
    }

    /// The largest response head accepted, in bytes as received (status
    /// line, header lines and the blank line, line ends included); default
    /// [`DEFAULT_MAX_RESPONSE_HEAD_BYTES`](crate::DEFAULT_MAX_RESPONSE_HEAD_BYTES).
    /// Every backend enforces it exactly: a head of `n` bytes loads, one of
    /// `n + 1` fails with `limit_exceeded`. A backend whose library cannot
    /// honour the value refuses to start with `unsupported`.
    pub fn max_response_head_bytes(mut self, n: usize) -> Self {
        self.backend.max_response_head_bytes = n;
        self
    }

    /// The most header fields a response head may carry; default
    /// [`DEFAULT_MAX_RESPONSE_HEADERS`](crate::DEFAULT_MAX_RESPONSE_HEADERS).
    /// One more fails the load with `limit_exceeded`, on every backend.
    pub fn max_response_headers(mut self, n: usize) -> Self {
        self.backend.max_response_headers = n;
        self
    }

    /// Loads in flight (and connections kept) per scheme+host+port; default 6, as Qt.
    pub fn max_connections_per_host(mut self, n: usize) -> Self {
        self.backend.max_connections_per_host = n.max(1);
        self
    }

    /// Loads in flight across all hosts; default [`DEFAULT_MAX_LOADS_TOTAL`].
    pub fn max_loads_total(mut self, n: usize) -> Self {
        self.max_total = n.max(1);
        self
    }

    /// How long idle pooled connections are kept (default 90 s).
    pub fn idle_connection_timeout(mut self, t: Duration) -> Self {
        self.backend.idle_timeout = t;
        self
    }

    /// The default redirect policy (follow).
    pub fn redirect_policy(mut self, policy: RedirectPolicy) -> Self {
        self.redirect.policy = policy;
        self
    }

    /// The default maximum of redirects per load (20).
    pub fn max_redirects(mut self, n: u32) -> Self {
        self.redirect.max = n;
        self
    }

    /// Allows redirects from https to http (refused by default).
    pub fn allow_https_downgrade(mut self, allow: bool) -> Self {
        self.redirect.allow_downgrade = allow;
        self
    }

    /// The largest decoded body (default 1 GiB); past it a load fails with `limit_exceeded`.
    pub fn max_decoded_body_bytes(mut self, n: u64) -> Self {
        self.max_decoded = n;
        self
    }

    /// Serves `scheme` with `handler` (Qt's and WebKit's custom scheme handlers).
    /// Requests naming the scheme build from then on, in the whole process.
    pub fn scheme_handler(mut self, scheme: &str, handler: impl SchemeHandler) -> Result<Self> {
        let scheme = scheme.to_ascii_lowercase();
        let valid = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !valid || matches!(scheme.as_str(), "http" | "https") {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                format!("{scheme:?} cannot be given a scheme handler"),
            ));
        }
        schemes::register_scheme_name(&scheme);
        self.schemes.insert(scheme, Arc::new(handler));
        Ok(self)
    }

    /// The proxy configuration (default: none; see [`ProxyConfig::from_env`]).
    pub fn proxy(mut self, proxy: ProxyConfig) -> Self {
        self.proxy = proxy;
        self
    }

    /// Trusts `cert` as a CA, besides the system's roots.
    pub fn add_root_certificate(mut self, cert: Certificate) -> Self {
        self.backend.tls.extra_roots.push(cert);
        self
    }

    /// Trusts every CA certificate of a PEM file, besides the system's roots.
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> Result<Self> {
        self.backend.tls.extra_roots.extend(Certificate::from_pem(pem)?);
        Ok(self)
    }

    /// Whether the system's certificate store is trusted (default: yes).
    /// Without it, only the roots added with
    /// [`ManagerBuilder::add_root_certificate`] are.
    pub fn tls_system_roots(mut self, trust: bool) -> Self {
        self.backend.tls.system_roots = trust;
        self
    }

    /// **Dangerous**: accepts any server certificate, for any host name,
    /// from any issuer. Anyone between the application and the server can
    /// then read and change the traffic. Meant for test set-ups with
    /// throw-away certificates; never the default, never for production.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.backend.tls.verify = !accept;
        self
    }

    /// The client certificate and key presented when a server asks for one.
    /// A backend without client certificates refuses to build (`unsupported`).
    pub fn identity(mut self, identity: Identity) -> Self {
        self.backend.tls.identity = Some(identity);
        self
    }

    /// Creates the backend with `factory` and returns the manager.
    pub fn build(self, factory: impl BackendFactory) -> Result<NetworkAccessManager> {
        let backend = factory.create(&self.backend)?;
        if self.backend.tls.identity.is_some() {
            if let Err(why) = backend.capabilities().check(Capability::ClientCertificate) {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "the {} backend cannot present a client certificate: {why}",
                        backend.name()
                    ),
                ));
            }
        }
        let scheduler = Scheduler::new(
            backend.clone(),
            self.backend.max_connections_per_host,
            self.max_total,
        );
        let mut schemes: HashMap<String, Arc<dyn SchemeHandler>> = HashMap::new();
        schemes.insert("data".into(), Arc::new(DataScheme));
        schemes.insert("file".into(), Arc::new(FileScheme));
        schemes.extend(self.schemes);
        Ok(NetworkAccessManager {
            inner: Arc::new(Inner {
                backend,
                scheduler,
                schemes,
                user_agent: self.user_agent,
                timeout: self.timeout,
                connect_timeout: self.connect_timeout,
                read_timeout: self.read_timeout,
                redirect: self.redirect,
                max_decoded: self.max_decoded,
                proxy: self.proxy,
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

    /// Loads waiting for a free slot.
    pub fn queued_loads(&self) -> usize {
        self.inner.scheduler.queued()
    }

    /// Loads on the wire now.
    pub fn loads_in_flight(&self) -> usize {
        self.inner.scheduler.in_flight()
    }

    /// Starts a load. Never blocks; every outcome, errors included, arrives
    /// through the returned handle. The handle keeps what the load needs
    /// alive, even if the manager is dropped first.
    pub fn load(&self, mut request: ResourceRequest) -> ResourceHandle {
        let inner = &self.inner;
        let body = ReplayBody::new(request.take_body());
        let plan = Plan {
            method: request.method,
            url: request.url,
            headers: request.headers,
            user_agent: request
                .user_agent
                .unwrap_or_else(|| inner.user_agent.clone()),
            referrer: request.referrer,
            body,
            timeout: request.timeout.or(inner.timeout),
            connect_timeout: request.connect_timeout.or(inner.connect_timeout),
            read_timeout: request.read_timeout.or(inner.read_timeout),
            http_version: request.http_version,
            priority: request.priority,
            decode: request.decode_content,
            rules: RedirectRules {
                policy: request
                    .redirect_policy
                    .unwrap_or_else(|| inner.redirect.policy.clone()),
                max: request.max_redirects.unwrap_or(inner.redirect.max),
                allow_downgrade: inner.redirect.allow_downgrade,
            },
            max_decoded: inner.max_decoded,
            seen_https: false,
            via_proxy: false,
        };
        ResourceHandle::new(Load::start(self.inner.clone(), plan))
    }

    /// Builds a GET request for `url` and starts it.
    pub fn get(&self, url: &str) -> Result<ResourceHandle> {
        Ok(self.load(ResourceRequest::get(url).build()?))
    }
}
