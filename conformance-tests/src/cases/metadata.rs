//! Response metadata, derived once in handle-api from what the backend
//! reports: mime type and charset, suggested filename (RFC 6266, with RFC
//! 8187's `filename*`), expected content length, redirect count, final url,
//! remote address and load timing.
//!
//! The trace does not carry these fields: each case asserts them on every
//! backend and returns the load's ordinary trace for comparison.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use resource_handle::{
    Event, LoadTiming, Recorder, ResourceRequest, ResourceResponse, ResponseSource, Trace,
};

use super::{build, expect_status, CaseResult, Ctx};

cases!("metadata";
    "metadata.mime-and-charset" => mime_and_charset,
    "metadata.mime-without-charset" => mime_without_charset,
    "metadata.no-content-type" => no_content_type,
    "metadata.filename-quoted" => filename_quoted,
    "metadata.filename-star-utf8" => filename_star,
    "metadata.filename-star-wins" => filename_both,
    "metadata.filename-path-stripped" => filename_path,
    "metadata.filename-none-without-disposition" => filename_none,
    "metadata.content-length-known" => length_known,
    "metadata.content-length-none-when-chunked" => length_chunked,
    "metadata.redirect-count-0" => redirect_count_0,
    "metadata.redirect-count-2" => redirect_count_2,
    "metadata.final-url-and-source" => final_url,
    "metadata.version-and-reason" => version_and_reason,
    "metadata.remote-address" => remote_address,
    "metadata.remote-address-after-redirect-to-other-origin" => remote_other_origin,
    "metadata.timing-present-phases-monotonic" => timing_monotonic,
    "metadata.timing-first-byte-after-server-delay" => timing_first_byte,
    "metadata.timing-reused-connection" => timing_reused,
);

/// Loads `req` and returns its trace and response; `wall` is the time from
/// the start of the load to the response event.
fn load(
    ctx: &mut Ctx,
    req: ResourceRequest,
) -> Result<(Trace, ResourceResponse, Duration), String> {
    let start = Instant::now();
    let mut h = ctx.start(req)?;
    let mut rec = Recorder::new(ctx.backend().name(), &h);
    let mut resp = None;
    let mut wall = Duration::ZERO;
    while let Some(ev) = h.next_event_blocking() {
        if let Event::Response(r) = &ev {
            wall = start.elapsed();
            resp = Some(r.clone());
        }
        rec.observe(&ev);
    }
    let t = rec.finish();
    let resp = resp.ok_or_else(|| format!("no response: {:?}", t.error))?;
    Ok((t, resp, wall))
}

/// `/headers` answering with `name: value`.
fn with_header(
    ctx: &mut Ctx,
    name: &str,
    value: &str,
) -> Result<(Trace, ResourceResponse), String> {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair(name, value)
        .finish();
    let url = ctx.origin_url(&format!("/headers?{q}"))?;
    let (t, r, _) = load(ctx, build(ResourceRequest::get(url))?)?;
    expect_status(&t, 200)?;
    ensure!(
        t.headers.iter().any(|(n, v)| n == name && v == value),
        "the server did not send {name}: {value} ({:?})",
        t.headers
    );
    Ok((t, r))
}

fn mime_and_charset(ctx: &mut Ctx) -> CaseResult {
    let (t, r) = with_header(ctx, "content-type", "text/html; charset=ISO-8859-1")?;
    ensure_eq!(r.mime_type(), Some("text/html".to_owned()));
    ensure_eq!(r.text_encoding(), Some("iso-8859-1".to_owned()));
    Ok(t)
}

fn mime_without_charset(ctx: &mut Ctx) -> CaseResult {
    let (t, r) = with_header(ctx, "content-type", "Application/JSON")?;
    ensure_eq!(r.mime_type(), Some("application/json".to_owned()));
    ensure_eq!(r.text_encoding(), None);
    Ok(t)
}

