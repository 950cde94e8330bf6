//! The thread that owns one `curl::multi::Multi` and every transfer on it, as
//! WebCore's curl layer drives one multi handle on its own thread.
//!
//! Other threads talk to it only through a queue of [`Msg`]s, followed by
//! `curl_multi_wakeup` (which ends the thread's `curl_multi_poll` early) only
//! when the thread is asleep there: a message sent while it works is drained
//! before it sleeps, so a burst of starts costs one wakeup, not one each. The
//! thread never blocks on the application: a chunk that fills the sink's
//! buffer pauses receiving (`curl_easy_pause`), and the sink's `on_space`
//! callback queues the matching unpause.
//!
//! The application is woken once per pass, not once per event: every sink
//! defers its wakes ([`ExchangeSink::defer_wakes`]), and the thread flushes
//! them all before it sleeps. A finished transfer and a full buffer wake
//! at once.

use std::collections::HashMap;
use std::io::{self, Read};
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::raw::c_void;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use curl::easy::{Easy2, Handler, ReadError, SeekResult, WriteError};
use curl::multi::{Easy2Handle, Multi, MultiWaker};
use handle_api::http::header::{HeaderName, HeaderValue};
use handle_api::http::{HeaderMap, Method, StatusCode, Version};
use handle_api::{
    BackendConfig, Error, ErrorKind, Exchange, ExchangeSink, LoadTiming, ResponseHead, Result,
    TimeoutPhase, TryData, UploadBody,
};

use crate::convert;
use crate::error::{self, FailureContext};
use crate::tls::TlsSettings;
use crate::wire::{self, Attempts};

/// Longest the thread sleeps in `curl_multi_poll`; curl shortens it to its own
/// next timer, and a wakeup ends it at once.
const POLL_MAX: Duration = Duration::from_secs(1);

/// What other threads (and the transfers' own callbacks) ask of the driver.
pub(crate) enum Msg {
    /// Put a new exchange on the wire.
    Start(Box<Exchange>),
    /// The response head of transfer N is complete; report it.
    Head(usize),
    /// The sink of transfer N has room again.
    Unpause(usize),
    /// The load of transfer N was cancelled.
    Cancel(usize),
    /// The manager was dropped: finish what runs, accept nothing new, exit.
    Shutdown,
}

/// The way into the driver thread: queue a message, then wake the multi if
/// the thread sleeps.
#[derive(Clone)]
pub(crate) struct Notifier {
    tx: Sender<Msg>,
    waker: MultiWaker,
    /// Set by the driver just before it sleeps in `curl_multi_poll`, cleared
    /// by whoever wakes it (or by the driver when it wakes by itself).
    asleep: Arc<AtomicBool>,
}

impl Notifier {
    /// Queues `msg` and wakes the driver if it sleeps. Hands `msg` back when
    /// the driver thread is gone.
    pub(crate) fn send(&self, msg: Msg) -> std::result::Result<(), Msg> {
        self.tx.send(msg).map_err(|e| e.0)?;
        // Pairs with the fence in `Driver::sleep`: either the driver sees
        // this message before it sleeps, or this sees it asleep (Dekker).
        fence(Ordering::SeqCst);
        // Only the first sender after the driver fell asleep wakes it.
        if self.asleep.swap(false, Ordering::SeqCst) {
            // Fails only when the multi is already gone, and then so is the thread.
            let _ = self.waker.wakeup();
        }
        Ok(())
    }

    /// Queues `msg` from the driver thread itself, which drains the queue
    /// right after `perform` and so needs no wakeup.
    fn post(&self, msg: Msg) {
        let _ = self.tx.send(msg);
    }
}

/// Starts the driver thread and returns the way to reach it.
pub(crate) fn spawn(config: &BackendConfig) -> Result<Notifier> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let config = config.clone();
    // The root bundle is encoded once here, not per request.
    let tls = TlsSettings::new(&config.tls);
    let notify_tx = tx.clone();
    thread::Builder::new()
        .name("curl-driver".into())
        .spawn(move || {
            // The multi handle is not Send: it is born and dies on this thread.
            let mut multi = Multi::new();
            let max = config.max_connections_per_host.max(1);
            if let Err(e) = multi.set_max_host_connections(max) {
                let _ = ready_tx.send(Err(error::multi("limit connections per host", e)));
                return;
            }
            // CURLPIPE_MULTIPLEX: HTTP/2 transfers to one origin share one
            // connection (libcurl's default since 7.62, set so it stays so).
            if let Err(e) = multi.pipelining(false, true) {
                let _ = ready_tx.send(Err(error::multi("enable HTTP/2 multiplexing", e)));
                return;
            }
            let notifier = Notifier {
                tx: notify_tx,
                waker: multi.waker(),
                asleep: Arc::new(AtomicBool::new(false)),
            };
            if ready_tx.send(Ok(notifier.clone())).is_err() {
                return;
            }
            Driver {
                multi,
                rx,
                notifier,
                config,
                tls,
                transfers: HashMap::new(),
                idle: Vec::new(),
                next_token: 0,
                closing: false,
            }
            .run();
        })
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot start the curl driver thread: {e}"),
            )
            .with_source(e)
        })?;
    drop(tx);
    ready_rx.recv().map_err(|_| {
        Error::new(
            ErrorKind::Io,
            "the curl driver thread ended before it was ready",
        )
    })?
}

