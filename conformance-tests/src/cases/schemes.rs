//! Schemes beyond HTTP, served by the manager the same whichever backend is
//! compiled: `data:` (RFC 2397), `file:` and application-registered schemes.
//!
//! These loads never reach a backend, so each case also makes one real HTTP
//! load over the backend and compares it with the local one: a case that
//! passes has used the backend over a real socket.

use std::path::{Path, PathBuf};

use resource_handle::{
    http, Bytes, Exchange, ExchangeSink, NetworkAccessManager, ResourceRequest, ResponseHead,
    SchemeHandler, Trace,
};

use super::{build, expect_error, expect_status, sha256, CaseResult, Ctx, Fetched};
use crate::servers::body_pattern;

cases!("schemes";
    "schemes.data-base64" => data_base64,
    "schemes.data-percent-encoded" => data_percent,
    "schemes.data-charset" => data_charset,
    "schemes.data-default-mime" => data_default_mime,
    "schemes.data-malformed" => data_malformed,
    "schemes.data-head" => data_head,
    "schemes.data-not-queued-behind-http" => data_not_queued,
    "schemes.file-streamed" => file_streamed,
    "schemes.file-mime-html" => file_html,
    "schemes.file-mime-json" => file_json,
    "schemes.file-mime-png" => file_png,
    "schemes.file-missing" => file_missing,
    "schemes.file-head" => file_head,
    "schemes.custom-handler-from-memory" => custom_memory,
    "schemes.custom-handler-not-found" => custom_not_found,
    "schemes.custom-handler-streams-from-a-thread" => custom_thread,
    "schemes.unregistered-fails-at-build" => unregistered,
);

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The real HTTP load every case makes: `/bytes/N` over the backend.
fn http_bytes(ctx: &mut Ctx, n: usize) -> Result<Fetched, String> {
    let f = ctx.get(&format!("/bytes/{n}"))?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.source.as_deref(), Some("network"));
    Ok(f)
}

/// The response of a finished local load.
fn response_of(
    ctx: &mut Ctx,
    mgr: Option<&NetworkAccessManager>,
    url: &str,
    method: &str,
) -> Result<(Fetched, resource_handle::ResourceResponse), String> {
    let req = build(ResourceRequest::builder(method, url))?;
    let mut h = match mgr {
        Some(m) => m.load(req),
        None => ctx.start(req)?,
    };
    let resp = h
        .response_blocking()
        .map_err(|e| format!("{url}: no response: {e}"))?
        .clone();
    // The events so far were the response only; the recorder sees it again.
    let mut rec = resource_handle::Recorder::new(ctx.backend().name(), &h);
    rec.observe(&resource_handle::Event::Response(resp.clone()));
    let mut body = Vec::new();
    while let Some(ev) = h.next_event_blocking() {
        if let resource_handle::Event::Data(d) = &ev {
            body.extend_from_slice(d);
        }
        rec.observe(&ev);
    }
    Ok((
        Fetched {
            trace: rec.finish(),
            body,
        },
        resp,
    ))
}

fn data_base64(ctx: &mut Ctx) -> CaseResult {
    let n = 3000;
    let url = format!(
        "data:application/octet-stream;base64,{}",
        base64(&body_pattern(n))
    );
    let local = ctx.fetch(build(ResourceRequest::get(&url))?)?;
    expect_status(&local.trace, 200)?;
    ensure_eq!(local.trace.source.as_deref(), Some("data"));
    let net = http_bytes(ctx, n)?;
    ensure_eq!(local.trace.body_sha256, net.trace.body_sha256);
    ensure_eq!(
        local.trace.headers,
        vec![
            (
                "content-type".to_owned(),
                "application/octet-stream".to_owned()
            ),
            ("content-length".to_owned(), n.to_string()),
        ]
    );
    Ok(local.trace)
}

/// A data: url with `body`, and the same body posted to `/echo` over the backend.
fn data_text(
    ctx: &mut Ctx,
    url: &str,
    body: &str,
    mime: &str,
    charset: Option<&str>,
) -> CaseResult {
    let (local, resp) = response_of(ctx, None, url, "GET")?;
    expect_status(&local.trace, 200)?;
    ensure_eq!(String::from_utf8_lossy(&local.body), body);
    ensure_eq!(resp.mime_type(), Some(mime.to_owned()));
    ensure_eq!(resp.text_encoding(), charset.map(str::to_owned));
    ensure_eq!(resp.expected_content_length(), Some(body.len() as u64));
    let echo_url = ctx.origin_url("/echo")?;
    let net = ctx.fetch(build(
        ResourceRequest::post(echo_url).body(local.body.clone()),
    )?)?;
    expect_status(&net.trace, 200)?;
    ensure_eq!(net.json()?["body"], body);
    Ok(local.trace)
}

