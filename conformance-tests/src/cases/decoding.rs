//! Content decoding in the manager, for every backend alike: the
//! Accept-Encoding it sends, streamed decoding of gzip, deflate (zlib and
//! raw), br and zstd (and stacks of them), the decoded length in progress,
//! clear errors for corrupt streams and decompression bombs, and the raw
//! bytes for a request that opts out.

use resource_handle::{Event, Recorder, ResourceRequest, Trace};

use super::echo_headers;
use super::{build, expect_error, expect_status, sha256, CaseResult, Ctx, Fetched};
use crate::servers::{body_pattern, encoded_body, BOMB_DECODED_BYTES};

cases!("decoding";
    "decoding.default-accept-encoding" => default_accept_encoding,
    "decoding.own-accept-encoding-kept" => own_accept_encoding,
    "decoding.opt-out-sends-no-accept-encoding" => opt_out_header,
    "decoding.opt-out-delivers-raw-bytes" => opt_out_raw,
    "decoding.gzip" => gzip,
    "decoding.deflate-zlib" => deflate,
    "decoding.deflate-raw" => deflate_raw,
    "decoding.br" => br,
    "decoding.zstd" => zstd,
    "decoding.gzip-chunked" => gzip_chunked,
    "decoding.gzip-then-br" => gzip_br,
    "decoding.large-gzip-streamed" => large_gzip,
    "decoding.empty-gzip-body" => empty_gzip,
    "decoding.head-not-decoded" => head,
    "decoding.after-redirect" => after_redirect,
    "decoding.corrupt-gzip-protocol-error" => corrupt,
    "decoding.truncated-gzip-protocol-error" => truncated,
    "decoding.unknown-coding-protocol-error" => unknown_coding,
    "decoding.bomb-limit-exceeded" => bomb,
    "decoding.bomb-at-the-limit-decodes" => bomb_at_limit,
);

fn default_accept_encoding(ctx: &mut Ctx) -> CaseResult {
    let f = ctx.get("/echo")?;
    expect_status(&f.trace, 200)?;
    let echo = f.json()?;
    ensure_eq!(
        echo_headers(&echo, "accept-encoding"),
        vec!["gzip, deflate, br, zstd"]
    );
    Ok(f.trace)
}

fn own_accept_encoding(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    let f = ctx.fetch(build(
        ResourceRequest::get(url).header("accept-encoding", "br;q=1.0, identity;q=0.5"),
    )?)?;
    expect_status(&f.trace, 200)?;
    let echo = f.json()?;
    ensure_eq!(
        echo_headers(&echo, "accept-encoding"),
        vec!["br;q=1.0, identity;q=0.5"]
    );
    // What it asked for is still decoded.
    let url = ctx.origin_url("/encoded/br/20000")?;
    let g = ctx.fetch(build(
        ResourceRequest::get(url).header("accept-encoding", "br"),
    )?)?;
    expect_status(&g.trace, 200)?;
    ensure_eq!(g.trace.body_sha256, sha256(&body_pattern(20_000)));
    Ok(f.trace)
}

fn opt_out_header(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    let f = ctx.fetch(build(ResourceRequest::get(url).decode_content(false))?)?;
    expect_status(&f.trace, 200)?;
    let echo = f.json()?;
    ensure_eq!(echo_headers(&echo, "accept-encoding"), Vec::<&str>::new());
    Ok(f.trace)
}

fn opt_out_raw(ctx: &mut Ctx) -> CaseResult {
    let n = 50_000;
    let url = ctx.origin_url(&format!("/encoded/gzip/{n}"))?;
    let raw = encoded_body("gzip", n).map_err(|e| e.to_string())?;
    let (f, resp) = with_response(ctx, build(ResourceRequest::get(url).decode_content(false))?)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.body_sha256, sha256(&raw));
    ensure_eq!(f.trace.body_bytes, raw.len() as u64);
    // Undecoded, the declared length is the body's.
    ensure_eq!(resp, Some(raw.len() as u64));
    Ok(f.trace)
}

