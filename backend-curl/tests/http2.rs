//! HTTP/2 on the curl backend against hyper's server (HTTP/1.1 and HTTP/2
//! on one port, over TLS with ALPN or in cleartext): which version each
//! preference gets, what the response reports, and multiplexing onto one
//! connection.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use handle_api::http::{StatusCode, Version};
use handle_api::{
    Certificate, HttpVersionPref, ManagerBuilder, NetworkAccessManager, Proxy, ProxyConfig,
    ResourceRequest,
};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ServerConfig;
use support::{server_config, HttpProxy, Pki, LOCALHOST};

/// hyper's server on its own runtime. Every response's body is the request's
/// version as hyper saw it (`HTTP/2.0`, `HTTP/1.1`); `/status/NNN` answers
/// with that status; every response waits `delay` first, so loads started
/// together are in flight together.
struct H2Server {
    port: u16,
    connections: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl H2Server {
    fn start(tls: Option<Arc<ServerConfig>>, delay: Duration) -> H2Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind((LOCALHOST, 0)))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| async move {
                        tokio::time::sleep(delay).await;
                        let status = req
                            .uri()
                            .path()
                            .strip_prefix("/status/")
                            .and_then(|s| s.parse::<u16>().ok())
                            .unwrap_or(200);
                        let body = format!("{:?}", req.version());
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "text/plain")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    });
                    let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match acceptor {
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(tcp).await else {
                                return;
                            };
                            server.serve_connection(TokioIo::new(tls), service).await
                        }
                        None => server.serve_connection(TokioIo::new(tcp), service).await,
                    };
                });
            }
        });
        H2Server {
            port,
            connections,
            _rt: rt,
        }
    }
}

const HOST: &str = "h2.test";

fn tls_server(delay: Duration) -> (Pki, H2Server) {
    let pki = Pki::new();
    let config = server_config(pki.server_cert(&[HOST], false), None, &[b"h2", b"http/1.1"]);
    let server = H2Server::start(Some(config), delay);
    (pki, server)
}

fn builder(port: u16, pki: Option<&Pki>) -> ManagerBuilder {
    let mut b = NetworkAccessManager::builder()
        .resolve(HOST, port, [LOCALHOST])
        .tls_system_roots(false);
    if let Some(pki) = pki {
        b = b.add_root_certificate(Certificate::from_der(pki.ca_der()));
    }
    b
}

/// Loads `url` with `pref`: the response's version and reason, and the body.
fn load(
    nam: &NetworkAccessManager,
    url: &str,
    pref: HttpVersionPref,
) -> (Version, StatusCode, String, String) {
    let mut h = nam.load(
        ResourceRequest::get(url)
            .http_version(pref)
            .build()
            .unwrap(),
    );
    let resp = h.response_blocking().unwrap();
    let (version, status, reason) = (resp.version(), resp.status(), resp.reason().to_owned());
    (version, status, reason, h.text_blocking().unwrap())
}

#[test]
fn versions_follow_the_preference() {
    let (pki, tls) = tls_server(Duration::ZERO);
    let nam = builder(tls.port, Some(&pki))
        .build(backend_curl::factory)
        .unwrap();
    let https = format!("https://{HOST}:{}/", tls.port);
    let (v, _, reason, body) = load(&nam, &https, HttpVersionPref::Http2);
    assert_eq!(
        (v, reason.as_str(), body.as_str()),
        (Version::HTTP_2, "OK", "HTTP/2.0")
    );
    let (v, _, _, body) = load(&nam, &https, HttpVersionPref::Http1);
    assert_eq!((v, body.as_str()), (Version::HTTP_11, "HTTP/1.1"));
    let (v, _, _, body) = load(&nam, &https, HttpVersionPref::Http2PriorKnowledge);
    assert_eq!((v, body.as_str()), (Version::HTTP_2, "HTTP/2.0"));

    let plain = H2Server::start(None, Duration::ZERO);
    let nam = builder(plain.port, None)
        .build(backend_curl::factory)
        .unwrap();
    let http = format!("http://{HOST}:{}/", plain.port);
    // Cleartext with ALPN-only HTTP/2: HTTP/1.1, and no Upgrade attempt.
    let (v, _, _, body) = load(&nam, &http, HttpVersionPref::Http2);
    assert_eq!((v, body.as_str()), (Version::HTTP_11, "HTTP/1.1"));
    let (v, _, reason, body) = load(&nam, &http, HttpVersionPref::Http2PriorKnowledge);
    assert_eq!(
        (v, reason.as_str(), body.as_str()),
        (Version::HTTP_2, "OK", "HTTP/2.0")
    );
}

#[test]
fn http2_statuses_get_the_canonical_reason() {
    let plain = H2Server::start(None, Duration::ZERO);
    let nam = builder(plain.port, None)
        .build(backend_curl::factory)
        .unwrap();
    for (code, reason) in [(404, "Not Found"), (503, "Service Unavailable"), (299, "")] {
        let url = format!("http://{HOST}:{}/status/{code}", plain.port);
        let (v, status, got, _) = load(&nam, &url, HttpVersionPref::Http2PriorKnowledge);
        assert_eq!(v, Version::HTTP_2);
        assert_eq!(status.as_u16(), code);
        assert_eq!(got, reason, "{code}");
    }
}

#[test]
fn concurrent_loads_share_one_connection() {
    let (pki, tls) = tls_server(Duration::from_millis(300));
    let plain = H2Server::start(None, Duration::from_millis(300));
    for (server, url, pref, with_pki) in [
        (
            &tls,
            format!("https://{HOST}:{}/", tls.port),
            HttpVersionPref::Http2,
            true,
        ),
        (
            &plain,
            format!("http://{HOST}:{}/", plain.port),
            HttpVersionPref::Http2PriorKnowledge,
            false,
        ),
    ] {
        let nam = builder(server.port, with_pki.then_some(&pki))
            .build(backend_curl::factory)
            .unwrap();
        let mut handles: Vec<_> = (0..6)
            .map(|_| {
                nam.load(
                    ResourceRequest::get(&url)
                        .http_version(pref)
                        .build()
                        .unwrap(),
                )
            })
            .collect();
        for h in &mut handles {
            assert_eq!(h.text_blocking().unwrap(), "HTTP/2.0");
        }
        assert_eq!(server.connections.load(Ordering::SeqCst), 1, "{url}");
    }
}

#[test]
fn http2_through_a_connect_tunnel() {
    let (pki, tls) = tls_server(Duration::ZERO);
    let proxy = HttpProxy::start(200);
    let nam = builder(tls.port, Some(&pki))
        .resolve("proxy.test", proxy.port, [LOCALHOST])
        .proxy(ProxyConfig::explicit(
            Proxy::parse(&format!("http://proxy.test:{}", proxy.port)).unwrap(),
        ))
        .build(backend_curl::factory)
        .unwrap();
    let url = format!("https://{HOST}:{}/", tls.port);
    let (v, _, _, body) = load(&nam, &url, HttpVersionPref::Http2);
    assert_eq!((v, body.as_str()), (Version::HTTP_2, "HTTP/2.0"));
    assert_eq!(proxy.heads().len(), 1);
}
