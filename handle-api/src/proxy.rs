//! Proxies: which one (if any) carries a load, decided here once.
//!
//! The manager holds a [`ProxyConfig`] (Qt's application proxy): none, one
//! explicit proxy, or the conventional environment variables. For each hop
//! it picks the [`Proxy`] for the url ([`ProxyConfig::proxy_for`]) and hands
//! it to the backend in [`WireRequest::proxy`](crate::WireRequest::proxy);
//! the backend maps it onto its library (`CURLOPT_PROXY`, ureq's proxy, a
//! tunnel or SOCKS5 handshake of hyper's connector). Whatever the library:
//! http urls go through an HTTP proxy as absolute-form requests, https urls
//! through a CONNECT tunnel that carries no origin header, and proxy
//! credentials go to the proxy only, preemptively as HTTP Basic.

use std::fmt;
use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::HeaderValue;
use url::Url;

use crate::error::{Error, ErrorKind, Result};

/// The protocol spoken to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProxyScheme {
    /// An HTTP proxy: absolute-form requests for http, CONNECT for https.
    Http,
    /// SOCKS5, with the host name resolved locally (`socks5://`).
    Socks5,
    /// SOCKS5, with the host name resolved by the proxy (`socks5h://`).
    Socks5h,
}

impl ProxyScheme {
    /// The url scheme (`http`, `socks5`, `socks5h`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyScheme::Http => "http",
            ProxyScheme::Socks5 => "socks5",
            ProxyScheme::Socks5h => "socks5h",
        }
    }

    /// True for both SOCKS5 schemes.
    pub fn is_socks(self) -> bool {
        matches!(self, ProxyScheme::Socks5 | ProxyScheme::Socks5h)
    }

    /// True when the client resolves the origin's host name itself (through
    /// the host overrides) and hands the proxy an address: SOCKS5 only. An
    /// HTTP proxy and SOCKS5h are given the name and resolve it.
    pub fn resolves_origin_locally(self) -> bool {
        self == ProxyScheme::Socks5
    }
}

/// A user name and password for a proxy.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyCredentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for ProxyCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password never appears in logs.
        f.debug_struct("ProxyCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One proxy server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    scheme: ProxyScheme,
    host: String,
    port: u16,
    credentials: Option<ProxyCredentials>,
}

impl Proxy {
    /// Parses a proxy url: `[SCHEME://][USER:PASSWORD@]HOST[:PORT]`, where
    /// SCHEME is `http` (the default), `socks5` or `socks5h`, and PORT
    /// defaults to 80 for http and 1080 for SOCKS. User and password are
    /// percent-decoded. Anything else (an https proxy, a path) is an
    /// `invalid_request` error.
    pub fn parse(spec: &str) -> Result<Proxy> {
        let bad = |why: &str| {
            Error::new(
                ErrorKind::InvalidRequest,
                format!("{spec:?} is not a proxy url: {why}"),
            )
        };
        let spec_trim = spec.trim();
        let full = if spec_trim.contains("://") {
            spec_trim.to_owned()
        } else {
            format!("http://{spec_trim}")
        };
        let url = Url::parse(&full).map_err(|e| bad(&e.to_string()))?;
        let scheme = match url.scheme() {
            "http" => ProxyScheme::Http,
            "socks5" => ProxyScheme::Socks5,
            "socks5h" => ProxyScheme::Socks5h,
            other => {
                return Err(bad(&format!(
                    "the scheme {other:?} is not one of http, socks5, socks5h"
                )))
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err(bad("a proxy url has no path or query"));
        }
        let default_port = if scheme.is_socks() { 1080 } else { 80 };
        // `Url` drops the port when it is the scheme's default, so ask the
        // scheme-independent accessor and fall back to the proxy default.
        let port = url.port().unwrap_or(default_port);
        let credentials = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let decode = |s: &str| {
                percent_decode(s).ok_or_else(|| bad("the credentials are not valid UTF-8"))
            };
            Some(ProxyCredentials {
                username: decode(url.username())?,
                password: decode(url.password().unwrap_or(""))?,
            })
        };
        Ok(Proxy {
            scheme,
            host,
            port,
            credentials,
        })
    }

