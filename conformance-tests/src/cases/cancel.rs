//! Cancelling ends the load promptly and frees its connection.

use std::time::{Duration, Instant};

use resource_handle::{ResourceRequest, Trace};

use super::{build, expect_error, expect_status, next_chunk, wait_for, CaseResult, Ctx};

cases!("cancel";
    "cancel.mid-body" => mid_body,
    "cancel.drop-handle-mid-body" => drop_mid_body,
    "cancel.before-response" => before_response,
);

fn mid_body(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/drip?chunks=200&ms=20&size=64")?;
    let mut h = ctx.start(build(ResourceRequest::get(url))?)?;
    next_chunk(&mut h)?.ok_or("no first chunk")?;
    let t0 = Instant::now();
    h.cancel();
    let f = ctx.drain(h);
    ensure!(
        t0.elapsed() < Duration::from_secs(1),
        "cancel took {:?}",
        t0.elapsed()
    );
    expect_error(&f.trace, "cancelled")?;
    // The connection is closed, not left streaming into a pool.
    let origin = ctx.origin()?;
    ensure!(
        wait_for(Duration::from_secs(3), || origin.stats().active() == 0),
        "the server still has {} open connection(s) after cancel",
        origin.stats().active()
    );
    Ok(f.trace)
}

fn drop_mid_body(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/drip?chunks=200&ms=20&size=64")?;
    let mut h = ctx.start(build(ResourceRequest::get(url))?)?;
    next_chunk(&mut h)?.ok_or("no first chunk")?;
    drop(h);
    let origin = ctx.origin()?;
    ensure!(
        wait_for(Duration::from_secs(3), || origin.stats().active() == 0),
        "the server still has {} open connection(s) after the handle was dropped",
        origin.stats().active()
    );
    // The manager stays usable.
    let f = ctx.get("/bytes/100")?;
    expect_status(&f.trace, 200)?;
    Ok(f.trace)
}

fn before_response(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/delay/2000")?;
    let h = ctx.start(build(ResourceRequest::get(url))?)?;
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    h.cancel();
    let f: Trace = ctx.drain(h).trace;
    ensure!(
        t0.elapsed() < Duration::from_millis(500),
        "cancel took {:?}",
        t0.elapsed()
    );
    expect_error(&f, "cancelled")?;
    Ok(f)
}
