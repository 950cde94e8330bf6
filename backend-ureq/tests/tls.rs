//! https through the ureq backend against a real rustls server on
//! 127.0.0.1: the roots trusted, the certificate problems reported, ALPN,
//! client certificates, pooling, and handshakes that stall.

mod support;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use handle_api::{
    http::Version, ErrorKind, HttpVersionPref, Identity, ManagerBuilder, NetworkAccessManager,
    ResourceRequest, TimeoutPhase, TlsProblem,
};
use support::{server_config, Ca, TlsServer, Validity};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn builder(port: u16) -> ManagerBuilder {
    NetworkAccessManager::builder()
        .resolve("origin.test", port, [LOCALHOST])
        .resolve("other.test", port, [LOCALHOST])
        .tls_system_roots(false)
}

fn get(nam: &NetworkAccessManager, url: &str) -> handle_api::Result<(Version, String)> {
    let mut h = nam.load(ResourceRequest::get(url).build().unwrap());
    let version = h.response_blocking()?.version();
    Ok((version, h.text_blocking()?))
}

fn problem_of(nam: &NetworkAccessManager, url: &str) -> (ErrorKind, Option<TlsProblem>) {
    let e = get(nam, url).unwrap_err();
    (e.kind(), e.tls_problem())
}

#[test]
fn https_with_a_trusted_ca_offers_http11_only_and_pools() {
    let ca = Ca::new("test ca");
    let server = TlsServer::start(server_config(
        &ca.leaf(&["origin.test"], Validity::Valid, false),
        None,
    ));
    let nam = builder(server.port)
        .add_root_certificate(ca.certificate())
        .build(backend_ureq::factory)
        .unwrap();
    let url = |p: &str| format!("https://origin.test:{}{p}", server.port);
    let mut h = nam.load(ResourceRequest::get(url("/a")).build().unwrap());
    let resp = h.response_blocking().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_11);
    assert!(resp.timing().tls.is_some(), "{:?}", resp.timing());
    assert_eq!(h.text_blocking().unwrap(), "/a");
    assert_eq!(get(&nam, &url("/b")).unwrap().1, "/b");
    // One connection for both: the idle TLS session went back to the pool
    // (the server's session tickets did not count as stray data).
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    let sessions = server.sessions();
    assert_eq!(sessions.len(), 1);
    // The server offers h2 first; the client offered http/1.1 only.
    assert_eq!(sessions[0].alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(sessions[0].sni.as_deref(), Some("origin.test"));
    assert_eq!(sessions[0].requests.len(), 2);
    assert_eq!(sessions[0].requests[0].line, "GET /a HTTP/1.1");
}

#[test]
fn certificate_problems_are_named() {
    let ca = Ca::new("test ca");
    let valid = TlsServer::start(server_config(
        &ca.leaf(&["origin.test"], Validity::Valid, false),
        None,
    ));
    let expired = TlsServer::start(server_config(
        &ca.leaf(&["origin.test"], Validity::Expired, false),
        None,
    ));
    let trusting = |port| {
        builder(port)
            .add_root_certificate(ca.certificate())
            .build(backend_ureq::factory)
            .unwrap()
    };

    // No root trusts the CA: the system's are off and none was added.
    let nam = builder(valid.port).build(backend_ureq::factory).unwrap();
    let url = format!("https://origin.test:{}/", valid.port);
    assert_eq!(
        problem_of(&nam, &url),
        (ErrorKind::Tls, Some(TlsProblem::UntrustedIssuer))
    );

    let url = format!("https://origin.test:{}/", expired.port);
    assert_eq!(
        problem_of(&trusting(expired.port), &url),
        (ErrorKind::Tls, Some(TlsProblem::Expired))
    );

    let url = format!("https://other.test:{}/", valid.port);
    assert_eq!(
        problem_of(&trusting(valid.port), &url),
        (ErrorKind::Tls, Some(TlsProblem::WrongHost))
    );
    // A refused handshake sends no request.
    assert!(valid.sessions().iter().all(|s| s.requests.is_empty()));
}

#[test]
fn verification_off_accepts_any_certificate() {
    let ca = Ca::new("unknown ca");
    let server = TlsServer::start(server_config(
        &ca.leaf(&["elsewhere.test"], Validity::Expired, false),
        None,
    ));
    let nam = builder(server.port)
        .danger_accept_invalid_certs(true)
        .build(backend_ureq::factory)
        .unwrap();
    let url = format!("https://origin.test:{}/x", server.port);
    assert_eq!(get(&nam, &url).unwrap().1, "/x");
}

