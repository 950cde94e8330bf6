//! Bad input from the application: urls, schemes, header injection and
//! methods are refused before anything is sent, and a request body that
//! fails or lies about its length never reaches the server whole.
//!
//! Each case runs a valid request through the same manager to the same
//! server as well, so a pass shows both that the backend's socket was live
//! and that the bad request never reached it.

use std::io::{self, Read};
use std::time::Duration;

use resource_handle::{RequestBody, RequestBuilder, ResourceRequest, Trace};

use super::faults::{answers, get, load, serve};
use super::{build, expect_error, expect_status, wait_for, CaseResult, Ctx};
use crate::servers::RawServer;

cases!("bad-input";
    "bad-input.url-does-not-parse" => url_unparsable,
    "bad-input.url-port-out-of-range" => url_port,
    "bad-input.url-empty-host" => url_empty_host,
    "bad-input.url-crlf" => url_crlf,
    "bad-input.url-nul" => url_nul,
    "bad-input.host-crlf" => host_crlf,
    "bad-input.host-space" => host_space,
    "bad-input.host-percent-encoded-crlf" => host_percent_crlf,
    "bad-input.scheme-gopher-unsupported" => scheme_gopher,
    "bad-input.scheme-ftp-unsupported" => scheme_ftp,
    "bad-input.header-value-crlf" => value_crlf,
    "bad-input.header-value-lf" => value_lf,
    "bad-input.header-value-cr" => value_cr,
    "bad-input.header-value-nul" => value_nul,
    "bad-input.header-name-crlf" => name_crlf,
    "bad-input.header-name-colon" => name_colon,
    "bad-input.header-name-space" => name_space,
    "bad-input.header-name-empty" => name_empty,
    "bad-input.user-agent-crlf" => user_agent_crlf,
    "bad-input.referrer-lf" => referrer_lf,
    "bad-input.method-with-space" => method_space,
    "bad-input.method-with-crlf" => method_crlf,
    "bad-input.method-empty" => method_empty,
    "bad-input.percent-encoded-crlf-stays-encoded" => percent_crlf_path,
    "bad-input.body-stream-fails-midway" => stream_fails,
    "bad-input.body-stream-fails-midway-chunked" => stream_fails_chunked,
    "bad-input.body-stream-fails-at-once" => stream_fails_at_once,
    "bad-input.body-stream-shorter-than-declared" => stream_short,
    "bad-input.body-stream-longer-than-declared" => stream_long,
    "bad-input.body-stream-empty-but-declared" => stream_empty,
    "bad-input.body-file-missing" => file_missing,
);

/// A request that `bad` builds against the server's base url must fail
/// with `kind` and never reach the server, while a valid request through
/// the same manager does.
fn refused(
    ctx: &mut Ctx,
    kind: &str,
    bad: impl FnOnce(&str) -> (String, RequestBuilder),
) -> CaseResult {
    let (s, base) = serve(ctx, vec![answers("valid")])?;
    // The manager exists before the bad request is made.
    let manager = ctx.manager()?;
    let (url, builder) = bad(&base);
    let trace = match builder.build() {
        Err(e) => Trace::for_error(ctx.backend().name(), &url, &e),
        Ok(req) => super::faults::finish(ctx, manager.load(req)).trace,
    };
    expect_error(&trace, kind)?;
    let g = get(ctx, &format!("{base}/valid"))?;
    expect_status(&g.trace, 200)?;
    ensure_eq!(g.body, b"valid".to_vec());
    let lines: Vec<String> = s.received().iter().map(|r| r.request_line()).collect();
    ensure_eq!(lines, vec!["GET /valid HTTP/1.1".to_owned()]);
    Ok(trace)
}

fn get_url(url: String) -> (String, RequestBuilder) {
    (url.clone(), ResourceRequest::get(url))
}

fn with_header(base: &str, name: &[u8], value: &[u8]) -> (String, RequestBuilder) {
    let url = format!("{base}/h");
    (url.clone(), ResourceRequest::get(url).header(name, value))
}

