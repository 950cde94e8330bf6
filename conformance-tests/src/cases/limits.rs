//! Limits, exact on every backend: the response head (bytes and header
//! fields), the redirect count and the decoded body size. The largest input
//! under a limit loads everywhere; one byte, field or hop more fails with
//! the limit's error everywhere.

use std::time::Duration;

use resource_handle::{
    ResourceRequest, DEFAULT_MAX_RESPONSE_HEADERS, DEFAULT_MAX_RESPONSE_HEAD_BYTES,
};

use super::faults::{finish, get, serve, Done};
use super::{build, expect_error, expect_status, CaseResult, Ctx};
use crate::servers::{body_pattern, Step};

cases!("limits";
    "limits.head-bytes-default-at-limit" => bytes_at_default,
    "limits.head-bytes-default-one-over" => bytes_over_default,
    "limits.head-fields-default-at-limit" => fields_at_default,
    "limits.head-fields-default-one-over" => fields_over_default,
    "limits.head-one-long-line-one-over" => long_line_over,
    "limits.head-bytes-configured-at-limit" => bytes_at_configured,
    "limits.head-bytes-configured-one-over" => bytes_over_configured,
    "limits.head-fields-configured-at-limit" => fields_at_configured,
    "limits.head-fields-configured-one-over" => fields_over_configured,
    "limits.head-never-ending-stops-at-limit" => never_ending,
    "limits.redirects-at-max" => redirects_at_max,
    "limits.redirects-one-over" => redirects_over,
    "limits.decoded-body-at-limit" => decoded_at_limit,
    "limits.decoded-body-one-over" => decoded_over,
);

/// A response head of exactly `bytes` bytes (line ends included) with
/// exactly `fields` header fields, one of them `Content-Length: 2`,
/// followed by the body `ok`.
fn response(bytes: usize, fields: usize) -> Result<Vec<u8>, String> {
    let status = "HTTP/1.1 200 OK\r\n";
    let length = "Content-Length: 2\r\n";
    let fillers = fields.saturating_sub(1);
    // Each filler is `X-Fnnnn: ` + value + CRLF: 11 bytes around the value.
    let fixed = status.len() + length.len() + 2 + fillers * 11;
    if bytes < fixed {
        return Err(format!(
            "a head of {bytes} bytes cannot hold {fields} fields"
        ));
    }
    let mut pad = bytes - fixed;
    let mut head = String::from(status);
    head.push_str(length);
    for i in 0..fillers {
        let share = pad / (fillers - i);
        pad -= share;
        head.push_str(&format!("X-F{i:04}: {}\r\n", "v".repeat(share)));
    }
    head.push_str("\r\n");
    if head.len() != bytes {
        return Err(format!("built a head of {} bytes, not {bytes}", head.len()));
    }
    let mut out = head.into_bytes();
    out.extend_from_slice(b"ok");
    Ok(out)
}

fn serve_head(
    ctx: &mut Ctx,
    bytes: usize,
    fields: usize,
) -> Result<(crate::servers::RawServer, String), String> {
    serve(
        ctx,
        vec![vec![
            Step::ReadRequest,
            Step::Send(response(bytes, fields)?),
            Step::Sleep(Duration::from_millis(50)),
            Step::Close,
        ]],
    )
}

fn head_load(
    ctx: &mut Ctx,
    bytes: usize,
    fields: usize,
    configured: Option<(usize, usize)>,
) -> Result<Done, String> {
    let (_server, base) = serve_head(ctx, bytes, fields)?;
    let req = build(ResourceRequest::get(format!("{base}/r")))?;
    match configured {
        None => {
            // The default limits, through a manager built without any.
            let f = get(ctx, &format!("{base}/r"))?;
            Ok(f)
        }
        Some((max_bytes, max_fields)) => {
            let m = ctx.manager_with(|b| {
                Ok(b.max_response_head_bytes(max_bytes)
                    .max_response_headers(max_fields))
            })?;
            Ok(finish(ctx, m.load(req)))
        }
    }
}

fn at_limit(ctx: &mut Ctx, bytes: usize, fields: usize, cfg: Option<(usize, usize)>) -> CaseResult {
    let f = head_load(ctx, bytes, fields, cfg)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.body, b"ok".to_vec());
    let got = f.response.as_ref().map(|r| r.headers().len());
    ensure_eq!(got, Some(fields));
    Ok(f.trace)
}

fn over_limit(
    ctx: &mut Ctx,
    bytes: usize,
    fields: usize,
    cfg: Option<(usize, usize)>,
) -> CaseResult {
    let f = head_load(ctx, bytes, fields, cfg)?;
    expect_error(&f.trace, "limit_exceeded")?;
    ensure_eq!(f.trace.events, vec!["failed"]);
    Ok(f.trace)
}

const DEFAULT_BYTES: usize = DEFAULT_MAX_RESPONSE_HEAD_BYTES;
const DEFAULT_FIELDS: usize = DEFAULT_MAX_RESPONSE_HEADERS;

