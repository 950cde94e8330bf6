//! Proxies through the ureq backend, against real proxy servers on
//! 127.0.0.1: http forwarded in absolute form, https through a CONNECT
//! tunnel that carries nothing of the origin request, SOCKS5 with local or
//! remote name resolution and credentials, and the failures of each.

mod support;

use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use handle_api::{ErrorKind, NetworkAccessManager, Proxy, ProxyConfig, ResourceRequest};
use support::{ok, pipe, read_head, server_config, Ca, Head, TlsServer, Validity};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A server on 127.0.0.1:0 running `serve` for each connection.
struct Listener {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Listener {
    fn start(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let c = connections.clone();
        let serve = Arc::new(serve);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let serve = serve.clone();
                thread::spawn(move || serve(stream));
            }
        });
        Listener { port, connections }
    }
}

type Log = Arc<Mutex<Vec<Head>>>;

/// A plain HTTP server (a forward proxy answering itself, or an origin)
/// recording each request head and answering with its target.
fn answering_server() -> (Listener, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let server = Listener::start(move |stream| {
        let mut r = BufReader::new(stream);
        while let Ok(Some(head)) = read_head(&mut r) {
            let len: usize = head
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_err() {
                return;
            }
            let reply = ok(head.target());
            l.lock().unwrap().push(head);
            if r.get_mut().write_all(&reply).is_err() {
                return;
            }
        }
    });
    (server, log)
}

/// The port of an authority such as `name:443` or `[::1]:443`.
fn port_of(authority: &str) -> u16 {
    authority.rsplit(':').next().unwrap().parse().unwrap()
}

/// A CONNECT proxy: records each CONNECT head, answers with `status`, and
/// on 2xx tunnels to 127.0.0.1 at the port asked for (whatever the name).
fn connect_proxy(status: &'static str) -> (Listener, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let server = Listener::start(move |stream| {
        let mut r = BufReader::new(stream);
        let Ok(Some(head)) = read_head(&mut r) else {
            return;
        };
        let port = port_of(head.target());
        l.lock().unwrap().push(head);
        let mut client = r.into_inner();
        if !status.starts_with('2') {
            let _ = client
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes());
            return;
        }
        let Ok(origin) = TcpStream::connect((LOCALHOST, port)) else {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
            return;
        };
        let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
        pipe(client, origin);
    });
    (server, log)
}

/// What a SOCKS5 proxy was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SocksSeen {
    methods: Vec<u8>,
    credentials: Option<(String, String)>,
    /// The host as sent: a name, or an address in text.
    host: String,
    name: bool,
    port: u16,
}

