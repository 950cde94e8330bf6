//! [`WireRequest`] → `http::Request<WireBody>` for hyper.
//!
//! The framing header is written here, explicitly, rather than left to
//! hyper: hyper drops an unknown-length body on GET, HEAD and CONNECT and
//! omits `Content-Length: 0` for an empty one, and the contract wants the
//! framing handle-api decided, for every method alike.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use handle_api::http::header::{
    HeaderValue, CONTENT_LENGTH, HOST, PROXY_AUTHORIZATION, TRANSFER_ENCODING,
};
use handle_api::http::{HeaderMap, Request, Uri, Version};
use handle_api::{
    BodyFraming, Error, ErrorKind, HttpVersionPref, ProxyScheme, Result, UploadBody, WireRequest,
};
use http_body::{Body, Frame, SizeHint};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::conn::Activity;
use crate::error::UploadAborted;
use crate::pool::{Hop, Key, Mode, Origin, Via};

/// Bytes read from an [`UploadBody`] at a time. Each piece crosses from the
/// reading thread to the runtime, a wake-up when the runtime waits for it,
/// so pieces are large: a quarter of what one load may buffer downwards
/// ([`handle_api::BODY_BUFFER_BYTES`]).
const UPLOAD_PIECE: usize = 256 * 1024;

/// Pieces read ahead of the socket: with [`UPLOAD_PIECE`], at most 768 KiB of
/// an upload of any size waits here (and one piece is being read).
const UPLOAD_QUEUE: usize = 3;

/// Where the upload reader leaves its `io::Error`, so the load can fail with
/// it rather than with hyper's generic "body write aborted".
#[derive(Clone, Default)]
pub(crate) struct UploadFailure(Arc<Mutex<Option<io::Error>>>);

impl UploadFailure {
    fn set(&self, e: io::Error) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    }

    /// The read error, if the upload failed.
    pub(crate) fn take(&self) -> Option<io::Error> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// One exchange, ready for the pool and hyper.
pub(crate) struct Prepared {
    /// The request hyper sends, with the full url as its target until
    /// [`Target::apply`] shapes it for the connection it goes out on.
    pub(crate) request: Request<WireBody>,
    /// Which connections may carry it.
    pub(crate) key: Key,
    /// How the request target and Host look on each kind of connection.
    pub(crate) target: Target,
    /// Total timeout, from start to the end of the body.
    pub(crate) timeout: Option<Duration>,
    /// Timeout for establishing a new connection (TCP, proxy, TLS).
    pub(crate) connect_timeout: Option<Duration>,
    /// Idle timeout once connected.
    pub(crate) read_timeout: Option<Duration>,
    /// What it takes to send the request once more after the keep-alive
    /// race, when handle-api allows that for this request.
    pub(crate) resend: Option<Resend>,
    /// Filled when the request body fails to read.
    pub(crate) upload_failure: UploadFailure,
    /// The exchange's idle clock, which the request body restarts too.
    pub(crate) activity: Arc<Activity>,
}

