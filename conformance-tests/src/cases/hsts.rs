//! HTTP Strict Transport Security, applied by the manager for every backend
//! alike (category `hsts`): a `Strict-Transport-Security` header received
//! over verified https makes the host known, and an http url of a Known HSTS
//! Host becomes https before anything is sent, on the first hop and on
//! redirect hops, with subdomains only where the policy includes them;
//! `max-age=0` forgets the host; a header received over http, over https
//! without certificate verification, or from the cache teaches nothing; the
//! store persists with the cookie jar.
//!
//! The TLS origin answers https and plain http on one port, as an upgrade
//! (which keeps the port) needs: which of its connections completed a TLS
//! handshake tells whether a request arrived upgraded.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use resource_handle::{
    Capability, HstsStore, MemoryCache, NetworkAccessManager, PersistentCookieJar, ResourceRequest,
};

use super::cookies::{jar_dir, query_value};
use super::{build, expect_status, CaseResult, Ctx, Fetched, TLS_HOST};
use crate::servers::{CertKind, TlsOrigin};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A subdomain of [`TLS_HOST`] the valid test certificate also names.
const SUB_HOST: &str = "sub.tls.test";

// Every case but the last talks to the TLS origin, over https or over http
// (and expects an upgrade to https, or none).
cases!("hsts";
    "hsts.known-host-upgraded-before-sending" => known_host_upgraded [Capability::Https],
    "hsts.include-subdomains-upgrades-subdomain" => subdomain_upgraded [Capability::Https],
    "hsts.subdomain-not-upgraded-without-include" => subdomain_not_upgraded [Capability::Https],
    "hsts.redirect-hop-upgraded" => redirect_hop_upgraded [Capability::Https],
    "hsts.https-redirect-to-known-host-is-no-downgrade" => https_redirect_to_known_host [Capability::Https],
    "hsts.max-age-zero-forgets-host" => max_age_zero [Capability::Https],
    "hsts.header-over-http-ignored" => header_over_http_ignored [Capability::Https],
    "hsts.header-ignored-without-verification" => unverified_ignored [Capability::Https],
    "hsts.cached-response-does-not-renew" => cached_does_not_renew [Capability::Https],
    "hsts.persisted-with-cookie-jar" => persisted_with_jar [Capability::Https],
    "hsts.preloaded-host-upgraded" => preloaded_upgraded [Capability::Https],
    "hsts.disabled-does-not-upgrade" => disabled,
);

const HOUR: Duration = Duration::from_secs(3600);

/// The path on which the origin answers with `Strict-Transport-Security: value`.
fn sts_path(value: &str) -> String {
    format!("/headers?strict-transport-security={}", query_value(value))
}

/// Starts the TLS origin with the valid certificate and returns its port.
fn tls_port(ctx: &mut Ctx) -> Result<u16, String> {
    ctx.tls_origin(CertKind::Valid)?;
    Ok(ctx.tls_server()?.port())
}

/// GETs `url` with `m`.
fn load(ctx: &Ctx, m: &NetworkAccessManager, url: &str) -> Result<Fetched, String> {
    Ok(ctx.fetch_with(m, build(ResourceRequest::get(url))?))
}

/// GETs the header `value` from the TLS origin over https.
fn receive_sts(
    ctx: &Ctx,
    m: &NetworkAccessManager,
    port: u16,
    value: &str,
) -> Result<Fetched, String> {
    let f = load(
        ctx,
        m,
        &format!("https://{TLS_HOST}:{port}{}", sts_path(value)),
    )?;
    expect_status(&f.trace, 200)?;
    Ok(f)
}

/// The manager's store; HSTS is on by default.
fn store_of(m: &NetworkAccessManager) -> Result<&HstsStore, String> {
    m.hsts_store()
        .ok_or_else(|| "the manager has no HSTS store".to_owned())
}

/// Each request the TLS origin received, in order: its target and whether
/// its connection completed a TLS handshake (false: it came as plain http).
fn arrivals(server: &TlsOrigin) -> Vec<(String, bool)> {
    let tls: Vec<usize> = server
        .handshakes()
        .iter()
        .filter(|h| h.error.is_none())
        .map(|h| h.connection)
        .collect();
    server
        .requests()
        .into_iter()
        .map(|r| (r.target, tls.contains(&r.connection)))
        .collect()
}