#[test]
fn client_certificate_is_presented_when_asked_for() {
    let ca = Ca::new("test ca");
    let clients = Ca::new("client ca");
    let server = TlsServer::start(server_config(
        &ca.leaf(&["origin.test"], Validity::Valid, false),
        Some(&clients),
    ));
    let url = format!("https://origin.test:{}/me", server.port);

    let without = builder(server.port)
        .add_root_certificate(ca.certificate())
        .build(backend_ureq::factory)
        .unwrap();
    assert_eq!(
        problem_of(&without, &url),
        (ErrorKind::Tls, Some(TlsProblem::ClientCertificate))
    );

    // An identity from a CA the server does not trust is refused too.
    let stranger = Ca::new("stranger").leaf(&["client"], Validity::Valid, true);
    let nam = builder(server.port)
        .add_root_certificate(ca.certificate())
        .identity(
            Identity::from_pem(stranger.cert_pem.as_bytes(), stranger.key_pem.as_bytes()).unwrap(),
        )
        .build(backend_ureq::factory)
        .unwrap();
    assert_eq!(
        problem_of(&nam, &url),
        (ErrorKind::Tls, Some(TlsProblem::ClientCertificate))
    );

    let me = clients.leaf(&["client"], Validity::Valid, true);
    let nam = builder(server.port)
        .add_root_certificate(ca.certificate())
        .identity(Identity::from_pem(me.cert_pem.as_bytes(), me.key_pem.as_bytes()).unwrap())
        .build(backend_ureq::factory)
        .unwrap();
    assert_eq!(get(&nam, &url).unwrap().1, "/me");
    assert!(server.sessions().iter().any(|s| s.client_cert));
}

#[test]
fn http2_preference_negotiates_http11() {
    let ca = Ca::new("test ca");
    let server = TlsServer::start(server_config(
        &ca.leaf(&["origin.test"], Validity::Valid, false),
        None,
    ));
    let nam = builder(server.port)
        .add_root_certificate(ca.certificate())
        .build(backend_ureq::factory)
        .unwrap();
    let url = format!("https://origin.test:{}/v", server.port);
    let mut h = nam.load(
        ResourceRequest::get(&url)
            .http_version(HttpVersionPref::Http2)
            .build()
            .unwrap(),
    );
    assert_eq!(h.response_blocking().unwrap().version(), Version::HTTP_11);
    assert_eq!(h.text_blocking().unwrap(), "/v");

    let mut h = nam.load(
        ResourceRequest::get(&url)
            .http_version(HttpVersionPref::Http2PriorKnowledge)
            .build()
            .unwrap(),
    );
    assert_eq!(
        h.response_blocking().unwrap_err().kind(),
        ErrorKind::Unsupported
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

/// A listener that accepts connections and never answers the ClientHello;
/// it reports each connection the client closes.
fn silent_server() -> (u16, mpsc::Receiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let tx = tx.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                let _ = tx.send(Instant::now());
            });
        }
    });
    (port, rx)
}

#[test]
fn a_stalled_handshake_times_out_as_connect_and_can_be_cancelled() {
    let (port, closed) = silent_server();
    let nam = builder(port)
        .connect_timeout(Duration::from_millis(300))
        .build(backend_ureq::factory)
        .unwrap();
    let url = format!("https://origin.test:{port}/");
    let started = Instant::now();
    let e = get(&nam, &url).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert_eq!(e.timeout_phase(), Some(TimeoutPhase::Connect));
    assert!(started.elapsed() < Duration::from_secs(5));
    closed.recv_timeout(Duration::from_secs(5)).unwrap();

    // Without a timeout only the cancel ends the handshake: it shuts the
    // socket down under the blocked worker.
    let nam = builder(port).build(backend_ureq::factory).unwrap();
    let mut h = nam.load(ResourceRequest::get(&url).build().unwrap());
    thread::sleep(Duration::from_millis(300));
    assert!(closed.try_recv().is_err(), "the handshake is still waiting");
    let cancelled = Instant::now();
    h.cancel();
    let at = closed.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(at.duration_since(cancelled) < Duration::from_secs(2));
    assert_eq!(
        h.response_blocking().unwrap_err().kind(),
        ErrorKind::Cancelled
    );
}

#[test]
fn a_plaintext_server_fails_the_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            use std::io::Write;
            let _ = stream.write_all(&support::ok("not tls"));
        }
    });
    let nam = builder(port).build(backend_ureq::factory).unwrap();
    let url = format!("https://origin.test:{port}/");
    assert_eq!(
        problem_of(&nam, &url),
        (ErrorKind::Tls, Some(TlsProblem::Handshake))
    );
}