fn data_percent(ctx: &mut Ctx) -> CaseResult {
    data_text(
        ctx,
        "data:text/plain,Hello%2C%20World%21%0A",
        "Hello, World!\n",
        "text/plain",
        None,
    )
}

fn data_charset(ctx: &mut Ctx) -> CaseResult {
    data_text(
        ctx,
        "data:text/html;charset=utf-8,%3Ch1%3E%E2%82%AC%3C%2Fh1%3E",
        "<h1>€</h1>",
        "text/html",
        Some("utf-8"),
    )
}

fn data_default_mime(ctx: &mut Ctx) -> CaseResult {
    // RFC 2397 §2: no media type means text/plain;charset=US-ASCII.
    let t = data_text(ctx, "data:,plain", "plain", "text/plain", Some("us-ascii"))?;
    ensure!(
        t.headers
            .iter()
            .any(|(n, v)| n == "content-type" && v == "text/plain;charset=US-ASCII"),
        "content-type: {:?}",
        t.headers
    );
    Ok(t)
}

fn data_malformed(ctx: &mut Ctx) -> CaseResult {
    // Not valid base64: the load fails with invalid_request, before or after building.
    let url = "data:text/plain;base64,SGV$";
    let t = match ResourceRequest::get(url).build() {
        Ok(req) => ctx.fetch(req)?.trace,
        Err(e) => Trace::for_error(ctx.backend().name(), url, &e),
    };
    expect_error(&t, "invalid_request")?;
    ensure_eq!(t.events, vec!["failed"]);
    ensure_eq!(t.status, None);
    http_bytes(ctx, 10)?;
    Ok(t)
}

fn data_head(ctx: &mut Ctx) -> CaseResult {
    let (local, resp) = response_of(ctx, None, "data:text/plain,abcdef", "HEAD")?;
    expect_status(&local.trace, 200)?;
    ensure_eq!(local.trace.body_bytes, 0);
    ensure_eq!(local.trace.events, vec!["response", "finished"]);
    ensure_eq!(resp.expected_content_length(), Some(6));
    http_bytes(ctx, 6)?;
    Ok(local.trace)
}

fn data_not_queued(ctx: &mut Ctx) -> CaseResult {
    // With the only HTTP slot held, a data: load still completes at once.
    let gated = ctx.origin_url("/gated/local")?;
    let mgr = ctx.manager_with(|b| Ok(b.max_connections_per_host(1).max_loads_total(1)))?;
    let blocker = mgr.load(build(ResourceRequest::get(gated))?);
    let queued = mgr.load(build(ResourceRequest::get(ctx.origin_url("/bytes/5")?))?);
    ensure_eq!(mgr.queued_loads(), 1);
    let local = ctx.drain(mgr.load(build(ResourceRequest::get("data:,not%20queued"))?));
    expect_status(&local.trace, 200)?;
    ensure_eq!(local.body, b"not queued");
    ctx.origin()?.open_gate("local");
    expect_status(&ctx.drain(blocker).trace, 200)?;
    expect_status(&ctx.drain(queued).trace, 200)?;
    Ok(local.trace)
}

