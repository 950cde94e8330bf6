//! Proxies: http urls forwarded in absolute form, https urls through a
//! CONNECT tunnel that carries no origin header, SOCKS5 with local and
//! remote name resolution, credentials that reach the proxy only, every
//! proxy failure reported as `proxy`, and the configuration from variables.

use std::net::{Ipv4Addr, TcpListener};

use resource_handle::{
    Capability, NetworkAccessManager, NoProxy, Proxy, ProxyConfig, RequestBuilder, ResourceRequest,
};

use super::{
    build, expect_error, expect_status, sha256, CaseResult, Ctx, Fetched, ORIGIN_HOST, TLS_HOST,
};
use crate::servers::{CertKind, ProxyOptions, Seen, SocksAddress};

cases!("proxy";
    "proxy.http-forward" => http_forward [Capability::Proxy],
    "proxy.http-forward-post" => http_forward_post [Capability::Proxy],
    "proxy.https-connect" => https_connect [Capability::Https, Capability::Proxy],
    "proxy.http-forward-credentials" => forward_credentials [Capability::Proxy],
    "proxy.https-connect-credentials" => connect_credentials [Capability::Https, Capability::Proxy],
    "proxy.http-forward-407" => forward_407 [Capability::Proxy],
    "proxy.https-connect-407" => connect_407 [Capability::Https, Capability::Proxy],
    "proxy.https-connect-403" => connect_403 [Capability::Https, Capability::Proxy],
    "proxy.unreachable" => unreachable [Capability::Proxy],
    "proxy.no-proxy-bypass" => no_proxy_bypass [Capability::Proxy],
    "proxy.env-http-proxy" => env_http_proxy [Capability::Proxy],
    "proxy.env-https-proxy" => env_https_proxy [Capability::Https, Capability::Proxy],
    "proxy.env-no-proxy" => env_no_proxy [Capability::Proxy],
    "proxy.redirect-cross-origin" => redirect_cross_origin [Capability::Proxy],
    "proxy.socks5-local-resolution" => socks5_local [Capability::Socks5],
    "proxy.socks5h-remote-resolution" => socks5h_remote [Capability::Socks5],
    "proxy.socks5h-https" => socks5h_https [Capability::Https, Capability::Socks5],
    "proxy.socks5-credentials" => socks5_credentials [Capability::Socks5],
    "proxy.socks5-wrong-credentials" => socks5_wrong_credentials [Capability::Socks5],
    "proxy.socks5-credentials-required" => socks5_credentials_required [Capability::Socks5],
    "proxy.socks5-refused" => socks5_refused [Capability::Socks5],
);

/// The proxy's user name and password in the credential cases.
const USER: &str = "proxy-user";
const PASSWORD: &str = "s3cret:pass";

/// `Proxy-Authorization` for [`USER`] and [`PASSWORD`].
fn basic() -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    )
}