/// Loads `req`, returning the trace, the body, and the response's expected
/// content length; checks the last DownloadProgress equals the bytes
/// delivered and carries that expected length as its total.
fn with_response(ctx: &mut Ctx, req: ResourceRequest) -> Result<(Fetched, Option<u64>), String> {
    let mut h = ctx.start(req)?;
    let mut rec = Recorder::new(ctx.backend().name(), &h);
    let mut body = Vec::new();
    let mut expected = None;
    let mut last = None;
    while let Some(ev) = h.next_event_blocking() {
        match &ev {
            Event::Response(r) => expected = r.expected_content_length(),
            Event::Data(d) => body.extend_from_slice(d),
            Event::DownloadProgress { received, total } => {
                ensure_eq!(*total, expected);
                last = Some(*received);
            }
            _ => {}
        }
        rec.observe(&ev);
    }
    let trace = rec.finish();
    if trace.body_bytes > 0 {
        ensure_eq!(last, Some(trace.body_bytes));
    }
    Ok((Fetched { trace, body }, expected))
}

/// `/encoded/CODINGS/N` decodes to the pattern, with no expected length.
fn decodes(ctx: &mut Ctx, path: &str, n: usize) -> CaseResult {
    let url = ctx.origin_url(path)?;
    let (f, expected) = with_response(ctx, build(ResourceRequest::get(url))?)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.body_bytes, n as u64);
    ensure!(
        f.body == body_pattern(n),
        "the decoded body differs from what was compressed"
    );
    // The declared length was the encoded one; the decoded one was unknown.
    ensure_eq!(expected, None);
    Ok(f.trace)
}

fn gzip(ctx: &mut Ctx) -> CaseResult {
    decodes(ctx, "/encoded/gzip/100000", 100_000)
}
fn deflate(ctx: &mut Ctx) -> CaseResult {
    decodes(ctx, "/encoded/deflate/100000", 100_000)
}
fn deflate_raw(ctx: &mut Ctx) -> CaseResult {
    // Raw deflate labelled `deflate`, as some servers send it.
    decodes(ctx, "/encoded/deflate-raw/100000", 100_000)
}
fn br(ctx: &mut Ctx) -> CaseResult {
    decodes(ctx, "/encoded/br/100000", 100_000)
}
fn zstd(ctx: &mut Ctx) -> CaseResult {
    decodes(ctx, "/encoded/zstd/100000", 100_000)
}
fn gzip_chunked(ctx: &mut Ctx) -> CaseResult {
    decodes(ctx, "/encoded/gzip-chunked/100000", 100_000)
}
fn gzip_br(ctx: &mut Ctx) -> CaseResult {
    // `Content-Encoding: gzip, br`: gzip applied first, so br is undone first.
    let t = decodes(ctx, "/encoded/gzip,br/100000", 100_000)?;
    ensure!(
        t.headers
            .iter()
            .any(|(n, v)| n == "content-encoding" && v == "gzip, br"),
        "content-encoding: {:?}",
        t.headers
    );
    Ok(t)
}

fn large_gzip(ctx: &mut Ctx) -> CaseResult {
    // Decoded output larger than the handle's buffer comes in many pieces.
    let n = 6 << 20;
    let url = ctx.origin_url(&format!("/encoded/gzip/{n}"))?;
    let mut h = ctx.start(build(ResourceRequest::get(url))?)?;
    let mut rec = Recorder::new(ctx.backend().name(), &h);
    let mut chunks = 0usize;
    let mut largest = 0usize;
    while let Some(ev) = h.next_event_blocking() {
        if let Event::Data(d) = &ev {
            chunks += 1;
            largest = largest.max(d.len());
        }
        rec.observe(&ev);
    }
    let t = rec.finish();
    expect_status(&t, 200)?;
    ensure_eq!(t.body_sha256, sha256(&body_pattern(n)));
    ensure!(
        chunks > 1 && largest < n,
        "the decoded body came in {chunks} chunk(s), the largest {largest} bytes"
    );
    Ok(t)
}

fn empty_gzip(ctx: &mut Ctx) -> CaseResult {
    // `Content-Encoding: gzip` on an empty body: nothing to decode, no error.
    let f = ctx.get("/encoded/gzip-empty")?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.body_bytes, 0);
    ensure_eq!(f.trace.events, vec!["response", "finished"]);
    Ok(f.trace)
}

