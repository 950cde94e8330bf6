//! HTTP Basic authentication, done by the manager for every backend alike
//! (category `auth`): a 401 with a Basic challenge answered once with the
//! credentials given for the origin, found in the url, or asked of the
//! authenticator; refused credentials fail with `auth`; no credentials
//! deliver the 401; and credentials never reach another origin.

use std::sync::{Arc, Mutex};

use resource_handle::{AuthChallenge, Credentials, RequestBody, ResourceRequest};

use super::cookies::query_value;
use super::{build, expect_error, expect_status, sha256, CaseResult, Ctx, Fetched, ORIGIN_HOST};

cases!("auth";
    "auth.401-without-credentials-delivered" => no_credentials,
    "auth.given-credentials-sent-after-challenge" => given_after_challenge,
    "auth.authenticator-asked-with-realm" => authenticator_asked,
    "auth.authenticator-declines-401-delivered" => authenticator_declines,
    "auth.wrong-credentials-fail" => wrong_credentials,
    "auth.authenticator-asked-once" => authenticator_once,
    "auth.url-credentials-used" => url_credentials,
    "auth.accepted-credentials-sent-at-once" => accepted_sent_at_once,
    "auth.not-sent-to-other-origin-on-redirect" => not_sent_cross_origin,
    "auth.credentials-of-other-port-not-used" => other_port_not_used,
    "auth.application-authorization-kept" => application_header_kept,
    "auth.post-body-sent-again" => post_body_again,
    "auth.one-shot-stream-cannot-be-sent-again" => one_shot_stream,
    "auth.non-basic-challenge-delivered" => non_basic,
);

/// `Basic` for `u:p`.
const U_P: &str = "Basic dTpw";

/// The origin's base url, `http://origin.test:PORT`.
fn base(ctx: &mut Ctx) -> Result<String, String> {
    ctx.origin_url("")
}

/// The Authorization headers of the requests the origin received.
fn authorizations(ctx: &mut Ctx) -> Result<Vec<Vec<String>>, String> {
    Ok(ctx
        .origin()?
        .requests()
        .iter()
        .map(|r| {
            r.header_values("authorization")
                .into_iter()
                .map(str::to_owned)
                .collect()
        })
        .collect())
}

fn none() -> Vec<String> {
    Vec::new()
}

fn basic(v: &str) -> Vec<String> {
    vec![v.to_owned()]
}

/// Expects the 401 of `/basic-auth` as the response.
fn expect_401(f: &Fetched) -> Result<(), String> {
    expect_status(&f.trace, 401)?;
    ensure_eq!(f.body, b"authentication required\n".to_vec());
    Ok(())
}

fn no_credentials(ctx: &mut Ctx) -> CaseResult {
    let f = ctx.get("/basic-auth/u/p")?;
    expect_401(&f)?;
    ensure_eq!(authorizations(ctx)?, vec![none()]);
    Ok(f.trace)
}

fn given_after_challenge(ctx: &mut Ctx) -> CaseResult {
    let origin = base(ctx)?;
    let url = ctx.origin_url("/basic-auth/u/p")?;
    let m = ctx.manager_with(|b| b.credentials(&origin, "u", "p"))?;
    let f = ctx.drain(m.load(build(ResourceRequest::get(url))?));
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.redirects.len(), 0);
    ensure_eq!(
        f.trace.events,
        vec!["response", "data", "download_progress", "finished"]
    );
    // Asked first, then sent once.
    ensure_eq!(authorizations(ctx)?, vec![none(), basic(U_P)]);
    Ok(f.trace)
}

type Seen = Arc<Mutex<Vec<(String, Option<String>, bool)>>>;

/// A manager whose authenticator records each challenge and answers `answer`.
fn asking(
    ctx: &mut Ctx,
    answer: Option<(&'static str, &'static str)>,
) -> Result<(resource_handle::NetworkAccessManager, Seen), String> {
    ctx.origin()?;
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let m = ctx.manager_with(move |b| {
        Ok(b.authenticator(move |c: &AuthChallenge| {
            if let Ok(mut s) = s.lock() {
                s.push((c.url.to_string(), c.realm.clone(), c.retry));
            }
            answer.and_then(|(u, p)| Credentials::new(u, p).ok())
        }))
    })?;
    Ok((m, seen))
}

