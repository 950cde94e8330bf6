//! The backend contract: what a [`ResourceHandleManager`] receives and must do.
//!
//! Policy lives in handle-api; a backend owns only the wire. It receives one
//! [`Exchange`] per request on the wire, with the final method, url (without
//! fragment), headers and body framing already decided, and reports back
//! through the exchange's sink. It must not follow redirects, store cookies,
//! decode content or add headers beyond Host and the body framing that
//! [`WireRequest::framing`] names.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};
use url::Url;

use crate::body::UploadBody;
use crate::error::Result;
use crate::exchange::ExchangeSink;
use crate::proxy::Proxy;
use crate::request::HttpVersionPref;
use crate::tls::TlsConfig;

/// A backend: one HTTP library under the common contract (WebCore's
/// per-platform ResourceHandleManager).
///
/// Object safe: `Arc<dyn ResourceHandleManager>` selects a backend at run
/// time. `start` must return at once, from any thread, inside or outside any
/// async runtime; the backend runs the exchange on threads or a runtime of its
/// own.
pub trait ResourceHandleManager: Send + Sync + 'static {
    /// The backend's short name (`curl`, `hyper`, `ureq`).
    fn name(&self) -> &'static str;

    /// What this backend can do.
    fn capabilities(&self) -> &Capabilities;

    /// Starts one exchange. Every outcome is reported through `exchange.sink`,
    /// including an option the backend cannot honour (an `unsupported` error,
    /// never silently ignored).
    fn start(&self, exchange: Exchange);
}

impl fmt::Debug for dyn ResourceHandleManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceHandleManager({})", self.name())
    }
}

/// Creates a backend from the manager's configuration.
pub trait BackendFactory {
    /// Builds the backend.
    fn create(&self, config: &BackendConfig) -> Result<Arc<dyn ResourceHandleManager>>;
}

impl<F> BackendFactory for F
where
    F: Fn(&BackendConfig) -> Result<Arc<dyn ResourceHandleManager>>,
{
    fn create(&self, config: &BackendConfig) -> Result<Arc<dyn ResourceHandleManager>> {
        self(config)
    }
}

/// One request on the wire and the sink for its outcome: everything a
/// backend's `start` receives, in one struct so new fields never change the
/// trait's signature.
#[derive(Debug)]
#[non_exhaustive]
pub struct Exchange {
    /// What to send.
    pub request: WireRequest,
    /// Where to report the response, body and end.
    pub sink: ExchangeSink,
}

/// How the request body is framed on the wire, decided once in handle-api.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body and no framing header.
    None,
    /// `Content-Length: n` (also `0` for an empty body on POST, PUT and PATCH).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The request as it goes on the wire.
#[derive(Debug)]
#[non_exhaustive]
pub struct WireRequest {
    /// The method, any token.
    pub method: Method,
    /// The url without fragment.
    pub url: Url,
    /// The final headers, in order: the application's, then User-Agent,
    /// Accept and Referer where the manager supplied them. The backend sends
    /// them all as given and adds only Host and the framing header.
    pub headers: HeaderMap,
    /// The body, read as it is sent.
    pub body: UploadBody,
    /// How to frame the body.
    pub framing: BodyFraming,
    /// Total timeout, from start to the end of the body.
    pub timeout: Option<Duration>,
    /// Timeout for establishing the connection.
    pub connect_timeout: Option<Duration>,
    /// Idle timeout: once connected, the longest the exchange may go without
    /// a byte from the server (or, while the request body is sent, without
    /// sending one). It restarts with every byte, does not run while the
    /// application holds the body back, and is reported as
    /// [`TimeoutPhase::Idle`](crate::TimeoutPhase::Idle).
    pub read_timeout: Option<Duration>,
    /// HTTP version preference.
    pub http_version: HttpVersionPref,
    /// The proxy that carries this exchange, chosen by the manager for the
    /// url; `None` to connect directly. A backend never reads proxy
    /// settings from the environment itself: `None` means no proxy.
    pub proxy: Option<Proxy>,
}

