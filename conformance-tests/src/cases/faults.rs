//! Connection faults: pooled connections the server closed, the keep-alive
//! race and its one transparent retry, connections that must not be reused,
//! resets at every point of a response, and the idle timeout.
//!
//! Also the helpers the other fault files share: a raw server with one
//! script per connection, and a load that keeps its error and response.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use resource_handle::{
    Error, Event, NetworkAccessManager, Recorder, ResourceHandle, ResourceRequest,
    ResourceResponse, TimeoutPhase, Trace,
};

use super::{build, expect_error, expect_status, CaseResult, Ctx, RAW_HOST};
use crate::servers::{RawServer, Step};

cases!("faults";
    "faults.idle-pooled-connection-closed-by-server" => idle_closed,
    "faults.stale-connection-get-retried-once" => stale_get_retried,
    "faults.stale-connection-head-retried-once" => stale_head_retried,
    "faults.stale-connection-post-not-resent" => stale_post_not_resent,
    "faults.stale-connection-reset-get-retried" => stale_reset_get_retried,
    "faults.stale-connection-retried-only-once" => stale_retried_once,
    "faults.no-retry-after-response-bytes" => no_retry_after_bytes,
    "faults.no-retry-on-fresh-connection" => no_retry_fresh,
    "faults.connection-close-not-reused" => connection_close_not_reused,
    "faults.http10-not-reused" => http10_not_reused,
    "faults.not-reused-after-truncated-body" => not_reused_after_truncation,
    "faults.not-reused-after-cancel-mid-body" => not_reused_after_cancel,
    "faults.reset-before-response" => reset_before_response,
    "faults.reset-mid-status-line" => reset_mid_status_line,
    "faults.reset-mid-head" => reset_mid_head,
    "faults.reset-mid-body-content-length" => reset_mid_body_length,
    "faults.reset-mid-body-chunked" => reset_mid_body_chunked,
    "faults.close-mid-head" => close_mid_head,
    "faults.idle-timeout-drip-stops" => idle_drip_stops,
    "faults.idle-timeout-no-response" => idle_no_response,
    "faults.idle-timeout-drip-within-succeeds" => idle_drip_within,
    "faults.idle-timeout-not-total" => idle_not_total,
    "faults.total-timeout-not-idle" => total_not_idle,
    "faults.idle-timeout-from-manager" => idle_from_manager,
    "faults.idle-timeout-not-during-connect" => idle_not_connect,
);

/// What one load did: its trace, body, error and response.
pub(super) struct Done {
    pub trace: Trace,
    pub body: Vec<u8>,
    pub error: Option<Error>,
    pub response: Option<ResourceResponse>,
    pub took: Duration,
}

/// Starts a raw server whose connection `i` plays `scripts[i]` (the last
/// one for connections past the list), mapped as `raw.test`.
pub(super) fn serve(ctx: &mut Ctx, scripts: Vec<Vec<Step>>) -> Result<(RawServer, String), String> {
    let s = RawServer::per_connection(scripts).map_err(|e| format!("raw server: {e}"))?;
    ctx.map_host(RAW_HOST, s.port(), vec![Ipv4Addr::LOCALHOST.into()]);
    let base = format!("http://{RAW_HOST}:{}", s.port());
    Ok((s, base))
}

/// Runs a started load to its end.
pub(super) fn finish(ctx: &Ctx, mut handle: ResourceHandle) -> Done {
    let start = Instant::now();
    let mut rec = Recorder::new(ctx.backend().name(), &handle);
    let (mut body, mut error, mut response) = (Vec::new(), None, None);
    while let Some(ev) = handle.next_event_blocking() {
        match &ev {
            Event::Data(d) => body.extend_from_slice(d),
            Event::Failed(e) => error = Some(e.clone()),
            Event::Response(r) => response = Some(r.clone()),
            _ => {}
        }
        rec.observe(&ev);
    }
    Done {
        trace: rec.finish(),
        body,
        error,
        response,
        took: start.elapsed(),
    }
}

/// Loads `req` through the context's manager.
pub(super) fn load(ctx: &mut Ctx, req: ResourceRequest) -> Result<Done, String> {
    let handle = ctx.manager()?.load(req);
    Ok(finish(ctx, handle))
}

/// Loads `req` through `manager`.
pub(super) fn load_on(ctx: &Ctx, manager: &NetworkAccessManager, req: ResourceRequest) -> Done {
    finish(ctx, manager.load(req))
}

/// GETs `url` through the context's manager.
pub(super) fn get(ctx: &mut Ctx, url: &str) -> Result<Done, String> {
    load(ctx, build(ResourceRequest::get(url))?)
}