fn url_unparsable(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |_| get_url("http://[::1".into()))
}

fn url_port(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |_| {
        get_url("http://raw.test:99999/".into())
    })
}

fn url_empty_host(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |_| get_url("http://:8080/".into()))
}

fn url_crlf(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |b| {
        get_url(format!("{b}/a\r\nX-Injected: 1"))
    })
}

fn url_nul(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |b| get_url(format!("{b}/a\0b")))
}

fn host_crlf(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |_| {
        get_url("http://raw.te\r\nX-Injected: 1/".into())
    })
}

fn host_space(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |_| {
        get_url("http://raw test/".into())
    })
}

fn host_percent_crlf(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |_| {
        get_url("http://raw.test%0d%0aX-Injected:%201/".into())
    })
}

fn scheme_gopher(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "unsupported_scheme", |_| {
        get_url("gopher://raw.test/1".into())
    })
}

fn scheme_ftp(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "unsupported_scheme", |_| {
        get_url("ftp://raw.test/f".into())
    })
}

fn value_crlf(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |b| {
        with_header(b, b"x-a", b"1\r\nX-Injected: 1")
    })
}

fn value_lf(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |b| {
        with_header(b, b"x-a", b"1\nX-Injected: 1")
    })
}

fn value_cr(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |b| with_header(b, b"x-a", b"1\rx"))
}

fn value_nul(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |b| with_header(b, b"x-a", b"1\0x"))
}

fn name_crlf(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |b| {
        with_header(b, b"x-a\r\nX-Injected", b"1")
    })
}

fn name_colon(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |b| with_header(b, b"x-a:b", b"1"))
}

fn name_space(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |b| with_header(b, b"x a", b"1"))
}

fn name_empty(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |b| with_header(b, b"", b"1"))
}

fn user_agent_crlf(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |b| {
        let url = format!("{b}/ua");
        (
            url.clone(),
            ResourceRequest::get(url).user_agent("ua/1\r\nX-Injected: 1"),
        )
    })
}

fn referrer_lf(ctx: &mut Ctx) -> CaseResult {
    refused(ctx, "invalid_request", |b| {
        let url = format!("{b}/ref");
        (
            url.clone(),
            ResourceRequest::get(url).referrer("http://a.test/\nX-Injected: 1"),
        )
    })
}

fn method(ctx: &mut Ctx, m: &'static str) -> CaseResult {
    refused(ctx, "invalid_request", |b| {
        let url = format!("{b}/m");
        (url.clone(), ResourceRequest::builder(m, url))
    })
}

fn method_space(ctx: &mut Ctx) -> CaseResult {
    method(ctx, "GE T")
}

fn method_crlf(ctx: &mut Ctx) -> CaseResult {
    method(ctx, "GET\r\nX-Injected: 1")
}

fn method_empty(ctx: &mut Ctx) -> CaseResult {
    method(ctx, "")
}

fn percent_crlf_path(ctx: &mut Ctx) -> CaseResult {
    // Percent-encoded, CR and LF are data: they go out encoded, never as a line break.
    let (s, base) = serve(ctx, vec![answers("valid")])?;
    let f = get(ctx, &format!("{base}/a%0D%0AX-Injected:%201"))?;
    expect_status(&f.trace, 200)?;
    let lines: Vec<String> = s.received().iter().map(|r| r.request_line()).collect();
    ensure_eq!(
        lines,
        vec!["GET /a%0D%0AX-Injected:%201 HTTP/1.1".to_owned()]
    );
    ensure!(
        s.received()
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.head).contains("\r\nX-Injected")),
        "a header was injected"
    );
    Ok(f.trace)
}

/// Yields `good` bytes of `x`, then fails (or ends, or goes on, by `then`).
struct Faulty {
    left: usize,
    then: Then,
}

#[derive(Clone, Copy)]
enum Then {
    Fail,
    End,
    More(usize),
}

