//! Redirects, followed by the manager for every backend alike: the Fetch
//! standard's method rules, Location forms, fragments, the maximum, loops,
//! refusals, the four policies, replayable and one-shot bodies (category
//! `redirect`), and the security rules on every hop (category
//! `redirect-security`).

use std::sync::{Arc, Mutex};

use resource_handle::{
    RedirectAction, RedirectPolicy, RequestBody, RequestBuilder, ResourceRequest, TraceRedirect,
};
use serde_json::Value;

use super::echo_headers;
use super::{build, expect_error, expect_status, sha256, Case, CaseResult, Ctx, Fetched};

/// Every case of both categories.
pub(super) fn cases() -> Vec<Case> {
    let mut all = follow::cases();
    all.extend(security::cases());
    all
}

mod follow {
    cases!("redirect";
        "redirect.301-get" => super::get_301,
        "redirect.302-get" => super::get_302,
        "redirect.303-get" => super::get_303,
        "redirect.307-get" => super::get_307,
        "redirect.308-get" => super::get_308,
        "redirect.301-post-becomes-get" => super::post_301,
        "redirect.302-post-becomes-get" => super::post_302,
        "redirect.303-post-becomes-get" => super::post_303,
        "redirect.307-post-keeps-method-and-body" => super::post_307,
        "redirect.308-post-keeps-method-and-body" => super::post_308,
        "redirect.303-put-becomes-get" => super::put_303,
        "redirect.301-put-keeps-put" => super::put_301,
        "redirect.303-head-stays-head" => super::head_303,
        "redirect.location-relative" => super::location_relative,
        "redirect.location-absolute-path" => super::location_absolute_path,
        "redirect.location-scheme-relative" => super::location_scheme_relative,
        "redirect.location-full-url" => super::location_full,
        "redirect.location-other-origin" => super::location_other_origin,
        "redirect.fragment-carried-over" => super::fragment_carried,
        "redirect.fragment-of-location-kept" => super::fragment_own,
        "redirect.chain-of-3" => super::chain_3,
        "redirect.default-max-20-followed" => super::max_20,
        "redirect.default-max-21-fails" => super::max_21,
        "redirect.max-redirects-2-allows-2" => super::max_2_ok,
        "redirect.max-redirects-2-fails-at-3" => super::max_2_fails,
        "redirect.max-redirects-0-fails-on-first" => super::max_0,
        "redirect.loop-fails" => super::redirect_loop,
        "redirect.location-does-not-parse" => super::location_unparsable,
        "redirect.location-ftp-refused" => super::location_ftp,
        "redirect.location-data-refused" => super::location_data,
        "redirect.3xx-without-location-delivered" => super::no_location,
        "redirect.300-delivered" => super::status_300,
        "redirect.policy-none-delivers-3xx" => super::policy_none,
        "redirect.policy-same-origin-follows-within" => super::same_origin_within,
        "redirect.policy-same-origin-refuses-cross-origin" => super::same_origin_cross,
        "redirect.custom-policy-stop-delivers-3xx" => super::custom_stop,
        "redirect.custom-policy-refuse" => super::custom_refuse,
        "redirect.custom-policy-sees-each-hop" => super::custom_sees_hops,
        "redirect.307-one-shot-stream-refused" => super::stream_307,
        "redirect.308-sized-stream-refused" => super::sized_stream_308,
        "redirect.303-one-shot-stream-followed" => super::stream_303,
        "redirect.307-file-body-resent" => super::file_307,
        "redirect.trace-lists-hops" => super::trace_hops,
    );
}

mod security {
    cases!("redirect-security";
        "redirect-security.credentials-kept-same-origin" => super::credentials_same_origin,
        "redirect-security.credentials-dropped-cross-origin" => super::credentials_cross_origin,
        "redirect-security.credentials-stay-dropped-coming-back" => super::credentials_come_back,
        "redirect-security.credentials-dropped-other-port" => super::credentials_other_port,
        "redirect-security.other-headers-cross-origin-kept" => super::other_headers_kept,
        "redirect-security.referer-kept-http-to-http" => super::referer_same_origin,
        "redirect-security.referer-kept-cross-origin-http" => super::referer_cross_origin,
        "redirect-security.body-headers-dropped-with-body" => super::body_headers_dropped,
    );
}

