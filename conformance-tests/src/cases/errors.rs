//! Every failure maps to the same error kind on every backend.

use std::net::{Ipv4Addr, TcpListener};

use resource_handle::ResourceRequest;

use super::{build, expect_error, CaseResult, Ctx};
use crate::servers::Step;

cases!("error";
    "error.connection-refused" => refused,
    "error.dns-no-address" => dns,
    "error.body-shorter-than-content-length" => truncated,
    "error.chunked-body-cut-off" => chunked_cut,
    "error.malformed-status-line" => malformed_status,
    "error.close-without-response" => empty_reply,
);

fn refused(ctx: &mut Ctx) -> CaseResult {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    ctx.map_host("closed.test", port, vec![Ipv4Addr::LOCALHOST.into()]);
    let f = ctx.fetch(build(ResourceRequest::get(format!(
        "http://closed.test:{port}/"
    )))?)?;
    expect_error(&f.trace, "connect")?;
    ensure_eq!(f.trace.events, vec!["failed"]);
    Ok(f.trace)
}

fn dns(ctx: &mut Ctx) -> CaseResult {
    ctx.map_host("nowhere.test", 80, vec![]);
    let f = ctx.fetch(build(ResourceRequest::get("http://nowhere.test/"))?)?;
    expect_error(&f.trace, "dns")?;
    Ok(f.trace)
}

fn raw_load(ctx: &mut Ctx, script: Vec<Step>) -> Result<super::Fetched, String> {
    let base = ctx.raw(script)?;
    ctx.fetch(build(ResourceRequest::get(format!("{base}/r")))?)
}

fn truncated(ctx: &mut Ctx) -> CaseResult {
    let f = raw_load(
        ctx,
        vec![
            Step::ReadRequest,
            Step::send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"),
            Step::Send(vec![b'x'; 40]),
            Step::Close,
        ],
    )?;
    expect_error(&f.trace, "body_truncated")?;
    ensure!(
        f.trace.body_bytes <= 40,
        "more bytes than were sent: {}",
        f.trace.body_bytes
    );
    Ok(f.trace)
}

fn chunked_cut(ctx: &mut Ctx) -> CaseResult {
    let f = raw_load(
        ctx,
        vec![
            Step::ReadRequest,
            Step::send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
            Step::Close,
        ],
    )?;
    expect_error(&f.trace, "body_truncated")?;
    Ok(f.trace)
}

fn malformed_status(ctx: &mut Ctx) -> CaseResult {
    let f = raw_load(
        ctx,
        vec![
            Step::ReadRequest,
            Step::send("HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n"),
            Step::Close,
        ],
    )?;
    expect_error(&f.trace, "protocol")?;
    ensure_eq!(f.trace.status, None);
    Ok(f.trace)
}

fn empty_reply(ctx: &mut Ctx) -> CaseResult {
    let f = raw_load(ctx, vec![Step::ReadRequest, Step::Close])?;
    expect_error(&f.trace, "protocol")?;
    Ok(f.trace)
}
