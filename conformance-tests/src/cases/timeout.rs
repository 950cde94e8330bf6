//! Connect and total timeouts, each reported with its phase.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use resource_handle::{Event, ResourceRequest, TimeoutPhase};

use super::{build, expect_error, CaseResult, Ctx};

cases!("timeout";
    "timeout.total-before-response" => total_before_response,
    "timeout.total-during-body" => total_during_body,
    "timeout.connect" => connect,
    "timeout.generous-timeout-succeeds" => generous,
);

/// Loads `req` and returns the trace and the error's timeout phase.
fn timed(
    ctx: &mut Ctx,
    req: ResourceRequest,
) -> Result<(resource_handle::Trace, Option<TimeoutPhase>, Duration), String> {
    let mut h = ctx.start(req)?;
    let t0 = Instant::now();
    let mut rec = resource_handle::Recorder::new(ctx.backend().name(), &h);
    let mut phase = None;
    while let Some(ev) = h.next_event_blocking() {
        if let Event::Failed(e) = &ev {
            phase = e.timeout_phase();
        }
        rec.observe(&ev);
    }
    Ok((rec.finish(), phase, t0.elapsed()))
}

fn total_before_response(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/delay/3000")?;
    let (t, phase, took) = timed(
        ctx,
        build(ResourceRequest::get(url).timeout(Duration::from_millis(300)))?,
    )?;
    expect_error(&t, "timeout")?;
    ensure_eq!(phase, Some(TimeoutPhase::Total));
    ensure!(
        took < Duration::from_millis(2000),
        "timeout fired after {took:?}"
    );
    Ok(t)
}

fn total_during_body(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/drip?chunks=100&ms=30&size=8")?;
    let (t, phase, took) = timed(
        ctx,
        build(ResourceRequest::get(url).timeout(Duration::from_millis(500)))?,
    )?;
    expect_error(&t, "timeout")?;
    ensure_eq!(phase, Some(TimeoutPhase::Total));
    ensure!(
        t.status == Some(200),
        "the response should have arrived before the timeout"
    );
    ensure!(
        took < Duration::from_millis(2500),
        "timeout fired after {took:?}"
    );
    // How many bytes arrived before the deadline depends on timing; the trace keeps the shape.
    let mut t = t;
    t.body_bytes = 0;
    t.body_sha256.clear();
    Ok(t)
}

/// A listener whose accept queue is full, so new connections hang in SYN-SENT.
fn black_hole() -> Result<(socket2::Socket, Vec<TcpStream>, u16), String> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
    let addr: std::net::SocketAddr = "127.0.0.1:0"
        .parse()
        .map_err(|e: std::net::AddrParseError| e.to_string())?;
    s.bind(&addr.into()).map_err(|e| e.to_string())?;
    s.listen(0).map_err(|e| e.to_string())?;
    let port = s
        .local_addr()
        .map_err(|e| e.to_string())?
        .as_socket()
        .ok_or("no socket address")?
        .port();
    // Fill the accept queue; connections beyond it are not answered.
    let mut fillers = Vec::new();
    for _ in 0..4 {
        match TcpStream::connect_timeout(
            &(std::net::Ipv4Addr::LOCALHOST, port).into(),
            Duration::from_millis(200),
        ) {
            Ok(c) => fillers.push(c),
            Err(_) => break,
        }
    }
    Ok((s, fillers, port))
}

fn connect(ctx: &mut Ctx) -> CaseResult {
    let (_listener, _fillers, port) = black_hole()?;
    ctx.map_host(
        "blackhole.test",
        port,
        vec![std::net::Ipv4Addr::LOCALHOST.into()],
    );
    let req = build(
        ResourceRequest::get(format!("http://blackhole.test:{port}/"))
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_secs(10)),
    )?;
    let (t, phase, took) = timed(ctx, req)?;
    expect_error(&t, "timeout")?;
    ensure_eq!(phase, Some(TimeoutPhase::Connect));
    ensure!(
        took < Duration::from_millis(3000),
        "connect timeout fired after {took:?}"
    );
    Ok(t)
}

fn generous(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/delay/100")?;
    let (t, _, _) = timed(
        ctx,
        build(
            ResourceRequest::get(url)
                .timeout(Duration::from_secs(10))
                .connect_timeout(Duration::from_secs(5)),
        )?,
    )?;
    super::expect_status(&t, 200)?;
    Ok(t)
}
