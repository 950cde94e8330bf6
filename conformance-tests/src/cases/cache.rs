//! The HTTP cache: WebCore's four cache policies, RFC 9111 freshness and
//! validation, Vary, no-store, private against shared, eviction, damaged
//! disk entries and bodies cut by the network. Each case counts the
//! origin's requests, so a response said to come from the cache is proven
//! not to have touched the network.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use resource_handle::{
    CachePolicy, DiskCache, MemoryCache, NetworkAccessManager, NetworkCache, RequestBuilder,
    ResourceRequest, Url,
};

use super::{build, expect_error, expect_status, CaseResult, Ctx, Fetched};

cases!("cache";
    "cache.fresh-max-age-hit" => fresh_max_age,
    "cache.fresh-expires-hit" => fresh_expires,
    "cache.heuristic-freshness-from-last-modified" => heuristic,
    "cache.expired-revalidates-with-if-none-match" => expired_if_none_match,
    "cache.stale-revalidates-with-if-modified-since" => stale_if_modified_since,
    "cache.weak-etag-revalidates" => weak_etag,
    "cache.304-updates-stored-headers" => not_modified_updates_headers,
    "cache.200-on-revalidation-replaces-entry" => revalidation_replaced,
    "cache.request-no-cache-revalidates" => request_no_cache,
    "cache.vary-same-value-hit" => vary_hit,
    "cache.vary-other-value-miss" => vary_miss,
    "cache.other-credentials-miss" => other_credentials,
    "cache.no-store-not-stored" => no_store,
    "cache.private-stored-in-private-cache" => private_in_private,
    "cache.private-not-stored-in-shared-cache" => private_in_shared,
    "cache.policy-reload-ignoring-cache-data" => policy_reload,
    "cache.policy-return-cache-data-else-load-stale-entry" => policy_else_load_stale,
    "cache.policy-return-cache-data-else-load-nothing-cached" => policy_else_load_miss,
    "cache.policy-return-cache-data-dont-load-stale-entry" => policy_dont_load_stale,
    "cache.policy-return-cache-data-dont-load-nothing-cached" => policy_dont_load_miss,
    "cache.post-invalidates-entry" => post_invalidates,
    "cache.body-cut-by-network-not-stored" => cut_body,
    "cache.entry-past-the-entry-bound-not-stored" => too_large,
    "cache.memory-evicts-least-recently-used" => memory_eviction,
    "cache.disk-evicts-by-size" => disk_eviction,
    "cache.disk-corrupt-entry-is-a-miss" => disk_corrupt,
    "cache.disk-truncated-entry-is-a-miss" => disk_truncated,
    "cache.disk-unknown-format-is-a-miss" => disk_unknown_format,
    "cache.disk-persists-across-managers" => disk_persists,
    "cache.encoded-body-decoded-from-cache" => encoded,
    "cache.memory-large-body-streams" => memory_large,
    "cache.disk-large-body-streams" => disk_large,
);

