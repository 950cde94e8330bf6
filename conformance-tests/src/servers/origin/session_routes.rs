//! Cookies and Basic authentication: the routes of the cookie and auth cases.
//!
//! - `/cookies/set?c=SET-COOKIE… [location=URL] [status=S]`: one `Set-Cookie`
//!   field per `c`, in order and exactly as given; with `location`, a redirect
//!   (status S, default 302) to URL, else a 200.
//! - `/cookies` and `/cookies/ANY/PATH`: a 200 whose JSON body is the `Cookie`
//!   header received (`"cookie"`: the values in order, `[]` without one) and
//!   its pairs (`"pairs"`: `[[name, value], …]` in the order sent).
//! - `/basic-auth/USER/PASS [realm=R] [scheme=S] [location=URL]`: the `/echo`
//!   answer when the request carries `Authorization: Basic` for USER:PASS (or,
//!   with `location`, a 302 there); otherwise 401 with `WWW-Authenticate: S
//!   realm="R"` (S default `Basic`, R default `origin`).

use std::io;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::{echo_json, reason_for, redirect, status_param, Req, Responder};

/// `/cookies/set`.
pub(super) fn set(mut r: Responder<'_>, q: &Req<'_>) -> io::Result<bool> {
    let mut headers: Vec<(&str, String)> = q
        .pairs
        .iter()
        .filter(|(n, _)| n == "c")
        .map(|(_, v)| ("set-cookie", v.clone()))
        .collect();
    let (status, body): (u16, &[u8]) = match q.query.get("location") {
        Some(location) => {
            headers.push(("location", location.clone()));
            (status_param(q.query, 302), b"redirecting\n")
        }
        None => (200, b"cookies set\n"),
    };
    headers.push(("content-type", "text/plain".into()));
    headers.push(("content-length", body.len().to_string()));
    r.head(status, reason_for(status), &headers)?;
    if !r.is_head {
        r.out.write_all(body)?;
    }
    Ok(true)
}

/// `/cookies…`: what the client sent.
pub(super) fn show(mut r: Responder<'_>, q: &Req<'_>) -> io::Result<bool> {
    let values = q.record.header_values("cookie");
    let pairs: Vec<(String, String)> = values
        .iter()
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.to_owned(), v.to_owned()),
            None => (String::new(), p.to_owned()),
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({
        "cookie": values,
        "pairs": pairs,
    }))
    .map_err(io::Error::other)?;
    r.full(200, "OK", "application/json", &body)
}

/// `/basic-auth/USER/PASS`.
pub(super) fn basic(
    mut r: Responder<'_>,
    q: &Req<'_>,
    user: &str,
    pass: &str,
    local_port: u16,
) -> io::Result<bool> {
    let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")));
    let authorized = q
        .record
        .header_values("authorization")
        .iter()
        .any(|v| *v == expected);
    if authorized {
        if let Some(location) = q.query.get("location") {
            return redirect(&mut r, 302, location);
        }
        let body =
            serde_json::to_vec(&echo_json(q.record, local_port)).map_err(io::Error::other)?;
        return r.full(200, "OK", "application/json", &body);
    }
    let scheme = q.query.get("scheme").map_or("Basic", String::as_str);
    let realm = q.query.get("realm").map_or("origin", String::as_str);
    let body = b"authentication required\n";
    r.head(
        401,
        "Unauthorized",
        &[
            ("www-authenticate", format!("{scheme} realm=\"{realm}\"")),
            ("content-type", "text/plain".into()),
            ("content-length", body.len().to_string()),
        ],
    )?;
    if !r.is_head {
        r.out.write_all(body)?;
    }
    Ok(true)
}
