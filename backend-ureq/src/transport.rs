//! How ureq reaches the network here: host overrides as a [`Resolver`], and
//! one [`Connector`] that makes the whole connection (TCP, the proxy's
//! handshake, TLS) over a socket the backend can shut down.
//!
//! ureq has no cancel API and its own `TcpTransport` keeps the socket to
//! itself, so this module makes the connections and owns the transport.
//! Each exchange runs under a [`Watch`] set for its worker thread: the
//! transport registers its socket with the watch on every read and write, so a
//! cancel can `shutdown(Both)` the socket and wake a worker blocked waiting
//! for the response head or a body byte. The watch also collects what the
//! library does not report: the peer address, the load timing, and the
//! reason phrase of the status line as received.
//!
//! A connector serves one route, fixed when its agent is made (see
//! `agents.rs`): direct, or through one proxy. Through an HTTP proxy an http
//! url is forwarded: the connection goes to the proxy and the transport
//! writes the request line in absolute form (ureq writes origin form only,
//! and its own proxy support always tunnels). An https url goes through a
//! CONNECT tunnel, and any url through SOCKS5 (`proxy.rs`). TLS, when the
//! url is https, is layered over whatever the route gave (`tls.rs`), below
//! the response filter, which so always sees plaintext.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use handle_api::{HostOverrides, LoadTiming, Proxy, ProxyScheme, Resolution};
use rustls::ClientConnection;
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::time::Duration as UreqDuration;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport,
};
use ureq::Timeout;

use crate::error::{
    CancelledIo, ConnectError, ConnectionBroken, FilterRefusal, ProxyFailure, ResolveError,
    TlsFailure,
};
use crate::framing::{ResponseFilter, Spill};
use crate::proxy::{self, SocksTarget};
use crate::tls;

/// The shortest attempt given to one address when several share a budget.
const MIN_ATTEMPT: Duration = Duration::from_millis(10);
/// The most read through the staging buffer while a head is expected.
const HEAD_READ: usize = 16 * 1024;
/// Response-head bytes kept to find the reason phrase; a longer head goes without.
const HEAD_CAPTURE: usize = 64 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state stays consistent across a panic (plain assignments), so poison is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

thread_local! {
    /// The exchange the current worker thread is running.
    static CURRENT: RefCell<Option<Arc<Watch>>> = const { RefCell::new(None) };
}

fn with_current<R>(f: impl FnOnce(&Watch) -> R) -> Option<R> {
    CURRENT.with(|c| c.borrow().as_deref().map(f))
}

/// One exchange's view of the network: its cancel flag, the socket it is
/// using, and the timing of its phases.
pub(crate) struct Watch {
    id: u64,
    start: Instant,
    cancelled: AtomicBool,
    /// The request is a HEAD: its response has no body.
    head_method: AtomicBool,
    /// Response-head limits for the filter of a new connection.
    limits: (usize, usize),
    state: Mutex<WatchState>,
}

#[derive(Default)]
struct WatchState {
    socket: Option<Arc<Socket>>,
    dns: Option<Duration>,
    connect: Option<Duration>,
    tls: Option<Duration>,
    last_write: Option<Duration>,
    request_sent: Option<Duration>,
    first_byte: Option<Duration>,
    head: HeadCapture,
    /// The request went out on a connection that had carried one before.
    reused: bool,
    /// Bytes of response read in this attempt.
    received: u64,
}

/// The start of the response as read from the socket, kept until the final
/// (non-1xx) status line is complete: ureq parses the head but drops the
/// reason phrase.
#[derive(Default)]
struct HeadCapture {
    buf: Vec<u8>,
    /// Where the next head starts (after the 1xx heads already skipped).
    pos: usize,
    done: bool,
    status: Option<(u16, String)>,
}

impl HeadCapture {
    fn push(&mut self, bytes: &[u8]) {
        if self.done {
            return;
        }
        let room = HEAD_CAPTURE.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        while let Some(end) = head_end(&self.buf[self.pos..]) {
            let head = &self.buf[self.pos..self.pos + end];
            let Some((code, reason)) = status_line(head) else {
                // Not a status line ureq would accept either: report no reason.
                self.finish(None);
                return;
            };
            if (100..200).contains(&code) {
                self.pos += end;
                continue;
            }
            self.finish(Some((code, reason)));
            return;
        }
        if self.buf.len() >= HEAD_CAPTURE {
            self.finish(None);
        }
    }

