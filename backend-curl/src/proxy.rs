//! The exchange's proxy on libcurl: CURLOPT_PROXY and CURLOPT_PROXYTYPE,
//! credentials with CURLOPT_PROXYUSERNAME/PROXYPASSWORD sent preemptively
//! as Basic, and no proxy at all when the manager chose none, whatever the
//! environment says.
//!
//! libcurl already does what the contract asks of an HTTP proxy: an http
//! url goes out as an absolute-form request (no CURLOPT_HTTPPROXYTUNNEL), an
//! https url through a CONNECT tunnel. The tunnel carries no origin header
//! (CURLHEADER_SEPARATE) and nothing libcurl would add of its own beyond
//! Host and Proxy-Authorization (no Proxy-Connection; User-Agent is never
//! set as CURLOPT_USERAGENT, so libcurl has none to copy into the CONNECT).

use curl::easy::{Auth, Easy2, List, ProxyType};
use handle_api::{Error, ErrorKind, Proxy, ProxyScheme, Result};

use crate::error;
use crate::wire;

/// The proxy options that are the same for every exchange, set once per
/// easy handle.
pub(crate) fn apply_fixed<H>(easy: &mut Easy2<H>) -> Result<()> {
    let set = |what: &'static str| move |e| error::setup(what, e);
    wire::separate_proxy_headers(easy.raw()).map_err(set("HEADEROPT"))?;
    // libcurl reads no_proxy from the environment unless NOPROXY is set;
    // an empty list means "no host bypasses the proxy" (the manager has
    // already applied its own NO_PROXY list).
    easy.noproxy("").map_err(set("NOPROXY"))
}

/// Sets the proxy options of `easy` for `proxy` (`None`: connect directly),
/// after `apply_fixed`. The options only a proxy uses (type, tunnel,
/// credentials, PROXYHEADER) are set only with one: a handle that went
/// through a proxy is reset before it is used again.
pub(crate) fn apply<H>(easy: &mut Easy2<H>, proxy: Option<&Proxy>) -> Result<()> {
    let set = |what: &'static str| move |e| error::setup(what, e);
    let Some(proxy) = proxy else {
        // An empty proxy disables libcurl's use of http_proxy, HTTPS_PROXY
        // and ALL_PROXY from the environment.
        return easy.proxy("").map_err(set("PROXY"));
    };
    easy.proxy(&proxy.url_without_credentials())
        .map_err(set("PROXY"))?;
    easy.proxy_type(proxy_type(proxy)?)
        .map_err(set("PROXYTYPE"))?;
    // http urls are forwarded, not tunnelled; libcurl tunnels https itself.
    easy.http_proxy_tunnel(false)
        .map_err(set("HTTPPROXYTUNNEL"))?;
    if let Some(c) = proxy.credentials() {
        easy.proxy_username(&c.username)
            .map_err(set("PROXYUSERNAME"))?;
        easy.proxy_password(&c.password)
            .map_err(set("PROXYPASSWORD"))?;
        // Basic as the only scheme makes libcurl send it with the first
        // request instead of waiting for a 407 (for SOCKS5 the credentials
        // go into the handshake's username/password method).
        let mut basic = Auth::new();
        basic.basic(true);
        easy.proxy_auth(&basic).map_err(set("PROXYAUTH"))?;
    }
    let mut proxy_headers = List::new();
    // "Name:" keeps libcurl from adding `Proxy-Connection: Keep-Alive` to
    // the CONNECT and to forwarded requests.
    proxy_headers
        .append("Proxy-Connection:")
        .map_err(set("a proxy header line"))?;
    easy.proxy_headers(proxy_headers)
        .map_err(set("PROXYHEADER"))?;
    Ok(())
}

fn proxy_type(proxy: &Proxy) -> Result<ProxyType> {
    match proxy.scheme() {
        ProxyScheme::Http => Ok(ProxyType::Http),
        ProxyScheme::Socks5 => Ok(ProxyType::Socks5),
        ProxyScheme::Socks5h => Ok(ProxyType::Socks5Hostname),
        other => Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "the curl backend cannot speak {} to {proxy}",
                other.as_str()
            ),
        )),
    }
}