struct Driver {
    multi: Multi,
    rx: Receiver<Msg>,
    notifier: Notifier,
    config: BackendConfig,
    tls: TlsSettings,
    transfers: HashMap<usize, Easy2Handle<Transfer>>,
    /// Easy handles of completed transfers, kept for the next exchanges.
    idle: Vec<Idle>,
    /// Tokens are never reused, so a late unpause or cancel cannot reach the
    /// wrong transfer.
    next_token: usize,
    closing: bool,
}

impl Driver {
    fn run(mut self) {
        loop {
            self.drain_queue();
            if self.closing && self.transfers.is_empty() {
                return;
            }
            if let Err(e) = self.multi.perform() {
                self.fail_all(error::multi("perform transfers", e));
            }
            self.finish_completed();
            // Callbacks inside `perform` may have queued heads or unpauses.
            self.drain_queue();
            let wait = self.expire_idle();
            self.flush_wakes();
            self.sleep(wait);
        }
    }

    /// Wakes the application of every transfer that queued events without
    /// waking it during this pass.
    fn flush_wakes(&mut self) {
        for h in self.transfers.values_mut() {
            if let Some(sink) = h.get_mut().sink.as_mut() {
                sink.flush_wakes();
            }
        }
    }

    /// Sleeps in `curl_multi_poll` for at most `wait`, unless a message came
    /// in since the queue was last drained.
    fn sleep(&mut self, wait: Duration) {
        let asleep = &self.notifier.asleep;
        asleep.store(true, Ordering::SeqCst);
        // Pairs with the fence in `Notifier::send` (see there).
        fence(Ordering::SeqCst);
        match self.rx.try_recv() {
            Ok(msg) => {
                asleep.store(false, Ordering::SeqCst);
                self.handle(msg);
                return;
            }
            Err(TryRecvError::Disconnected) => {
                asleep.store(false, Ordering::SeqCst);
                self.closing = true;
                return;
            }
            Err(TryRecvError::Empty) => {}
        }
        let slept = self.multi.poll(&mut [], wait);
        asleep.store(false, Ordering::SeqCst);
        if let Err(e) = slept {
            self.fail_all(error::multi("wait for sockets", e));
            // Do not spin if the multi handle is broken for good.
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Fails every transfer whose idle timeout elapsed and returns how long
    /// the thread may sleep before the next one could.
    ///
    /// libcurl's own low-speed check (LOW_SPEED_LIMIT/TIME) counts in whole
    /// seconds and also runs while a transfer is paused for backpressure, so
    /// the driver keeps the idle clock itself: it starts when the connection
    /// is ready (the prereq callback), restarts with every byte in or out,
    /// and stops while the application holds the body back.
    fn expire_idle(&mut self) -> Duration {
        let now = Instant::now();
        let mut wait = POLL_MAX;
        let mut expired = Vec::new();
        for (token, h) in &self.transfers {
            let t = h.get_ref();
            let Some(limit) = t.read_timeout else {
                continue;
            };
            if t.paused.is_some() {
                continue;
            }
            let Some(last) = t.last_activity() else {
                continue;
            };
            let deadline = last + limit;
            if deadline <= now {
                expired.push(*token);
            } else {
                wait = wait.min(deadline - now);
            }
        }
        for token in expired {
            self.abort(token, Error::timeout(TimeoutPhase::Idle));
        }
        wait
    }

    fn drain_queue(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(msg) => self.handle(msg),
                Err(TryRecvError::Empty) => return,
                // Unreachable while the driver holds a sender itself.
                Err(TryRecvError::Disconnected) => {
                    self.closing = true;
                    return;
                }
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Start(exchange) => self.start(*exchange),
            Msg::Head(token) => {
                let Some(h) = self.transfers.get_mut(&token) else {
                    return;
                };
                report_head(h);
                let waiting = h.get_ref().paused == Some(Pause::ForHead);
                if waiting {
                    self.unpause(token);
                }
            }
            Msg::Unpause(token) => {
                let paused = self.transfers.get(&token).map(|h| h.get_ref().paused);
                if paused == Some(Some(Pause::ForSpace)) {
                    self.unpause(token);
                }
            }
            Msg::Cancel(token) => {
                // Removing an unfinished transfer from the multi closes its
                // connection instead of returning it to the pool half-read.
                if let Some(mut h) = self.transfers.remove(&token) {
                    let sink = h.get_mut().sink.take();
                    drop(h);
                    if let Some(sink) = sink {
                        sink.fail(Error::cancelled());
                    }
                }
            }
            Msg::Shutdown => self.closing = true,
        }
    }

    fn start(&mut self, exchange: Exchange) {
        let Exchange { request, sink, .. } = exchange;
        if sink.is_cancelled() {
            sink.fail(Error::cancelled());
            return;
        }
        let token = self.next_token;
        self.next_token += 1;

        let transfer = Transfer::new(
            token,
            &request,
            self.notifier.clone(),
            &self.config,
            self.tls.verify(),
        );
        let (mut easy, configured) = match self.idle.pop() {
            Some(Idle {
                mut easy,
                configured,
            }) => {
                // The root bundle stays with the handle that points at it.
                let roots = easy.get_mut().borrowed.roots.take();
                *easy.get_mut() = transfer;
                easy.get_mut().borrowed.roots = roots;
                (easy, configured)
            }
            None => (Easy2::new(transfer), false),
        };
        easy.get_mut().raw = wire::RawEasy(easy.raw());
        if !configured {
            match convert::configure_handle(&mut easy, &self.config, &self.tls) {
                Ok(roots) => easy.get_mut().borrowed.roots = roots,
                Err(e) => return sink.fail(e),
            }
        }
        match convert::configure_request(&mut easy, &request, &self.config) {
            Ok(list) => easy.get_mut().borrowed.header_list = list,
            Err(e) => return sink.fail(e),
        }
        if let Err(e) = wire::install_prereq(easy.raw(), &easy.get_ref().attempts) {
            sink.fail(error::setup("the prereq callback", e));
            return;
        }
        easy.get_mut().body = Some(request.body);

        let notifier = self.notifier.clone();
        sink.on_cancel(move || {
            let _ = notifier.send(Msg::Cancel(token));
        });
        let mut h = match self.multi.add2(easy) {
            Ok(h) => h,
            Err(e) => return sink.fail(error::multi("add the transfer", e)),
        };
        if let Err(e) = h.set_token(token) {
            drop(h);
            return sink.fail(error::setup("the transfer's token", e));
        }
        // The driver flushes the sink's wakes at the end of every pass.
        let mut sink = sink;
        sink.defer_wakes();
        // Callbacks run only inside `perform`, so the sink can join now.
        h.get_mut().sink = Some(sink);
        self.transfers.insert(token, h);
    }

    fn unpause(&mut self, token: usize) {
        let Some(h) = self.transfers.get_mut(&token) else {
            return;
        };
        h.get_mut().paused = None;
        // The pause was the application's doing: the idle clock starts afresh.
        h.get_mut().touch();
        // curl may replay the paused bytes into the write callback right here.
        if let Err(e) = h.unpause_write() {
            self.abort(token, error::setup("to resume the transfer", e));
        }
    }

    /// Ends a transfer with `err`, closing its connection.
    fn abort(&mut self, token: usize, err: Error) {
        if let Some(mut h) = self.transfers.remove(&token) {
            let sink = h.get_mut().sink.take();
            drop(h);
            if let Some(sink) = sink {
                sink.fail(err);
            }
        }
    }

    fn fail_all(&mut self, err: Error) {
        let tokens: Vec<usize> = self.transfers.keys().copied().collect();
        for token in tokens {
            self.abort(token, err.clone());
        }
    }

    fn finish_completed(&mut self) {
        let mut done = Vec::new();
        let transfers = &self.transfers;
        self.multi.messages(|m| {
            let Ok(token) = m.token() else { return };
            if let Some(result) = transfers.get(&token).and_then(|h| m.result_for2(h)) {
                done.push((token, result));
            }
        });
        for (token, result) in done {
            if let Some(h) = self.transfers.remove(&token) {
                let recycle = |h| self.recycle(h);
                complete(h, result, recycle);
            }
        }
    }

    /// Takes a completed transfer off the multi handle and keeps its easy
    /// handle for a later exchange, as curl-direct reuses one per slot. The
    /// connection pool, DNS cache and TLS sessions live in the multi handle
    /// either way; what reuse saves is libcurl's per-handle allocation and
    /// set-up, and the options every exchange shares (`configure_handle`):
    /// the next exchange sets only its own (`configure_request`, which
    /// also undoes whatever an earlier exchange set). A handle whose
    /// exchange set options `configure_request` does not undo (a proxy's,
    /// FORBID_REUSE) or that was paused for space is reset whole first (`curl_easy_reset`, with
    /// curl-rust's callbacks set again) and configured from scratch.
    fn recycle(&mut self, h: Easy2Handle<Transfer>) {
        // A handle that cannot be detached is dropped, which tries again.
        let Ok(mut easy) = self.multi.remove2(h) else {
            return;
        };
        if self.idle.len() >= IDLE_HANDLES_MAX {
            return;
        }
        let t = easy.get_ref();
        // A transfer that was held back for space is reset too: nothing of
        // its pause may reach the next exchange.
        let configured = t.proxy.is_none() && !t.parser.forbid_reuse && !t.held_for_space;
        if configured {
            wire::clear_http_headers(easy.raw());
        } else {
            easy.reset();
        }
        // Only now that libcurl no longer points at them may the header
        // list and the body the transfer lent it go; the upload source (an
        // open file, a reader) must not wait for the next exchange.
        let t = easy.get_mut();
        t.body = None;
        t.borrowed.header_list = None;
        if !configured {
            t.borrowed.roots = None;
        }
        t.raw = wire::RawEasy::default();
        self.idle.push(Idle { easy, configured });
    }
}

/// An easy handle waiting for its next exchange.
struct Idle {
    easy: Easy2<Transfer>,
    /// Whether it holds the options every exchange shares
    /// (`convert::configure_handle`) and no other exchange's own beyond
    /// those `convert::configure_request` sets again.
    configured: bool,
}

/// Easy handles the driver keeps for reuse at most: one per transfer that
/// ran at the same time, up to this many.
const IDLE_HANDLES_MAX: usize = 64;

/// Ends one finished transfer through its sink; `release` takes the easy
/// handle off the multi before the end is reported.
fn complete(
    mut h: Easy2Handle<Transfer>,
    result: std::result::Result<(), curl::Error>,
    release: impl FnOnce(Easy2Handle<Transfer>),
) {
    report_head(&mut h);
    // The getinfo items only a failure's mapping reads.
    let info = result.is_err().then(|| TransferInfo::of(&h));
    let t = h.get_mut();
    let Some(sink) = t.sink.take() else { return };
    let info = info.unwrap_or_default();
    let cx = FailureContext {
        connected: info.connected,
        connect_timeout: t.connect_timeout,
        timeout: t.timeout,
        expected: sink.expected_len(),
        received: sink.received(),
        upload_error: t.upload_error.take(),
        local_error: t.local_error.take(),
        head_reported: t.status.is_some(),
        chunked: t.chunked,
        resend_refused: t.attempts.refused(),
        proxy: t.proxy.clone(),
        request_started: t.attempts.connected().is_some(),
        connect_code: info.connect_code,
        verify_result: info.verify_result,
    };
    let status = t.status;
    let head_method = t.head_method;
    release(h);

    if sink.is_cancelled() {
        return sink.fail(Error::cancelled());
    }
    if let Err(e) = result {
        return sink.fail(error::map(e, cx));
    }
    let Some(status) = status else {
        return sink.fail(Error::new(
            ErrorKind::Protocol,
            "the transfer ended without a response head",
        ));
    };
    // curl reports a short body as PARTIAL_FILE; this covers any path where it
    // does not. HEAD, 204 and 304 carry a Content-Length but no body.
    let bodyless = head_method
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if let (Some(expected), false) = (cx.expected, bodyless) {
        if cx.received < expected {
            return sink.fail(Error::truncated(Some(expected), cx.received));
        }
    }
    sink.finish();
}

/// Reports the parsed head of `h` to its sink, if it is still pending.
fn report_head(h: &mut Easy2Handle<Transfer>) {
    if !matches!(h.get_ref().head, HeadState::Pending(_)) {
        return;
    }
    let raw = h.raw();
    h.get_mut().report_pending_head(raw);
}

/// What curl can tell about a transfer from its easy handle.
#[derive(Default)]
struct TransferInfo {
    remote: Option<SocketAddr>,
    timing: LoadTiming,
    connected: bool,
    /// The proxy's status for the CONNECT; `None` without a tunnel.
    connect_code: Option<u32>,
    /// OpenSSL's verify result of the server's chain.
    verify_result: Option<i64>,
}

impl TransferInfo {
    fn of(h: &Easy2Handle<Transfer>) -> Self {
        TransferInfo::of_raw(h.raw())
    }

