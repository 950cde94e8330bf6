//! A [`WireRequest`] mapped onto `curl_easy_setopt` options, the way WebCore's
//! curl `ResourceHandleManager::initializeHandle` does: url → CURLOPT_URL,
//! method → HTTPGET / NOBODY / POST / UPLOAD / CUSTOMREQUEST, headers →
//! CURLOPT_HTTPHEADER, timeouts → CONNECTTIMEOUT_MS / TIMEOUT_MS, host
//! overrides → CURLOPT_RESOLVE, HTTP version → CURLOPT_HTTP_VERSION, TLS
//! settings (`tls`) and the proxy (`proxy`). curl's own policies
//! (redirects, cookies, decoding, proxies from the environment,
//! `Expect: 100-continue`) are turned off so that only handle-api decides
//! them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use curl::easy::{Easy2, HttpVersion, List};
use handle_api::http::{header, HeaderMap, Method};
use handle_api::{
    BackendConfig, BodyFraming, Error, ErrorKind, HttpVersionPref, Resolution, Result, WireRequest,
};

use crate::error;
use crate::proxy;
use crate::tls::TlsSettings;
use crate::wire::{self, RawList};

/// Bytes curl reads from the socket per write callback. Larger than curl's
/// 16 KiB default so a big body costs fewer callbacks and sink calls.
pub(crate) const RECEIVE_BUFFER_BYTES: usize = 256 * 1024;

/// Bytes curl asks the read callback for per call when uploading.
pub(crate) const UPLOAD_BUFFER_BYTES: usize = 256 * 1024;

/// What libcurl reads in place while the transfer runs, so the caller keeps
/// it alive for as long as the easy handle. Never read on the Rust side:
/// holding it is the point.
#[derive(Debug, Default)]
#[allow(dead_code)]
pub(crate) struct Borrowed {
    /// The header list (CURLOPT_HTTPHEADER).
    pub(crate) header_list: Option<RawList>,
    /// The trusted roots (CURLOPT_CAINFO_BLOB, not copied).
    pub(crate) roots: Option<Arc<[u8]>>,
}

/// The options every exchange of a backend shares: the TLS settings, the
/// proxy options that do not depend on the proxy, curl's own policies
/// turned off, buffer sizes. An easy handle kept for reuse keeps them, so
/// they are set once per handle, not once per exchange. Returns the root
/// bundle, which must outlive the handle.
pub(crate) fn configure_handle<H>(
    easy: &mut Easy2<H>,
    config: &BackendConfig,
    tls: &TlsSettings,
) -> Result<Option<Arc<[u8]>>> {
    let set = |what: &'static str| move |e| error::setup(what, e);
    proxy::apply_fixed(easy)?;
    let roots = tls.apply(easy)?;
    // The url crate already normalised the path; curl must not do it again
    // differently (dot segments), so the wire carries what the url says.
    easy.path_as_is(true).map_err(set("PATH_AS_IS"))?;
    // Policy lives in handle-api: curl's own versions stay off. COOKIEFILE is
    // never set, so curl's cookie engine never starts; ACCEPT_ENCODING is
    // never set, so curl neither advertises nor decodes content codings.
    easy.follow_location(false).map_err(set("FOLLOWLOCATION"))?;
    easy.http_content_decoding(false)
        .map_err(set("HTTP_CONTENT_DECODING"))?;
    easy.http_09_allowed(false).map_err(set("HTTP09_ALLOWED"))?;

    easy.buffer_size(RECEIVE_BUFFER_BYTES)
        .map_err(set("BUFFERSIZE"))?;
    easy.upload_buffer_size(UPLOAD_BUFFER_BYTES)
        .map_err(set("UPLOAD_BUFFERSIZE"))?;
    easy.tcp_nodelay(true).map_err(set("TCP_NODELAY"))?;
    easy.maxage_conn(config.idle_timeout)
        .map_err(set("MAXAGE_CONN"))?;
    Ok(roots)
}

