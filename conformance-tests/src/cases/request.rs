//! Every request field reaches the server as sent.

use std::io::Write;

use resource_handle::{RequestBody, ResourceRequest, DEFAULT_USER_AGENT};
use serde_json::Value;

use super::echo_headers;
use super::{build, expect_error, expect_status, sha256, CaseResult, Ctx};

cases!("request";
    "request.method-get" => method_get,
    "request.method-post-bytes" => method_post,
    "request.method-put" => method_put,
    "request.method-patch" => method_patch,
    "request.method-delete" => method_delete,
    "request.method-options" => method_options,
    "request.method-custom-token" => method_custom,
    "request.method-custom-with-body" => method_custom_body,
    "request.head-has-no-body" => head_no_body,
    "request.path-and-query-kept" => path_query,
    "request.fragment-not-sent" => fragment,
    "request.user-agent" => user_agent,
    "request.default-user-agent-and-accept" => default_ua,
    "request.referer" => referer,
    "request.custom-headers" => custom_headers,
    "request.repeated-headers-in-order" => repeated_headers,
    "request.empty-post-sends-length-zero" => empty_post,
    "request.body-1mib-bytes" => body_large_bytes,
    "request.body-stream-sized" => body_stream_sized,
    "request.body-stream-chunked" => body_stream_chunked,
    "request.body-file" => body_file,
    "request.body-stream-shorter-than-declared" => body_stream_short,
);

/// Sends `req` to `/echo` and returns the trace and the echo.
fn echo(
    ctx: &mut Ctx,
    method: &str,
    f: impl FnOnce(resource_handle::RequestBuilder) -> resource_handle::RequestBuilder,
) -> Result<(resource_handle::Trace, Value), String> {
    let url = ctx.origin_url("/echo")?;
    let fetched = ctx.fetch(build(f(ResourceRequest::builder(method, url)))?)?;
    expect_status(&fetched.trace, 200)?;
    let json = fetched.json()?;
    Ok((fetched.trace, json))
}

fn plain(ctx: &mut Ctx, method: &str) -> CaseResult {
    let (trace, e) = echo(ctx, method, |b| b)?;
    ensure_eq!(e["method"], method);
    ensure_eq!(e["framing"], "none");
    ensure_eq!(e["body_len"], 0);
    Ok(trace)
}

fn with_body(ctx: &mut Ctx, method: &str, body: &'static str) -> CaseResult {
    let (trace, e) = echo(ctx, method, |b| b.body(body))?;
    ensure_eq!(e["method"], method);
    ensure_eq!(e["framing"], format!("length:{}", body.len()));
    ensure_eq!(e["body"], body);
    ensure_eq!(e["body_sha256"], sha256(body.as_bytes()));
    Ok(trace)
}

fn method_get(ctx: &mut Ctx) -> CaseResult {
    plain(ctx, "GET")
}
fn method_post(ctx: &mut Ctx) -> CaseResult {
    with_body(ctx, "POST", "name=value&other=1")
}
fn method_put(ctx: &mut Ctx) -> CaseResult {
    with_body(ctx, "PUT", "replacement body")
}
fn method_patch(ctx: &mut Ctx) -> CaseResult {
    with_body(ctx, "PATCH", "{\"op\":\"replace\"}")
}
fn method_delete(ctx: &mut Ctx) -> CaseResult {
    plain(ctx, "DELETE")
}
fn method_options(ctx: &mut Ctx) -> CaseResult {
    plain(ctx, "OPTIONS")
}
fn method_custom(ctx: &mut Ctx) -> CaseResult {
    plain(ctx, "PURGE")
}
fn method_custom_body(ctx: &mut Ctx) -> CaseResult {
    with_body(ctx, "REPORT", "<propfind/>")
}

fn head_no_body(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/bytes/1000")?;
    let f = ctx.fetch(build(ResourceRequest::builder("HEAD", url))?)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.body_bytes, 0);
    let cl = f.trace.headers.iter().find(|(n, _)| n == "content-length");
    ensure_eq!(cl.map(|(_, v)| v.as_str()), Some("1000"));
    // The connection must still be usable after a HEAD that announced a body.
    let f2 = ctx.get("/bytes/10")?;
    expect_status(&f2.trace, 200)?;
    ensure_eq!(f2.trace.body_bytes, 10);
    Ok(f.trace)
}

fn path_query(ctx: &mut Ctx) -> CaseResult {
    let path = "/echo/a%20b/%E2%9C%93?x=1%2B2&y=%41&z=a+b&empty=";
    let url = ctx.origin_url(path)?;
    let f = ctx.fetch(build(ResourceRequest::get(url))?)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.json()?["target"], path);
    Ok(f.trace)
}

fn fragment(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo/page?q=1#section-2")?;
    let f = ctx.fetch(build(ResourceRequest::get(url))?)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.json()?["target"], "/echo/page?q=1");
    Ok(f.trace)
}

fn user_agent(ctx: &mut Ctx) -> CaseResult {
    let (trace, e) = echo(ctx, "GET", |b| b.user_agent("conformance-agent/1.0 (test)"))?;
    ensure_eq!(
        echo_headers(&e, "user-agent"),
        vec!["conformance-agent/1.0 (test)"]
    );
    Ok(trace)
}