    /// From the raw easy handle, which is also how the header callback
    /// (that has no `Easy2`) reads it.
    fn of_raw(raw: *mut curl_sys::CURL) -> Self {
        // curl reports a phase that did not happen (no TLS, a reused
        // connection) as zero: that is "unknown", not "instant".
        let phase = |info| {
            wire::double_info(raw, info)
                .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                .filter(|d| !d.is_zero())
        };
        let connect = phase(curl_sys::CURLINFO_CONNECT_TIME);
        let pretransfer = phase(curl_sys::CURLINFO_PRETRANSFER_TIME);
        let ip = wire::string_info(raw, curl_sys::CURLINFO_PRIMARY_IP)
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let port = wire::long_info(raw, curl_sys::CURLINFO_PRIMARY_PORT)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0);
        TransferInfo {
            remote: ip.zip(port).map(|(ip, port)| SocketAddr::new(ip, port)),
            timing: LoadTiming {
                dns: phase(curl_sys::CURLINFO_NAMELOOKUP_TIME),
                connect,
                tls: phase(curl_sys::CURLINFO_APPCONNECT_TIME),
                // PRETRANSFER is "about to send", not "sent"; curl-rust does
                // not expose POSTTRANSFER, so this phase stays unknown.
                request_sent: None,
                first_byte: phase(curl_sys::CURLINFO_STARTTRANSFER_TIME),
                complete: None,
            },
            // A reused connection has no connect time but does reach
            // pretransfer. Only a fallback for `error::map`: curl also stamps
            // pretransfer on some failed connects.
            connected: connect.is_some() || pretransfer.is_some(),
            connect_code: wire::long_info(raw, wire::CURLINFO_HTTP_CONNECTCODE)
                .and_then(|c| u32::try_from(c).ok())
                .filter(|c| *c != 0),
            verify_result: wire::long_info(raw, curl_sys::CURLINFO_SSL_VERIFYRESULT),
        }
    }
}