/// `/redirect-to` on the origin, answering `status` with `Location: location`.
fn redirect_to(ctx: &mut Ctx, location: &str, status: u16) -> Result<String, String> {
    ctx.origin_url(&redirect_path(location, status))
}

fn redirect_path(location: &str, status: u16) -> String {
    format!("/redirect-to?url={}&status={status}", query_value(location))
}

/// Percent-encodes a query value, leaving `:` and `/` as they are so the
/// ports inside a url parameter are still blanked in traces like any other.
fn query_value(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/@!$'()*,;".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Loads `req` and expects a 200 echo after `hops` redirects.
fn followed(ctx: &mut Ctx, req: RequestBuilder, hops: usize) -> Result<(Fetched, Value), String> {
    let f = ctx.fetch(build(req)?)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.redirects.len(), hops);
    // Upload progress of the first request may come before its redirect.
    ensure!(
        f.trace
            .events
            .iter()
            .find(|e| *e != "upload_progress")
            .map(String::as_str)
            == Some("redirected"),
        "events do not start with redirected: {:?}",
        f.trace.events
    );
    let echo = f.json()?;
    Ok((f, echo))
}

fn get_follows(ctx: &mut Ctx, status: u16) -> CaseResult {
    let url = redirect_to(ctx, "/echo", status)?;
    let (f, echo) = followed(ctx, ResourceRequest::get(url), 1)?;
    ensure_eq!(echo["method"], "GET");
    ensure_eq!(echo["target"], "/echo");
    let final_url = ctx.origin_url("/echo")?;
    ensure_eq!(
        f.trace.redirects,
        vec![TraceRedirect {
            status,
            location: final_url.clone()
        }]
    );
    ensure_eq!(f.trace.url, final_url);
    ensure_eq!(
        f.trace.events,
        vec![
            "redirected",
            "response",
            "data",
            "download_progress",
            "finished"
        ]
    );
    Ok(f.trace)
}

fn get_301(ctx: &mut Ctx) -> CaseResult {
    get_follows(ctx, 301)
}
fn get_302(ctx: &mut Ctx) -> CaseResult {
    get_follows(ctx, 302)
}
fn get_303(ctx: &mut Ctx) -> CaseResult {
    get_follows(ctx, 303)
}
fn get_307(ctx: &mut Ctx) -> CaseResult {
    get_follows(ctx, 307)
}
fn get_308(ctx: &mut Ctx) -> CaseResult {
    get_follows(ctx, 308)
}

const POST_BODY: &str = "field=value&other=2";

