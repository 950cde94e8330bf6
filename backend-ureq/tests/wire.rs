//! The ureq backend against real servers on 127.0.0.1: what goes on the
//! wire, pooling, streaming both ways, timeouts, cancellation and error kinds.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use handle_api::{
    ErrorKind, HttpVersionPref, NetworkAccessManager, RequestBody, ResourceRequest, TimeoutPhase,
};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A request as the server received it; the body is counted, not kept.
#[derive(Debug, Clone, Default)]
struct Req {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body_len: u64,
    body_sum: u64,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The checksum both ends compute over a body.
fn checksum(sum: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)))
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Reads one request; `None` when the client closed the connection instead.
fn read_request(r: &mut impl BufRead) -> io::Result<Option<Req>> {
    let line = read_line(r)?;
    if line.is_empty() {
        return Ok(None);
    }
    let mut parts = line.split(' ');
    let mut req = Req {
        method: parts.next().unwrap_or_default().to_owned(),
        target: parts.next().unwrap_or_default().to_owned(),
        ..Req::default()
    };
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let (n, v) = line.split_once(':').expect("header line");
        req.headers.push((n.to_owned(), v.trim().to_owned()));
    }
    let count = |r: &mut dyn Read, mut n: u64, req: &mut Req| -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        while n > 0 {
            let want = buf.len().min(n as usize);
            r.read_exact(&mut buf[..want])?;
            req.body_len += want as u64;
            req.body_sum = checksum(req.body_sum, &buf[..want]);
            n -= want as u64;
        }
        Ok(())
    };
    if req.header("transfer-encoding") == Some("chunked") {
        loop {
            let size = u64::from_str_radix(read_line(r)?.trim(), 16).expect("chunk size");
            count(r, size, &mut req)?;
            read_line(r)?;
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = req.header("content-length") {
        count(r, len.parse().expect("content-length"), &mut req)?;
    }
    Ok(Some(req))
}

/// A server on 127.0.0.1:0; each connection runs `handler` on its own thread.
struct Server {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Req>>>,
}

type Handler = dyn Fn(BufReader<TcpStream>, &Mutex<Vec<Req>>) + Send + Sync;

impl Server {
    fn start(
        handler: impl Fn(BufReader<TcpStream>, &Mutex<Vec<Req>>) + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (c, r) = (connections.clone(), requests.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let (h, r) = (handler.clone(), r.clone());
                thread::spawn(move || h(BufReader::new(stream), &r));
            }
        });
        Server {
            port,
            connections,
            requests,
        }
    }

    /// Answers every request on a connection with `reply(request)`, keeping it alive.
    fn replying(reply: impl Fn(&Req) -> Vec<u8> + Send + Sync + 'static) -> Server {
        Server::start(move |mut conn, log| {
            while let Ok(Some(req)) = read_request(&mut conn) {
                let bytes = reply(&req);
                log.lock().unwrap().push(req);
                if conn.get_mut().write_all(&bytes).is_err() {
                    return;
                }
            }
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://origin.test:{}{path}", self.port)
    }

    fn nam(&self) -> NetworkAccessManager {
        nam_for(self.port)
    }

    fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }
}