/// A directory for one disk cache, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(ctx: &Ctx) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "rh-cache-case-{}-{}-{}",
            std::process::id(),
            ctx.backend(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A manager for this backend with `cache`, the origin started first.
fn with_cache(ctx: &mut Ctx, cache: Arc<dyn NetworkCache>) -> Result<NetworkAccessManager, String> {
    ctx.origin()?;
    ctx.manager_with(move |b| Ok(b.cache(cache)))
}

/// A manager with a fresh memory cache of 1 MiB.
fn memory(ctx: &mut Ctx) -> Result<NetworkAccessManager, String> {
    with_cache(ctx, Arc::new(MemoryCache::new(1 << 20)))
}

/// A disk cache in `dir`, as a manager of this backend sees it.
fn disk(ctx: &mut Ctx, dir: &TempDir, max: u64) -> Result<NetworkAccessManager, String> {
    let cache = DiskCache::open(&dir.0, max).map_err(|e| format!("disk cache: {e}"))?;
    with_cache(ctx, Arc::new(cache.with_max_entry_bytes(max)))
}

/// Loads `req` on `m` to its end.
fn load(ctx: &Ctx, m: &NetworkAccessManager, req: RequestBuilder) -> Result<Fetched, String> {
    Ok(ctx.drain(m.load(build(req)?)))
}

/// GETs `url` on `m` with `policy`.
fn get(
    ctx: &Ctx,
    m: &NetworkAccessManager,
    url: &str,
    policy: CachePolicy,
) -> Result<Fetched, String> {
    load(ctx, m, ResourceRequest::get(url).cache_policy(policy))
}

/// GETs `url` on `m` by the protocol's rules.
fn fetch(ctx: &Ctx, m: &NetworkAccessManager, url: &str) -> Result<Fetched, String> {
    get(ctx, m, url, CachePolicy::UseProtocolCachePolicy)
}

/// Fails unless the load succeeded with 200 from `source`.
fn expect_source(f: &Fetched, source: &str) -> Result<(), String> {
    expect_status(&f.trace, 200)?;
    ensure!(
        f.trace.source.as_deref() == Some(source),
        "the response came from {:?}, expected {source}",
        f.trace.source
    );
    Ok(())
}

/// Fails unless the origin answered `path` exactly `n` times.
fn expect_count(ctx: &mut Ctx, path: &str, n: usize) -> Result<(), String> {
    let seen = ctx.origin()?.count(path);
    ensure!(
        seen == n,
        "the origin received {seen} requests for {path}, expected {n}"
    );
    Ok(())
}

/// The values of `name` in the origin's last request.
fn sent(ctx: &mut Ctx, name: &str) -> Result<Vec<String>, String> {
    let last = ctx
        .origin()?
        .last_request()
        .ok_or("the origin received no request")?;
    Ok(last
        .header_values(name)
        .into_iter()
        .map(str::to_owned)
        .collect())
}

/// The value of response header `name` in a trace.
fn header<'a>(f: &'a Fetched, name: &str) -> Option<&'a str> {
    f.trace
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn text(f: &Fetched) -> String {
    String::from_utf8_lossy(&f.body).into_owned()
}

/// Two GETs where the second must be a hit that never reaches the origin.
fn hit_twice(ctx: &mut Ctx, path: &str, query: &str) -> CaseResult {
    let m = memory(ctx)?;
    let url = ctx.origin_url(&format!("{path}?{query}"))?;
    let first = fetch(ctx, &m, &url)?;
    expect_source(&first, "network")?;
    let second = fetch(ctx, &m, &url)?;
    expect_source(&second, "cache")?;
    expect_count(ctx, path, 1)?;
    ensure_eq!(second.body, first.body);
    Ok(second.trace)
}

fn fresh_max_age(ctx: &mut Ctx) -> CaseResult {
    let t = hit_twice(ctx, "/cache/fresh", "cc=max-age%3D60")?;
    ensure!(
        t.headers
            .iter()
            .any(|(n, v)| n == "cache-control" && v == "max-age=60"),
        "the cached response lost its headers: {:?}",
        t.headers
    );
    Ok(t)
}

fn fresh_expires(ctx: &mut Ctx) -> CaseResult {
    hit_twice(
        ctx,
        "/cache/expires",
        "expires=Fri%2C+01+Jan+2100+00%3A00%3A00+GMT",
    )
}

fn heuristic(ctx: &mut Ctx) -> CaseResult {
    // No Cache-Control, no Expires: fresh for a tenth of the time since the
    // resource last changed (January 2023), as RFC 9111 §4.2.2 allows.
    hit_twice(ctx, "/cache/heuristic", "lm=1")
}

/// A first load, then a second that must revalidate with `header` = `value`
/// and be confirmed by a 304.
fn revalidated(
    ctx: &mut Ctx,
    path: &str,
    query: &str,
    wait: Duration,
    header: &str,
    value: &str,
) -> CaseResult {
    let m = memory(ctx)?;
    let url = ctx.origin_url(&format!("{path}?{query}"))?;
    let first = fetch(ctx, &m, &url)?;
    expect_source(&first, "network")?;
    std::thread::sleep(wait);
    let second = fetch(ctx, &m, &url)?;
    ensure_eq!(sent(ctx, header)?, vec![value.to_owned()]);
    expect_source(&second, "revalidated")?;
    expect_count(ctx, path, 2)?;
    ensure_eq!(text(&second), text(&first));
    Ok(second.trace)
}

fn expired_if_none_match(ctx: &mut Ctx) -> CaseResult {
    // Fresh for one second, then stale: the ETag goes back to the origin.
    let t = revalidated(
        ctx,
        "/cache/expiring",
        "cc=max-age%3D1&etag=strong",
        Duration::from_millis(1100),
        "if-none-match",
        "\"expiring-v1\"",
    )?;
    ensure!(
        sent(ctx, "if-modified-since")?.is_empty(),
        "If-Modified-Since was sent without a Last-Modified"
    );
    Ok(t)
}