fn head(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/encoded/gzip/100000")?;
    let f = ctx.fetch(build(ResourceRequest::builder("HEAD", url))?)?;
    expect_status(&f.trace, 200)?;
    ensure_eq!(f.trace.body_bytes, 0);
    ensure_eq!(f.trace.events, vec!["response", "finished"]);
    Ok(f.trace)
}

fn after_redirect(ctx: &mut Ctx) -> CaseResult {
    let t = decodes(
        ctx,
        "/redirect-to?url=/encoded/zstd/30000&status=302",
        30_000,
    )?;
    ensure_eq!(t.redirects.len(), 1);
    Ok(t)
}

fn decode_error(ctx: &mut Ctx, path: &str, kind: &str) -> Result<Trace, String> {
    let f = ctx.get(path)?;
    expect_error(&f.trace, kind)?;
    ensure_eq!(f.trace.status, Some(200));
    Ok(f.trace)
}

fn corrupt(ctx: &mut Ctx) -> CaseResult {
    let t = decode_error(ctx, "/encoded/corrupt-gzip", "protocol")?;
    ensure_eq!(t.body_bytes, 0);
    ensure_eq!(t.events, vec!["response", "failed"]);
    Ok(t)
}

fn truncated(ctx: &mut Ctx) -> CaseResult {
    // The HTTP body is complete; the gzip stream inside it is not.
    let t = decode_error(ctx, "/encoded/truncated-gzip", "protocol")?;
    ensure!(
        t.body_bytes < 100_000,
        "{} bytes decoded from half a stream",
        t.body_bytes
    );
    ensure!(
        t.body_sha256 != sha256(&body_pattern(100_000)),
        "half a stream decoded to the whole body"
    );
    Ok(t)
}

fn unknown_coding(ctx: &mut Ctx) -> CaseResult {
    // An unknown coding is not passed on as if it were the body: the load
    // fails as the response arrives, before any of it is delivered.
    let f = ctx.get("/headers?content-encoding=x-unknown")?;
    expect_error(&f.trace, "protocol")?;
    ensure_eq!(f.trace.events, vec!["failed"]);
    ensure_eq!(f.trace.body_bytes, 0);
    // Opting out delivers the bytes as they came.
    let url = ctx.origin_url("/headers?content-encoding=x-unknown")?;
    let raw = ctx.fetch(build(ResourceRequest::get(url).decode_content(false))?)?;
    expect_status(&raw.trace, 200)?;
    ensure_eq!(raw.body, b"headers\n");
    Ok(f.trace)
}

fn bomb(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/encoded/bomb")?;
    let mgr = ctx.manager_with(|b| Ok(b.max_decoded_body_bytes(8 << 20)))?;
    let mut h = mgr.load(build(ResourceRequest::get(url))?);
    let mut rec = Recorder::new(ctx.backend().name(), &h);
    while let Some(ev) = h.next_event_blocking() {
        rec.observe(&ev);
    }
    let t = rec.finish();
    expect_error(&t, "limit_exceeded")?;
    ensure!(
        t.body_bytes <= 8 << 20,
        "{} bytes delivered past a limit of 8 MiB",
        t.body_bytes
    );
    Ok(t)
}

fn bomb_at_limit(ctx: &mut Ctx) -> CaseResult {
    // Exactly the limit is allowed: the limit is a ceiling, not a guess.
    let url = ctx.origin_url("/encoded/bomb")?;
    let mgr = ctx.manager_with(|b| Ok(b.max_decoded_body_bytes(BOMB_DECODED_BYTES)))?;
    let mut h = mgr.load(build(ResourceRequest::get(url))?);
    let mut rec = Recorder::new(ctx.backend().name(), &h);
    while let Some(ev) = h.next_event_blocking() {
        if let Event::Data(d) = &ev {
            ensure!(d.iter().all(|b| *b == 0), "a non-zero byte in the bomb");
        }
        rec.observe(&ev);
    }
    let t = rec.finish();
    expect_status(&t, 200)?;
    ensure_eq!(t.body_bytes, BOMB_DECODED_BYTES);
    Ok(t)
}
