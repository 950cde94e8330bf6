//! The benchmark server: hyper 1.x on a tokio runtime of its own, on
//! 127.0.0.1 with a free port, speaking HTTP/1.1 and cleartext HTTP/2
//! (prior knowledge: a connection that opens with the HTTP/2 preface) on the
//! same port, as hyper-util's `auto` connection builder tells them apart.
//!
//! Routes (any other path is 404):
//! - `GET /small`: a 13-byte body with Content-Length (the latency and
//!   throughput workloads).
//! - `GET /bytes/N`: N bytes with Content-Length.
//! - `GET /chunked/N`: N bytes with chunked transfer coding.
//! - `/sink` (any method): reads the request body and answers `{"len":N}`.
//!
//! Bodies are sent from one static block, so the server neither allocates
//! nor copies per byte: what limits a download is the client.
//!
//! The server counts the connections it accepts and the requests it served
//! over HTTP/2 ([`BenchServer::connections_accepted`],
//! [`BenchServer::http2_requests`]): the harness checks with them that an
//! HTTP/2 client really multiplexed all its streams on one connection.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

/// The body of `/small`.
pub const SMALL_BODY: &[u8] = b"Hello, world!";

/// Bytes per frame of a large body.
const BLOCK: usize = 256 * 1024;
static BLOCK_BYTES: [u8; BLOCK] = [b'x'; BLOCK];

/// The largest body `/bytes/N` and `/chunked/N` serve (64 GiB).
const MAX_BODY: u64 = 64 << 30;

/// A running benchmark server. Dropping it stops it.
pub struct BenchServer {
    addr: SocketAddr,
    runtime: Option<Runtime>,
    counters: Arc<Counters>,
}

/// What the server counts. Relaxed atomics: one add per connection, and one
/// per HTTP/2 request only, so the HTTP/1.1 workloads pay nothing per request.
#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    http2_requests: AtomicU64,
}

impl BenchServer {
    /// Starts the server on a free port with `threads` tokio worker threads (at least 1).
    pub fn start(threads: usize) -> io::Result<BenchServer> {
        Self::start_on(0, threads)
    }

    /// Starts the server on 127.0.0.1:`port` (0 picks a free one).
    pub fn start_on(port: u16, threads: usize) -> io::Result<BenchServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .thread_name("bench-server")
            .build()?;
        let listener = runtime.block_on(TcpListener::bind(("127.0.0.1", port)))?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        runtime.spawn(accept_loop(listener, counters.clone()));
        Ok(BenchServer {
            addr,
            runtime: Some(runtime),
            counters,
        })
    }

    /// Connections accepted since the server started.
    pub fn connections_accepted(&self) -> u64 {
        self.counters.connections.load(Ordering::Relaxed)
    }

    /// Requests received over HTTP/2 since the server started.
    pub fn http2_requests(&self) -> u64 {
        self.counters.http2_requests.load(Ordering::Relaxed)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for BenchServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchServer")
            .field("addr", &self.addr)
            .finish()
    }
}

/// The connection builder: HTTP/1.1 as before (keep-alive, vectored
/// writes) and HTTP/2 with hyper's defaults (200 concurrent streams, 1 MiB
/// windows), told apart by the first bytes a client sends.
fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true).writev(true);
    builder
}

async fn accept_loop(listener: TcpListener, counters: Arc<Counters>) {
    let builder = Arc::new(builder());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            // Out of descriptors or a reset before accept: keep serving the others.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                continue;
            }
        };
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (builder, counters) = (builder.clone(), counters.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                if req.version() == Version::HTTP_2 {
                    counters.http2_requests.fetch_add(1, Ordering::Relaxed);
                }
                route(req)
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(req: Request<Incoming>) -> Result<Response<ServerBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let response = if path == "/sink" {
        sink(req).await
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        status(StatusCode::METHOD_NOT_ALLOWED)
    } else if path == "/small" {
        Response::new(ServerBody::bytes(Bytes::from_static(SMALL_BODY)))
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        large(n, false)
    } else if let Some(n) = path.strip_prefix("/chunked/") {
        large(n, true)
    } else {
        status(StatusCode::NOT_FOUND)
    };
    Ok(response)
}

fn status(code: StatusCode) -> Response<ServerBody> {
    let mut r = Response::new(ServerBody::bytes(Bytes::from_static(
        code.canonical_reason().unwrap_or("error").as_bytes(),
    )));
    *r.status_mut() = code;
    r
}

fn large(len: &str, chunked: bool) -> Response<ServerBody> {
    match len.parse::<u64>() {
        Ok(n) if n <= MAX_BODY => {
            let mut r = Response::new(ServerBody::Stream {
                remaining: n,
                chunked,
            });
            if !chunked {
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, header::HeaderValue::from(n));
            }
            r
        }
        _ => status(StatusCode::BAD_REQUEST),
    }
}

async fn sink(req: Request<Incoming>) -> Response<ServerBody> {
    let mut body = req.into_body();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    len += d.len() as u64;
                }
            }
            Err(_) => return status(StatusCode::BAD_REQUEST),
        }
    }
    let mut r = Response::new(ServerBody::bytes(Bytes::from(format!("{{\"len\":{len}}}"))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A response body: one in-memory piece, or `remaining` bytes sent in
/// [`BLOCK`]-sized frames of a static block (with a length, or chunked).
pub(crate) enum ServerBody {
    Bytes(Option<Bytes>),
    Stream { remaining: u64, chunked: bool },
}

impl ServerBody {
    fn bytes(b: Bytes) -> Self {
        ServerBody::Bytes(Some(b))
    }
}

impl Body for ServerBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ServerBody::Bytes(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ServerBody::Stream { remaining, .. } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let n = (*remaining).min(BLOCK as u64) as usize;
                *remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&BLOCK_BYTES[..n])))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ServerBody::Bytes(b) => b.is_none(),
            ServerBody::Stream { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ServerBody::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            // No exact hint: hyper then sends the body chunked.
            ServerBody::Stream {
                chunked: true,
                remaining,
            } => {
                let mut h = SizeHint::new();
                h.set_lower(*remaining);
                h
            }
            ServerBody::Stream { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}