fn stale_if_modified_since(ctx: &mut Ctx) -> CaseResult {
    let t = revalidated(
        ctx,
        "/cache/modified",
        "cc=no-cache&lm=1",
        Duration::ZERO,
        "if-modified-since",
        "Mon, 02 Jan 2023 00:00:00 GMT",
    )?;
    ensure!(
        sent(ctx, "if-none-match")?.is_empty(),
        "If-None-Match was sent without an ETag"
    );
    Ok(t)
}

fn weak_etag(ctx: &mut Ctx) -> CaseResult {
    revalidated(
        ctx,
        "/cache/weak",
        "cc=max-age%3D0&etag=weak",
        Duration::ZERO,
        "if-none-match",
        "W/\"weak-v1\"",
    )
}

fn not_modified_updates_headers(ctx: &mut Ctx) -> CaseResult {
    // The 304 makes the entry fresh for a minute and adds a header.
    let m = memory(ctx)?;
    let url = ctx.origin_url("/cache/update?cc=max-age%3D0&etag=strong&cc304=max-age%3D60")?;
    let first = fetch(ctx, &m, &url)?;
    expect_source(&first, "network")?;
    ensure_eq!(header(&first, "x-revalidated"), None);
    let second = fetch(ctx, &m, &url)?;
    expect_source(&second, "revalidated")?;
    ensure_eq!(header(&second, "x-revalidated"), Some("1"));
    ensure_eq!(header(&second, "cache-control"), Some("max-age=60"));
    ensure_eq!(
        header(&second, "content-length"),
        header(&first, "content-length")
    );
    let third = fetch(ctx, &m, &url)?;
    expect_source(&third, "cache")?;
    ensure_eq!(header(&third, "x-revalidated"), Some("1"));
    expect_count(ctx, "/cache/update", 2)?;
    ensure_eq!(text(&third), "update v1\n");
    Ok(third.trace)
}

fn revalidation_replaced(ctx: &mut Ctx) -> CaseResult {
    let m = memory(ctx)?;
    let url = ctx.origin_url("/cache/replaced?cc=max-age%3D0&etag=strong")?;
    let first = fetch(ctx, &m, &url)?;
    ensure_eq!(text(&first), "replaced v1\n");
    ctx.origin()?.set_version("replaced", 2);
    let second = fetch(ctx, &m, &url)?;
    ensure_eq!(
        sent(ctx, "if-none-match")?,
        vec!["\"replaced-v1\"".to_owned()]
    );
    expect_source(&second, "network")?;
    ensure_eq!(text(&second), "replaced v2\n");
    // The new response replaced the entry: its ETag is the one sent now.
    let third = fetch(ctx, &m, &url)?;
    ensure_eq!(
        sent(ctx, "if-none-match")?,
        vec!["\"replaced-v2\"".to_owned()]
    );
    expect_source(&third, "revalidated")?;
    ensure_eq!(text(&third), "replaced v2\n");
    expect_count(ctx, "/cache/replaced", 3)?;
    Ok(third.trace)
}

fn request_no_cache(ctx: &mut Ctx) -> CaseResult {
    let m = memory(ctx)?;
    let url = ctx.origin_url("/cache/asked?cc=max-age%3D60&etag=strong")?;
    expect_source(&fetch(ctx, &m, &url)?, "network")?;
    let second = load(
        ctx,
        &m,
        ResourceRequest::get(&url).header("cache-control", "no-cache"),
    )?;
    ensure_eq!(sent(ctx, "if-none-match")?, vec!["\"asked-v1\"".to_owned()]);
    expect_source(&second, "revalidated")?;
    expect_count(ctx, "/cache/asked", 2)?;
    Ok(second.trace)
}

fn vary_hit(ctx: &mut Ctx) -> CaseResult {
    let m = memory(ctx)?;
    let url = ctx.origin_url("/cache/vary-hit?cc=max-age%3D60&vary=X-Lang")?;
    let req = || ResourceRequest::get(&url).header("x-lang", "fr");
    let first = load(ctx, &m, req())?;
    expect_source(&first, "network")?;
    let second = load(ctx, &m, req())?;
    expect_source(&second, "cache")?;
    ensure_eq!(text(&second), "vary-hit v1 x-lang=fr\n");
    expect_count(ctx, "/cache/vary-hit", 1)?;
    Ok(second.trace)
}