/// Sends `method` with a body and Content-Type to a `status` redirect and
/// checks what the second request carried.
fn with_body(ctx: &mut Ctx, method: &str, status: u16, keeps: bool) -> CaseResult {
    let url = redirect_to(ctx, "/echo", status)?;
    let req = ResourceRequest::builder(method, url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(POST_BODY);
    let (f, echo) = followed(ctx, req, 1)?;
    let first = ctx
        .origin()?
        .requests()
        .into_iter()
        .next()
        .ok_or("the origin saw no request")?;
    ensure_eq!(first.method, method);
    ensure_eq!(first.body_sha256, sha256(POST_BODY.as_bytes()));
    if keeps {
        ensure_eq!(echo["method"], method);
        ensure_eq!(echo["framing"], format!("length:{}", POST_BODY.len()));
        ensure_eq!(echo["body_sha256"], sha256(POST_BODY.as_bytes()));
        ensure_eq!(
            echo_headers(&echo, "content-type"),
            vec!["application/x-www-form-urlencoded"]
        );
        ensure_eq!(
            f.trace.events,
            vec![
                "upload_progress",
                "redirected",
                "upload_progress",
                "response",
                "data",
                "download_progress",
                "finished"
            ]
        );
    } else {
        ensure_eq!(echo["method"], "GET");
        ensure_eq!(echo["framing"], "none");
        ensure_eq!(echo["body_len"], 0);
        ensure_eq!(echo_headers(&echo, "content-type"), Vec::<&str>::new());
        ensure_eq!(
            f.trace.events,
            vec![
                "upload_progress",
                "redirected",
                "response",
                "data",
                "download_progress",
                "finished"
            ]
        );
    }
    Ok(f.trace)
}

fn post_301(ctx: &mut Ctx) -> CaseResult {
    with_body(ctx, "POST", 301, false)
}
fn post_302(ctx: &mut Ctx) -> CaseResult {
    with_body(ctx, "POST", 302, false)
}
fn post_303(ctx: &mut Ctx) -> CaseResult {
    with_body(ctx, "POST", 303, false)
}
fn post_307(ctx: &mut Ctx) -> CaseResult {
    with_body(ctx, "POST", 307, true)
}
fn post_308(ctx: &mut Ctx) -> CaseResult {
    with_body(ctx, "POST", 308, true)
}
fn put_303(ctx: &mut Ctx) -> CaseResult {
    // 303 means "see other": a GET whatever the method (except HEAD).
    with_body(ctx, "PUT", 303, false)
}
fn put_301(ctx: &mut Ctx) -> CaseResult {
    // 301 and 302 only turn POST into GET.
    with_body(ctx, "PUT", 301, true)
}

fn head_303(ctx: &mut Ctx) -> CaseResult {
    let url = redirect_to(ctx, "/echo", 303)?;
    let f = ctx.fetch(build(ResourceRequest::builder("HEAD", url))?)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.body_bytes, 0);
    ensure_eq!(f.trace.redirects.len(), 1);
    let methods: Vec<(String, String)> = ctx
        .origin()?
        .requests()
        .into_iter()
        .map(|r| (r.method, r.target))
        .collect();
    ensure_eq!(methods.len(), 2);
    ensure_eq!(methods[1], ("HEAD".to_owned(), "/echo".to_owned()));
    Ok(f.trace)
}

/// Follows a Location written as `location` and expects to land on `/echo?form=…`.
fn location_form(ctx: &mut Ctx, location: &str, form: &str) -> CaseResult {
    let url = redirect_to(ctx, location, 302)?;
    let (f, echo) = followed(ctx, ResourceRequest::get(url), 1)?;
    let target = format!("/echo?form={form}");
    ensure_eq!(echo["target"], target.as_str());
    let want = ctx.origin_url(&target)?;
    ensure_eq!(f.trace.redirects[0].location, want);
    ensure_eq!(f.trace.url, want);
    Ok(f.trace)
}

fn location_relative(ctx: &mut Ctx) -> CaseResult {
    // Relative to `/redirect-to`: a sibling path.
    location_form(ctx, "echo?form=relative", "relative")
}
fn location_absolute_path(ctx: &mut Ctx) -> CaseResult {
    location_form(ctx, "/echo?form=absolute-path", "absolute-path")
}
fn location_scheme_relative(ctx: &mut Ctx) -> CaseResult {
    let port = ctx.origin()?.port();
    location_form(
        ctx,
        &format!("//origin.test:{port}/echo?form=scheme-relative"),
        "scheme-relative",
    )
}
fn location_full(ctx: &mut Ctx) -> CaseResult {
    let full = ctx.origin_url("/echo?form=full")?;
    location_form(ctx, &full, "full")
}

fn location_other_origin(ctx: &mut Ctx) -> CaseResult {
    let other = ctx.other_url("/echo")?;
    let url = redirect_to(ctx, &other, 302)?;
    let (f, echo) = followed(ctx, ResourceRequest::get(url), 1)?;
    ensure_eq!(echo["host"][0], "other.test:PORT");
    ensure_eq!(f.trace.url, other);
    ensure_eq!(ctx.other_origin()?.requests().len(), 1);
    Ok(f.trace)
}

fn fragment_carried(ctx: &mut Ctx) -> CaseResult {
    let url = redirect_to(ctx, "/echo", 302)?;
    let (f, echo) = followed(ctx, ResourceRequest::get(format!("{url}#section-2")), 1)?;
    // The fragment is never sent, but it is carried to the next url.
    ensure_eq!(echo["target"], "/echo");
    let want = ctx.origin_url("/echo#section-2")?;
    ensure_eq!(f.trace.redirects[0].location, want);
    ensure_eq!(f.trace.url, want);
    Ok(f.trace)
}

