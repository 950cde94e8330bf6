//! HTTP/2: negotiated with ALPN over TLS when asked for, with prior
//! knowledge in cleartext, never when not asked for; one connection carries
//! concurrent and sequential loads; bodies both ways and headers intact.

use resource_handle::{
    Capability, HttpVersionPref, NetworkAccessManager, RequestBuilder, ResourceRequest, Trace,
};

use super::{build, expect_status, sha256, CaseResult, Ctx, Fetched, H2_HOST};
use crate::servers::body_pattern;

cases!("http2";
    "http2.alpn-h2" => alpn_h2 [Capability::Https, Capability::Http2],
    "http2.alpn-default-is-http11" => alpn_default [Capability::Https],
    "http2.prior-knowledge-cleartext" => prior_knowledge [Capability::Http2],
    "http2.preference-in-cleartext-is-http11" => preference_cleartext [Capability::Http2],
    "http2.multiplex-concurrent-alpn" => multiplex_alpn [Capability::Https, Capability::Http2],
    "http2.multiplex-concurrent-prior-knowledge" => multiplex_prior [Capability::Http2],
    "http2.sequential-one-connection" => sequential [Capability::Https, Capability::Http2],
    "http2.post-body" => post_body [Capability::Https, Capability::Http2],
    "http2.download-1mib" => download_1mib [Capability::Https, Capability::Http2],
    "http2.upload-1mib" => upload_1mib [Capability::Https, Capability::Http2],
    "http2.request-headers" => request_headers [Capability::Https, Capability::Http2],
    "http2.response-headers" => response_headers [Capability::Https, Capability::Http2],
    "http2.status-404" => status_404 [Capability::Https, Capability::Http2],
);

/// Concurrent loads in the multiplexing cases.
const CONCURRENT: usize = 6;

/// The manager for HTTP/2 servers: the test CA trusted, nothing else.
fn manager(ctx: &mut Ctx) -> Result<NetworkAccessManager, String> {
    ctx.tls_manager()
}

/// Runs `req` (built from `url` by `f`) with version preference `pref`.
fn fetch(
    ctx: &Ctx,
    m: &NetworkAccessManager,
    url: &str,
    pref: HttpVersionPref,
    f: impl FnOnce(RequestBuilder) -> RequestBuilder,
) -> Result<Fetched, String> {
    let req = build(f(ResourceRequest::get(url).http_version(pref)))?;
    Ok(ctx.fetch_with(m, req))
}

/// Fails unless the load finished with 200 over `version`.
fn expect_version(t: &Trace, version: &str) -> Result<(), String> {
    expect_status(t, 200)?;
    ensure_eq!(t.version.as_deref(), Some(version));
    Ok(())
}

/// Fails unless the server saw every request over `version`.
fn server_saw(ctx: &Ctx, version: &str, count: usize) -> Result<(), String> {
    let reqs = ctx.h2_server()?.requests();
    ensure_eq!(reqs.len(), count);
    for r in &reqs {
        ensure!(
            r.version == version,
            "the server saw {} {} over {}, expected {version}",
            r.method,
            r.path,
            r.version
        );
    }
    Ok(())
}

fn alpn_h2(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.h2_tls()?;
    let m = manager(ctx)?;
    let f = fetch(
        ctx,
        &m,
        &format!("{base}/echo"),
        HttpVersionPref::Http2,
        |b| b,
    )?;
    expect_version(&f.trace, "HTTP/2")?;
    let e = f.json()?;
    ensure_eq!(e["version"], "HTTP/2");
    ensure_eq!(e["authority"], format!("{H2_HOST}:PORT"));
    server_saw(ctx, "HTTP/2", 1)?;
    ensure_eq!(ctx.h2_server()?.alpn(), vec![Some("h2".to_owned())]);
    Ok(f.trace)
}

