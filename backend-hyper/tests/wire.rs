//! The hyper backend against real servers on 127.0.0.1: what goes on the
//! wire, what comes back, and how each fault is reported.
//!
//! Each test starts a small scripted server on its own threads and loads
//! `http://origin.test:{port}/…` with `origin.test` mapped to 127.0.0.1, as
//! curl's `--resolve` would. Servers record what they saw and the test thread
//! asserts on it, so a server-side surprise fails the test.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use handle_api::{
    Capability, ErrorKind, HttpVersionPref, NetworkAccessManager, RequestBody, ResourceRequest,
    TimeoutPhase,
};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// ---- a small scripted server ------------------------------------------------

/// A request head as the server read it.
#[derive(Debug, Clone)]
struct Head {
    line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        n.sort();
        n
    }
}

/// One accepted connection.
struct Conn {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
    heads: Arc<Mutex<Vec<Head>>>,
}

impl Conn {
    /// The next request head, or `None` when the client closed.
    fn head(&mut self) -> Option<Head> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if self.reader.read_line(&mut h).ok()? == 0 {
                return None;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':')?;
            headers.push((n.to_owned(), v.trim().to_owned()));
        }
        let head = Head {
            line: line.trim_end().to_owned(),
            headers,
        };
        self.heads.lock().unwrap().push(head.clone());
        Some(head)
    }

    /// Reads the request body of `head`, passing each piece to `each`;
    /// returns the byte count.
    fn body(&mut self, head: &Head, mut each: impl FnMut(&[u8])) -> io::Result<u64> {
        let mut total = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        if let Some(len) = head.get("content-length") {
            let mut left: u64 = len.parse().unwrap();
            while left > 0 {
                let want = buf.len().min(left as usize);
                let n = self.reader.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                each(&buf[..n]);
                left -= n as u64;
                total += n as u64;
            }
        } else if head.get("transfer-encoding") == Some("chunked") {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size)?;
                let size = u64::from_str_radix(size.trim(), 16)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                if size == 0 {
                    let mut end = String::new();
                    self.reader.read_line(&mut end)?;
                    break;
                }
                let mut left = size;
                while left > 0 {
                    let want = buf.len().min(left as usize);
                    let n = self.reader.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    each(&buf[..n]);
                    left -= n as u64;
                    total += n as u64;
                }
                let mut crlf = [0u8; 2];
                self.reader.read_exact(&mut crlf)?;
            }
        }
        Ok(total)
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Waits until the client closes the connection; true if it did.
    fn closed_by_client(&mut self, within: Duration) -> bool {
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    )
                }
            }
        }
    }
}

struct Server {
    port: u16,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<Head>>>,
}

impl Server {
    /// Serves every connection with `handler` on its own thread.
    fn start(handler: impl Fn(Conn) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind((LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        {
            let accepted = accepted.clone();
            let heads = heads.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { return };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let conn = Conn {
                        reader: BufReader::new(stream.try_clone().unwrap()),
                        stream,
                        heads: heads.clone(),
                    };
                    let handler = handler.clone();
                    thread::spawn(move || handler(conn));
                }
            });
        }
        Server {
            port,
            accepted,
            heads,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://origin.test:{}{path}", self.port)
    }

    fn nam(&self) -> NetworkAccessManager {
        nam_for(self.port)
    }

    fn heads(&self) -> Vec<Head> {
        self.heads.lock().unwrap().clone()
    }
}

fn nam_for(port: u16) -> NetworkAccessManager {
    NetworkAccessManager::builder()
        .resolve("origin.test", port, [LOCALHOST])
        .build(backend_hyper::factory)
        .unwrap()
}

