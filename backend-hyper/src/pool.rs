//! The backend's connection pool, over hyper's connection-level API.
//!
//! hyper-util's pool keys connections by the request's scheme and
//! authority. The contract needs more than that: connections to a
//! forwarding proxy are shared by every origin behind it, a tunnel or a
//! SOCKS connection belongs to one origin through one proxy, a connection
//! that offered `h2` by ALPN is not one that offered only `http/1.1`, and an
//! HTTP/2 connection is shared by every concurrent exchange instead of
//! serving one at a time. So the pool is the backend's own:
//!
//! - A [`Key`] says how a connection was made: the route (direct, forwarded
//!   by a proxy, tunnelled, through SOCKS5) and what was offered ([`Mode`]).
//! - HTTP/1.1 connections serve one exchange at a time and come back idle
//!   when its body ended; HTTP/2 connections stay shared while they live.
//! - At most `max_connections_per_host` connections are open per host the
//!   backend connects to (the proxy, through a proxy; curl's
//!   CURLMOPT_MAX_HOST_CONNECTIONS), and while a connection that may turn
//!   out to be HTTP/2 is being made, other exchanges of its key wait for it
//!   rather than open more (curl's PIPEWAIT): six concurrent loads share one
//!   h2 connection. Once a server answered the `h2` offer with HTTP/1.1,
//!   its connects no longer wait for one another.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use handle_api::http::{HeaderValue, Request, Response};
use handle_api::{BackendConfig, Error, ErrorKind, ProxyScheme, Result, TimeoutPhase};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::conn::ConnMeta;
use crate::connect::Connector;
use crate::convert::WireBody;
use crate::driver::RuntimeExecutor;

/// hyper's default read buffer limit (8 KiB + 100 × 4 KiB); raised only
/// for a head limit larger than it, so the head always fits.
const DEFAULT_READ_BUFFER: usize = 8192 + 4096 * 100;

/// The header fields hyper allows in a response head unless told otherwise.
const HYPER_MAX_HEADERS: usize = 100;

/// What a connection offers beyond HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    /// HTTP/1.1 only (ALPN `http/1.1` over TLS).
    Http1,
    /// ALPN `h2, http/1.1`: the server chooses.
    Alpn,
    /// HTTP/2 from the first byte, without negotiation (cleartext).
    PriorKnowledge,
}

/// The origin of an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    /// https.
    pub(crate) tls: bool,
    /// The host name or IP address, lower case, without brackets.
    pub(crate) host: String,
    /// The port.
    pub(crate) port: u16,
}

/// A proxy as part of a key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Hop {
    /// HTTP, SOCKS5 or SOCKS5 with remote name resolution.
    pub(crate) scheme: ProxyScheme,
    /// The proxy's host name or address, lower case, without brackets.
    pub(crate) host: String,
    /// The proxy's port.
    pub(crate) port: u16,
    /// The user name and password the connection was opened with (a tunnel
    /// or a SOCKS connection is authorised once, when it is made).
    pub(crate) credentials: Option<(String, String)>,
    /// The same credentials as a Basic Proxy-Authorization value, for CONNECT.
    pub(crate) authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for Hop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never appears in logs.
        f.debug_struct("Hop")
            .field("scheme", &self.scheme)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

/// The way a connection reaches its origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Via {
    /// Straight to the origin.
    Direct(Origin),
    /// To an HTTP proxy that forwards absolute-form requests to any http
    /// origin: one pool for all of them.
    Forward(Hop),
    /// Through an HTTP proxy's CONNECT tunnel to the origin.
    Tunnel(Hop, Origin),
    /// Through a SOCKS5 proxy to the origin.
    Socks(Hop, Origin),
}

/// Which connections may serve an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    /// The route.
    pub(crate) via: Via,
    /// What is offered.
    pub(crate) mode: Mode,
}

impl Key {
    /// The host the TCP connection goes to, for the per-host limit.
    fn host(&self) -> (String, u16) {
        match &self.via {
            Via::Direct(o) => (o.host.clone(), o.port),
            Via::Forward(h) | Via::Tunnel(h, _) | Via::Socks(h, _) => (h.host.clone(), h.port),
        }
    }

    /// True when the request goes to a forwarding proxy (absolute form).
    pub(crate) fn forwarded(&self) -> bool {
        matches!(self.via, Via::Forward(_))
    }

    /// True when a connection of this key may turn out to be HTTP/2.
    fn may_be_h2(&self) -> bool {
        self.mode != Mode::Http1
    }
}

/// hyper's sending half of one connection.
enum Sender {
    Http1(http1::SendRequest<WireBody>),
    Http2(http2::SendRequest<WireBody>),
}