/// A complete keep-alive response with `body`.
pub(super) fn ok(body: &str) -> Step {
    Step::send(format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// A connection that answers one request with `body` and stays open.
pub(super) fn answers(body: &str) -> Vec<Step> {
    vec![Step::ReadRequest, ok(body)]
}

/// The connection (in accept order) each recorded request came on.
pub(super) fn connections(s: &RawServer) -> Vec<usize> {
    s.received().iter().map(|r| r.connection).collect()
}

/// Checks that a second load after a faulty one went out on a new
/// connection: `s` plays `answers("fresh")` on connection 1.
pub(super) fn next_load_on_fresh_connection(
    ctx: &mut Ctx,
    s: &RawServer,
    base: &str,
) -> Result<(), String> {
    let g = get(ctx, &format!("{base}/next"))?;
    expect_status(&g.trace, 200)?;
    ensure_eq!(g.body, b"fresh".to_vec());
    let conns = connections(s);
    ensure!(
        conns.last() == Some(&1),
        "the load after the fault went out on connection {:?} (all: {conns:?})",
        conns.last()
    );
    Ok(())
}

fn idle_closed(ctx: &mut Ctx) -> CaseResult {
    // The server answers, then closes the idle connection a moment later.
    let (s, base) = serve(
        ctx,
        vec![
            vec![
                Step::ReadRequest,
                ok("one"),
                Step::Sleep(Duration::from_millis(50)),
                Step::Close,
            ],
            answers("two"),
        ],
    )?;
    let f = get(ctx, &format!("{base}/a"))?;
    expect_status(&f.trace, 200)?;
    std::thread::sleep(Duration::from_millis(300));
    let g = get(ctx, &format!("{base}/b"))?;
    expect_status(&g.trace, 200)?;
    ensure_eq!(g.body, b"two".to_vec());
    ensure_eq!(s.stats().accepted(), 2);
    ensure_eq!(connections(&s), vec![0, 1]);
    Ok(g.trace)
}

/// Connection 0 answers one request, then reads the next and closes (or
/// resets) without a byte of response: the keep-alive race, made certain.
fn stale(ending: Step) -> Vec<Vec<Step>> {
    vec![
        vec![Step::ReadRequest, ok("one"), Step::ReadRequest, ending],
        answers("two"),
        answers("three"),
    ]
}

fn stale_retry(ctx: &mut Ctx, method: &str, ending: Step) -> CaseResult {
    let (s, base) = serve(ctx, stale(ending))?;
    let f = get(ctx, &format!("{base}/a"))?;
    expect_status(&f.trace, 200)?;
    let g = load(
        ctx,
        build(ResourceRequest::builder(method, format!("{base}/b")))?,
    )?;
    expect_status(&g.trace, 200)?;
    if method != "HEAD" {
        ensure_eq!(g.body, b"two".to_vec());
    }
    // The request went out twice: on the stale connection and once more on a fresh one.
    ensure_eq!(connections(&s), vec![0, 0, 1]);
    ensure_eq!(s.stats().accepted(), 2);
    Ok(g.trace)
}

fn stale_get_retried(ctx: &mut Ctx) -> CaseResult {
    stale_retry(ctx, "GET", Step::Close)
}

fn stale_head_retried(ctx: &mut Ctx) -> CaseResult {
    stale_retry(ctx, "HEAD", Step::Close)
}

fn stale_reset_get_retried(ctx: &mut Ctx) -> CaseResult {
    stale_retry(ctx, "GET", Step::Reset)
}

fn stale_post_not_resent(ctx: &mut Ctx) -> CaseResult {
    let (s, base) = serve(ctx, stale(Step::Close))?;
    let f = get(ctx, &format!("{base}/a"))?;
    expect_status(&f.trace, 200)?;
    let g = load(
        ctx,
        build(ResourceRequest::post(format!("{base}/b")).body("payload"))?,
    )?;
    expect_error(&g.trace, "protocol")?;
    // Give a silent re-send the time to arrive before counting.
    std::thread::sleep(Duration::from_millis(300));
    let posts = s
        .received()
        .iter()
        .filter(|r| r.request_line().starts_with("POST"))
        .count();
    ensure_eq!(posts, 1);
    Ok(g.trace)
}

fn stale_retried_once(ctx: &mut Ctx) -> CaseResult {
    // Every connection after the first answers nothing: the one retry fails too.
    let (s, base) = serve(
        ctx,
        vec![
            vec![Step::ReadRequest, ok("one"), Step::ReadRequest, Step::Close],
            vec![Step::ReadRequest, Step::Close],
        ],
    )?;
    let f = get(ctx, &format!("{base}/a"))?;
    expect_status(&f.trace, 200)?;
    let g = get(ctx, &format!("{base}/b"))?;
    expect_error(&g.trace, "protocol")?;
    std::thread::sleep(Duration::from_millis(300));
    ensure_eq!(connections(&s), vec![0, 0, 1]);
    Ok(g.trace)
}

fn no_retry_after_bytes(ctx: &mut Ctx) -> CaseResult {
    // A complete status line and part of a header line. (After an incomplete
    // status line alone, libcurl still re-sends an idempotent request: it
    // counts only complete header lines as received. See docs/reliability.md.)
    no_retry_after(ctx, "HTTP/1.1 200 OK\r\nContent-Le")
}

fn no_retry_after(ctx: &mut Ctx, partial: &str) -> CaseResult {
    let (s, base) = serve(
        ctx,
        vec![
            vec![
                Step::ReadRequest,
                ok("one"),
                Step::ReadRequest,
                Step::send(partial),
                Step::Close,
            ],
            answers("two"),
        ],
    )?;
    let f = get(ctx, &format!("{base}/a"))?;
    expect_status(&f.trace, 200)?;
    let g = get(ctx, &format!("{base}/b"))?;
    expect_error(&g.trace, "protocol")?;
    std::thread::sleep(Duration::from_millis(300));
    ensure_eq!(connections(&s), vec![0, 0]);
    Ok(g.trace)
}

fn no_retry_fresh(ctx: &mut Ctx) -> CaseResult {
    // The first request on a fresh connection gets no answer: that is the
    // server's fault, not the keep-alive race, and is not retried.
    let (s, base) = serve(
        ctx,
        vec![vec![Step::ReadRequest, Step::Close], answers("two")],
    )?;
    let g = get(ctx, &format!("{base}/a"))?;
    expect_error(&g.trace, "protocol")?;
    std::thread::sleep(Duration::from_millis(300));
    ensure_eq!(connections(&s), vec![0]);
    Ok(g.trace)
}

fn connection_close_not_reused(ctx: &mut Ctx) -> CaseResult {
    let (s, base) = serve(
        ctx,
        vec![
            vec![
                Step::ReadRequest,
                Step::send("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\none"),
                // A client that reused the connection anyway would be answered here.
                Step::ReadRequest,
                ok("wrong"),
            ],
            answers("fresh"),
        ],
    )?;
    let f = get(ctx, &format!("{base}/a"))?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.body, b"one".to_vec());
    next_load_on_fresh_connection(ctx, &s, &base)?;
    Ok(f.trace)
}

fn http10_not_reused(ctx: &mut Ctx) -> CaseResult {
    let (s, base) = serve(
        ctx,
        vec![
            vec![
                Step::ReadRequest,
                Step::send("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\none"),
                Step::ReadRequest,
                ok("wrong"),
            ],
            answers("fresh"),
        ],
    )?;
    let f = get(ctx, &format!("{base}/a"))?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.version.as_deref(), Some("HTTP/1.0"));
    next_load_on_fresh_connection(ctx, &s, &base)?;
    Ok(f.trace)
}

