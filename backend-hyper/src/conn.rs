//! The connection as this backend hands it to hyper: a stream (TCP or TLS)
//! that watches what passes through it, because hyper keeps two things to
//! itself that the contract needs.
//!
//! - Whether a request that failed went out on a reused connection that
//!   died before any byte of its response (the keep-alive race of RFC 9112
//!   §9.3.1): a request that was not written at all is simply sent on
//!   another connection, one that was needs handle-api's leave.
//! - When a byte last moved, for the idle timeout: hyper has no read timeout.
//!
//! [`Wire`] counts requests and response bytes per HTTP/1.1 connection in a
//! [`ConnMeta`] that the pool keeps beside the connection. An exchange
//! attaches its [`Activity`] to the connection it got, and every read or
//! write on that connection restarts the exchange's idle clock. An HTTP/2
//! connection carries many exchanges at once, so there each exchange's own
//! frames restart its clock instead.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain assignments only: a panic cannot leave the value half-changed.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One exchange's sign of life, for its idle timeout.
#[derive(Debug)]
pub(crate) struct Activity {
    last: Mutex<Instant>,
    /// The connection is known: the clock runs.
    armed: AtomicBool,
    /// The application holds the body back: the clock stops.
    held: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            last: Mutex::new(Instant::now()),
            armed: AtomicBool::new(false),
            held: AtomicBool::new(false),
        })
    }

    pub(crate) fn touch(&self) {
        *lock(&self.last) = Instant::now();
    }

    /// Starts the clock (the connection is ready).
    pub(crate) fn arm(&self) {
        self.touch();
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Stops (`true`) or restarts (`false`) the clock for backpressure.
    pub(crate) fn hold(&self, held: bool) {
        if !held {
            self.touch();
        }
        self.held.store(held, Ordering::SeqCst);
    }

    /// Resolves when no byte moved for `limit` while the clock ran.
    pub(crate) async fn idle(&self, limit: Duration) {
        loop {
            let running = self.armed.load(Ordering::SeqCst) && !self.held.load(Ordering::SeqCst);
            let deadline = *lock(&self.last) + limit;
            if running && deadline <= Instant::now() {
                return;
            }
            let wake = if running {
                deadline
            } else {
                Instant::now() + limit
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// Per-connection counts, shared with the exchanges that use the connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnMeta(Arc<MetaInner>);

#[derive(Debug)]
struct MetaInner {
    /// The peer of the TCP connection (the proxy's, through a proxy).
    remote: Option<SocketAddr>,
    /// Requests started on the connection (a write after a read starts one).
    requests: AtomicU32,
    /// Response bytes read since the current request started.
    read_since_request: AtomicU64,
    last_was_read: AtomicBool,
    activity: Mutex<Option<Weak<Activity>>>,
    /// Set when hyper's connection task ended, with its error if it failed.
    ended: AtomicBool,
    failure: Mutex<Option<handle_api::Error>>,
    ended_changed: tokio::sync::Notify,
}

impl ConnMeta {
    pub(crate) fn new(remote: Option<SocketAddr>) -> ConnMeta {
        ConnMeta(Arc::new(MetaInner {
            remote,
            requests: AtomicU32::new(0),
            read_since_request: AtomicU64::new(0),
            last_was_read: AtomicBool::new(false),
            activity: Mutex::new(None),
            ended: AtomicBool::new(false),
            failure: Mutex::new(None),
            ended_changed: tokio::sync::Notify::new(),
        }))
    }

    /// Records that the connection's task ended, and why if it failed.
    pub(crate) fn end(&self, failure: Option<handle_api::Error>) {
        *lock(&self.0.failure) = failure;
        self.0.ended.store(true, Ordering::SeqCst);
        self.0.ended_changed.notify_waiters();
    }

    /// Why the connection failed, waiting up to `wait` for its task to end.
    /// An HTTP/2 stream that fails because its connection did learns only
    /// "canceled"; the connection's task knows the cause.
    pub(crate) async fn failure(&self, wait: Duration) -> Option<handle_api::Error> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.0.ended_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.0.ended.load(Ordering::SeqCst) {
                return lock(&self.0.failure).clone();
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    /// The address the connection went to.
    pub(crate) fn remote(&self) -> Option<SocketAddr> {
        self.0.remote
    }

    /// Makes `activity` the one this connection's I/O keeps alive.
    pub(crate) fn attach(&self, activity: &Arc<Activity>) {
        *lock(&self.0.activity) = Some(Arc::downgrade(activity));
    }

    /// True when the current request is not the first on this connection
    /// and not one byte of its response arrived: the reused connection was
    /// dead (or closed by the server) when the request went out.
    pub(crate) fn stale(&self) -> bool {
        self.0.requests.load(Ordering::SeqCst) >= 2
            && self.0.read_since_request.load(Ordering::SeqCst) == 0
    }

    fn touch(&self) {
        let activity = lock(&self.0.activity).as_ref().and_then(Weak::upgrade);
        if let Some(a) = activity {
            a.touch();
        }
    }

    /// Records a write; true when it starts a new request.
    fn wrote(&self) -> bool {
        // The first write after a response (or ever) starts a new request.
        let new = self.0.last_was_read.swap(false, Ordering::SeqCst)
            || self.0.requests.load(Ordering::SeqCst) == 0;
        if new {
            self.0.requests.fetch_add(1, Ordering::SeqCst);
            self.0.read_since_request.store(0, Ordering::SeqCst);
        }
        self.touch();
        new
    }

    fn read(&self, n: usize) {
        self.0
            .read_since_request
            .fetch_add(n as u64, Ordering::SeqCst);
        self.0.last_was_read.store(true, Ordering::SeqCst);
        self.touch();
    }
}

/// The response head grew past the configured limit (found in hyper's
/// error chain by error.rs).
#[derive(Debug)]
pub(crate) struct HeadTooLarge(pub(crate) usize);

impl std::fmt::Display for HeadTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the response head is larger than the limit of {} bytes",
            self.0
        )
    }
}

impl std::error::Error for HeadTooLarge {}

/// Counts the bytes of each response head as they are read, so the head
/// limit holds to the byte: hyper's own check is its read buffer, which a
/// read may overfill.
#[derive(Debug)]
struct HeadLimit {
    max: usize,
    /// Reading a head (from a request's first write to the blank line).
    in_head: bool,
    bytes: usize,
    /// Nonzero once the current line has a byte other than CR.
    line: usize,
    /// The first three bytes of the head (the status code follows `HTTP/1.1 `).
    start: Vec<u8>,
}

impl HeadLimit {
    fn new(max: usize) -> Self {
        HeadLimit {
            max,
            in_head: false,
            bytes: 0,
            line: 0,
            start: Vec::new(),
        }
    }

    fn request_started(&mut self) {
        self.in_head = true;
        self.bytes = 0;
        self.line = 0;
        self.start.clear();
    }

    /// Takes bytes just read; `Err` once the head is past the limit.
    ///
    /// Line by line rather than byte by byte: this runs on every read of
    /// every HTTP/1.1 connection.
    fn read(&mut self, mut data: &[u8]) -> Result<(), HeadTooLarge> {
        while self.in_head && !data.is_empty() {
            let newline = data.iter().position(|&b| b == b'\n');
            // This line's bytes in `data`, its LF included when it is there.
            let take = newline.map_or(data.len(), |i| i + 1);
            if self.bytes + take > self.max {
                return Err(HeadTooLarge(self.max));
            }
            self.bytes += take;
            let room = 12usize.saturating_sub(self.start.len());
            self.start.extend_from_slice(&data[..take.min(room)]);
            let text = &data[..newline.unwrap_or(data.len())];
            if text.iter().any(|&b| b != b'\r') {
                self.line += 1;
            }
            data = &data[take..];
            if newline.is_none() {
                break;
            }
            if self.line == 0 && self.bytes > 2 {
                // The blank line: the head is complete. An interim 1xx
                // head is followed by another head, counted afresh.
                let interim = self.start.get(9) == Some(&b'1');
                if interim {
                    self.request_started();
                } else {
                    self.in_head = false;
                }
            } else {
                self.line = 0;
            }
        }
        Ok(())
    }
}

/// The byte stream under HTTP: plain TCP, or TLS over TCP (directly, or
/// inside a CONNECT tunnel or a SOCKS5 connection, which are plain TCP once
/// their handshake is done).
#[derive(Debug)]
pub(crate) enum Transport {
    /// Cleartext.
    Tcp(TcpStream),
    /// TLS; boxed, since rustls' state is large.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Tcp(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection's byte stream as hyper sees it. Over HTTP/1.1 it reports its
/// traffic to its [`ConnMeta`] and holds response heads to the limit; over
/// HTTP/2 the bytes are frames of many streams, so it only passes them on
/// (the limits are checked on each decoded head instead).
#[derive(Debug)]
pub(crate) struct Wire {
    io: Transport,
    meta: ConnMeta,
    head: HeadLimit,
    multiplexed: bool,
}

impl Wire {
    /// `multiplexed` for an HTTP/2 connection.
    pub(crate) fn new(
        io: Transport,
        meta: ConnMeta,
        max_head_bytes: usize,
        multiplexed: bool,
    ) -> Wire {
        Wire {
            io,
            meta,
            head: HeadLimit::new(max_head_bytes),
            multiplexed,
        }
    }

    fn wrote(&mut self) {
        if self.multiplexed {
            return;
        }
        if self.meta.wrote() {
            self.head.request_started();
        }
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 && !self.multiplexed {
            self.meta.read(n);
            let this = &mut *self;
            if let Err(e) = this.head.read(&buf.filled()[before..]) {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
        r
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r {
            if *n > 0 {
                self.wrote();
            }
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            if *n > 0 {
                self.wrote();
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(limit: &mut HeadLimit, parts: &[&[u8]]) -> Result<(), HeadTooLarge> {
        for p in parts {
            limit.read(p)?;
        }
        Ok(())
    }

    #[test]
    fn head_limit_is_exact_and_counts_each_head() {
        let head = b"HTTP/1.1 200 OK\r\nX-Longer: yes\r\n\r\n";
        let mut at = HeadLimit::new(head.len());
        at.request_started();
        assert!(feed(
            &mut at,
            &[&head[..5], &head[5..], b"body bytes are not counted"]
        )
        .is_ok());
        let mut over = HeadLimit::new(head.len() - 1);
        over.request_started();
        assert!(feed(&mut over, &[head]).is_err());
        // An interim head and the final one are each held to the limit.
        let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
        assert!(interim.len() < head.len());
        let mut each = HeadLimit::new(head.len());
        each.request_started();
        assert!(feed(&mut each, &[interim, head]).is_ok());
        // Bare LF line ends too.
        let mut lf = HeadLimit::new(20);
        lf.request_started();
        assert!(feed(
            &mut lf,
            &[b"HTTP/1.1 200 OK\n\nmore than twenty bytes of body"]
        )
        .is_ok());
    }

    /// The byte-at-a-time definition `HeadLimit::read` must agree with:
    /// whether it fails, and where it stands after each piece.
    struct Oracle {
        max: usize,
        in_head: bool,
        bytes: usize,
        line: usize,
        start: Vec<u8>,
    }

    impl Oracle {
        fn read(&mut self, data: &[u8]) -> bool {
            for &b in data {
                if !self.in_head {
                    return true;
                }
                self.bytes += 1;
                if self.bytes > self.max {
                    return false;
                }
                if self.start.len() < 12 {
                    self.start.push(b);
                }
                match b {
                    b'\n' if self.line == 0 && self.bytes > 2 => {
                        if self.start.get(9) == Some(&b'1') {
                            self.bytes = 0;
                            self.line = 0;
                            self.start.clear();
                        } else {
                            self.in_head = false;
                        }
                    }
                    b'\n' => self.line = 0,
                    b'\r' => {}
                    _ => self.line += 1,
                }
            }
            true
        }
    }

    #[test]
    fn head_limit_agrees_with_the_byte_at_a_time_definition() {
        let alphabet: &[u8] = b"\r\n\r\nHTTP/1.1 100 200 Continue\r\nX: y\r\n\r\n\n\n";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..20_000 {
            let len = next(80);
            let bytes: Vec<u8> = (0..len).map(|_| alphabet[next(alphabet.len())]).collect();
            let max = 1 + next(60);
            let mut fast = HeadLimit::new(max);
            fast.request_started();
            let mut oracle = Oracle {
                max,
                in_head: true,
                bytes: 0,
                line: 0,
                start: Vec::new(),
            };
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let cut = 1 + next(rest.len());
                let (piece, tail) = rest.split_at(cut);
                rest = tail;
                let ok = fast.read(piece).is_ok();
                assert_eq!(ok, oracle.read(piece), "{bytes:?} max {max}");
                if !ok {
                    break;
                }
                assert_eq!(fast.in_head, oracle.in_head, "{bytes:?} max {max}");
                if fast.in_head {
                    assert_eq!(fast.bytes, oracle.bytes, "{bytes:?} max {max}");
                    assert_eq!(fast.line == 0, oracle.line == 0, "{bytes:?} max {max}");
                    assert_eq!(fast.start, oracle.start, "{bytes:?} max {max}");
                }
            }
        }
    }
}
