//! Bodies are streamed: bytes reach the application as they arrive.

use std::time::{Duration, Instant};

use resource_handle::{Event, Recorder, ResourceRequest};

use super::{build, expect_status, next_chunk, CaseResult, Ctx};

cases!("streaming";
    "streaming.first-chunk-before-body-ends" => first_chunk_early,
    "streaming.drip-arrives-in-pieces" => drip,
    "streaming.slow-consumer-gets-every-byte" => slow_consumer,
);

fn first_chunk_early(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/gated/early")?;
    let mut h = ctx.start(build(ResourceRequest::get(url))?)?;
    let mut rec = Recorder::new(ctx.backend().name(), &h);
    let mut body = Vec::new();
    // The server holds the rest of the body until we have seen the first chunk:
    // a backend that buffers the whole body would wait here until the server gives up.
    loop {
        let ev = h
            .next_event_blocking()
            .ok_or("the load ended before its first chunk")?;
        rec.observe(&ev);
        match ev {
            Event::Data(d) => {
                body.extend_from_slice(&d);
                break;
            }
            Event::Failed(e) => return Err(format!("failed before the first chunk: {e}")),
            _ => {}
        }
    }
    ensure!(
        body.starts_with(b"first"),
        "unexpected first chunk {:?}",
        String::from_utf8_lossy(&body)
    );
    ctx.origin()?.open_gate("early");
    while let Some(ev) = h.next_event_blocking() {
        if let Event::Data(d) = &ev {
            body.extend_from_slice(d);
        }
        rec.observe(&ev);
    }
    let trace = rec.finish();
    expect_status(&trace, 200)?;
    ensure_eq!(String::from_utf8_lossy(&body), "first chunk;second chunk");
    Ok(trace)
}

fn drip(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/drip?chunks=5&ms=40&size=16")?;
    let mut h = ctx.start(build(ResourceRequest::get(url))?)?;
    h.response_blocking().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let first = next_chunk(&mut h)?.ok_or("no first chunk")?;
    let first_at = start.elapsed();
    let mut total = first.len();
    while let Some(c) = next_chunk(&mut h)? {
        total += c.len();
    }
    let all_at = start.elapsed();
    ensure_eq!(total, 80);
    ensure!(
        all_at >= first_at + Duration::from_millis(100),
        "the first chunk arrived at {first_at:?}, only just before the end at {all_at:?}"
    );
    // Trace the same load shape from a fresh fetch, for comparison.
    let f = ctx.get("/drip?chunks=3&ms=10&size=16")?;
    ensure_eq!(f.trace.body_bytes, 48);
    Ok(f.trace)
}

fn slow_consumer(ctx: &mut Ctx) -> CaseResult {
    let len = 8 << 20;
    let url = ctx.origin_url(&format!("/bytes/{len}"))?;
    let mut h = ctx.start(build(ResourceRequest::get(url))?)?;
    h.response_blocking().map_err(|e| e.to_string())?;
    // Pause now and then so the backend must hold back rather than drop or buffer without bound.
    let mut total = 0usize;
    let mut n = 0;
    while let Some(c) = next_chunk(&mut h)? {
        total += c.len();
        n += 1;
        if n % 16 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    ensure_eq!(total, len);
    let f = ctx.get("/bytes/4096")?;
    expect_status(&f.trace, 200)?;
    Ok(f.trace)
}