fn no_content_type(ctx: &mut Ctx) -> CaseResult {
    // Nothing is sniffed or made up.
    let (t, r) = with_header(ctx, "x-nothing", "1")?;
    ensure_eq!(r.mime_type(), None);
    ensure_eq!(r.text_encoding(), None);
    Ok(t)
}

fn filename(ctx: &mut Ctx, disposition: &str, want: Option<&str>) -> CaseResult {
    let (t, r) = with_header(ctx, "content-disposition", disposition)?;
    ensure_eq!(r.suggested_filename(), want.map(str::to_owned));
    Ok(t)
}

fn filename_quoted(ctx: &mut Ctx) -> CaseResult {
    filename(ctx, "attachment; filename=\"a.txt\"", Some("a.txt"))
}

fn filename_star(ctx: &mut Ctx) -> CaseResult {
    filename(
        ctx,
        "attachment; filename*=UTF-8''%e2%82%ac%20rates.txt",
        Some("€ rates.txt"),
    )
}

fn filename_both(ctx: &mut Ctx) -> CaseResult {
    // RFC 6266 §4.3: filename* wins over filename, in either order.
    filename(
        ctx,
        "attachment; filename=\"EURO rates.txt\"; filename*=utf-8''%e2%82%ac%20rates.txt",
        Some("€ rates.txt"),
    )?;
    filename(
        ctx,
        "attachment; filename*=UTF-8''%e2%82%ac%20rates.txt; filename=\"EURO rates.txt\"",
        Some("€ rates.txt"),
    )
}

fn filename_path(ctx: &mut Ctx) -> CaseResult {
    // A suggested name never names a directory to write into.
    filename(
        ctx,
        "attachment; filename=\"../../etc/passwd\"",
        Some("passwd"),
    )
}

fn filename_none(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/bytes/10")?;
    let (t, r, _) = load(ctx, build(ResourceRequest::get(url))?)?;
    expect_status(&t, 200)?;
    ensure_eq!(r.suggested_filename(), None);
    Ok(t)
}

fn length_known(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/bytes/12345")?;
    let (t, r, _) = load(ctx, build(ResourceRequest::get(url))?)?;
    expect_status(&t, 200)?;
    ensure_eq!(r.expected_content_length(), Some(12345));
    Ok(t)
}

fn length_chunked(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/bytes/12345?chunked=1000")?;
    let (t, r, _) = load(ctx, build(ResourceRequest::get(url))?)?;
    expect_status(&t, 200)?;
    ensure_eq!(r.expected_content_length(), None);
    Ok(t)
}

fn redirect_count(ctx: &mut Ctx, n: u32) -> CaseResult {
    let url = ctx.origin_url(&format!("/redirect/{n}"))?;
    let (t, r, _) = load(ctx, build(ResourceRequest::get(url))?)?;
    expect_status(&t, 200)?;
    ensure_eq!(r.redirect_count(), n);
    ensure_eq!(t.redirects.len(), n as usize);
    Ok(t)
}

fn redirect_count_0(ctx: &mut Ctx) -> CaseResult {
    redirect_count(ctx, 0)
}

fn redirect_count_2(ctx: &mut Ctx) -> CaseResult {
    redirect_count(ctx, 2)
}

fn final_url(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/redirect/1?x=1#frag")?;
    let (t, r, _) = load(ctx, build(ResourceRequest::get(url))?)?;
    expect_status(&t, 200)?;
    ensure_eq!(r.url().as_str(), ctx.origin_url("/redirect/0#frag")?);
    ensure_eq!(r.source(), ResponseSource::Network);
    Ok(t)
}

fn version_and_reason(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/status/418")?;
    let (t, r, _) = load(ctx, build(ResourceRequest::get(url))?)?;
    expect_status(&t, 418)?;
    ensure_eq!(r.version_str(), "HTTP/1.1");
    ensure_eq!(r.reason(), "I'm a teapot");
    Ok(t)
}

fn remote_address(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/bytes/10")?;
    let port = ctx.origin()?.port();
    let (t, r, _) = load(ctx, build(ResourceRequest::get(url))?)?;
    expect_status(&t, 200)?;
    ensure_eq!(
        r.remote_addr(),
        Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
    );
    Ok(t)
}