/// `SCHEME://[USER:PASSWORD@]ADDR`, credentials percent-encoded.
fn proxy_url(scheme: &str, addr: &str, credentials: bool) -> String {
    if credentials {
        let enc = |s: &str| {
            url::form_urlencoded::byte_serialize(s.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        };
        format!("{scheme}://{}:{}@{addr}", enc(USER), enc(PASSWORD))
    } else {
        format!("{scheme}://{addr}")
    }
}

/// A manager using `config`, trusting the test CA only.
fn manager(ctx: &mut Ctx, config: ProxyConfig) -> Result<NetworkAccessManager, String> {
    ctx.tls_manager_with(|b| Ok(b.proxy(config)))
}

/// A manager whose every load goes through the proxy at `url`.
fn via(ctx: &mut Ctx, url: &str) -> Result<NetworkAccessManager, String> {
    let proxy = Proxy::parse(url).map_err(|e| format!("proxy url {url:?}: {e}"))?;
    manager(ctx, ProxyConfig::explicit(proxy))
}

fn get(
    ctx: &Ctx,
    m: &NetworkAccessManager,
    url: &str,
    f: impl FnOnce(RequestBuilder) -> RequestBuilder,
) -> Result<Fetched, String> {
    Ok(ctx.fetch_with(m, build(f(ResourceRequest::get(url)))?))
}

fn seen(ctx: &Ctx) -> Result<Vec<Seen>, String> {
    Ok(ctx.proxy_server()?.seen())
}

/// Fails unless no request `origin` received carried `Proxy-Authorization`.
fn no_proxy_auth_at(reqs: &[crate::servers::RecordedRequest]) -> Result<(), String> {
    for r in reqs {
        ensure!(
            r.header_values("proxy-authorization").is_empty(),
            "the origin saw Proxy-Authorization on {} {}",
            r.method,
            r.target
        );
    }
    Ok(())
}

/// Fails unless the proxy saw exactly one forwarded request for `target`.
fn one_forward(ctx: &Ctx, method: &str, target: &str) -> Result<Seen, String> {
    let seen = seen(ctx)?;
    ensure_eq!(seen.len(), 1);
    match &seen[0] {
        Seen::Forward {
            method: m,
            target: t,
            ..
        } => {
            ensure_eq!(m.as_str(), method);
            ensure_eq!(t.as_str(), target);
        }
        other => return Err(format!("the proxy saw {other:?}, not a forwarded request")),
    }
    Ok(seen[0].clone())
}

/// Fails unless the proxy saw exactly one CONNECT for `target`, carrying
/// nothing but what the proxy needs.
fn one_connect(ctx: &Ctx, target: &str) -> Result<Seen, String> {
    let seen = seen(ctx)?;
    ensure_eq!(seen.len(), 1);
    let Seen::Connect { target: t, headers } = &seen[0] else {
        return Err(format!("the proxy saw {:?}, not a CONNECT", seen[0]));
    };
    ensure_eq!(t.as_str(), target);
    for (name, _) in headers {
        ensure!(
            matches!(
                name.to_ascii_lowercase().as_str(),
                "host" | "proxy-authorization" | "proxy-connection"
            ),
            "the CONNECT carried {name}: {headers:?}"
        );
    }
    Ok(seen[0].clone())
}

fn http_forward(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo?via=proxy")?;
    let addr = ctx.proxy(ProxyOptions::default())?;
    let m = via(ctx, &proxy_url("http", &addr, false))?;
    let f = get(ctx, &m, &url, |b| b.header("X-App", "1"))?;
    expect_status(&f.trace, 200)?;
    let s = one_forward(ctx, "GET", &url)?;
    ensure_eq!(s.header_values("x-app"), vec!["1"]);
    let e = f.json()?;
    // The origin got it in origin form, for its own name.
    ensure_eq!(e["target"], "/echo?via=proxy");
    ensure_eq!(
        e["host"],
        serde_json::json!([format!("{ORIGIN_HOST}:PORT")])
    );
    no_proxy_auth_at(&ctx.origin()?.requests())?;
    Ok(f.trace)
}

fn http_forward_post(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    let addr = ctx.proxy(ProxyOptions::default())?;
    let m = via(ctx, &proxy_url("http", &addr, false))?;
    let body = "posted=through&the=proxy";
    let f = ctx.fetch_with(&m, build(ResourceRequest::post(&url).body(body))?);
    expect_status(&f.trace, 200)?;
    one_forward(ctx, "POST", &url)?;
    let e = f.json()?;
    ensure_eq!(e["method"], "POST");
    ensure_eq!(e["body"], body);
    ensure_eq!(e["body_sha256"], sha256(body.as_bytes()));
    Ok(f.trace)
}

fn https_connect(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.tls_origin(CertKind::Valid)?;
    let port = ctx.tls_server()?.port();
    let addr = ctx.proxy(ProxyOptions::default())?;
    let m = via(ctx, &proxy_url("http", &addr, false))?;
    let f = get(ctx, &m, &format!("{base}/echo"), |b| {
        b.header("Authorization", "Bearer origin-only")
            .header("Cookie", "session=origin-only")
            .header("X-App", "1")
    })?;
    expect_status(&f.trace, 200)?;
    one_connect(ctx, &format!("{TLS_HOST}:{port}"))?;
    // Inside the tunnel the origin got every header the application set.
    let r = ctx
        .tls_server()?
        .last_request()
        .ok_or("the origin saw no request")?;
    ensure_eq!(r.target, "/echo");
    ensure_eq!(r.header_values("authorization"), vec!["Bearer origin-only"]);
    ensure_eq!(r.header_values("cookie"), vec!["session=origin-only"]);
    ensure_eq!(r.header_values("x-app"), vec!["1"]);
    no_proxy_auth_at(&ctx.tls_server()?.requests())?;
    Ok(f.trace)
}

fn forward_credentials(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    let addr = ctx.proxy(ProxyOptions::default().with_credentials(USER, PASSWORD))?;
    let m = via(ctx, &proxy_url("http", &addr, true))?;
    let f = get(ctx, &m, &url, |b| b)?;
    expect_status(&f.trace, 200)?;
    let s = one_forward(ctx, "GET", &url)?;
    ensure_eq!(s.header_values("proxy-authorization"), vec![basic()]);
    no_proxy_auth_at(&ctx.origin()?.requests())?;
    Ok(f.trace)
}

fn connect_credentials(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.tls_origin(CertKind::Valid)?;
    let port = ctx.tls_server()?.port();
    let addr = ctx.proxy(ProxyOptions::default().with_credentials(USER, PASSWORD))?;
    let m = via(ctx, &proxy_url("http", &addr, true))?;
    let f = get(ctx, &m, &format!("{base}/echo"), |b| b)?;
    expect_status(&f.trace, 200)?;
    let s = one_connect(ctx, &format!("{TLS_HOST}:{port}"))?;
    ensure_eq!(s.header_values("proxy-authorization"), vec![basic()]);
    // The credentials stay outside the tunnel.
    no_proxy_auth_at(&ctx.tls_server()?.requests())?;
    ensure_eq!(ctx.tls_server()?.requests().len(), 1);
    Ok(f.trace)
}

fn forward_407(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    let addr = ctx.proxy(ProxyOptions::default().with_credentials(USER, PASSWORD))?;
    let m = via(ctx, &proxy_url("http", &addr, false))?;
    let f = get(ctx, &m, &url, |b| b)?;
    expect_error(&f.trace, "proxy")?;
    one_forward(ctx, "GET", &url)?;
    ensure_eq!(ctx.origin()?.requests().len(), 0);
    Ok(f.trace)
}

fn connect_407(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.tls_origin(CertKind::Valid)?;
    let port = ctx.tls_server()?.port();
    let addr = ctx.proxy(ProxyOptions::default().with_credentials(USER, PASSWORD))?;
    let m = via(ctx, &proxy_url("http", &addr, false))?;
    let f = get(ctx, &m, &format!("{base}/echo"), |b| b)?;
    expect_error(&f.trace, "proxy")?;
    one_connect(ctx, &format!("{TLS_HOST}:{port}"))?;
    ensure_eq!(ctx.tls_server()?.stats().accepted(), 0);
    Ok(f.trace)
}

fn connect_403(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.tls_origin(CertKind::Valid)?;
    let port = ctx.tls_server()?.port();
    let addr = ctx.proxy(ProxyOptions {
        refuse_connect: Some(403),
        ..Default::default()
    })?;
    let m = via(ctx, &proxy_url("http", &addr, false))?;
    let f = get(ctx, &m, &format!("{base}/echo"), |b| b)?;
    expect_error(&f.trace, "proxy")?;
    one_connect(ctx, &format!("{TLS_HOST}:{port}"))?;
    ensure_eq!(ctx.tls_server()?.stats().accepted(), 0);
    Ok(f.trace)
}

fn unreachable(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    // A port that was just free: nothing listens there.
    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    ctx.register_port(closed);
    let m = via(ctx, &format!("http://127.0.0.1:{closed}"))?;
    let f = get(ctx, &m, &url, |b| b)?;
    expect_error(&f.trace, "proxy")?;
    ensure_eq!(ctx.origin()?.requests().len(), 0);
    Ok(f.trace)
}

fn no_proxy_bypass(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    let addr = ctx.proxy(ProxyOptions::default())?;
    let proxy = Proxy::parse(&proxy_url("http", &addr, false)).map_err(|e| e.to_string())?;
    let m = manager(
        ctx,
        ProxyConfig::explicit_except(
            proxy,
            NoProxy::parse(&format!("example.test,{ORIGIN_HOST}")),
        ),
    )?;
    let f = get(ctx, &m, &url, |b| b)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(seen(ctx)?, Vec::<Seen>::new());
    ensure_eq!(ctx.proxy_server()?.stats().accepted(), 0);
    ensure_eq!(ctx.origin()?.requests().len(), 1);
    Ok(f.trace)
}

/// A configuration read from the variables `vars`, never the process's.
fn from_vars(vars: Vec<(&'static str, String)>) -> Result<ProxyConfig, String> {
    ProxyConfig::from_vars(move |name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    })
    .map_err(|e| format!("the proxy variables did not parse: {e}"))
}

fn env_http_proxy(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    let addr = ctx.proxy(ProxyOptions::default())?;
    let config = from_vars(vec![("http_proxy", format!("http://{addr}"))])?;
    let m = manager(ctx, config)?;
    let f = get(ctx, &m, &url, |b| b)?;
    expect_status(&f.trace, 200)?;
    one_forward(ctx, "GET", &url)?;
    Ok(f.trace)
}

fn env_https_proxy(ctx: &mut Ctx) -> CaseResult {
    let plain = ctx.origin_url("/echo")?;
    let base = ctx.tls_origin(CertKind::Valid)?;
    let port = ctx.tls_server()?.port();
    let addr = ctx.proxy(ProxyOptions::default())?;
    let config = from_vars(vec![("HTTPS_PROXY", format!("http://{addr}"))])?;
    let m = manager(ctx, config)?;
    // http goes directly: only https_proxy is set.
    let direct = get(ctx, &m, &plain, |b| b)?;
    expect_status(&direct.trace, 200)?;
    let f = get(ctx, &m, &format!("{base}/echo"), |b| b)?;
    expect_status(&f.trace, 200)?;
    one_connect(ctx, &format!("{TLS_HOST}:{port}"))?;
    ensure_eq!(ctx.origin()?.requests().len(), 1);
    Ok(f.trace)
}

fn env_no_proxy(ctx: &mut Ctx) -> CaseResult {
    let direct_url = ctx.origin_url("/echo")?;
    let proxied_url = ctx.other_url("/echo")?;
    let addr = ctx.proxy(ProxyOptions::default())?;
    let config = from_vars(vec![
        ("http_proxy", format!("http://{addr}")),
        ("no_proxy", format!("{ORIGIN_HOST}, .unrelated.test")),
    ])?;
    let m = manager(ctx, config)?;
    let f = get(ctx, &m, &direct_url, |b| b)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(seen(ctx)?, Vec::<Seen>::new());
    // A host not listed still goes through the proxy.
    let g = get(ctx, &m, &proxied_url, |b| b)?;
    expect_status(&g.trace, 200)?;
    one_forward(ctx, "GET", &proxied_url)?;
    Ok(f.trace)
}

fn redirect_cross_origin(ctx: &mut Ctx) -> CaseResult {
    let target = ctx.other_url("/echo")?;
    let url = ctx.origin_url(&format!("/redirect-to?url={}", target))?;
    let addr = ctx.proxy(ProxyOptions::default().with_credentials(USER, PASSWORD))?;
    let m = via(ctx, &proxy_url("http", &addr, true))?;
    let f = get(ctx, &m, &url, |b| b)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.redirects.len(), 1);
    let seen = seen(ctx)?;
    let targets: Vec<&str> = seen
        .iter()
        .map(|s| match s {
            Seen::Forward { target, .. } => target.as_str(),
            _ => "",
        })
        .collect();
    ensure_eq!(targets, vec![url.as_str(), target.as_str()]);
    // The proxy's credentials went with both hops, to the proxy only.
    for s in &seen {
        ensure_eq!(s.header_values("proxy-authorization"), vec![basic()]);
    }
    no_proxy_auth_at(&ctx.origin()?.requests())?;
    no_proxy_auth_at(&ctx.other_origin()?.requests())?;
    ensure_eq!(ctx.other_origin()?.requests().len(), 1);
    Ok(f.trace)
}

