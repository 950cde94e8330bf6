//! The curl backend against real servers on 127.0.0.1: each test starts a
//! small `TcpListener` server on its own thread, scripts its bytes, and checks
//! what the backend sent and what the handle reports.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use handle_api::{
    ErrorKind, NetworkAccessManager, RequestBody, ResourceRequest, TimeoutPhase, BODY_BUFFER_BYTES,
};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// ---------------------------------------------------------------------------
// A tiny server.

/// A listener on 127.0.0.1:0 that runs `handler` for every connection on a
/// thread of its own.
struct Server {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Server {
    fn start(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind((LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let handler = Arc::new(handler);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                thread::spawn(move || handler(stream));
            }
        });
        Server { port, connections }
    }

    fn url(&self, path: &str) -> String {
        format!("http://origin.test:{}{path}", self.port)
    }

    fn nam(&self) -> NetworkAccessManager {
        NetworkAccessManager::builder()
            .resolve("origin.test", self.port, [LOCALHOST])
            .build(backend_curl::factory)
            .unwrap()
    }
}

/// A request as the server received it.
#[derive(Debug, Default)]
struct Received {
    method: String,
    target: String,
    /// Lower-cased names, in received order.
    headers: Vec<(String, String)>,
    body_len: u64,
    body_hash: u64,
    body_start: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request (head and body); `None` when the client closed.
fn read_request(r: &mut BufReader<TcpStream>) -> io::Result<Option<Received>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let mut req = Received {
        method: parts.next().unwrap_or_default().to_owned(),
        target: parts.next().unwrap_or_default().to_owned(),
        ..Default::default()
    };
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').expect("header line");
        req.headers
            .push((n.to_ascii_lowercase(), v.trim().to_owned()));
    }
    let mut sink = BodySink::default();
    if req.header("transfer-encoding") == Some("chunked") {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = u64::from_str_radix(line.trim_end(), 16).expect("chunk size");
            if size == 0 {
                line.clear();
                r.read_line(&mut line)?; // the CRLF after the last chunk
                break;
            }
            sink.copy(r, size)?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(len) = req.header("content-length") {
        sink.copy(r, len.parse().unwrap())?;
    }
    (req.body_len, req.body_hash, req.body_start) = (sink.len, sink.hash, sink.start);
    Ok(Some(req))
}

#[derive(Default)]
struct BodySink {
    len: u64,
    hash: u64,
    start: Vec<u8>,
}

impl BodySink {
    fn copy(&mut self, r: &mut impl Read, mut n: u64) -> io::Result<()> {
        let mut buf = [0u8; 64 * 1024];
        while n > 0 {
            let want = buf.len().min(n as usize);
            let got = r.read(&mut buf[..want])?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            for &b in &buf[..got] {
                self.hash = hash_step(self.hash, b);
            }
            let keep = (64 - self.start.len()).min(got);
            self.start.extend_from_slice(&buf[..keep]);
            self.len += got as u64;
            n -= got as u64;
        }
        Ok(())
    }
}

fn hash_step(h: u64, b: u8) -> u64 {
    h.wrapping_mul(31).wrapping_add(u64::from(b))
}

/// A request body generated as it is read: never held in memory.
struct Generated {
    pos: u64,
    len: u64,
    fail_at: Option<u64>,
}

impl Generated {
    fn new(len: u64) -> Self {
        Generated {
            pos: 0,
            len,
            fail_at: None,
        }
    }

    fn byte(i: u64) -> u8 {
        (i % 251) as u8
    }

