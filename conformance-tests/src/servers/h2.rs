//! The HTTP/2 server: hyper's server on a small tokio runtime it owns.
//!
//! Over TLS it offers ALPN `h2` and `http/1.1` and speaks what was agreed;
//! in cleartext it takes HTTP/1.1 and HTTP/2 with prior knowledge on the
//! same port (told apart by the HTTP/2 connection preface). It counts the
//! connections it accepted and records, per request, the protocol version,
//! method, path and headers.
//!
//! Routes:
//! - `/echo` any method: a JSON description of the request, its version included.
//! - `/bytes/N`: N bytes of [`body_pattern`].
//! - `/slow/MS`: answers after MS milliseconds, so concurrent loads overlap.
//! - `/headers [NAME=VALUE…]`: a 200 that carries each given header, in order.
//! - `/status/N`: status N with a short body (none for 204 and 304).

use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

use super::origin::body_pattern;
use super::tls::{pki, CertKind, ClientAuth, ALPN_H2, ALPN_HTTP11};

/// The largest `/bytes/N` body, so a typo cannot exhaust memory.
const MAX_BYTES: usize = 64 << 20;

/// What the server received for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2Request {
    /// `HTTP/2`, `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// The method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The authority (`:authority`, or Host for HTTP/1.1).
    pub authority: Option<String>,
    /// Header fields in received order, names lower case.
    pub headers: Vec<(String, String)>,
    /// Body bytes received.
    pub body_len: u64,
    /// Which connection (0, 1, …) carried it.
    pub connection: usize,
}

#[derive(Default)]
struct State {
    connections: AtomicUsize,
    requests: Mutex<Vec<H2Request>>,
    alpn: Mutex<Vec<Option<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running HTTP/2 server; it stops when dropped.
pub struct H2Server {
    addr: SocketAddr,
    tls: bool,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for H2Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Server")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl H2Server {
    /// Starts a server on 127.0.0.1 with a free port, over TLS with `kind`'s
    /// certificate, offering ALPN `h2` then `http/1.1`.
    pub fn start_tls(kind: CertKind) -> Result<H2Server, String> {
        let config = pki()?.server_config(kind, &[ALPN_H2, ALPN_HTTP11], ClientAuth::None)?;
        Self::start(Some(config)).map_err(|e| format!("HTTP/2 server did not start: {e}"))
    }

    /// Starts a cleartext server on 127.0.0.1 with a free port, taking
    /// HTTP/1.1 and HTTP/2 with prior knowledge.
    pub fn start_cleartext() -> Result<H2Server, String> {
        Self::start(None).map_err(|e| format!("HTTP/2 server did not start: {e}"))
    }

