//! The runtime the backend owns, and the task that runs one exchange.
//!
//! Every exchange is one task on the backend's multi-thread tokio runtime. It
//! races the hyper exchange against the load's cancellation and total
//! timeout; losing the race drops hyper's futures, and hyper then closes that
//! HTTP/1.1 connection instead of returning it to the pool half-read, or
//! resets that HTTP/2 stream and leaves the shared connection open.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use handle_api::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use handle_api::http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use handle_api::{Error, ErrorKind, ExchangeSink, ResponseHead, Result, TimeoutPhase};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::Notify;

use crate::conn::Activity;
use crate::convert::{Prepared, Resend, Target, UploadFailure, WireBody};
use crate::error;
use crate::pool::{Key, Pool, Pooled};

/// Builds the runtime the backend owns, so an application's runtime (or its
/// lack of one) never matters to the backend.
///
/// Two workers. Measured on two cores against one worker: one worker takes a
/// quarter less CPU for a streamed download (its buffers stay in one
/// thread's malloc arena, with a third of the page faults, and hyper's
/// connection task and the exchange wake each other without a system call),
/// but it sleeps in `epoll_wait` whenever the application's thread has the
/// next request, and being woken from there costs small requests half their
/// throughput (one at a time) and a fifth with 64 in flight. Small requests
/// are where the abstraction costs most, so they decide.
pub(crate) fn runtime() -> io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("rh-hyper")
        .build()
}

/// Spawns hyper's connection tasks on the backend's runtime through its
/// handle, which (unlike `tokio::spawn`) works from any thread.
#[derive(Clone)]
pub(crate) struct RuntimeExecutor(pub(crate) Handle);

impl<F> hyper::rt::Executor<F> for RuntimeExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

/// The response head limits, checked on HTTP/2 heads (HTTP/1.1 heads are
/// held to them on the wire, by `Wire` and hyper).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    /// Bytes of the head as curl would show it (`HTTP/2 200 \r\n`, then
    /// `name: value\r\n` per field and the blank line).
    pub(crate) bytes: usize,
    /// Header fields.
    pub(crate) fields: usize,
}

/// Runs one exchange to its end and reports it through `sink`.
pub(crate) async fn run(
    pool: Arc<Pool>,
    limits: HeadLimits,
    prepared: Prepared,
    mut sink: ExchangeSink,
) {
    let start = Instant::now();
    let cancel = Arc::new(Notify::new());
    let notify = cancel.clone();
    // notify_one keeps a permit, so a cancel before the select below still counts.
    sink.on_cancel(move || notify.notify_one());

    let Prepared {
        request,
        key,
        target,
        timeout,
        connect_timeout,
        read_timeout,
        resend,
        upload_failure,
        activity,
    } = prepared;
    let outcome = {
        // Each future is pinned where it is made and the ones around it hold
        // only a reference: an async block that took it by value would hold it
        // twice over, and the task (copied once into the runtime) would be many
        // times the size of the exchange.
        let exchange = exchange(
            &pool,
            Outgoing {
                request,
                key: &key,
                target: &target,
                resend,
                connect_timeout,
            },
            limits,
            &upload_failure,
            &mut sink,
            start,
            &activity,
        );
        tokio::pin!(exchange);
        let idle = async {
            match read_timeout {
                Some(limit) => activity.idle(limit).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(idle);
        let watched = async {
            tokio::select! {
                r = &mut exchange => r,
                () = &mut idle => Err(Error::timeout(TimeoutPhase::Idle)),
            }
        };
        tokio::pin!(watched);
        let bounded = async {
            match timeout {
                Some(t) => tokio::time::timeout(t, &mut watched)
                    .await
                    .unwrap_or_else(|elapsed| Err(error::total_timeout(elapsed))),
                None => (&mut watched).await,
            }
        };
        tokio::select! {
            biased;
            () = cancel.notified() => Err(Error::cancelled()),
            r = bounded => r,
        }
    };
    match outcome {
        Ok(()) => sink.finish(),
        // After a cancel, whatever hyper said while being torn down is noise.
        Err(_) if sink.is_cancelled() => sink.fail(Error::cancelled()),
        Err(e) => sink.fail(e),
    }
}

/// The request and how to send it.
struct Outgoing<'a> {
    request: Request<WireBody>,
    key: &'a Key,
    target: &'a Target,
    resend: Option<Resend>,
    connect_timeout: Option<Duration>,
}

/// How long a stream whose HTTP/2 connection failed waits to learn why.
const CONNECTION_FAILURE_WAIT: Duration = Duration::from_millis(200);

/// How many connections a request that was not written may try in turn.
const MAX_UNSENT_TRIES: usize = 16;

/// Sends one request on a connection from the pool and waits for its head.
/// A reused connection that closed before the request left is replaced by
/// another, as nothing was sent; the exchange's `activity` is attached to
/// the connection as soon as there is one, so the idle clock runs from there.
async fn send(
    pool: &Arc<Pool>,
    key: &Key,
    target: &Target,
    mut request: Request<WireBody>,
    connect_timeout: Option<Duration>,
    activity: &Arc<Activity>,
) -> Result<(
    std::result::Result<Response<Incoming>, hyper::Error>,
    Pooled,
)> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut conn = pool.checkout(key, connect_timeout).await?;
        if let Err(e) = conn.ready().await {
            if conn.reused && tries < MAX_UNSENT_TRIES {
                conn.discard();
                continue;
            }
            return Ok((Err(e), conn));
        }
        if !conn.is_h2() {
            conn.meta.attach(activity);
        }
        activity.arm();
        target.apply(&mut request, conn.is_h2(), key.forwarded());
        match conn.send(request).await {
            Ok(response) => return Ok((Ok(response), conn)),
            Err(mut e) => match e.take_message() {
                Some(unsent) if conn.reused && tries < MAX_UNSENT_TRIES => {
                    conn.discard();
                    request = unsent;
                }
                _ => return Ok((Err(e.into_error()), conn)),
            },
        }
    }
}