fn not_reused_after_truncation(ctx: &mut Ctx) -> CaseResult {
    // The body stops short and the connection stays open: it must not be
    // used again, the rest of its body would be read as the next response.
    let (s, base) = serve(
        ctx,
        vec![
            vec![
                Step::ReadRequest,
                Step::send("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
                Step::Sleep(Duration::from_millis(300)),
                Step::Close,
            ],
            answers("fresh"),
        ],
    )?;
    let f = load(
        ctx,
        build(ResourceRequest::get(format!("{base}/a")).read_timeout(Duration::from_millis(100)))?,
    )?;
    expect_error(&f.trace, "timeout")?;
    next_load_on_fresh_connection(ctx, &s, &base)?;
    Ok(f.trace)
}

fn not_reused_after_cancel(ctx: &mut Ctx) -> CaseResult {
    let (s, base) = serve(
        ctx,
        vec![
            vec![
                Step::ReadRequest,
                Step::send("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
                Step::Sleep(Duration::from_millis(500)),
                Step::send("defghij"),
                Step::ReadRequest,
                ok("wrong"),
            ],
            answers("fresh"),
        ],
    )?;
    let mut h = ctx.start(build(ResourceRequest::get(format!("{base}/a")))?)?;
    h.response_blocking()
        .map_err(|e| format!("no response: {e}"))?;
    h.cancel();
    let t = finish(ctx, h).trace;
    std::thread::sleep(Duration::from_millis(700));
    next_load_on_fresh_connection(ctx, &s, &base)?;
    Ok(t)
}

fn reset_load(ctx: &mut Ctx, before_reset: &str) -> Result<Done, String> {
    let (_s, base) = serve(
        ctx,
        vec![vec![
            Step::ReadRequest,
            Step::send(before_reset),
            Step::Sleep(Duration::from_millis(50)),
            Step::Reset,
        ]],
    )?;
    get(ctx, &format!("{base}/r"))
}

fn reset_before_response(ctx: &mut Ctx) -> CaseResult {
    let f = reset_load(ctx, "")?;
    expect_error(&f.trace, "io")?;
    ensure_eq!(f.trace.events, vec!["failed"]);
    Ok(f.trace)
}

fn reset_mid_status_line(ctx: &mut Ctx) -> CaseResult {
    let f = reset_load(ctx, "HTTP/1.1 20")?;
    expect_error(&f.trace, "io")?;
    ensure_eq!(f.trace.status, None);
    Ok(f.trace)
}

fn reset_mid_head(ctx: &mut Ctx) -> CaseResult {
    let f = reset_load(ctx, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Half: ye")?;
    expect_error(&f.trace, "io")?;
    ensure_eq!(f.trace.status, None);
    Ok(f.trace)
}

fn reset_mid_body_length(ctx: &mut Ctx) -> CaseResult {
    let f = reset_load(ctx, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")?;
    expect_error(&f.trace, "body_truncated")?;
    let t = f.error.as_ref().and_then(Error::truncation);
    ensure_eq!(t.map(|t| (t.expected, t.received)), Some((Some(10), 3)));
    Ok(f.trace)
}

fn reset_mid_body_chunked(ctx: &mut Ctx) -> CaseResult {
    let f = reset_load(
        ctx,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n5\r\nde",
    )?;
    expect_error(&f.trace, "body_truncated")?;
    ensure!(f.body.starts_with(b"abc"), "body {:?}", f.body);
    let mut t = f.trace;
    // Whether "de" was delivered before the reset depends on timing.
    t.body_bytes = 0;
    t.body_sha256.clear();
    Ok(t)
}

fn close_mid_head(ctx: &mut Ctx) -> CaseResult {
    let (_s, base) = serve(
        ctx,
        vec![vec![
            Step::ReadRequest,
            Step::send("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"),
            Step::Close,
        ]],
    )?;
    let f = get(ctx, &format!("{base}/r"))?;
    expect_error(&f.trace, "protocol")?;
    ensure_eq!(f.trace.status, None);
    Ok(f.trace)
}

fn idle_phase(d: &Done) -> Option<TimeoutPhase> {
    d.error.as_ref().and_then(Error::timeout_phase)
}

/// A body that drips 4 bytes, `gap` apart, `pieces` times, then stops for 3 s.
fn drip(pieces: usize, gap: Duration) -> Vec<Vec<Step>> {
    let body = "drip".repeat(pieces);
    vec![vec![
        Step::ReadRequest,
        Step::send(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            body.len() + 4
        )),
        Step::drip(body, 4, gap),
        Step::Sleep(Duration::from_secs(3)),
        Step::send("late"),
        Step::Close,
    ]]
}

fn idle_drip_stops(ctx: &mut Ctx) -> CaseResult {
    let (_s, base) = serve(ctx, drip(5, Duration::from_millis(50)))?;
    let f = load(
        ctx,
        build(
            ResourceRequest::get(format!("{base}/r"))
                .read_timeout(Duration::from_millis(400))
                .timeout(Duration::from_secs(20)),
        )?,
    )?;
    expect_error(&f.trace, "timeout")?;
    ensure_eq!(idle_phase(&f), Some(TimeoutPhase::Idle));
    ensure_eq!(f.body, "drip".repeat(5).into_bytes());
    ensure!(
        f.took < Duration::from_millis(2500),
        "the idle timeout fired after {:?}",
        f.took
    );
    Ok(f.trace)
}

fn idle_no_response(ctx: &mut Ctx) -> CaseResult {
    let (_s, base) = serve(
        ctx,
        vec![vec![
            Step::ReadRequest,
            Step::Sleep(Duration::from_secs(3)),
            Step::Close,
        ]],
    )?;
    let f = load(
        ctx,
        build(
            ResourceRequest::get(format!("{base}/r"))
                .read_timeout(Duration::from_millis(300))
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(20)),
        )?,
    )?;
    expect_error(&f.trace, "timeout")?;
    ensure_eq!(idle_phase(&f), Some(TimeoutPhase::Idle));
    ensure!(
        f.took < Duration::from_millis(2000),
        "fired after {:?}",
        f.took
    );
    Ok(f.trace)
}

fn idle_drip_within(ctx: &mut Ctx) -> CaseResult {
    // 20 pieces 100 ms apart: 2 s in all, never 400 ms without a byte.
    let body = "drip".repeat(20);
    let (_s, base) = serve(
        ctx,
        vec![vec![
            Step::ReadRequest,
            Step::send(format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )),
            Step::drip(&body, 4, Duration::from_millis(100)),
        ]],
    )?;
    let f = load(
        ctx,
        build(ResourceRequest::get(format!("{base}/r")).read_timeout(Duration::from_millis(400)))?,
    )?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.body, body.into_bytes());
    Ok(f.trace)
}