fn vary_miss(ctx: &mut Ctx) -> CaseResult {
    let m = memory(ctx)?;
    let url = ctx.origin_url("/cache/vary-miss?cc=max-age%3D60&vary=X-Lang")?;
    let lang = |l: &str| ResourceRequest::get(&url).header("x-lang", l);
    expect_source(&load(ctx, &m, lang("fr"))?, "network")?;
    let de = load(ctx, &m, lang("de"))?;
    expect_source(&de, "network")?;
    ensure_eq!(text(&de), "vary-miss v1 x-lang=de\n");
    // The German response replaced the French one.
    let again = load(ctx, &m, lang("de"))?;
    expect_source(&again, "cache")?;
    ensure_eq!(text(&again), "vary-miss v1 x-lang=de\n");
    expect_count(ctx, "/cache/vary-miss", 2)?;
    Ok(de.trace)
}

/// A response stored for one user's Authorization is served again to that
/// user, never to another user or to a request without credentials.
fn other_credentials(ctx: &mut Ctx) -> CaseResult {
    let m = memory(ctx)?;
    let url = ctx.origin_url("/cache/creds?cc=private%2C+max-age%3D60")?;
    let as_user =
        |token: &str| ResourceRequest::get(&url).header("authorization", format!("Bearer {token}"));
    expect_source(&load(ctx, &m, as_user("alice"))?, "network")?;
    expect_source(&load(ctx, &m, as_user("alice"))?, "cache")?;
    expect_count(ctx, "/cache/creds", 1)?;
    let bob = load(ctx, &m, as_user("bob"))?;
    expect_source(&bob, "network")?;
    let nobody = load(ctx, &m, ResourceRequest::get(&url))?;
    expect_source(&nobody, "network")?;
    expect_count(ctx, "/cache/creds", 3)?;
    Ok(bob.trace)
}

fn no_store(ctx: &mut Ctx) -> CaseResult {
    let m = memory(ctx)?;
    let url = ctx.origin_url("/cache/unstored?cc=no-store&etag=strong")?;
    expect_source(&fetch(ctx, &m, &url)?, "network")?;
    let second = fetch(ctx, &m, &url)?;
    expect_source(&second, "network")?;
    ensure!(
        sent(ctx, "if-none-match")?.is_empty(),
        "a no-store response was kept for revalidation"
    );
    expect_count(ctx, "/cache/unstored", 2)?;
    Ok(second.trace)
}

fn private_in_private(ctx: &mut Ctx) -> CaseResult {
    hit_twice(ctx, "/cache/mine", "cc=private%2C+max-age%3D60")
}

fn private_in_shared(ctx: &mut Ctx) -> CaseResult {
    ctx.origin()?;
    let cache: Arc<dyn NetworkCache> = Arc::new(MemoryCache::new(1 << 20));
    let m = ctx.manager_with(move |b| Ok(b.cache(cache).shared_cache(true)))?;
    let private = ctx.origin_url("/cache/private?cc=private%2C+max-age%3D60")?;
    expect_source(&fetch(ctx, &m, &private)?, "network")?;
    let second = fetch(ctx, &m, &private)?;
    expect_source(&second, "network")?;
    expect_count(ctx, "/cache/private", 2)?;
    // The same cache does keep a public response.
    let public = ctx.origin_url("/cache/public?cc=public%2C+max-age%3D60")?;
    expect_source(&fetch(ctx, &m, &public)?, "network")?;
    expect_source(&fetch(ctx, &m, &public)?, "cache")?;
    Ok(second.trace)
}

fn policy_reload(ctx: &mut Ctx) -> CaseResult {
    let m = memory(ctx)?;
    let url = ctx.origin_url("/cache/reload?cc=max-age%3D60&etag=strong")?;
    expect_source(&fetch(ctx, &m, &url)?, "network")?;
    ctx.origin()?.set_version("reload", 2);
    let reloaded = get(ctx, &m, &url, CachePolicy::ReloadIgnoringCacheData)?;
    expect_source(&reloaded, "network")?;
    ensure!(
        sent(ctx, "if-none-match")?.is_empty(),
        "a reload sent the cached validators"
    );
    ensure_eq!(text(&reloaded), "reload v2\n");
    // The reloaded response is the one kept.
    let after = fetch(ctx, &m, &url)?;
    expect_source(&after, "cache")?;
    ensure_eq!(text(&after), "reload v2\n");
    expect_count(ctx, "/cache/reload", 2)?;
    Ok(reloaded.trace)
}

