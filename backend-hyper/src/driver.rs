//! The runtime the backend owns, the connector, and the task that runs one
//! exchange.
//!
//! Every exchange is one task on the backend's multi-thread tokio runtime. It
//! races the hyper exchange against the load's cancellation and total
//! timeout; losing the race drops hyper's futures, and hyper then closes that
//! connection instead of returning it to the pool half-read.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use handle_api::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use handle_api::http::Uri;
use handle_api::http::{HeaderMap, HeaderValue, StatusCode};
use handle_api::{
    BackendConfig, Error, ErrorKind, ExchangeSink, HostOverrides, Resolution, ResponseHead, Result,
    TimeoutPhase,
};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::dns::{GaiAddrs, GaiResolver, Name};
use hyper_util::client::legacy::connect::{
    capture_connection, CaptureConnection, HttpConnector, HttpInfo,
};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::Notify;
use tower_service::Service;

use crate::conn::{Activity, ConnMeta, Wire};
use crate::convert::{Prepared, Resend, UploadFailure, WireBody};
use crate::error::{self, ConnectFailure};

/// The hyper client every exchange of one backend shares (and its pool).
pub(crate) type HttpClient = Client<Connector, WireBody>;

tokio::task_local! {
    /// The connect timeout of the exchange whose task is asking for a
    /// connection. hyper-util's pool hands the connector only a `Uri`, but it
    /// calls the connector synchronously from inside the requesting task, so
    /// a task-local carries the per-request value there; the connector is
    /// shared by all requests, so its own fixed timeout could not.
    static CONNECT_TIMEOUT: Option<Duration>;
}

/// Builds the runtime the backend owns: two workers, so an application's
/// runtime (or its lack of one) never matters to the backend.
pub(crate) fn runtime() -> io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("rh-hyper")
        .build()
}

/// hyper's default read buffer limit (8 KiB + 100 × 4 KiB); raised only
/// for a head limit larger than it, so the head always fits.
const DEFAULT_READ_BUFFER: usize = 8192 + 4096 * 100;

/// Builds the client: pooled HTTP/1.1, no implicit policy.
pub(crate) fn client(config: &BackendConfig, runtime: Handle) -> (HttpClient, Arc<HostSlots>) {
    let mut http = HttpConnector::new_with_resolver(SystemResolver(GaiResolver::new()));
    http.set_nodelay(true);
    http.enforce_http(true);
    // Left unset on purpose: `Connector` applies each request's own timeout.
    http.set_connect_timeout(None);
    let connector = Connector {
        inner: http,
        resolve: Arc::new(config.resolve.clone()),
        max_head_bytes: config.max_response_head_bytes,
        slots: Arc::new(HostSlots {
            per_host: config.max_connections_per_host.max(1),
            hosts: std::sync::Mutex::new(std::collections::HashMap::new()),
        }),
    };
    let slots = connector.slots.clone();
    let client = Client::builder(RuntimeExecutor(runtime))
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(config.max_connections_per_host)
        .pool_idle_timeout(config.idle_timeout)
        .http09_responses(false)
        // The head limits: hyper fails a head with more fields than it has
        // room for, exactly; the byte limit is `Wire`'s, which counts to the
        // byte (hyper's own bound is its read buffer, which a read may
        // overfill), so the buffer only has to be large enough.
        .http1_max_buf_size(config.max_response_head_bytes.max(DEFAULT_READ_BUFFER))
        .http1_max_headers(config.max_response_headers)
        // RFC 9112 §5.2: a user agent unfolds obs-fold instead of failing;
        // `unfold` below turns hyper's raw continuation into spaces.
        .http1_allow_obsolete_multiline_headers_in_responses(true)
        // Host is the one header the contract leaves to the library.
        .set_host(true)
        .build(connector);
    (client, slots)
}

/// Spawns hyper's connection tasks on the backend's runtime through its
/// handle, which (unlike `tokio::spawn`) works from any thread, so a pooled
/// connection dropped outside the runtime never panics.
#[derive(Clone)]
struct RuntimeExecutor(Handle);

impl<F> hyper::rt::Executor<F> for RuntimeExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