    fn finish(&mut self, status: Option<(u16, String)>) {
        self.done = true;
        self.status = status;
        self.buf = Vec::new();
    }
}

/// The length of the head at the start of `buf` (through its blank line), once complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    // Empty lines before a status line are ignored, as RFC 9112 allows.
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let mut i = start;
    while let Some(nl) = buf[i..].iter().position(|&b| b == b'\n') {
        let after = i + nl + 1;
        match buf.get(after..) {
            Some([b'\n', ..]) => return Some(after + 1),
            Some([b'\r', b'\n', ..]) => return Some(after + 2),
            Some([b'\r']) | Some([]) | None => return None,
            _ => i = after,
        }
    }
    None
}

/// The code and reason phrase of the status line opening `head`.
fn status_line(head: &[u8]) -> Option<(u16, String)> {
    let start = head.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let line = &head[start..];
    let line = &line[..line.iter().position(|&b| b == b'\n')?];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line.strip_prefix(b"HTTP/")?;
    let sp = rest.iter().position(|&b| b == b' ')?;
    let rest = &rest[sp + 1..];
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code: u16 = std::str::from_utf8(code).ok()?.parse().ok()?;
    let reason = rest.get(4..).unwrap_or_default();
    Some((code, String::from_utf8_lossy(reason).into_owned()))
}

impl Watch {
    pub(crate) fn new(head_method: bool, limits: (usize, usize)) -> Arc<Watch> {
        // Ids start at 1: a socket owned by 0 belongs to no exchange.
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Arc::new(Watch {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            start: Instant::now(),
            cancelled: AtomicBool::new(false),
            head_method: AtomicBool::new(head_method),
            limits,
            state: Mutex::new(WatchState::default()),
        })
    }

    /// True when the attempt's request went out on a reused connection and
    /// not one byte of response came back: the keep-alive race.
    pub(crate) fn stale(&self) -> bool {
        let st = lock(&self.state);
        st.reused && st.received == 0
    }

    /// Forgets the last attempt's connection and figures, before a retry.
    pub(crate) fn new_attempt(&self) {
        let mut st = lock(&self.state);
        if let Some(socket) = st.socket.take() {
            socket.release(self.id);
        }
        *st = WatchState::default();
    }

    /// Makes this the current thread's exchange until the guard is dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> WatchGuard {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        WatchGuard {
            watch: self.clone(),
        }
    }

    /// Aborts the exchange: later I/O fails at once, and I/O blocked right now
    /// is woken by shutting the socket down.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        let st = lock(&self.state);
        if let Some(socket) = &st.socket {
            socket.shutdown_if_owned_by(self.id);
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Address of the peer of the connection the exchange used last.
    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        lock(&self.state).socket.as_ref().map(|s| s.peer)
    }

    /// The phases measured so far, from the start of the exchange.
    pub(crate) fn timing(&self) -> LoadTiming {
        let st = lock(&self.state);
        LoadTiming {
            dns: st.dns,
            connect: st.connect,
            tls: st.tls,
            request_sent: st.request_sent,
            first_byte: st.first_byte,
            complete: None,
        }
    }

    /// The reason phrase of the final status line, when its code is `status`.
    pub(crate) fn reason(&self, status: u16) -> Option<String> {
        let st = lock(&self.state);
        match &st.head.status {
            Some((code, reason)) if *code == status => Some(reason.clone()),
            _ => None,
        }
    }

    /// Time since the exchange started.
    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn check(&self) -> Result<(), ureq::Error> {
        if self.is_cancelled() {
            return Err(ureq::Error::Io(io::Error::other(CancelledIo)));
        }
        Ok(())
    }

    /// Registers `socket` as the one this exchange is using before each I/O.
    fn attach(&self, socket: &Arc<Socket>) -> Result<(), ureq::Error> {
        let mut st = lock(&self.state);
        if !st.socket.as_ref().is_some_and(|s| Arc::ptr_eq(s, socket)) {
            st.socket = Some(socket.clone());
        }
        socket.claim(self.id);
        // Checked under the state lock: a cancel either sees the socket or is seen here.
        self.check()
    }

    fn record_dns(&self) {
        let at = self.elapsed();
        lock(&self.state).dns.get_or_insert(at);
    }

    fn record_connect(&self) {
        let at = self.elapsed();
        lock(&self.state).connect = Some(at);
    }

    fn record_tls(&self) {
        let at = self.elapsed();
        lock(&self.state).tls = Some(at);
    }

    fn record_request(&self, reused: bool) {
        lock(&self.state).reused = reused;
    }

    fn record_write(&self) {
        let at = self.elapsed();
        let mut st = lock(&self.state);
        if st.first_byte.is_none() {
            st.last_write = Some(at);
        }
    }

    fn record_read(&self, bytes: &[u8]) {
        let at = self.elapsed();
        let mut st = lock(&self.state);
        if st.first_byte.is_none() {
            st.first_byte = Some(at);
            st.request_sent = st.last_write;
        }
        st.received += bytes.len() as u64;
        st.head.push(bytes);
    }
}