impl Read for Faulty {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            match &mut self.then {
                Then::Fail => return Err(io::Error::other("the disk went away")),
                Then::End => return Ok(0),
                Then::More(n) if *n > 0 => {
                    let k = (*n).min(buf.len());
                    buf[..k].fill(b'y');
                    *n -= k;
                    return Ok(k);
                }
                Then::More(_) => return Ok(0),
            }
        }
        let k = self.left.min(buf.len());
        buf[..k].fill(b'x');
        self.left -= k;
        Ok(k)
    }
}

/// Uploads `body` to a server that would accept it, and checks that the
/// load fails with `io` and the server never saw a complete request.
fn upload_fails(ctx: &mut Ctx, body: RequestBody) -> CaseResult {
    let (s, base) = serve(ctx, vec![answers("stored")])?;
    let f = load(
        ctx,
        build(ResourceRequest::post(format!("{base}/up")).body(body))?,
    )?;
    expect_error(&f.trace, "io")?;
    // The server is still reading what it got; it is done once the client hung up.
    ensure!(
        wait_for(Duration::from_secs(5), || s.stats().active() == 0),
        "the client kept the connection of a failed upload open"
    );
    check_nothing_complete(&s)?;
    let mut t = f.trace;
    // Whether progress was reported before the failure depends on when each library reads.
    t.events.retain(|e| e != "upload_progress");
    Ok(t)
}

fn check_nothing_complete(s: &RawServer) -> Result<(), String> {
    let complete: Vec<String> = s
        .received()
        .iter()
        .filter(|r| r.complete)
        .map(|r| format!("{} ({} body bytes)", r.request_line(), r.body.len()))
        .collect();
    ensure!(
        complete.is_empty(),
        "the server received a complete request: {complete:?}"
    );
    Ok(())
}

fn stream_fails(ctx: &mut Ctx) -> CaseResult {
    upload_fails(
        ctx,
        RequestBody::sized(
            Faulty {
                left: 100_000,
                then: Then::Fail,
            },
            300_000,
        ),
    )
}

fn stream_fails_chunked(ctx: &mut Ctx) -> CaseResult {
    upload_fails(
        ctx,
        RequestBody::chunked(Faulty {
            left: 100_000,
            then: Then::Fail,
        }),
    )
}

fn stream_fails_at_once(ctx: &mut Ctx) -> CaseResult {
    upload_fails(
        ctx,
        RequestBody::sized(
            Faulty {
                left: 0,
                then: Then::Fail,
            },
            1000,
        ),
    )
}

fn stream_short(ctx: &mut Ctx) -> CaseResult {
    upload_fails(
        ctx,
        RequestBody::sized(
            Faulty {
                left: 500,
                then: Then::End,
            },
            1000,
        ),
    )
}

fn stream_long(ctx: &mut Ctx) -> CaseResult {
    upload_fails(
        ctx,
        RequestBody::sized(
            Faulty {
                left: 1000,
                then: Then::More(500),
            },
            1000,
        ),
    )
}

fn stream_empty(ctx: &mut Ctx) -> CaseResult {
    upload_fails(
        ctx,
        RequestBody::sized(
            Faulty {
                left: 0,
                then: Then::End,
            },
            10,
        ),
    )
}

fn file_missing(ctx: &mut Ctx) -> CaseResult {
    let (s, base) = serve(ctx, vec![answers("valid")])?;
    let path = std::env::temp_dir().join("resource-handle-no-such-file.bin");
    let f = load(
        ctx,
        build(ResourceRequest::post(format!("{base}/up")).body(RequestBody::File(path)))?,
    )?;
    expect_error(&f.trace, "io")?;
    let g = get(ctx, &format!("{base}/valid"))?;
    expect_status(&g.trace, 200)?;
    let lines: Vec<String> = s.received().iter().map(|r| r.request_line()).collect();
    ensure_eq!(lines, vec!["GET /valid HTTP/1.1".to_owned()]);
    Ok(f.trace)
}