/// Checks what this backend can honour and builds the hyper request.
/// `runtime` runs the blocking reader of a streamed body.
pub(crate) fn prepare(request: WireRequest, runtime: &Handle) -> Result<Prepared> {
    let origin = match request.url.scheme() {
        "http" | "https" => Origin::of(&request.url)
            .ok_or_else(|| Error::new(ErrorKind::InvalidRequest, "the url has no host"))?,
        other => {
            return Err(Error::new(
                ErrorKind::UnsupportedScheme,
                format!("the hyper backend does not handle {other}: urls"),
            ))
        }
    };
    let uri = uri(&request.url)?;
    let may_retry = request.may_retry_on_stale_connection();

    let mut headers = request.headers;
    headers.remove(CONTENT_LENGTH);
    headers.remove(TRANSFER_ENCODING);
    match request.framing {
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
        }
        BodyFraming::Chunked => {
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
    }

    let mut mode = match (request.http_version, origin.tls) {
        (HttpVersionPref::Http1, _) | (HttpVersionPref::Http2, false) => Mode::Http1,
        (HttpVersionPref::Http2 | HttpVersionPref::Http2PriorKnowledge, true) => Mode::Alpn,
        (HttpVersionPref::Http2PriorKnowledge, false) => Mode::PriorKnowledge,
    };
    let via = match &request.proxy {
        None => Via::Direct(origin),
        Some(proxy) => {
            let hop = Hop {
                scheme: proxy.scheme(),
                host: proxy.host().to_ascii_lowercase(),
                port: proxy.port(),
                credentials: proxy
                    .credentials()
                    .map(|c| (c.username.clone(), c.password.clone())),
                authorization: proxy.basic_authorization(),
            };
            match proxy.scheme() {
                ProxyScheme::Http if origin.tls => Via::Tunnel(hop, origin),
                ProxyScheme::Http => {
                    // Forwarded: the credentials ride on every request, and
                    // the connection is the proxy's, shared by all origins.
                    if let Some(auth) = hop.authorization {
                        headers.insert(PROXY_AUTHORIZATION, auth);
                    }
                    mode = Mode::Http1;
                    Via::Forward(Hop {
                        credentials: None,
                        authorization: None,
                        ..hop
                    })
                }
                ProxyScheme::Socks5 | ProxyScheme::Socks5h => Via::Socks(hop, origin),
                other => {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!("the hyper backend cannot use {other:?} proxies"),
                    ))
                }
            }
        }
    };
    let key = Key { via, mode };
    let target = Target::new(&uri, &headers)?;

    let resend = may_retry.then(|| Resend {
        method: request.method.clone(),
        uri: uri.clone(),
        headers: headers.clone(),
    });
    let upload_failure = UploadFailure::default();
    let activity = Activity::new();
    let body = WireBody::new(
        request.body,
        request.framing,
        runtime.clone(),
        upload_failure.clone(),
        activity.clone(),
    );
    let mut req = Request::new(body);
    *req.method_mut() = request.method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Ok(Prepared {
        request: req,
        key,
        target,
        timeout: request.timeout,
        connect_timeout: request.connect_timeout,
        read_timeout: request.read_timeout,
        resend,
        upload_failure,
        activity,
    })
}

/// The request target and Host header for each kind of connection: HTTP/1.1
/// sends the origin form (`/path?q`) with Host, or the absolute form to a
/// forwarding proxy; HTTP/2 takes scheme and authority from the full url
/// (`:scheme`, `:authority`) and sends no Host.
pub(crate) struct Target {
    full: Uri,
    origin_form: Uri,
    /// The Host value, unless the application gave its own.
    host: Option<HeaderValue>,
}

impl Target {
    fn new(full: &Uri, headers: &HeaderMap) -> Result<Target> {
        let origin_form = match full.path_and_query() {
            Some(p) => Uri::from(p.clone()),
            None => Uri::from_static("/"),
        };
        let host = if headers.contains_key(HOST) {
            None
        } else {
            // The authority of the url without userinfo: the host as the url
            // serialises it (IPv6 literals bracketed) and the port unless it
            // is the scheme's default, which Host then leaves out.
            let authority = full.authority().map(|a| a.as_str()).unwrap_or_default();
            Some(HeaderValue::from_str(authority).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidRequest,
                    format!("the host cannot be a Host header: {e}"),
                )
                .with_source(e)
            })?)
        };
        Ok(Target {
            full: full.clone(),
            origin_form,
            host,
        })
    }

    /// Shapes `request` for a connection that is HTTP/2 (`h2`) or goes to
    /// a forwarding proxy (`forwarded`).
    pub(crate) fn apply(&self, request: &mut Request<WireBody>, h2: bool, forwarded: bool) {
        if h2 {
            *request.uri_mut() = self.full.clone();
            *request.version_mut() = Version::HTTP_2;
            if self.host.is_some() {
                request.headers_mut().remove(HOST);
            }
            return;
        }
        *request.uri_mut() = if forwarded {
            self.full.clone()
        } else {
            self.origin_form.clone()
        };
        *request.version_mut() = Version::HTTP_11;
        if let Some(host) = &self.host {
            if !request.headers().contains_key(HOST) {
                // Appended after the application's headers, as hyper-util's
                // client did.
                request.headers_mut().insert(HOST, host.clone());
            }
        }
    }
}