/// Fails unless the TLS origin received exactly `expected` (target, over TLS).
fn expect_arrivals(ctx: &Ctx, expected: &[(&str, bool)]) -> Result<(), String> {
    let got = arrivals(ctx.tls_server()?);
    let want: Vec<(String, bool)> = expected
        .iter()
        .map(|(t, tls)| ((*t).to_owned(), *tls))
        .collect();
    ensure!(
        got == want,
        "the TLS origin received {got:?} ((target, over TLS)), expected {want:?}"
    );
    Ok(())
}

/// Loads `http://host:port/echo?n` expecting it to stay http.
fn expect_not_upgraded(ctx: &Ctx, m: &NetworkAccessManager, host: &str, port: u16) -> CaseResult {
    let url = format!("http://{host}:{port}/echo?plain");
    let f = load(ctx, m, &url)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.url, url);
    ensure_eq!(f.json()?["target"], "/echo?plain");
    Ok(f.trace)
}

/// Loads `http://host:port/echo?up` expecting it to go to https (the
/// explicit port kept, RFC 6797 §8.3) before anything is sent.
fn expect_upgraded(ctx: &Ctx, m: &NetworkAccessManager, host: &str, port: u16) -> CaseResult {
    let f = load(ctx, m, &format!("http://{host}:{port}/echo?up"))?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.url, format!("https://{host}:{port}/echo?up"));
    ensure!(
        f.trace.redirects.is_empty(),
        "the upgrade showed as a redirect: {:?}",
        f.trace.redirects
    );
    ensure_eq!(f.json()?["target"], "/echo?up");
    Ok(f.trace)
}

fn known_host_upgraded(ctx: &mut Ctx) -> CaseResult {
    let port = tls_port(ctx)?;
    let m = ctx.tls_manager()?;
    ensure!(
        !store_of(&m)?.is_known_host(TLS_HOST),
        "the host was known before any header"
    );
    receive_sts(ctx, &m, port, "max-age=60")?;
    ensure!(
        store_of(&m)?.is_known_host(TLS_HOST),
        "the header over https did not make the host known"
    );
    ensure!(
        !store_of(&m)?.is_known_host(SUB_HOST),
        "a policy without includeSubDomains covers a subdomain"
    );
    let t = expect_upgraded(ctx, &m, TLS_HOST, port)?;
    // Nothing went out as plain http.
    let sts = sts_path("max-age=60");
    expect_arrivals(ctx, &[(&sts, true), ("/echo?up", true)])?;
    Ok(t)
}

fn subdomain_upgraded(ctx: &mut Ctx) -> CaseResult {
    let port = tls_port(ctx)?;
    ctx.map_host(SUB_HOST, port, vec![LOOPBACK]);
    let m = ctx.tls_manager()?;
    let value = "max-age=60; includeSubDomains";
    receive_sts(ctx, &m, port, value)?;
    let t = expect_upgraded(ctx, &m, SUB_HOST, port)?;
    expect_arrivals(ctx, &[(&sts_path(value), true), ("/echo?up", true)])?;
    // The subdomain's own name went out as SNI.
    let sni: Vec<Option<String>> = ctx
        .tls_server()?
        .handshakes()
        .into_iter()
        .map(|h| h.sni)
        .collect();
    ensure!(
        sni.contains(&Some(SUB_HOST.to_owned())),
        "no handshake named {SUB_HOST}: {sni:?}"
    );
    Ok(t)
}

fn subdomain_not_upgraded(ctx: &mut Ctx) -> CaseResult {
    let port = tls_port(ctx)?;
    ctx.map_host(SUB_HOST, port, vec![LOOPBACK]);
    let m = ctx.tls_manager()?;
    receive_sts(ctx, &m, port, "max-age=60")?;
    let t = expect_not_upgraded(ctx, &m, SUB_HOST, port)?;
    expect_arrivals(
        ctx,
        &[(&sts_path("max-age=60"), true), ("/echo?plain", false)],
    )?;
    Ok(t)
}