fn fragment_own(ctx: &mut Ctx) -> CaseResult {
    let url = redirect_to(ctx, "/echo#own", 302)?;
    let (f, echo) = followed(ctx, ResourceRequest::get(format!("{url}#section-2")), 1)?;
    ensure_eq!(echo["target"], "/echo");
    let want = ctx.origin_url("/echo#own")?;
    ensure_eq!(f.trace.redirects[0].location, want);
    ensure_eq!(f.trace.url, want);
    Ok(f.trace)
}

fn chain_3(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/redirect/3")?;
    let (f, echo) = followed(ctx, ResourceRequest::get(url), 3)?;
    ensure_eq!(echo["target"], "/redirect/0");
    let mut want = Vec::new();
    for n in [2, 1, 0] {
        want.push(TraceRedirect {
            status: 302,
            location: ctx.origin_url(&format!("/redirect/{n}"))?,
        });
    }
    ensure_eq!(f.trace.redirects, want);
    ensure_eq!(
        f.trace.events,
        vec![
            "redirected",
            "redirected",
            "redirected",
            "response",
            "data",
            "download_progress",
            "finished"
        ]
    );
    ensure_eq!(ctx.origin()?.requests().len(), 4);
    Ok(f.trace)
}

/// Loads `/redirect/N` with `max_redirects` set on the request when given.
fn hops(ctx: &mut Ctx, n: u32, max: Option<u32>) -> Result<Fetched, String> {
    let url = ctx.origin_url(&format!("/redirect/{n}"))?;
    let mut req = ResourceRequest::get(url);
    if let Some(m) = max {
        req = req.max_redirects(m);
    }
    ctx.fetch(build(req)?)
}

fn hops_ok(ctx: &mut Ctx, n: u32, max: Option<u32>) -> CaseResult {
    let f = hops(ctx, n, max)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.redirects.len(), n as usize);
    ensure_eq!(f.json()?["target"], "/redirect/0");
    ensure_eq!(ctx.origin()?.requests().len(), n as usize + 1);
    Ok(f.trace)
}

/// `/redirect/N` fails with too_many_redirects once `followed` hops were made.
fn hops_fail(ctx: &mut Ctx, n: u32, max: Option<u32>, followed: usize) -> CaseResult {
    let f = hops(ctx, n, max)?;
    expect_error(&f.trace, "too_many_redirects")?;
    ensure_eq!(f.trace.redirects.len(), followed);
    ensure_eq!(f.trace.status, None);
    let mut events = vec!["redirected"; followed];
    events.push("failed");
    ensure_eq!(f.trace.events, events);
    // The hop past the maximum is the last request made.
    ensure_eq!(ctx.origin()?.requests().len(), followed + 1);
    Ok(f.trace)
}

fn max_20(ctx: &mut Ctx) -> CaseResult {
    hops_ok(ctx, 20, None)
}
fn max_21(ctx: &mut Ctx) -> CaseResult {
    hops_fail(ctx, 21, None, 20)
}
fn max_2_ok(ctx: &mut Ctx) -> CaseResult {
    hops_ok(ctx, 2, Some(2))
}
fn max_2_fails(ctx: &mut Ctx) -> CaseResult {
    hops_fail(ctx, 3, Some(2), 2)
}
fn max_0(ctx: &mut Ctx) -> CaseResult {
    hops_fail(ctx, 1, Some(0), 0)
}

fn redirect_loop(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/loop")?;
    let f = ctx.fetch(build(ResourceRequest::get(url))?)?;
    expect_error(&f.trace, "too_many_redirects")?;
    ensure_eq!(f.trace.redirects.len(), 20);
    let targets: Vec<String> = ctx
        .origin()?
        .requests()
        .into_iter()
        .map(|r| r.target)
        .collect();
    ensure_eq!(targets, vec!["/loop".to_owned(); 21]);
    Ok(f.trace)
}