/// A directory of its own for one case run, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(ctx: &Ctx) -> Result<TempDir, String> {
        let dir = std::env::temp_dir().join(format!(
            "rh-schemes-{}-{}-{:?}",
            std::process::id(),
            ctx.backend().name(),
            std::thread::current().id()
        ));
        let dir = PathBuf::from(dir.to_string_lossy().replace(['(', ')'], ""));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }

    fn file(&self, name: &str, data: &[u8]) -> Result<PathBuf, String> {
        let path = self.0.join(name);
        std::fs::write(&path, data).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn file_url(path: &Path) -> Result<String, String> {
    url::Url::from_file_path(path)
        .map(String::from)
        .map_err(|()| format!("{} is not an absolute path", path.display()))
}

/// The trace with the run's own temporary directory written as `/TMP`: the
/// directory differs per run and per backend, like the servers' ports.
fn relabel(mut t: Trace, dir: &TempDir) -> Result<Trace, String> {
    let prefix = file_url(&dir.0)?;
    t.url = t.url.replace(&prefix, "file:///TMP");
    Ok(t)
}

fn file_streamed(ctx: &mut Ctx) -> CaseResult {
    // Three times the handle's buffer: the file must be streamed, not read whole.
    let n = 3 * (1 << 20) + 5;
    let dir = TempDir::new(ctx)?;
    let path = dir.file("big.bin", &body_pattern(n))?;
    let (local, resp) = response_of(ctx, None, &file_url(&path)?, "GET")?;
    expect_status(&local.trace, 200)?;
    ensure_eq!(local.trace.source.as_deref(), Some("file"));
    ensure_eq!(
        resp.mime_type(),
        Some("application/octet-stream".to_owned())
    );
    ensure_eq!(resp.expected_content_length(), Some(n as u64));
    let net = http_bytes(ctx, n)?;
    ensure_eq!(local.trace.body_sha256, net.trace.body_sha256);
    relabel(local.trace, &dir)
}

fn file_mime(ctx: &mut Ctx, name: &str, data: &[u8], mime: &str) -> CaseResult {
    let dir = TempDir::new(ctx)?;
    let path = dir.file(name, data)?;
    let (local, resp) = response_of(ctx, None, &file_url(&path)?, "GET")?;
    expect_status(&local.trace, 200)?;
    ensure_eq!(resp.mime_type(), Some(mime.to_owned()));
    ensure_eq!(local.body, data);
    // The same bytes over HTTP, echoed back.
    let echo_url = ctx.origin_url("/echo")?;
    let net = ctx.fetch(build(ResourceRequest::post(echo_url).body(data.to_vec()))?)?;
    expect_status(&net.trace, 200)?;
    ensure_eq!(net.json()?["body_sha256"], sha256(data));
    relabel(local.trace, &dir)
}

fn file_html(ctx: &mut Ctx) -> CaseResult {
    file_mime(
        ctx,
        "page.html",
        b"<!doctype html><title>t</title>",
        "text/html",
    )
}

fn file_json(ctx: &mut Ctx) -> CaseResult {
    file_mime(ctx, "data.json", b"{\"a\":[1,2,3]}", "application/json")
}

fn file_png(ctx: &mut Ctx) -> CaseResult {
    file_mime(
        ctx,
        "image.png",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
        "image/png",
    )
}

fn file_missing(ctx: &mut Ctx) -> CaseResult {
    let dir = TempDir::new(ctx)?;
    let url = file_url(&dir.0.join("missing.txt"))?;
    let f = ctx.fetch(build(ResourceRequest::get(&url))?)?;
    expect_error(&f.trace, "io")?;
    ensure_eq!(f.trace.events, vec!["failed"]);
    http_bytes(ctx, 10)?;
    relabel(f.trace, &dir)
}

fn file_head(ctx: &mut Ctx) -> CaseResult {
    let dir = TempDir::new(ctx)?;
    let path = dir.file("head.txt", b"twelve bytes")?;
    let (local, resp) = response_of(ctx, None, &file_url(&path)?, "HEAD")?;
    expect_status(&local.trace, 200)?;
    ensure_eq!(local.trace.body_bytes, 0);
    ensure_eq!(local.trace.events, vec!["response", "finished"]);
    ensure_eq!(resp.expected_content_length(), Some(12));
    ensure_eq!(resp.mime_type(), Some("text/plain".to_owned()));
    // HEAD over the backend agrees on the shape.
    let url = ctx.origin_url("/bytes/12")?;
    let net = ctx.fetch(build(ResourceRequest::builder("HEAD", url))?)?;
    expect_status(&net.trace, 200)?;
    ensure_eq!(net.trace.events, local.trace.events);
    relabel(local.trace, &dir)
}

/// An application's scheme: `app://bundle/PATH` answers from a table in memory.
struct Bundle;

const INDEX: &[u8] = b"<h1>from the bundle</h1>";

impl SchemeHandler for Bundle {
    fn start(&self, exchange: Exchange) {
        let Exchange {
            request, mut sink, ..
        } = exchange;
        let (status, ctype, body): (u16, &str, &[u8]) = match request.url.path() {
            "/index.html" => (200, "text/html; charset=utf-8", INDEX),
            _ => (404, "text/plain", b"not in the bundle"),
        };
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(ctype),
        );
        headers.insert(http::header::CONTENT_LENGTH, body.len().into());
        let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
        sink.response(ResponseHead::new(status, http::Version::HTTP_11, headers));
        // Small: fits the handle's buffer, so this never has to wait.
        let _ = sink.try_data(Bytes::from_static(body));
        sink.finish();
    }
}