/// A bodyless request, kept to be sent once more.
pub(crate) struct Resend {
    method: handle_api::http::Method,
    uri: Uri,
    headers: handle_api::http::HeaderMap,
}

impl Resend {
    pub(crate) fn request(self) -> Request<WireBody> {
        let mut req = Request::new(WireBody {
            kind: Kind::Empty,
            activity: None,
        });
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = self.headers;
        req
    }
}

/// The url as an `http::Uri`, without userinfo and fragment: credentials
/// travel in headers that handle-api writes, never in the request target.
fn uri(url: &url::Url) -> Result<Uri> {
    let parse = |s: &str| {
        s.parse::<Uri>().map_err(|e| {
            Error::new(
                ErrorKind::InvalidRequest,
                format!("hyper cannot send this url: {e}"),
            )
            .with_source(e)
        })
    };
    if url.username().is_empty() && url.password().is_none() && url.fragment().is_none() {
        // The common case, without a copy of the url re-serialised three times.
        return parse(url.as_str());
    }
    let mut url = url.clone();
    // Neither can fail for an http url with a host, which was checked above.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_fragment(None);
    parse(url.as_str())
}

/// The request body as hyper pulls it.
pub(crate) struct WireBody {
    kind: Kind,
    /// Restarted by every piece hyper takes: over HTTP/2 nothing else tells
    /// this exchange's bytes from the other streams'.
    activity: Option<Arc<Activity>>,
}

enum Kind {
    /// No body: hyper sends no framing header and no bytes.
    Empty,
    /// Bytes already in memory, handed over without copying.
    Memory {
        data: Option<Bytes>,
        upload: UploadBody,
    },
    /// Read from the blocking [`UploadBody`] on a blocking thread.
    Stream(Stream),
}

struct Stream {
    /// Bytes the body will yield, when known.
    len: Option<u64>,
    /// Bytes handed to hyper.
    sent: u64,
    /// What the reader needs; taken on the first poll so nothing is read
    /// before a connection wants the body.
    pending: Option<(UploadBody, Handle, UploadFailure)>,
    rx: Option<mpsc::Receiver<std::result::Result<Bytes, UploadAborted>>>,
}

impl WireBody {
    fn new(
        upload: UploadBody,
        framing: BodyFraming,
        runtime: Handle,
        failure: UploadFailure,
        activity: Arc<Activity>,
    ) -> Self {
        let kind = match framing {
            // An empty POST still says `Content-Length: 0`, but from the
            // header `prepare` wrote: hyper writes none for an ended body.
            _ if upload.is_empty() => Kind::Empty,
            BodyFraming::None => Kind::Empty,
            BodyFraming::Length(_) | BodyFraming::Chunked => match upload.as_bytes().cloned() {
                Some(data) => Kind::Memory {
                    data: (!data.is_empty()).then_some(data),
                    upload,
                },
                None => Kind::Stream(Stream {
                    len: match framing {
                        BodyFraming::Length(n) => Some(n),
                        _ => None,
                    },
                    sent: 0,
                    pending: Some((upload, runtime, failure)),
                    rx: None,
                }),
            },
        };
        WireBody {
            kind,
            activity: Some(activity),
        }
    }
}