/// Ends the exchange's claim on the thread and on its socket.
pub(crate) struct WatchGuard {
    watch: Arc<Watch>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
        let mut st = lock(&self.watch.state);
        // The connection may be pooled and serve another exchange: a late
        // cancel of this one must not shut it down.
        if let Some(socket) = st.socket.take() {
            socket.release(self.watch.id);
        }
    }
}

/// A connected socket shared between the transport (all I/O goes through
/// `&TcpStream`) and the watch of the exchange using it.
struct Socket {
    stream: TcpStream,
    peer: SocketAddr,
    /// Id of the exchange using the connection; 0 while it is idle in the pool.
    owner: Mutex<u64>,
    /// Requests that went out on the connection.
    requests: AtomicU64,
}

impl Socket {
    fn claim(&self, id: u64) {
        *lock(&self.owner) = id;
    }

    fn release(&self, id: u64) {
        let mut owner = lock(&self.owner);
        if *owner == id {
            *owner = 0;
        }
    }

    fn release_any(&self) {
        *lock(&self.owner) = 0;
    }

    fn shutdown_if_owned_by(&self, id: u64) {
        let owner = lock(&self.owner);
        if *owner == id {
            // An error means the socket is closed already, which is what we want.
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }
}

/// Host overrides first (like curl's `--resolve`), the system resolver for
/// names that are not overridden.
#[derive(Debug)]
pub(crate) struct OverrideResolver {
    overrides: HostOverrides,
    system: DefaultResolver,
    /// The route's proxy resolves the origin's name (an HTTP proxy, or
    /// `socks5h`): ureq's lookup of the origin is answered with no address.
    remote: bool,
}

impl OverrideResolver {
    pub(crate) fn new(overrides: HostOverrides) -> Self {
        OverrideResolver {
            overrides,
            system: DefaultResolver::default(),
            remote: false,
        }
    }

    /// The resolver of an agent whose connections go through `proxy`.
    pub(crate) fn for_route(overrides: HostOverrides, proxy: Option<&Proxy>) -> Self {
        let mut r = OverrideResolver::new(overrides);
        r.remote = proxy.is_some_and(|p| !p.scheme().resolves_origin_locally());
        r
    }
}

impl Resolver for OverrideResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        if let Some(r) = with_current(Watch::check) {
            r?;
        }
        if self.remote {
            return Ok(self.empty());
        }
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16().unwrap_or_else(|| {
            if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            }
        });
        let result = match self.overrides.lookup(host, port) {
            Resolution::Addrs(addrs) => {
                let mut out = self.empty();
                for a in addrs {
                    // ureq holds at most 16 addresses; the first 16 are plenty.
                    if out.try_push(a).is_err() {
                        break;
                    }
                }
                Ok(out)
            }
            Resolution::NoAddress => Err(ureq::Error::Other(Box::new(ResolveError::new(
                host, port, None,
            )))),
            Resolution::System => match self.system.resolve(uri, config, timeout) {
                Ok(addrs) => Ok(addrs),
                // A name the system cannot resolve is a DNS failure, whatever ureq calls it.
                Err(e @ (ureq::Error::HostNotFound | ureq::Error::Io(_))) => Err(
                    ureq::Error::Other(Box::new(ResolveError::new(host, port, Some(e)))),
                ),
                Err(e) => Err(e),
            },
        };
        with_current(Watch::record_dns);
        result
    }
}

/// Makes the connections of one route (direct, or through one proxy) as
/// [`WatchedTransport`]s: TCP, the proxy's handshake, then TLS for https.
#[derive(Debug)]
pub(crate) struct WatchedConnector {
    proxy: Option<Proxy>,
    tls: crate::tls::TlsSetup,
    /// Resolves the proxy's own name, through the host overrides too.
    proxy_resolver: OverrideResolver,
}

