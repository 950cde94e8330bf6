//! Connections are kept alive and reused.

use resource_handle::ResourceRequest;

use super::{build, expect_status, CaseResult, Ctx};

cases!("connection";
    "connection.keep-alive-sequential-gets" => sequential,
    "connection.keep-alive-after-post" => after_post,
    "connection.keep-alive-after-chunked-body" => after_chunked,
    "connection.http10-close-not-reused" => http10_not_reused,
);

fn sequential(ctx: &mut Ctx) -> CaseResult {
    let mut last = None;
    for _ in 0..5 {
        let f = ctx.get("/bytes/1000")?;
        expect_status(&f.trace, 200)?;
        last = Some(f.trace);
    }
    ensure_eq!(ctx.origin()?.stats().accepted(), 1);
    last.ok_or_else(|| "no load ran".into())
}

fn after_post(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    let f = ctx.fetch(build(ResourceRequest::post(url).body("payload"))?)?;
    expect_status(&f.trace, 200)?;
    let g = ctx.get("/status/200")?;
    expect_status(&g.trace, 200)?;
    let conns: Vec<usize> = ctx
        .origin()?
        .requests()
        .iter()
        .map(|r| r.connection)
        .collect();
    ensure_eq!(conns, vec![0, 0]);
    Ok(g.trace)
}

fn after_chunked(ctx: &mut Ctx) -> CaseResult {
    let f = ctx.get("/bytes/5000?chunked=1000")?;
    expect_status(&f.trace, 200)?;
    let g = ctx.get("/bytes/5")?;
    expect_status(&g.trace, 200)?;
    ensure_eq!(ctx.origin()?.stats().accepted(), 1);
    Ok(g.trace)
}

fn http10_not_reused(ctx: &mut Ctx) -> CaseResult {
    let f = ctx.get("/http10/100")?;
    expect_status(&f.trace, 200)?;
    let g = ctx.get("/http10/200")?;
    expect_status(&g.trace, 200)?;
    ensure_eq!(g.trace.body_bytes, 200);
    ensure_eq!(ctx.origin()?.stats().accepted(), 2);
    Ok(g.trace)
}