/// Answers every request on a connection with `200` and `body`, reading
/// (and discarding) request bodies, until the client closes.
fn ok_server(body: &'static str) -> Server {
    Server::start(move |mut c| {
        while let Some(head) = c.head() {
            if c.body(&head, |_| {}).is_err() {
                return;
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if c.send(resp.as_bytes()).is_err() {
                return;
            }
        }
    })
}

/// A reader of `len` bytes of `b'x'` that counts what it produced.
struct Produce {
    left: u64,
    produced: Arc<AtomicU64>,
}

impl Read for Produce {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        buf[..n].fill(b'x');
        self.left -= n as u64;
        self.produced.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}

// ---- the wire ---------------------------------------------------------------

#[test]
fn keep_alive_reuses_one_connection() {
    let server = ok_server("ok");
    let nam = server.nam();
    for _ in 0..2 {
        let mut h = nam.load(ResourceRequest::get(server.url("/x")).build().unwrap());
        assert_eq!(h.response_blocking().unwrap().status(), 200);
        assert_eq!(&h.bytes_blocking().unwrap()[..], b"ok");
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(server.heads().len(), 2);
}

#[test]
fn only_the_given_headers_plus_host_and_framing_are_sent() {
    let server = ok_server("ok");
    let nam = server.nam();
    let mut h = nam.load(
        ResourceRequest::get(server.url("/a?b=c"))
            .header("x-custom", "1")
            .build()
            .unwrap(),
    );
    h.bytes_blocking().unwrap();
    let mut h = nam.load(ResourceRequest::post(server.url("/empty")).build().unwrap());
    h.bytes_blocking().unwrap();
    let mut h = nam.load(
        ResourceRequest::post(server.url("/form"))
            .body("a=1")
            .build()
            .unwrap(),
    );
    h.bytes_blocking().unwrap();

    let heads = server.heads();
    assert_eq!(heads[0].line, "GET /a?b=c HTTP/1.1");
    // Accept-Encoding is the manager's (content decoding is handle-api's).
    assert_eq!(
        heads[0].names(),
        [
            "accept",
            "accept-encoding",
            "host",
            "user-agent",
            "x-custom"
        ]
    );
    assert_eq!(
        heads[0].get("host"),
        Some(format!("origin.test:{}", server.port).as_str())
    );
    assert_eq!(heads[0].get("x-custom"), Some("1"));

    assert_eq!(heads[1].line, "POST /empty HTTP/1.1");
    assert_eq!(
        heads[1].names(),
        [
            "accept",
            "accept-encoding",
            "content-length",
            "host",
            "user-agent"
        ]
    );
    assert_eq!(heads[1].get("content-length"), Some("0"));

    assert_eq!(heads[2].get("content-length"), Some("3"));
    assert_eq!(heads[2].get("transfer-encoding"), None);
}

#[test]
fn any_method_and_head_without_body() {
    let server = Server::start(|mut c| {
        while let Some(head) = c.head() {
            let resp: &[u8] = if head.line.starts_with("HEAD ") {
                // A body-length header without a body, as HEAD answers are.
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"
            };
            c.send(resp).unwrap();
        }
    });
    let nam = server.nam();
    let mut h = nam.load(
        ResourceRequest::builder("PURGE", server.url("/cache"))
            .build()
            .unwrap(),
    );
    assert_eq!(&h.bytes_blocking().unwrap()[..], b"done");
    let mut h = nam.load(
        ResourceRequest::builder("HEAD", server.url("/h"))
            .build()
            .unwrap(),
    );
    assert_eq!(
        h.response_blocking().unwrap().expected_content_length(),
        Some(1000)
    );
    assert!(h.bytes_blocking().unwrap().is_empty());
    // The connection is still in step: hyper read no body after the HEAD.
    let mut h = nam.load(ResourceRequest::get(server.url("/after")).build().unwrap());
    assert_eq!(&h.bytes_blocking().unwrap()[..], b"done");

    let heads = server.heads();
    assert_eq!(heads[0].line, "PURGE /cache HTTP/1.1");
    assert_eq!(heads[0].get("content-length"), None);
    assert_eq!(heads[1].line, "HEAD /h HTTP/1.1");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn sized_upload_streams_with_bounded_read_ahead() {
    const LEN: u64 = 256 << 20;
    let produced = Arc::new(AtomicU64::new(0));
    let (ahead_tx, ahead_rx) = mpsc::channel();
    let server = {
        let produced = produced.clone();
        Server::start(move |mut c| {
            let Some(head) = c.head() else { return };
            let mut received = 0u64;
            let mut stalled = false;
            let total = c
                .body(&head, |piece| {
                    received += piece.len() as u64;
                    if !stalled && received > (1 << 20) {
                        stalled = true;
                        // While the server stops reading, the backend may read
                        // ahead only as far as its queues and socket buffers.
                        thread::sleep(Duration::from_millis(500));
                        let ahead = produced.load(Ordering::SeqCst) - received;
                        ahead_tx.send(ahead).unwrap();
                    }
                })
                .unwrap();
            let body = total.to_string();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            c.send(resp.as_bytes()).unwrap();
        })
    };
    let nam = server.nam();
    let reader = Produce {
        left: LEN,
        produced: produced.clone(),
    };
    let mut h = nam.load(
        ResourceRequest::builder("PUT", server.url("/up"))
            .body(RequestBody::sized(reader, LEN))
            .build()
            .unwrap(),
    );
    assert_eq!(h.text_blocking().unwrap(), LEN.to_string());
    let ahead = ahead_rx.recv().unwrap();
    assert!(ahead < 32 << 20, "the upload ran {ahead} bytes ahead");
    let head = &server.heads()[0];
    assert_eq!(head.get("content-length"), Some(LEN.to_string().as_str()));
    assert_eq!(head.get("transfer-encoding"), None);
}

#[test]
fn unknown_length_upload_is_sent_chunked_for_any_method() {
    let server = Server::start(|mut c| {
        while let Some(head) = c.head() {
            let mut sum = 0u64;
            let n = c
                .body(&head, |p| {
                    sum += p.iter().map(|b| u64::from(*b)).sum::<u64>()
                })
                .unwrap();
            let body = format!("{n}/{sum}");
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            c.send(resp.as_bytes()).unwrap();
        }
    });
    let nam = server.nam();
    for method in ["POST", "GET"] {
        let len = 3 * 64 * 1024 + 17;
        let reader = Produce {
            left: len,
            produced: Arc::default(),
        };
        let mut h = nam.load(
            ResourceRequest::builder(method, server.url("/chunked"))
                .body(RequestBody::chunked(reader))
                .build()
                .unwrap(),
        );
        assert_eq!(
            h.text_blocking().unwrap(),
            format!("{len}/{}", len * u64::from(b'x'))
        );
    }
    for head in server.heads() {
        assert_eq!(head.get("transfer-encoding"), Some("chunked"));
        assert_eq!(head.get("content-length"), None);
    }
}

#[test]
fn upload_read_error_fails_with_io() {
    struct Failing(u32);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            self.0 -= 1;
            buf[..10].fill(b'y');
            Ok(10)
        }
    }
    let server = ok_server("ok");
    let nam = server.nam();
    let mut h = nam.load(
        ResourceRequest::post(server.url("/up"))
            .body(RequestBody::sized(Failing(3), 1000))
            .build()
            .unwrap(),
    );
    let e = h.bytes_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e:?}");
    assert!(e.to_string().contains("disk on fire"), "{e}");

    // A stream longer than it declared is refused, not cut.
    let mut h = nam.load(
        ResourceRequest::post(server.url("/up"))
            .body(RequestBody::sized(&b"abcdef"[..], 3))
            .build()
            .unwrap(),
    );
    assert_eq!(h.bytes_blocking().unwrap_err().kind(), ErrorKind::Io);
}