fn seen(s: &Seen) -> Vec<(String, Option<String>, bool)> {
    s.lock().map(|v| v.clone()).unwrap_or_default()
}

fn authenticator_asked(ctx: &mut Ctx) -> CaseResult {
    let (m, asked) = asking(ctx, Some(("u", "p")))?;
    let url = ctx.origin_url("/basic-auth/u/p?realm=the+zone")?;
    let f = ctx.drain(m.load(build(ResourceRequest::get(&url))?));
    expect_status(&f.trace, 200)?;
    ensure_eq!(
        seen(&asked),
        vec![(url, Some("the zone".to_owned()), false)]
    );
    ensure_eq!(authorizations(ctx)?, vec![none(), basic(U_P)]);
    Ok(f.trace)
}

fn authenticator_declines(ctx: &mut Ctx) -> CaseResult {
    let (m, asked) = asking(ctx, None)?;
    let url = ctx.origin_url("/basic-auth/u/p")?;
    let f = ctx.drain(m.load(build(ResourceRequest::get(&url))?));
    expect_401(&f)?;
    ensure_eq!(seen(&asked).len(), 1);
    ensure_eq!(authorizations(ctx)?, vec![none()]);
    Ok(f.trace)
}

fn wrong_credentials(ctx: &mut Ctx) -> CaseResult {
    let origin = base(ctx)?;
    let url = ctx.origin_url("/basic-auth/u/p")?;
    let m = ctx.manager_with(|b| b.credentials(&origin, "u", "wrong"))?;
    let f = ctx.drain(m.load(build(ResourceRequest::get(url))?));
    expect_error(&f.trace, "auth")?;
    ensure_eq!(f.trace.status, None);
    ensure_eq!(
        authorizations(ctx)?,
        vec![none(), basic("Basic dTp3cm9uZw==")]
    );
    Ok(f.trace)
}

fn authenticator_once(ctx: &mut Ctx) -> CaseResult {
    let (m, asked) = asking(ctx, Some(("u", "nope")))?;
    let url = ctx.origin_url("/basic-auth/u/p")?;
    let f = ctx.drain(m.load(build(ResourceRequest::get(&url))?));
    expect_error(&f.trace, "auth")?;
    // Asked once: the refused answer is not retried in a loop.
    ensure_eq!(seen(&asked), vec![(url, Some("origin".to_owned()), false)]);
    ensure_eq!(authorizations(ctx)?.len(), 2);
    Ok(f.trace)
}

fn url_credentials(ctx: &mut Ctx) -> CaseResult {
    let port = ctx.origin()?.port();
    let url = format!("http://u:p@{ORIGIN_HOST}:{port}/basic-auth/u/p");
    let f = ctx.fetch(build(ResourceRequest::get(url))?)?;
    expect_status(&f.trace, 200)?;
    // The credentials never show in the url the application sees.
    ensure_eq!(
        f.trace.url,
        format!("http://{ORIGIN_HOST}:{port}/basic-auth/u/p")
    );
    ensure_eq!(authorizations(ctx)?, vec![none(), basic(U_P)]);
    let first = ctx.origin()?.requests()[0].target.clone();
    ensure_eq!(first, "/basic-auth/u/p");
    Ok(f.trace)
}

fn accepted_sent_at_once(ctx: &mut Ctx) -> CaseResult {
    let origin = base(ctx)?;
    let url = ctx.origin_url("/basic-auth/u/p")?;
    let m = ctx.manager_with(|b| b.credentials(&origin, "u", "p"))?;
    let f = ctx.drain(m.load(build(ResourceRequest::get(&url))?));
    expect_status(&f.trace, 200)?;
    let f = ctx.drain(m.load(build(ResourceRequest::get(&url))?));
    expect_status(&f.trace, 200)?;
    ensure_eq!(authorizations(ctx)?, vec![none(), basic(U_P), basic(U_P)]);
    Ok(f.trace)
}

