//! Response head faults (RFC 9112 §4, §5): malformed status lines and
//! header lines are protocol errors on every backend; what a user agent is
//! asked to tolerate (obs-fold, a missing reason phrase, non-UTF-8 values,
//! interim 1xx heads) is tolerated the same way everywhere.

use std::time::Duration;

use super::faults::{get, serve, Done};
use super::{expect_error, expect_status, CaseResult, Ctx};
use crate::servers::Step;

cases!("head";
    "head.status-code-001" => status_001,
    "head.status-code-two-digits" => status_two_digits,
    "head.status-code-four-digits" => status_four_digits,
    "head.protocol-name-heat" => heat,
    "head.version-http-2-on-http1" => version_2,
    "head.no-reason-phrase" => no_reason,
    "head.empty-reason-phrase" => empty_reason,
    "head.http09-reply" => http09,
    "head.header-without-colon" => no_colon,
    "head.nul-in-header-value" => nul_value,
    "head.bare-cr-in-header-value" => bare_cr,
    "head.space-in-header-name" => space_in_name,
    "head.obs-fold-unfolded" => obs_fold,
    "head.obs-fold-tab-unfolded" => obs_fold_tab,
    "head.non-utf8-header-value-delivered" => non_utf8,
    "head.bare-lf-line-ends-accepted" => bare_lf,
    "head.never-finished-before-close" => unfinished,
    "head.continue-100-with-headers-skipped" => continue_with_headers,
    "head.several-1xx-skipped" => several_1xx,
    "head.1xx-without-final-response" => only_1xx,
    "head.101-without-upgrade-request" => switching_101,
);

fn respond(ctx: &mut Ctx, response: &str) -> Result<Done, String> {
    respond_bytes(ctx, response.as_bytes())
}

fn respond_bytes(ctx: &mut Ctx, response: &[u8]) -> Result<Done, String> {
    let (_s, base) = serve(
        ctx,
        vec![vec![
            Step::ReadRequest,
            Step::Send(response.to_vec()),
            Step::Sleep(Duration::from_millis(50)),
            Step::Close,
        ]],
    )?;
    get(ctx, &format!("{base}/r"))
}

fn protocol(ctx: &mut Ctx, response: &str) -> CaseResult {
    protocol_bytes(ctx, response.as_bytes())
}

fn protocol_bytes(ctx: &mut Ctx, response: &[u8]) -> CaseResult {
    let f = respond_bytes(ctx, response)?;
    expect_error(&f.trace, "protocol")?;
    ensure_eq!(f.trace.status, None);
    ensure_eq!(f.trace.events, vec!["failed"]);
    Ok(f.trace)
}

fn loads(ctx: &mut Ctx, response: &str, body: &str) -> Result<Done, String> {
    let f = respond(ctx, response)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(String::from_utf8_lossy(&f.body), body);
    Ok(f)
}

fn header<'a>(f: &'a Done, name: &str) -> Option<&'a [u8]> {
    f.response
        .as_ref()
        .and_then(|r| r.headers().get(name))
        .map(|v| v.as_bytes())
}

fn status_001(ctx: &mut Ctx) -> CaseResult {
    protocol(ctx, "HTTP/1.1 001 Odd\r\nContent-Length: 0\r\n\r\n")
}

fn status_two_digits(ctx: &mut Ctx) -> CaseResult {
    protocol(ctx, "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n")
}

fn status_four_digits(ctx: &mut Ctx) -> CaseResult {
    protocol(ctx, "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n")
}