    fn hash(len: u64) -> u64 {
        (0..len).fold(0, |h, i| hash_step(h, Self::byte(i)))
    }
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.fail_at.is_some_and(|f| self.pos >= f) {
            return Err(io::Error::other("disk on fire"));
        }
        let n = buf.len().min((self.len - self.pos) as usize);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = Self::byte(self.pos + i as u64);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Serves keep-alive requests, answering each with `respond(request)`.
fn keep_alive(respond: impl Fn(&Received) -> Vec<u8> + Send + Sync + 'static) -> Server {
    Server::start(move |stream| {
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        while let Ok(Some(req)) = read_request(&mut r) {
            if w.write_all(&respond(&req)).is_err() {
                return;
            }
        }
    })
}

/// Reads one request, then writes `bytes` and closes.
fn scripted(bytes: &'static [u8]) -> Server {
    Server::start(move |stream| {
        let mut w = stream.try_clone().unwrap();
        let _ = read_request(&mut BufReader::new(stream));
        let _ = w.write_all(bytes);
    })
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------
// Requests on the wire.

#[test]
fn keep_alive_reuses_one_connection() {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let server = keep_alive(move |req| {
        let _ = tx.lock().unwrap().send(format!("{:?}", req.headers));
        ok("hello")
    });
    let nam = server.nam();
    for _ in 0..2 {
        // Without decoding the manager sends no Accept-Encoding, so one on the
        // wire could only be curl's own.
        let req = ResourceRequest::get(server.url("/x"))
            .decode_content(false)
            .build()
            .unwrap();
        let mut h = nam.load(req);
        let resp = h.response_blocking().unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.reason(), "OK");
        assert_eq!(
            resp.remote_addr(),
            Some(SocketAddr::new(LOCALHOST, server.port))
        );
        assert!(resp.timing().first_byte.is_some());
        assert_eq!(&h.bytes_blocking().unwrap()[..], b"hello");
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    let headers = rx.recv().unwrap();
    // Only what the manager decided, plus Host: no Accept-Encoding, Expect,
    // framing or cookies of curl's own.
    for name in [
        "accept-encoding",
        "expect",
        "content-length",
        "transfer-encoding",
        "cookie",
        "content-type",
    ] {
        assert!(!headers.contains(&format!("\"{name}\"")), "{headers}");
    }
    assert!(headers.contains("(\"accept\", \"*/*\")"), "{headers}");
    assert!(headers.contains("\"user-agent\""), "{headers}");
    assert!(headers.contains("\"host\""), "{headers}");
}

/// Echoes what framed the request, so a test can check the wire.
fn echo_server() -> Server {
    keep_alive(|req| {
        if req.header("expect").is_some() {
            // This server never says 100 Continue: an Expect would stall the upload.
            return b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n".to_vec();
        }
        let mut echo = format!(
            "{} {} cl={:?} te={:?} ct={:?} x-empty={:?} body={} start={:?}",
            req.method,
            req.target,
            req.header("content-length"),
            req.header("transfer-encoding"),
            req.header("content-type"),
            req.header("x-empty"),
            req.body_len,
            String::from_utf8_lossy(&req.body_start),
        );
        if req.target == "/auth" {
            echo.push_str(&format!(" auth={:?}", req.header("authorization")));
        }
        if req.method == "HEAD" {
            // A HEAD answer declares the GET body's length and sends none.
            return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
        }
        if req.target == "/missing" {
            return format!(
                "HTTP/1.1 404 Not Here\r\nContent-Length: {}\r\n\r\n{echo}",
                echo.len()
            )
            .into_bytes();
        }
        ok(&echo)
    })
}

fn load_text(nam: &NetworkAccessManager, req: ResourceRequest) -> String {
    let mut h = nam.load(req);
    h.text_blocking().unwrap()
}

#[test]
fn any_method_goes_out_as_given() {
    let server = echo_server();
    let nam = server.nam();
    let req = |m: &str| ResourceRequest::builder(m, server.url("/m?q=1"));

    let t = load_text(&nam, req("GET").build().unwrap());
    assert_eq!(
        t,
        "GET /m?q=1 cl=None te=None ct=None x-empty=None body=0 start=\"\""
    );
    let t = load_text(&nam, req("PURGE").build().unwrap());
    assert_eq!(
        t,
        "PURGE /m?q=1 cl=None te=None ct=None x-empty=None body=0 start=\"\""
    );
    let t = load_text(&nam, req("PURGE").body("abc").build().unwrap());
    assert_eq!(
        t,
        "PURGE /m?q=1 cl=Some(\"3\") te=None ct=None x-empty=None body=3 start=\"abc\""
    );
    // Credentials in the url are handle-api's business: curl adds no
    // Authorization of its own.
    let t = load_text(
        &nam,
        ResourceRequest::get(format!("http://user:pw@origin.test:{}/auth", server.port))
            .build()
            .unwrap(),
    );
    assert!(
        t.starts_with("GET /auth ") && t.contains("auth=None"),
        "{t}"
    );
    let t = load_text(&nam, req("DELETE").build().unwrap());
    assert!(t.starts_with("DELETE /m?q=1 cl=None te=None"), "{t}");
    // POST, PUT and PATCH with an empty body say so with Content-Length: 0;
    // curl's form Content-Type is not added.
    for m in ["POST", "PUT", "PATCH"] {
        let t = load_text(&nam, req(m).build().unwrap());
        assert_eq!(
            t,
            format!("{m} /m?q=1 cl=Some(\"0\") te=None ct=None x-empty=None body=0 start=\"\"")
        );
    }
    let t = load_text(
        &nam,
        req("POST")
            .header("content-type", "text/plain")
            .header("x-empty", "")
            .body("posted")
            .build()
            .unwrap(),
    );
    assert_eq!(
        t,
        "POST /m?q=1 cl=Some(\"6\") te=None ct=Some(\"text/plain\") x-empty=Some(\"\") body=6 start=\"posted\""
    );
    let t = load_text(&nam, req("PUT").body("put it").build().unwrap());
    assert!(t.starts_with("PUT /m?q=1 cl=Some(\"6\") te=None"), "{t}");

    // HEAD: the response's Content-Length describes a body that never comes.
    let mut h = nam.load(req("HEAD").build().unwrap());
    assert_eq!(h.response_blocking().unwrap().status(), 200);
    assert!(h.bytes_blocking().unwrap().is_empty());

    // 4xx is a response, not an error.
    let mut h = nam.load(
        ResourceRequest::get(server.url("/missing"))
            .build()
            .unwrap(),
    );
    let resp = h.response_blocking().unwrap();
    assert_eq!((resp.status().as_u16(), resp.reason()), (404, "Not Here"));
    assert!(h.text_blocking().unwrap().starts_with("GET /missing"));
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn upload_streams_with_content_length() {
    const LEN: u64 = 64 << 20;
    let server = echo_server();
    let nam = server.nam();
    let req = ResourceRequest::builder("PUT", server.url("/up"))
        .body(RequestBody::sized(Generated::new(LEN), LEN))
        .build()
        .unwrap();
    let t = load_text(&nam, req);
    assert!(
        t.starts_with(&format!("PUT /up cl=Some(\"{LEN}\") te=None")),
        "{t}"
    );
    assert!(t.contains(&format!("body={LEN} ")), "{t}");
}

#[test]
fn upload_streams_chunked() {
    const LEN: u64 = (8 << 20) + 17;
    let server = keep_alive(|req| {
        ok(&format!(
            "{} te={:?} cl={:?} len={} hash={}",
            req.method,
            req.header("transfer-encoding"),
            req.header("content-length"),
            req.body_len,
            req.body_hash
        ))
    });
    let nam = server.nam();
    for m in ["POST", "PATCH"] {
        let req = ResourceRequest::builder(m, server.url("/up"))
            .body(RequestBody::chunked(Generated::new(LEN)))
            .build()
            .unwrap();
        let t = load_text(&nam, req);
        assert_eq!(
            t,
            format!(
                "{m} te=Some(\"chunked\") cl=None len={LEN} hash={}",
                Generated::hash(LEN)
            )
        );
    }
}

#[test]
fn upload_read_error_is_io() {
    let server = echo_server();
    let nam = server.nam();
    let body = Generated {
        pos: 0,
        len: 1 << 20,
        fail_at: Some(300 << 10),
    };
    let mut h = nam.load(
        ResourceRequest::post(server.url("/up"))
            .body(RequestBody::sized(body, 1 << 20))
            .build()
            .unwrap(),
    );
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e:?}");
    assert!(format!("{e:?}").contains("disk on fire"), "{e:?}");

    // A stream shorter than its declared length is an error, not a short upload.
    let mut h = nam.load(
        ResourceRequest::post(server.url("/up"))
            .body(RequestBody::sized(Generated::new(10), 20))
            .build()
            .unwrap(),
    );
    assert_eq!(h.response_blocking().unwrap_err().kind(), ErrorKind::Io);
}

// ---------------------------------------------------------------------------
// Response bodies.

#[test]
fn download_is_streamed_with_backpressure() {
    const LEN: u64 = 64 << 20;
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    let server = Server::start(move |stream| {
        let mut out = stream.try_clone().unwrap();
        let _ = read_request(&mut BufReader::new(stream));
        let _ = write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n");
        let buf = vec![7u8; 64 * 1024];
        let mut left = LEN;
        while left > 0 {
            let n = buf.len().min(left as usize);
            if out.write_all(&buf[..n]).is_err() {
                return;
            }
            left -= n as u64;
            w.fetch_add(n as u64, Ordering::SeqCst);
        }
    });
    let nam = server.nam();
    let mut h = nam.load(ResourceRequest::get(server.url("/big")).build().unwrap());
    assert_eq!(
        h.response_blocking().unwrap().expected_content_length(),
        Some(LEN)
    );
    let mut got = h.chunk_blocking().unwrap().unwrap().len() as u64;
    thread::sleep(Duration::from_millis(700));
    // The application is not reading: the sink's buffer, curl's buffer and
    // the sockets' buffers are all that may fill.
    let stalled = written.load(Ordering::SeqCst);
    assert!(
        stalled < (BODY_BUFFER_BYTES as u64) + (24 << 20),
        "server wrote {stalled} bytes while nobody read"
    );
    while let Some(c) = h.chunk_blocking().unwrap() {
        assert!(c.iter().all(|&b| b == 7));
        got += c.len() as u64;
    }
    assert_eq!(got, LEN);
}

#[test]
fn chunked_response_with_trailers_and_interim_heads() {
    let server = scripted(
        b"HTTP/1.1 100 Continue\r\n\r\n\
          HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n\
          HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Latin: caf\xe9\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    let nam = server.nam();
    let mut h = nam.load(ResourceRequest::get(server.url("/c")).build().unwrap());
    let resp = h.response_blocking().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("link"));
    assert!(!resp.headers().contains_key("x-trailer"));
    assert_eq!(resp.headers()["x-latin"].as_bytes(), b"caf\xe9");
    assert_eq!(&h.bytes_blocking().unwrap()[..], b"hello world");
}

#[test]
fn cancel_mid_body_closes_the_connection() {
    let (closed_tx, closed_rx) = mpsc::channel::<Duration>();
    let closed_tx = std::sync::Mutex::new(closed_tx);
    let server = Server::start(move |stream| {
        let mut out = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        let _ = read_request(&mut r);
        let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n");
        let _ = out.write_all(&[1u8; 100_000]);
        // Trickle until the client goes away, then say how long that took.
        let start = Instant::now();
        loop {
            thread::sleep(Duration::from_millis(20));
            if out.write_all(&[1u8; 10]).is_err() {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        let _ = closed_tx.lock().unwrap().send(start.elapsed());
    });
    let nam = server.nam();

    // cancel()
    let mut h = nam.load(ResourceRequest::get(server.url("/slow")).build().unwrap());
    h.response_blocking().unwrap();
    h.chunk_blocking().unwrap().unwrap();
    let t = Instant::now();
    h.cancel();
    let e = loop {
        match h.chunk_blocking() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a cancelled load finished"),
            Err(e) => break e,
        }
    };
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(closed_rx.recv_timeout(Duration::from_secs(5)).unwrap() < Duration::from_secs(5));

    // Dropping the handle.
    let mut h = nam.load(ResourceRequest::get(server.url("/slow")).build().unwrap());
    h.response_blocking().unwrap();
    h.chunk_blocking().unwrap().unwrap();
    drop(h);
    assert!(closed_rx.recv_timeout(Duration::from_secs(5)).unwrap() < Duration::from_secs(5));
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[test]
fn many_loads_at_once_from_many_threads() {
    let server = keep_alive(|req| ok(&req.target));
    let nam = server.nam();
    let threads: Vec<_> = (0..24)
        .map(|i| {
            let nam = nam.clone();
            let url = server.url(&format!("/n{i}"));
            thread::spawn(move || {
                let mut h = nam.load(ResourceRequest::get(&url).build().unwrap());
                h.text_blocking().unwrap()
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), format!("/n{i}"));
    }
    // The pool keeps at most 6 connections to one host.
    assert!(server.connections.load(Ordering::SeqCst) <= 6);
}

// ---------------------------------------------------------------------------
// Faults and their error kinds.

#[test]
fn refused_connection_is_connect() {
    let port = {
        let l = TcpListener::bind((LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let nam = NetworkAccessManager::builder()
        .resolve("origin.test", port, [LOCALHOST])
        .build(backend_curl::factory)
        .unwrap();
    let mut h = nam.load(
        ResourceRequest::get(format!("http://origin.test:{port}/x"))
            .build()
            .unwrap(),
    );
    assert_eq!(
        h.response_blocking().unwrap_err().kind(),
        ErrorKind::Connect
    );
}

#[test]
fn name_mapped_to_no_address_is_dns() {
    let nam = NetworkAccessManager::builder()
        .resolve("nowhere.test", 80, [])
        .build(backend_curl::factory)
        .unwrap();
    let mut h = nam.load(
        ResourceRequest::get("http://nowhere.test/")
            .build()
            .unwrap(),
    );
    assert_eq!(h.response_blocking().unwrap_err().kind(), ErrorKind::Dns);
}

/// The driver reuses the easy handle of a finished exchange for the next
/// one, setting again only what differs between exchanges: nothing of one
/// exchange (method, body framing, headers, timeouts) may reach the next.
#[test]
fn a_reused_easy_handle_carries_nothing_over() {
    let server = keep_alive(|req| {
        if req.target == "/slow" {
            thread::sleep(Duration::from_millis(600));
        }
        if req.method == "HEAD" {
            return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
        }
        ok(&format!(
            "{} {} cl={:?} te={:?} x-a={:?} expect={:?} body={}",
            req.method,
            req.target,
            req.header("content-length"),
            req.header("transfer-encoding"),
            req.header("x-a"),
            req.header("expect"),
            req.body_len,
        ))
    });
    let nam = server.nam();
    let req = |m: &str, path: &str| ResourceRequest::builder(m, server.url(path));
    let plain_get = "GET /get cl=None te=None x-a=None expect=None body=0";

    // Each step follows loads that set options the step must not inherit.
    let t = load_text(
        &nam,
        req("PUT", "/put")
            .header("x-a", "1")
            .body("abc")
            .build()
            .unwrap(),
    );
    assert_eq!(
        t,
        "PUT /put cl=Some(\"3\") te=None x-a=Some(\"1\") expect=None body=3"
    );
    assert_eq!(
        load_text(&nam, req("GET", "/get").build().unwrap()),
        plain_get
    );

    let chunked = RequestBody::chunked(io::Cursor::new(vec![b'x'; 5000]));
    let t = load_text(&nam, req("POST", "/post").body(chunked).build().unwrap());
    assert_eq!(
        t,
        "POST /post cl=None te=Some(\"chunked\") x-a=None expect=None body=5000"
    );
    let t = load_text(&nam, req("DELETE", "/delete").build().unwrap());
    assert_eq!(
        t,
        "DELETE /delete cl=None te=None x-a=None expect=None body=0"
    );
    let t = load_text(&nam, req("POST", "/post").body("posted").build().unwrap());
    assert_eq!(
        t,
        "POST /post cl=Some(\"6\") te=None x-a=None expect=None body=6"
    );
    assert_eq!(
        load_text(&nam, req("GET", "/get").build().unwrap()),
        plain_get
    );

    // HEAD turns off the response body; the GET after it has one.
    let mut h = nam.load(req("HEAD", "/head").build().unwrap());
    assert_eq!(h.response_blocking().unwrap().status(), 200);
    assert!(h.bytes_blocking().unwrap().is_empty());
    assert_eq!(
        load_text(&nam, req("GET", "/get").build().unwrap()),
        plain_get
    );

    // A total timeout belongs to its request only.
    let mut h = nam.load(
        req("GET", "/slow")
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap(),
    );
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.timeout_phase(), Some(TimeoutPhase::Total), "{e:?}");
    let t = load_text(&nam, req("GET", "/slow").build().unwrap());
    assert_eq!(t, "GET /slow cl=None te=None x-a=None expect=None body=0");
}

#[test]
fn total_timeout_is_timeout_total() {
    let server = Server::start(|stream| {
        let _ = read_request(&mut BufReader::new(stream.try_clone().unwrap()));
        thread::sleep(Duration::from_secs(5));
        drop(stream);
    });
    let nam = server.nam();
    let t = Instant::now();
    let mut h = nam.load(
        ResourceRequest::get(server.url("/hang"))
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e:?}");
    assert_eq!(e.timeout_phase(), Some(TimeoutPhase::Total));
    assert!(std::error::Error::source(&e).is_some());
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn total_timeout_covers_the_body() {
    let server = Server::start(|stream| {
        let mut out = stream.try_clone().unwrap();
        let _ = read_request(&mut BufReader::new(stream));
        let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        thread::sleep(Duration::from_secs(5));
    });
    let nam = server.nam();
    let mut h = nam.load(
        ResourceRequest::get(server.url("/slow-body"))
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    h.response_blocking().unwrap();
    let e = h.bytes_blocking().unwrap_err();
    assert_eq!(e.timeout_phase(), Some(TimeoutPhase::Total), "{e:?}");
}

#[test]
fn connect_timeout_is_timeout_connect() {
    use socket2::{Domain, Socket, Type};
    // A listener whose accept queue is full drops new SYNs: connects hang.
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&SocketAddr::new(LOCALHOST, 0).into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    thread::sleep(Duration::from_millis(100));

    let nam = NetworkAccessManager::builder()
        .resolve("origin.test", addr.port(), [LOCALHOST])
        .build(backend_curl::factory)
        .unwrap();
    let t = Instant::now();
    let mut h = nam.load(
        ResourceRequest::get(format!("http://origin.test:{}/x", addr.port()))
            .connect_timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e:?}");
    assert_eq!(e.timeout_phase(), Some(TimeoutPhase::Connect), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn short_body_is_truncated() {
    let server = scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    let nam = server.nam();
    let mut h = nam.load(ResourceRequest::get(server.url("/short")).build().unwrap());
    let e = h.bytes_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BodyTruncated, "{e:?}");
    let t = e.truncation().unwrap();
    assert_eq!((t.expected, t.received), (Some(100), 10));
}

#[test]
fn malformed_responses_are_protocol_errors() {
    for bytes in [
        &b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"",
        b"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad name: x\r\nContent-Length: 0\r\n\r\n",
    ] {
        let server = scripted(bytes);
        let nam = server.nam();
        let mut h = nam.load(ResourceRequest::get(server.url("/bad")).build().unwrap());
        let e = h.bytes_blocking().unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::Protocol,
            "{:?}: {e:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn tls_against_a_plain_server_is_tls() {
    let server = Server::start(|mut stream| {
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let nam = server.nam();
    let mut h = nam.load(
        ResourceRequest::get(format!("https://origin.test:{}/", server.port))
            .build()
            .unwrap(),
    );
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls, "{e:?}");
}

#[test]
fn dropping_the_manager_lets_running_loads_finish() {
    let server = keep_alive(|_| ok("still here"));
    let nam = server.nam();
    let mut h = nam.load(ResourceRequest::get(server.url("/late")).build().unwrap());
    drop(nam);
    assert_eq!(h.text_blocking().unwrap(), "still here");
}

#[test]
fn prior_knowledge_against_an_http1_server_is_protocol() {
    let server = scripted(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    let nam = server.nam();
    let mut h = nam.load(
        ResourceRequest::get(server.url("/"))
            .http_version(handle_api::HttpVersionPref::Http2PriorKnowledge)
            .build()
            .unwrap(),
    );
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e:?}");
}

#[test]
fn an_http2_status_line_over_http1_is_protocol() {
    // Offering h2 (which cleartext cannot negotiate) does not make an
    // `HTTP/2` status line on an HTTP/1.1 connection acceptable.
    for pref in [
        handle_api::HttpVersionPref::Http1,
        handle_api::HttpVersionPref::Http2,
    ] {
        let server = scripted(b"HTTP/2 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let nam = server.nam();
        let mut h = nam.load(
            ResourceRequest::get(server.url("/"))
                .http_version(pref)
                .build()
                .unwrap(),
        );
        let e = h.response_blocking().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{pref:?}: {e:?}");
    }
}