fn policy_else_load_stale(ctx: &mut Ctx) -> CaseResult {
    let m = memory(ctx)?;
    let url = ctx.origin_url("/cache/else-stale?cc=max-age%3D0&etag=strong")?;
    expect_source(&fetch(ctx, &m, &url)?, "network")?;
    let second = get(ctx, &m, &url, CachePolicy::ReturnCacheDataElseLoad)?;
    expect_source(&second, "cache")?;
    ensure_eq!(text(&second), "else-stale v1\n");
    expect_count(ctx, "/cache/else-stale", 1)?;
    Ok(second.trace)
}

fn policy_else_load_miss(ctx: &mut Ctx) -> CaseResult {
    let m = memory(ctx)?;
    let url = ctx.origin_url("/cache/else-miss?cc=max-age%3D60")?;
    let first = get(ctx, &m, &url, CachePolicy::ReturnCacheDataElseLoad)?;
    expect_source(&first, "network")?;
    expect_count(ctx, "/cache/else-miss", 1)?;
    // What it loaded was stored.
    expect_source(&fetch(ctx, &m, &url)?, "cache")?;
    expect_count(ctx, "/cache/else-miss", 1)?;
    Ok(first.trace)
}

fn policy_dont_load_stale(ctx: &mut Ctx) -> CaseResult {
    let m = memory(ctx)?;
    let url = ctx.origin_url("/cache/dont-stale?cc=no-cache&lm=1")?;
    expect_source(&fetch(ctx, &m, &url)?, "network")?;
    let second = get(ctx, &m, &url, CachePolicy::ReturnCacheDataDontLoad)?;
    expect_source(&second, "cache")?;
    ensure_eq!(text(&second), "dont-stale v1\n");
    expect_count(ctx, "/cache/dont-stale", 1)?;
    Ok(second.trace)
}

fn policy_dont_load_miss(ctx: &mut Ctx) -> CaseResult {
    let m = memory(ctx)?;
    let url = ctx.origin_url("/cache/dont-miss?cc=max-age%3D60")?;
    let f = get(ctx, &m, &url, CachePolicy::ReturnCacheDataDontLoad)?;
    expect_error(&f.trace, "not_cached")?;
    ensure_eq!(f.trace.status, None);
    // Without any cache, nothing is cached either.
    let plain = ctx.manager()?;
    let g = get(ctx, &plain, &url, CachePolicy::ReturnCacheDataDontLoad)?;
    expect_error(&g.trace, "not_cached")?;
    expect_count(ctx, "/cache/dont-miss", 0)?;
    Ok(f.trace)
}

fn post_invalidates(ctx: &mut Ctx) -> CaseResult {
    let m = memory(ctx)?;
    let url = ctx.origin_url("/cache/posted?cc=max-age%3D60")?;
    expect_source(&fetch(ctx, &m, &url)?, "network")?;
    expect_source(&fetch(ctx, &m, &url)?, "cache")?;
    let post = load(ctx, &m, ResourceRequest::post(&url).body("new"))?;
    expect_status(&post.trace, 200)?;
    let after = fetch(ctx, &m, &url)?;
    expect_source(&after, "network")?;
    ensure_eq!(text(&after), "posted v2\n");
    expect_count(ctx, "/cache/posted", 3)?;
    Ok(after.trace)
}

fn cut_body(ctx: &mut Ctx) -> CaseResult {
    let m = memory(ctx)?;
    let url = ctx.origin_url("/cache/cut?cc=max-age%3D60&len=4000&cut=1")?;
    let first = fetch(ctx, &m, &url)?;
    expect_error(&first.trace, "body_truncated")?;
    // Had the half body been stored, this would be a hit.
    let second = fetch(ctx, &m, &url)?;
    expect_error(&second.trace, "body_truncated")?;
    ensure_eq!(second.trace.source.as_deref(), Some("network"));
    expect_count(ctx, "/cache/cut", 2)?;
    Ok(second.trace)
}