fn remote_other_origin(ctx: &mut Ctx) -> CaseResult {
    // After a redirect the address is the final hop's.
    let other = ctx.other_url("/bytes/10")?;
    let port = ctx.other_origin()?.port();
    let url = ctx.origin_url(&format!("/redirect-to?url={other}"))?;
    let (t, r, _) = load(ctx, build(ResourceRequest::get(url))?)?;
    expect_status(&t, 200)?;
    ensure_eq!(
        r.remote_addr(),
        Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
    );
    Ok(t)
}

/// The phases present, in their order; each must be no earlier than the one
/// before and no later than `wall`, the time the response took to arrive.
fn check_timing(
    timing: &LoadTiming,
    wall: Duration,
) -> Result<Vec<(&'static str, Duration)>, String> {
    // Plain HTTP has no handshake: a TLS time would be made up.
    ensure_eq!(timing.tls, None);
    // The response is delivered before the body is complete.
    ensure_eq!(timing.complete, None);
    let phases: Vec<(&'static str, Duration)> = [
        ("dns", timing.dns),
        ("connect", timing.connect),
        ("tls", timing.tls),
        ("request_sent", timing.request_sent),
        ("first_byte", timing.first_byte),
    ]
    .into_iter()
    .filter_map(|(n, d)| d.map(|d| (n, d)))
    .collect();
    for pair in phases.windows(2) {
        ensure!(
            pair[0].1 <= pair[1].1,
            "{} at {:?} comes after {} at {:?}",
            pair[0].0,
            pair[0].1,
            pair[1].0,
            pair[1].1
        );
    }
    for (name, d) in &phases {
        ensure!(
            *d <= wall,
            "{name} at {d:?}, but the response took {wall:?} to arrive"
        );
    }
    Ok(phases)
}

fn timing_monotonic(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/bytes/1000")?;
    let (t, r, wall) = load(ctx, build(ResourceRequest::get(url))?)?;
    expect_status(&t, 200)?;
    check_timing(r.timing(), wall)?;
    Ok(t)
}

fn timing_first_byte(ctx: &mut Ctx) -> CaseResult {
    // The server waits 300 ms after reading the request: a first byte
    // reported sooner is made up.
    let url = ctx.origin_url("/delay/300")?;
    let (t, r, wall) = load(ctx, build(ResourceRequest::get(url))?)?;
    expect_status(&t, 200)?;
    let timing = *r.timing();
    check_timing(&timing, wall)?;
    if let Some(fb) = timing.first_byte {
        ensure!(
            fb >= Duration::from_millis(300),
            "first byte at {fb:?}, before the server answered"
        );
    }
    for (name, d) in [
        ("dns", timing.dns),
        ("connect", timing.connect),
        ("request_sent", timing.request_sent),
    ] {
        if let (Some(d), Some(fb)) = (d, timing.first_byte) {
            ensure!(
                d + Duration::from_millis(300) <= fb,
                "{name} at {d:?} is less than the server's 300 ms before the first byte at {fb:?}"
            );
        }
    }
    Ok(t)
}

fn timing_reused(ctx: &mut Ctx) -> CaseResult {
    // On a reused connection there was no lookup and no connect: those
    // phases are absent or, if reported, still in order.
    let first = ctx.get("/bytes/10")?;
    expect_status(&first.trace, 200)?;
    let url = ctx.origin_url("/delay/100")?;
    let (t, r, wall) = load(ctx, build(ResourceRequest::get(url))?)?;
    expect_status(&t, 200)?;
    ensure_eq!(ctx.origin()?.stats().accepted(), 1);
    let timing = *r.timing();
    check_timing(&timing, wall)?;
    if let Some(fb) = timing.first_byte {
        ensure!(
            fb >= Duration::from_millis(100),
            "first byte at {fb:?}, before the server answered"
        );
    }
    Ok(t)
}
