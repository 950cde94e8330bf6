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

use handle_api::http::Uri;
use handle_api::{
    BackendConfig, Error, ExchangeSink, HostOverrides, Resolution, ResponseHead, Result,
};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::dns::{GaiAddrs, GaiResolver, Name};
use hyper_util::client::legacy::connect::{HttpConnector, HttpInfo};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::Notify;
use tower_service::Service;

use crate::convert::{Prepared, UploadFailure, WireBody};
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

/// Builds the client: pooled HTTP/1.1, no implicit policy.
pub(crate) fn client(config: &BackendConfig, runtime: Handle) -> HttpClient {
    let mut http = HttpConnector::new_with_resolver(SystemResolver(GaiResolver::new()));
    http.set_nodelay(true);
    http.enforce_http(true);
    // Left unset on purpose: `Connector` applies each request's own timeout.
    http.set_connect_timeout(None);
    let connector = Connector {
        inner: http,
        resolve: Arc::new(config.resolve.clone()),
    };
    Client::builder(RuntimeExecutor(runtime))
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(config.max_connections_per_host)
        .pool_idle_timeout(config.idle_timeout)
        .http09_responses(false)
        // Host is the one header the contract leaves to the library.
        .set_host(true)
        .build(connector)
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
}

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
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
        Box::pin(async move {
            let connect = connect(inner, dst, host, port, resolution);
            match timeout {
                Some(t) => tokio::time::timeout(t, connect)
                    .await
                    .map_err(|_| Box::new(ConnectFailure::Timeout(t)) as BoxError)?,
                None => connect.await,
            }
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
pub(crate) async fn run(client: HttpClient, prepared: Prepared, mut sink: ExchangeSink) {
    let start = Instant::now();
    let cancel = Arc::new(Notify::new());
    let notify = cancel.clone();
    // notify_one keeps a permit, so a cancel before the select below still counts.
    sink.on_cancel(move || notify.notify_one());

    let Prepared {
        request,
        timeout,
        connect_timeout,
        upload_failure,
    } = prepared;
    let outcome = {
        let exchange = exchange(
            &client,
            request,
            connect_timeout,
            &upload_failure,
            &mut sink,
            start,
        );
        let bounded = async move {
            match timeout {
                Some(t) => tokio::time::timeout(t, exchange)
                    .await
                    .unwrap_or_else(|elapsed| Err(error::total_timeout(elapsed))),
                None => exchange.await,
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

async fn exchange(
    client: &HttpClient,
    request: hyper::Request<WireBody>,
    connect_timeout: Option<Duration>,
    upload_failure: &UploadFailure,
    sink: &mut ExchangeSink,
    start: Instant,
) -> Result<()> {
    let response = CONNECT_TIMEOUT
        .scope(connect_timeout, client.request(request))
        .await
        .map_err(|e| error::request(e, upload_failure.take()))?;
    let (parts, mut body) = response.into_parts();

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
                upload_failure.take(),
            )
        })?;
        // Trailers are not part of the contract's body.
        if let Ok(data) = frame.into_data() {
            // Awaiting here is the backpressure: hyper reads no further
            // until the application has taken enough.
            sink.data(data).await?;
        }
    }
    Ok(())
}