impl WatchedConnector {
    pub(crate) fn new(
        proxy: Option<Proxy>,
        tls: crate::tls::TlsSetup,
        overrides: HostOverrides,
    ) -> Self {
        WatchedConnector {
            proxy,
            tls,
            proxy_resolver: OverrideResolver::new(overrides),
        }
    }

    /// A TCP connection to the proxy; failing to find or reach it is a proxy error.
    fn connect_proxy(
        &self,
        proxy: &Proxy,
        details: &ConnectionDetails,
        budget: &Budget,
    ) -> Result<TcpStream, ureq::Error> {
        let host = if proxy.host().contains(':') {
            format!("[{}]", proxy.host())
        } else {
            proxy.host().to_owned()
        };
        let uri: Uri = format!("http://{host}:{}/", proxy.port())
            .parse()
            .map_err(|e| {
                ureq::Error::Other(Box::new(
                    ProxyFailure::new(format!("{proxy} is not a usable proxy address"))
                        .with_source(e),
                ))
            })?;
        let addrs = match self
            .proxy_resolver
            .resolve(&uri, details.config, budget.next()?)
        {
            Err(ureq::Error::Other(o)) if o.is::<ResolveError>() => {
                return Err(ureq::Error::Other(Box::new(
                    ProxyFailure::new(format!("cannot find the proxy {proxy}")).with_source(o),
                )))
            }
            r => r?,
        };
        match connect(&addrs, budget.next()?) {
            Err(ureq::Error::Other(o)) if o.is::<ConnectError>() => {
                Err(ureq::Error::Other(Box::new(
                    ProxyFailure::new(format!("cannot reach the proxy {proxy}")).with_source(o),
                )))
            }
            r => r,
        }
    }

    /// The proxy's handshake on a fresh connection; for an http url through
    /// an HTTP proxy, the absolute-form prefix of its request lines instead.
    fn proxy_handshake(
        proxy: &Proxy,
        details: &ConnectionDetails,
        stream: &TcpStream,
        budget: &Budget,
    ) -> Result<Option<Vec<u8>>, ureq::Error> {
        let uri = details.uri;
        let https = details.needs_tls();
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let limits = with_current(|w| w.limits).unwrap_or((usize::MAX, usize::MAX));
        let done = budget.apply(stream).and_then(|()| match proxy.scheme() {
            ProxyScheme::Http if !https => Ok(()),
            ProxyScheme::Http => proxy::connect_tunnel(
                stream,
                &format!("{host}:{port}"),
                proxy.basic_authorization().as_ref(),
                limits.0,
            ),
            ProxyScheme::Socks5 => match details.addrs.first() {
                Some(addr) => proxy::socks5(stream, SocksTarget::Addr(*addr), proxy.credentials()),
                None => Err(io::Error::other(ProxyFailure::new(format!(
                    "{host} has no address to hand to the SOCKS5 proxy"
                )))),
            },
            ProxyScheme::Socks5h => {
                proxy::socks5(stream, SocksTarget::Name(host, port), proxy.credentials())
            }
            other => Err(io::Error::other(ProxyFailure::new(format!(
                "the ureq backend cannot speak to a {} proxy",
                other.as_str()
            )))),
        });
        done.map_err(|e| {
            handshake_error(e, budget, |e| {
                Box::new(
                    ProxyFailure::new(format!("the handshake with the proxy {proxy} failed"))
                        .with_source(e),
                )
            })
        })?;
        if proxy.scheme() == ProxyScheme::Http && !https {
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
            return Ok(Some(format!("http://{authority}").into_bytes()));
        }
        Ok(None)
    }
}

/// An I/O error of a handshake (the proxy's or TLS) as ureq's error: a
/// timeout of the connect budget, a cancel, the failure the handshake
/// described, or else what `wrap` makes of the broken connection.
fn handshake_error(
    e: io::Error,
    budget: &Budget,
    wrap: impl FnOnce(io::Error) -> Box<dyn std::error::Error + Send + Sync>,
) -> ureq::Error {
    if with_current(Watch::is_cancelled).unwrap_or(false) {
        return ureq::Error::Io(io::Error::other(CancelledIo));
    }
    if is_timeout(&e) {
        return ureq::Error::Timeout(budget.reason);
    }
    if e.get_ref()
        .is_some_and(|i| i.is::<ProxyFailure>() || i.is::<TlsFailure>())
    {
        if let Some(inner) = e.into_inner() {
            return ureq::Error::Other(inner);
        }
        return ureq::Error::Other(wrap(io::Error::other("handshake failed")));
    }
    ureq::Error::Other(wrap(e))
}