/// A redirect to `location` fails with redirect_refused after one request.
fn refused(ctx: &mut Ctx, location: &str) -> CaseResult {
    let url = redirect_to(ctx, location, 302)?;
    let f = ctx.fetch(build(ResourceRequest::get(url))?)?;
    expect_error(&f.trace, "redirect_refused")?;
    ensure_eq!(f.trace.events, vec!["failed"]);
    ensure_eq!(f.trace.redirects.len(), 0);
    ensure_eq!(ctx.origin()?.requests().len(), 1);
    Ok(f.trace)
}

fn location_unparsable(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "http://[::1")
}
fn location_ftp(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "ftp://origin.test/file.txt")
}
fn location_data(ctx: &mut Ctx) -> CaseResult {
    // A redirect may not turn a network load into a local one.
    refused(ctx, "data:text/plain,surprise")
}

fn delivered(f: &Fetched, status: u16, body: &str) -> CaseResult {
    expect_status(&f.trace, status)?;
    ensure_eq!(String::from_utf8_lossy(&f.body), body);
    ensure_eq!(f.trace.redirects.len(), 0);
    ensure_eq!(
        f.trace.events,
        vec!["response", "data", "download_progress", "finished"]
    );
    Ok(f.trace.clone())
}

fn no_location(ctx: &mut Ctx) -> CaseResult {
    let f = ctx.get("/no-location?status=302")?;
    delivered(&f, 302, "no location\n")
}

fn status_300(ctx: &mut Ctx) -> CaseResult {
    // 300 Multiple Choices is not followed, Location or not.
    let url = redirect_to(ctx, "/echo", 300)?;
    let f = ctx.fetch(build(ResourceRequest::get(url))?)?;
    let t = delivered(&f, 300, "redirecting\n")?;
    ensure!(
        t.headers
            .iter()
            .any(|(n, v)| n == "location" && v == "/echo"),
        "the 300's Location is missing: {:?}",
        t.headers
    );
    ensure_eq!(ctx.origin()?.requests().len(), 1);
    Ok(t)
}

fn policy_none(ctx: &mut Ctx) -> CaseResult {
    let url = redirect_to(ctx, "/echo", 302)?;
    let f = ctx.fetch(build(
        ResourceRequest::get(url).redirect_policy(RedirectPolicy::None),
    )?)?;
    let t = delivered(&f, 302, "redirecting\n")?;
    ensure_eq!(ctx.origin()?.requests().len(), 1);
    Ok(t)
}

fn same_origin_within(ctx: &mut Ctx) -> CaseResult {
    let url = redirect_to(ctx, "/echo", 302)?;
    let (f, _) = followed(
        ctx,
        ResourceRequest::get(url).redirect_policy(RedirectPolicy::SameOrigin),
        1,
    )?;
    Ok(f.trace)
}

fn same_origin_cross(ctx: &mut Ctx) -> CaseResult {
    let other = ctx.other_url("/echo")?;
    let url = redirect_to(ctx, &other, 302)?;
    let f = ctx.fetch(build(
        ResourceRequest::get(url).redirect_policy(RedirectPolicy::SameOrigin),
    )?)?;
    expect_error(&f.trace, "redirect_refused")?;
    ensure_eq!(f.trace.events, vec!["failed"]);
    ensure_eq!(ctx.other_origin()?.requests().len(), 0);
    Ok(f.trace)
}

fn custom_stop(ctx: &mut Ctx) -> CaseResult {
    // Follow the first hop, stop at the second: its 302 is the response.
    let url = ctx.origin_url("/redirect/3")?;
    let policy = RedirectPolicy::custom(|hop| {
        if hop.count == 0 {
            RedirectAction::Follow
        } else {
            RedirectAction::Stop
        }
    });
    let f = ctx.fetch(build(ResourceRequest::get(url).redirect_policy(policy))?)?;
    expect_status(&f.trace, 302)?;
    ensure_eq!(f.trace.redirects.len(), 1);
    ensure_eq!(String::from_utf8_lossy(&f.body), "redirecting\n");
    ensure!(
        f.trace
            .headers
            .iter()
            .any(|(n, v)| n == "location" && v == "/redirect/1"),
        "the delivered 302 lost its Location: {:?}",
        f.trace.headers
    );
    ensure_eq!(f.trace.url, ctx.origin_url("/redirect/2")?);
    ensure_eq!(ctx.origin()?.requests().len(), 2);
    Ok(f.trace)
}