fn too_large(ctx: &mut Ctx) -> CaseResult {
    // An eighth of 16 000 bytes is the most one entry may take.
    let m = with_cache(ctx, Arc::new(MemoryCache::new(16_000)))?;
    let big = ctx.origin_url("/cache/big?cc=max-age%3D60&len=5000")?;
    expect_source(&fetch(ctx, &m, &big)?, "network")?;
    let second = fetch(ctx, &m, &big)?;
    expect_source(&second, "network")?;
    ensure_eq!(second.body.len(), 5000);
    expect_count(ctx, "/cache/big", 2)?;
    let small = ctx.origin_url("/cache/small?cc=max-age%3D60&len=500")?;
    expect_source(&fetch(ctx, &m, &small)?, "network")?;
    expect_source(&fetch(ctx, &m, &small)?, "cache")?;
    Ok(second.trace)
}

fn memory_eviction(ctx: &mut Ctx) -> CaseResult {
    // Room for three entries of about 1 800 bytes, not four.
    let cache = Arc::new(MemoryCache::new(6000).with_max_entry_bytes(6000));
    let m = with_cache(ctx, cache.clone())?;
    let mut urls = Vec::new();
    for id in ["a", "b", "c", "d"] {
        urls.push(ctx.origin_url(&format!("/cache/lru-{id}?cc=max-age%3D60&len=1500"))?);
    }
    for url in &urls[..3] {
        expect_source(&fetch(ctx, &m, url)?, "network")?;
    }
    // a is used again, so b is the least recently used when d arrives.
    expect_source(&fetch(ctx, &m, &urls[0])?, "cache")?;
    expect_source(&fetch(ctx, &m, &urls[3])?, "network")?;
    ensure!(
        cache.size() <= 6000,
        "the cache holds {} bytes",
        cache.size()
    );
    expect_source(&fetch(ctx, &m, &urls[0])?, "cache")?;
    expect_source(&fetch(ctx, &m, &urls[3])?, "cache")?;
    let b = fetch(ctx, &m, &urls[1])?;
    expect_source(&b, "network")?;
    expect_count(ctx, "/cache/lru-a", 1)?;
    expect_count(ctx, "/cache/lru-b", 2)?;
    Ok(b.trace)
}