/// The connect phase's budget, shared by TCP, the proxy's handshake and TLS.
struct Budget {
    deadline: Option<Instant>,
    reason: Timeout,
}

impl Budget {
    fn new(timeout: NextTimeout) -> Budget {
        Budget {
            deadline: match timeout.after {
                UreqDuration::Exact(d) => Some(Instant::now() + d),
                UreqDuration::NotHappening => None,
            },
            reason: timeout.reason,
        }
    }

    fn left(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// What is left, as ureq's timeout; an error once it is spent.
    fn next(&self) -> Result<NextTimeout, ureq::Error> {
        let after = match self.left() {
            None => UreqDuration::NotHappening,
            Some(d) if d.is_zero() => return Err(ureq::Error::Timeout(self.reason)),
            Some(d) => UreqDuration::Exact(d),
        };
        Ok(NextTimeout {
            after,
            reason: self.reason,
            per_read: None,
            per_write: None,
        })
    }

    /// Limits the socket's next reads and writes to what is left.
    fn apply(&self, stream: &TcpStream) -> io::Result<()> {
        let left = self.left();
        if left.is_some_and(|d| d.is_zero()) {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(left)?;
        stream.set_write_timeout(left)
    }
}

impl Connector<()> for WatchedConnector {
    type Out = WatchedTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<()>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        debug_assert!(chained.is_none(), "first connector of the chain");
        if let Some(r) = with_current(Watch::check) {
            r?;
        }
        let budget = Budget::new(details.timeout);
        let stream = match &self.proxy {
            None => connect(&details.addrs, details.timeout)?,
            Some(proxy) => self.connect_proxy(proxy, details, &budget)?,
        };
        let peer = stream.peer_addr().map_err(|e| {
            ureq::Error::Other(Box::new(ConnectError::new(
                details.addrs.first().copied(),
                e,
            )))
        })?;
        if details.config.no_delay() {
            stream.set_nodelay(true)?;
        }
        with_current(Watch::record_connect);
        let socket = Arc::new(Socket {
            stream,
            peer,
            owner: Mutex::new(0),
            requests: AtomicU64::new(0),
        });
        // From here a cancel can shut the socket down, handshakes included.
        if let Some(r) = with_current(|w| w.attach(&socket)) {
            r?;
        }
        let forward = match &self.proxy {
            Some(proxy) => Self::proxy_handshake(proxy, details, &socket.stream, &budget)?,
            None => None,
        };
        let tls = if details.needs_tls() {
            let host = details.uri.host().unwrap_or_default();
            let mut conn =
                tls::session(&self.tls, host).map_err(|e| ureq::Error::Other(Box::new(e)))?;
            tls::handshake(&mut conn, &socket.stream, || budget.apply(&socket.stream))
                .map_err(|e| handshake_error(e, &budget, |e| Box::new(TlsFailure::handshake(e))))?;
            with_current(Watch::record_tls);
            Some(Box::new(conn))
        } else {
            None
        };
        if self.proxy.is_some() || tls.is_some() {
            // The transport sets its own timeouts per I/O, starting from none.
            socket.stream.set_read_timeout(None)?;
            socket.stream.set_write_timeout(None)?;
        }
        let limits = with_current(|w| w.limits).unwrap_or((usize::MAX, usize::MAX));
        let config = details.config;
        Ok(Some(WatchedTransport {
            socket,
            tls,
            forward,
            rewrite_pending: false,
            buffers: LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size()),
            read_timeout: None,
            write_timeout: None,
            filter: ResponseFilter::new(limits.0, limits.1),
            pending: Vec::new(),
            staging: Vec::new(),
            reading: true,
            probe_due: false,
            deferred: None,
        }))
    }
}