/// A connection checked out for one exchange.
pub(crate) struct Pooled {
    sender: Sender,
    /// The connection's counts and address.
    pub(crate) meta: ConnMeta,
    /// The connection served an earlier exchange.
    pub(crate) reused: bool,
    /// False once the response showed the connection must not be reused.
    pub(crate) reusable: bool,
    id: u64,
    key: Key,
    pool: Weak<Pool>,
    /// Counts this exchange among a shared connection's users.
    _user: Option<Arc<()>>,
}

impl Pooled {
    /// True for an HTTP/2 connection.
    pub(crate) fn is_h2(&self) -> bool {
        matches!(self.sender, Sender::Http2(_))
    }

    /// Waits until the connection can take a request; an error means it closed.
    pub(crate) async fn ready(&mut self) -> hyper::Result<()> {
        match &mut self.sender {
            Sender::Http1(s) => s.ready().await,
            Sender::Http2(s) => s.ready().await,
        }
    }

    /// Sends `request`; an error may give the request back when not one
    /// byte of it was written.
    pub(crate) async fn send(
        &mut self,
        request: Request<WireBody>,
    ) -> std::result::Result<Response<Incoming>, TrySendError<Request<WireBody>>> {
        match &mut self.sender {
            Sender::Http1(s) => s.try_send_request(request).await,
            Sender::Http2(s) => s.try_send_request(request).await,
        }
    }

    /// The exchange is over and its body was read to the end: an HTTP/1.1
    /// connection goes back to the pool for the next one.
    pub(crate) fn release(self) {
        let Pooled {
            sender,
            meta,
            reusable,
            id,
            key,
            pool,
            ..
        } = self;
        let (Sender::Http1(sender), true) = (sender, reusable) else {
            return;
        };
        if sender.is_closed() {
            return;
        }
        if let Some(pool) = pool.upgrade() {
            pool.put_idle(key, id, sender, meta);
        }
    }

    /// The connection failed in a way that it must not serve anyone else.
    pub(crate) fn discard(self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.forget(&self.key, self.id);
        }
    }
}

struct Idle {
    id: u64,
    sender: http1::SendRequest<WireBody>,
    meta: ConnMeta,
    since: Instant,
}

struct Shared {
    id: u64,
    sender: http2::SendRequest<WireBody>,
    meta: ConnMeta,
    last_used: Instant,
    /// One clone per exchange on the connection: alone, the connection is idle.
    users: Arc<()>,
}

#[derive(Default)]
struct State {
    idle: HashMap<Key, Vec<Idle>>,
    h2: HashMap<Key, Shared>,
    /// Connects under way per key, for keys that may give HTTP/2.
    connecting: HashMap<Key, usize>,
    /// Keys whose server last answered an `h2` offer with HTTP/1.1: their
    /// connects need not wait for one another.
    chose_http1: HashSet<Key>,
    /// Connections open (or being opened) per host.
    open: HashMap<(String, u16), usize>,
    next_id: u64,
}

/// The pool: connections by [`Key`], and the connector that makes them.
pub(crate) struct Pool {
    state: Mutex<State>,
    /// Something changed: a connection came back, closed, or was made.
    changed: Notify,
    per_host: usize,
    idle_timeout: Duration,
    connector: Connector,
    http1: http1::Builder,
    http2: http2::Builder<RuntimeExecutor>,
    runtime: Handle,
}

/// One open connection's place among its host's; given back when the
/// connection's task ends, which is when the connection is closed.
struct Slot {
    pool: Weak<Pool>,
    host: (String, u16),
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            {
                let mut st = pool.lock();
                if let Some(n) = st.open.get_mut(&self.host) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        st.open.remove(&self.host);
                    }
                }
            }
            pool.changed.notify_waiters();
        }
    }
}

/// Marks a connect of a key that may give HTTP/2 as under way.
struct Connecting {
    pool: Weak<Pool>,
    key: Key,
}

impl Drop for Connecting {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            {
                let mut st = pool.lock();
                if let Some(n) = st.connecting.get_mut(&self.key) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        st.connecting.remove(&self.key);
                    }
                }
            }
            pool.changed.notify_waiters();
        }
    }
}

/// What a checkout found to do.
enum Next {
    Got(Pooled),
    Connect(Slot, Option<Connecting>),
}

