//! The TCP connection as this backend hands it to hyper: a stream that
//! watches what passes through it, because hyper keeps two things to itself
//! that the contract needs.
//!
//! - Whether a request that failed went out on a reused connection that
//!   died before any byte of its response (the keep-alive race of RFC 9112
//!   §9.3.1): hyper-util retries only requests it had not started to write.
//! - When a byte last moved, for the idle timeout: hyper has no read timeout.
//!
//! [`Wire`] counts requests and response bytes per connection in a
//! [`ConnMeta`] that hyper-util carries in its connection metadata, where
//! an exchange finds it through `capture_connection`. An exchange attaches
//! its [`Activity`] to the connection it got, and every read or write on
//! that connection restarts the exchange's idle clock.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

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
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnMeta(Arc<MetaInner>);

#[derive(Debug, Default)]
struct MetaInner {
    /// Requests started on the connection (a write after a read starts one).
    requests: AtomicU32,
    /// Response bytes read since the current request started.
    read_since_request: AtomicU64,
    last_was_read: AtomicBool,
    activity: Mutex<Option<Weak<Activity>>>,
}

impl ConnMeta {
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
    /// Bytes of the current line, CR not counted.
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
    fn read(&mut self, data: &[u8]) -> Result<(), HeadTooLarge> {
        for &b in data {
            if !self.in_head {
                return Ok(());
            }
            self.bytes += 1;
            if self.bytes > self.max {
                return Err(HeadTooLarge(self.max));
            }
            if self.start.len() < 12 {
                self.start.push(b);
            }
            match b {
                b'\n' if self.line == 0 && self.bytes > 2 => {
                    // The blank line: the head is complete. An interim 1xx
                    // head is followed by another head, counted afresh.
                    let interim = self.start.get(9) == Some(&b'1');
                    if interim {
                        self.request_started();
                    } else {
                        self.in_head = false;
                    }
                }
                b'\n' => self.line = 0,
                b'\r' => {}
                _ => self.line += 1,
            }
        }
        Ok(())
    }
}

/// A TCP stream that reports its traffic to its [`ConnMeta`] and holds
/// response heads to the limit.
#[derive(Debug)]
pub(crate) struct Wire {
    tcp: TcpStream,
    meta: ConnMeta,
    head: HeadLimit,
    /// This connection's place among the host's connections; freed when the
    /// connection closes.
    _slot: Option<crate::driver::Slot>,
}

impl Wire {
    pub(crate) fn new(tcp: TcpStream, max_head_bytes: usize) -> Wire {
        Wire {
            tcp,
            meta: ConnMeta::default(),
            head: HeadLimit::new(max_head_bytes),
            _slot: None,
        }
    }

    /// Holds `slot` for as long as the connection is open.
    pub(crate) fn with_slot(mut self, slot: crate::driver::Slot) -> Wire {
        self._slot = Some(slot);
        self
    }

    fn wrote(&mut self) {
        if self.meta.wrote() {
            self.head.request_started();
        }
    }
}

impl Connection for Wire {
    fn connected(&self) -> Connected {
        // HttpInfo (the peer address) from the TCP stream, and the counts.
        self.tcp.connected().extra(self.meta.clone())
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
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
        let r = Pin::new(&mut self.tcp).poll_write(cx, data);
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
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            if *n > 0 {
                self.wrote();
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
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
}