#[test]
fn response_body_streams_with_backpressure() {
    const LEN: u64 = 128 << 20;
    let written = Arc::new(AtomicU64::new(0));
    let server = {
        let written = written.clone();
        Server::start(move |mut c| {
            let Some(_) = c.head() else { return };
            c.send(format!("HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n").as_bytes())
                .unwrap();
            let piece = vec![b'z'; 64 * 1024];
            let mut left = LEN;
            while left > 0 {
                let n = piece.len().min(left as usize);
                if c.send(&piece[..n]).is_err() {
                    return;
                }
                written.fetch_add(n as u64, Ordering::SeqCst);
                left -= n as u64;
            }
        })
    };
    let nam = server.nam();
    let mut h = nam.load(ResourceRequest::get(server.url("/big")).build().unwrap());
    let first = h.chunk_blocking().unwrap().unwrap();
    thread::sleep(Duration::from_millis(500));
    let sent = written.load(Ordering::SeqCst);
    assert!(
        sent < 32 << 20,
        "the server could write {sent} bytes while nobody read"
    );
    let mut total = first.len() as u64;
    while let Some(c) = h.chunk_blocking().unwrap() {
        total += c.len() as u64;
    }
    assert_eq!(total, LEN);
}

#[test]
fn reason_version_remote_address_and_bodiless_statuses() {
    let server = Server::start(|mut c| {
        while let Some(head) = c.head() {
            let resp: &[u8] = match head.line.split(' ').nth(1).unwrap() {
                "/fine" => b"HTTP/1.1 200 Fine Thanks\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 2\r\n\r\nhi",
                "/none" => b"HTTP/1.1 204 No Content\r\n\r\n",
                "/chunked" => b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope",
            };
            c.send(resp).unwrap();
        }
    });
    let nam = server.nam();
    let mut h = nam.load(ResourceRequest::get(server.url("/fine")).build().unwrap());
    let r = h.response_blocking().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.reason(), "Fine Thanks");
    assert_eq!(r.version_str(), "HTTP/1.1");
    assert_eq!(
        r.remote_addr(),
        Some(SocketAddr::new(LOCALHOST, server.port))
    );
    let xa: Vec<_> = r.headers().get_all("x-a").iter().collect();
    assert_eq!(xa, ["1", "2"]);
    assert!(r.timing().first_byte.is_some());
    assert_eq!(&h.bytes_blocking().unwrap()[..], b"hi");

    let mut h = nam.load(ResourceRequest::get(server.url("/none")).build().unwrap());
    assert_eq!(h.response_blocking().unwrap().status(), 204);
    assert!(h.bytes_blocking().unwrap().is_empty());

    let mut h = nam.load(
        ResourceRequest::get(server.url("/chunked"))
            .build()
            .unwrap(),
    );
    assert_eq!(h.response_blocking().unwrap().reason(), "Created");
    assert_eq!(&h.bytes_blocking().unwrap()[..], b"abcde");

    // 4xx is a response like any other.
    let mut h = nam.load(
        ResourceRequest::get(server.url("/missing"))
            .build()
            .unwrap(),
    );
    assert_eq!(h.response_blocking().unwrap().status(), 404);
    assert_eq!(&h.bytes_blocking().unwrap()[..], b"nope");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
}