/// Why the write callback paused the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// The head is parsed but not yet reported: body bytes must wait for it.
    ForHead,
    /// The sink's buffer is full.
    ForSpace,
}

enum HeadState {
    /// Reading status line and header fields (interim 1xx heads included).
    Reading,
    /// The final head is complete; the driver reports it.
    Pending(Box<ResponseHead>),
    /// Reported; later header lines are trailers and are not reported.
    Reported,
}

/// One transfer's state, living inside its easy handle: curl's callbacks.
pub(crate) struct Transfer {
    token: usize,
    /// This transfer's own easy handle, for getinfo and pause from inside
    /// the callbacks.
    raw: wire::RawEasy,
    notifier: Notifier,
    sink: Option<ExchangeSink>,
    body: Option<UploadBody>,
    parser: HeadParser,
    head: HeadState,
    status: Option<StatusCode>,
    paused: Option<Pause>,
    /// The transfer was paused for space at least once.
    held_for_space: bool,
    upload_error: Option<io::Error>,
    local_error: Option<Error>,
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    /// The last byte in or out; `None` until the connection is ready.
    activity: Option<Instant>,
    /// Boxed so the prereq callback's pointer to it stays valid.
    attempts: Box<Attempts>,
    /// The reported response is chunked.
    chunked: bool,
    head_method: bool,
    /// What libcurl reads in place (a raw header list, the root bundle),
    /// kept alive here.
    borrowed: convert::Borrowed,
    /// Whether OpenSSL verifies the server's chain in the handshake.
    verify: bool,
    /// The proxy of the exchange, for messages.
    proxy: Option<String>,
}