/// What the proxy saw of a SOCKS5 exchange: methods offered, credentials,
/// the target's address and port.
type SocksSeen = (Vec<u8>, Option<(String, String)>, Option<SocksAddress>, u16);

/// The one SOCKS5 exchange the proxy saw.
fn one_socks(ctx: &Ctx) -> Result<SocksSeen, String> {
    let seen = seen(ctx)?;
    ensure_eq!(seen.len(), 1);
    match &seen[0] {
        Seen::Socks {
            methods,
            credentials,
            address,
            port,
            ..
        } => Ok((methods.clone(), credentials.clone(), address.clone(), *port)),
        other => Err(format!("the proxy saw {other:?}, not SOCKS5")),
    }
}

fn socks5_local(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    let port = ctx.origin()?.port();
    let addr = ctx.proxy(ProxyOptions::default())?;
    let m = via(ctx, &proxy_url("socks5", &addr, false))?;
    let f = get(ctx, &m, &url, |b| b)?;
    expect_status(&f.trace, 200)?;
    let (methods, credentials, address, p) = one_socks(ctx)?;
    ensure!(methods.contains(&0), "no-auth was not offered: {methods:?}");
    ensure_eq!(credentials, None);
    // socks5: the client resolved the name and sent the address.
    ensure_eq!(address, Some(SocksAddress::Ipv4(Ipv4Addr::LOCALHOST)));
    ensure_eq!(p, port);
    ensure_eq!(f.json()?["target"], "/echo");
    Ok(f.trace)
}