impl WireRequest {
    /// `host:port` of the url, with the scheme's default port.
    pub fn host_port(&self) -> (String, u16) {
        let host = self.url.host_str().unwrap_or_default();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        (host, self.url.port_or_known_default().unwrap_or(80))
    }

    /// Whether the backend may send this request once more, on a fresh
    /// connection, after the reused connection it went out on closed before
    /// any byte of a response arrived (the keep-alive race of RFC 9112
    /// §9.3.1). True only for an idempotent method without a body: a POST,
    /// or any request whose body was already read, is never silently re-sent.
    /// A backend retries at most once and only in that case.
    pub fn may_retry_on_stale_connection(&self) -> bool {
        let idempotent = matches!(
            self.method.as_str(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        );
        idempotent && self.framing == BodyFraming::None && self.body.is_empty()
    }
}

/// A capability a backend may have; conformance cases name the ones they need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Capability {
    /// HTTP/1.1 over TCP.
    Http1,
    /// HTTPS (TLS).
    Https,
    /// HTTP/2.
    Http2,
    /// HTTP proxies: absolute-form requests for http urls, CONNECT tunnels for https.
    Proxy,
    /// SOCKS5 proxies.
    Socks5,
    /// TLS client certificates.
    ClientCertificate,
}

impl Capability {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Http1 => "http1",
            Capability::Https => "https",
            Capability::Http2 => "http2",
            Capability::Proxy => "proxy",
            Capability::Socks5 => "socks5",
            Capability::ClientCertificate => "client_certificate",
        }
    }
}

/// What a backend can do, and why not where it cannot.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    supported: Vec<Capability>,
    missing: Vec<(Capability, &'static str)>,
}

impl Capabilities {
    /// No capabilities.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a capability.
    pub fn with(mut self, c: Capability) -> Self {
        self.supported.push(c);
        self
    }

    /// Records a capability the backend lacks, with the reason.
    pub fn without(mut self, c: Capability, reason: &'static str) -> Self {
        self.missing.push((c, reason));
        self
    }

    /// `Ok` when the capability is supported, else the reason.
    pub fn check(&self, c: Capability) -> std::result::Result<(), String> {
        if self.supported.contains(&c) {
            return Ok(());
        }
        Err(self
            .missing
            .iter()
            .find(|(m, _)| *m == c)
            .map(|(_, r)| (*r).to_owned())
            .unwrap_or_else(|| format!("{} is not supported", c.as_str())))
    }

    /// True when the capability is supported.
    pub fn supports(&self, c: Capability) -> bool {
        self.supported.contains(&c)
    }

    /// The supported capabilities.
    pub fn supported(&self) -> &[Capability] {
        &self.supported
    }
}

/// Host-name overrides, like curl's `--resolve HOST:PORT:ADDR`. A name mapped
/// to no address fails with a `dns` error; a name not listed goes to the
/// system resolver unless [`HostOverrides::only`] is set.
#[derive(Debug, Clone, Default)]
pub struct HostOverrides {
    map: HashMap<(String, u16), Vec<IpAddr>>,
    only: bool,
}

/// The answer of [`HostOverrides::lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Connect to these addresses, in order.
    Addrs(Vec<SocketAddr>),
    /// The name has no address: fail with `dns`.
    NoAddress,
    /// Not overridden: ask the system resolver.
    System,
}

impl HostOverrides {
    /// Maps `host:port` to `addrs` (an empty list makes the name unresolvable).
    pub fn insert(&mut self, host: &str, port: u16, addrs: Vec<IpAddr>) {
        self.map.insert((host.to_ascii_lowercase(), port), addrs);
    }

    /// When set, names that are not listed fail with `dns` instead of reaching
    /// the system resolver.
    pub fn only(&mut self, only: bool) {
        self.only = only;
    }