fn redirect_hop_upgraded(ctx: &mut Ctx) -> CaseResult {
    let port = tls_port(ctx)?;
    let target = format!("http://{TLS_HOST}:{port}/echo?hop");
    let start = ctx.origin_url(&format!("/redirect-to?url={}", query_value(&target)))?;
    let m = ctx.tls_manager()?;
    receive_sts(ctx, &m, port, "max-age=60")?;
    let f = load(ctx, &m, &start)?;
    expect_status(&f.trace, 200)?;
    let upgraded = format!("https://{TLS_HOST}:{port}/echo?hop");
    ensure_eq!(f.trace.url, upgraded);
    // The redirect is followed to the url that is loaded.
    ensure_eq!(f.trace.redirects.len(), 1);
    ensure_eq!(f.trace.redirects[0].location, upgraded);
    // The origin itself, not a known host, was loaded over http.
    ensure_eq!(ctx.origin()?.requests().len(), 1);
    expect_arrivals(ctx, &[(&sts_path("max-age=60"), true), ("/echo?hop", true)])?;
    Ok(f.trace)
}

fn https_redirect_to_known_host(ctx: &mut Ctx) -> CaseResult {
    let port = tls_port(ctx)?;
    let m = ctx.tls_manager()?;
    receive_sts(ctx, &m, port, "max-age=60")?;
    // Without the policy this redirect is refused as a downgrade
    // (`tls.redirect-to-http-refused`); with it, it never leaves https.
    let target = format!("http://{TLS_HOST}:{port}/echo?hop");
    let redirect = format!("/redirect-to?url={}", query_value(&target));
    let f = load(ctx, &m, &format!("https://{TLS_HOST}:{port}{redirect}"))?;
    expect_status(&f.trace, 200)?;
    let upgraded = format!("https://{TLS_HOST}:{port}/echo?hop");
    ensure_eq!(f.trace.url, upgraded);
    ensure_eq!(f.trace.redirects.len(), 1);
    ensure_eq!(f.trace.redirects[0].location, upgraded);
    expect_arrivals(
        ctx,
        &[
            (&sts_path("max-age=60"), true),
            (&redirect, true),
            ("/echo?hop", true),
        ],
    )?;
    Ok(f.trace)
}

fn max_age_zero(ctx: &mut Ctx) -> CaseResult {
    let port = tls_port(ctx)?;
    let m = ctx.tls_manager()?;
    receive_sts(ctx, &m, port, "max-age=60; includeSubDomains")?;
    expect_upgraded(ctx, &m, TLS_HOST, port)?;
    // max-age=0 over https ends the policy (RFC 6797 §6.1.1).
    receive_sts(ctx, &m, port, "max-age=0")?;
    ensure!(
        store_of(&m)?.policies().is_empty(),
        "max-age=0 left {:?}",
        store_of(&m)?.policies()
    );
    let t = expect_not_upgraded(ctx, &m, TLS_HOST, port)?;
    expect_arrivals(
        ctx,
        &[
            (&sts_path("max-age=60; includeSubDomains"), true),
            ("/echo?up", true),
            (&sts_path("max-age=0"), true),
            ("/echo?plain", false),
        ],
    )?;
    Ok(t)
}

fn header_over_http_ignored(ctx: &mut Ctx) -> CaseResult {
    let port = tls_port(ctx)?;
    let m = ctx.tls_manager()?;
    // The same server that would answer https sends the header over http.
    let value = "max-age=31536000; includeSubDomains";
    let f = load(
        ctx,
        &m,
        &format!("http://{TLS_HOST}:{port}{}", sts_path(value)),
    )?;
    expect_status(&f.trace, 200)?;
    ensure!(
        f.trace
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("strict-transport-security")),
        "the response lacks the header: {:?}",
        f.trace.headers
    );
    ensure!(
        store_of(&m)?.policies().is_empty(),
        "a header over http was noted: {:?}",
        store_of(&m)?.policies()
    );
    let t = expect_not_upgraded(ctx, &m, TLS_HOST, port)?;
    expect_arrivals(ctx, &[(&sts_path(value), false), ("/echo?plain", false)])?;
    Ok(t)
}