fn custom_refuse(ctx: &mut Ctx) -> CaseResult {
    let url = redirect_to(ctx, "/echo", 307)?;
    let policy = RedirectPolicy::custom(|_| RedirectAction::Refuse);
    let f = ctx.fetch(build(ResourceRequest::get(url).redirect_policy(policy))?)?;
    expect_error(&f.trace, "redirect_refused")?;
    ensure_eq!(f.trace.events, vec!["failed"]);
    ensure_eq!(ctx.origin()?.requests().len(), 1);
    Ok(f.trace)
}

/// A hop as a redirect callback saw it: status, from, to, method, count.
type Hop = (u16, String, String, String, u32);

fn custom_sees_hops(ctx: &mut Ctx) -> CaseResult {
    // A POST answered 303 to /redirect/1, which answers 302 to /redirect/0.
    let url = redirect_to(ctx, "/redirect/1", 303)?;
    let seen: Arc<Mutex<Vec<Hop>>> = Arc::default();
    let log = seen.clone();
    let policy = RedirectPolicy::custom(move |hop| {
        log.lock().unwrap_or_else(|p| p.into_inner()).push((
            hop.status.as_u16(),
            hop.from.to_string(),
            hop.to.to_string(),
            hop.method.to_string(),
            hop.count,
        ));
        RedirectAction::Follow
    });
    let req = ResourceRequest::post(url.clone())
        .body("x")
        .redirect_policy(policy);
    let (f, _) = followed(ctx, req, 2)?;
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let hop1 = ctx.origin_url("/redirect/1")?;
    let hop2 = ctx.origin_url("/redirect/0")?;
    ensure_eq!(
        seen,
        vec![
            (303, url, hop1.clone(), "GET".to_owned(), 0),
            (302, hop1, hop2, "GET".to_owned(), 1),
        ]
    );
    Ok(f.trace)
}

/// The data a one-shot stream sends.
fn stream_data() -> Vec<u8> {
    (0..50_000u32).map(|i| (i % 199) as u8).collect()
}

/// A 307/308 that needs a one-shot stream again fails with redirect_refused,
/// and nothing is sent a second time.
fn stream_refused(ctx: &mut Ctx, status: u16, body: RequestBody) -> CaseResult {
    let url = redirect_to(ctx, "/echo", status)?;
    let f = ctx.fetch(build(ResourceRequest::post(url).body(body))?)?;
    expect_error(&f.trace, "redirect_refused")?;
    ensure_eq!(f.trace.events, vec!["upload_progress", "failed"]);
    let reqs = ctx.origin()?.requests();
    ensure_eq!(reqs.len(), 1);
    ensure_eq!(reqs[0].body_sha256, sha256(&stream_data()));
    Ok(f.trace)
}

fn stream_307(ctx: &mut Ctx) -> CaseResult {
    let body = RequestBody::chunked(std::io::Cursor::new(stream_data()));
    stream_refused(ctx, 307, body)
}

fn sized_stream_308(ctx: &mut Ctx) -> CaseResult {
    let data = stream_data();
    let len = data.len() as u64;
    stream_refused(
        ctx,
        308,
        RequestBody::sized(std::io::Cursor::new(data), len),
    )
}

fn stream_303(ctx: &mut Ctx) -> CaseResult {
    // A 303 drops the body, so a one-shot stream is no obstacle.
    let url = redirect_to(ctx, "/echo", 303)?;
    let body = RequestBody::chunked(std::io::Cursor::new(stream_data()));
    let (f, echo) = followed(ctx, ResourceRequest::post(url).body(body), 1)?;
    ensure_eq!(echo["method"], "GET");
    ensure_eq!(echo["body_len"], 0);
    Ok(f.trace)
}