/// The bytes of every entry file in `dir`.
fn disk_usage(dir: &TempDir) -> u64 {
    std::fs::read_dir(&dir.0)
        .map(|l| {
            l.flatten()
                .filter(|i| i.file_name().to_string_lossy().ends_with(".entry"))
                .filter_map(|i| i.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn disk_eviction(ctx: &mut Ctx) -> CaseResult {
    // Room for two entries of about 3 400 bytes, not three.
    let dir = TempDir::new(ctx);
    let m = disk(ctx, &dir, 8000)?;
    let mut urls = Vec::new();
    for id in ["x", "y", "z"] {
        urls.push(ctx.origin_url(&format!("/cache/disk-{id}?cc=max-age%3D60&len=3000"))?);
    }
    for url in &urls {
        expect_source(&fetch(ctx, &m, url)?, "network")?;
        let used = disk_usage(&dir);
        ensure!(used <= 8000, "the directory holds {used} bytes");
    }
    expect_source(&fetch(ctx, &m, &urls[2])?, "cache")?;
    expect_source(&fetch(ctx, &m, &urls[1])?, "cache")?;
    let evicted = fetch(ctx, &m, &urls[0])?;
    expect_source(&evicted, "network")?;
    expect_count(ctx, "/cache/disk-x", 2)?;
    Ok(evicted.trace)
}

/// Stores `path` in a disk cache, damages its entry file with `hurt`, and
/// checks the next load is a miss that loads the same body again.
fn damaged(ctx: &mut Ctx, path: &str, hurt: fn(&mut Vec<u8>)) -> CaseResult {
    let dir = TempDir::new(ctx);
    let cache = Arc::new(DiskCache::open(&dir.0, 1 << 20).map_err(|e| format!("disk cache: {e}"))?);
    let m = with_cache(ctx, cache.clone())?;
    let url = ctx.origin_url(&format!("{path}?cc=max-age%3D60&len=3000"))?;
    let first = fetch(ctx, &m, &url)?;
    expect_source(&first, "network")?;
    let file = cache.entry_path(&Url::parse(&url).map_err(|e| e.to_string())?);
    let mut bytes = std::fs::read(&file).map_err(|e| format!("entry file: {e}"))?;
    hurt(&mut bytes);
    std::fs::write(&file, &bytes).map_err(|e| format!("entry file: {e}"))?;
    let second = fetch(ctx, &m, &url)?;
    expect_source(&second, "network")?;
    ensure_eq!(second.body, first.body);
    expect_count(ctx, path, 2)?;
    // The load stored a good entry again.
    let third = fetch(ctx, &m, &url)?;
    expect_source(&third, "cache")?;
    ensure_eq!(third.body, first.body);
    Ok(second.trace)
}

fn disk_corrupt(ctx: &mut Ctx) -> CaseResult {
    damaged(ctx, "/cache/corrupt", |b| {
        // A byte in the middle of the body.
        let i = b.len() - 1500;
        b[i] ^= 0x20;
    })
}

fn disk_truncated(ctx: &mut Ctx) -> CaseResult {
    damaged(ctx, "/cache/truncated", |b| b.truncate(b.len() / 2))
}

fn disk_unknown_format(ctx: &mut Ctx) -> CaseResult {
    // The format number follows the 8-byte magic.
    damaged(ctx, "/cache/format", |b| b[8] = b[8].wrapping_add(1))
}

fn disk_persists(ctx: &mut Ctx) -> CaseResult {
    let dir = TempDir::new(ctx);
    let url = ctx.origin_url("/cache/kept?cc=max-age%3D600&etag=strong")?;
    {
        let m = disk(ctx, &dir, 1 << 20)?;
        expect_source(&fetch(ctx, &m, &url)?, "network")?;
    }
    // A new manager over a new cache on the same directory: a restart.
    let m = disk(ctx, &dir, 1 << 20)?;
    let again = fetch(ctx, &m, &url)?;
    expect_source(&again, "cache")?;
    ensure_eq!(text(&again), "kept v1\n");
    expect_count(ctx, "/cache/kept", 1)?;
    Ok(again.trace)
}

fn encoded(ctx: &mut Ctx) -> CaseResult {
    // The cache keeps the body as sent (gzip) and decodes it on every hit.
    let m = memory(ctx)?;
    let url = ctx.origin_url("/cache/gz?cc=max-age%3D60&len=20000&enc=gzip")?;
    let first = fetch(ctx, &m, &url)?;
    expect_source(&first, "network")?;
    ensure_eq!(first.body.len(), 20000);
    let second = fetch(ctx, &m, &url)?;
    expect_source(&second, "cache")?;
    ensure_eq!(header(&second, "content-encoding"), Some("gzip"));
    ensure!(
        second.body == first.body,
        "the cached body decodes differently"
    );
    expect_count(ctx, "/cache/gz", 1)?;
    Ok(second.trace)
}

/// A body of 3 MiB, more than a handle buffers, stored and streamed back.
fn large(ctx: &mut Ctx, m: &NetworkAccessManager, path: &str) -> CaseResult {
    let url = ctx.origin_url(&format!("{path}?cc=max-age%3D60&len=3145728"))?;
    let first = fetch(ctx, m, &url)?;
    expect_source(&first, "network")?;
    let mut h = m.load(build(ResourceRequest::get(&url))?);
    let resp = h.response_blocking().map_err(|e| e.to_string())?;
    ensure_eq!(resp.source().as_str(), "cache");
    // Taken slowly, so the cache must wait for the application.
    let mut body = Vec::new();
    while let Some(c) = super::next_chunk(&mut h)? {
        body.extend_from_slice(&c);
        if body.len() < 1 << 20 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    ensure!(
        body == first.body,
        "the cached body differs ({} bytes)",
        body.len()
    );
    let again = fetch(ctx, m, &url)?;
    expect_source(&again, "cache")?;
    ensure_eq!(again.trace.body_sha256, first.trace.body_sha256);
    expect_count(ctx, path, 1)?;
    Ok(again.trace)
}

fn memory_large(ctx: &mut Ctx) -> CaseResult {
    let cache = MemoryCache::new(64 << 20).with_max_entry_bytes(64 << 20);
    let m = with_cache(ctx, Arc::new(cache))?;
    large(ctx, &m, "/cache/big-memory")
}

fn disk_large(ctx: &mut Ctx) -> CaseResult {
    let dir = TempDir::new(ctx);
    let m = disk(ctx, &dir, 64 << 20)?;
    large(ctx, &m, "/cache/big-disk")
}