async fn exchange(
    pool: &Arc<Pool>,
    out: Outgoing<'_>,
    limits: HeadLimits,
    upload_failure: &UploadFailure,
    sink: &mut ExchangeSink,
    start: Instant,
    activity: &Arc<Activity>,
) -> Result<()> {
    let Outgoing {
        request,
        key,
        target,
        resend,
        connect_timeout,
    } = out;
    let (mut result, mut conn) =
        send(pool, key, target, request, connect_timeout, activity).await?;
    if result.is_err() && !conn.is_h2() && conn.meta.stale() {
        // The keep-alive race: the reused connection died before any byte
        // of the response. A request handle-api allows to is sent once more,
        // on another connection; any other fails without being sent again.
        let Some(resend) = resend else {
            return Err(Error::stale_connection());
        };
        (result, conn) = send(
            pool,
            key,
            target,
            resend.request(),
            connect_timeout,
            activity,
        )
        .await?;
        if result.is_err() && !conn.is_h2() && conn.meta.stale() {
            return Err(Error::stale_connection());
        }
    }
    let response = match result {
        Ok(response) => response,
        Err(e) => {
            if conn.is_h2() && (e.is_canceled() || e.is_closed()) {
                if let Some(cause) = conn.meta.failure(CONNECTION_FAILURE_WAIT).await {
                    return Err(cause);
                }
            }
            return Err(error::request(e, upload_failure.take()));
        }
    };
    let (mut parts, mut body) = response.into_parts();
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(Error::new(
            ErrorKind::Protocol,
            "a 101 (Switching Protocols) answered a request that asked for no upgrade",
        ));
    }
    if conn.is_h2() {
        check_h2_head(&parts.headers, limits)?;
    } else if parts.headers.contains_key(TRANSFER_ENCODING)
        && parts.headers.contains_key(CONTENT_LENGTH)
    {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3), but a
        // message with both may be smuggling: its connection is not reused.
        conn.reusable = false;
    }
    // Whether the body's framing marks its end, so that a cut shows.
    let chunked = conn.is_h2() || parts.headers.contains_key(TRANSFER_ENCODING);
    unfold(&mut parts.headers);

    let mut head = ResponseHead::new(parts.status, parts.version, parts.headers);
    // hyper keeps the reason phrase only when it differs from the canonical one.
    head.reason = parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
    head.remote_addr = conn.meta.remote();
    // The head is parsed as soon as its last byte is in, so this is the
    // closest honest figure hyper allows.
    head.timing.first_byte = Some(start.elapsed());
    // The head and the chunks that follow it at once wake the application
    // once, when the body has to wait for the network (or at the end),
    // rather than once each: see `next_frame`.
    sink.defer_wakes();
    sink.response(head);

    let mut yielded = false;
    while let Some(frame) = next_frame(&mut body, sink, &mut yielded).await {
        let frame = frame.map_err(|e| {
            error::body(
                e,
                sink.expected_len(),
                sink.received(),
                chunked,
                upload_failure.take(),
            )
        })?;
        activity.touch();
        // Trailers are not part of the contract's body.
        if let Ok(data) = frame.into_data() {
            // Awaiting here is the backpressure: hyper reads no further
            // until the application has taken enough, and the idle clock
            // stops meanwhile.
            activity.hold(true);
            let r = sink.data(data).await;
            activity.hold(false);
            r?;
        }
    }
    // Back to the pool before the load is reported finished, so the
    // application's next load finds the connection free.
    conn.release();
    Ok(())
}