    /// Parses curl's `HOST:PORT:ADDR[,ADDR…]` form (IPv6 addresses in brackets).
    pub fn parse_entry(entry: &str) -> std::result::Result<(String, u16, Vec<IpAddr>), String> {
        let bad = || format!("{entry:?} is not HOST:PORT:ADDR");
        let (host, rest) = entry.split_once(':').ok_or_else(bad)?;
        let (port, addrs) = rest.split_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let addrs = addrs
            .split(',')
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .map_err(|_| format!("{a:?} is not an IP address"))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok((host.to_owned(), port, addrs))
    }

    /// How to resolve `host:port`. IP literals resolve to themselves.
    pub fn lookup(&self, host: &str, port: u16) -> Resolution {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Resolution::Addrs(vec![SocketAddr::new(ip, port)]);
        }
        match self.map.get(&(bare.to_ascii_lowercase(), port)) {
            Some(a) if a.is_empty() => Resolution::NoAddress,
            Some(a) => Resolution::Addrs(a.iter().map(|ip| SocketAddr::new(*ip, port)).collect()),
            None if self.only => Resolution::NoAddress,
            None => Resolution::System,
        }
    }

    /// Every entry, as `(host, port, addrs)`.
    pub fn entries(&self) -> impl Iterator<Item = (&str, u16, &[IpAddr])> {
        self.map
            .iter()
            .map(|((h, p), a)| (h.as_str(), *p, a.as_slice()))
    }
}

/// Connection-level settings a backend is created with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BackendConfig {
    /// Host-name overrides.
    pub resolve: HostOverrides,
    /// Connections kept per scheme+host+port (Qt's 6).
    pub max_connections_per_host: usize,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
    /// The largest response head accepted, in bytes as received: the status
    /// line, every header line and the blank line that ends the head, line
    /// ends included. Each head counts on its own (an interim 1xx head and
    /// the final one). One byte more fails the load with `limit_exceeded`.
    pub max_response_head_bytes: usize,
    /// The most header fields a response head may carry (a folded field
    /// counts once). One more fails the load with `limit_exceeded`.
    pub max_response_headers: usize,
    /// Roots, verification and client identity for https.
    pub tls: TlsConfig,
}

/// The default of [`BackendConfig::max_response_head_bytes`]: 64 KiB.
pub const DEFAULT_MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// The default of [`BackendConfig::max_response_headers`]: 100 fields.
pub const DEFAULT_MAX_RESPONSE_HEADERS: usize = 100;

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            resolve: HostOverrides::default(),
            max_connections_per_host: 6,
            idle_timeout: Duration::from_secs(90),
            max_response_head_bytes: DEFAULT_MAX_RESPONSE_HEAD_BYTES,
            max_response_headers: DEFAULT_MAX_RESPONSE_HEADERS,
            tls: TlsConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_resolve_as_curl_does() {
        let mut o = HostOverrides::default();
        let (h, p, a) = HostOverrides::parse_entry("Origin.test:8080:127.0.0.1").unwrap();
        o.insert(&h, p, a);
        o.insert("nowhere.test", 80, vec![]);
        assert_eq!(
            o.lookup("origin.test", 8080),
            Resolution::Addrs(vec!["127.0.0.1:8080".parse().unwrap()])
        );
        assert_eq!(o.lookup("origin.test", 8081), Resolution::System);
        assert_eq!(o.lookup("nowhere.test", 80), Resolution::NoAddress);
        assert_eq!(
            o.lookup("[::1]", 9),
            Resolution::Addrs(vec!["[::1]:9".parse().unwrap()])
        );
        o.only(true);
        assert_eq!(o.lookup("other.test", 80), Resolution::NoAddress);
        assert!(HostOverrides::parse_entry("a.test:x:1.2.3.4").is_err());
    }

    #[test]
    fn capabilities_give_reasons() {
        let c = Capabilities::new()
            .with(Capability::Http1)
            .without(Capability::Http2, "no HTTP/2 in this library");
        assert!(c.check(Capability::Http1).is_ok());
        assert_eq!(
            c.check(Capability::Http2).unwrap_err(),
            "no HTTP/2 in this library"
        );
        assert!(c.check(Capability::Socks5).is_err());
    }
}
