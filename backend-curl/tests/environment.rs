//! libcurl's defaults that read the process environment stay off: the CA
//! file curl-rust finds through `SSL_CERT_FILE`, and the proxy variables.
//! One test in a binary of its own, since it changes the environment of the
//! whole process before any transfer starts.

mod support;

use std::time::Duration;

use handle_api::{Certificate, ErrorKind, NetworkAccessManager, ResourceRequest, TlsProblem};
use support::{server_config, HttpProxy, Origin, Pki, LOCALHOST};

#[test]
fn the_environment_decides_neither_trust_nor_proxies() {
    let pki = Pki::new();
    let dir = std::env::temp_dir().join(format!("backend-curl-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, pki.ca_pem()).unwrap();
    // A proxy that would answer any request sent to it: nothing may be.
    let trap = HttpProxy::start(200);
    let trap_url = format!("http://127.0.0.1:{}", trap.port);
    // Set before the first transfer of this process (curl-rust probes the
    // CA locations once, at the first easy handle); no other test runs here.
    for (k, v) in [
        ("SSL_CERT_FILE", ca_file.to_str().unwrap()),
        ("SSL_CERT_DIR", dir.to_str().unwrap()),
        ("CURL_CA_BUNDLE", ca_file.to_str().unwrap()),
        ("http_proxy", trap_url.as_str()),
        ("HTTPS_PROXY", trap_url.as_str()),
        ("ALL_PROXY", trap_url.as_str()),
        ("no_proxy", ""),
    ] {
        std::env::set_var(k, v);
    }

    // With the system roots off and no root given, the CA that the
    // environment names is not trusted.
    let origin = Origin::tls(
        server_config(pki.server_cert(&["tls.test"], false), None, &[]),
        "trusted?",
    );
    let nam = NetworkAccessManager::builder()
        .resolve("tls.test", origin.port, [LOCALHOST])
        .tls_system_roots(false)
        .build(backend_curl::factory)
        .unwrap();
    let mut h = nam.load(
        ResourceRequest::get(format!("https://tls.test:{}/", origin.port))
            .build()
            .unwrap(),
    );
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls, "{e:?}");
    assert_eq!(e.tls_problem(), Some(TlsProblem::UntrustedIssuer), "{e:?}");
    // Given to the manager, the same CA is.
    let nam = NetworkAccessManager::builder()
        .resolve("tls.test", origin.port, [LOCALHOST])
        .tls_system_roots(false)
        .add_root_certificate(Certificate::from_der(pki.ca_der()))
        .build(backend_curl::factory)
        .unwrap();
    let mut h = nam.load(
        ResourceRequest::get(format!("https://tls.test:{}/", origin.port))
            .build()
            .unwrap(),
    );
    assert_eq!(h.text_blocking().unwrap(), "trusted?");

    // No proxy configured: http and https go directly, whatever the variables say.
    let plain = Origin::plain("direct");
    let nam = NetworkAccessManager::builder()
        .resolve("origin.test", plain.port, [LOCALHOST])
        .timeout(Duration::from_secs(10))
        .build(backend_curl::factory)
        .unwrap();
    let mut h = nam.load(
        ResourceRequest::get(format!("http://origin.test:{}/", plain.port))
            .build()
            .unwrap(),
    );
    assert_eq!(h.text_blocking().unwrap(), "direct");
    assert!(trap.heads().is_empty(), "{:?}", trap.heads());
    assert_eq!(plain.heads().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