/// A SOCKS5 proxy. With `require` it insists on these credentials; `reply`
/// is the CONNECT reply code (0: success, then a tunnel to 127.0.0.1).
fn socks_proxy(
    require: Option<(&'static str, &'static str)>,
    reply: u8,
) -> (Listener, Arc<Mutex<Vec<SocksSeen>>>) {
    let log: Arc<Mutex<Vec<SocksSeen>>> = Arc::default();
    let l = log.clone();
    let server = Listener::start(move |mut s| {
        let mut seen = SocksSeen::default();
        let mut b2 = [0u8; 2];
        s.read_exact(&mut b2).unwrap();
        assert_eq!(b2[0], 5);
        seen.methods = vec![0; usize::from(b2[1])];
        s.read_exact(&mut seen.methods).unwrap();
        if require.is_some() {
            if !seen.methods.contains(&2) {
                let _ = s.write_all(&[5, 0xff]);
                l.lock().unwrap().push(seen);
                return;
            }
            s.write_all(&[5, 2]).unwrap();
            let mut v = [0u8; 2];
            s.read_exact(&mut v).unwrap();
            let mut user = vec![0u8; usize::from(v[1])];
            s.read_exact(&mut user).unwrap();
            let mut n = [0u8; 1];
            s.read_exact(&mut n).unwrap();
            let mut pass = vec![0u8; usize::from(n[0])];
            s.read_exact(&mut pass).unwrap();
            let got = (
                String::from_utf8(user).unwrap(),
                String::from_utf8(pass).unwrap(),
            );
            let good = require.is_some_and(|(u, p)| got.0 == u && got.1 == p);
            seen.credentials = Some(got);
            s.write_all(&[1, if good { 0 } else { 1 }]).unwrap();
            if !good {
                l.lock().unwrap().push(seen);
                return;
            }
        } else {
            s.write_all(&[5, 0]).unwrap();
        }
        let mut req = [0u8; 4];
        s.read_exact(&mut req).unwrap();
        assert_eq!(&req[..3], &[5, 1, 0]);
        match req[3] {
            1 => {
                let mut a = [0u8; 4];
                s.read_exact(&mut a).unwrap();
                seen.host = Ipv4Addr::from(a).to_string();
            }
            3 => {
                let mut n = [0u8; 1];
                s.read_exact(&mut n).unwrap();
                let mut name = vec![0u8; usize::from(n[0])];
                s.read_exact(&mut name).unwrap();
                seen.host = String::from_utf8(name).unwrap();
                seen.name = true;
            }
            t => panic!("address type {t}"),
        }
        let mut p = [0u8; 2];
        s.read_exact(&mut p).unwrap();
        seen.port = u16::from_be_bytes(p);
        let port = seen.port;
        l.lock().unwrap().push(seen);
        // A reply with a domain-name bound address, as some proxies send.
        let mut answer = vec![5, reply, 0, 3, 5];
        answer.extend_from_slice(b"bound");
        answer.extend_from_slice(&port.to_be_bytes());
        s.write_all(&answer).unwrap();
        if reply != 0 {
            return;
        }
        let origin = TcpStream::connect((LOCALHOST, port)).unwrap();
        pipe(s, origin);
    });
    (server, log)
}

fn nam_via(proxy: &str, proxy_port: u16) -> NetworkAccessManager {
    NetworkAccessManager::builder()
        .resolve("proxy.test", proxy_port, [LOCALHOST])
        .proxy(ProxyConfig::explicit(Proxy::parse(proxy).unwrap()))
        .build(backend_ureq::factory)
        .unwrap()
}

fn get_text(nam: &NetworkAccessManager, url: &str) -> handle_api::Result<String> {
    let mut h = nam.load(ResourceRequest::get(url).build().unwrap());
    h.response_blocking()?;
    h.text_blocking()
}

#[test]
fn http_is_forwarded_in_absolute_form_with_preemptive_credentials() {
    let (proxy, log) = answering_server();
    let nam = nam_via(
        &format!("http://al%3Aice:se%40cret@proxy.test:{}", proxy.port),
        proxy.port,
    );
    // The origin's name is the proxy's to resolve: `.invalid` never resolves here.
    let url = "http://origin.invalid:8080/x?y=1";
    assert_eq!(
        get_text(&nam, url).unwrap(),
        "http://origin.invalid:8080/x?y=1"
    );
    let mut h = nam.load(
        ResourceRequest::post("http://origin.invalid/up")
            .body("12345")
            .build()
            .unwrap(),
    );
    assert_eq!(h.response_blocking().unwrap().status(), 200);
    h.bytes_blocking().unwrap();

    let log = log.lock().unwrap().clone();
    assert_eq!(log[0].line, "GET http://origin.invalid:8080/x?y=1 HTTP/1.1");
    assert_eq!(log[0].header("host"), Some("origin.invalid:8080"));
    // "al:ice" and "se@cret", percent-decoded, then Basic.
    assert_eq!(
        log[0].header("proxy-authorization"),
        Some("Basic YWw6aWNlOnNlQGNyZXQ=")
    );
    assert_eq!(log[1].line, "POST http://origin.invalid/up HTTP/1.1");
    assert_eq!(log[1].header("content-length"), Some("5"));
    // Connections to the proxy are pooled per origin: the third load reuses
    // the first one, the second (another port) had its own.
    assert_eq!(
        get_text(&nam, url).unwrap(),
        "http://origin.invalid:8080/x?y=1"
    );
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 2);
}