/// The next frame of `body`, waking the application for the events queued
/// so far only when the frame is not there yet.
///
/// hyper's connection task hands the body over only once this task asked
/// for it, so a frame already read from the socket is usually one task
/// switch away (on the same worker, without a system call): the first time
/// a frame is missing the task yields once and looks again before it wakes
/// the application, so that a small response's head, body and end reach it
/// in one wake-up.
fn next_frame<'a>(
    body: &'a mut Incoming,
    sink: &'a mut ExchangeSink,
    yielded: &'a mut bool,
) -> impl Future<Output = Option<std::result::Result<Frame<Bytes>, hyper::Error>>> + 'a {
    std::future::poll_fn(move |cx| match Pin::new(&mut *body).poll_frame(cx) {
        Poll::Pending if sink.wakes_owed() => {
            if !*yielded {
                *yielded = true;
                cx.waker().wake_by_ref();
            } else {
                sink.flush_wakes();
            }
            Poll::Pending
        }
        Poll::Pending => Poll::Pending,
        ready => {
            *yielded = false;
            ready
        }
    })
}

/// Holds an HTTP/2 response head to the limits, counted as curl counts the
/// head it rebuilds from the frames, so both backends fail the same heads.
fn check_h2_head(headers: &HeaderMap, limits: HeadLimits) -> Result<()> {
    if headers.len() > limits.fields {
        return Err(Error::new(
            ErrorKind::LimitExceeded,
            format!(
                "the response head has more than the limit of {} header fields",
                limits.fields
            ),
        ));
    }
    // `HTTP/2 200 \r\n` and the blank line.
    let bytes = 13
        + 2
        + headers
            .iter()
            .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
            .sum::<usize>();
    if bytes > limits.bytes {
        return Err(Error::new(
            ErrorKind::LimitExceeded,
            format!(
                "the response head is larger than the limit of {} bytes",
                limits.bytes
            ),
        ));
    }
    Ok(())
}

/// Replaces each obs-fold hyper left in a header value (CRLF or LF and the
/// white space around it) with one SP, as RFC 9112 §5.2 asks of a user agent.
fn unfold(headers: &mut HeaderMap) {
    let folded = headers
        .values()
        .any(|v| v.as_bytes().iter().any(|&b| b == b'\n' || b == b'\r'));
    if !folded {
        return;
    }
    let old = std::mem::take(headers);
    let mut name = None;
    for (n, v) in old {
        if n.is_some() {
            name = n;
        }
        let Some(name) = name.clone() else { continue };
        let bytes = v.as_bytes();
        let value = if bytes.iter().any(|&b| b == b'\n' || b == b'\r') {
            let parts: Vec<&[u8]> = bytes
                .split(|&b| b == b'\n')
                .map(trim)
                .filter(|p| !p.is_empty())
                .collect();
            HeaderValue::from_bytes(&parts.join(&b' ')).unwrap_or(v)
        } else {
            v
        };
        headers.append(name, value);
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\r');
    let start = b.iter().position(|c| !ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !ws(c)).map_or(start, |e| e + 1);
    &b[start..end]
}