// ---- timeouts and cancellation ---------------------------------------------

#[test]
fn connect_timeout_elapses_in_the_connect_phase() {
    use socket2::{Domain, Socket, Type};
    // A listener whose accept queue is full: Linux drops further SYNs, so a
    // connection attempt hangs, on loopback, until the client gives up.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(LOCALHOST, 0).into()).unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(s);
        }
    }

    let nam = nam_for(addr.port());
    let started = Instant::now();
    let mut h = nam.load(
        ResourceRequest::get(format!("http://origin.test:{}/", addr.port()))
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    );
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e:?}");
    assert_eq!(e.timeout_phase(), Some(TimeoutPhase::Connect));
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(fillers);
}

#[test]
fn total_timeout_covers_the_body() {
    let server = Server::start(|mut c| {
        let Some(_) = c.head() else { return };
        let _ = c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        thread::sleep(Duration::from_secs(5));
    });
    let nam = server.nam();
    let started = Instant::now();
    let mut h = nam.load(
        ResourceRequest::get(server.url("/slow"))
            .timeout(Duration::from_millis(400))
            .build()
            .unwrap(),
    );
    assert_eq!(h.response_blocking().unwrap().status(), 200);
    let e = h.bytes_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e:?}");
    assert_eq!(e.timeout_phase(), Some(TimeoutPhase::Total));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn cancel_or_drop_mid_body_closes_the_connection() {
    let (closed_tx, closed_rx) = mpsc::channel();
    let server = Server::start(move |mut c| {
        let Some(head) = c.head() else { return };
        if head.line.starts_with("GET /after") {
            c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            return;
        }
        c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n")
            .unwrap();
        c.send(&[b'a'; 100 * 1024]).unwrap();
        closed_tx
            .send(c.closed_by_client(Duration::from_secs(5)))
            .unwrap();
    });
    let nam = server.nam();

    let mut h = nam.load(ResourceRequest::get(server.url("/cancel")).build().unwrap());
    assert!(h.chunk_blocking().unwrap().is_some());
    let started = Instant::now();
    h.cancel();
    let e = h.bytes_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert!(closed_rx.recv_timeout(Duration::from_secs(3)).unwrap());
    assert!(started.elapsed() < Duration::from_secs(2));

    let mut h = nam.load(ResourceRequest::get(server.url("/drop")).build().unwrap());
    assert!(h.chunk_blocking().unwrap().is_some());
    drop(h);
    assert!(closed_rx.recv_timeout(Duration::from_secs(3)).unwrap());

    // Nothing half-read went back to the pool: the next load gets a fresh
    // connection and a clean answer.
    let mut h = nam.load(ResourceRequest::get(server.url("/after")).build().unwrap());
    assert_eq!(&h.bytes_blocking().unwrap()[..], b"ok");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
}