fn not_sent_cross_origin(ctx: &mut Ctx) -> CaseResult {
    let other = ctx.other_url("/echo")?;
    let origin = base(ctx)?;
    let url = ctx.origin_url(&format!("/basic-auth/u/p?location={}", query_value(&other)))?;
    let m = ctx.manager_with(|b| b.credentials(&origin, "u", "p"))?;
    let f = ctx.drain(m.load(build(ResourceRequest::get(url))?));
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.redirects.len(), 1);
    ensure_eq!(authorizations(ctx)?, vec![none(), basic(U_P)]);
    let at_other = ctx
        .other_origin()?
        .requests()
        .iter()
        .map(|r| r.header_values("authorization").len())
        .collect::<Vec<_>>();
    ensure_eq!(at_other, vec![0]);
    Ok(f.trace)
}

fn other_port_not_used(ctx: &mut Ctx) -> CaseResult {
    let port = ctx.origin()?.port();
    let elsewhere = format!("http://{ORIGIN_HOST}:{}", port.wrapping_add(1).max(1));
    let url = ctx.origin_url("/basic-auth/u/p")?;
    let m = ctx.manager_with(|b| b.credentials(&elsewhere, "u", "p"))?;
    let f = ctx.drain(m.load(build(ResourceRequest::get(url))?));
    expect_401(&f)?;
    ensure_eq!(authorizations(ctx)?, vec![none()]);
    Ok(f.trace)
}

fn application_header_kept(ctx: &mut Ctx) -> CaseResult {
    let origin = base(ctx)?;
    let url = ctx.origin_url("/basic-auth/u/p")?;
    let m = ctx.manager_with(|b| b.credentials(&origin, "u", "p"))?;
    let req = ResourceRequest::get(url).header("authorization", "Basic bm9ib2R5Og==");
    let f = ctx.drain(m.load(build(req)?));
    expect_401(&f)?;
    ensure_eq!(authorizations(ctx)?, vec![basic("Basic bm9ib2R5Og==")]);
    Ok(f.trace)
}

fn post_body_again(ctx: &mut Ctx) -> CaseResult {
    const BODY: &str = "name=value&n=2";
    let origin = base(ctx)?;
    let url = ctx.origin_url("/basic-auth/u/p")?;
    let m = ctx.manager_with(|b| b.credentials(&origin, "u", "p"))?;
    let req = ResourceRequest::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(BODY);
    let f = ctx.drain(m.load(build(req)?));
    expect_status(&f.trace, 200)?;
    let echo = f.json()?;
    ensure_eq!(echo["method"], "POST");
    ensure_eq!(echo["body_sha256"], sha256(BODY.as_bytes()));
    let requests = ctx.origin()?.requests();
    ensure_eq!(requests.len(), 2);
    for r in &requests {
        ensure_eq!(r.body_sha256, sha256(BODY.as_bytes()));
    }
    Ok(f.trace)
}

fn one_shot_stream(ctx: &mut Ctx) -> CaseResult {
    let origin = base(ctx)?;
    let url = ctx.origin_url("/basic-auth/u/p")?;
    let m = ctx.manager_with(|b| b.credentials(&origin, "u", "p"))?;
    let body = RequestBody::chunked(std::io::Cursor::new(b"streamed once".to_vec()));
    let f = ctx.drain(m.load(build(ResourceRequest::post(url).body(body))?));
    expect_error(&f.trace, "auth")?;
    ensure_eq!(authorizations(ctx)?, vec![none()]);
    Ok(f.trace)
}

fn non_basic(ctx: &mut Ctx) -> CaseResult {
    let origin = base(ctx)?;
    let url = ctx.origin_url("/basic-auth/u/p?scheme=Bearer")?;
    let m = ctx.manager_with(|b| b.credentials(&origin, "u", "p"))?;
    let f = ctx.drain(m.load(build(ResourceRequest::get(url))?));
    expect_401(&f)?;
    ensure_eq!(authorizations(ctx)?, vec![none()]);
    Ok(f.trace)
}