/// The system resolver, with its failures tagged so error.rs can tell them
/// from connect failures.
#[derive(Clone)]
struct SystemResolver(GaiResolver);

impl Service<Name> for SystemResolver {
    type Response = GaiAddrs;
    type Error = ConnectFailure;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<GaiAddrs, ConnectFailure>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<(), ConnectFailure>> {
        self.0.poll_ready(cx).map_err(ConnectFailure::Resolve)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let fut = self.0.call(name);
        Box::pin(async move { fut.await.map_err(ConnectFailure::Resolve) })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `HttpConnector` behind the host overrides (curl's `--resolve`) and the
/// per-request connect timeout.
///
/// For an overridden name the inner connector is pointed at the IP literal;
/// the request's Host header and the pool key keep the original name, since
/// hyper-util derives both from the request, not from what we connect to.
#[derive(Clone)]
pub(crate) struct Connector {
    inner: HttpConnector<SystemResolver>,
    resolve: Arc<HostOverrides>,
    max_head_bytes: usize,
    pub(crate) slots: Arc<HostSlots>,
}

/// The most connections open at once per host:port, the backend's mapping of
/// `BackendConfig::max_connections_per_host` (curl's
/// CURLMOPT_MAX_HOST_CONNECTIONS). hyper-util's pool caps only idle
/// connections, and hands a finished connection back to the pool a moment
/// after the body ends; without this cap the next exchange could open a
/// seventh connection in that moment instead of waiting for the sixth.
pub(crate) struct HostSlots {
    per_host: usize,
    hosts: std::sync::Mutex<std::collections::HashMap<(String, u16), Arc<HostState>>>,
}

/// One host's connections and exchanges.
pub(crate) struct HostState {
    sem: Arc<tokio::sync::Semaphore>,
    open: std::sync::atomic::AtomicUsize,
    busy: std::sync::atomic::AtomicUsize,
    changed: Notify,
}

/// Counts an exchange as needing a connection of its host until dropped.
pub(crate) struct Busy(Arc<HostState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// An open connection's place among its host's; freed when it closes.
pub(crate) struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    host: Arc<HostState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.host
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.host.changed.notify_waiters();
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

/// How long a connect waits for a connection of its host that is open but
/// no longer busy to come back to hyper-util's pool.
const POOL_RETURN_WAIT: Duration = Duration::from_millis(500);

impl HostSlots {
    fn for_host(&self, host: &str, port: u16) -> Arc<HostState> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .entry((host.to_ascii_lowercase(), port))
            .or_insert_with(|| {
                Arc::new(HostState {
                    sem: Arc::new(tokio::sync::Semaphore::new(self.per_host)),
                    open: Default::default(),
                    busy: Default::default(),
                    changed: Notify::new(),
                })
            })
            .clone()
    }

    /// Marks an exchange to `host:port` as busy until the guard is dropped.
    pub(crate) fn busy(&self, host: &str, port: u16) -> Busy {
        let h = self.for_host(host, port);
        h.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Busy(h)
    }
}

impl HostState {
    /// Waits until this host may open one more connection.
    ///
    /// hyper-util hands a finished connection back to its pool from a task of
    /// its own, a moment after the body ended, and meanwhile races a new
    /// connect against the pool. While some open connection is not busy it is
    /// on its way back, so the connect waits for it (or for a close) rather
    /// than open another: the application's next load reuses the connection,
    /// as on curl and ureq. When the pool wins, this future runs on in the
    /// background and gives up instead of connecting.
    async fn acquire(self: Arc<Self>) -> std::result::Result<Slot, BoxError> {
        use std::sync::atomic::Ordering::SeqCst;
        let deadline = tokio::time::Instant::now() + POOL_RETURN_WAIT;
        loop {
            let changed = self.changed.notified();
            if self.busy.load(SeqCst) > self.open.load(SeqCst) {
                break;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err("a pooled connection served the request".into());
            }
        }
        let permit = self.sem.clone().acquire_owned().await?;
        self.open.fetch_add(1, SeqCst);
        Ok(Slot {
            _permit: permit,
            host: self,
        })
    }
}

impl Service<Uri> for Connector {
    type Response = TokioIo<Wire>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        // Outside an exchange's task (never, today) there is simply no limit.
        let timeout = CONNECT_TIMEOUT.try_with(|t| *t).ok().flatten();
        let host = dst.host().unwrap_or_default().to_owned();
        let port = dst.port_u16().unwrap_or(80);
        let resolution = self.resolve.lookup(&host, port);
        let inner = self.inner.clone();
        let max_head = self.max_head_bytes;
        let slots = self.slots.for_host(&host, port);
        Box::pin(async move {
            // Waits for a connection of this host to close; a pooled one that
            // comes back meanwhile wins hyper-util's race and serves the request.
            let slot = slots.acquire().await?;
            let connect = connect(inner, dst, host, port, resolution);
            let tcp = match timeout {
                Some(t) => tokio::time::timeout(t, connect)
                    .await
                    .map_err(|_| Box::new(ConnectFailure::Timeout(t)) as BoxError)?,
                None => connect.await,
            }?;
            Ok(TokioIo::new(
                Wire::new(tcp.into_inner(), max_head).with_slot(slot),
            ))
        })
    }
}

async fn connect(
    mut inner: HttpConnector<SystemResolver>,
    dst: Uri,
    host: String,
    port: u16,
    resolution: Resolution,
) -> std::result::Result<TokioIo<TcpStream>, BoxError> {
    let addrs = match resolution {
        Resolution::System => return call(&mut inner, dst).await,
        Resolution::NoAddress => return Err(Box::new(ConnectFailure::NoAddress { host, port })),
        Resolution::Addrs(addrs) => addrs,
    };
    // In the order given, as curl tries --resolve addresses.
    let mut last = None;
    for addr in addrs {
        match call(&mut inner, ip_uri(addr)?).await {
            Ok(io) => return Ok(io),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Box::new(ConnectFailure::NoAddress { host, port })))
}

async fn call(
    inner: &mut HttpConnector<SystemResolver>,
    dst: Uri,
) -> std::result::Result<TokioIo<TcpStream>, BoxError> {
    poll_fn(|cx| inner.poll_ready(cx)).await?;
    Ok(inner.call(dst).await?)
}

fn ip_uri(addr: SocketAddr) -> std::result::Result<Uri, BoxError> {
    // SocketAddr's Display brackets IPv6 literals, as an authority needs.
    Ok(Uri::builder()
        .scheme("http")
        .authority(addr.to_string())
        .path_and_query("/")
        .build()?)
}

/// Runs one exchange to its end and reports it through `sink`.
pub(crate) async fn run(
    client: HttpClient,
    slots: Arc<HostSlots>,
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
        timeout,
        connect_timeout,
        read_timeout,
        resend,
        upload_failure,
    } = prepared;
    // Busy until the body ended, so the connector knows a connection of this
    // host that is open but not busy is on its way back to the pool.
    let busy = slots.busy(
        request.uri().host().unwrap_or_default(),
        request.uri().port_u16().unwrap_or(80),
    );
    let activity = Activity::new();
    let outcome = {
        let exchange = exchange(
            &client,
            request,
            resend,
            connect_timeout,
            &upload_failure,
            &mut sink,
            start,
            &activity,
            read_timeout.is_some(),
        );
        let idle = async {
            match read_timeout {
                Some(limit) => activity.idle(limit).await,
                None => std::future::pending().await,
            }
        };
        let watched = async {
            tokio::select! {
                r = exchange => r,
                () = idle => Err(Error::timeout(TimeoutPhase::Idle)),
            }
        };
        let bounded = async move {
            match timeout {
                Some(t) => tokio::time::timeout(t, watched)
                    .await
                    .unwrap_or_else(|elapsed| Err(error::total_timeout(elapsed))),
                None => watched.await,
            }
        };
        tokio::select! {
            biased;
            () = cancel.notified() => Err(Error::cancelled()),
            r = bounded => r,
        }
    };
    drop(busy);
    match outcome {
        Ok(()) => sink.finish(),
        // After a cancel, whatever hyper said while being torn down is noise.
        Err(_) if sink.is_cancelled() => sink.fail(Error::cancelled()),
        Err(e) => sink.fail(e),
    }
}

/// The connection metadata the pool attached to a request, once it picked a connection.
fn conn_meta(capture: &CaptureConnection) -> Option<ConnMeta> {
    let connected = capture.connection_metadata();
    let mut ext = handle_api::http::Extensions::new();
    connected.as_ref()?.get_extras(&mut ext);
    ext.get::<ConnMeta>().cloned()
}

/// Sends one request and waits for its head. The exchange's `activity` is
/// attached to the connection the pool picks as soon as it is picked, so
/// the idle clock runs from there.
async fn send(
    client: &HttpClient,
    mut request: hyper::Request<WireBody>,
    connect_timeout: Option<Duration>,
    activity: &Arc<Activity>,
    idle: bool,
) -> (
    std::result::Result<hyper::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>,
    CaptureConnection,
    Option<ConnMeta>,
) {
    let capture = capture_connection(&mut request);
    let response = CONNECT_TIMEOUT.scope(connect_timeout, client.request(request));
    tokio::pin!(response);
    let mut meta = None;
    let result = loop {
        tokio::select! {
            biased;
            r = &mut response => break r,
            // hyper-util sets the metadata before it writes the request.
            // Only an idle timeout needs the clock started before the head.
            () = tokio::time::sleep(Duration::from_millis(2)), if idle && meta.is_none() => {
                meta = conn_meta(&capture);
                if let Some(m) = &meta {
                    m.attach(activity);
                    activity.arm();
                }
            }
        }
    };
    if meta.is_none() {
        meta = conn_meta(&capture);
        if let Some(m) = &meta {
            m.attach(activity);
            activity.arm();
        }
    }
    (result, capture, meta)
}

#[allow(clippy::too_many_arguments)]
async fn exchange(
    client: &HttpClient,
    request: hyper::Request<WireBody>,
    resend: Option<Resend>,
    connect_timeout: Option<Duration>,
    upload_failure: &UploadFailure,
    sink: &mut ExchangeSink,
    start: Instant,
    activity: &Arc<Activity>,
    idle: bool,
) -> Result<()> {
    let (mut result, mut capture, mut meta) =
        send(client, request, connect_timeout, activity, idle).await;
    if result.is_err() && meta.as_ref().is_some_and(ConnMeta::stale) {
        // The keep-alive race: the reused connection died before any byte
        // of the response. A request handle-api allows to is sent once more,
        // on another connection; any other fails without being sent again.
        let Some(resend) = resend else {
            return Err(error::stale_connection());
        };
        (result, capture, meta) =
            send(client, resend.request(), connect_timeout, activity, idle).await;
        if result.is_err() && meta.as_ref().is_some_and(ConnMeta::stale) {
            return Err(error::stale_connection());
        }
    }
    let _ = meta;
    let response = result.map_err(|e| error::request(e, upload_failure.take()))?;
    let (mut parts, mut body) = response.into_parts();
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(Error::new(
            ErrorKind::Protocol,
            "a 101 (Switching Protocols) answered a request that asked for no upgrade",
        ));
    }
    if parts.headers.contains_key(TRANSFER_ENCODING) && parts.headers.contains_key(CONTENT_LENGTH) {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3), but a
        // message with both may be smuggling: its connection is not reused.
        if let Some(c) = capture.connection_metadata().as_ref() {
            c.poison();
        }
    }
    drop(capture);
    let chunked = parts.headers.contains_key(TRANSFER_ENCODING);
    unfold(&mut parts.headers);

    let mut head = ResponseHead::new(parts.status, parts.version, parts.headers);
    // hyper keeps the reason phrase only when it differs from the canonical one.
    head.reason = parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
    head.remote_addr = parts
        .extensions
        .get::<HttpInfo>()
        .map(HttpInfo::remote_addr);
    // The head is parsed as soon as its last byte is in, so this is the
    // closest honest figure hyper allows.
    head.timing.first_byte = Some(start.elapsed());
    sink.response(head);

    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            error::body(
                e,
                sink.expected_len(),
                sink.received(),
                chunked,
                upload_failure.take(),
            )
        })?;
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