impl Transfer {
    fn new(
        token: usize,
        req: &handle_api::WireRequest,
        notifier: Notifier,
        config: &BackendConfig,
        verify: bool,
    ) -> Self {
        // HTTP/2 status lines ("HTTP/2 200") are only valid where the
        // transfer may speak HTTP/2.
        let h2 = req.http_version != handle_api::HttpVersionPref::Http1;
        Transfer {
            token,
            raw: wire::RawEasy::default(),
            notifier,
            sink: None,
            body: None,
            parser: HeadParser::new(config.max_response_head_bytes, config.max_response_headers)
                .allow_http2(h2),
            head: HeadState::Reading,
            status: None,
            paused: None,
            held_for_space: false,
            upload_error: None,
            local_error: None,
            connect_timeout: req.connect_timeout,
            timeout: req.timeout,
            read_timeout: req.read_timeout,
            activity: None,
            attempts: Attempts::new(req.may_retry_on_stale_connection()),
            chunked: false,
            head_method: req.method == Method::HEAD,
            borrowed: convert::Borrowed::default(),
            verify,
            proxy: req.proxy.as_ref().map(ToString::to_string),
        }
    }

    /// Reports the pending head to the sink, with the peer address and the
    /// timing curl measured, once. `raw` is this transfer's easy handle.
    fn report_pending_head(&mut self, raw: *mut curl_sys::CURL) {
        if !matches!(self.head, HeadState::Pending(_)) {
            return;
        }
        let info = TransferInfo::of_raw(raw);
        if self.parser.forbid_reuse {
            // The head's framing cannot be trusted to have ended where the next
            // response starts (Transfer-Encoding with Content-Length).
            wire::forbid_reuse(raw);
        }
        self.chunked = self.parser.chunked;
        if let HeadState::Pending(mut head) = mem::replace(&mut self.head, HeadState::Reported) {
            head.remote_addr = info.remote;
            head.timing = info.timing;
            self.status = Some(head.status);
            if let Some(sink) = self.sink.as_mut() {
                sink.response(*head);
            }
        }
    }

    /// Whether the final `head` is reported from the header callback itself,
    /// or by the driver after the pass while the body waits (Pause::ForHead).
    ///
    /// While the body's first bytes wait, libcurl goes on decoding what it
    /// already read, and a framing error found there fails the transfer
    /// before any byte reaches the application: the lenient chunked and
    /// HTTP/2 decoders (libcurl takes a bare LF after a chunk extension, and
    /// a stream may be reset in the same read) then look as strict as the
    /// other backends. A Content-Length or close-delimited HTTP/1.x body has
    /// no framing left to get wrong in the same read (a short body shows
    /// only on a later read, which the pause would not reach either), so
    /// for it the wait changes nothing but the cost. CURLOPT_FORBID_REUSE
    /// is set from the driver, outside the callbacks.
    fn reports_head_at_once(&self, head: &ResponseHead) -> bool {
        !self.raw.0.is_null()
            && !self.parser.forbid_reuse
            && !self.parser.chunked
            && head.version != Version::HTTP_2
    }

    /// Marks the transfer paused for space and asks for an unpause as soon
    /// as the sink has room (at once if it already has).
    fn wait_for_space(&mut self) {
        self.paused = Some(Pause::ForSpace);
        self.held_for_space = true;
        let Some(sink) = self.sink.as_ref() else {
            return;
        };
        let notifier = self.notifier.clone();
        let token = self.token;
        sink.on_space(move || {
            let _ = notifier.send(Msg::Unpause(token));
        });
    }

    /// Restarts the idle clock, once the connection is up.
    fn touch(&mut self) {
        if self.attempts.connected().is_some() {
            self.activity = Some(Instant::now());
        }
    }

    /// The last sign of life of the current attempt, for the idle timeout.
    fn last_activity(&self) -> Option<Instant> {
        let connected = self.attempts.connected()?;
        // A retry on a fresh connection starts a fresh clock.
        Some(self.activity.map_or(connected, |a| a.max(connected)))
    }
}