/// The options of one exchange: url, method and body framing, headers,
/// timeouts, host overrides, HTTP version and proxy. On a reused handle
/// (see `configure_handle`) every option an earlier exchange may have set
/// is set again here, or back to libcurl's default, so no exchange
/// inherits anything from the one before; a handle that went through a
/// proxy is reset whole before reuse instead (`Driver::recycle`), so only
/// the no-proxy case has to be undone here. Returns the header list, which
/// the handler keeps alive while libcurl points at it.
pub(crate) fn configure_request<H>(
    easy: &mut Easy2<H>,
    req: &WireRequest,
    config: &BackendConfig,
) -> Result<Option<RawList>> {
    let set = |what: &'static str| move |e| error::setup(what, e);

    http_version(easy, req)?;
    match resolve_list(req, config)? {
        Some(list) => easy.resolve(list).map_err(set("the host override"))?,
        None => wire::clear_resolve(easy.raw()).map_err(set("the host override"))?,
    }
    proxy::apply(easy, req.proxy.as_ref())?;
    // curl would turn userinfo in the url into Basic auth of its own;
    // credentials are handle-api's policy, so curl never sees them.
    if req.url.username().is_empty() && req.url.password().is_none() {
        easy.url(req.url.as_str()).map_err(set("the url"))?;
    } else {
        let mut url = req.url.clone();
        // Only fails for urls that cannot have credentials, which these had.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        easy.url(url.as_str()).map_err(set("the url"))?;
    }

    method(easy, req)?;
    let raw_list = headers(easy, req)?;

    // Zero is libcurl's default for both: its own connect timeout, no total one.
    easy.connect_timeout(req.connect_timeout.map_or(Duration::ZERO, nonzero))
        .map_err(set("the connect timeout"))?;
    easy.timeout(req.timeout.map_or(Duration::ZERO, nonzero))
        .map_err(set("the timeout"))?;
    Ok(raw_list)
}

/// CURLOPT_HTTPHEADER from the request's headers (see `header_lines`),
/// built straight from the bytes: one reused buffer, one
/// `curl_slist_append` per line (which copies it), no UTF-8 detour, so a
/// value with obs-text goes out as it is.
fn headers<H>(easy: &mut Easy2<H>, req: &WireRequest) -> Result<Option<RawList>> {
    let mut list = RawList::empty();
    let mut complete = true;
    header_lines(req, &mut |line| complete &= list.push(line));
    if !complete {
        return Err(Error::new(
            ErrorKind::Io,
            "libcurl could not build the header list",
        ));
    }
    list.install(easy.raw())
        .map_err(|e| error::setup("the header list", e))?;
    Ok(Some(list))
}

/// CURLOPT_HTTP_VERSION, and CURLOPT_PIPEWAIT where the connection may
/// carry HTTP/2: a transfer then waits for a connection still being set up
/// to the same origin and multiplexes onto it instead of opening its own.
fn http_version<H>(easy: &mut Easy2<H>, req: &WireRequest) -> Result<()> {
    let set = |what: &'static str| move |e| error::setup(what, e);
    let (version, multiplexed) = native_version(req.http_version, req.url.scheme() == "https");
    easy.http_version(version)
        .map_err(set("the HTTP version"))?;
    easy.pipewait(multiplexed).map_err(set("PIPEWAIT"))?;
    Ok(())
}

/// The CURLOPT_HTTP_VERSION for a preference, and whether the connection
/// may be HTTP/2. `Http2` is h2 by ALPN over TLS and HTTP/1.1 in cleartext
/// (CURL_HTTP_VERSION_2TLS), without an `Upgrade: h2c` attempt.
pub(crate) fn native_version(pref: HttpVersionPref, https: bool) -> (HttpVersion, bool) {
    match pref {
        HttpVersionPref::Http1 => (HttpVersion::V11, false),
        HttpVersionPref::Http2 => (HttpVersion::V2TLS, https),
        HttpVersionPref::Http2PriorKnowledge => (HttpVersion::V2PriorKnowledge, true),
    }
}

