//! Responses of every kind are delivered as responses, bodies intact.

use resource_handle::ResourceRequest;

use super::{build, expect_status, sha256, CaseResult, Ctx};
use crate::servers::{body_pattern, Step};

cases!("response";
    "response.status-200" => status_200,
    "response.status-201" => status_201,
    "response.status-204-no-body" => status_204,
    "response.status-304-no-body" => status_304,
    "response.status-404-is-a-response" => status_404,
    "response.status-500-is-a-response" => status_500,
    "response.status-503-is-a-response" => status_503,
    "response.informational-103-skipped" => informational_103,
    "response.continue-100-skipped" => continue_100,
    "response.repeated-header-names" => repeated_headers,
    "response.body-0-bytes" => body_0,
    "response.body-1-byte" => body_1,
    "response.body-10mib" => body_10mib,
    "response.body-chunked" => body_chunked,
    "response.body-http10-close-delimited" => body_http10,
    "response.reason-phrase-kept" => reason_phrase,
);

fn status(ctx: &mut Ctx, code: u16, body: bool) -> CaseResult {
    let f = ctx.get(&format!("/status/{code}"))?;
    expect_status(&f.trace, code)?;
    if body {
        ensure_eq!(String::from_utf8_lossy(&f.body), format!("status {code}\n"));
    } else {
        ensure_eq!(f.trace.body_bytes, 0);
    }
    Ok(f.trace)
}

fn status_200(ctx: &mut Ctx) -> CaseResult {
    let t = status(ctx, 200, true)?;
    ensure_eq!(t.reason.as_deref(), Some("OK"));
    ensure_eq!(t.version.as_deref(), Some("HTTP/1.1"));
    ensure_eq!(
        t.events,
        vec!["response", "data", "download_progress", "finished"]
    );
    Ok(t)
}
fn status_201(ctx: &mut Ctx) -> CaseResult {
    status(ctx, 201, true)
}
fn status_204(ctx: &mut Ctx) -> CaseResult {
    let t = status(ctx, 204, false)?;
    // The connection stays usable after a body-less response.
    let again = ctx.get("/status/200")?;
    expect_status(&again.trace, 200)?;
    Ok(t)
}
fn status_304(ctx: &mut Ctx) -> CaseResult {
    let t = status(ctx, 304, false)?;
    let again = ctx.get("/status/200")?;
    expect_status(&again.trace, 200)?;
    Ok(t)
}
fn status_404(ctx: &mut Ctx) -> CaseResult {
    status(ctx, 404, true)
}
fn status_500(ctx: &mut Ctx) -> CaseResult {
    status(ctx, 500, true)
}
fn status_503(ctx: &mut Ctx) -> CaseResult {
    status(ctx, 503, true)
}

fn raw_get(ctx: &mut Ctx, script: Vec<Step>) -> Result<super::Fetched, String> {
    let base = ctx.raw(script)?;
    ctx.fetch(build(ResourceRequest::get(format!("{base}/resource")))?)
}

fn informational_103(ctx: &mut Ctx) -> CaseResult {
    let f = raw_get(
        ctx,
        vec![
            Step::ReadRequest,
            Step::send("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"),
            Step::send("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nfinal"),
            Step::Close,
        ],
    )?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.body, b"final");
    ensure!(
        !f.trace.headers.iter().any(|(n, _)| n == "link"),
        "headers of the 103 leaked into the final response: {:?}",
        f.trace.headers
    );
    Ok(f.trace)
}

fn continue_100(ctx: &mut Ctx) -> CaseResult {
    let f = raw_get(
        ctx,
        vec![
            Step::ReadRequest,
            Step::send("HTTP/1.1 100 Continue\r\n\r\n"),
            Step::send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            Step::Close,
        ],
    )?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.body, b"ok");
    Ok(f.trace)
}

fn repeated_headers(ctx: &mut Ctx) -> CaseResult {
    let f = ctx.get("/repeated-headers")?;
    expect_status(&f.trace, 200)?;
    let multi: Vec<&str> = f
        .trace
        .headers
        .iter()
        .filter(|(n, _)| n == "x-multi")
        .map(|(_, v)| v.as_str())
        .collect();
    ensure_eq!(multi, vec!["first", "second", "third"]);
    Ok(f.trace)
}

fn body_len(ctx: &mut Ctx, path: &str, len: usize) -> CaseResult {
    let f = ctx.get(path)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.body_bytes, len as u64);
    ensure_eq!(f.trace.body_sha256, sha256(&body_pattern(len)));
    Ok(f.trace)
}

fn body_0(ctx: &mut Ctx) -> CaseResult {
    let t = body_len(ctx, "/bytes/0", 0)?;
    ensure_eq!(t.events, vec!["response", "finished"]);
    Ok(t)
}
fn body_1(ctx: &mut Ctx) -> CaseResult {
    body_len(ctx, "/bytes/1", 1)
}
fn body_10mib(ctx: &mut Ctx) -> CaseResult {
    body_len(ctx, "/bytes/10485760", 10 << 20)
}
fn body_chunked(ctx: &mut Ctx) -> CaseResult {
    let t = body_len(ctx, "/bytes/100000?chunked=4096", 100_000)?;
    ensure!(
        t.headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v == "chunked"),
        "response was not chunked: {:?}",
        t.headers
    );
    Ok(t)
}

fn body_http10(ctx: &mut Ctx) -> CaseResult {
    let f = ctx.get("/http10/50000")?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.version.as_deref(), Some("HTTP/1.0"));
    ensure_eq!(f.trace.body_bytes, 50_000);
    ensure_eq!(f.trace.body_sha256, sha256(&body_pattern(50_000)));
    Ok(f.trace)
}

fn reason_phrase(ctx: &mut Ctx) -> CaseResult {
    let f = raw_get(
        ctx,
        vec![
            Step::ReadRequest,
            Step::send("HTTP/1.1 200 Everything Fine Here\r\nContent-Length: 0\r\n\r\n"),
            Step::Close,
        ],
    )?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.reason.as_deref(), Some("Everything Fine Here"));
    Ok(f.trace)
}