fn nam_for(port: u16) -> NetworkAccessManager {
    NetworkAccessManager::builder()
        .resolve("origin.test", port, [LOCALHOST])
        .build(backend_ureq::factory)
        .expect("backend")
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A body of `len` bytes made on the fly, never held whole; records the
/// largest piece it was asked for.
struct Pattern {
    pos: u64,
    len: u64,
    largest_read: Arc<AtomicUsize>,
}

impl Pattern {
    fn new(len: u64) -> (Pattern, Arc<AtomicUsize>) {
        let largest = Arc::new(AtomicUsize::new(0));
        (
            Pattern {
                pos: 0,
                len,
                largest_read: largest.clone(),
            },
            largest,
        )
    }

    fn byte(i: u64) -> u8 {
        (i % 251) as u8
    }

    fn sum(len: u64) -> u64 {
        let mut s = 0;
        let mut i = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while i < len {
            let n = buf.len().min((len - i) as usize);
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = Pattern::byte(i + k as u64);
            }
            s = checksum(s, &buf[..n]);
            i += n as u64;
        }
        s
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.largest_read.fetch_max(buf.len(), Ordering::Relaxed);
        let n = buf.len().min((self.len - self.pos) as usize);
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = Pattern::byte(self.pos + k as u64);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[test]
fn sends_only_the_given_headers_and_reuses_the_connection() {
    let server = Server::replying(|_| ok("hello"));
    let nam = server.nam();
    for round in 0..2 {
        let mut h = nam.load(
            ResourceRequest::get(server.url("/x?q=1#frag"))
                .header("X-Custom", "one")
                .build()
                .unwrap(),
        );
        let resp = h.response_blocking().unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.reason(), "OK");
        assert_eq!(resp.remote_addr().map(|a| a.ip()), Some(LOCALHOST));
        assert_eq!(resp.expected_content_length(), Some(5));
        let t = resp.timing();
        assert!(t.dns.is_some() && t.request_sent.is_some() && t.first_byte.is_some());
        // Only the first load opened a connection; the second reused it.
        assert_eq!(t.connect.is_some(), round == 0, "{t:?}");
        assert_eq!(&h.bytes_blocking().unwrap()[..], b"hello");
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1, "keep-alive");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let r = &reqs[0];
    assert_eq!((r.method.as_str(), r.target.as_str()), ("GET", "/x?q=1"));
    let mut names: Vec<String> = r
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    names.sort();
    // Accept-Encoding is the manager's (content decoding is handle-api's).
    assert_eq!(
        names,
        [
            "accept",
            "accept-encoding",
            "host",
            "user-agent",
            "x-custom"
        ],
        "{r:?}"
    );
    assert_eq!(
        r.header("host"),
        Some(format!("origin.test:{}", server.port).as_str())
    );
    assert_eq!(r.header("accept"), Some("*/*"));
    assert!(r
        .header("user-agent")
        .unwrap()
        .starts_with("resource-handle/"));
}

#[test]
fn any_method_and_framing_rules() {
    let server = Server::replying(|req| {
        if req.method == "HEAD" {
            // A HEAD response announces a length but has no body.
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec()
        } else {
            ok(&format!("{} {}", req.method, req.body_len))
        }
    });
    let nam = server.nam();
    let cases: Vec<(&str, RequestBody, &str)> = vec![
        ("PURGE", RequestBody::Empty, "PURGE 0"),
        ("HEAD", RequestBody::Empty, ""),
        ("GET", RequestBody::Empty, "GET 0"),
        ("POST", RequestBody::Empty, "POST 0"),
        ("PUT", RequestBody::from("abc"), "PUT 3"),
        ("PROPFIND", RequestBody::from("<x/>"), "PROPFIND 4"),
        ("DELETE", RequestBody::Empty, "DELETE 0"),
    ];
    for (method, body, want) in cases {
        let mut h = nam.load(
            ResourceRequest::builder(method, server.url("/m"))
                .body(body)
                // No Accept-Encoding from the manager: one on the wire would be ureq's.
                .decode_content(false)
                .build()
                .unwrap(),
        );
        assert_eq!(h.response_blocking().unwrap().status(), 200, "{method}");
        assert_eq!(&h.text_blocking().unwrap(), want, "{method}");
    }
    // The HEAD response's announced length did not break the connection.
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    let reqs = server.requests();
    let framing = |r: &Req| {
        (
            r.header("content-length").map(str::to_owned),
            r.header("transfer-encoding").map(str::to_owned),
        )
    };
    for r in &reqs {
        match r.method.as_str() {
            "PURGE" | "HEAD" | "GET" | "DELETE" => assert_eq!(framing(r), (None, None), "{r:?}"),
            "POST" => assert_eq!(framing(r), (Some("0".into()), None)),
            "PUT" => assert_eq!(framing(r), (Some("3".into()), None)),
            "PROPFIND" => assert_eq!(framing(r), (Some("4".into()), None)),
            m => panic!("unexpected {m}"),
        }
        assert_eq!(r.header("expect"), None);
        assert_eq!(r.header("accept-encoding"), None);
    }
}

#[test]
fn uploads_stream_with_content_length_and_chunked() {
    const LEN: u64 = 16 << 20;
    let server = Server::replying(|req| {
        ok(&format!(
            "{} {} {} {}",
            req.body_len,
            req.body_sum,
            req.header("content-length").unwrap_or("-"),
            req.header("transfer-encoding").unwrap_or("-"),
        ))
    });
    let nam = server.nam();
    let want_sum = Pattern::sum(LEN);

    let (sized, largest) = Pattern::new(LEN);
    let mut h = nam.load(
        ResourceRequest::post(server.url("/up"))
            .body(RequestBody::sized(sized, LEN))
            .build()
            .unwrap(),
    );
    assert_eq!(
        h.text_blocking().unwrap(),
        format!("{LEN} {want_sum} {LEN} -")
    );
    let piece = largest.load(Ordering::Relaxed);
    assert!(
        piece > 0 && piece <= 1 << 20,
        "read in pieces, largest {piece}"
    );

    let (chunked, largest) = Pattern::new(LEN);
    let mut h = nam.load(
        ResourceRequest::post(server.url("/up"))
            .body(RequestBody::chunked(chunked))
            .build()
            .unwrap(),
    );
    assert_eq!(
        h.text_blocking().unwrap(),
        format!("{LEN} {want_sum} - chunked")
    );
    let piece = largest.load(Ordering::Relaxed);
    assert!(
        piece > 0 && piece <= 1 << 20,
        "read in pieces, largest {piece}"
    );
}

#[test]
fn a_failing_upload_is_an_io_error() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk gone"))
        }
    }
    let server = Server::replying(|_| ok(""));
    let mut h = server.nam().load(
        ResourceRequest::post(server.url("/up"))
            .body(RequestBody::sized(Broken, 10))
            .build()
            .unwrap(),
    );
    assert_eq!(h.response_blocking().unwrap_err().kind(), ErrorKind::Io);
    // Shorter than declared is refused too, never sent short.
    let mut h = server.nam().load(
        ResourceRequest::post(server.url("/up"))
            .body(RequestBody::sized(&b"abc"[..], 10))
            .build()
            .unwrap(),
    );
    assert_eq!(h.response_blocking().unwrap_err().kind(), ErrorKind::Io);
}