impl Pool {
    /// A pool configured from `config`, with its idle reaper running on `runtime`.
    pub(crate) fn new(config: &BackendConfig, runtime: Handle) -> Arc<Pool> {
        let mut h1 = http1::Builder::new();
        h1.http09_responses(false)
            // The head limits: hyper fails a head with more fields than it
            // has room for, exactly; the byte limit is `Wire`'s, which counts
            // to the byte (hyper's own bound is its read buffer, which a read
            // may overfill), so the buffer only has to be large enough.
            .max_buf_size(config.max_response_head_bytes.max(DEFAULT_READ_BUFFER))
            // RFC 9112 §5.2: a user agent unfolds obs-fold instead of failing;
            // the driver turns hyper's raw continuation into spaces.
            .allow_obsolete_multiline_headers_in_responses(true);
        // hyper's own limit is the same number of fields; only an explicit
        // one (even an equal one) makes hyper fill a fresh header array
        // element by element for every head it parses.
        if config.max_response_headers != HYPER_MAX_HEADERS {
            h1.max_headers(config.max_response_headers);
        }
        let mut h2 = http2::Builder::new(RuntimeExecutor(runtime.clone()));
        h2.timer(TokioTimer::new())
            // The head limits are checked on each decoded head (see the
            // driver); this bound only has to let every head within them
            // through, counting HPACK's 32 bytes of overhead per field.
            .max_header_list_size(h2_header_list_size(config));
        let pool = Arc::new(Pool {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            per_host: config.max_connections_per_host.max(1),
            idle_timeout: config.idle_timeout,
            connector: Connector::new(config),
            http1: h1,
            http2: h2,
            runtime: runtime.clone(),
        });
        runtime.spawn(reap(Arc::downgrade(&pool)));
        pool
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain map updates only: a panic cannot leave them half-done.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection for `key`: a shared HTTP/2 one, an idle HTTP/1.1 one, or
    /// a new one, made within `connect_timeout`.
    pub(crate) async fn checkout(
        self: &Arc<Self>,
        key: &Key,
        connect_timeout: Option<Duration>,
    ) -> Result<Pooled> {
        let (slot, connecting) = loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            {
                let mut st = self.lock();
                match self.find(&mut st, key) {
                    Some(Next::Got(p)) => return Ok(p),
                    Some(Next::Connect(slot, connecting)) => break (slot, connecting),
                    None => {}
                }
                // Registered before the lock is released, so a change made
                // right after is not missed.
                notified.as_mut().enable();
            }
            notified.await;
        };
        // Boxed: connecting (TCP, proxy, TLS, handshake) is a large future,
        // and inline it would make every exchange's task that large, also
        // the many that find a pooled connection.
        let made = Box::pin(async {
            let established = self.connector.connect(key).await?;
            self.handshake(key, established, slot).await
        });
        let pooled = match connect_timeout {
            Some(t) => tokio::time::timeout(t, made)
                .await
                .map_err(|_| Error::timeout(TimeoutPhase::Connect))?,
            None => made.await,
        };
        drop(connecting);
        pooled
    }

    /// Under the lock: what `key` can have now, or `None` to wait.
    fn find(self: &Arc<Self>, st: &mut State, key: &Key) -> Option<Next> {
        if let Some(shared) = st.h2.get_mut(key) {
            if !shared.sender.is_closed() {
                shared.last_used = Instant::now();
                return Some(Next::Got(Pooled {
                    sender: Sender::Http2(shared.sender.clone()),
                    meta: shared.meta.clone(),
                    reused: true,
                    reusable: true,
                    id: shared.id,
                    key: key.clone(),
                    pool: Arc::downgrade(self),
                    _user: Some(shared.users.clone()),
                }));
            }
            st.h2.remove(key);
        }
        if let Some(idle) = st.idle.get_mut(key) {
            // The most recently used first: it is the least likely to have
            // been closed by the server meanwhile.
            while let Some(conn) = idle.pop() {
                if conn.sender.is_closed() || conn.since.elapsed() >= self.idle_timeout {
                    continue;
                }
                return Some(Next::Got(Pooled {
                    sender: Sender::Http1(conn.sender),
                    meta: conn.meta,
                    reused: true,
                    reusable: true,
                    id: conn.id,
                    key: key.clone(),
                    pool: Arc::downgrade(self),
                    _user: None,
                }));
            }
        }
        if key.may_be_h2()
            && !st.chose_http1.contains(key)
            && st.connecting.get(key).is_some_and(|n| *n > 0)
        {
            // The connection under way may be HTTP/2, which this exchange
            // would share.
            return None;
        }
        let host = key.host();
        if st.open.get(&host).is_some_and(|n| *n >= self.per_host) {
            // An idle connection of another kind to the same host (another
            // ALPN offer, another proxy) gives way; its place comes free when
            // it has closed.
            let other = st
                .idle
                .iter_mut()
                .find(|(k, list)| !list.is_empty() && k.host() == host);
            if let Some((_, list)) = other {
                drop(list.remove(0));
            } else {
                let unused = st
                    .h2
                    .iter()
                    .find(|(k, s)| Arc::strong_count(&s.users) == 1 && k.host() == host)
                    .map(|(k, _)| k.clone());
                if let Some(k) = unused {
                    st.h2.remove(&k);
                }
            }
            return None;
        }
        *st.open.entry(host.clone()).or_insert(0) += 1;
        let slot = Slot {
            pool: Arc::downgrade(self),
            host,
        };
        let connecting = key.may_be_h2().then(|| {
            *st.connecting.entry(key.clone()).or_insert(0) += 1;
            Connecting {
                pool: Arc::downgrade(self),
                key: key.clone(),
            }
        });
        Some(Next::Connect(slot, connecting))
    }