fn bytes_at_default(ctx: &mut Ctx) -> CaseResult {
    at_limit(ctx, DEFAULT_BYTES, 40, None)
}

fn bytes_over_default(ctx: &mut Ctx) -> CaseResult {
    over_limit(ctx, DEFAULT_BYTES + 1, 40, None)
}

fn fields_at_default(ctx: &mut Ctx) -> CaseResult {
    at_limit(ctx, 4000, DEFAULT_FIELDS, None)
}

fn fields_over_default(ctx: &mut Ctx) -> CaseResult {
    over_limit(ctx, 4000, DEFAULT_FIELDS + 1, None)
}

fn long_line_over(ctx: &mut Ctx) -> CaseResult {
    // One header line carries the whole head.
    over_limit(ctx, DEFAULT_BYTES + 1, 2, None)
}

const CONFIGURED: (usize, usize) = (16 * 1024, 20);

fn bytes_at_configured(ctx: &mut Ctx) -> CaseResult {
    at_limit(ctx, CONFIGURED.0, 10, Some(CONFIGURED))
}

fn bytes_over_configured(ctx: &mut Ctx) -> CaseResult {
    over_limit(ctx, CONFIGURED.0 + 1, 10, Some(CONFIGURED))
}

fn fields_at_configured(ctx: &mut Ctx) -> CaseResult {
    at_limit(ctx, 2000, CONFIGURED.1, Some(CONFIGURED))
}

fn fields_over_configured(ctx: &mut Ctx) -> CaseResult {
    over_limit(ctx, 2000, CONFIGURED.1 + 1, Some(CONFIGURED))
}

fn never_ending(ctx: &mut Ctx) -> CaseResult {
    // A head that never ends: the load stops at the limit, it does not
    // buffer what the server keeps sending.
    let line = format!("X-Pad: {}\r\n", "p".repeat(1000));
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    while head.len() < 4 * DEFAULT_BYTES {
        head.push_str(&line);
    }
    let (_s, base) = serve(
        ctx,
        vec![vec![
            Step::ReadRequest,
            Step::send(head),
            Step::Sleep(Duration::from_secs(2)),
            Step::Close,
        ]],
    )?;
    let f = get(ctx, &format!("{base}/r"))?;
    expect_error(&f.trace, "limit_exceeded")?;
    ensure!(
        f.took < Duration::from_millis(1500),
        "failed only after {:?}",
        f.took
    );
    Ok(f.trace)
}

fn redirects(ctx: &mut Ctx, hops: u32, max: u32) -> Result<Done, String> {
    let url = ctx.origin_url(&format!("/redirect/{hops}"))?;
    let m = ctx.manager_with(|b| Ok(b.max_redirects(max)))?;
    Ok(finish(ctx, m.load(build(ResourceRequest::get(url))?)))
}

fn redirects_at_max(ctx: &mut Ctx) -> CaseResult {
    let f = redirects(ctx, 5, 5)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.redirects.len(), 5);
    Ok(f.trace)
}

fn redirects_over(ctx: &mut Ctx) -> CaseResult {
    let f = redirects(ctx, 6, 5)?;
    expect_error(&f.trace, "too_many_redirects")?;
    ensure_eq!(f.trace.redirects.len(), 5);
    ensure_eq!(ctx.origin()?.requests().len(), 6);
    Ok(f.trace)
}

const DECODED: u64 = 100_000;

fn decoded(ctx: &mut Ctx, limit: u64) -> Result<Done, String> {
    let url = ctx.origin_url(&format!("/encoded/gzip/{DECODED}"))?;
    let m = ctx.manager_with(|b| Ok(b.max_decoded_body_bytes(limit)))?;
    Ok(finish(ctx, m.load(build(ResourceRequest::get(url))?)))
}

fn decoded_at_limit(ctx: &mut Ctx) -> CaseResult {
    let f = decoded(ctx, DECODED)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.body.len() as u64, DECODED);
    Ok(f.trace)
}

fn decoded_over(ctx: &mut Ctx) -> CaseResult {
    let f = decoded(ctx, DECODED - 1)?;
    expect_error(&f.trace, "limit_exceeded")?;
    ensure!(
        (f.body.len() as u64) < DECODED,
        "{} bytes delivered past the limit",
        f.body.len()
    );
    // What was delivered is the start of the decoded body, byte for byte.
    ensure!(
        f.body[..] == body_pattern(f.body.len())[..],
        "the {} bytes delivered are not the start of the body",
        f.body.len()
    );
    let mut t = f.trace;
    // How much was delivered before the limit hit depends on how the bytes
    // arrive from the socket, which differs between runs and backends.
    t.body_bytes = 0;
    t.body_sha256.clear();
    t.events.retain(|e| e != "data" && e != "download_progress");
    Ok(t)
}