#[test]
fn no_proxy_means_direct_whatever_the_environment() {
    // ureq would honour these variables on its own; with no proxy chosen by
    // the manager the load must still go straight to the origin. (Only this
    // test reads the environment, so setting it here races with nothing.)
    for var in ["ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"] {
        std::env::set_var(var, "http://127.0.0.1:9");
    }
    let (origin, log) = answering_server();
    let nam = NetworkAccessManager::builder()
        .resolve("origin.test", origin.port, [LOCALHOST])
        .build(backend_ureq::factory)
        .unwrap();
    let url = format!("http://origin.test:{}/d", origin.port);
    assert_eq!(get_text(&nam, &url).unwrap(), "/d");
    assert_eq!(log.lock().unwrap()[0].line, "GET /d HTTP/1.1");
}

#[test]
fn https_goes_through_a_tunnel_that_carries_no_origin_header() {
    let ca = Ca::new("test ca");
    let origin = TlsServer::start(server_config(
        &ca.leaf(&["origin.test"], Validity::Valid, false),
        None,
    ));
    let (proxy, log) = connect_proxy("200 Connection established");
    let nam = NetworkAccessManager::builder()
        .resolve("proxy.test", proxy.port, [LOCALHOST])
        .tls_system_roots(false)
        .add_root_certificate(ca.certificate())
        .proxy(ProxyConfig::explicit(
            Proxy::parse(&format!("http://u:p@proxy.test:{}", proxy.port)).unwrap(),
        ))
        .build(backend_ureq::factory)
        .unwrap();
    let url = format!("https://origin.test:{}/t", origin.port);
    let mut h = nam.load(
        ResourceRequest::get(&url)
            .header("x-app", "1")
            .header("cookie", "a=b")
            .build()
            .unwrap(),
    );
    assert_eq!(h.response_blocking().unwrap().status(), 200);
    assert_eq!(h.text_blocking().unwrap(), "/t");
    // The pooled tunnel carries the next request.
    assert_eq!(get_text(&nam, &url).unwrap(), "/t");
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 1);

    let connects = log.lock().unwrap().clone();
    assert_eq!(connects.len(), 1);
    let authority = format!("origin.test:{}", origin.port);
    assert_eq!(connects[0].line, format!("CONNECT {authority} HTTP/1.1"));
    let names: Vec<&str> = connects[0]
        .headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(names, ["Host", "Proxy-Authorization"]);
    assert_eq!(connects[0].header("host"), Some(authority.as_str()));
    assert_eq!(
        connects[0].header("proxy-authorization"),
        Some("Basic dTpw")
    );

    let sessions = origin.sessions();
    let first = &sessions[0].requests[0];
    assert_eq!(first.line, "GET /t HTTP/1.1");
    assert_eq!(first.header("x-app"), Some("1"));
    assert_eq!(first.header("cookie"), Some("a=b"));
    // The proxy's credentials never reach the origin.
    assert_eq!(first.header("proxy-authorization"), None);
}

#[test]
fn a_refused_tunnel_is_a_proxy_error() {
    for status in [
        "407 Proxy Authentication Required",
        "403 Forbidden",
        "502 Bad Gateway",
    ] {
        let (proxy, _) = connect_proxy(status);
        let nam = nam_via(&format!("http://proxy.test:{}", proxy.port), proxy.port);
        let e = get_text(&nam, "https://origin.test:443/").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Proxy, "{status}: {e}");
    }
}

