//! TLS on the curl backend against rustls servers on 127.0.0.1 with
//! certificates from a CA made for the test: the manager's roots and only
//! those are trusted, each certificate failure gets its `TlsProblem`, the
//! verification opt-out accepts anything, and a client identity is
//! presented when the server asks.

mod support;

use handle_api::{
    Certificate, ErrorKind, Identity, NetworkAccessManager, ResourceRequest, TlsProblem,
};
use support::{server_config, Origin, Pki, LOCALHOST};

const HOST: &str = "tls.test";

/// A manager trusting only `pki`'s CA (no system roots), with `HOST` on
/// 127.0.0.1 at `port`.
fn nam_trusting(pki: Option<&Pki>, port: u16) -> handle_api::ManagerBuilder {
    let mut b = NetworkAccessManager::builder()
        .resolve(HOST, port, [LOCALHOST])
        .tls_system_roots(false);
    if let Some(pki) = pki {
        b = b.add_root_certificate(Certificate::from_der(pki.ca_der()));
    }
    b
}

fn url(port: u16) -> String {
    format!("https://{HOST}:{port}/")
}

/// The TLS problem of a load of `url` with `nam`, which must fail.
fn problem(nam: &NetworkAccessManager, url: &str) -> TlsProblem {
    let mut h = nam.load(ResourceRequest::get(url).build().unwrap());
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls, "{e:?}");
    e.tls_problem()
        .unwrap_or_else(|| panic!("no TLS problem in {e:?}"))
}

#[test]
fn the_managers_roots_are_trusted() {
    let pki = Pki::new();
    let origin = Origin::tls(
        server_config(pki.server_cert(&[HOST], false), None, &[]),
        "secure",
    );
    let nam = nam_trusting(Some(&pki), origin.port)
        .build(backend_curl::factory)
        .unwrap();
    let mut h = nam.load(ResourceRequest::get(url(origin.port)).build().unwrap());
    assert_eq!(h.text_blocking().unwrap(), "secure");
    // The roots may also come as PEM.
    let nam = NetworkAccessManager::builder()
        .resolve(HOST, origin.port, [LOCALHOST])
        .tls_system_roots(false)
        .add_root_certificates_pem(pki.ca_pem().as_bytes())
        .unwrap()
        .build(backend_curl::factory)
        .unwrap();
    let mut h = nam.load(ResourceRequest::get(url(origin.port)).build().unwrap());
    assert_eq!(h.text_blocking().unwrap(), "secure");
}

#[test]
fn certificate_failures_name_their_problem() {
    let pki_name = "backend-curl twin CA";
    let pki = Pki::named(pki_name);
    let cases = [
        (pki.server_cert(&[HOST], true), TlsProblem::Expired),
        (
            pki.server_cert(&["other.test"], false),
            TlsProblem::WrongHost,
        ),
        (support::self_signed(&[HOST]), TlsProblem::UntrustedIssuer),
        // Issued by a CA nobody added.
        (
            Pki::new().server_cert(&[HOST], false),
            TlsProblem::UntrustedIssuer,
        ),
        // Issued by a CA of the same name as the trusted one, but another key.
        (
            Pki::named(pki_name).server_cert(&[HOST], false),
            TlsProblem::UntrustedIssuer,
        ),
        // Both expired and for another host: the chain's problem comes
        // first, as rustls reports it.
        (pki.server_cert(&["other.test"], true), TlsProblem::Expired),
    ];
    for (cert, expected) in cases {
        let origin = Origin::tls(server_config(cert, None, &[]), "never");
        let nam = nam_trusting(Some(&pki), origin.port)
            .build(backend_curl::factory)
            .unwrap();
        assert_eq!(problem(&nam, &url(origin.port)), expected);
        assert!(
            origin.heads().is_empty(),
            "a request went out: {expected:?}"
        );
    }
}

#[test]
fn no_roots_trust_nothing() {
    let pki = Pki::new();
    let origin = Origin::tls(
        server_config(pki.server_cert(&[HOST], false), None, &[]),
        "x",
    );
    let nam = nam_trusting(None, origin.port)
        .build(backend_curl::factory)
        .unwrap();
    assert_eq!(
        problem(&nam, &url(origin.port)),
        TlsProblem::UntrustedIssuer
    );
}

#[test]
fn accepting_invalid_certificates_accepts_them() {
    let pki = Pki::new();
    for cert in [
        pki.server_cert(&[HOST], true),
        pki.server_cert(&["other.test"], false),
        support::self_signed(&["other.test"]),
    ] {
        let origin = Origin::tls(server_config(cert, None, &[]), "anyway");
        let nam = nam_trusting(None, origin.port)
            .danger_accept_invalid_certs(true)
            .build(backend_curl::factory)
            .unwrap();
        let mut h = nam.load(ResourceRequest::get(url(origin.port)).build().unwrap());
        assert_eq!(h.text_blocking().unwrap(), "anyway");
    }
}

#[test]
fn a_client_identity_is_presented_when_asked() {
    let pki = Pki::new();
    let config = server_config(pki.server_cert(&[HOST], false), Some(&pki), &[]);
    let origin = Origin::tls(config, "client ok");
    let (cert_pem, key_pem) = pki.client_identity();
    let identity = Identity::from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    let nam = nam_trusting(Some(&pki), origin.port)
        .identity(identity)
        .build(backend_curl::factory)
        .unwrap();
    let mut h = nam.load(ResourceRequest::get(url(origin.port)).build().unwrap());
    assert_eq!(h.text_blocking().unwrap(), "client ok");

    // Without one, the server refuses the handshake.
    let nam = nam_trusting(Some(&pki), origin.port)
        .build(backend_curl::factory)
        .unwrap();
    assert_eq!(
        problem(&nam, &url(origin.port)),
        TlsProblem::ClientCertificate
    );

    // One the server does not trust is refused too.
    let (cert_pem, key_pem) = Pki::new().client_identity();
    let stranger = Identity::from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    let nam = nam_trusting(Some(&pki), origin.port)
        .identity(stranger)
        .build(backend_curl::factory)
        .unwrap();
    assert_eq!(
        problem(&nam, &url(origin.port)),
        TlsProblem::ClientCertificate
    );
}

#[test]
fn a_key_that_does_not_match_is_a_client_certificate_problem() {
    let pki = Pki::new();
    let config = server_config(pki.server_cert(&[HOST], false), Some(&pki), &[]);
    let origin = Origin::tls(config, "x");
    let (cert_pem, _) = pki.client_identity();
    let (_, other_key) = pki.client_identity();
    let mismatched = Identity::from_pem(cert_pem.as_bytes(), other_key.as_bytes()).unwrap();
    let nam = nam_trusting(Some(&pki), origin.port)
        .identity(mismatched)
        .build(backend_curl::factory)
        .unwrap();
    assert_eq!(
        problem(&nam, &url(origin.port)),
        TlsProblem::ClientCertificate
    );
}

#[test]
fn capabilities_include_tls_features() {
    let nam = NetworkAccessManager::new(backend_curl::factory).unwrap();
    let caps = nam.capabilities();
    for c in [
        handle_api::Capability::Https,
        handle_api::Capability::ClientCertificate,
        handle_api::Capability::Http2,
        handle_api::Capability::Proxy,
        handle_api::Capability::Socks5,
    ] {
        assert!(caps.check(c).is_ok(), "{c:?}");
    }
}