fn heat(ctx: &mut Ctx) -> CaseResult {
    protocol(ctx, "HEAT/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
}

fn version_2(ctx: &mut Ctx) -> CaseResult {
    protocol(ctx, "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
}

fn no_reason(ctx: &mut Ctx) -> CaseResult {
    let f = loads(ctx, "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", "ok")?;
    Ok(f.trace)
}

fn empty_reason(ctx: &mut Ctx) -> CaseResult {
    let f = loads(ctx, "HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok", "ok")?;
    Ok(f.trace)
}

fn http09(ctx: &mut Ctx) -> CaseResult {
    protocol(ctx, "hello, this is a body without any head\n")
}

fn no_colon(ctx: &mut Ctx) -> CaseResult {
    protocol(
        ctx,
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nNo colon here\r\n\r\nok",
    )
}

fn nul_value(ctx: &mut Ctx) -> CaseResult {
    protocol(
        ctx,
        "HTTP/1.1 200 OK\r\nX-Nul: a\0b\r\nContent-Length: 2\r\n\r\nok",
    )
}

fn bare_cr(ctx: &mut Ctx) -> CaseResult {
    protocol(
        ctx,
        "HTTP/1.1 200 OK\r\nX-Cr: a\rb\r\nContent-Length: 2\r\n\r\nok",
    )
}

fn space_in_name(ctx: &mut Ctx) -> CaseResult {
    protocol(
        ctx,
        "HTTP/1.1 200 OK\r\nX Bad: a\r\nContent-Length: 2\r\n\r\nok",
    )
}

fn obs_fold(ctx: &mut Ctx) -> CaseResult {
    let f = loads(
        ctx,
        "HTTP/1.1 200 OK\r\nX-Fold: one\r\n  two\r\nX-After: 1\r\nContent-Length: 2\r\n\r\nok",
        "ok",
    )?;
    // RFC 9112 §5.2: each obs-fold is replaced by SP before the value is used.
    let v = header(&f, "x-fold").ok_or("no x-fold header")?;
    ensure!(
        v == b"one two",
        "x-fold is {:?}",
        String::from_utf8_lossy(v)
    );
    ensure_eq!(header(&f, "x-after"), Some(&b"1"[..]));
    Ok(f.trace)
}

fn obs_fold_tab(ctx: &mut Ctx) -> CaseResult {
    let f = loads(
        ctx,
        "HTTP/1.1 200 OK\r\nX-Fold: a\r\n\tb\r\n \tc\r\nContent-Length: 2\r\n\r\nok",
        "ok",
    )?;
    let v = header(&f, "x-fold").ok_or("no x-fold header")?;
    ensure!(v == b"a b c", "x-fold is {:?}", String::from_utf8_lossy(v));
    Ok(f.trace)
}

fn non_utf8(ctx: &mut Ctx) -> CaseResult {
    let f = respond_bytes(
        ctx,
        b"HTTP/1.1 200 OK\r\nX-Latin: caf\xe9 cr\xe8me\r\nContent-Length: 2\r\n\r\nok",
    )?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(header(&f, "x-latin"), Some(&b"caf\xe9 cr\xe8me"[..]));
    Ok(f.trace)
}

fn bare_lf(ctx: &mut Ctx) -> CaseResult {
    let f = loads(
        ctx,
        "HTTP/1.1 200 OK\nX-Lf: yes\nContent-Length: 2\n\nok",
        "ok",
    )?;
    ensure_eq!(header(&f, "x-lf"), Some(&b"yes"[..]));
    Ok(f.trace)
}

fn unfinished(ctx: &mut Ctx) -> CaseResult {
    protocol(ctx, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-More: ")
}

fn continue_with_headers(ctx: &mut Ctx) -> CaseResult {
    let f = loads(
        ctx,
        "HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "ok",
    )?;
    ensure!(header(&f, "x-interim").is_none(), "interim header kept");
    Ok(f.trace)
}

fn several_1xx(ctx: &mut Ctx) -> CaseResult {
    let f = loads(
        ctx,
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n\
         HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
         HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "ok",
    )?;
    ensure!(header(&f, "link").is_none(), "interim header kept");
    Ok(f.trace)
}

fn only_1xx(ctx: &mut Ctx) -> CaseResult {
    protocol(ctx, "HTTP/1.1 100 Continue\r\n\r\n")
}

fn switching_101(ctx: &mut Ctx) -> CaseResult {
    // The request asked for no upgrade: a 101 cannot be its answer.
    protocol(
        ctx,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\
         HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
}
