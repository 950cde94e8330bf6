//! HTTP Strict Transport Security, applied by the manager for every backend
//! alike (category `hsts`): an http url of a Known HSTS Host becomes https
//! before anything is sent, on the first hop and on redirect hops, with
//! subdomains only where the policy includes them; a header received over
//! http is ignored; the store persists with the cookie jar.
//!
//! An upgraded load is pointed at a raw server that speaks no TLS: what it
//! receives is the client's TLS handshake, never an http request, and the
//! load ends when its timeout elapses.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use resource_handle::{
    Capability, HstsStore, NetworkAccessManager, PersistentCookieJar, ResourceRequest,
};

use super::cookies::{jar_dir, query_value};
use super::{build, expect_error, expect_status, CaseResult, Ctx, Fetched, RAW_HOST};
use crate::servers::{RawServer, Step};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// An upgraded load needs https from the backend, even to fail its handshake.
cases!("hsts";
    "hsts.known-host-upgraded-before-sending" => known_host_upgraded [Capability::Https],
    "hsts.include-subdomains-upgrades-subdomain" => subdomain_upgraded [Capability::Https],
    "hsts.subdomain-not-upgraded-without-include" => subdomain_not_upgraded,
    "hsts.redirect-hop-upgraded" => redirect_hop_upgraded [Capability::Https],
    "hsts.header-over-http-ignored" => header_over_http_ignored,
    "hsts.persisted-with-cookie-jar" => persisted_with_jar [Capability::Https],
    "hsts.disabled-does-not-upgrade" => disabled,
);

const HOUR: Duration = Duration::from_secs(3600);

/// How long an upgraded load waits for the TLS server that never answers.
const HANDSHAKE_WAIT: Duration = Duration::from_millis(700);

/// A raw server mapped as `raw.test` that records what arrives and never answers.
fn silent_server(ctx: &mut Ctx) -> Result<RawServer, String> {
    let s = RawServer::start(vec![Step::ReadHead])
        .map_err(|e| format!("raw server did not start: {e}"))?;
    ctx.map_host(RAW_HOST, s.port(), vec![LOOPBACK]);
    Ok(s)
}

/// Loads `url` with a short timeout, expecting the wait for a handshake
/// that never completes, and checks that the raw server saw a TLS
/// ClientHello (a handshake record, 0x16 0x03) and no http request.
fn expect_upgraded(
    ctx: &mut Ctx,
    m: &NetworkAccessManager,
    server: &RawServer,
    url: &str,
) -> CaseResult {
    let f = ctx.drain(m.load(build(ResourceRequest::get(url).timeout(HANDSHAKE_WAIT))?));
    expect_error(&f.trace, "timeout")?;
    // The server records what arrived once the client gives up and closes.
    super::wait_for(Duration::from_secs(5), || !server.received().is_empty());
    let raw = server.received();
    ensure!(!raw.is_empty(), "the raw server received nothing");
    for r in &raw {
        ensure!(
            r.head.starts_with(&[0x16, 0x03]),
            "the server received {:?}, not a TLS handshake",
            String::from_utf8_lossy(&r.head[..r.head.len().min(60)])
        );
    }
    Ok(f.trace)
}

fn preloaded(hosts: &[(&str, bool)]) -> HstsStore {
    let store = HstsStore::new();
    for (h, subdomains) in hosts {
        store.add_host(h, HOUR, *subdomains);
    }
    store
}

fn known_host_upgraded(ctx: &mut Ctx) -> CaseResult {
    let server = silent_server(ctx)?;
    let port = server.port();
    let store = preloaded(&[(RAW_HOST, false)]);
    let m = ctx.manager_with(|b| Ok(b.hsts_store(store.clone())))?;
    let f = expect_upgraded(ctx, &m, &server, &format!("http://{RAW_HOST}:{port}/page"))?;
    // The explicit port other than 80 is kept (RFC 6797 §8.3).
    ensure_eq!(f.url, format!("https://{RAW_HOST}:{port}/page"));
    Ok(f)
}

