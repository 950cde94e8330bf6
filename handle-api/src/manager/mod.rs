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

use crate::auth::{self, AuthChallenge, AuthStore, Authenticator, Credentials, LoadAuth};
use crate::backend::{
    BackendConfig, BackendFactory, Capabilities, Capability, HostOverrides, ResourceHandleManager,
};
use crate::cache::hop::{CacheHop, CacheSettings};
use crate::cache::NetworkCache;
use crate::cookies::{CookieJar, MemoryCookieJar};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::ResourceHandle;
use crate::hsts::HstsStore;
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
    pub(crate) cache: Option<CacheSettings>,
    pub(crate) cookie_jar: Arc<dyn CookieJar>,
    /// Known HSTS Hosts; `None` when HSTS is off.
    pub(crate) hsts: Option<HstsStore>,
    /// Whether Strict-Transport-Security headers are noted: not when
    /// certificates go unchecked, as RFC 6797 §8.1 asks.
    pub(crate) hsts_learn: bool,
    pub(crate) auth: AuthStore,
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
    cache: Option<Arc<dyn NetworkCache>>,
    shared_cache: bool,
    cookie_jar: Option<Arc<dyn CookieJar>>,
    hsts: Option<HstsStore>,
    hsts_enabled: bool,
    credentials: HashMap<url::Origin, Credentials>,
    authenticator: Option<Authenticator>,
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
            cache: None,
            shared_cache: false,
            cookie_jar: None,
            hsts: None,
            hsts_enabled: true,
            credentials: HashMap::new(),
            authenticator: None,
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

    /// The HTTP cache (default: none), Qt's `setCache`: a
    /// [`MemoryCache`](crate::MemoryCache), a [`DiskCache`](crate::DiskCache)
    /// or one of the application's. GET responses are stored and reused by
    /// the rules of RFC 9111 and each request's
    /// [`CachePolicy`](crate::CachePolicy); the response's
    /// [`source`](crate::ResourceResponse::source) tells whether it came
    /// from the network, the cache, or the cache after a 304.
    pub fn cache(mut self, cache: Arc<dyn NetworkCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Whether the cache is shared between users, as a proxy's is (default:
    /// no, a private cache). A shared cache stores no `private` response,
    /// nor one to a request with credentials unless the response allows
    /// it, and honours `s-maxage`.
    pub fn shared_cache(mut self, shared: bool) -> Self {
        self.shared_cache = shared;
        self
    }

    /// The cookie jar (default: a new [`MemoryCookieJar`]), Qt's
    /// `setCookieJar`. Set-Cookie fields of every response, redirects
    /// included, are stored in it, and each request carries the cookies it
    /// has for that hop's url, unless the request's `allow_cookies` is
    /// false. A [`PersistentCookieJar`](crate::PersistentCookieJar) also
    /// brings the HSTS store it keeps in its file.
    pub fn cookie_jar(mut self, jar: Arc<dyn CookieJar>) -> Self {
        self.cookie_jar = Some(jar);
        self
    }

    /// The HSTS store (default: the cookie jar's, if it keeps one, else a
    /// new one in memory), so managers can share Known HSTS Hosts or start
    /// with some (Qt's `addStrictTransportSecurityHosts`).
    pub fn hsts_store(mut self, store: HstsStore) -> Self {
        self.hsts = Some(store);
        self
    }

    /// Whether HTTP Strict Transport Security is on (default: yes), Qt's
    /// `setStrictTransportSecurityEnabled`: a `Strict-Transport-Security`
    /// header received over https makes later http loads of that host go
    /// to https before anything is sent. Headers received over http are
    /// ignored, and so are all of them while certificates go unchecked
    /// ([`ManagerBuilder::danger_accept_invalid_certs`]).
    pub fn hsts(mut self, enabled: bool) -> Self {
        self.hsts_enabled = enabled;
        self
    }

    /// Basic credentials for `origin` (`scheme://host[:port]`), sent when a
    /// server of that origin answers 401 with a Basic challenge, and never
    /// to another origin. An origin that does not parse, or a user name
    /// with `:`, is an `invalid_request` error.
    pub fn credentials(mut self, origin: &str, user: &str, password: &str) -> Result<Self> {
        let origin = auth::parse_origin(origin)?;
        self.credentials
            .insert(origin, Credentials::new(user, password)?);
        Ok(self)
    }

    /// The callback asked for credentials when a server answers 401 with a
    /// Basic challenge and none are known for its origin (Qt's
    /// `authenticationRequired`). Returning `None` declines: the 401 is the
    /// response. It runs on the thread that polls the load.
    pub fn authenticator(
        mut self,
        f: impl Fn(&AuthChallenge) -> Option<Credentials> + Send + Sync + 'static,
    ) -> Self {
        self.authenticator = Some(Arc::new(f));
        self
    }

    /// Trusts `cert` as a CA, besides the system's roots.
    pub fn add_root_certificate(mut self, cert: Certificate) -> Self {
        self.backend.tls.extra_roots.push(cert);
        self
    }

    /// Trusts every CA certificate of a PEM file, besides the system's roots.
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> Result<Self> {
        self.backend
            .tls
            .extra_roots
            .extend(Certificate::from_pem(pem)?);
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
        let jar = self
            .cookie_jar
            .unwrap_or_else(|| Arc::new(MemoryCookieJar::new()));
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
                cache: self.cache.map(|cache| CacheSettings {
                    cache,
                    shared: self.shared_cache,
                }),
                hsts: self
                    .hsts_enabled
                    .then(|| self.hsts.or_else(|| jar.hsts_store()).unwrap_or_default()),
                hsts_learn: self.backend.tls.verify,
                cookie_jar: jar,
                auth: AuthStore::new(self.credentials, self.authenticator),
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

    /// The cookie jar.
    pub fn cookie_jar(&self) -> &Arc<dyn CookieJar> {
        &self.inner.cookie_jar
    }

    /// The HSTS store; `None` when HSTS is off.
    pub fn hsts_store(&self) -> Option<&HstsStore> {
        self.inner.hsts.as_ref()
    }

    /// The HTTP cache, when one was set.
    pub fn cache(&self) -> Option<&Arc<dyn NetworkCache>> {
        self.inner.cache.as_ref().map(|c| &c.cache)
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
        let mut url = request.url;
        // Credentials in the url are the load's, for that origin only.
        let url_credentials = auth::take_url_credentials(&mut url);
        let plan = Plan {
            method: request.method,
            url,
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
            cache_policy: request.cache_policy,
            cache: CacheHop::default(),
            allow_cookies: request.allow_cookies,
            auth: LoadAuth::new(url_credentials),
        };
        ResourceHandle::new(Load::start(self.inner.clone(), plan))
    }

    /// Builds a GET request for `url` and starts it.
    pub fn get(&self, url: &str) -> Result<ResourceHandle> {
        Ok(self.load(ResourceRequest::get(url).build()?))
    }
}