fn idle_not_total(ctx: &mut Ctx) -> CaseResult {
    // The drip stops long before the total timeout: the idle one fires.
    let (_s, base) = serve(ctx, drip(2, Duration::from_millis(50)))?;
    let f = load(
        ctx,
        build(
            ResourceRequest::get(format!("{base}/r"))
                .read_timeout(Duration::from_millis(300))
                .timeout(Duration::from_millis(2500)),
        )?,
    )?;
    expect_error(&f.trace, "timeout")?;
    ensure_eq!(idle_phase(&f), Some(TimeoutPhase::Idle));
    Ok(f.trace)
}

fn total_not_idle(ctx: &mut Ctx) -> CaseResult {
    // A drip that never pauses for the idle timeout, but outlasts the total one.
    let body = "drip".repeat(40);
    let (_s, base) = serve(
        ctx,
        vec![vec![
            Step::ReadRequest,
            Step::send(format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )),
            Step::drip(&body, 4, Duration::from_millis(50)),
        ]],
    )?;
    let f = load(
        ctx,
        build(
            ResourceRequest::get(format!("{base}/r"))
                .read_timeout(Duration::from_millis(500))
                .timeout(Duration::from_millis(800)),
        )?,
    )?;
    expect_error(&f.trace, "timeout")?;
    ensure_eq!(idle_phase(&f), Some(TimeoutPhase::Total));
    let mut t = f.trace;
    t.body_bytes = 0;
    t.body_sha256.clear();
    Ok(t)
}

