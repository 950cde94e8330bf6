//! Proxies on the curl backend, against an HTTP forward/CONNECT proxy and
//! a SOCKS5 proxy on 127.0.0.1: what each proxy receives, and which
//! failures are the proxy's.

mod support;

use handle_api::{
    Certificate, ErrorKind, NetworkAccessManager, Proxy, ProxyConfig, ResourceRequest,
};
use support::{
    header, header_names, server_config, HttpProxy, Origin, Pki, Socks5Proxy, LOCALHOST,
};

/// A manager using `proxy`, with `proxy.test` on 127.0.0.1 at `proxy_port`.
fn nam_via(proxy: &str, proxy_port: u16) -> handle_api::ManagerBuilder {
    NetworkAccessManager::builder()
        .resolve("proxy.test", proxy_port, [LOCALHOST])
        .proxy(ProxyConfig::explicit(Proxy::parse(proxy).unwrap()))
}

#[test]
fn http_urls_are_forwarded_in_absolute_form() {
    let proxy = HttpProxy::start(200);
    let nam = nam_via(
        &format!("http://aladdin:opensesame@proxy.test:{}", proxy.port),
        proxy.port,
    )
    .build(backend_curl::factory)
    .unwrap();
    // origin.test has no address here: only the proxy resolves it.
    let mut h = nam.load(
        ResourceRequest::get("http://origin.test:8080/a/b?c=d")
            .header("x-app", "1")
            .build()
            .unwrap(),
    );
    assert_eq!(
        h.text_blocking().unwrap(),
        "GET http://origin.test:8080/a/b?c=d HTTP/1.1"
    );
    let heads = proxy.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let head = &heads[0];
    assert_eq!(
        header(head, "proxy-authorization"),
        Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l")
    );
    assert_eq!(header(head, "host"), Some("origin.test:8080"));
    assert_eq!(header(head, "x-app"), Some("1"));
    assert_eq!(header(head, "proxy-connection"), None, "{head}");
}

#[test]
fn https_urls_tunnel_with_a_bare_connect() {
    let pki = Pki::new();
    let origin = Origin::tls(
        server_config(pki.server_cert(&["tls.test"], false), None, &[]),
        "through the tunnel",
    );
    let proxy = HttpProxy::start(200);
    let nam = nam_via(&format!("http://u:p@proxy.test:{}", proxy.port), proxy.port)
        .tls_system_roots(false)
        .add_root_certificate(Certificate::from_der(pki.ca_der()))
        .user_agent("tunnel-test/1")
        .unwrap()
        .build(backend_curl::factory)
        .unwrap();
    let url = format!("https://tls.test:{}/secret", origin.port);
    let mut h = nam.load(
        ResourceRequest::get(&url)
            .header("x-app", "1")
            .header("authorization", "Bearer origin-only")
            .build()
            .unwrap(),
    );
    assert_eq!(h.text_blocking().unwrap(), "through the tunnel");
    let heads = proxy.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let connect = &heads[0];
    assert!(
        connect.starts_with(&format!("CONNECT tls.test:{} HTTP/1.1\r\n", origin.port)),
        "{connect}"
    );
    // Host and the proxy's credentials, nothing of the origin's.
    assert_eq!(
        header_names(connect),
        ["host", "proxy-authorization"],
        "{connect}"
    );
    assert_eq!(header(connect, "proxy-authorization"), Some("Basic dTpw"));
    // The origin gets its headers, and never the proxy's credentials.
    let inside = origin.heads();
    assert_eq!(header(&inside[0], "x-app"), Some("1"));
    assert_eq!(header(&inside[0], "user-agent"), Some("tunnel-test/1"));
    assert_eq!(header(&inside[0], "proxy-authorization"), None);
}

#[test]
fn a_refused_connect_is_a_proxy_error() {
    for status in [403, 407, 502] {
        let proxy = HttpProxy::start(status);
        let nam = nam_via(&format!("http://proxy.test:{}", proxy.port), proxy.port)
            .build(backend_curl::factory)
            .unwrap();
        let mut h = nam.load(
            ResourceRequest::get("https://tls.test:9443/")
                .build()
                .unwrap(),
        );
        let e = h.response_blocking().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Proxy, "{status}: {e:?}");
        assert!(e.message().contains(&status.to_string()), "{e}");
    }
}

#[test]
fn an_unreachable_proxy_is_a_proxy_error() {
    // A port with nothing listening.
    let port = std::net::TcpListener::bind((LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for url in ["http://origin.test:1/", "https://origin.test:1/"] {
        let nam = nam_via(&format!("http://proxy.test:{port}"), port)
            .build(backend_curl::factory)
            .unwrap();
        let mut h = nam.load(ResourceRequest::get(url).build().unwrap());
        let e = h.response_blocking().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Proxy, "{url}: {e:?}");
    }
    for scheme in ["socks5", "socks5h"] {
        let nam = nam_via(&format!("{scheme}://proxy.test:{port}"), port)
            .resolve("origin.test", 1, [LOCALHOST])
            .build(backend_curl::factory)
            .unwrap();
        let mut h = nam.load(
            ResourceRequest::get("http://origin.test:1/")
                .build()
                .unwrap(),
        );
        let e = h.response_blocking().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Proxy, "{scheme}: {e:?}");
    }
    // A proxy name mapped to no address.
    let nam = NetworkAccessManager::builder()
        .resolve("proxy.test", 3128, [])
        .proxy(ProxyConfig::explicit(
            Proxy::parse("proxy.test:3128").unwrap(),
        ))
        .build(backend_curl::factory)
        .unwrap();
    let mut h = nam.load(ResourceRequest::get("http://origin.test/").build().unwrap());
    assert_eq!(h.response_blocking().unwrap_err().kind(), ErrorKind::Proxy);
}

#[test]
fn socks5_resolves_locally_and_socks5h_at_the_proxy() {
    let origin = Origin::plain("via socks");
    for (scheme, target) in [
        ("socks5", format!("ip:127.0.0.1:{}", origin.port)),
        ("socks5h", format!("name:origin.test:{}", origin.port)),
    ] {
        let socks = Socks5Proxy::start(true, false);
        let nam = nam_via(
            &format!("{scheme}://user:secret@proxy.test:{}", socks.port),
            socks.port,
        )
        .resolve("origin.test", origin.port, [LOCALHOST])
        .build(backend_curl::factory)
        .unwrap();
        let mut h = nam.load(
            ResourceRequest::get(format!("http://origin.test:{}/", origin.port))
                .build()
                .unwrap(),
        );
        assert_eq!(h.text_blocking().unwrap(), "via socks");
        assert_eq!(*socks.targets.lock().unwrap(), [target]);
        assert_eq!(
            *socks.logins.lock().unwrap(),
            [("user".to_owned(), "secret".to_owned())]
        );
    }
    // Nothing of SOCKS reaches the origin.
    for head in origin.heads() {
        assert_eq!(header(&head, "proxy-authorization"), None, "{head}");
    }
}

#[test]
fn a_socks_refusal_is_a_proxy_error() {
    let socks = Socks5Proxy::start(false, true);
    let nam = nam_via(&format!("socks5h://proxy.test:{}", socks.port), socks.port)
        .build(backend_curl::factory)
        .unwrap();
    let mut h = nam.load(
        ResourceRequest::get("http://origin.test:9/")
            .build()
            .unwrap(),
    );
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Proxy, "{e:?}");
}