fn subdomain_upgraded(ctx: &mut Ctx) -> CaseResult {
    let server = silent_server(ctx)?;
    let port = server.port();
    let sub = format!("deep.sub.{RAW_HOST}");
    ctx.map_host(&sub, port, vec![LOOPBACK]);
    let store = preloaded(&[(RAW_HOST, true)]);
    let m = ctx.manager_with(|b| Ok(b.hsts_store(store.clone())))?;
    expect_upgraded(ctx, &m, &server, &format!("http://{sub}:{port}/"))
}

fn subdomain_not_upgraded(ctx: &mut Ctx) -> CaseResult {
    let port = ctx.origin()?.port();
    let sub = "sub.site.test";
    ctx.map_host(sub, port, vec![LOOPBACK]);
    let store = preloaded(&[("site.test", false)]);
    let m = ctx.manager_with(|b| Ok(b.hsts_store(store.clone())))?;
    let url = format!("http://{sub}:{port}/echo");
    let f = ctx.drain(m.load(build(ResourceRequest::get(&url))?));
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.url, url);
    Ok(f.trace)
}

fn redirect_hop_upgraded(ctx: &mut Ctx) -> CaseResult {
    let server = silent_server(ctx)?;
    let port = server.port();
    let target = format!("http://{RAW_HOST}:{port}/next");
    let start = ctx.origin_url(&format!("/redirect-to?url={}", query_value(&target)))?;
    let store = preloaded(&[(RAW_HOST, false)]);
    let m = ctx.manager_with(|b| Ok(b.hsts_store(store.clone())))?;
    let t = expect_upgraded(ctx, &m, &server, &start)?;
    // The redirect is followed to the url that is loaded.
    ensure_eq!(t.redirects.len(), 1);
    ensure_eq!(
        t.redirects[0].location,
        format!("https://{RAW_HOST}:{port}/next")
    );
    // The origin itself, not a known host, was loaded over http.
    ensure_eq!(ctx.origin()?.requests().len(), 1);
    Ok(t)
}

fn header_over_http_ignored(ctx: &mut Ctx) -> CaseResult {
    let sts = format!(
        "/headers?strict-transport-security={}",
        query_value("max-age=31536000; includeSubDomains")
    );
    let first = ctx.get(&sts)?;
    expect_status(&first.trace, 200)?;
    let m = ctx.manager()?;
    let store = m.hsts_store().ok_or("HSTS is off by default")?;
    ensure!(
        !store.is_known_host(super::ORIGIN_HOST),
        "a header over http made the host known"
    );
    let f: Fetched = ctx.get("/echo")?;
    expect_status(&f.trace, 200)?;
    ensure!(
        f.trace.url.starts_with("http://"),
        "the load was upgraded to {}",
        f.trace.url
    );
    ensure_eq!(ctx.origin()?.requests().len(), 2);
    Ok(f.trace)
}

fn persisted_with_jar(ctx: &mut Ctx) -> CaseResult {
    let server = silent_server(ctx)?;
    let port = server.port();
    let dir = jar_dir(ctx, "hsts")?;
    let path = dir.0.join("jar.json");
    {
        let jar = PersistentCookieJar::open(&path).map_err(|e| e.to_string())?;
        jar.hsts().add_host(RAW_HOST, HOUR, false);
        jar.save().map_err(|e| e.to_string())?;
    }
    // A new manager with the same file, as after a restart.
    let jar = Arc::new(PersistentCookieJar::open(&path).map_err(|e| e.to_string())?);
    let m = ctx.manager_with(|b| Ok(b.cookie_jar(jar.clone())))?;
    expect_upgraded(ctx, &m, &server, &format!("http://{RAW_HOST}:{port}/"))
}

fn disabled(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    let store = preloaded(&[(super::ORIGIN_HOST, true)]);
    let m = ctx.manager_with(|b| Ok(b.hsts_store(store.clone()).hsts(false)))?;
    let f = ctx.drain(m.load(build(ResourceRequest::get(&url))?));
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.url, url);
    Ok(f.trace)
}