    /// The protocol spoken to the proxy.
    pub fn scheme(&self) -> ProxyScheme {
        self.scheme
    }

    /// The proxy's host name or IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The credentials, if any.
    pub fn credentials(&self) -> Option<&ProxyCredentials> {
        self.credentials.as_ref()
    }

    /// Sets the credentials.
    pub fn with_credentials(mut self, username: &str, password: &str) -> Proxy {
        self.credentials = Some(ProxyCredentials {
            username: username.to_owned(),
            password: password.to_owned(),
        });
        self
    }

    /// `SCHEME://HOST:PORT`, without credentials.
    pub fn url_without_credentials(&self) -> String {
        if self.host.contains(':') {
            format!("{}://[{}]:{}", self.scheme.as_str(), self.host, self.port)
        } else {
            format!("{}://{}:{}", self.scheme.as_str(), self.host, self.port)
        }
    }

    /// The `Proxy-Authorization: Basic …` value for the credentials, for a
    /// backend that writes the header itself.
    pub fn basic_authorization(&self) -> Option<HeaderValue> {
        let c = self.credentials.as_ref()?;
        let token = STANDARD.encode(format!("{}:{}", c.username, c.password));
        let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
        // Kept out of Debug output and of HTTP/2 header compression tables.
        value.set_sensitive(true);
        Some(value)
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url_without_credentials())
    }
}

/// The request that opens a CONNECT tunnel to `authority` (`host:port`, an
/// IPv6 host in brackets), for a backend that writes it itself. It carries
/// Host and, when given, Proxy-Authorization, and nothing else: no header
/// of the application's, no User-Agent, no Cookie goes to the proxy.
pub fn connect_request(authority: &str, authorization: Option<&HeaderValue>) -> Vec<u8> {
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes();
    if let Some(value) = authorization {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(value.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request
}

/// Percent-decodes a proxy url's user or password; `None` when the bytes
/// are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    String::from_utf8(crate::manager::schemes::percent_decode(s.as_bytes())).ok()
}

/// Hosts that bypass the proxy (`NO_PROXY`): a comma-separated list of
/// host names (each also matching its subdomains; a leading dot or `*.` is
/// the same), IP addresses, CIDR ranges (`10.0.0.0/8`), or `*` for every host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    names: Vec<String>,
    nets: Vec<(IpAddr, u8)>,
}

impl NoProxy {
    /// Parses the list; entries that are not names, addresses or ranges are skipped.
    pub fn parse(list: &str) -> NoProxy {
        let mut np = NoProxy::default();
        for entry in list
            .split([',', ' '])
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            if entry == "*" {
                np.all = true;
                continue;
            }
            let bare = entry.trim_start_matches('[').trim_end_matches(']');
            if let Some((addr, bits)) = bare.split_once('/') {
                if let (Ok(ip), Ok(bits)) = (addr.parse::<IpAddr>(), bits.parse::<u8>()) {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    if bits <= max {
                        np.nets.push((ip, bits));
                    }
                }
                continue;
            }
            if let Ok(ip) = bare.parse::<IpAddr>() {
                np.nets.push((ip, if ip.is_ipv4() { 32 } else { 128 }));
                continue;
            }
            // A port in the entry (`host:8080`) is ignored, as curl ignores it.
            let name = entry.split(':').next().unwrap_or(entry);
            let name = name.trim_start_matches("*.").trim_start_matches('.');
            if !name.is_empty() {
                np.names.push(name.to_ascii_lowercase());
            }
        }
        np
    }

    /// True when `host` (a name or an IP literal) bypasses the proxy.
    pub fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.nets.iter().any(|(net, bits)| in_net(ip, *net, *bits));
        }
        self.names.iter().any(|n| {
            host == *n
                || (host.len() > n.len()
                    && host.ends_with(n.as_str())
                    && host.as_bytes()[host.len() - n.len() - 1] == b'.')
        })
    }

    /// True when the list is empty.
    pub fn is_empty(&self) -> bool {
        !self.all && self.names.is_empty() && self.nets.is_empty()
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The manager's proxy configuration (Qt's `QNetworkProxy` for the
/// application). The default is [`ProxyConfig::None`]: nothing is read from
/// the environment unless asked for with [`ProxyConfig::from_env`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyConfig {
    /// Every load goes directly to its origin.
    #[default]
    None,
    /// One proxy for every http and https load, except the hosts listed.
    Explicit {
        /// The proxy.
        proxy: Proxy,
        /// Hosts reached directly.
        no_proxy: NoProxy,
    },
    /// A proxy per url scheme, as the environment variables give them.
    PerScheme {
        /// For http urls (`http_proxy`, else `all_proxy`).
        http: Option<Proxy>,
        /// For https urls (`https_proxy`, else `all_proxy`).
        https: Option<Proxy>,
        /// Hosts reached directly (`no_proxy`).
        no_proxy: NoProxy,
    },
}