impl Handler for Transfer {
    fn header(&mut self, line: &[u8]) -> bool {
        self.touch();
        if !matches!(self.head, HeadState::Reading) {
            // Trailers of a chunked body: not part of the reported head.
            return true;
        }
        match self.parser.line(line) {
            Ok(None) => true,
            Ok(Some(head)) => {
                let at_once = self.reports_head_at_once(&head);
                self.head = HeadState::Pending(Box::new(head));
                if at_once {
                    // Reported here, with the getinfo items the head needs,
                    // so the body's first bytes are taken in this same
                    // callback pass instead of being paused and replayed.
                    self.report_pending_head(self.raw.0);
                } else {
                    self.notifier.post(Msg::Head(self.token));
                }
                true
            }
            Err(e) => {
                self.local_error = Some(e);
                false
            }
        }
    }

    fn write(&mut self, data: &[u8]) -> std::result::Result<usize, WriteError> {
        match self.head {
            HeadState::Reported => {}
            HeadState::Pending(_) => {
                // curl keeps these bytes and replays them on unpause.
                self.paused = Some(Pause::ForHead);
                return Err(WriteError::Pause);
            }
            HeadState::Reading => {
                self.local_error = Some(Error::new(
                    ErrorKind::Protocol,
                    "body bytes arrived before a response head",
                ));
                return Ok(0);
            }
        }
        let Some(sink) = self.sink.as_mut() else {
            return Ok(0);
        };
        if data.is_empty() {
            return Ok(0);
        }
        if !sink.has_room() {
            // Only when pausing from the callback below failed: hand the
            // bytes back to curl (which keeps and replays them), uncopied.
            self.wait_for_space();
            return Err(WriteError::Pause);
        }
        match sink.try_data(Bytes::copy_from_slice(data)) {
            TryData::Queued => {
                let full = !sink.has_room();
                self.touch();
                if full && wire::pause_receive(self.raw.0) {
                    // The buffer is full with these bytes: stop receiving
                    // before curl offers the next ones, so nothing is
                    // refused, buffered by curl and copied again on replay.
                    // The bound is the same as refusing the next chunk.
                    self.wait_for_space();
                }
                Ok(data.len())
            }
            // A short count makes curl abort with WRITE_ERROR; `complete`
            // reports the cancellation instead.
            TryData::Cancelled => Ok(0),
            TryData::Full(_) => {
                // Cannot happen after `has_room` (only the consumer changes
                // the buffer meanwhile, and only ever makes room), but if it
                // did: curl replays the same bytes after unpause, so the
                // copy handed back is dropped.
                self.wait_for_space();
                Err(WriteError::Pause)
            }
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::result::Result<usize, ReadError> {
        let Some(body) = self.body.as_mut() else {
            return Ok(0);
        };
        // A blocking reader blocks this thread: UploadBody is a std Read, and
        // curl asks for bytes only when the socket can take them.
        loop {
            match body.read(buf) {
                Ok(n) => {
                    self.touch();
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.upload_error = Some(e);
                    return Err(ReadError::Abort);
                }
            }
        }
    }

    fn ssl_ctx(&mut self, ssl_ctx: *mut c_void) -> std::result::Result<(), curl::Error> {
        if self.verify {
            wire::verify_peer_in_handshake(ssl_ctx);
        }
        Ok(())
    }

    fn seek(&mut self, _whence: io::SeekFrom) -> SeekResult {
        // libcurl rewinds the body only to send the request again after a
        // reused connection died: a body already read is never sent twice.
        self.attempts.refuse();
        SeekResult::Fail
    }
}

/// Collects the header lines curl hands to the header callback into a
/// [`ResponseHead`], skipping interim (1xx) heads.
///
/// libcurl parses the head itself but is lenient where RFC 9112 asks a
/// recipient to be strict, so the lines are checked here as they come: the
/// head's size and field count against the limits, and the framing headers
/// (Content-Length must be one unsigned decimal, repeated only with the same
/// value).
struct HeadParser {
    status: Option<(StatusCode, Version, String)>,
    fields: Vec<(HeaderName, Vec<u8>)>,
    /// Bytes of the current head so far, line ends included.
    bytes: usize,
    max_bytes: usize,
    max_fields: usize,
    /// The final head had Transfer-Encoding and Content-Length both.
    forbid_reuse: bool,
    /// The final head's body is chunked.
    chunked: bool,
    /// `HTTP/2` status lines are accepted (libcurl writes them for h2).
    http2: bool,
}

impl HeadParser {
    fn new(max_bytes: usize, max_fields: usize) -> Self {
        HeadParser {
            status: None,
            fields: Vec::new(),
            bytes: 0,
            max_bytes,
            max_fields,
            forbid_reuse: false,
            chunked: false,
            http2: false,
        }
    }

    /// Accepts the `HTTP/2 NNN` status lines libcurl writes for HTTP/2
    /// responses.
    fn allow_http2(mut self, allow: bool) -> Self {
        self.http2 = allow;
        self
    }

    /// Takes one line; returns the head when `line` is the blank line that
    /// ends a final (non-1xx) head.
    fn line(&mut self, raw: &[u8]) -> Result<Option<ResponseHead>> {
        let line = raw
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(raw);
        if line.starts_with(b"HTTP/") {
            self.bytes = 0;
        }
        self.bytes += raw.len();
        if self.bytes > self.max_bytes {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "the response head is larger than the limit of {} bytes",
                    self.max_bytes
                ),
            ));
        }
        if line.is_empty() {
            return self.end();
        }
        if line.starts_with(b"HTTP/") {
            self.status = Some(parse_status_line(line, self.http2)?);
            self.fields.clear();
            return Ok(None);
        }
        if self.status.is_none() {
            return Err(protocol("a header line arrived before the status line"));
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // obs-fold: the line continues the previous field's value.
            let Some((_, value)) = self.fields.last_mut() else {
                return Err(protocol("a folded header line has no field to continue"));
            };
            value.push(b' ');
            value.extend_from_slice(trim(line));
            return Ok(None);
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(protocol("a header line has no colon"));
        };
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|e| {
            protocol(format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(&line[..colon])
            ))
            .with_source(e)
        })?;
        if self.fields.len() >= self.max_fields {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "the response head has more than the limit of {} header fields",
                    self.max_fields
                ),
            ));
        }
        self.fields.push((name, trim(&line[colon + 1..]).to_vec()));
        Ok(None)
    }

    fn end(&mut self) -> Result<Option<ResponseHead>> {
        let Some((status, version, reason)) = self.status.take() else {
            return Ok(None);
        };
        let fields = mem::take(&mut self.fields);
        if status.is_informational() {
            return Ok(None);
        }
        let mut headers = HeaderMap::with_capacity(fields.len());
        for (name, value) in fields {
            let value = HeaderValue::from_bytes(&value).map_err(|e| {
                protocol(format!("the value of header {name} has a forbidden byte")).with_source(e)
            })?;
            headers.append(name, value);
        }
        let chunked = headers.contains_key(handle_api::http::header::TRANSFER_ENCODING);
        let has_length = headers.contains_key(handle_api::http::header::CONTENT_LENGTH);
        if chunked {
            // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3); a
            // message with both may be smuggling, so its connection goes.
            self.forbid_reuse = has_length;
        } else if has_length {
            content_length(&headers)?;
        }
        self.chunked = chunked;
        let mut head = ResponseHead::new(status, version, headers);
        // HTTP/2 has no reason phrase: none is reported, as hyper reports
        // none, and the response gets the canonical one.
        head.reason = (version != Version::HTTP_2).then_some(reason);
        Ok(Some(head))
    }
}