fn default_ua(ctx: &mut Ctx) -> CaseResult {
    let (trace, e) = echo(ctx, "GET", |b| b)?;
    ensure_eq!(echo_headers(&e, "user-agent"), vec![DEFAULT_USER_AGENT]);
    ensure_eq!(echo_headers(&e, "accept"), vec!["*/*"]);
    ensure_eq!(
        echo_headers(&e, "accept-encoding"),
        vec!["gzip, deflate, br, zstd"]
    );
    // Nothing else: no Expect, no library User-Agent, no library Accept-Encoding.
    let names: Vec<&str> = e["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h[0].as_str())
        .collect();
    ensure_eq!(names, vec!["user-agent", "accept", "accept-encoding"]);
    Ok(trace)
}

fn referer(ctx: &mut Ctx) -> CaseResult {
    let (trace, e) = echo(ctx, "GET", |b| {
        b.referrer("http://origin.test/previous?page=1")
    })?;
    ensure_eq!(
        echo_headers(&e, "referer"),
        vec!["http://origin.test/previous?page=1"]
    );
    Ok(trace)
}

fn custom_headers(ctx: &mut Ctx) -> CaseResult {
    let (trace, e) = echo(ctx, "GET", |b| {
        b.header("X-First", "one")
            .header("x-second", "two words,  spaced")
            .header("x-empty", "")
    })?;
    ensure_eq!(echo_headers(&e, "x-first"), vec!["one"]);
    ensure_eq!(echo_headers(&e, "x-second"), vec!["two words,  spaced"]);
    ensure_eq!(echo_headers(&e, "x-empty"), vec![""]);
    Ok(trace)
}

fn repeated_headers(ctx: &mut Ctx) -> CaseResult {
    let (trace, e) = echo(ctx, "GET", |b| {
        b.header("x-repeat", "1")
            .header("x-repeat", "2")
            .header("x-repeat", "3")
    })?;
    ensure_eq!(echo_headers(&e, "x-repeat"), vec!["1", "2", "3"]);
    Ok(trace)
}

fn empty_post(ctx: &mut Ctx) -> CaseResult {
    let (trace, e) = echo(ctx, "POST", |b| b)?;
    ensure_eq!(e["framing"], "length:0");
    ensure_eq!(e["body_len"], 0);
    Ok(trace)
}

fn body_large_bytes(ctx: &mut Ctx) -> CaseResult {
    let body: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 7 % 256) as u8).collect();
    let digest = sha256(&body);
    let (trace, e) = echo(ctx, "POST", |b| b.body(body))?;
    ensure_eq!(e["framing"], "length:1048576");
    ensure_eq!(e["body_sha256"], digest);
    ensure!(
        trace.events.contains(&"upload_progress".to_string()),
        "no upload progress: {:?}",
        trace.events
    );
    Ok(trace)
}

fn body_stream_sized(ctx: &mut Ctx) -> CaseResult {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 97) as u8).collect();
    let digest = sha256(&data);
    let (trace, e) = echo(ctx, "PUT", |b| {
        b.body(RequestBody::sized(std::io::Cursor::new(data), 300_000))
    })?;
    ensure_eq!(e["framing"], "length:300000");
    ensure_eq!(e["body_sha256"], digest);
    Ok(trace)
}

fn body_stream_chunked(ctx: &mut Ctx) -> CaseResult {
    let data: Vec<u8> = (0..200_001u32).map(|i| (i % 89) as u8).collect();
    let digest = sha256(&data);
    let (trace, e) = echo(ctx, "POST", |b| {
        b.body(RequestBody::chunked(std::io::Cursor::new(data)))
    })?;
    ensure_eq!(e["framing"], "chunked");
    ensure_eq!(e["body_len"], 200_001);
    ensure_eq!(e["body_sha256"], digest);
    Ok(trace)
}

fn body_file(ctx: &mut Ctx) -> CaseResult {
    let dir = std::env::temp_dir().join(format!(
        "rh-conformance-{}-{}",
        std::process::id(),
        ctx.backend().name()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join("upload.bin");
    let data: Vec<u8> = (0..150_000u32).map(|i| (i % 13) as u8).collect();
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(&data))
        .map_err(|e| e.to_string())?;
    let result = echo(ctx, "POST", |b| b.body(RequestBody::File(path.clone())));
    let _ = std::fs::remove_dir_all(&dir);
    let (trace, e) = result?;
    ensure_eq!(e["framing"], "length:150000");
    ensure_eq!(e["body_sha256"], sha256(&data));
    Ok(trace)
}

fn body_stream_short(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    let req = build(ResourceRequest::post(url).body(RequestBody::sized(
        std::io::Cursor::new(vec![7u8; 1000]),
        5000,
    )))?;
    let f = ctx.fetch(req)?;
    expect_error(&f.trace, "io")?;
    // The server must never have seen a complete request.
    let complete = ctx.origin()?.requests().iter().any(|r| r.target == "/echo");
    ensure!(
        !complete,
        "the server received a complete request from a short body"
    );
    Ok(f.trace)
}