fn idle_from_manager(ctx: &mut Ctx) -> CaseResult {
    let (_s, base) = serve(
        ctx,
        vec![vec![
            Step::ReadRequest,
            Step::Sleep(Duration::from_secs(3)),
            Step::Close,
        ]],
    )?;
    let m = ctx.manager_with(|b| Ok(b.read_timeout(Duration::from_millis(300))))?;
    let f = load_on(ctx, &m, build(ResourceRequest::get(format!("{base}/r")))?);
    expect_error(&f.trace, "timeout")?;
    ensure_eq!(idle_phase(&f), Some(TimeoutPhase::Idle));
    Ok(f.trace)
}

fn idle_not_connect(ctx: &mut Ctx) -> CaseResult {
    // A listener whose accept queue is full: connections hang in SYN-SENT.
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
    let any: std::net::SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
    listener.bind(&any.into()).map_err(|e| e.to_string())?;
    listener.listen(0).map_err(|e| e.to_string())?;
    let port = listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .as_socket()
        .ok_or("no socket address")?
        .port();
    let _fillers: Vec<std::net::TcpStream> = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(
                &(Ipv4Addr::LOCALHOST, port).into(),
                Duration::from_millis(200),
            )
            .ok()
        })
        .collect();
    ctx.map_host("blackhole.test", port, vec![Ipv4Addr::LOCALHOST.into()]);
    // The idle timeout is far shorter than the connect one, but it only
    // runs once connected: the connect timeout is the one that fires.
    let f = load(
        ctx,
        build(
            ResourceRequest::get(format!("http://blackhole.test:{port}/"))
                .read_timeout(Duration::from_millis(100))
                .connect_timeout(Duration::from_millis(600))
                .timeout(Duration::from_secs(10)),
        )?,
    )?;
    expect_error(&f.trace, "timeout")?;
    ensure_eq!(idle_phase(&f), Some(TimeoutPhase::Connect));
    ensure!(
        f.took >= Duration::from_millis(500),
        "a timeout fired after {:?}, before the connect timeout",
        f.took
    );
    Ok(f.trace)
}