impl Body for WireBody {
    type Data = Bytes;
    type Error = UploadAborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, UploadAborted>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Memory { data, upload } => match data.take() {
                Some(d) => {
                    // Progress counts what hyper took, not what the application gave.
                    upload.mark_sent();
                    Poll::Ready(Some(Ok(Frame::data(d))))
                }
                None => Poll::Ready(None),
            },
            Kind::Stream(s) => s.poll_frame(cx),
        };
        if let (Poll::Ready(Some(Ok(_))), Some(a)) = (&polled, &this.activity) {
            a.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Memory { data, .. } => data.is_none(),
            // A zero-length stream is still polled once, so that a reader
            // that yields bytes after all is caught.
            Kind::Stream(s) => s.pending.is_none() && s.rx.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Memory { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Stream(s) => match s.len {
                Some(n) => SizeHint::with_exact(n.saturating_sub(s.sent)),
                None => SizeHint::default(),
            },
        }
    }
}

impl Stream {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, UploadAborted>>> {
        if let Some((upload, runtime, failure)) = self.pending.take() {
            let (tx, rx) = mpsc::channel(UPLOAD_QUEUE);
            // The reader blocks (files, pipes, application streams), so it
            // gets a blocking thread; the bounded channel is the backpressure.
            runtime.spawn_blocking(move || pump(upload, &tx, &failure));
            self.rx = Some(rx);
        }
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(piece))) => {
                self.sent += piece.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(piece))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.rx = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.rx = None;
                Poll::Ready(None)
            }
        }
    }
}

/// Reads `upload` in pieces into `tx` until it ends, fails, or hyper stops
/// wanting it (the receiver is gone after a cancel, a timeout or an error).
fn pump(
    mut upload: UploadBody,
    tx: &mpsc::Sender<std::result::Result<Bytes, UploadAborted>>,
    failure: &UploadFailure,
) {
    let len = upload.len();
    let fail = |e: io::Error| {
        failure.set(e);
        let _ = tx.blocking_send(Err(UploadAborted));
    };
    // Pieces are cut from one buffer that is taken back whole once hyper
    // has dropped every piece cut from it (`BytesMut` reclaims a buffer it
    // alone holds), so a long upload reuses the same memory instead of
    // handing the allocator a fresh piece, and the kernel fresh pages, for
    // every read.
    let mut buf = BytesMut::with_capacity(UPLOAD_PIECE * (UPLOAD_QUEUE + 1));
    loop {
        buf.resize(UPLOAD_PIECE, 0);
        let n = match read(&mut upload, &mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => return fail(e),
        };
        buf.truncate(n);
        let piece = buf.split();
        let last = len == Some(upload.sent());
        if last {
            // hyper stops polling once Content-Length bytes went out, so a
            // stream longer than declared must be caught before the last
            // piece leaves: UploadBody fails this probe read if it is.
            if let Err(e) = read(&mut upload, &mut [0u8; 1]) {
                return fail(e);
            }
        }
        if tx.blocking_send(Ok(piece.freeze())).is_err() || last {
            return;
        }
    }
}

fn read(upload: &mut UploadBody, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match upload.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Host value as the url crate spells the host and port.
    fn host_of(url: &str) -> String {
        let url = url::Url::parse(url).unwrap();
        let host = url.host_str().unwrap().to_owned();
        match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }

    #[test]
    fn host_header_and_target_follow_the_url() {
        for url in [
            "http://example.test/a?b=c#frag",
            "http://Example.TEST:80/",
            "http://example.test:8080/x",
            "https://example.test:443/",
            "https://user:pw@example.test:8443/p",
            "http://127.0.0.1:5000/",
            "http://[::1]:8080/",
            "http://[::1]/",
            "http://xn--bcher-kva.test/",
            "http://b\u{fc}cher.test:81/",
        ] {
            let parsed = url::Url::parse(url).unwrap();
            let full = uri(&parsed).unwrap();
            let target = Target::new(&full, &HeaderMap::new()).unwrap();
            let host = target.host.unwrap();
            assert_eq!(host.to_str().unwrap(), host_of(url), "{url}");
            assert!(!full.to_string().contains('#'), "{url}");
            assert!(!full.to_string().contains('@'), "{url}");
        }
    }
}