#[test]
fn an_unreachable_proxy_is_a_proxy_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for url in ["http://origin.test/", "https://origin.test/"] {
        for scheme in ["http", "socks5h"] {
            let nam = nam_via(&format!("{scheme}://proxy.test:{port}"), port);
            let e = get_text(&nam, url).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Proxy, "{scheme} {url}: {e}");
        }
    }
    // The proxy's name goes through the host overrides too.
    let nam = NetworkAccessManager::builder()
        .resolve("proxy.test", 3128, [])
        .proxy(ProxyConfig::explicit(
            Proxy::parse("http://proxy.test:3128").unwrap(),
        ))
        .build(backend_ureq::factory)
        .unwrap();
    let e = get_text(&nam, "http://origin.test/").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Proxy, "{e}");
}

#[test]
fn socks5h_sends_the_name_and_the_credentials() {
    let (origin, heads) = answering_server();
    let (proxy, seen) = socks_proxy(Some(("user", "pass")), 0);
    let nam = nam_via(
        &format!("socks5h://user:pass@proxy.test:{}", proxy.port),
        proxy.port,
    );
    let url = format!("http://origin.invalid:{}/s", origin.port);
    assert_eq!(get_text(&nam, &url).unwrap(), "/s");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].methods, [0, 2]);
    assert_eq!(
        seen[0].credentials,
        Some(("user".to_owned(), "pass".to_owned()))
    );
    assert_eq!(
        (seen[0].host.as_str(), seen[0].name, seen[0].port),
        ("origin.invalid", true, origin.port)
    );
    // Through SOCKS the request is the origin's, in origin form.
    let head = heads.lock().unwrap()[0].clone();
    assert_eq!(head.line, "GET /s HTTP/1.1");
    assert_eq!(head.header("proxy-authorization"), None);
}

#[test]
fn socks5_resolves_here_through_the_overrides() {
    let ca = Ca::new("test ca");
    let origin = TlsServer::start(server_config(
        &ca.leaf(&["origin.test"], Validity::Valid, false),
        None,
    ));
    let (proxy, seen) = socks_proxy(None, 0);
    let nam = NetworkAccessManager::builder()
        .resolve("proxy.test", proxy.port, [LOCALHOST])
        .resolve("origin.test", origin.port, [LOCALHOST])
        .tls_system_roots(false)
        .add_root_certificate(ca.certificate())
        .proxy(ProxyConfig::explicit(
            Proxy::parse(&format!("socks5://proxy.test:{}", proxy.port)).unwrap(),
        ))
        .build(backend_ureq::factory)
        .unwrap();
    let url = format!("https://origin.test:{}/tls", origin.port);
    assert_eq!(get_text(&nam, &url).unwrap(), "/tls");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].methods, [0]);
    assert_eq!(
        (seen[0].host.as_str(), seen[0].name, seen[0].port),
        ("127.0.0.1", false, origin.port)
    );
    assert_eq!(origin.sessions()[0].sni.as_deref(), Some("origin.test"));
}

#[test]
fn socks_failures_are_proxy_errors() {
    // The proxy cannot reach the target.
    let (proxy, _) = socks_proxy(None, 5);
    let nam = nam_via(&format!("socks5h://proxy.test:{}", proxy.port), proxy.port);
    let e = get_text(&nam, "http://origin.test/").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Proxy, "{e}");
    // It wants credentials and has none from us, or other ones.
    let (proxy, _) = socks_proxy(Some(("user", "pass")), 0);
    let nam = nam_via(&format!("socks5h://proxy.test:{}", proxy.port), proxy.port);
    let e = get_text(&nam, "http://origin.test/").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Proxy, "{e}");
    let nam = nam_via(
        &format!("socks5h://user:wrong@proxy.test:{}", proxy.port),
        proxy.port,
    );
    let e = get_text(&nam, "http://origin.test/").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Proxy, "{e}");
    // Not a SOCKS server at all.
    let http = Listener::start(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let nam = nam_via(&format!("socks5h://proxy.test:{}", http.port), http.port);
    let e = get_text(&nam, "http://origin.test/").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Proxy, "{e}");
}
