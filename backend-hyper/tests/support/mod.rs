//! Servers for the TLS, HTTP/2 and proxy tests: a test CA made with rcgen,
//! and an HTTP server (hyper, HTTP/1.1 and HTTP/2, cleartext or TLS with
//! ALPN) on a runtime of its own that records what it saw: connections, the
//! TLS ClientHello (SNI and ALPN offer), each request's version and path,
//! and the streams the client reset.
//!
//! Every server listens on 127.0.0.1 with port 0; names are mapped there by
//! the manager's host overrides.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use handle_api::NetworkAccessManager;
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// ---- the test CA -------------------------------------------------------------

/// The test CA and a certificate it issued for `tls.test` and `localhost`.
pub struct Pki {
    pub ca_pem: String,
    pub leaf: Vec<CertificateDer<'static>>,
    pub leaf_key: Vec<u8>,
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "backend-hyper test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let params =
            CertificateParams::new(vec!["tls.test".to_owned(), "localhost".to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        Pki {
            ca_pem: ca.pem(),
            leaf: vec![cert.der().clone()],
            leaf_key: key.serialize_der(),
        }
    })
}

fn server_config(alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let pki = pki();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        pki.leaf.clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.leaf_key.clone())),
    )
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

// ---- the HTTP server ---------------------------------------------------------

/// What the client offered in its ClientHello.
#[derive(Debug, Clone)]
pub struct Hello {
    pub sni: Option<String>,
    pub alpn: Vec<String>,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub version: http::Version,
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    /// Request body bytes read.
    pub body_bytes: u64,
}

#[derive(Default)]
pub struct Record {
    pub connections: AtomicUsize,
    /// Response bodies the client stopped taking (an HTTP/2 reset, or a
    /// closed HTTP/1.1 connection).
    pub resets: AtomicUsize,
    pub hellos: Mutex<Vec<Hello>>,
    pub requests: Mutex<Vec<Seen>>,
}

/// How the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    /// HTTP/2 prior knowledge in cleartext.
    H2c,
    /// TLS offering these ALPN protocols (the first the client also offers
    /// wins); HTTP/2 when `h2` was chosen, else HTTP/1.1.
    Tls(&'static [&'static [u8]]),
}

pub struct H2Server {
    pub port: u16,
    pub record: Arc<Record>,
    _runtime: tokio::runtime::Runtime,
}

impl H2Server {
    /// Routes: `/bytes/N`, `/slow-head/MS` (the head after MS ms),
    /// `/drip/N/MS` (N chunks of 10 bytes, MS ms apart, no length),
    /// `/hang` (one chunk, then nothing until the client goes),
    /// `/headers/N` (N extra fields), `/upload` (counts the body).
    pub fn start(speaks: Speaks) -> H2Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let record = Arc::new(Record::default());
        let listener = runtime.block_on(TcpListener::bind((LOCALHOST, 0))).unwrap();
        let port = listener.local_addr().unwrap().port();
        let rec = record.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                rec.connections.fetch_add(1, Ordering::SeqCst);
                let _ = tcp.set_nodelay(true);
                let rec = rec.clone();
                tokio::spawn(async move {
                    match speaks {
                        Speaks::H2c => serve(TokioIo::new(tcp), true, rec).await,
                        Speaks::Tls(alpn) => {
                            let acceptor = tokio_rustls::LazyConfigAcceptor::new(
                                rustls::server::Acceptor::default(),
                                tcp,
                            );
                            let Ok(start) = acceptor.await else { return };
                            let hello = start.client_hello();
                            rec.hellos.lock().unwrap().push(Hello {
                                sni: hello.server_name().map(str::to_owned),
                                alpn: hello
                                    .alpn()
                                    .map(|a| {
                                        a.map(|p| String::from_utf8_lossy(p).into_owned()).collect()
                                    })
                                    .unwrap_or_default(),
                            });
                            let Ok(tls) = start.into_stream(server_config(alpn)).await else {
                                return;
                            };
                            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve(TokioIo::new(tls), h2, rec).await
                        }
                    }
                });
            }
        });
        H2Server {
            port,
            record,
            _runtime: runtime,
        }
    }

    pub fn connections(&self) -> usize {
        self.record.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.record.requests.lock().unwrap().clone()
    }

    pub fn hellos(&self) -> Vec<Hello> {
        self.record.hellos.lock().unwrap().clone()
    }

    /// Waits up to `within` for `n` reset responses.
    pub fn wait_resets(&self, n: usize, within: Duration) -> bool {
        let end = std::time::Instant::now() + within;
        while std::time::Instant::now() < end {
            if self.record.resets.load(Ordering::SeqCst) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

async fn serve<I>(io: TokioIo<I>, h2: bool, rec: Arc<Record>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| respond(req, rec.clone()));
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, service)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    }
}

/// A response body fed through a channel, so the server sees the client
/// stop taking it.
pub struct ChanBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn body_of(chunks: Vec<Bytes>, pause: Duration, hang: bool, rec: Arc<Record>) -> ChanBody {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        for (i, c) in chunks.into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            if tx.send(c).await.is_err() {
                rec.resets.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        if hang {
            // Nothing more, until the client resets the stream.
            tx.closed().await;
            rec.resets.fetch_add(1, Ordering::SeqCst);
        }
    });
    ChanBody(rx)
}

async fn respond(
    req: Request<Incoming>,
    rec: Arc<Record>,
) -> Result<Response<ChanBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body_bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes().len() as u64)
        .unwrap_or(0);
    rec.requests.lock().unwrap().push(Seen {
        version: parts.version,
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect(),
        body_bytes,
    });
    let path: Vec<&str> = parts.uri.path().split('/').skip(1).collect();
    let num = |i: usize| path.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let mut resp = Response::builder().status(200);
    let body = match path.first().copied() {
        Some("bytes") => {
            let n = num(1) as usize;
            resp = resp.header("content-length", n);
            body_of(vec![Bytes::from(vec![b'x'; n])], Duration::ZERO, false, rec)
        }
        Some("slow-head") => {
            tokio::time::sleep(Duration::from_millis(num(1))).await;
            body_of(
                vec![Bytes::from_static(b"late")],
                Duration::ZERO,
                false,
                rec,
            )
        }
        Some("drip") => body_of(
            vec![Bytes::from_static(b"0123456789"); num(1) as usize],
            Duration::from_millis(num(2)),
            false,
            rec,
        ),
        Some("hang") => body_of(
            vec![Bytes::from_static(b"first")],
            Duration::ZERO,
            true,
            rec,
        ),
        Some("headers") => {
            for i in 0..num(1) {
                resp = resp.header(format!("x-field-{i}"), format!("value-{i}"));
            }
            body_of(vec![Bytes::from_static(b"ok")], Duration::ZERO, false, rec)
        }
        Some("upload") => body_of(
            vec![Bytes::from(body_bytes.to_string())],
            Duration::ZERO,
            false,
            rec,
        ),
        _ => {
            resp = resp.status(404);
            body_of(Vec::new(), Duration::ZERO, false, rec)
        }
    };
    Ok(resp.body(body).unwrap())
}

/// A manager with `tls.test` and `origin.test` at `port` on 127.0.0.1 and
/// the test CA as the only root.
pub fn nam(port: u16) -> NetworkAccessManager {
    NetworkAccessManager::builder()
        .resolve("tls.test", port, [LOCALHOST])
        .resolve("origin.test", port, [LOCALHOST])
        .tls_system_roots(false)
        .add_root_certificates_pem(pki().ca_pem.as_bytes())
        .unwrap()
        .build(backend_hyper::factory)
        .unwrap()
}