fn alpn_default(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.h2_tls()?;
    let m = manager(ctx)?;
    // The server prefers h2; a client that did not ask for it must not get it.
    let f = fetch(
        ctx,
        &m,
        &format!("{base}/echo"),
        HttpVersionPref::Http1,
        |b| b,
    )?;
    expect_version(&f.trace, "HTTP/1.1")?;
    ensure_eq!(f.json()?["version"], "HTTP/1.1");
    server_saw(ctx, "HTTP/1.1", 1)?;
    let alpn = ctx.h2_server()?.alpn();
    ensure!(
        alpn.iter().all(|a| a.as_deref() != Some("h2")),
        "h2 was negotiated: {alpn:?}"
    );
    Ok(f.trace)
}

fn prior_knowledge(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.h2_cleartext()?;
    let m = ctx.manager()?;
    let f = fetch(
        ctx,
        &m,
        &format!("{base}/echo"),
        HttpVersionPref::Http2PriorKnowledge,
        |b| b,
    )?;
    expect_version(&f.trace, "HTTP/2")?;
    ensure_eq!(f.json()?["version"], "HTTP/2");
    server_saw(ctx, "HTTP/2", 1)?;
    Ok(f.trace)
}

fn preference_cleartext(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.h2_cleartext()?;
    let m = ctx.manager()?;
    // Without TLS there is nothing to negotiate with: HTTP/1.1, no upgrade.
    let f = fetch(
        ctx,
        &m,
        &format!("{base}/echo"),
        HttpVersionPref::Http2,
        |b| b,
    )?;
    expect_version(&f.trace, "HTTP/1.1")?;
    server_saw(ctx, "HTTP/1.1", 1)?;
    let upgrade = ctx.h2_server()?.requests()[0]
        .headers
        .iter()
        .any(|(n, _)| n == "upgrade" || n == "http2-settings");
    ensure!(!upgrade, "the request asked for an h2c upgrade");
    Ok(f.trace)
}

/// Starts `CONCURRENT` slow loads at once and checks one connection carried them.
fn multiplex(
    ctx: &mut Ctx,
    base: &str,
    m: &NetworkAccessManager,
    pref: HttpVersionPref,
) -> CaseResult {
    let handles: Vec<_> = (0..CONCURRENT)
        .map(|i| {
            build(ResourceRequest::get(format!("{base}/slow/300?i={i}")).http_version(pref))
                .map(|r| m.load(r))
        })
        .collect::<Result<_, _>>()?;
    let mut traces = Vec::new();
    for h in handles {
        let f = ctx.drain(h);
        expect_version(&f.trace, "HTTP/2")?;
        traces.push(f.trace);
    }
    server_saw(ctx, "HTTP/2", CONCURRENT)?;
    let server = ctx.h2_server()?;
    ensure_eq!(server.connections(), 1);
    traces
        .into_iter()
        .next()
        .ok_or_else(|| "no load ran".into())
}

fn multiplex_alpn(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.h2_tls()?;
    let m = manager(ctx)?;
    multiplex(ctx, &base, &m, HttpVersionPref::Http2)
}

fn multiplex_prior(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.h2_cleartext()?;
    let m = ctx.manager()?;
    multiplex(ctx, &base, &m, HttpVersionPref::Http2PriorKnowledge)
}

fn sequential(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.h2_tls()?;
    let m = manager(ctx)?;
    let mut last = None;
    for i in 0..20 {
        let f = fetch(
            ctx,
            &m,
            &format!("{base}/bytes/{}", 100 + i),
            HttpVersionPref::Http2,
            |b| b,
        )?;
        expect_version(&f.trace, "HTTP/2")?;
        ensure_eq!(f.trace.body_bytes, 100 + i);
        last = Some(f.trace);
    }
    server_saw(ctx, "HTTP/2", 20)?;
    ensure_eq!(ctx.h2_server()?.connections(), 1);
    last.ok_or_else(|| "no load ran".into())
}

