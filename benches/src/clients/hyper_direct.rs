//! hyper used directly: hyper-util's pooled legacy client on a two-worker
//! tokio runtime, as the hyper backend builds it (TCP_NODELAY, pool sized to
//! the requests in flight, 90 s idle timeout, Host set by the client), with
//! one task per request in flight.
//!
//! In the HTTP/2 workload there is no pool: one connection made with
//! `hyper::client::conn::http2` (prior knowledge, hyper's default settings)
//! on the first request, kept for every run, and one task per stream in
//! flight, each with its own clone of the connection's `SendRequest`. A
//! connection that closes fails the run rather than being replaced.

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, ACCEPT, CONTENT_LENGTH, USER_AGENT as UA};
use http::{Method, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use super::{
    check_length, check_sink_answer, check_status, check_version, upload_source, Protocol, Runner,
    Sample, PIECE, STALL, USER_AGENT,
};

type HttpClient = Client<HttpConnector, ReadBody>;

pub(crate) struct HyperDirect {
    runtime: Runtime,
    transport: Transport,
    in_flight: usize,
    protocol: Protocol,
}

/// How requests reach the server (the client boxed: it is ten times the
/// size of an HTTP/2 sender).
enum Transport {
    /// HTTP/1.1 through the pooled client.
    Pooled(Box<HttpClient>),
    /// HTTP/2 on one connection, opened on first use.
    Http2(Option<http2::SendRequest<ReadBody>>),
}

/// What one task sends its requests with.
#[derive(Clone)]
enum Sender {
    Pooled(Box<HttpClient>),
    Http2(http2::SendRequest<ReadBody>),
}

impl Sender {
    async fn send(&mut self, req: Request<ReadBody>) -> Result<Response<Incoming>, String> {
        match self {
            Sender::Pooled(client) => client.request(req).await.map_err(err),
            Sender::Http2(sender) => {
                // Waits while the server's stream limit is reached.
                sender.ready().await.map_err(err)?;
                sender.send_request(req).await.map_err(err)
            }
        }
    }
}

/// Opens the HTTP/2 connection to `uri`'s host and drives it on the runtime.
async fn connect_http2(uri: &Uri) -> Result<http2::SendRequest<ReadBody>, String> {
    let host = uri
        .host()
        .ok_or_else(|| format!("hyper: {uri} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((host, port)).await.map_err(err)?;
    tcp.set_nodelay(true).map_err(err)?;
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(err)?;
    tokio::spawn(async move {
        // Its end shows in the senders: their next request fails.
        let _ = connection.await;
    });
    Ok(sender)
}

/// A request body read from a `std::io::Read` in [`PIECE`]-sized frames, as
/// the hyper backend reads an upload; empty for GETs.
pub(crate) struct ReadBody {
    source: Option<std::io::Take<std::io::Repeat>>,
    remaining: u64,
}

impl ReadBody {
    pub(crate) fn empty() -> Self {
        ReadBody {
            source: None,
            remaining: 0,
        }
    }

    pub(crate) fn generated(len: u64) -> Self {
        ReadBody {
            source: Some(upload_source(len)),
            remaining: len,
        }
    }
}

impl Body for ReadBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        let Some(src) = this.source.as_mut() else {
            return Poll::Ready(None);
        };
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = this.remaining.min(PIECE as u64) as usize;
        let mut buf = BytesMut::zeroed(n);
        match src.read(&mut buf) {
            Ok(0) => Poll::Ready(Some(Err(std::io::ErrorKind::UnexpectedEof.into()))),
            Ok(got) => {
                buf.truncate(got);
                this.remaining -= got as u64;
                Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

fn err(e: impl std::fmt::Display) -> String {
    format!("hyper: {e}")
}

impl HyperDirect {
    pub(crate) fn new(in_flight: usize, protocol: Protocol) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("hyper-direct")
            .build()
            .map_err(err)?;
        let transport = match protocol {
            Protocol::Http1 => {
                let mut http = HttpConnector::new();
                http.set_nodelay(true);
                http.enforce_http(true);
                let client = Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .pool_max_idle_per_host(in_flight.max(1))
                    .pool_idle_timeout(Duration::from_secs(90))
                    .http09_responses(false)
                    .set_host(true)
                    .build(http);
                Transport::Pooled(Box::new(client))
            }
            Protocol::Http2PriorKnowledge => Transport::Http2(None),
        };
        Ok(HyperDirect {
            runtime,
            transport,
            in_flight: in_flight.max(1),
            protocol,
        })
    }

    /// A sender for the next requests: the pooled client, or the HTTP/2
    /// connection (opened now if it is not yet).
    fn sender(&mut self, uri: &Uri) -> Result<Sender, String> {
        match &mut self.transport {
            Transport::Pooled(client) => Ok(Sender::Pooled(client.clone())),
            Transport::Http2(Some(sender)) if sender.is_closed() => {
                Err("hyper: the HTTP/2 connection closed".into())
            }
            Transport::Http2(Some(sender)) => Ok(Sender::Http2(sender.clone())),
            Transport::Http2(slot) => {
                let sender = self.runtime.block_on(connect_http2(uri))?;
                *slot = Some(sender.clone());
                Ok(Sender::Http2(sender))
            }
        }
    }
}

fn request(method: Method, uri: &Uri, body: ReadBody) -> Result<Request<ReadBody>, String> {
    Request::builder()
        .method(method)
        .uri(uri.clone())
        .header(UA, HeaderValue::from_static(USER_AGENT))
        .header(ACCEPT, HeaderValue::from_static("*/*"))
        .body(body)
        .map_err(err)
}

/// Sends one request and drains the body; checks the version, returns the
/// status and the body bytes, keeping the first few (the `/sink` answer).
async fn exchange(
    sender: &mut Sender,
    req: Request<ReadBody>,
    (want, url): (Version, &str),
    keep: &mut Vec<u8>,
) -> Result<(u16, u64), String> {
    let response = sender.send(req).await?;
    check_version(response.version(), want, url)?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(err)?.into_data() {
            n += data.len() as u64;
            if keep.len() < 256 {
                keep.extend_from_slice(&data[..data.len().min(256)]);
            }
        }
    }
    Ok((status, n))
}

impl Runner for HyperDirect {
    fn requests(&mut self, url: &str, until: Instant) -> Result<Sample, String> {
        let uri: Uri = url.parse().map_err(err)?;
        let sender = self.sender(&uri)?;
        let want = self.protocol.version();
        let n = self.in_flight;
        let url = url.to_owned();
        self.runtime.block_on(async move {
            let mut tasks = JoinSet::new();
            for _ in 0..n {
                let (mut sender, uri, url) = (sender.clone(), uri.clone(), url.clone());
                tasks.spawn(async move {
                    let mut done = 0u64;
                    let mut keep = Vec::new();
                    loop {
                        let req = request(Method::GET, &uri, ReadBody::empty())?;
                        let (status, _) =
                            exchange(&mut sender, req, (want, &url), &mut keep).await?;
                        check_status(status, &url)?;
                        done += 1;
                        keep.clear();
                        if Instant::now() >= until {
                            return Ok::<u64, String>(done);
                        }
                    }
                });
            }
            let mut total = 0;
            let joined = tokio::time::timeout(
                until.saturating_duration_since(Instant::now()) + STALL,
                async {
                    while let Some(r) = tasks.join_next().await {
                        total += r.map_err(err)??;
                    }
                    Ok::<(), String>(())
                },
            )
            .await;
            joined.map_err(|_| "hyper: requests stalled".to_owned())??;
            Ok(Sample::requests(total))
        })
    }

    fn download(&mut self, url: &str, expected: u64) -> Result<Sample, String> {
        let uri: Uri = url.parse().map_err(err)?;
        let mut sender = self.sender(&uri)?;
        let want = self.protocol.version();
        let url = url.to_owned();
        self.runtime.block_on(async move {
            let req = request(Method::GET, &uri, ReadBody::empty())?;
            let (status, n) = exchange(&mut sender, req, (want, &url), &mut Vec::new()).await?;
            check_status(status, &url)?;
            check_length(n, expected)
        })
    }

    fn upload(&mut self, url: &str, len: u64) -> Result<Sample, String> {
        let uri: Uri = url.parse().map_err(err)?;
        let mut sender = self.sender(&uri)?;
        let want = self.protocol.version();
        let url = url.to_owned();
        self.runtime.block_on(async move {
            let mut req = request(Method::POST, &uri, ReadBody::generated(len))?;
            req.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(len));
            let mut keep = Vec::new();
            let (status, _) = exchange(&mut sender, req, (want, &url), &mut keep).await?;
            check_status(status, &url)?;
            check_sink_answer(&keep, len).map(Sample::transfer)
        })
    }
}
