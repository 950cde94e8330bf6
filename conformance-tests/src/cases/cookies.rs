//! Cookies, kept by the manager's jar for every backend alike (category
//! `cookies`): Set-Cookie stored from every hop of a redirect chain, the
//! Cookie header computed for each hop's url, the security rules (secure,
//! domain, host-only, public suffixes), expiry and deletion, the request's
//! `allow_cookies`, and a jar persisted across a manager restart.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use resource_handle::http::HeaderValue;
use resource_handle::{
    NetworkAccessManager, PersistentCookieJar, RequestBuilder, ResourceRequest, Url,
};

use super::{build, expect_status, CaseResult, Ctx, Fetched, ORIGIN_HOST, OTHER_HOST};

cases!("cookies";
    "cookies.set-then-sent" => set_then_sent,
    "cookies.same-name-replaced" => same_name_replaced,
    "cookies.invalid-set-cookie-ignored" => invalid_ignored,
    "cookies.stored-from-every-redirect-hop" => stored_from_redirect_hops,
    "cookies.sent-on-redirect-hops" => sent_on_redirect_hops,
    "cookies.cross-origin-redirect-gets-that-hosts-cookies" => cross_origin_redirect,
    "cookies.set-by-other-origin-hop-kept-for-it" => set_by_other_origin_hop,
    "cookies.path-attribute" => path_attribute,
    "cookies.default-path" => default_path,
    "cookies.longer-paths-first" => longer_paths_first,
    "cookies.domain-attribute-covers-subdomains" => domain_covers_subdomains,
    "cookies.host-only-not-sent-to-subdomain" => host_only,
    "cookies.foreign-domain-refused" => foreign_domain_refused,
    "cookies.public-suffix-domain-refused" => public_suffix_refused,
    "cookies.secure-not-sent-over-http" => secure_not_sent_over_http,
    "cookies.secure-from-http-refused" => secure_from_http_refused,
    "cookies.max-age-0-deletes" => max_age_zero_deletes,
    "cookies.expires-in-past-deletes" => expires_past_deletes,
    "cookies.max-age-expires" => max_age_expires,
    "cookies.allow-cookies-false-sends-none" => disallowed_not_sent,
    "cookies.allow-cookies-false-stores-none" => disallowed_not_stored,
    "cookies.application-cookie-header-kept" => application_header_kept,
    "cookies.persist-across-manager-restart" => persist_across_restart,
);