fn file_307(ctx: &mut Ctx) -> CaseResult {
    let dir = std::env::temp_dir().join(format!(
        "rh-redirect-{}-{}-{:?}",
        std::process::id(),
        ctx.backend().name(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join("body.bin");
    let data = stream_data();
    let written = std::fs::write(&path, &data).map_err(|e| e.to_string());
    let result = written.and_then(|()| {
        let url = redirect_to(ctx, "/echo", 307)?;
        followed(
            ctx,
            ResourceRequest::post(url).body(RequestBody::File(path.clone())),
            1,
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
    let (f, echo) = result?;
    ensure_eq!(echo["method"], "POST");
    ensure_eq!(echo["framing"], format!("length:{}", data.len()));
    ensure_eq!(echo["body_sha256"], sha256(&data));
    let reqs = ctx.origin()?.requests();
    ensure_eq!(reqs.len(), 2);
    ensure_eq!(reqs[0].body_sha256, sha256(&data));
    Ok(f.trace)
}

fn trace_hops(ctx: &mut Ctx) -> CaseResult {
    // 301 → 308 → 302 → /echo: each hop in the trace with its status and target.
    let last = redirect_path("/echo", 302);
    let middle = redirect_path(&last, 308);
    let url = redirect_to(ctx, &middle, 301)?;
    let (f, _) = followed(ctx, ResourceRequest::get(url), 3)?;
    let want = vec![
        TraceRedirect {
            status: 301,
            location: ctx.origin_url(&middle)?,
        },
        TraceRedirect {
            status: 308,
            location: ctx.origin_url(&last)?,
        },
        TraceRedirect {
            status: 302,
            location: ctx.origin_url("/echo")?,
        },
    ];
    ensure_eq!(f.trace.redirects, want);
    Ok(f.trace)
}

// ---- redirect-security ----

/// A request carrying the three credentials headers and a custom one.
fn with_credentials(url: String) -> RequestBuilder {
    ResourceRequest::get(url)
        .header("authorization", "Bearer secret-token")
        .header("cookie", "session=abc123")
        .header("proxy-authorization", "Basic cHJveHk6c2VjcmV0")
        .header("x-custom", "kept")
}

const CREDENTIALS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

fn credential_headers(echo: &Value) -> Vec<(String, String)> {
    echo["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| Some((h[0].as_str()?.to_owned(), h[1].as_str()?.to_owned())))
        .filter(|(n, _)| CREDENTIALS.contains(&n.as_str()))
        .collect()
}

fn credentials_same_origin(ctx: &mut Ctx) -> CaseResult {
    let url = redirect_to(ctx, "/echo", 302)?;
    let (f, echo) = followed(ctx, with_credentials(url), 1)?;
    ensure_eq!(
        credential_headers(&echo),
        vec![
            ("authorization".to_owned(), "Bearer secret-token".to_owned()),
            ("cookie".to_owned(), "session=abc123".to_owned()),
            (
                "proxy-authorization".to_owned(),
                "Basic cHJveHk6c2VjcmV0".to_owned()
            ),
        ]
    );
    Ok(f.trace)
}

/// Every request the second origin received carried no credentials.
fn none_reached(which: &str, reqs: Vec<crate::servers::RecordedRequest>) -> Result<(), String> {
    for r in reqs {
        for name in CREDENTIALS {
            ensure!(
                r.header_values(name).is_empty(),
                "{name} reached {which} with {} {}",
                r.method,
                r.target
            );
        }
    }
    Ok(())
}

fn credentials_cross_origin(ctx: &mut Ctx) -> CaseResult {
    let other = ctx.other_url("/echo")?;
    let url = redirect_to(ctx, &other, 302)?;
    let (f, echo) = followed(ctx, with_credentials(url), 1)?;
    ensure_eq!(credential_headers(&echo), Vec::<(String, String)>::new());
    let reqs = ctx.other_origin()?.requests();
    ensure_eq!(reqs.len(), 1);
    none_reached("the other origin", reqs)?;
    // The first origin did get them.
    let first = ctx.origin()?.requests();
    ensure_eq!(
        first[0].header_values("authorization"),
        vec!["Bearer secret-token"]
    );
    Ok(f.trace)
}

fn credentials_come_back(ctx: &mut Ctx) -> CaseResult {
    // origin → other → origin: stripped at the first crossing, never restored.
    let back = ctx.origin_url("/echo")?;
    let via = ctx.other_url(&redirect_path(&back, 302))?;
    let url = redirect_to(ctx, &via, 302)?;
    let (f, echo) = followed(ctx, with_credentials(url), 2)?;
    ensure_eq!(credential_headers(&echo), Vec::<(String, String)>::new());
    ensure_eq!(echo_headers(&echo, "x-custom"), vec!["kept"]);
    let reqs = ctx.other_origin()?.requests();
    none_reached("the other origin", reqs)?;
    let reqs = ctx.origin()?.requests();
    ensure_eq!(reqs.len(), 2);
    none_reached("the origin on the way back", reqs[1..].to_vec())?;
    Ok(f.trace)
}

fn credentials_other_port(ctx: &mut Ctx) -> CaseResult {
    // Same host name, another port: another origin.
    let second =
        crate::servers::Origin::start().map_err(|e| format!("second origin did not start: {e}"))?;
    let port = second.port();
    ctx.map_host(
        super::ORIGIN_HOST,
        port,
        vec![std::net::Ipv4Addr::LOCALHOST.into()],
    );
    let url = redirect_to(ctx, &format!("http://origin.test:{port}/echo"), 307)?;
    let (f, echo) = followed(ctx, with_credentials(url), 1)?;
    ensure_eq!(credential_headers(&echo), Vec::<(String, String)>::new());
    none_reached("the origin on the other port", second.requests())?;
    Ok(f.trace)
}

fn other_headers_kept(ctx: &mut Ctx) -> CaseResult {
    let other = ctx.other_url("/echo")?;
    let url = redirect_to(ctx, &other, 302)?;
    let req = ResourceRequest::get(url)
        .header("x-custom", "kept")
        .header("accept-language", "fr")
        .user_agent("security-test/1.0");
    let (f, echo) = followed(ctx, req, 1)?;
    ensure_eq!(echo_headers(&echo, "x-custom"), vec!["kept"]);
    ensure_eq!(echo_headers(&echo, "accept-language"), vec!["fr"]);
    ensure_eq!(echo_headers(&echo, "user-agent"), vec!["security-test/1.0"]);
    Ok(f.trace)
}

fn referer_after(ctx: &mut Ctx, target: String) -> CaseResult {
    let url = redirect_to(ctx, &target, 302)?;
    let req = ResourceRequest::get(url).referrer("http://origin.test/previous-page");
    let (f, echo) = followed(ctx, req, 1)?;
    ensure_eq!(
        echo_headers(&echo, "referer"),
        vec!["http://origin.test/previous-page"]
    );
    let first = ctx.origin()?.requests();
    ensure_eq!(
        first[0].header_values("referer"),
        vec!["http://origin.test/previous-page"]
    );
    Ok(f.trace)
}

fn referer_same_origin(ctx: &mut Ctx) -> CaseResult {
    let target = ctx.origin_url("/echo")?;
    referer_after(ctx, target)
}

fn referer_cross_origin(ctx: &mut Ctx) -> CaseResult {
    let target = ctx.other_url("/echo")?;
    referer_after(ctx, target)
}

fn body_headers_dropped(ctx: &mut Ctx) -> CaseResult {
    // With the body go the headers that describe it (Fetch's request-body-header names).
    let url = redirect_to(ctx, "/echo", 303)?;
    let req = ResourceRequest::post(url)
        .header("content-type", "text/plain")
        .header("content-language", "en")
        .header("content-encoding", "identity")
        .header("content-location", "/draft")
        .header("x-custom", "kept")
        .body("a body");
    let (f, echo) = followed(ctx, req, 1)?;
    for name in [
        "content-type",
        "content-language",
        "content-encoding",
        "content-location",
    ] {
        ensure_eq!(
            (name, echo_headers(&echo, name)),
            (name, Vec::<&str>::new())
        );
    }
    ensure_eq!(echo_headers(&echo, "x-custom"), vec!["kept"]);
    Ok(f.trace)
}