#[test]
fn response_bodies_stream_with_backpressure() {
    const LEN: u64 = 64 << 20;
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    let server = Server::start(move |mut conn, _| {
        if read_request(&mut conn).ok().flatten().is_none() {
            return;
        }
        let s = conn.get_mut();
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n");
        s.write_all(head.as_bytes()).unwrap();
        let block = vec![7u8; 64 * 1024];
        let mut sent = 0;
        while sent < LEN {
            if s.write_all(&block).is_err() {
                return;
            }
            sent += block.len() as u64;
            w.store(sent, Ordering::SeqCst);
        }
    });
    let mut h = server
        .nam()
        .load(ResourceRequest::get(server.url("/big")).build().unwrap());
    h.response_blocking().unwrap();
    let first = h.chunk_blocking().unwrap().unwrap();
    // A piece takes at most a quarter of the handle's buffer, so several fit
    // before backpressure stops the reads.
    assert!(!first.is_empty() && first.len() <= handle_api::BODY_BUFFER_BYTES / 4);
    // The application stops reading: the server must stall once the
    // buffers between it and the application are full.
    thread::sleep(Duration::from_millis(500));
    let stalled = written.load(Ordering::SeqCst);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        written.load(Ordering::SeqCst),
        stalled,
        "server should be blocked"
    );
    assert!(stalled < 32 << 20, "{stalled} bytes in flight");
    let mut total = first.len() as u64;
    while let Some(c) = h.chunk_blocking().unwrap() {
        total += c.len() as u64;
    }
    assert_eq!(total, LEN);
}

#[test]
fn total_timeout_covers_the_head_and_the_body() {
    let server = Server::start(|mut conn, _| {
        let Ok(Some(req)) = read_request(&mut conn) else {
            return;
        };
        if req.target == "/slow-body" {
            let _ = conn
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        }
        thread::sleep(Duration::from_secs(5));
    });
    let nam = server.nam();
    for path in ["/slow-head", "/slow-body"] {
        let started = Instant::now();
        let mut h = nam.load(
            ResourceRequest::get(server.url(path))
                .timeout(Duration::from_millis(400))
                .build()
                .unwrap(),
        );
        let err = h.bytes_blocking().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{path}: {err:?}");
        assert_eq!(err.timeout_phase(), Some(TimeoutPhase::Total), "{path}");
        assert!(started.elapsed() < Duration::from_secs(3), "{path}");
    }
}