impl ProxyConfig {
    /// One proxy for every load.
    pub fn explicit(proxy: Proxy) -> ProxyConfig {
        ProxyConfig::Explicit {
            proxy,
            no_proxy: NoProxy::default(),
        }
    }

    /// One proxy for every load but the hosts in `no_proxy`.
    pub fn explicit_except(proxy: Proxy, no_proxy: NoProxy) -> ProxyConfig {
        ProxyConfig::Explicit { proxy, no_proxy }
    }

    /// The process environment's `http_proxy`, `https_proxy`, `all_proxy`
    /// and `no_proxy` (lower case first, then upper case). `HTTP_PROXY` in
    /// upper case is never read, as curl never reads it: in a CGI program
    /// it holds the request's `Proxy:` header, which anyone can send
    /// ("httpoxy").
    pub fn from_env() -> Result<ProxyConfig> {
        ProxyConfig::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`ProxyConfig::from_env`], reading the variables through `var`
    /// (so tests and embedders can supply their own environment). An empty
    /// variable counts as unset; a variable that does not parse is an
    /// `invalid_request` error naming it.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<ProxyConfig> {
        let get = |name: &str| -> Option<(String, String)> {
            let lower = name.to_ascii_lowercase();
            let upper_allowed = name != "HTTP_PROXY";
            var(&lower)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (lower.clone(), v))
                .or_else(|| {
                    var(name)
                        .filter(|v| upper_allowed && !v.trim().is_empty())
                        .map(|v| (name.to_owned(), v))
                })
        };
        let parse = |name: &str| -> Result<Option<Proxy>> {
            match get(name) {
                None => Ok(None),
                Some((var, value)) => Proxy::parse(&value).map(Some).map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidRequest,
                        format!("the {var} variable: {}", e.message()),
                    )
                }),
            }
        };
        let all = parse("ALL_PROXY")?;
        let http = parse("HTTP_PROXY")?.or_else(|| all.clone());
        let https = parse("HTTPS_PROXY")?.or(all);
        let no_proxy = get("NO_PROXY")
            .map(|(_, v)| NoProxy::parse(&v))
            .unwrap_or_default();
        if http.is_none() && https.is_none() {
            return Ok(ProxyConfig::None);
        }
        Ok(ProxyConfig::PerScheme {
            http,
            https,
            no_proxy,
        })
    }

    /// The proxy for `url`, or `None` to go directly. Only http and https
    /// urls ever use a proxy.
    pub fn proxy_for(&self, url: &Url) -> Option<&Proxy> {
        let host = url.host_str()?;
        let (proxy, no_proxy) = match self {
            ProxyConfig::None => return None,
            ProxyConfig::Explicit { proxy, no_proxy } => match url.scheme() {
                "http" | "https" => (proxy, no_proxy),
                _ => return None,
            },
            ProxyConfig::PerScheme {
                http,
                https,
                no_proxy,
            } => match url.scheme() {
                "http" => (http.as_ref()?, no_proxy),
                "https" => (https.as_ref()?, no_proxy),
                _ => return None,
            },
        };
        if no_proxy.matches(host) {
            None
        } else {
            Some(proxy)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proxy_urls() {
        let p = Proxy::parse("proxy.test:3128").unwrap();
        assert_eq!(
            (p.scheme(), p.host(), p.port()),
            (ProxyScheme::Http, "proxy.test", 3128)
        );
        let p = Proxy::parse("socks5h://u%40x:p%3Aw@[::1]").unwrap();
        assert_eq!(
            (p.scheme(), p.host(), p.port()),
            (ProxyScheme::Socks5h, "::1", 1080)
        );
        let c = p.credentials().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u@x", "p:w"));
        assert_eq!(p.url_without_credentials(), "socks5h://[::1]:1080");
        assert_eq!(Proxy::parse("http://h").unwrap().port(), 80);
        for bad in ["https://h:1", "ftp://h", "http://h/path", "http://", ""] {
            assert_eq!(
                Proxy::parse(bad).unwrap_err().kind(),
                ErrorKind::InvalidRequest,
                "{bad}"
            );
        }
        let p = Proxy::parse("http://aladdin:opensesame@p:1").unwrap();
        assert_eq!(
            p.basic_authorization().unwrap(),
            "Basic YWxhZGRpbjpvcGVuc2VzYW1l"
        );
    }

    #[test]
    fn connect_requests_carry_host_and_credentials_only() {
        let p = Proxy::parse("http://u:p@proxy:1").unwrap();
        let auth = p.basic_authorization();
        assert_eq!(
            connect_request("[::1]:443", auth.as_ref()),
            b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\nProxy-Authorization: Basic dTpw\r\n\r\n"
        );
        assert_eq!(
            connect_request("a.test:8443", None),
            b"CONNECT a.test:8443 HTTP/1.1\r\nHost: a.test:8443\r\n\r\n"
        );
    }

    #[test]
    fn only_socks5_resolves_the_origin_locally() {
        let local = |s: &str| Proxy::parse(s).unwrap().scheme().resolves_origin_locally();
        assert!(local("socks5://p.test:1080"));
        assert!(!local("socks5h://p.test:1080"));
        assert!(!local("http://p.test:3128"));
    }

    #[test]
    fn no_proxy_matches_names_suffixes_and_ranges() {
        let np = NoProxy::parse("example.com, .internal.test,*.wild.test,10.0.0.0/8,::1,bad/99");
        for yes in [
            "example.com",
            "a.example.com",
            "EXAMPLE.COM.",
            "x.internal.test",
            "internal.test",
            "a.wild.test",
            "10.1.2.3",
            "[::1]",
        ] {
            assert!(np.matches(yes), "{yes}");
        }
        for no in ["notexample.com", "example.org", "11.0.0.1", "::2"] {
            assert!(!np.matches(no), "{no}");
        }
        assert!(NoProxy::parse("*").matches("anything"));
        assert!(NoProxy::parse("").is_empty());
    }

    #[test]
    fn env_vars_pick_a_proxy_per_scheme() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let c = ProxyConfig::from_vars(env(&[
            ("http_proxy", "http://lower:1"),
            ("HTTP_PROXY", "http://upper:1"),
            ("ALL_PROXY", "socks5h://all:2"),
            ("no_proxy", "direct.test"),
        ]))
        .unwrap();
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(c.proxy_for(&url("http://a.test/")).unwrap().host(), "lower");
        assert_eq!(c.proxy_for(&url("https://a.test/")).unwrap().host(), "all");
        assert!(c.proxy_for(&url("http://x.direct.test/")).is_none());
        assert!(c.proxy_for(&url("data:,x")).is_none());
        assert_eq!(
            ProxyConfig::from_vars(env(&[("https_proxy", "")])).unwrap(),
            ProxyConfig::None
        );
        let e = ProxyConfig::from_vars(env(&[("HTTPS_PROXY", "ftp://x")])).unwrap_err();
        assert!(e.message().contains("HTTPS_PROXY"), "{e}");
        assert!(ProxyConfig::None.proxy_for(&url("http://a/")).is_none());
        // httpoxy: an upper-case HTTP_PROXY alone is not a proxy.
        assert_eq!(
            ProxyConfig::from_vars(env(&[("HTTP_PROXY", "http://attacker:1")])).unwrap(),
            ProxyConfig::None
        );
    }
}