/// Tries each address in turn within the connect budget: every address but
/// the last gets half of what is left, so one black-holed address cannot eat
/// the whole budget.
fn connect(addrs: &[SocketAddr], timeout: NextTimeout) -> Result<TcpStream, ureq::Error> {
    let deadline = match timeout.after {
        UreqDuration::Exact(d) => Some(Instant::now() + d),
        UreqDuration::NotHappening => None,
    };
    let mut last: Option<ureq::Error> = None;
    for (i, addr) in addrs.iter().enumerate() {
        let is_last = i + 1 == addrs.len();
        let attempt = match deadline {
            None => TcpStream::connect(addr),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ureq::Error::Timeout(timeout.reason));
                }
                let budget = if is_last {
                    left
                } else {
                    (left / 2).max(MIN_ATTEMPT)
                };
                TcpStream::connect_timeout(addr, budget)
            }
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(ureq::Error::Timeout(timeout.reason));
                }
                last = Some(ureq::Error::Timeout(Timeout::Connect));
            }
            Err(e) => {
                last = Some(ureq::Error::Other(Box::new(ConnectError::new(
                    Some(*addr),
                    e,
                ))))
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        ureq::Error::Other(Box::new(ConnectError::new(
            None,
            io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to connect to"),
        )))
    }))
}

/// ureq's TCP transport, plus the registration with the running exchange's
/// [`Watch`] that makes cancellation and peer-address reporting possible,
/// the TLS session of an https connection, and the request-line rewrite of
/// a forwarding proxy.
pub(crate) struct WatchedTransport {
    socket: Arc<Socket>,
    /// The TLS session, for an https url.
    tls: Option<Box<ClientConnection>>,
    /// `http://host[:port]` of the origin, when requests go in absolute
    /// form to an HTTP proxy.
    forward: Option<Vec<u8>>,
    /// The current request's line has not been rewritten yet.
    rewrite_pending: bool,
    buffers: LazyBuffers,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// What ureq gets to see of each response (see `framing`).
    filter: ResponseFilter,
    /// Filtered bytes that did not fit ureq's input buffer yet.
    pending: Vec<u8>,
    /// Raw bytes as read, before the filter.
    staging: Vec<u8>,
    /// The last I/O was a read (so the next write starts a request).
    reading: bool,
    /// The next `is_open` probes the socket: false right after an exchange
    /// used the connection, when ureq asks only to pool it.
    probe_due: bool,
    /// A refusal held back until ureq has taken what came before it.
    deferred: Option<crate::framing::Refusal>,
}

impl fmt::Debug for WatchedTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchedTransport")
            .field("peer", &self.socket.peer)
            .finish()
    }
}

impl WatchedTransport {
    fn attach(&self) -> Result<(), ureq::Error> {
        with_current(|w| w.attach(&self.socket)).unwrap_or(Ok(()))
    }
}

/// Applies a ureq timeout to the socket, skipping the syscall when unchanged;
/// a spent budget is the timeout itself (a zero socket timeout would mean none).
fn socket_timeout(
    timeout: NextTimeout,
    previous: &mut Option<Duration>,
    set: impl FnOnce(Option<Duration>) -> io::Result<()>,
) -> Result<(), ureq::Error> {
    let wanted = match timeout.after {
        UreqDuration::NotHappening => None,
        UreqDuration::Exact(d) if d.is_zero() => return Err(ureq::Error::Timeout(timeout.reason)),
        UreqDuration::Exact(d) => Some(d),
    };
    if wanted != *previous {
        set(wanted)?;
        *previous = wanted;
    }
    Ok(())
}