    /// Starts HTTP/1.1 or HTTP/2 on a new connection; its task holds `slot`.
    async fn handshake(
        self: &Arc<Self>,
        key: &Key,
        established: crate::connect::Established,
        slot: Slot,
    ) -> Result<Pooled> {
        let crate::connect::Established { wire, meta, h2 } = established;
        let io = TokioIo::new(wire);
        let failed = |e: hyper::Error| {
            Error::new(
                ErrorKind::Connect,
                format!("the HTTP connection could not start: {e}"),
            )
            .with_source(e)
        };
        let id = {
            let mut st = self.lock();
            st.next_id += 1;
            if key.may_be_h2() {
                if h2 {
                    st.chose_http1.remove(key);
                } else {
                    st.chose_http1.insert(key.clone());
                }
            }
            st.next_id
        };
        let mut user = None;
        let sender = if h2 {
            let (sender, conn) = self.http2.handshake(io).await.map_err(failed)?;
            let ended = meta.clone();
            self.runtime.spawn(async move {
                let failure = conn.await.err().map(|e| crate::error::request(e, None));
                ended.end(failure);
                drop(slot);
            });
            let users = Arc::new(());
            user = Some(users.clone());
            let mut st = self.lock();
            st.h2.insert(
                key.clone(),
                Shared {
                    id,
                    sender: sender.clone(),
                    meta: meta.clone(),
                    last_used: Instant::now(),
                    users,
                },
            );
            drop(st);
            self.changed.notify_waiters();
            Sender::Http2(sender)
        } else {
            let (sender, conn) = self.http1.handshake(io).await.map_err(failed)?;
            self.runtime.spawn(async move {
                let _ = conn.await;
                drop(slot);
            });
            Sender::Http1(sender)
        };
        Ok(Pooled {
            sender,
            meta,
            reused: false,
            reusable: true,
            id,
            key: key.clone(),
            pool: Arc::downgrade(self),
            _user: user,
        })
    }

    fn put_idle(&self, key: Key, id: u64, sender: http1::SendRequest<WireBody>, meta: ConnMeta) {
        self.lock().idle.entry(key).or_default().push(Idle {
            id,
            sender,
            meta,
            since: Instant::now(),
        });
        self.changed.notify_waiters();
    }

    fn forget(&self, key: &Key, id: u64) {
        let mut st = self.lock();
        if st.h2.get(key).is_some_and(|s| s.id == id) {
            st.h2.remove(key);
        }
    }

    /// Drops connections idle for longer than the idle timeout, which
    /// closes them.
    fn reap_once(&self) {
        let limit = self.idle_timeout;
        let dropped = {
            let mut st = self.lock();
            let mut dropped = Vec::new();
            for list in st.idle.values_mut() {
                let (keep, old): (Vec<Idle>, Vec<Idle>) = std::mem::take(list)
                    .into_iter()
                    .partition(|c| c.since.elapsed() < limit && !c.sender.is_closed());
                *list = keep;
                dropped.extend(old.into_iter().map(|c| c.sender));
            }
            st.idle.retain(|_, l| !l.is_empty());
            // The pool's share of an idle HTTP/2 connection; exchanges still
            // running on it keep it open until they end.
            st.h2
                .retain(|_, s| s.last_used.elapsed() < limit && !s.sender.is_closed());
            dropped
        };
        // Outside the lock: dropping a sender may run hyper's code.
        drop(dropped);
    }
}

/// Runs [`Pool::reap_once`] now and then, for as long as the pool lives.
async fn reap(pool: Weak<Pool>) {
    let period = match pool.upgrade() {
        Some(p) => (p.idle_timeout / 2).clamp(Duration::from_millis(10), Duration::from_secs(1)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        match pool.upgrade() {
            Some(p) => p.reap_once(),
            None => return,
        }
    }
}

/// SETTINGS_MAX_HEADER_LIST_SIZE for HTTP/2: room for every head the byte
/// and field limits let through (RFC 9113 §6.5.2 counts 32 bytes per field
/// besides the name and value).
fn h2_header_list_size(config: &BackendConfig) -> u32 {
    let bytes = config.max_response_head_bytes.saturating_add(
        config
            .max_response_headers
            .saturating_add(1)
            .saturating_mul(32),
    );
    u32::try_from(bytes).unwrap_or(u32::MAX)
}