/// Percent-encodes a query value, leaving `:` and `/` as they are so the
/// ports inside a url parameter are blanked in traces like any other.
pub(super) fn query_value(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/@!$'()*,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path of `/cookies/set` sending each of `cookies` as a Set-Cookie
/// field, redirecting to `location` when given.
fn set_path(cookies: &[&str], location: Option<&str>) -> String {
    let mut p = String::from("/cookies/set?");
    let parts: Vec<String> = cookies
        .iter()
        .map(|c| format!("c={}", query_value(c)))
        .chain(location.map(|l| format!("location={}", query_value(l))))
        .collect();
    p.push_str(&parts.join("&"));
    p
}

/// The `[name, value]` pairs of the Cookie header `/cookies` received.
fn pairs(f: &Fetched) -> Result<Vec<(String, String)>, String> {
    expect_status(&f.trace, 200)?;
    let v = f.json()?;
    serde_json::from_value(v["pairs"].clone()).map_err(|e| format!("bad /cookies answer: {e}"))
}

fn p(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// Maps `host` to the origin's port and returns its base url.
fn alias(ctx: &mut Ctx, host: &str) -> Result<String, String> {
    let port = ctx.origin()?.port();
    ctx.map_host(host, port, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    Ok(format!("http://{host}:{port}"))
}

/// GETs `url` on the manager `m`.
fn get(ctx: &Ctx, m: &NetworkAccessManager, url: &str) -> Result<Fetched, String> {
    Ok(ctx.drain(m.load(build(ResourceRequest::get(url))?)))
}

fn load(ctx: &Ctx, m: &NetworkAccessManager, req: RequestBuilder) -> Result<Fetched, String> {
    Ok(ctx.drain(m.load(build(req)?)))
}

/// Sets `cookies` on the origin through `/cookies/set`, expecting a 200.
fn set(ctx: &mut Ctx, cookies: &[&str]) -> Result<(), String> {
    let f = ctx.get(&set_path(cookies, None))?;
    expect_status(&f.trace, 200)
}

/// The Cookie header values the origin received with its requests, in order.
fn cookie_headers(ctx: &mut Ctx) -> Result<Vec<Vec<String>>, String> {
    Ok(ctx
        .origin()?
        .requests()
        .iter()
        .map(|r| {
            r.header_values("cookie")
                .into_iter()
                .map(str::to_owned)
                .collect()
        })
        .collect())
}

fn set_then_sent(ctx: &mut Ctx) -> CaseResult {
    set(ctx, &["a=1", "b=two; Path=/"])?;
    let f = ctx.get("/cookies")?;
    ensure_eq!(pairs(&f)?, p(&[("a", "1"), ("b", "two")]));
    // The first request had nothing to send; the second sent one header.
    let sent = cookie_headers(ctx)?;
    ensure_eq!(sent, vec![vec![], vec!["a=1; b=two".to_owned()]]);
    Ok(f.trace)
}

fn same_name_replaced(ctx: &mut Ctx) -> CaseResult {
    set(ctx, &["a=1", "keep=x"])?;
    set(ctx, &["a=2"])?;
    let f = ctx.get("/cookies")?;
    ensure_eq!(pairs(&f)?, p(&[("a", "2"), ("keep", "x")]));
    Ok(f.trace)
}

fn invalid_ignored(ctx: &mut Ctx) -> CaseResult {
    let long = format!("big={}", "x".repeat(5000));
    set(ctx, &["=nameless", ";", "good=1", &long, "s=1; Secure"])?;
    let f = ctx.get("/cookies")?;
    ensure_eq!(pairs(&f)?, p(&[("good", "1")]));
    Ok(f.trace)
}

fn stored_from_redirect_hops(ctx: &mut Ctx) -> CaseResult {
    let second = set_path(&["r2=2"], Some("/cookies"));
    let first = set_path(&["r1=1"], Some(&second));
    let f = ctx.get(&first)?;
    ensure_eq!(f.trace.redirects.len(), 2);
    ensure_eq!(pairs(&f)?, p(&[("r1", "1"), ("r2", "2")]));
    // Each hop carried what the hops before it had set.
    let sent = cookie_headers(ctx)?;
    ensure_eq!(
        sent,
        vec![
            vec![],
            vec!["r1=1".to_owned()],
            vec!["r1=1; r2=2".to_owned()]
        ]
    );
    Ok(f.trace)
}

fn sent_on_redirect_hops(ctx: &mut Ctx) -> CaseResult {
    set(ctx, &["a=1; Path=/"])?;
    let f = ctx.get("/redirect/2")?;
    expect_status(&f.trace, 200)?;
    let sent = cookie_headers(ctx)?;
    ensure_eq!(sent.len(), 4);
    for hop in &sent[1..] {
        ensure_eq!(hop, &vec!["a=1".to_owned()]);
    }
    Ok(f.trace)
}

fn cross_origin_redirect(ctx: &mut Ctx) -> CaseResult {
    let other = ctx.other_url("/cookies")?;
    let other_set = ctx.other_url(&set_path(&["o=other"], None))?;
    let origin_set = ctx.origin_url(&set_path(&["a=origin; Path=/"], None))?;
    let m = ctx.manager()?;
    expect_status(&get(ctx, &m, &origin_set)?.trace, 200)?;
    expect_status(&get(ctx, &m, &other_set)?.trace, 200)?;
    let start = ctx.origin_url(&format!("/redirect-to?url={}", query_value(&other)))?;
    let f = get(ctx, &m, &start)?;
    ensure_eq!(f.trace.redirects.len(), 1);
    // The hop to the other host carries its cookies, not the origin's.
    ensure_eq!(pairs(&f)?, p(&[("o", "other")]));
    let to_origin = cookie_headers(ctx)?;
    ensure_eq!(to_origin.last(), Some(&vec!["a=origin".to_owned()]));
    Ok(f.trace)
}

fn set_by_other_origin_hop(ctx: &mut Ctx) -> CaseResult {
    let other_set = ctx.other_url(&set_path(&["o=2"], Some("/cookies")))?;
    let start = ctx.origin_url(&set_path(&["a=1"], Some(&other_set)))?;
    let origin = ctx.origin_url("/cookies/x")?;
    let m = ctx.manager()?;
    let f = get(ctx, &m, &start)?;
    ensure_eq!(f.trace.redirects.len(), 2);
    ensure_eq!(pairs(&f)?, p(&[("o", "2")]));
    // The origin's own page sees only its cookie.
    let f = get(ctx, &m, &origin)?;
    ensure_eq!(pairs(&f)?, p(&[("a", "1")]));
    Ok(f.trace)
}

fn path_attribute(ctx: &mut Ctx) -> CaseResult {
    set(ctx, &["in=1; Path=/cookies/in", "root=1; Path=/"])?;
    let f = ctx.get("/cookies/inside")?;
    ensure_eq!(pairs(&f)?, p(&[("root", "1")]));
    let f = ctx.get("/cookies/out")?;
    ensure_eq!(pairs(&f)?, p(&[("root", "1")]));
    let f = ctx.get("/cookies/in/deeper")?;
    ensure_eq!(pairs(&f)?, p(&[("in", "1"), ("root", "1")]));
    Ok(f.trace)
}

fn default_path(ctx: &mut Ctx) -> CaseResult {
    // Set from /cookies/set without Path: the default path is /cookies.
    set(ctx, &["d=1"])?;
    let echo = ctx.get("/echo")?;
    expect_status(&echo.trace, 200)?;
    let headers = echo.json()?["headers"].clone();
    ensure!(
        !headers.to_string().contains("\"cookie\""),
        "/echo was sent a cookie: {headers}"
    );
    let f = ctx.get("/cookies/anything")?;
    ensure_eq!(pairs(&f)?, p(&[("d", "1")]));
    Ok(f.trace)
}

fn longer_paths_first(ctx: &mut Ctx) -> CaseResult {
    set(
        ctx,
        &[
            "root=1; Path=/",
            "deep=3; Path=/cookies/a/b",
            "mid=2; Path=/cookies/a",
        ],
    )?;
    let f = ctx.get("/cookies/a/b/c")?;
    ensure_eq!(pairs(&f)?, p(&[("deep", "3"), ("mid", "2"), ("root", "1")]));
    Ok(f.trace)
}

fn domain_covers_subdomains(ctx: &mut Ctx) -> CaseResult {
    let a = alias(ctx, "a.site.test")?;
    let b = alias(ctx, "b.site.test")?;
    let apex = alias(ctx, "site.test")?;
    let other = alias(ctx, OTHER_HOST)?;
    let m = ctx.manager()?;
    let f = get(
        ctx,
        &m,
        &format!("{a}{}", set_path(&["d=1; Domain=site.test; Path=/"], None)),
    )?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(
        pairs(&get(ctx, &m, &format!("{apex}/cookies"))?)?,
        p(&[("d", "1")])
    );
    ensure_eq!(pairs(&get(ctx, &m, &format!("{other}/cookies"))?)?, p(&[]));
    let f = get(ctx, &m, &format!("{b}/cookies"))?;
    ensure_eq!(pairs(&f)?, p(&[("d", "1")]));
    Ok(f.trace)
}

fn host_only(ctx: &mut Ctx) -> CaseResult {
    let apex = alias(ctx, "site.test")?;
    let sub = alias(ctx, "sub.site.test")?;
    let m = ctx.manager()?;
    let f = get(
        ctx,
        &m,
        &format!("{apex}{}", set_path(&["h=1; Path=/"], None)),
    )?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(
        pairs(&get(ctx, &m, &format!("{apex}/cookies"))?)?,
        p(&[("h", "1")])
    );
    let f = get(ctx, &m, &format!("{sub}/cookies"))?;
    ensure_eq!(pairs(&f)?, p(&[]));
    Ok(f.trace)
}

fn foreign_domain_refused(ctx: &mut Ctx) -> CaseResult {
    let a = alias(ctx, "a.site.test")?;
    let other = alias(ctx, OTHER_HOST)?;
    let m = ctx.manager()?;
    let f = get(
        ctx,
        &m,
        &format!(
            "{a}{}",
            set_path(
                &[
                    "x=1; Domain=other.test; Path=/",
                    "y=1; Domain=b.site.test; Path=/"
                ],
                None
            )
        ),
    )?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(pairs(&get(ctx, &m, &format!("{a}/cookies"))?)?, p(&[]));
    let f = get(ctx, &m, &format!("{other}/cookies"))?;
    ensure_eq!(pairs(&f)?, p(&[]));
    Ok(f.trace)
}

fn public_suffix_refused(ctx: &mut Ctx) -> CaseResult {
    let www = alias(ctx, "www.example.co.uk")?;
    let sibling = alias(ctx, "shop.example.co.uk")?;
    let stranger = alias(ctx, "stranger.co.uk")?;
    let m = ctx.manager()?;
    let cookies = [
        "ps=1; Domain=co.uk; Path=/",
        "tld=1; Domain=uk; Path=/",
        "ok=1; Domain=example.co.uk; Path=/",
    ];
    let f = get(ctx, &m, &format!("{www}{}", set_path(&cookies, None)))?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(
        pairs(&get(ctx, &m, &format!("{stranger}/cookies"))?)?,
        p(&[])
    );
    let f = get(ctx, &m, &format!("{sibling}/cookies"))?;
    ensure_eq!(pairs(&f)?, p(&[("ok", "1")]));
    Ok(f.trace)
}

/// Stores `cookies` in the manager's jar as if received from `url`.
fn put(m: &NetworkAccessManager, url: &str, cookies: &[&str]) -> Result<(), String> {
    let url = Url::parse(url).map_err(|e| e.to_string())?;
    let values: Vec<HeaderValue> = cookies
        .iter()
        .map(|c| c.parse().map_err(|_| format!("bad cookie {c:?}")))
        .collect::<Result<_, _>>()?;
    m.cookie_jar().set_cookies(&mut values.iter(), &url);
    Ok(())
}

fn secure_not_sent_over_http(ctx: &mut Ctx) -> CaseResult {
    let port = ctx.origin()?.port();
    let m = ctx.manager()?;
    // As if an https page of the same host had set them.
    put(
        &m,
        &format!("https://{ORIGIN_HOST}:{port}/"),
        &["sec=1; Secure; Path=/", "plain=1; Path=/"],
    )?;
    let f = get(ctx, &m, &ctx_url(port, "/cookies"))?;
    ensure_eq!(pairs(&f)?, p(&[("plain", "1")]));
    Ok(f.trace)
}

fn ctx_url(port: u16, path: &str) -> String {
    format!("http://{ORIGIN_HOST}:{port}{path}")
}

fn secure_from_http_refused(ctx: &mut Ctx) -> CaseResult {
    set(
        ctx,
        &[
            "sec=1; Secure; Path=/",
            "__Secure-x=1; Path=/",
            "__Host-y=1; Path=/",
            "plain=1; Path=/",
        ],
    )?;
    let f = ctx.get("/cookies")?;
    ensure_eq!(pairs(&f)?, p(&[("plain", "1")]));
    Ok(f.trace)
}

fn max_age_zero_deletes(ctx: &mut Ctx) -> CaseResult {
    set(ctx, &["a=1; Path=/", "b=1; Path=/"])?;
    set(ctx, &["a=; Max-Age=0; Path=/"])?;
    let f = ctx.get("/cookies")?;
    ensure_eq!(pairs(&f)?, p(&[("b", "1")]));
    Ok(f.trace)
}

fn expires_past_deletes(ctx: &mut Ctx) -> CaseResult {
    set(ctx, &["a=1; Path=/", "b=1; Path=/"])?;
    set(
        ctx,
        &[
            "a=1; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            "never=1; Path=/; Expires=Sun, 06 Nov 1994 08:49:37 GMT",
        ],
    )?;
    let f = ctx.get("/cookies")?;
    ensure_eq!(pairs(&f)?, p(&[("b", "1")]));
    Ok(f.trace)
}

fn max_age_expires(ctx: &mut Ctx) -> CaseResult {
    set(
        ctx,
        &["brief=1; Max-Age=1; Path=/", "long=1; Max-Age=3600; Path=/"],
    )?;
    let f = ctx.get("/cookies")?;
    ensure_eq!(pairs(&f)?, p(&[("brief", "1"), ("long", "1")]));
    std::thread::sleep(Duration::from_millis(1500));
    let f = ctx.get("/cookies")?;
    ensure_eq!(pairs(&f)?, p(&[("long", "1")]));
    Ok(f.trace)
}

fn disallowed_not_sent(ctx: &mut Ctx) -> CaseResult {
    set(ctx, &["a=1; Path=/"])?;
    let m = ctx.manager()?;
    let url = ctx.origin_url("/redirect-to?url=/cookies")?;
    let f = load(ctx, &m, ResourceRequest::get(url).allow_cookies(false))?;
    ensure_eq!(pairs(&f)?, p(&[]));
    let sent = cookie_headers(ctx)?;
    ensure_eq!(sent[1..].to_vec(), vec![Vec::<String>::new(); 2]);
    Ok(f.trace)
}

fn disallowed_not_stored(ctx: &mut Ctx) -> CaseResult {
    let second = set_path(&["hop=2; Path=/"], Some("/cookies"));
    let url = ctx.origin_url(&set_path(&["first=1; Path=/"], Some(&second)))?;
    let m = ctx.manager()?;
    let f = load(ctx, &m, ResourceRequest::get(url).allow_cookies(false))?;
    ensure_eq!(f.trace.redirects.len(), 2);
    ensure_eq!(pairs(&f)?, p(&[]));
    let f = ctx.get("/cookies")?;
    ensure_eq!(pairs(&f)?, p(&[]));
    Ok(f.trace)
}

fn application_header_kept(ctx: &mut Ctx) -> CaseResult {
    set(ctx, &["jar=1; Path=/"])?;
    let url = ctx.origin_url("/cookies")?;
    let f = ctx.fetch(build(ResourceRequest::get(url).header("cookie", "mine=1"))?)?;
    ensure_eq!(pairs(&f)?, p(&[("mine", "1")]));
    Ok(f.trace)
}

/// A fresh directory for this run's jar file.
fn temp_dir(ctx: &Ctx, name: &str) -> Result<std::path::PathBuf, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "rh-{name}-{}-{}-{nanos}",
        ctx.backend(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Removes a directory when dropped, so a failing case leaves nothing behind.
pub(super) struct TempDir(pub(super) std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn jar_dir(ctx: &Ctx, name: &str) -> Result<TempDir, String> {
    temp_dir(ctx, name).map(TempDir)
}

fn persist_across_restart(ctx: &mut Ctx) -> CaseResult {
    let dir = jar_dir(ctx, "jar")?;
    let path = dir.0.join("cookies.json");
    let set_url = ctx.origin_url(&set_path(
        &["kept=1; Max-Age=3600; Path=/", "session=1; Path=/"],
        None,
    ))?;
    let show = ctx.origin_url("/cookies")?;
    {
        let jar = Arc::new(PersistentCookieJar::open(&path).map_err(|e| e.to_string())?);
        let m = ctx.manager_with(|b| Ok(b.cookie_jar(jar.clone())))?;
        expect_status(&get(ctx, &m, &set_url)?.trace, 200)?;
        ensure_eq!(
            pairs(&get(ctx, &m, &show)?)?,
            p(&[("kept", "1"), ("session", "1")])
        );
    }
    ensure!(path.exists(), "the jar file was not written");
    // A new manager, as after a restart, with the same file.
    let jar = Arc::new(PersistentCookieJar::open(&path).map_err(|e| e.to_string())?);
    let m = ctx.manager_with(|b| Ok(b.cookie_jar(jar.clone())))?;
    let f = get(ctx, &m, &show)?;
    // The session cookie ended with the first manager's session.
    ensure_eq!(pairs(&f)?, p(&[("kept", "1")]));
    Ok(f.trace)
}