/// The one Content-Length value of `headers` (RFC 9112 §6.3): every line
/// and list element must be the same unsigned decimal that fits in 64 bits.
fn content_length(headers: &HeaderMap) -> Result<u64> {
    let mut found: Option<u64> = None;
    for value in headers.get_all(handle_api::http::header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = trim(part);
            let valid = !part.is_empty() && part.iter().all(u8::is_ascii_digit);
            let n = std::str::from_utf8(part)
                .ok()
                .filter(|_| valid)
                .and_then(|p| p.parse::<u64>().ok())
                .ok_or_else(|| {
                    protocol(format!(
                        "invalid Content-Length {:?}",
                        String::from_utf8_lossy(value.as_bytes())
                    ))
                })?;
            match found {
                Some(prev) if prev != n => {
                    return Err(protocol(format!(
                        "conflicting Content-Length values {prev} and {n}"
                    )))
                }
                _ => found = Some(n),
            }
        }
    }
    found.ok_or_else(|| protocol("an empty Content-Length"))
}

/// `HTTP/1.1 200 OK`: version, three-digit status, optional reason phrase.
/// With `http2`, also libcurl's rendering of an HTTP/2 head, `HTTP/2 200`.
fn parse_status_line(line: &[u8], http2: bool) -> Result<(StatusCode, Version, String)> {
    let bad = || {
        protocol(format!(
            "malformed status line {:?}",
            String::from_utf8_lossy(line)
        ))
    };
    let mut parts = line.splitn(3, |&b| b == b' ');
    let version = match parts.next().ok_or_else(bad)? {
        b"HTTP/1.0" => Version::HTTP_10,
        b"HTTP/1.1" => Version::HTTP_11,
        b"HTTP/2" if http2 => Version::HTTP_2,
        // Any other version in a status line is a malformed reply.
        _ => return Err(bad()),
    };
    let code = parts.next().ok_or_else(bad)?;
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let status = StatusCode::from_bytes(code).map_err(|_| bad())?;
    let reason = String::from_utf8_lossy(trim(parts.next().unwrap_or_default())).into_owned();
    Ok((status, version, reason))
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !matches!(c, b' ' | b'\t'));
    let end = b.iter().rposition(|c| !matches!(c, b' ' | b'\t'));
    match (start, end) {
        (Some(s), Some(e)) => &b[s..=e],
        _ => &[],
    }
}