fn socks5h_remote(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    let port = ctx.origin()?.port();
    let addr = ctx.proxy(ProxyOptions::default())?;
    let m = via(ctx, &proxy_url("socks5h", &addr, false))?;
    let f = get(ctx, &m, &url, |b| b)?;
    expect_status(&f.trace, 200)?;
    let (_, _, address, p) = one_socks(ctx)?;
    // socks5h: the name went to the proxy to resolve.
    ensure_eq!(address, Some(SocksAddress::Domain(ORIGIN_HOST.to_owned())));
    ensure_eq!(p, port);
    Ok(f.trace)
}

fn socks5h_https(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.tls_origin(CertKind::Valid)?;
    let port = ctx.tls_server()?.port();
    let addr = ctx.proxy(ProxyOptions::default())?;
    let m = via(ctx, &proxy_url("socks5h", &addr, false))?;
    let f = get(ctx, &m, &format!("{base}/echo"), |b| b)?;
    expect_status(&f.trace, 200)?;
    let (_, _, address, p) = one_socks(ctx)?;
    ensure_eq!(address, Some(SocksAddress::Domain(TLS_HOST.to_owned())));
    ensure_eq!(p, port);
    let hs = ctx.tls_server()?.handshakes();
    ensure_eq!(hs.len(), 1);
    ensure_eq!(hs[0].sni.as_deref(), Some(TLS_HOST));
    Ok(f.trace)
}