/// curl reads a zero timeout as "no timeout"; the contract means "at once".
fn nonzero(t: Duration) -> Duration {
    t.max(Duration::from_millis(1))
}

/// The CURLOPT_RESOLVE entries for the names libcurl resolves itself: the
/// proxy's, and the origin's unless the proxy resolves it (an HTTP proxy,
/// SOCKS5h). libcurl looks the proxy's name up in the same cache the
/// entries fill, so one host override table serves both.
///
/// CURLOPT_RESOLVE can only add addresses, not say "this name has none", so a
/// name mapped to no address fails here before any transfer exists (`dns`
/// for the origin, `proxy` for the proxy), and the system resolver is never
/// asked.
fn resolve_list(req: &WireRequest, config: &BackendConfig) -> Result<Option<List>> {
    let mut entries = Vec::new();
    if let Some(p) = &req.proxy {
        let entry = resolve_one(config, p.host(), p.port()).map_err(|e| {
            Error::new(
                ErrorKind::Proxy,
                format!("the proxy {p} cannot be reached: {}", e.message()),
            )
        })?;
        entries.extend(entry);
    }
    // libcurl resolves the origin's name itself directly and through
    // SOCKS5; through an HTTP proxy or SOCKS5h the proxy does.
    if req
        .proxy
        .as_ref()
        .is_none_or(|p| p.scheme().resolves_origin_locally())
    {
        let (host, port) = req.host_port();
        entries.extend(resolve_one(config, &host, port)?);
    }
    if entries.is_empty() {
        return Ok(None);
    }
    let mut list = List::new();
    for entry in entries {
        list.append(&entry)
            .map_err(|e| error::setup("the host override", e))?;
    }
    Ok(Some(list))
}

/// The CURLOPT_RESOLVE entry for `host:port`, if it is overridden.
fn resolve_one(config: &BackendConfig, host: &str, port: u16) -> Result<Option<String>> {
    match config.resolve.lookup(host, port) {
        Resolution::NoAddress => Err(Error::new(
            ErrorKind::Dns,
            format!("{host}:{port} is mapped to no address"),
        )),
        Resolution::System => Ok(None),
        // An IP literal resolves to itself; curl needs no entry for it.
        Resolution::Addrs(_) if host.parse::<IpAddr>().is_ok() => Ok(None),
        Resolution::Addrs(addrs) => Ok(Some(resolve_entry(host, port, &addrs))),
    }
}

/// curl's `HOST:PORT:ADDR[,ADDR…]`, IPv6 addresses in brackets.
fn resolve_entry(host: &str, port: u16, addrs: &[SocketAddr]) -> String {
    let addrs: Vec<String> = addrs
        .iter()
        .map(|a| match a.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        })
        .collect();
    format!("{host}:{port}:{}", addrs.join(","))
}