fn is_timeout(e: &io::Error) -> bool {
    // A socket timeout shows as EAGAIN (WouldBlock) on Unix and TimedOut on Windows.
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Transport for WatchedTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.attach()?;
        self.probe_due = false;
        if std::mem::replace(&mut self.reading, false) {
            // The first write after a response starts the next request.
            let n = self.socket.requests.fetch_add(1, Ordering::SeqCst) + 1;
            with_current(|w| w.record_request(n > 1));
            let head = with_current(|w| w.head_method.load(Ordering::SeqCst)).unwrap_or(false);
            self.filter.request_started(head);
            self.pending.clear();
            self.deferred = None;
            self.rewrite_pending = self.forward.is_some();
        }
        let timeout = timeout.for_write();
        let stream = &self.socket.stream;
        socket_timeout(timeout, &mut self.write_timeout, |t| {
            stream.set_write_timeout(t)
        })?;
        let output = &self.buffers.output()[..amount];
        let rewritten;
        let bytes = match (&self.forward, self.rewrite_pending) {
            (Some(prefix), true) => match absolute_form(output, prefix) {
                Some(line) => {
                    self.rewrite_pending = false;
                    rewritten = line;
                    &rewritten[..]
                }
                // The method alone so far: the target comes in the next piece.
                None => output,
            },
            _ => output,
        };
        match send(&mut self.tls, &self.socket.stream, bytes) {
            Ok(()) => {}
            Err(e) if is_timeout(&e) => return Err(ureq::Error::Timeout(timeout.reason)),
            Err(e) => return Err(e.into()),
        }
        with_current(Watch::record_write);
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.attach()?;
        self.reading = true;
        self.probe_due = false;
        if self.deliver_pending() {
            return Ok(true);
        }
        if let Some(r) = self.deferred.take() {
            return Err(ureq::Error::Io(io::Error::other(FilterRefusal(r))));
        }
        // The phase's budget runs across reads; the per-read (idle) one
        // restarts with every byte, even bytes the filter holds back.
        let started = Instant::now();
        let budget = match timeout.after {
            UreqDuration::Exact(d) => Some(d),
            UreqDuration::NotHappening => None,
        };
        let per_read = timeout.per_read.and_then(|d| match d {
            UreqDuration::Exact(d) => Some(d),
            UreqDuration::NotHappening => None,
        });
        let mut last_byte = started;
        loop {
            let left = budget.map(|b| b.saturating_sub(started.elapsed()));
            let idle_left = per_read.map(|p| p.saturating_sub(last_byte.elapsed()));
            let (wait, reason) = match (left, idle_left) {
                (Some(l), Some(i)) if i < l => (Some(i), Timeout::PerRead),
                (Some(l), _) => (Some(l), timeout.reason),
                (None, Some(i)) => (Some(i), Timeout::PerRead),
                (None, None) => (None, timeout.reason),
            };
            if wait.is_some_and(|w| w.is_zero()) {
                return Err(ureq::Error::Timeout(reason));
            }
            if wait != self.read_timeout {
                self.socket.stream.set_read_timeout(wait)?;
                self.read_timeout = wait;
            }
            // The read may block: what the exchange queued for the
            // application without waking it must not wait for the network.
            crate::driver::flush_wakes();
            let direct = self.pending.is_empty()
                && self.deferred.is_none()
                && self.filter.passes_through()
                && !self.buffers.input_append_buf().is_empty();
            let got = if direct {
                // Body bytes the filter would pass unchanged go straight
                // into ureq's buffer, without the staging copy.
                let buf = self.buffers.input_append_buf();
                match receive(&mut self.tls, &self.socket.stream, buf) {
                    Ok(n) if n > 0 => {
                        with_current(|w| w.record_read(&buf[..n]));
                        self.buffers.input_appended(n);
                        return Ok(true);
                    }
                    other => other,
                }
            } else {
                let mut room = self.buffers.input_append_buf().len().max(1);
                if self.filter.in_head() {
                    // A head is small; the body behind it is read straight
                    // into ureq's buffer next, so staging stays small for
                    // connections that carry no chunked body.
                    room = room.min(HEAD_READ);
                }
                if self.staging.len() < room {
                    // Grown once to the buffer's size, never shrunk: a
                    // resize per read would zero the bytes again each time.
                    self.staging.resize(room, 0);
                }
                receive(
                    &mut self.tls,
                    &self.socket.stream,
                    &mut self.staging[..room],
                )
            };
            match got {
                Ok(0) => {
                    self.filter
                        .eof()
                        .map_err(|r| ureq::Error::Io(io::Error::other(FilterRefusal(r))))?;
                    return Ok(false);
                }
                Ok(n) => {
                    last_byte = Instant::now();
                    let raw = &self.staging[..n];
                    with_current(|w| w.record_read(raw));
                    // What the filter lets through goes into ureq's buffer;
                    // only what does not fit waits in `pending`.
                    let mut out = Spill::new(self.buffers.input_append_buf(), &mut self.pending);
                    let fed = self.filter.feed(raw, &mut out);
                    let filled = out.filled();
                    self.buffers.input_appended(filled);
                    if let Err(r) = fed {
                        if filled == 0 && self.pending.is_empty() {
                            return Err(ureq::Error::Io(io::Error::other(FilterRefusal(r))));
                        }
                        // What came before the fault (a head, say) is
                        // delivered first, as the other backends do.
                        self.deferred = Some(r);
                    }
                    if filled > 0 || self.deliver_pending() {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(ureq::Error::Timeout(reason)),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    // ureq takes a reset for the end of a close-delimited
                    // body; it is a broken connection, not an end.
                    return Err(ureq::Error::Io(io::Error::other(ConnectionBroken(e))));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn is_open(&mut self) -> bool {
        // ureq asks before pooling a connection and before reusing it: either
        // way no exchange owns it now, so a late cancel must not touch it.
        self.socket.release_any();
        if !self.filter.reusable() || !self.pending.is_empty() {
            return false;
        }
        // ureq asks twice per exchange: when the connection goes back to
        // the pool and when it is taken out again. The second probe sees
        // whatever the first would have (stray bytes, a close) and more, so
        // the first is skipped: three syscalls less per request, and a
        // connection is still never reused without a probe.
        if !std::mem::replace(&mut self.probe_due, true) {
            return true;
        }
        match &mut self.tls {
            Some(conn) => tls::idle_ok(conn, &self.socket.stream).unwrap_or(false),
            None => probe(&self.socket.stream).unwrap_or(false),
        }
    }

    fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Writes request bytes, through the TLS session when there is one.
fn send(
    tls: &mut Option<Box<ClientConnection>>,
    stream: &TcpStream,
    bytes: &[u8],
) -> io::Result<()> {
    match tls {
        Some(conn) => tls::write_all(conn, stream, bytes),
        None => {
            let mut s = stream;
            s.write_all(bytes)
        }
    }
}

/// Reads response bytes, through the TLS session when there is one.
fn receive(
    tls: &mut Option<Box<ClientConnection>>,
    stream: &TcpStream,
    buf: &mut [u8],
) -> io::Result<usize> {
    match tls {
        Some(conn) => tls::read(conn, stream, buf),
        None => {
            let mut s = stream;
            s.read(buf)
        }
    }
}

/// The start of a request with its origin-form target turned into absolute
/// form (`GET /x` → `GET http://host/x`), once `output` holds the space
/// after the method.
fn absolute_form(output: &[u8], prefix: &[u8]) -> Option<Vec<u8>> {
    let sp = output.iter().position(|&b| b == b' ')?;
    let mut line = Vec::with_capacity(output.len() + prefix.len());
    line.extend_from_slice(&output[..=sp]);
    line.extend_from_slice(prefix);
    line.extend_from_slice(&output[sp + 1..]);
    Some(line)
}

impl WatchedTransport {
    /// Hands ureq as much of the filtered bytes as its buffer takes; true
    /// when something was handed over.
    fn deliver_pending(&mut self) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let buf = self.buffers.input_append_buf();
        let n = buf.len().min(self.pending.len());
        if n == 0 {
            return false;
        }
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.buffers.input_appended(n);
        self.pending.drain(..n);
        true
    }
}

/// True when the idle connection is still usable: nothing to read and not closed.
fn probe(stream: &TcpStream) -> io::Result<bool> {
    stream.set_nonblocking(true)?;
    let mut buf = [0u8; 1];
    let open = match (&*stream).read(&mut buf) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
        // Bytes nobody asked for, or EOF: the connection cannot be reused.
        Ok(_) => false,
        Err(_) => false,
    };
    stream.set_nonblocking(false)?;
    Ok(open)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(parts: &[&[u8]]) -> Option<(u16, String)> {
        let mut c = HeadCapture::default();
        for p in parts {
            c.push(p);
        }
        c.status
    }

    #[test]
    fn forwarded_request_lines_are_absolute() {
        let out = absolute_form(
            b"GET /a?b HTTP/1.1\r\nHost: o.test\r\n\r\n",
            b"http://o.test:8080",
        );
        assert_eq!(
            out.as_deref(),
            Some(&b"GET http://o.test:8080/a?b HTTP/1.1\r\nHost: o.test\r\n\r\n"[..])
        );
        assert_eq!(absolute_form(b"PROPFIND", b"http://o.test"), None);
    }

    #[test]
    fn reason_phrase_of_the_final_head() {
        assert_eq!(
            capture(&[b"HTTP/1.1 200 Everything Fine Here\r\nContent-Length: 0\r\n\r\nbody"]),
            Some((200, "Everything Fine Here".into()))
        );
        // Split anywhere, after 1xx heads, with bare LF line ends.
        assert_eq!(
            capture(&[
                b"HTTP/1.1 100 Continue\r\n\r",
                b"\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.0 404 Not",
                b" Here\n\n"
            ]),
            Some((404, "Not Here".into()))
        );
        assert_eq!(
            capture(&[b"HTTP/1.1 204\r\n\r\n"]),
            Some((204, String::new()))
        );
        assert_eq!(capture(&[b"HTTP/1.1 abc OK\r\n\r\n"]), None);
        assert_eq!(capture(&[b"HTTP/1.1 200 OK\r\nX: y\r\n"]), None);
    }
}