#[test]
fn connect_timeout_when_the_server_never_accepts() {
    // A listener that never accepts: once its queue is full, new SYNs are dropped.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut filler = Vec::new();
    let mut full = false;
    for _ in 0..4096 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => filler.push(s),
            Err(_) => {
                full = true;
                break;
            }
        }
    }
    assert!(full, "could not fill the accept queue");
    let started = Instant::now();
    let mut h = nam_for(addr.port()).load(
        ResourceRequest::get(format!("http://origin.test:{}/", addr.port()))
            .connect_timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let err = h.response_blocking().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert_eq!(err.timeout_phase(), Some(TimeoutPhase::Connect));
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(listener);
}

/// A server that answers `/head-then-stall` with part of a body and then
/// waits, and `/stall` with nothing; it reports when the client hung up.
fn stalling_server() -> (Server, mpsc::Receiver<Instant>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let server = Server::start(move |mut conn, _| {
        let Ok(Some(req)) = read_request(&mut conn) else {
            return;
        };
        if req.target == "/ok" {
            let _ = conn.get_mut().write_all(&ok("fine"));
            let _ = read_request(&mut conn);
            return;
        }
        if req.target == "/head-then-stall" {
            let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n";
            let _ = conn.get_mut().write_all(head);
            let _ = conn.get_mut().write_all(&[1u8; 1000]);
        }
        conn.get_mut()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 16];
        // Returns 0 (or an error) when the client closes the connection.
        let _ = conn.read(&mut buf);
        let _ = tx.lock().unwrap().send(Instant::now());
    });
    (server, rx)
}

#[test]
fn cancel_mid_body_closes_the_connection_promptly() {
    let (server, hung_up) = stalling_server();
    let nam = server.nam();
    let mut h = nam.load(
        ResourceRequest::get(server.url("/head-then-stall"))
            .build()
            .unwrap(),
    );
    assert_eq!(h.response_blocking().unwrap().status(), 200);
    assert!(h.chunk_blocking().unwrap().is_some());
    let cancelled = Instant::now();
    h.cancel();
    assert_eq!(h.chunk_blocking().unwrap_err().kind(), ErrorKind::Cancelled);
    let closed = hung_up
        .recv_timeout(Duration::from_secs(5))
        .expect("connection closed");
    assert!(closed.duration_since(cancelled) < Duration::from_secs(2));
    // The backend is still usable (on a new connection).
    let mut h = nam.load(ResourceRequest::get(server.url("/ok")).build().unwrap());
    assert_eq!(h.text_blocking().unwrap(), "fine");
}

#[test]
fn dropping_the_handle_while_waiting_for_the_head_closes_the_connection() {
    let (server, hung_up) = stalling_server();
    let nam = server.nam();
    let h = nam.load(ResourceRequest::get(server.url("/stall")).build().unwrap());
    // Let the request reach the server, then give up on it.
    thread::sleep(Duration::from_millis(200));
    let dropped = Instant::now();
    drop(h);
    let closed = hung_up
        .recv_timeout(Duration::from_secs(5))
        .expect("connection closed");
    assert!(closed.duration_since(dropped) < Duration::from_secs(2));
    let mut h = nam.load(ResourceRequest::get(server.url("/ok")).build().unwrap());
    assert_eq!(h.text_blocking().unwrap(), "fine");
}

#[test]
fn connection_refused_is_connect() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut h = nam_for(port).load(
        ResourceRequest::get(format!("http://origin.test:{port}/"))
            .build()
            .unwrap(),
    );
    let err = h.response_blocking().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err:?}");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn a_name_mapped_to_no_address_is_dns() {
    let nam = NetworkAccessManager::builder()
        .resolve("nowhere.test", 80, [])
        .build(backend_ureq::factory)
        .unwrap();
    let mut h = nam.load(
        ResourceRequest::get("http://nowhere.test/")
            .build()
            .unwrap(),
    );
    let err = h.response_blocking().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Dns, "{err:?}");
}