fn socks5_credentials(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    let addr = ctx.proxy(ProxyOptions::default().with_credentials(USER, PASSWORD))?;
    let m = via(ctx, &proxy_url("socks5h", &addr, true))?;
    let f = get(ctx, &m, &url, |b| b)?;
    expect_status(&f.trace, 200)?;
    let (methods, credentials, _, _) = one_socks(ctx)?;
    ensure!(
        methods.contains(&2),
        "username/password was not offered: {methods:?}"
    );
    ensure_eq!(credentials, Some((USER.to_owned(), PASSWORD.to_owned())));
    Ok(f.trace)
}

fn socks5_wrong_credentials(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    let addr = ctx.proxy(ProxyOptions::default().with_credentials(USER, "another password"))?;
    let m = via(ctx, &proxy_url("socks5h", &addr, true))?;
    let f = get(ctx, &m, &url, |b| b)?;
    expect_error(&f.trace, "proxy")?;
    let (_, credentials, address, _) = one_socks(ctx)?;
    ensure_eq!(credentials, Some((USER.to_owned(), PASSWORD.to_owned())));
    ensure_eq!(address, None);
    ensure_eq!(ctx.origin()?.requests().len(), 0);
    Ok(f.trace)
}

fn socks5_credentials_required(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    let addr = ctx.proxy(ProxyOptions::default().with_credentials(USER, PASSWORD))?;
    let m = via(ctx, &proxy_url("socks5h", &addr, false))?;
    let f = get(ctx, &m, &url, |b| b)?;
    expect_error(&f.trace, "proxy")?;
    let (methods, credentials, address, _) = one_socks(ctx)?;
    ensure!(
        !methods.contains(&2),
        "username/password offered without credentials: {methods:?}"
    );
    ensure_eq!(credentials, None);
    ensure_eq!(address, None);
    Ok(f.trace)
}

fn socks5_refused(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    let addr = ctx.proxy(ProxyOptions {
        refuse_socks: true,
        ..Default::default()
    })?;
    let m = via(ctx, &proxy_url("socks5h", &addr, false))?;
    let f = get(ctx, &m, &url, |b| b)?;
    expect_error(&f.trace, "proxy")?;
    let (_, _, address, _) = one_socks(ctx)?;
    ensure_eq!(address, Some(SocksAddress::Domain(ORIGIN_HOST.to_owned())));
    ensure_eq!(ctx.origin()?.requests().len(), 0);
    Ok(f.trace)
}
