//! Proxies on the hyper backend against scripted proxies on 127.0.0.1: the
//! exact bytes of a CONNECT and of the SOCKS5 handshakes, forwarded
//! requests pooled per proxy, and every proxy failure reported as `proxy`.
//! The proxy's own name, `proxy.test`, goes through the host overrides.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use handle_api::{
    ErrorKind, NetworkAccessManager, Proxy, ProxyConfig, ResourceRequest, TlsProblem,
};
use support::{pki, H2Server, Speaks, LOCALHOST};

/// A scripted proxy: each connection goes to `script` on its own thread.
struct Scripted {
    port: u16,
    accepted: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Scripted {
    fn start(script: impl Fn(TcpStream, &Mutex<Vec<Vec<u8>>>) + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind((LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let (a, s) = (accepted.clone(), seen.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                a.fetch_add(1, Ordering::SeqCst);
                let (script, s) = (script.clone(), s.clone());
                thread::spawn(move || script(stream, &s));
            }
        });
        Scripted {
            port,
            accepted,
            seen,
        }
    }

    fn seen(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap().clone()
    }

    fn nam(
        &self,
        spec: &str,
        extra: impl FnOnce(&mut Vec<(&'static str, u16)>),
    ) -> NetworkAccessManager {
        manager(&format!("{spec}proxy.test:{}", self.port), self.port, extra)
    }
}

fn manager(
    proxy: &str,
    proxy_port: u16,
    extra: impl FnOnce(&mut Vec<(&'static str, u16)>),
) -> NetworkAccessManager {
    let mut names = vec![("proxy.test", proxy_port)];
    extra(&mut names);
    let mut b = NetworkAccessManager::builder()
        .proxy(ProxyConfig::explicit(Proxy::parse(proxy).unwrap()))
        .tls_system_roots(false)
        .add_root_certificates_pem(pki().ca_pem.as_bytes())
        .unwrap();
    for (name, port) in names {
        b = b.resolve(name, port, [LOCALHOST]);
    }
    b.build(backend_hyper::factory).unwrap()
}

/// Reads one head, up to and including the blank line.
fn read_head(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            return Some(head);
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn forwarded_requests_are_absolute_and_share_the_proxy_connection() {
    let proxy = Scripted::start(|stream, seen| {
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut w = stream;
        while let Some(head) = read_head(&mut r) {
            seen.lock().unwrap().push(head);
            if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nforwarded")
                .is_err()
            {
                return;
            }
        }
    });
    let nam = proxy.nam("http://user:secret@", |_| {});
    // The origins are never resolved nor reached by the backend: the proxy is.
    for url in ["http://a.test:8001/x?q=1", "http://b.test:8002/y"] {
        let mut h = nam.load(
            ResourceRequest::get(url)
                .header("X-App", "1")
                .build()
                .unwrap(),
        );
        assert_eq!(h.text_blocking().unwrap(), "forwarded");
    }
    assert_eq!(proxy.accepted.load(Ordering::SeqCst), 1);
    let heads: Vec<String> = proxy.seen().iter().map(|h| text(h)).collect();
    assert!(
        heads[0].starts_with("GET http://a.test:8001/x?q=1 HTTP/1.1\r\n"),
        "{heads:?}"
    );
    assert!(
        heads[1].starts_with("GET http://b.test:8002/y HTTP/1.1\r\n"),
        "{heads:?}"
    );
    for h in &heads {
        let lower = h.to_ascii_lowercase();
        assert!(
            lower.contains("\r\nproxy-authorization: basic dxnlcjpzzwnyzxq=\r\n"),
            "{h}"
        );
        assert!(lower.contains("\r\nx-app: 1\r\n"), "{h}");
    }
    assert!(heads[0]
        .to_ascii_lowercase()
        .contains("\r\nhost: a.test:8001\r\n"));
}

#[test]
fn connect_carries_host_and_credentials_only() {
    // A tunnel to the TLS server, relayed both ways after `200`.
    let origin = H2Server::start(Speaks::Tls(&[b"http/1.1"]));
    let origin_port = origin.port;
    let proxy = Scripted::start(move |stream, seen| {
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut w = stream;
        let Some(head) = read_head(&mut r) else {
            return;
        };
        seen.lock().unwrap().push(head);
        let upstream = TcpStream::connect((LOCALHOST, origin_port)).unwrap();
        w.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .unwrap();
        let mut up_r = upstream.try_clone().unwrap();
        let mut down_w = w.try_clone().unwrap();
        thread::spawn(move || {
            let _ = std::io::copy(&mut up_r, &mut down_w);
        });
        let mut up_w = upstream;
        // Nothing was read past the head, so `r` holds no tunnel bytes.
        let _ = std::io::copy(&mut r, &mut up_w);
    });
    let nam = proxy.nam("http://u:p@", |_| {});
    let url = format!("https://tls.test:{origin_port}/bytes/4");
    for _ in 0..2 {
        let mut h = nam.load(
            ResourceRequest::get(url.as_str())
                .header("X-App", "secret")
                .header("Cookie", "a=b")
                .header("Authorization", "Bearer t")
                .build()
                .unwrap(),
        );
        assert_eq!(&h.bytes_blocking().unwrap()[..], b"xxxx");
    }
    assert_eq!(proxy.accepted.load(Ordering::SeqCst), 1);
    let target = format!("tls.test:{origin_port}");
    assert_eq!(
        text(&proxy.seen()[0]),
        format!(
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\
             Proxy-Authorization: Basic dTpw\r\n\r\n"
        )
    );
    // The origin got the application's headers, and no proxy credentials.
    let seen = origin.requests();
    assert!(seen[0].headers.iter().any(|(n, _)| n == "x-app"));
    assert!(!seen[0]
        .headers
        .iter()
        .any(|(n, _)| n == "proxy-authorization"));
    assert_eq!(origin.hellos()[0].sni.as_deref(), Some("tls.test"));
}

/// A SOCKS5 proxy that records the handshake and then answers one HTTP
/// request itself, on the same socket.
fn socks_server(method: u8) -> Scripted {
    Scripted::start(move |stream, seen| {
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut w = stream;
        let mut record = Vec::new();
        let mut read = |n: usize, record: &mut Vec<u8>| {
            let mut b = vec![0u8; n];
            r.read_exact(&mut b).ok()?;
            record.extend_from_slice(&b);
            Some(b)
        };
        let Some(g) = read(2, &mut record) else {
            return;
        };
        if read(usize::from(g[1]), &mut record).is_none() {
            return;
        }
        w.write_all(&[5, method]).unwrap();
        if method == 2 {
            let Some(v) = read(2, &mut record) else {
                return;
            };
            let Some(u) = read(usize::from(v[1]), &mut record) else {
                return;
            };
            let Some(pl) = read(1, &mut record) else {
                return;
            };
            let Some(p) = read(usize::from(pl[0]), &mut record) else {
                return;
            };
            let ok = u == b"sock" && p == b"pw";
            w.write_all(&[1, if ok { 0 } else { 1 }]).unwrap();
            if !ok {
                seen.lock().unwrap().push(record);
                return;
            }
        }
        if method == 0xff {
            seen.lock().unwrap().push(record);
            return;
        }
        let Some(req) = read(4, &mut record) else {
            return;
        };
        let addr_len = match req[3] {
            1 => 4,
            4 => 16,
            _ => {
                let Some(l) = read(1, &mut record) else {
                    return;
                };
                usize::from(l[0])
            }
        };
        if read(addr_len + 2, &mut record).is_none() {
            return;
        }
        seen.lock().unwrap().push(record);
        w.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
        let mut rest = r;
        if read_head(&mut rest).is_some() {
            let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsocks");
        }
    })
}

#[test]
fn socks5_handshakes_resolve_where_asked() {
    let port = 8443u16.to_be_bytes();
    // socks5: the origin's name resolved here, through the overrides.
    let local = socks_server(0);
    let nam = local.nam("socks5://", |n| n.push(("origin.test", 8443)));
    let mut h = nam.load(
        ResourceRequest::get("http://origin.test:8443/")
            .build()
            .unwrap(),
    );
    assert_eq!(h.text_blocking().unwrap(), "socks");
    assert_eq!(
        local.seen()[0],
        [&[5, 1, 0][..], &[5, 1, 0, 1, 127, 0, 0, 1], &port].concat()
    );

    // socks5h with credentials: the name goes to the proxy.
    let remote = socks_server(2);
    let nam = remote.nam("socks5h://sock:pw@", |_| {});
    let mut h = nam.load(
        ResourceRequest::get("http://origin.test:8443/")
            .build()
            .unwrap(),
    );
    assert_eq!(h.text_blocking().unwrap(), "socks");
    let mut expected = vec![5, 2, 0, 2, 1, 4];
    expected.extend_from_slice(b"sock");
    expected.push(2);
    expected.extend_from_slice(b"pw");
    expected.extend_from_slice(&[5, 1, 0, 3, 11]);
    expected.extend_from_slice(b"origin.test");
    expected.extend_from_slice(&port);
    assert_eq!(remote.seen()[0], expected);
}

#[test]
fn proxy_failures_are_proxy_errors() {
    let fails = |nam: &NetworkAccessManager, url: &str| {
        let mut h = nam.load(ResourceRequest::get(url).build().unwrap());
        h.response_blocking().unwrap_err()
    };
    // Nobody listens on the proxy's port.
    let closed = TcpListener::bind((LOCALHOST, 0)).unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    for scheme in ["http://", "socks5h://"] {
        let nam = manager(
            &format!("{scheme}proxy.test:{closed_port}"),
            closed_port,
            |_| {},
        );
        for url in ["http://a.test/", "https://a.test/"] {
            let e = fails(&nam, url);
            assert_eq!(e.kind(), ErrorKind::Proxy, "{scheme} {url}: {e}");
        }
    }
    // The proxy's name is mapped to no address.
    let nam = NetworkAccessManager::builder()
        .proxy(ProxyConfig::explicit(
            Proxy::parse("http://nowhere.test:1").unwrap(),
        ))
        .resolve("nowhere.test", 1, Vec::<std::net::IpAddr>::new())
        .build(backend_hyper::factory)
        .unwrap();
    assert_eq!(fails(&nam, "http://a.test/").kind(), ErrorKind::Proxy);

    // CONNECT refused, and a proxy that hangs up instead of answering.
    let refusing = Scripted::start(|stream, _| {
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut w = stream;
        if read_head(&mut r).is_some() {
            let _ = w.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let e = fails(&refusing.nam("", |_| {}), "https://a.test/");
    assert_eq!(e.kind(), ErrorKind::Proxy, "{e}");
    assert!(e.to_string().contains("502"), "{e}");
    let hanging_up = Scripted::start(|stream, _| {
        let mut r = BufReader::new(stream);
        let _ = read_head(&mut r);
    });
    let e = fails(&hanging_up.nam("", |_| {}), "https://a.test/");
    assert_eq!(e.kind(), ErrorKind::Proxy, "{e}");

    // SOCKS5: no acceptable method, wrong credentials, a refused connect.
    let e = fails(
        &socks_server(0xff).nam("socks5h://", |_| {}),
        "http://a.test/",
    );
    assert_eq!(e.kind(), ErrorKind::Proxy, "{e}");
    let e = fails(
        &socks_server(2).nam("socks5h://sock:wrong@", |_| {}),
        "http://a.test/",
    );
    assert_eq!(e.kind(), ErrorKind::Proxy, "{e}");
    let refusing = Scripted::start(|stream, _| {
        let mut r = stream.try_clone().unwrap();
        let mut w = stream;
        let mut b = [0u8; 3];
        r.read_exact(&mut b).unwrap();
        w.write_all(&[5, 0]).unwrap();
        let mut req = [0u8; 10];
        let _ = r.read_exact(&mut req);
        let _ = w.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
    });
    let e = fails(
        &refusing.nam("socks5://", |n| n.push(("a.test", 80))),
        "http://a.test/",
    );
    assert_eq!(e.kind(), ErrorKind::Proxy, "{e}");
    assert!(e.to_string().contains("connection refused"), "{e}");
}

#[test]
fn socks5_local_resolution_failure_is_dns_and_tls_problems_pass_through() {
    let socks = socks_server(0);
    let nam = NetworkAccessManager::builder()
        .proxy(ProxyConfig::explicit(
            Proxy::parse(&format!("socks5://proxy.test:{}", socks.port)).unwrap(),
        ))
        .resolve("proxy.test", socks.port, [LOCALHOST])
        .resolve("gone.test", 80, Vec::<std::net::IpAddr>::new())
        .build(backend_hyper::factory)
        .unwrap();
    let mut h = nam.load(ResourceRequest::get("http://gone.test/").build().unwrap());
    assert_eq!(h.response_blocking().unwrap_err().kind(), ErrorKind::Dns);
    assert!(socks.seen().is_empty());

    // Through a tunnel, the origin's certificate is still checked: the
    // proxy relays to a TLS server whose CA this manager does not trust.
    let origin = H2Server::start(Speaks::Tls(&[b"http/1.1"]));
    let origin_port = origin.port;
    let proxy = Scripted::start(move |stream, _| {
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut w = stream;
        if read_head(&mut r).is_none() {
            return;
        }
        let upstream = TcpStream::connect((LOCALHOST, origin_port)).unwrap();
        w.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        let mut up_r = upstream.try_clone().unwrap();
        let mut down_w = w;
        thread::spawn(move || {
            let _ = std::io::copy(&mut up_r, &mut down_w);
        });
        let mut up_w = upstream;
        let _ = std::io::copy(&mut r, &mut up_w);
    });
    let nam = NetworkAccessManager::builder()
        .proxy(ProxyConfig::explicit(
            Proxy::parse(&format!("http://proxy.test:{}", proxy.port)).unwrap(),
        ))
        .resolve("proxy.test", proxy.port, [LOCALHOST])
        .tls_system_roots(false)
        .build(backend_hyper::factory)
        .unwrap();
    let mut h = nam.load(
        ResourceRequest::get(format!("https://tls.test:{origin_port}/"))
            .build()
            .unwrap(),
    );
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.tls_problem(), Some(TlsProblem::UntrustedIssuer), "{e}");
}