/// An application's scheme that streams `len` bytes of the body pattern from
/// a thread of its own, waiting for the application as the buffer fills.
struct Generator;

impl SchemeHandler for Generator {
    fn start(&self, exchange: Exchange) {
        let Exchange { request, sink, .. } = exchange;
        let len: usize = request
            .url
            .path()
            .trim_start_matches('/')
            .parse()
            .unwrap_or(0);
        let _ = std::thread::Builder::new()
            .name("gen-scheme".into())
            .spawn(move || generate(sink, len));
    }
}

fn generate(mut sink: ExchangeSink, len: usize) {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_LENGTH, len.into());
    sink.response(ResponseHead::new(
        http::StatusCode::OK,
        http::Version::HTTP_11,
        headers,
    ));
    let body = body_pattern(len);
    for c in body.chunks(100_000) {
        if let Err(e) = sink.data_blocking(Bytes::copy_from_slice(c)) {
            sink.fail(e);
            return;
        }
    }
    sink.finish();
}

fn bundle_manager(ctx: &mut Ctx) -> Result<NetworkAccessManager, String> {
    ctx.origin()?;
    ctx.manager_with(|b| b.scheme_handler("app", Bundle))
}

fn custom_memory(ctx: &mut Ctx) -> CaseResult {
    let mgr = bundle_manager(ctx)?;
    let (local, resp) = response_of(ctx, Some(&mgr), "app://bundle/index.html", "GET")?;
    expect_status(&local.trace, 200)?;
    ensure_eq!(local.body, INDEX);
    ensure_eq!(local.trace.source.as_deref(), Some("app"));
    ensure_eq!(resp.mime_type(), Some("text/html".to_owned()));
    ensure_eq!(resp.text_encoding(), Some("utf-8".to_owned()));
    // The same manager still loads over the backend.
    let url = ctx.origin_url("/bytes/24")?;
    let net = ctx.drain(mgr.load(build(ResourceRequest::get(url))?));
    expect_status(&net.trace, 200)?;
    ensure_eq!(net.trace.body_bytes, INDEX.len() as u64);
    Ok(local.trace)
}

fn custom_not_found(ctx: &mut Ctx) -> CaseResult {
    let mgr = bundle_manager(ctx)?;
    let local = ctx.drain(mgr.load(build(ResourceRequest::get("app://bundle/missing"))?));
    expect_status(&local.trace, 404)?;
    ensure_eq!(local.body, b"not in the bundle");
    let url = ctx.origin_url("/status/404")?;
    let net = ctx.drain(mgr.load(build(ResourceRequest::get(url))?));
    expect_status(&net.trace, 404)?;
    Ok(local.trace)
}

fn custom_thread(ctx: &mut Ctx) -> CaseResult {
    ctx.origin()?;
    let mgr = ctx.manager_with(|b| b.scheme_handler("gen", Generator))?;
    let n = 5 * (1 << 20);
    let local = ctx.drain(mgr.load(build(ResourceRequest::get(format!("gen://x/{n}")))?));
    expect_status(&local.trace, 200)?;
    ensure_eq!(local.trace.body_bytes, n as u64);
    let url = ctx.origin_url(&format!("/bytes/{n}"))?;
    let net = ctx.drain(mgr.load(build(ResourceRequest::get(url))?));
    expect_status(&net.trace, 200)?;
    ensure_eq!(local.trace.body_sha256, net.trace.body_sha256);
    Ok(local.trace)
}

fn unregistered(ctx: &mut Ctx) -> CaseResult {
    // A name no case registers: requests naming it do not build.
    let url = "never-registered://host/x";
    let t = match ResourceRequest::get(url).build() {
        Ok(_) => return Err(format!("{url} built though no handler serves it")),
        Err(e) => Trace::for_error(ctx.backend().name(), url, &e),
    };
    expect_error(&t, "unsupported_scheme")?;
    http_bytes(ctx, 1)?;
    Ok(t)
}