fn unverified_ignored(ctx: &mut Ctx) -> CaseResult {
    let port = tls_port(ctx)?;
    // No root at all: only turning verification off lets https through.
    let m =
        ctx.manager_with(|b| Ok(b.tls_system_roots(false).danger_accept_invalid_certs(true)))?;
    receive_sts(ctx, &m, port, "max-age=60")?;
    ensure!(
        store_of(&m)?.policies().is_empty(),
        "a header over unverified https was noted: {:?}",
        store_of(&m)?.policies()
    );
    let t = expect_not_upgraded(ctx, &m, TLS_HOST, port)?;
    expect_arrivals(
        ctx,
        &[(&sts_path("max-age=60"), true), ("/echo?plain", false)],
    )?;
    Ok(t)
}

fn cached_does_not_renew(ctx: &mut Ctx) -> CaseResult {
    let port = tls_port(ctx)?;
    let m = ctx.tls_manager_with(|b| Ok(b.cache(Arc::new(MemoryCache::new(1 << 20)))))?;
    let cached = format!(
        "/headers?strict-transport-security={}&cache-control={}",
        query_value("max-age=60"),
        query_value("max-age=3600")
    );
    let url = format!("https://{TLS_HOST}:{port}{cached}");
    let first = load(ctx, &m, &url)?;
    expect_status(&first.trace, 200)?;
    ensure_eq!(first.trace.source.as_deref(), Some("network"));
    ensure!(
        store_of(&m)?.is_known_host(TLS_HOST),
        "the header over https did not make the host known"
    );
    // The server ends the policy.
    receive_sts(ctx, &m, port, "max-age=0")?;
    // The stored response still carries the old header; it was not received now.
    let again = load(ctx, &m, &url)?;
    expect_status(&again.trace, 200)?;
    ensure_eq!(again.trace.source.as_deref(), Some("cache"));
    ensure!(
        again
            .trace
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("strict-transport-security")),
        "the cached response lacks the header: {:?}",
        again.trace.headers
    );
    ensure!(
        store_of(&m)?.policies().is_empty(),
        "the cached response renewed the policy: {:?}",
        store_of(&m)?.policies()
    );
    expect_not_upgraded(ctx, &m, TLS_HOST, port)?;
    expect_arrivals(
        ctx,
        &[
            (&cached, true),
            (&sts_path("max-age=0"), true),
            ("/echo?plain", false),
        ],
    )?;
    Ok(again.trace)
}

fn persisted_with_jar(ctx: &mut Ctx) -> CaseResult {
    let port = tls_port(ctx)?;
    let dir = jar_dir(ctx, "hsts")?;
    let path = dir.0.join("jar.json");
    {
        let jar = Arc::new(PersistentCookieJar::open(&path).map_err(|e| e.to_string())?);
        let m = ctx.tls_manager_with(|b| Ok(b.cookie_jar(jar.clone())))?;
        receive_sts(ctx, &m, port, "max-age=3600")?;
        ensure!(
            jar.hsts().is_known_host(TLS_HOST),
            "the jar's store did not learn the host"
        );
    }
    // A new jar from the same file and a new manager, as after a restart.
    let jar = Arc::new(PersistentCookieJar::open(&path).map_err(|e| e.to_string())?);
    let m = ctx.tls_manager_with(|b| Ok(b.cookie_jar(jar.clone())))?;
    let t = expect_upgraded(ctx, &m, TLS_HOST, port)?;
    expect_arrivals(
        ctx,
        &[(&sts_path("max-age=3600"), true), ("/echo?up", true)],
    )?;
    Ok(t)
}

fn preloaded_upgraded(ctx: &mut Ctx) -> CaseResult {
    // A policy the application supplies (Qt's addStrictTransportSecurityHosts)
    // upgrades the very first load, before the host ever answered.
    let port = tls_port(ctx)?;
    let store = HstsStore::new();
    store.add_host(TLS_HOST, HOUR, false);
    let m = ctx.tls_manager_with(|b| Ok(b.hsts_store(store.clone())))?;
    let t = expect_upgraded(ctx, &m, TLS_HOST, port)?;
    expect_arrivals(ctx, &[("/echo?up", true)])?;
    Ok(t)
}

fn disabled(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    let store = HstsStore::new();
    store.add_host(super::ORIGIN_HOST, HOUR, true);
    let m = ctx.manager_with(|b| Ok(b.hsts_store(store.clone()).hsts(false)))?;
    let f = ctx.drain(m.load(build(ResourceRequest::get(&url))?));
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.url, url);
    Ok(f.trace)
}