fn post_body(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.h2_tls()?;
    let m = manager(ctx)?;
    let body = "name=value&over=h2";
    let req = build(
        ResourceRequest::post(format!("{base}/echo"))
            .http_version(HttpVersionPref::Http2)
            .body(body),
    )?;
    let f = ctx.fetch_with(&m, req);
    expect_version(&f.trace, "HTTP/2")?;
    let e = f.json()?;
    ensure_eq!(e["method"], "POST");
    ensure_eq!(e["body_len"], body.len());
    ensure_eq!(e["body_sha256"], sha256(body.as_bytes()));
    Ok(f.trace)
}

fn download_1mib(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.h2_tls()?;
    let m = manager(ctx)?;
    let f = fetch(
        ctx,
        &m,
        &format!("{base}/bytes/1048576"),
        HttpVersionPref::Http2,
        |b| b,
    )?;
    expect_version(&f.trace, "HTTP/2")?;
    ensure_eq!(f.trace.body_bytes, 1 << 20);
    ensure_eq!(f.trace.body_sha256, sha256(&body_pattern(1 << 20)));
    Ok(f.trace)
}

fn upload_1mib(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.h2_tls()?;
    let m = manager(ctx)?;
    let body = body_pattern(1 << 20);
    let digest = sha256(&body);
    let req = build(
        ResourceRequest::post(format!("{base}/echo"))
            .http_version(HttpVersionPref::Http2)
            .body(body),
    )?;
    let f = ctx.fetch_with(&m, req);
    expect_version(&f.trace, "HTTP/2")?;
    let e = f.json()?;
    ensure_eq!(e["body_len"], 1 << 20);
    ensure_eq!(e["body_sha256"], digest);
    Ok(f.trace)
}

fn request_headers(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.h2_tls()?;
    let m = manager(ctx)?;
    let f = fetch(
        ctx,
        &m,
        &format!("{base}/echo"),
        HttpVersionPref::Http2,
        |b| {
            b.header("X-Custom", "Value One")
                .header("x-repeated", "a")
                .header("x-repeated", "b")
        },
    )?;
    expect_version(&f.trace, "HTTP/2")?;
    let headers = ctx.h2_server()?.requests()[0].headers.clone();
    let named = |name: &str| -> Vec<String> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    // HTTP/2 field names are lower case on the wire; values as set.
    ensure_eq!(named("x-custom"), vec!["Value One".to_owned()]);
    ensure_eq!(named("x-repeated"), vec!["a".to_owned(), "b".to_owned()]);
    ensure!(
        !headers
            .iter()
            .any(|(n, _)| n == "connection" || n == "host"),
        "connection-specific headers over HTTP/2: {headers:?}"
    );
    Ok(f.trace)
}

fn response_headers(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.h2_tls()?;
    let m = manager(ctx)?;
    let f = fetch(
        ctx,
        &m,
        &format!("{base}/headers?x-one=1&x-two=2&x-one=3"),
        HttpVersionPref::Http2,
        |b| b,
    )?;
    expect_version(&f.trace, "HTTP/2")?;
    let named = |name: &str| -> Vec<&str> {
        f.trace
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    ensure_eq!(named("x-one"), vec!["1", "3"]);
    ensure_eq!(named("x-two"), vec!["2"]);
    ensure_eq!(named("content-type"), vec!["text/plain"]);
    ensure_eq!(named("content-length"), vec!["8"]);
    Ok(f.trace)
}

fn status_404(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.h2_tls()?;
    let m = manager(ctx)?;
    let f = fetch(
        ctx,
        &m,
        &format!("{base}/no-such-route"),
        HttpVersionPref::Http2,
        |b| b,
    )?;
    if let Some(e) = &f.trace.error {
        return Err(format!(
            "a 404 over HTTP/2 failed: {}: {}",
            e.kind, e.message
        ));
    }
    ensure_eq!(f.trace.status, Some(404));
    ensure_eq!(f.trace.version.as_deref(), Some("HTTP/2"));
    ensure_eq!(f.trace.body_bytes, 14);
    Ok(f.trace)
}