    fn start(tls: Option<Arc<ServerConfig>>) -> io::Result<H2Server> {
        let std_listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = std_listener.local_addr()?;
        std_listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("h2-server")
            .enable_all()
            .build()?;
        let state = Arc::new(State::default());
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        let is_tls = tls.is_some();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let st = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    // Out of descriptors, say: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let index = st.connections.fetch_add(1, Ordering::SeqCst);
                let (st, acceptor) = (st.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(TokioIo::new(sock), None, index, st).await,
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(sock).await else {
                                lock(&st.alpn).push(None);
                                return;
                            };
                            let alpn = tls
                                .get_ref()
                                .1
                                .alpn_protocol()
                                .map(|p| String::from_utf8_lossy(p).into_owned());
                            lock(&st.alpn).push(alpn.clone());
                            serve(TokioIo::new(tls), alpn, index, st).await
                        }
                    }
                });
            }
        });
        Ok(H2Server {
            addr,
            tls: is_tls,
            state,
            runtime: Some(runtime),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<H2Request> {
        lock(&self.state.requests).clone()
    }

    /// The ALPN protocol agreed on each TLS connection (`None` for none, or
    /// for a failed handshake), in order of handshake.
    pub fn alpn(&self) -> Vec<Option<String>> {
        lock(&self.state.alpn).clone()
    }
}

impl Drop for H2Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Serves one connection with the protocol ALPN agreed on, or either
/// protocol when nothing was negotiated.
async fn serve<I>(io: I, alpn: Option<String>, index: usize, state: Arc<State>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No Date header: traces compare response headers across backends.
    builder
        .http1()
        .timer(TokioTimer::new())
        .auto_date_header(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .auto_date_header(false);
    let builder = match alpn.as_deref() {
        Some("h2") => builder.http2_only(),
        Some("http/1.1") => builder.http1_only(),
        _ => builder,
    };
    let service = service_fn(move |req| handle(req, index, state.clone()));
    let _ = builder.serve_connection(io, service).await;
}

fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn response(status: u16, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

async fn handle(
    req: Request<Incoming>,
    connection: usize,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(response(400, "text/plain", b"bad body\n".to_vec())),
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    let record = H2Request {
        version: version_name(parts.version).to_owned(),
        method: parts.method.as_str().to_owned(),
        path: path.clone(),
        authority,
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len: body.len() as u64,
        connection,
    };
    lock(&state.requests).push(record.clone());
    let (route, query) = path.split_once('?').unwrap_or((&path, ""));
    let segs: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    let resp = match segs.as_slice() {
        ["echo"] => {
            let json = echo_json(&record, &body);
            let out = serde_json::to_vec(&json).unwrap_or_default();
            response(200, "application/json", out)
        }
        ["bytes", n] => match n.parse::<usize>() {
            Ok(n) if n <= MAX_BYTES => response(200, "application/octet-stream", body_pattern(n)),
            _ => response(400, "text/plain", b"bad length\n".to_vec()),
        },
        ["slow", ms] => {
            let ms = ms.parse::<u64>().unwrap_or(0).min(60_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            response(200, "text/plain", b"slow\n".to_vec())
        }
        ["status", code] => {
            let code = code.parse::<u16>().unwrap_or(400);
            if code == 204 || code == 304 {
                response(code, "text/plain", Vec::new())
            } else {
                response(code, "text/plain", format!("status {code}\n").into_bytes())
            }
        }
        ["headers"] => {
            let mut r = response(200, "text/plain", b"headers\n".to_vec());
            for (n, v) in url::form_urlencoded::parse(query.as_bytes()) {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(n.as_bytes()),
                    http::HeaderValue::from_str(&v),
                ) {
                    r.headers_mut().append(n, v);
                }
            }
            r
        }
        _ => response(404, "text/plain", b"no such route\n".to_vec()),
    };
    Ok(resp)
}

/// The echo body: the request as received, with the port (which differs
/// from run to run) and the headers a library adds of its own set apart, so
/// the JSON is the same on every backend.
fn echo_json(req: &H2Request, body: &[u8]) -> serde_json::Value {
    let authority = req.authority.as_deref().map(|a| match a.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => format!("{name}:PORT"),
        _ => a.to_owned(),
    });
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|(n, _)| {
            !matches!(
                n.as_str(),
                "host" | "content-length" | "transfer-encoding" | "connection" | "te"
            )
        })
        .cloned()
        .collect();
    serde_json::json!({
        "version": req.version,
        "method": req.method,
        "path": req.path,
        "authority": authority,
        "headers": headers,
        "body_len": body.len(),
        "body_sha256": hex(&Sha256::digest(body)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    #[test]
    fn cleartext_takes_http11_and_prior_knowledge() {
        let s = H2Server::start_cleartext().unwrap();
        let mut c = TcpStream::connect(s.addr()).unwrap();
        c.write_all(b"GET /echo HTTP/1.1\r\nHost: h2.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.contains("\"version\":\"HTTP/1.1\""), "{out}");
        assert!(!out.to_ascii_lowercase().contains("date:"), "{out}");

        // HTTP/2 with prior knowledge: the preface, an empty SETTINGS frame,
        // then the server's SETTINGS come back.
        let mut c = TcpStream::connect(s.addr()).unwrap();
        c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        c.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
        let mut frame = [0u8; 9];
        c.read_exact(&mut frame).unwrap();
        assert_eq!(frame[3], 4, "first frame is SETTINGS: {frame:?}");
        assert_eq!(s.connections(), 2);
        assert_eq!(s.requests()[0].version, "HTTP/1.1");
    }

    #[test]
    fn tls_agrees_on_h2_with_alpn() {
        use rustls::pki_types::ServerName;
        use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
        use rustls_pki_types::pem::PemObject;
        let s = H2Server::start_tls(CertKind::Valid).unwrap();
        let mut roots = RootCertStore::empty();
        for c in
            rustls_pki_types::CertificateDer::pem_slice_iter(pki().unwrap().ca_pem().as_bytes())
        {
            roots.add(c.unwrap()).unwrap();
        }
        let connect = |alpn: &[&[u8]]| {
            let mut config = ClientConfig::builder_with_provider(super::super::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            let conn = ClientConnection::new(
                Arc::new(config),
                ServerName::try_from("h2.test".to_owned()).unwrap(),
            )
            .unwrap();
            StreamOwned::new(conn, TcpStream::connect(s.addr()).unwrap())
        };
        let mut c = connect(&[ALPN_H2, ALPN_HTTP11]);
        c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        c.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
        let mut frame = [0u8; 9];
        c.read_exact(&mut frame).unwrap();
        assert_eq!(frame[3], 4);
        assert_eq!(c.conn.alpn_protocol(), Some(ALPN_H2));

        let mut c = connect(&[ALPN_HTTP11]);
        c.write_all(b"GET /bytes/300 HTTP/1.1\r\nHost: h2.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(out.ends_with(&body_pattern(300)));
        assert_eq!(
            s.alpn(),
            vec![Some("h2".to_owned()), Some("http/1.1".to_owned())]
        );
    }
}
