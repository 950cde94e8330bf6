//! TLS on the hyper backend: what the ClientHello carries, which roots are
//! trusted, and the handshake's place in the connect timeout.

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use handle_api::{ErrorKind, NetworkAccessManager, ResourceRequest, TimeoutPhase, TlsProblem};
use support::{nam, H2Server, Speaks, LOCALHOST};

#[test]
fn sni_is_the_url_host_and_keep_alive_reuses_the_session() {
    let server = H2Server::start(Speaks::Tls(&[b"http/1.1"]));
    let nam = nam(server.port);
    for _ in 0..3 {
        let mut h = nam.load(
            ResourceRequest::get(format!("https://tls.test:{}/bytes/10", server.port))
                .build()
                .unwrap(),
        );
        let resp = h.response_blocking().unwrap();
        assert_eq!(resp.version_str(), "HTTP/1.1");
        assert_eq!(h.bytes_blocking().unwrap().len(), 10);
    }
    assert_eq!(server.connections(), 1);
    let hellos = server.hellos();
    assert_eq!(hellos[0].sni.as_deref(), Some("tls.test"));
    assert_eq!(hellos[0].alpn, vec!["http/1.1".to_owned()]);
    // HTTP/1.1 over TLS: origin form and Host, as in cleartext.
    let seen = server.requests();
    assert_eq!(seen[0].uri, "/bytes/10");
    assert!(seen[0]
        .headers
        .iter()
        .any(|(n, v)| n == "host" && *v == format!("tls.test:{}", server.port)));
}

#[test]
fn only_the_configured_roots_are_trusted() {
    let server = H2Server::start(Speaks::Tls(&[b"http/1.1"]));
    let url = format!("https://tls.test:{}/bytes/1", server.port);
    let base = || {
        NetworkAccessManager::builder()
            .resolve("tls.test", server.port, [LOCALHOST])
            .tls_system_roots(false)
    };
    // No root at all: nothing is trusted.
    let mut h = base()
        .build(backend_hyper::factory)
        .unwrap()
        .load(ResourceRequest::get(url.as_str()).build().unwrap());
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    assert_eq!(e.tls_problem(), Some(TlsProblem::UntrustedIssuer), "{e}");
    // Verification off: accepted, still over TLS.
    let mut h = base()
        .danger_accept_invalid_certs(true)
        .build(backend_hyper::factory)
        .unwrap()
        .load(ResourceRequest::get(url.as_str()).build().unwrap());
    assert_eq!(&h.bytes_blocking().unwrap()[..], b"x");
    // The wrong name for the certificate, from the right CA.
    let mut h = nam(server.port).load(
        ResourceRequest::get(format!("https://origin.test:{}/bytes/1", server.port))
            .build()
            .unwrap(),
    );
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.tls_problem(), Some(TlsProblem::WrongHost), "{e}");
}

#[test]
fn a_stalled_handshake_counts_toward_the_connect_timeout() {
    // Accepts TCP, never answers the ClientHello.
    let listener = TcpListener::bind((LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let keep = std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(3));
        drop(held);
    });
    let started = Instant::now();
    let mut h = nam(port).load(
        ResourceRequest::get(format!("https://tls.test:{port}/"))
            .connect_timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.timeout_phase(), Some(TimeoutPhase::Connect), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(keep);
}

#[test]
fn a_plain_http_server_fails_the_handshake() {
    let server = H2Server::start(Speaks::H2c);
    let mut h = nam(server.port).load(
        ResourceRequest::get(format!("https://tls.test:{}/", server.port))
            .build()
            .unwrap(),
    );
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    assert_eq!(e.tls_problem(), Some(TlsProblem::Handshake), "{e}");
}

#[test]
fn a_full_host_closes_an_idle_connection_of_another_kind() {
    let server = H2Server::start(Speaks::Tls(&[b"h2", b"http/1.1"]));
    let nam = NetworkAccessManager::builder()
        .resolve("tls.test", server.port, [LOCALHOST])
        .tls_system_roots(false)
        .add_root_certificates_pem(support::pki().ca_pem.as_bytes())
        .unwrap()
        .max_connections_per_host(1)
        .build(backend_hyper::factory)
        .unwrap();
    let url = format!("https://tls.test:{}/bytes/2", server.port);
    let started = Instant::now();
    for pref in [
        handle_api::HttpVersionPref::Http1,
        handle_api::HttpVersionPref::Http2,
        handle_api::HttpVersionPref::Http1,
    ] {
        let mut h = nam.load(
            ResourceRequest::get(url.as_str())
                .http_version(pref)
                .build()
                .unwrap(),
        );
        assert_eq!(&h.bytes_blocking().unwrap()[..], b"xx");
    }
    // Each load needed the one place the host has: the idle connection that
    // offered other protocols closed to make room, instead of the load
    // waiting for it to time out.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(server.connections(), 3);
}