fn protocol(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Protocol, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> HeadParser {
        HeadParser::new(64 * 1024, 100)
    }

    fn feed(p: &mut HeadParser, lines: &[&[u8]]) -> Result<Option<ResponseHead>> {
        let mut out = None;
        for l in lines {
            if let Some(h) = p.line(l)? {
                out = Some(h);
            }
        }
        Ok(out)
    }

    #[test]
    fn interim_heads_are_skipped() {
        let mut p = parser();
        let head = feed(
            &mut p,
            &[
                b"HTTP/1.1 100 Continue\r\n",
                b"\r\n",
                b"HTTP/1.1 103 Early Hints\r\n",
                b"Link: </a>\r\n",
                b"\r\n",
                b"HTTP/1.1 201 Made It\r\n",
                b"X-A: 1\r\n",
                b"x-a:  2 \r\n",
                b"X-Fold: one\r\n",
                b"  two\r\n",
                b"X-Latin: caf\xe9\r\n",
                b"\r\n",
            ],
        )
        .unwrap()
        .expect("final head");
        assert_eq!(head.status, StatusCode::CREATED);
        assert_eq!(head.reason.as_deref(), Some("Made It"));
        assert_eq!(head.version, Version::HTTP_11);
        let a: Vec<_> = head.headers.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        assert_eq!(head.headers["x-fold"], "one two");
        assert_eq!(head.headers["x-latin"].as_bytes(), b"caf\xe9");
        assert!(!head.headers.contains_key("link"));
    }

    #[test]
    fn bad_heads_are_protocol_errors() {
        for line in [
            &b"HTTP/1.1 abc OK\r\n"[..],
            b"HTTP/1.1 20 OK\r\n",
            b"HTTP/9 200 OK\r\n",
            b"HTTP/2 200 OK\r\n",
        ] {
            let e = parser().line(line).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Protocol);
        }
        let mut p = parser();
        p.line(b"HTTP/1.1 200 OK\r\n").unwrap();
        assert!(p.line(b"bad name: x\r\n").is_err());
        assert!(p.line(b"no colon\r\n").is_err());
        let mut p = parser();
        p.line(b"HTTP/1.1 200 OK\r\n").unwrap();
        p.line(b"x-ctl: a\x01b\r\n").unwrap();
        assert!(p.line(b"\r\n").is_err());
    }

    #[test]
    fn content_length_is_one_decimal() {
        let head = |lines: &[&[u8]]| {
            let mut p = parser();
            let mut all = vec![&b"HTTP/1.1 200 OK\r\n"[..]];
            all.extend_from_slice(lines);
            all.push(b"\r\n");
            feed(&mut p, &all)
        };
        assert!(head(&[b"Content-Length: 6\r\n", b"Content-Length: 6\r\n"]).is_ok());
        assert!(head(&[b"Content-Length: 6, 6\r\n"]).is_ok());
        for bad in [
            &b"Content-Length: 6, 7\r\n"[..],
            b"Content-Length: +6\r\n",
            b"Content-Length: -6\r\n",
            b"Content-Length: 6abc\r\n",
            b"Content-Length: 18446744073709551616\r\n",
            b"Content-Length:\r\n",
        ] {
            assert_eq!(
                head(&[bad]).unwrap_err().kind(),
                ErrorKind::Protocol,
                "{bad:?}"
            );
        }
        let mut p = parser();
        feed(
            &mut p,
            &[
                b"HTTP/1.1 200 OK\r\n",
                b"Content-Length: 3\r\n",
                b"Transfer-Encoding: chunked\r\n",
                b"\r\n",
            ],
        )
        .unwrap();
        assert!(p.forbid_reuse && p.chunked);
    }

    #[test]
    fn head_limits_are_exact() {
        let lines: [&[u8]; 3] = [b"HTTP/1.1 200 OK\r\n", b"A: b\r\n", b"\r\n"];
        let size: usize = lines.iter().map(|l| l.len()).sum();
        assert!(feed(&mut HeadParser::new(size, 1), &lines)
            .unwrap()
            .is_some());
        let e = feed(&mut HeadParser::new(size - 1, 1), &lines).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded);
        let e = feed(&mut HeadParser::new(size, 0), &lines).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded);
    }

    #[test]
    fn status_line_without_reason() {
        let (s, v, r) = parse_status_line(b"HTTP/1.1 204", false).unwrap();
        assert_eq!(
            (s, v, r.as_str()),
            (StatusCode::NO_CONTENT, Version::HTTP_11, "")
        );
        assert!(parse_status_line(b"HTTP/2.0 200 OK", true).is_err());
        assert!(parse_status_line(b"HTTP/2 200 ", false).is_err());
    }

    #[test]
    fn http2_heads_have_no_reason() {
        let mut p = parser().allow_http2(true);
        let head = feed(
            &mut p,
            &[
                b"HTTP/2 200 \r\n",
                b"content-type: text/plain\r\n",
                b"content-length: 2\r\n",
                b"\r\n",
            ],
        )
        .unwrap()
        .expect("final head");
        assert_eq!(head.version, Version::HTTP_2);
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.reason, None);
        assert_eq!(head.headers["content-length"], "2");
        // An HTTP/1.1 answer to a transfer that offered h2 keeps its reason.
        let mut p = parser().allow_http2(true);
        let head = feed(&mut p, &[b"HTTP/1.1 404 Gone Away\r\n", b"\r\n"])
            .unwrap()
            .expect("final head");
        assert_eq!(head.reason.as_deref(), Some("Gone Away"));
    }
}