/// The method and how the body goes with it.
///
/// POST uses CURLOPT_POST so curl sends the body with POST semantics; every
/// other method with a body uses CURLOPT_UPLOAD (curl's PUT) renamed with
/// CUSTOMREQUEST. Without a body, HTTPGET renamed with CUSTOMREQUEST sends
/// the method with no body and no framing. CURLOPT_NOBODY is only for HEAD:
/// it also tells curl not to read a response body.
///
/// Each branch sets libcurl's method and "no body" flag itself (HTTPGET,
/// POST and UPLOAD clear NOBODY); CUSTOMREQUEST and the two body sizes are
/// first put back to their defaults, for a reused handle.
fn method<H>(easy: &mut Easy2<H>, req: &WireRequest) -> Result<()> {
    let set = |what: &'static str| move |e| error::setup(what, e);
    wire::clear_method_options(easy.raw()).map_err(set("the method"))?;
    let m = &req.method;
    match (m, req.framing) {
        (&Method::HEAD, BodyFraming::None) => easy.nobody(true).map_err(set("NOBODY"))?,
        (&Method::HEAD, _) => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "curl cannot send a request body with HEAD",
            ))
        }
        (_, BodyFraming::None) => {
            easy.get(true).map_err(set("HTTPGET"))?;
            if m != Method::GET {
                easy.custom_request(m.as_str()).map_err(set("the method"))?;
            }
        }
        (&Method::POST, framing) => {
            easy.post(true).map_err(set("POST"))?;
            // Without a size curl's POST is chunked, which the Transfer-Encoding
            // header in the list confirms.
            if let BodyFraming::Length(n) = framing {
                easy.post_field_size(n)
                    .map_err(set("POSTFIELDSIZE_LARGE"))?;
            }
        }
        (_, framing) => {
            easy.upload(true).map_err(set("UPLOAD"))?;
            if let BodyFraming::Length(n) = framing {
                easy.in_filesize(n).map_err(set("INFILESIZE_LARGE"))?;
            }
            if m != Method::PUT {
                easy.custom_request(m.as_str()).map_err(set("the method"))?;
            }
        }
    }
    Ok(())
}

/// CURLOPT_HTTPHEADER: every header of the request, as given, plus the
/// entries that stop curl from adding its own.
/// Each line is handed to `add` without its line end.
fn header_lines(req: &WireRequest, add: &mut impl FnMut(&[u8])) {
    let mut line = Vec::with_capacity(128);
    for (name, value) in req.headers.iter() {
        line.clear();
        line.extend_from_slice(name.as_str().as_bytes());
        if value.is_empty() {
            // "Name:" would tell curl to remove the header; "Name;" sends it empty.
            line.push(b';');
        } else {
            line.extend_from_slice(b": ");
            line.extend_from_slice(value.as_bytes());
        }
        add(&line);
    }
    suppress_defaults(&req.headers, &req.method, &mut |l: &str| add(l.as_bytes()));
    if req.framing == BodyFraming::Chunked {
        add(b"Transfer-Encoding: chunked");
    }
}

/// "Name:" removes a header curl would otherwise add of its own.
fn suppress_defaults(headers: &HeaderMap, method: &Method, add: &mut impl FnMut(&str)) {
    // curl sends `Expect: 100-continue` before large or unsized uploads.
    if !headers.contains_key(header::EXPECT) {
        add("Expect:");
    }
    // curl adds `Accept: */*`; the manager decides Accept.
    if !headers.contains_key(header::ACCEPT) {
        add("Accept:");
    }
    // CURLOPT_POST makes curl add a form Content-Type.
    if method == Method::POST && !headers.contains_key(header::CONTENT_TYPE) {
        add("Content-Type:");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_entries_use_curl_syntax() {
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let b: SocketAddr = "[::1]:8080".parse().unwrap();
        assert_eq!(
            resolve_entry("origin.test", 8080, &[a, b]),
            "origin.test:8080:127.0.0.1,[::1]"
        );
    }

    #[test]
    fn versions_map_onto_curl() {
        use HttpVersionPref::*;
        let v = |pref, https| {
            let (version, mux) = native_version(pref, https);
            (version as i64, mux)
        };
        let n = |v: HttpVersion| v as i64;
        assert_eq!(v(Http1, true), (n(HttpVersion::V11), false));
        assert_eq!(v(Http2, true), (n(HttpVersion::V2TLS), true));
        // Cleartext with Http2 stays HTTP/1.1: nothing to multiplex.
        assert_eq!(v(Http2, false), (n(HttpVersion::V2TLS), false));
        assert_eq!(
            v(Http2PriorKnowledge, false),
            (n(HttpVersion::V2PriorKnowledge), true)
        );
    }

    #[test]
    fn zero_timeouts_stay_timeouts() {
        assert_eq!(nonzero(Duration::ZERO), Duration::from_millis(1));
        assert_eq!(nonzero(Duration::from_secs(2)), Duration::from_secs(2));
    }
}
