//! Events and callbacks: the same order on every backend (Redirected* →
//! UploadProgress* → Response → (Data | DownloadProgress)* → Finished |
//! Failed), progress values that add up, the WebCore-style client, the async
//! event stream, and pause/resume that stops delivery without losing bytes.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_core::Stream;
use resource_handle::{
    block_on, Event, Recorder, RequestBody, ResourceHandle, ResourceHandleClient, ResourceRequest,
    ResourceResponse, Trace,
};

use super::{build, expect_error, expect_status, sha256, CaseResult, Ctx};
use crate::servers::{body_pattern, Step};

cases!("events";
    "events.get-order" => get_order,
    "events.head-order" => head_order,
    "events.post-order" => post_order,
    "events.redirect-order" => redirect_order,
    "events.failure-before-response" => failure_before_response,
    "events.failure-after-body-started" => failure_mid_body,
    "events.download-progress-with-length" => progress_with_length,
    "events.download-progress-chunked-total-none" => progress_chunked,
    "events.upload-progress-bytes" => upload_bytes,
    "events.upload-progress-chunked-stream" => upload_chunked,
    "events.nothing-after-terminal" => nothing_after_terminal,
    "events.client-callbacks-get" => client_get,
    "events.client-callbacks-post-redirect" => client_post_redirect,
    "events.client-callbacks-failure" => client_failure,
    "events.async-stream" => async_stream,
    "events.async-next-event" => async_next_event,
    "events.pause-resume-mid-body" => pause_mid_body,
    "events.pause-before-response" => pause_before_response,
);

/// Every event of a load, in order, and its trace.
fn all_events(ctx: &Ctx, mut h: ResourceHandle) -> (Vec<Event>, Trace) {
    let mut rec = Recorder::new(ctx.backend().name(), &h);
    let mut out = Vec::new();
    while let Some(ev) = h.next_event_blocking() {
        rec.observe(&ev);
        out.push(ev);
    }
    (out, rec.finish())
}

fn order(ctx: &mut Ctx, req: ResourceRequest, want: &[&str]) -> CaseResult {
    let f = ctx.fetch(req)?;
    ensure_eq!(f.trace.events, want);
    Ok(f.trace)
}

fn get_order(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/bytes/5000")?;
    let t = order(
        ctx,
        build(ResourceRequest::get(url))?,
        &["response", "data", "download_progress", "finished"],
    )?;
    expect_status(&t, 200)?;
    Ok(t)
}

fn head_order(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/bytes/5000")?;
    order(
        ctx,
        build(ResourceRequest::builder("HEAD", url))?,
        &["response", "finished"],
    )
}

fn post_order(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/echo")?;
    order(
        ctx,
        build(ResourceRequest::post(url).body(vec![1u8; 100_000]))?,
        &[
            "upload_progress",
            "response",
            "data",
            "download_progress",
            "finished",
        ],
    )
}

fn redirect_order(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/redirect/2")?;
    order(
        ctx,
        build(ResourceRequest::get(url))?,
        &[
            "redirected",
            "redirected",
            "response",
            "data",
            "download_progress",
            "finished",
        ],
    )
}

fn failure_before_response(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.raw(vec![Step::ReadRequest, Step::Close])?;
    let f = ctx.fetch(build(ResourceRequest::get(format!("{base}/x")))?)?;
    expect_error(&f.trace, "protocol")?;
    ensure_eq!(f.trace.events, vec!["failed"]);
    Ok(f.trace)
}