#[test]
fn a_body_shorter_than_its_length_is_truncated() {
    let server = Server::start(|mut conn, _| {
        if let Ok(Some(_)) = read_request(&mut conn) {
            let _ = conn
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        }
    });
    let mut h = server
        .nam()
        .load(ResourceRequest::get(server.url("/t")).build().unwrap());
    let err = h.bytes_blocking().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BodyTruncated, "{err:?}");
    let t = err.truncation().expect("counts");
    assert_eq!((t.expected, t.received), (Some(100), 10));
}

#[test]
fn a_malformed_status_line_is_protocol() {
    let server = Server::start(|mut conn, _| {
        if let Ok(Some(_)) = read_request(&mut conn) {
            let _ = conn
                .get_mut()
                .write_all(b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let mut h = server
        .nam()
        .load(ResourceRequest::get(server.url("/p")).build().unwrap());
    let err = h.response_blocking().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err:?}");
}

#[test]
fn error_statuses_are_responses() {
    let server = Server::replying(|_| {
        b"HTTP/1.1 503 Come Back Later\r\nContent-Length: 4\r\n\r\nbusy".to_vec()
    });
    let mut h = server
        .nam()
        .load(ResourceRequest::get(server.url("/down")).build().unwrap());
    let resp = h.response_blocking().unwrap();
    assert_eq!(resp.status(), 503);
    // The reason phrase as received, not the canonical one.
    assert_eq!(resp.reason(), "Come Back Later");
    assert_eq!(h.text_blocking().unwrap(), "busy");
}

#[test]
fn http2_is_unsupported() {
    let server = Server::replying(|_| ok(""));
    let mut h = server.nam().load(
        ResourceRequest::get(server.url("/"))
            .http_version(HttpVersionPref::Http2PriorKnowledge)
            .build()
            .unwrap(),
    );
    assert_eq!(
        h.response_blocking().unwrap_err().kind(),
        ErrorKind::Unsupported
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);
}

#[test]
fn many_loads_in_flight_and_start_never_blocks() {
    let server = Server::replying(|req| ok(&req.target));
    let nam = server.nam();
    let started = Instant::now();
    let mut handles: Vec<_> = (0..40)
        .map(|i| {
            nam.load(
                ResourceRequest::get(server.url(&format!("/{i}")))
                    .build()
                    .unwrap(),
            )
        })
        .collect();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "start must not block"
    );
    for (i, h) in handles.iter_mut().enumerate() {
        assert_eq!(h.text_blocking().unwrap(), format!("/{i}"));
    }
}

#[test]
fn informational_heads_are_skipped_and_close_delimited_bodies_end_at_close() {
    let server = Server::start(|mut conn, _| {
        let Ok(Some(req)) = read_request(&mut conn) else {
            return;
        };
        let s = conn.get_mut();
        let _ = if req.target == "/early-hints" {
            s.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        } else {
            s.write_all(b"HTTP/1.0 200 OK\r\nX-Old: yes\r\n\r\nuntil the end")
        };
    });
    let nam = server.nam();
    let mut h = nam.load(
        ResourceRequest::get(server.url("/early-hints"))
            .build()
            .unwrap(),
    );
    let resp = h.response_blocking().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("link").is_none());
    assert_eq!(h.text_blocking().unwrap(), "ok");

    let mut h = nam.load(ResourceRequest::get(server.url("/old")).build().unwrap());
    let resp = h.response_blocking().unwrap();
    assert_eq!(resp.version(), handle_api::http::Version::HTTP_10);
    assert_eq!(h.text_blocking().unwrap(), "until the end");
}

#[test]
fn a_chunked_body_cut_short_is_truncated() {
    let server = Server::start(|mut conn, _| {
        if let Ok(Some(_)) = read_request(&mut conn) {
            let _ = conn.get_mut().write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n10\r\nabc",
            );
        }
    });
    let mut h = server
        .nam()
        .load(ResourceRequest::get(server.url("/c")).build().unwrap());
    let err = h.bytes_blocking().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BodyTruncated, "{err:?}");
}