#[test]
fn cancel_mid_upload_stops_reading_and_closes() {
    /// Endless, and tells when the backend lets go of it.
    struct Endless(mpsc::Sender<()>);
    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            buf.fill(b'u');
            Ok(buf.len())
        }
    }
    impl Drop for Endless {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    let (closed_tx, closed_rx) = mpsc::channel();
    let (got_tx, got_rx) = mpsc::channel();
    let server = Server::start(move |mut c| {
        let Some(_) = c.head() else { return };
        let mut first = [0u8; 1024];
        c.reader.read_exact(&mut first).unwrap();
        got_tx.send(()).unwrap();
        // Stop reading: the upload stalls until the client gives up.
        thread::sleep(Duration::from_millis(300));
        closed_tx
            .send(c.closed_by_client(Duration::from_secs(5)))
            .unwrap();
    });
    let nam = server.nam();
    let (dropped_tx, dropped_rx) = mpsc::channel();
    let h = nam.load(
        ResourceRequest::post(server.url("/up"))
            .body(RequestBody::chunked(Endless(dropped_tx)))
            .build()
            .unwrap(),
    );
    got_rx.recv_timeout(Duration::from_secs(3)).unwrap();
    h.cancel();
    dropped_rx.recv_timeout(Duration::from_secs(3)).unwrap();
    assert!(closed_rx.recv_timeout(Duration::from_secs(6)).unwrap());
}

// ---- error kinds ------------------------------------------------------------

#[test]
fn refused_is_connect() {
    let port = {
        let l = TcpListener::bind((LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let nam = nam_for(port);
    let mut h = nam.load(
        ResourceRequest::get(format!("http://origin.test:{port}/"))
            .build()
            .unwrap(),
    );
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect, "{e:?}");
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn name_mapped_to_no_address_is_dns() {
    let nam = NetworkAccessManager::builder()
        .resolve("nowhere.test", 80, [])
        .build(backend_hyper::factory)
        .unwrap();
    let mut h = nam.load(
        ResourceRequest::get("http://nowhere.test/")
            .build()
            .unwrap(),
    );
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Dns, "{e:?}");
}

#[test]
fn body_shorter_than_content_length_is_truncated() {
    let server = Server::start(|mut c| {
        let Some(_) = c.head() else { return };
        c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcd")
            .unwrap();
        let _ = c.stream.shutdown(Shutdown::Both);
    });
    // The manager must outlive the load: dropping it shuts the backend down.
    let nam = server.nam();
    let mut h = nam.load(ResourceRequest::get(server.url("/short")).build().unwrap());
    let e = h.bytes_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BodyTruncated, "{e:?}");
    let t = e.truncation().unwrap();
    assert_eq!((t.expected, t.received), (Some(10), 4));
}

#[test]
fn malformed_status_line_is_protocol() {
    let server = Server::start(|mut c| {
        let Some(_) = c.head() else { return };
        c.send(b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
    });
    let nam = server.nam();
    let mut h = nam.load(ResourceRequest::get(server.url("/bad")).build().unwrap());
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e:?}");
}

#[test]
fn version_preferences_in_cleartext() {
    let server = ok_server("ok");
    let nam = server.nam();
    for c in [
        Capability::Http1,
        Capability::Https,
        Capability::Http2,
        Capability::Proxy,
        Capability::Socks5,
        Capability::ClientCertificate,
    ] {
        assert!(nam.capabilities().supports(c), "{c:?}");
    }
    assert_eq!(nam.backend_name(), "hyper");
    // Without TLS there is no ALPN to offer h2 with: HTTP/1.1.
    let mut h = nam.load(
        ResourceRequest::get(server.url("/"))
            .http_version(HttpVersionPref::Http2)
            .build()
            .unwrap(),
    );
    let resp = h.response_blocking().unwrap();
    assert_eq!(resp.version_str(), "HTTP/1.1");
    assert_eq!(&h.bytes_blocking().unwrap()[..], b"ok");
    assert!(server.heads()[0].line.ends_with(" HTTP/1.1"));
    // Prior knowledge speaks HTTP/2 from the first byte: an HTTP/1.1-only
    // server cannot answer it, and that is an error, not a response.
    let mut h = nam.load(
        ResourceRequest::get(server.url("/h2"))
            .http_version(HttpVersionPref::Http2PriorKnowledge)
            .build()
            .unwrap(),
    );
    let e = h.response_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}

// ---- runtimes ---------------------------------------------------------------

#[test]
fn works_inside_another_runtime_and_drops_there() {
    let server = ok_server("async");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let nam = server.nam();
        let mut h = nam.load(ResourceRequest::get(server.url("/")).build().unwrap());
        assert_eq!(h.response().await.unwrap().status(), 200);
        assert_eq!(&h.bytes().await.unwrap()[..], b"async");
        // The last reference to the backend goes here, inside this runtime.
        drop(nam);
    });
}