fn failure_mid_body(ctx: &mut Ctx) -> CaseResult {
    let base = ctx.raw(vec![
        Step::ReadRequest,
        Step::send("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        Step::Send(vec![b'x'; 300]),
        Step::Sleep(Duration::from_millis(100)),
        Step::Close,
    ])?;
    let f = ctx.fetch(build(ResourceRequest::get(format!("{base}/x")))?)?;
    expect_error(&f.trace, "body_truncated")?;
    ensure_eq!(
        f.trace.events,
        vec!["response", "data", "download_progress", "failed"]
    );
    ensure_eq!(f.trace.body_bytes, 300);
    Ok(f.trace)
}

/// Loads `path` and checks every DownloadProgress: increasing, the last equal
/// to the bytes delivered, its total `total`.
fn download_progress(ctx: &mut Ctx, path: &str, len: u64, total: Option<u64>) -> CaseResult {
    let url = ctx.origin_url(path)?;
    let h = ctx.start(build(ResourceRequest::get(&url))?)?;
    let (events, t) = all_events(ctx, h);
    let mut delivered = 0u64;
    let mut last = None;
    for ev in &events {
        match ev {
            Event::Data(d) => delivered += d.len() as u64,
            Event::DownloadProgress { received, total: t } => {
                ensure!(
                    last.is_none_or(|l| *received > l),
                    "progress went from {last:?} to {received}"
                );
                ensure_eq!(*received, delivered);
                ensure_eq!(*t, total);
                last = Some(*received);
            }
            _ => {}
        }
    }
    ensure_eq!(last, Some(len));
    ensure_eq!(delivered, len);
    expect_status(&t, 200)?;
    ensure_eq!(t.body_sha256, sha256(&body_pattern(len as usize)));
    Ok(t)
}

fn progress_with_length(ctx: &mut Ctx) -> CaseResult {
    download_progress(ctx, "/bytes/3000000", 3_000_000, Some(3_000_000))
}

fn progress_chunked(ctx: &mut Ctx) -> CaseResult {
    download_progress(ctx, "/bytes/300000?chunked=7000", 300_000, None)
}

/// Uploads `body` and checks every UploadProgress: increasing, before the
/// response, the last equal to `len`, its total `total`.
fn upload_progress(ctx: &mut Ctx, body: RequestBody, len: u64, total: Option<u64>) -> CaseResult {
    let url = ctx.origin_url("/sink")?;
    let h = ctx.start(build(ResourceRequest::post(&url).body(body))?)?;
    let (events, t) = all_events(ctx, h);
    let mut last = None;
    let mut responded = false;
    for ev in &events {
        match ev {
            Event::UploadProgress { sent, total: t } => {
                ensure!(!responded, "upload progress after the response");
                ensure!(
                    last.is_none_or(|l| *sent > l),
                    "upload progress went from {last:?} to {sent}"
                );
                ensure_eq!(*t, total);
                last = Some(*sent);
            }
            Event::Response(_) => responded = true,
            _ => {}
        }
    }
    ensure_eq!(last, Some(len));
    expect_status(&t, 200)?;
    Ok(t)
}

fn upload_bytes(ctx: &mut Ctx) -> CaseResult {
    let len = 2_000_000u64;
    upload_progress(ctx, vec![5u8; len as usize].into(), len, Some(len))
}

fn upload_chunked(ctx: &mut Ctx) -> CaseResult {
    let len = 700_001u64;
    let body = RequestBody::chunked(std::io::Cursor::new(vec![9u8; len as usize]));
    upload_progress(ctx, body, len, None)
}

fn nothing_after_terminal(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/bytes/10")?;
    let mut h = ctx.start(build(ResourceRequest::get(&url))?)?;
    let mut rec = Recorder::new(ctx.backend().name(), &h);
    while let Some(ev) = h.next_event_blocking() {
        rec.observe(&ev);
    }
    for _ in 0..3 {
        ensure!(
            h.next_event_blocking().is_none(),
            "an event after the terminal one"
        );
    }
    ensure!(
        h.chunk_blocking().map_err(|e| e.to_string())?.is_none(),
        "a chunk after the end"
    );
    ensure_eq!(h.bytes_received(), 10);
    let t = rec.finish();
    expect_status(&t, 200)?;
    Ok(t)
}

/// A client that writes down each callback as the event name it stands for.
#[derive(Default)]
struct Log {
    names: Vec<&'static str>,
    body: Vec<u8>,
    last_progress: Option<(u64, Option<u64>)>,
    last_upload: Option<(u64, Option<u64>)>,
    redirects: Vec<(String, String, u16)>,
    status: Option<u16>,
    error: Option<String>,
}

impl Log {
    fn push(&mut self, name: &'static str) {
        // Collapsed as the trace collapses them: a run of data and progress
        // callbacks is the distinct names it holds.
        let collapsible = |n: &str| matches!(n, "data" | "download_progress" | "upload_progress");
        let run_start = self
            .names
            .iter()
            .rposition(|n| !collapsible(n))
            .map_or(0, |i| i + 1);
        if !(collapsible(name) && self.names[run_start..].contains(&name)) {
            self.names.push(name);
        }
    }
}

impl ResourceHandleClient for Log {
    fn will_send_request(&mut self, from: &url::Url, to: &url::Url, status: http::StatusCode) {
        self.push("redirected");
        self.redirects
            .push((from.to_string(), to.to_string(), status.as_u16()));
    }
    fn did_send_data(&mut self, sent: u64, total: Option<u64>) {
        self.push("upload_progress");
        self.last_upload = Some((sent, total));
    }
    fn did_receive_response(&mut self, response: &ResourceResponse) {
        self.push("response");
        self.status = Some(response.status().as_u16());
    }
    fn did_receive_data(&mut self, data: &[u8]) {
        self.push("data");
        self.body.extend_from_slice(data);
    }
    fn did_receive_progress(&mut self, received: u64, total: Option<u64>) {
        self.push("download_progress");
        self.last_progress = Some((received, total));
    }
    fn did_finish_loading(&mut self) {
        self.push("finished");
    }
    fn did_fail(&mut self, error: &resource_handle::Error) {
        self.push("failed");
        self.error = Some(error.kind().as_str().to_owned());
    }
}

/// Runs `req` through a client, then the same request pulled, and checks
/// both saw the same sequence.
fn client_matches(
    ctx: &mut Ctx,
    make: impl Fn() -> Result<ResourceRequest, String>,
) -> Result<(Log, Trace), String> {
    let mut log = Log::default();
    ctx.start(make()?)?.run_client_blocking(&mut log);
    let t = ctx.fetch(make()?)?.trace;
    ensure_eq!(log.names, t.events);
    ensure_eq!(log.status, t.status);
    ensure_eq!(log.error, t.error.as_ref().map(|e| e.kind.clone()));
    ensure_eq!(log.body.len() as u64, t.body_bytes);
    ensure_eq!(sha256(&log.body), t.body_sha256);
    Ok((log, t))
}

fn client_get(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/bytes/200000")?;
    let (log, t) = client_matches(ctx, || build(ResourceRequest::get(&url)))?;
    ensure_eq!(
        log.names,
        vec!["response", "data", "download_progress", "finished"]
    );
    ensure_eq!(log.last_progress, Some((200_000, Some(200_000))));
    Ok(t)
}

fn client_post_redirect(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/redirect-to?url=/echo&status=307")?;
    let (log, t) = client_matches(ctx, || {
        build(ResourceRequest::post(&url).body(vec![3u8; 10_000]))
    })?;
    ensure_eq!(
        log.names,
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
    ensure_eq!(log.last_upload, Some((10_000, Some(10_000))));
    let to = ctx.origin_url("/echo")?;
    ensure_eq!(log.redirects, vec![(url.clone(), to, 307)]);
    Ok(t)
}

fn client_failure(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/loop")?;
    let (log, t) = client_matches(ctx, || build(ResourceRequest::get(&url).max_redirects(1)))?;
    ensure_eq!(log.names, vec!["redirected", "failed"]);
    ensure_eq!(log.error.as_deref(), Some("too_many_redirects"));
    Ok(t)
}

/// The trace of `req` pulled through the async API, driven by `block_on`.
fn async_trace(ctx: &mut Ctx, req: ResourceRequest, stream: bool) -> Result<Trace, String> {
    let h = ctx.start(req)?;
    let mut rec = Recorder::new(ctx.backend().name(), &h);
    if stream {
        let mut events = h.events();
        block_on(async {
            while let Some(ev) = poll_fn(|cx| Pin::new(&mut events).poll_next(cx)).await {
                rec.observe(&ev);
            }
        });
    } else {
        let mut h = h;
        block_on(async {
            while let Some(ev) = h.next_event().await {
                rec.observe(&ev);
            }
        });
    }
    Ok(rec.finish())
}

fn async_same(ctx: &mut Ctx, stream: bool) -> CaseResult {
    let url = ctx.origin_url("/redirect-to?url=/bytes/100000&status=302")?;
    let t = async_trace(ctx, build(ResourceRequest::get(&url))?, stream)?;
    let pulled = ctx.fetch(build(ResourceRequest::get(&url))?)?.trace;
    ensure_eq!(t, pulled);
    ensure_eq!(
        t.events,
        vec![
            "redirected",
            "response",
            "data",
            "download_progress",
            "finished"
        ]
    );
    ensure_eq!(t.body_sha256, sha256(&body_pattern(100_000)));
    Ok(t)
}

fn async_stream(ctx: &mut Ctx) -> CaseResult {
    async_same(ctx, true)
}

fn async_next_event(ctx: &mut Ctx) -> CaseResult {
    async_same(ctx, false)
}

/// Counts wake-ups, so a paused poll can be told from a busy one.
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Polls `h` for `window` while it is paused and checks no body byte is
/// delivered; returns the events that did come (progress for data delivered
/// before the pause may).
fn poll_paused(h: &mut ResourceHandle, window: Duration) -> Result<Vec<Event>, String> {
    let waker = Waker::from(Arc::new(CountingWaker(Default::default())));
    let mut cx = Context::from_waker(&waker);
    let before = h.bytes_received();
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < window {
        match h.poll_next_event(&mut cx) {
            Poll::Pending => std::thread::sleep(Duration::from_millis(10)),
            Poll::Ready(Some(Event::Data(d))) => {
                return Err(format!(
                    "{} body bytes delivered {:?} into the pause",
                    d.len(),
                    start.elapsed()
                ))
            }
            Poll::Ready(Some(ev)) => {
                ensure!(
                    matches!(ev, Event::DownloadProgress { .. }),
                    "{} delivered while paused",
                    ev.name()
                );
                seen.push(ev);
            }
            Poll::Ready(None) => return Err("the load ended while paused".into()),
        }
    }
    ensure_eq!(h.bytes_received(), before);
    Ok(seen)
}

fn pause_mid_body(ctx: &mut Ctx) -> CaseResult {
    let len = 4 << 20;
    let url = ctx.origin_url(&format!("/bytes/{len}"))?;
    let mut h = ctx.start(build(ResourceRequest::get(&url))?)?;
    let mut rec = Recorder::new(ctx.backend().name(), &h);
    let mut hasher_body = Vec::with_capacity(len);
    // Up to the first chunk.
    loop {
        let ev = h.next_event_blocking().ok_or("the load ended early")?;
        rec.observe(&ev);
        if let Event::Data(d) = &ev {
            hasher_body.extend_from_slice(d);
            break;
        }
        if let Event::Failed(e) = &ev {
            return Err(format!("failed before the body: {e}"));
        }
    }
    h.pause();
    for ev in poll_paused(&mut h, Duration::from_millis(300))? {
        rec.observe(&ev);
    }
    ensure!(
        (h.bytes_received() as usize) < len,
        "the whole body was delivered before the pause"
    );
    h.resume();
    while let Some(ev) = h.next_event_blocking() {
        if let Event::Data(d) = &ev {
            hasher_body.extend_from_slice(d);
        }
        rec.observe(&ev);
    }
    ensure_eq!(hasher_body.len(), len);
    ensure!(
        hasher_body == body_pattern(len),
        "the body after resume differs from what was sent"
    );
    let t = rec.finish();
    expect_status(&t, 200)?;
    Ok(t)
}

fn pause_before_response(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/bytes/100000")?;
    let mut h = ctx.start(build(ResourceRequest::get(&url))?)?;
    h.pause();
    let mut rec = Recorder::new(ctx.backend().name(), &h);
    let waker = Waker::from(Arc::new(CountingWaker(Default::default())));
    let mut cx = Context::from_waker(&waker);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(200) {
        match h.poll_next_event(&mut cx) {
            Poll::Pending => std::thread::sleep(Duration::from_millis(10)),
            Poll::Ready(ev) => {
                return Err(format!(
                    "{} delivered while paused",
                    ev.as_ref().map_or("the end", Event::name)
                ))
            }
        }
    }
    ensure!(
        h.current_response().is_none(),
        "a response was delivered while paused"
    );
    h.resume();
    while let Some(ev) = h.next_event_blocking() {
        rec.observe(&ev);
    }
    let t = rec.finish();
    expect_status(&t, 200)?;
    ensure_eq!(t.body_sha256, sha256(&body_pattern(100_000)));
    ensure_eq!(
        t.events,
        vec!["response", "data", "download_progress", "finished"]
    );
    Ok(t)
}
