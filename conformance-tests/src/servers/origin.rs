//! The origin server: echo of the received request, status codes, byte and
//! chunked bodies, delays, drips, gated streams, HTTP/1.0 bodies, redirects,
//! chosen response headers and compressed bodies. Besides every request, it
//! records how many were in progress at once ([`Origin::request_intervals`]).
//!
//! Routes (query parameters in brackets):
//! - `/echo` any method: a JSON description of the request received.
//! - `/status/N`: status N with a short body (none for 1xx, 204, 304 and HEAD).
//! - `/bytes/N [chunked=SIZE]`: N bytes of [`body_pattern`], with Content-Length or chunked.
//! - `/repeated-headers`: a response with a header name repeated.
//! - `/delay/MS`: answers after MS milliseconds.
//! - `/drip [chunks=N] [ms=M] [size=S]`: a chunked body of N chunks, M ms apart.
//! - `/gated/ID`: sends a first chunk, then waits for [`Origin::open_gate`] before the rest.
//! - `/http10/N`: an HTTP/1.0 response of N bytes delimited by closing the connection.
//! - `/sink`: reads the body, answers with its length.
//! - `/slow/MS [len=N]`: answers after MS milliseconds with N bytes of [`body_pattern`]
//!   (default `slow\n`); with it, [`Origin::max_requests_in_progress`] shows how many
//!   requests the client had outstanding at once.
//! - `/redirect/N`: N redirect hops (302 to `/redirect/N-1`), then the `/echo` answer.
//! - `/redirect-to [url=URL] [status=S]`: status S (default 302) with `Location: URL`
//!   (the percent-decoded `url` parameter, sent as given, even when it does not parse).
//! - `/loop`: a 302 to itself.
//! - `/no-location [status=S]`: status S (default 302) without a Location.
//! - `/headers [NAME=VALUE…]`: a 200 that carries each given header, in order.
//! - `/encoded/CODINGS/N`: N bytes of [`body_pattern`] compressed with each of the
//!   comma-separated CODINGS in turn (`gzip`, `deflate` (zlib), `deflate-raw` (raw
//!   deflate, labelled `deflate`), `br`, `zstd`), with Content-Encoding and the
//!   compressed Content-Length; see [`encoded_body`].
//! - `/encoded/gzip-chunked/N`: the gzip body of N bytes, sent chunked.
//! - `/encoded/gzip-empty`: `Content-Encoding: gzip` on an empty body.
//! - `/encoded/corrupt-gzip`: a gzip header followed by an invalid deflate stream.
//! - `/encoded/truncated-gzip`: the first half of the gzip body of 100 000 bytes,
//!   with a Content-Length that matches the half (the HTTP body is complete).
//! - `/encoded/bomb`: 64 MiB of zeros, gzipped (about 64 KiB on the wire).
//!
//! - `/cache/ID [cc=…] [etag=strong|weak] [lm=1] [expires=DATE] [vary=NAME] [len=N]
//!   [enc=CODING] [cc304=…] [cut=1]`: a resource for the HTTP cache, answered by [`cache_routes`]:
//!   chosen Cache-Control, Expires and Vary, an ETag and Last-Modified that follow the
//!   resource's version ([`Origin::set_version`]), and 304s to matching validators.
//!
//! - `/cookies/set?c=SET-COOKIE… [location=URL] [status=S]`, `/cookies[/ANY]` and
//!   `/basic-auth/USER/PASS [realm=R] [scheme=S] [location=URL]`: cookies set and
//!   shown, and a Basic-protected echo, answered by [`session_routes`].
//!
//! Query values are percent-decoded (`+` is a space).

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::listener::{Listener, Stats};

mod cache_routes;
mod session_routes;

const MAX_HEAD: usize = 64 * 1024;

/// One period of the body pattern, a multiple of its 251-byte cycle.
static PATTERN: std::sync::LazyLock<Vec<u8>> =
    std::sync::LazyLock::new(|| (0..251 * 256).map(|i| (i % 251) as u8).collect());

/// `len` bytes of the deterministic body pattern (byte i is `i % 251`).
pub fn body_pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// What the origin received for one request.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    /// Method as received.
    pub method: String,
    /// Request-target exactly as received.
    pub target: String,
    /// Header lines in received order, names as sent.
    pub headers: Vec<(String, String)>,
    /// How the body was framed: `none`, `length:N` or `chunked`.
    pub framing: String,
    /// Body bytes received.
    pub body_len: u64,
    /// SHA-256 of the body, hex.
    pub body_sha256: String,
    /// The first 4 KiB of the body, lossily as text.
    pub body_text: String,
    /// Which connection (0, 1, …) carried the request.
    pub connection: usize,
}

impl RecordedRequest {
    /// Values of header `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Headers other than those a library adds on its own (Host and framing),
    /// which may come in a different place on each backend.
    pub fn application_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(n, _)| {
                !matches!(
                    n.to_ascii_lowercase().as_str(),
                    "host" | "content-length" | "transfer-encoding" | "connection"
                )
            })
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect()
    }
}

#[derive(Default)]
struct Gates {
    open: Mutex<HashSet<String>>,
    cond: Condvar,
}

/// Requests received and not yet answered: from the end of the request body
/// until the response head starts to be written. Ending the count before the
/// first response byte means a client that reacts to the answer at once can
/// never be seen overlapping with it.
#[derive(Default)]
struct InProgress {
    now: AtomicUsize,
    max: AtomicUsize,
    intervals: Mutex<Vec<(Instant, Instant)>>,
}

/// Ends one request's in-progress interval when dropped.
struct InProgressGuard {
    state: Arc<State>,
    since: Instant,
}

impl InProgressGuard {
    fn new(state: &Arc<State>) -> Self {
        let g = &state.in_progress;
        let now = g.now.fetch_add(1, Ordering::SeqCst) + 1;
        g.max.fetch_max(now, Ordering::SeqCst);
        InProgressGuard {
            state: state.clone(),
            since: Instant::now(),
        }
    }
}

impl Drop for InProgressGuard {
    fn drop(&mut self) {
        let g = &self.state.in_progress;
        lock(&g.intervals).push((self.since, Instant::now()));
        g.now.fetch_sub(1, Ordering::SeqCst);
    }
}

struct State {
    requests: Mutex<Vec<RecordedRequest>>,
    gates: Gates,
    in_progress: InProgress,
    cache: cache_routes::CacheState,
}

/// A running origin server.
pub struct Origin {
    listener: Listener,
    state: Arc<State>,
}

impl Origin {
    /// Starts an origin on 127.0.0.1 with a free port.
    pub fn start() -> io::Result<Origin> {
        Self::start_on(0)
    }

    /// Starts an origin on 127.0.0.1:`port` (0 picks a free one).
    pub fn start_on(port: u16) -> io::Result<Origin> {
        Self::start_over("origin", port, |conn, _| Ok(conn))
    }

    /// Starts an origin on 127.0.0.1:`port` whose connections are first
    /// handed to `wrap` with their index (the TLS origin's handshake): what
    /// it returns is served like a plain connection, and an error drops
    /// the connection.
    pub(crate) fn start_over<S, W>(name: &str, port: u16, wrap: W) -> io::Result<Origin>
    where
        S: Read + Write,
        W: Fn(TcpStream, usize) -> io::Result<S> + Send + Sync + 'static,
    {
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            gates: Gates::default(),
            in_progress: InProgress::default(),
            cache: cache_routes::CacheState::default(),
        });
        let st = state.clone();
        let listener = Listener::start_on(name, port, move |conn, index| {
            let Ok(local_port) = conn.local_addr().map(|a| a.port()) else {
                return;
            };
            if let Ok(conn) = wrap(conn, index) {
                let _ = serve(conn, local_port, index, &st);
            }
        })?;
        Ok(Origin { listener, state })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.addr().port()
    }

    /// Connection counts.
    pub fn stats(&self) -> &Stats {
        &self.listener.stats
    }

    /// Every request received so far, in order of completion.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// The last request received.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.state.requests).last().cloned()
    }

    /// Requests received and not yet answered, now.
    pub fn requests_in_progress(&self) -> usize {
        self.state.in_progress.now.load(Ordering::SeqCst)
    }

    /// The most requests received and not yet answered at once (use
    /// `/slow/MS` to hold requests long enough for this to show the
    /// client's concurrency).
    pub fn max_requests_in_progress(&self) -> usize {
        self.state.in_progress.max.load(Ordering::SeqCst)
    }

    /// When each request answered so far was in progress: from the end of
    /// its body to the start of its response. [`max_overlap`] of the
    /// intervals of several origins gives their combined concurrency.
    pub fn request_intervals(&self) -> Vec<(Instant, Instant)> {
        lock(&self.state.in_progress.intervals).clone()
    }

    /// Lets `/gated/ID` send the rest of its body.
    pub fn open_gate(&self, id: &str) {
        lock(&self.state.gates.open).insert(id.to_owned());
        self.state.gates.cond.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request head as the test servers read it.
pub(crate) struct Head {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) version_minor: u8,
    pub(crate) headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request head; `Ok(None)` when the peer closed between
/// requests. The origin and the test proxy both read heads with it.
pub(crate) fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut buf = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut buf)?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        if buf.ends_with(b"\r\n\r\n") || buf == b"\r\n" {
            if buf == b"\r\n" {
                buf.clear();
                continue;
            }
            break;
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad request head",
            ))
        }
    }
    Ok(Some(Head {
        method: req.method.unwrap_or_default().to_owned(),
        target: req.path.unwrap_or_default().to_owned(),
        version_minor: req.version.unwrap_or(1),
        headers: req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
    }))
}

/// Streams the request body through `f`, returning the framing seen.
fn read_body(r: &mut impl BufRead, head: &Head, mut f: impl FnMut(&[u8])) -> io::Result<String> {
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let mut buf = vec![0u8; 64 * 1024];
    if chunked {
        loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let size_str = line.trim().split(';').next().unwrap_or("");
            let size = u64::from_str_radix(size_str, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers until the blank line.
                loop {
                    let mut t = String::new();
                    if r.read_line(&mut t)? == 0 || t == "\r\n" || t == "\n" {
                        break;
                    }
                }
                return Ok("chunked".into());
            }
            let mut left = size;
            while left > 0 {
                let want = left.min(buf.len() as u64) as usize;
                let n = r.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                f(&buf[..n]);
                left -= n as u64;
            }
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    }
    match head.header("content-length") {
        Some(v) => {
            let len: u64 = v
                .trim()
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
            let mut left = len;
            while left > 0 {
                let want = left.min(buf.len() as u64) as usize;
                let n = r.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                f(&buf[..n]);
                left -= n as u64;
            }
            Ok(format!("length:{len}"))
        }
        None => Ok("none".into()),
    }
}

/// Serves the requests of one connection (plain TCP or TLS) until it ends.
fn serve<S: Read + Write>(
    conn: S,
    local_port: u16,
    index: usize,
    state: &Arc<State>,
) -> io::Result<()> {
    // Writes go to the stream under the buffer: the request body has been
    // read in full before the response starts.
    let mut reader = BufReader::with_capacity(64 * 1024, conn);
    loop {
        let Some(head) = read_head(&mut reader)? else {
            return Ok(());
        };
        let (path, pairs) = match head.target.split_once('?') {
            Some((p, q)) => (p.to_owned(), parse_query(q)),
            None => (head.target.clone(), Vec::new()),
        };
        let query: HashMap<String, String> = pairs.iter().cloned().collect();
        let mut hasher = Sha256::new();
        let mut body_len = 0u64;
        let mut body_text = Vec::new();
        let framing = read_body(&mut reader, &head, |chunk| {
            if path != "/sink" {
                hasher.update(chunk);
            }
            body_len += chunk.len() as u64;
            if body_text.len() < 4096 {
                let take = (4096 - body_text.len()).min(chunk.len());
                body_text.extend_from_slice(&chunk[..take]);
            }
        })?;
        let record = RecordedRequest {
            method: head.method.clone(),
            target: head.target.clone(),
            headers: head.headers.clone(),
            framing,
            body_len,
            body_sha256: hex(&hasher.finalize()),
            body_text: String::from_utf8_lossy(&body_text).into_owned(),
            connection: index,
        };
        lock(&state.requests).push(record.clone());
        let in_progress = InProgressGuard::new(state);
        let keep_alive = head.version_minor == 1
            && !head
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let is_head = head.method == "HEAD";
        let resp = Responder {
            out: reader.get_mut(),
            is_head,
            in_progress: Some(in_progress),
        };
        let req = Req {
            path: &path,
            query: &query,
            pairs: &pairs,
            record: &record,
        };
        let keep = route(resp, &req, state, local_port)?;
        if !(keep && keep_alive) {
            return Ok(());
        }
    }
}

/// The query's name-value pairs, percent-decoded, in order.
fn parse_query(q: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// One request as the router sees it.
struct Req<'a> {
    path: &'a str,
    /// The query, last value of a repeated name winning.
    query: &'a HashMap<String, String>,
    /// The query in order, repeated names kept.
    pairs: &'a [(String, String)],
    record: &'a RecordedRequest,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Responder<'a> {
    out: &'a mut dyn Write,
    is_head: bool,
    /// Ended as the response starts (or when the responder goes).
    in_progress: Option<InProgressGuard>,
}

impl Responder<'_> {
    fn head(&mut self, status: u16, reason: &str, headers: &[(&str, String)]) -> io::Result<()> {
        self.in_progress = None;
        let mut h = format!("HTTP/1.1 {status} {reason}\r\n");
        for (n, v) in headers {
            h.push_str(&format!("{n}: {v}\r\n"));
        }
        h.push_str("\r\n");
        self.out.write_all(h.as_bytes())
    }

    fn full(
        &mut self,
        status: u16,
        reason: &str,
        content_type: &str,
        body: &[u8],
    ) -> io::Result<bool> {
        self.head(
            status,
            reason,
            &[
                ("content-type", content_type.to_owned()),
                ("content-length", body.len().to_string()),
            ],
        )?;
        if !self.is_head {
            self.out.write_all(body)?;
        }
        Ok(true)
    }

    fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.out
            .write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
        self.out.write_all(data)?;
        self.out.write_all(b"\r\n")
    }

    fn end_chunks(&mut self) -> io::Result<()> {
        self.out.write_all(b"0\r\n\r\n")
    }
}

fn pattern_slices(len: u64, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    let p = &PATTERN[..];
    let mut left = len;
    while left > 0 {
        let n = left.min(p.len() as u64) as usize;
        f(&p[..n])?;
        left -= n as u64;
    }
    Ok(())
}

fn reason_for(code: u16) -> &'static str {
    http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

/// Answers one request; returns whether the connection may be kept.
fn route(mut r: Responder<'_>, q: &Req<'_>, state: &State, local_port: u16) -> io::Result<bool> {
    let (path, query, req) = (q.path, q.query, q.record);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["echo"] | ["echo", ..] => {
            let body = serde_json::to_vec(&echo_json(req, local_port)).map_err(io::Error::other)?;
            r.full(200, "OK", "application/json", &body)
        }
        ["status", code] => {
            let code: u16 = code.parse().unwrap_or(400);
            let reason = reason_for(code);
            if code == 204 || code == 304 || (100..200).contains(&code) {
                r.head(code, reason, &[])?;
                Ok(true)
            } else {
                r.full(
                    code,
                    reason,
                    "text/plain",
                    format!("status {code}\n").as_bytes(),
                )
            }
        }
        ["bytes", n] => {
            let n: u64 = n.parse().unwrap_or(0);
            match query.get("chunked").and_then(|c| c.parse::<usize>().ok()) {
                Some(size) => {
                    r.head(
                        200,
                        "OK",
                        &[
                            ("content-type", "application/octet-stream".into()),
                            ("transfer-encoding", "chunked".into()),
                        ],
                    )?;
                    if !r.is_head {
                        let size = size.max(1);
                        pattern_slices(n, |s| {
                            for c in s.chunks(size) {
                                r.chunk(c)?;
                            }
                            Ok(())
                        })?;
                        r.end_chunks()?;
                    }
                }
                None => {
                    r.head(
                        200,
                        "OK",
                        &[
                            ("content-type", "application/octet-stream".into()),
                            ("content-length", n.to_string()),
                        ],
                    )?;
                    if !r.is_head {
                        pattern_slices(n, |s| r.out.write_all(s))?;
                    }
                }
            }
            Ok(true)
        }
        ["repeated-headers"] => {
            r.head(
                200,
                "OK",
                &[
                    ("x-multi", "first".into()),
                    ("x-single", "only".into()),
                    ("x-multi", "second".into()),
                    ("x-multi", "third".into()),
                    ("content-length", "2".into()),
                ],
            )?;
            if !r.is_head {
                r.out.write_all(b"ok")?;
            }
            Ok(true)
        }
        ["delay", ms] => {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            r.full(200, "OK", "text/plain", b"delayed\n")
        }
        ["drip"] => {
            let chunks: u32 = query
                .get("chunks")
                .and_then(|v| v.parse().ok())
                .unwrap_or(10);
            let ms: u64 = query.get("ms").and_then(|v| v.parse().ok()).unwrap_or(50);
            let size: usize = query.get("size").and_then(|v| v.parse().ok()).unwrap_or(16);
            r.head(200, "OK", &[("transfer-encoding", "chunked".into())])?;
            for _ in 0..chunks {
                r.chunk(&PATTERN[..size.min(PATTERN.len())])?;
                r.out.flush()?;
                std::thread::sleep(Duration::from_millis(ms));
            }
            r.end_chunks()?;
            Ok(true)
        }
        ["gated", id] => {
            r.head(200, "OK", &[("transfer-encoding", "chunked".into())])?;
            r.chunk(b"first chunk;")?;
            r.out.flush()?;
            let gates = &state.gates;
            let open = lock(&gates.open);
            let (open, timeout) = gates
                .cond
                .wait_timeout_while(open, Duration::from_secs(10), |o| !o.contains(*id))
                .unwrap_or_else(|p| p.into_inner());
            drop(open);
            if timeout.timed_out() {
                // The client never saw the first chunk on its own: end without the last chunk.
                return Ok(false);
            }
            r.chunk(b"second chunk")?;
            r.end_chunks()?;
            Ok(true)
        }
        ["http10", n] => {
            let n: u64 = n.parse().unwrap_or(0);
            r.in_progress = None;
            r.out
                .write_all(b"HTTP/1.0 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n")?;
            pattern_slices(n, |s| r.out.write_all(s))?;
            Ok(false)
        }
        ["sink"] => r.full(
            200,
            "OK",
            "application/json",
            format!("{{\"len\":{}}}", req.body_len).as_bytes(),
        ),
        ["slow", ms] => {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            match query.get("len").and_then(|v| v.parse::<usize>().ok()) {
                Some(n) => r.full(200, "OK", "application/octet-stream", &body_pattern(n)),
                None => r.full(200, "OK", "text/plain", b"slow\n"),
            }
        }
        ["redirect", n] => match n.parse::<u32>() {
            Ok(0) => {
                let body =
                    serde_json::to_vec(&echo_json(req, local_port)).map_err(io::Error::other)?;
                r.full(200, "OK", "application/json", &body)
            }
            Ok(n) => redirect(&mut r, 302, &format!("/redirect/{}", n - 1)),
            Err(_) => r.full(400, "Bad Request", "text/plain", b"bad hop count\n"),
        },
        ["redirect-to"] => {
            let status = status_param(query, 302);
            let location = query.get("url").map(String::as_str).unwrap_or("/echo");
            redirect(&mut r, status, location)
        }
        ["loop"] => redirect(&mut r, 302, "/loop"),
        ["no-location"] => {
            let status = status_param(query, 302);
            r.full(status, reason_for(status), "text/plain", b"no location\n")
        }
        ["headers"] => {
            let body = b"headers\n";
            let mut headers: Vec<(&str, String)> = q
                .pairs
                .iter()
                .map(|(n, v)| (n.as_str(), v.clone()))
                .collect();
            headers.push(("content-length", body.len().to_string()));
            r.head(200, "OK", &headers)?;
            if !r.is_head {
                r.out.write_all(body)?;
            }
            Ok(true)
        }
        ["encoded", "gzip-chunked", n] => {
            let n: usize = n.parse().unwrap_or(0);
            let body = encoded_body("gzip", n)?;
            r.head(
                200,
                "OK",
                &[
                    ("content-type", "application/octet-stream".into()),
                    ("content-encoding", "gzip".into()),
                    ("transfer-encoding", "chunked".into()),
                ],
            )?;
            if !r.is_head {
                for c in body.chunks(1000) {
                    r.chunk(c)?;
                }
                r.end_chunks()?;
            }
            Ok(true)
        }
        ["encoded", "gzip-empty"] => encoded(&mut r, "gzip", &[]),
        ["encoded", "corrupt-gzip"] => {
            // A valid gzip header, then a deflate block of the reserved type 3:
            // every decoder must reject it at once.
            let mut body = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
            body.extend_from_slice(&[0xff; 64]);
            encoded(&mut r, "gzip", &body)
        }
        ["encoded", "truncated-gzip"] => {
            let mut body = encoded_body("gzip", 100_000)?;
            body.truncate(body.len() / 2);
            encoded(&mut r, "gzip", &body)
        }
        ["encoded", "bomb"] => encoded(&mut r, "gzip", &BOMB),
        ["encoded", codings, n] => {
            let n: usize = n.parse().unwrap_or(0);
            match encoded_body(codings, n) {
                Ok(body) => {
                    let label = codings
                        .split(',')
                        .map(|c| if c == "deflate-raw" { "deflate" } else { c })
                        .collect::<Vec<_>>()
                        .join(", ");
                    encoded(&mut r, &label, &body)
                }
                Err(_) => r.full(400, "Bad Request", "text/plain", b"unknown coding\n"),
            }
        }
        ["cache", id] => cache_routes::respond(r, id, q, &state.cache),
        ["cookies", "set"] => session_routes::set(r, q),
        ["cookies", ..] => session_routes::show(r, q),
        ["basic-auth", user, pass] => session_routes::basic(r, q, user, pass, local_port),
        _ => r.full(404, "Not Found", "text/plain", b"no such route\n"),
    }
}

/// The `status` query parameter, or `default`.
fn status_param(query: &HashMap<String, String>, default: u16) -> u16 {
    query
        .get("status")
        .and_then(|s| s.parse().ok())
        .filter(|s| (200..600).contains(s))
        .unwrap_or(default)
}

/// A redirect response with a short body.
fn redirect(r: &mut Responder<'_>, status: u16, location: &str) -> io::Result<bool> {
    let body = b"redirecting\n";
    r.head(
        status,
        reason_for(status),
        &[
            ("location", location.to_owned()),
            ("content-type", "text/plain".into()),
            ("content-length", body.len().to_string()),
        ],
    )?;
    if !r.is_head {
        r.out.write_all(body)?;
    }
    Ok(true)
}

/// A 200 carrying an already encoded body.
fn encoded(r: &mut Responder<'_>, coding: &str, body: &[u8]) -> io::Result<bool> {
    r.head(
        200,
        "OK",
        &[
            ("content-type", "application/octet-stream".into()),
            ("content-encoding", coding.to_owned()),
            ("content-length", body.len().to_string()),
        ],
    )?;
    if !r.is_head {
        r.out.write_all(body)?;
    }
    Ok(true)
}

/// 64 MiB of zeros, gzipped once per process.
static BOMB: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let zeros = vec![0u8; 1 << 20];
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for _ in 0..64 {
        // Writing to a Vec cannot fail.
        let _ = enc.write_all(&zeros);
    }
    enc.finish().unwrap_or_default()
});

/// The decoded size of `/encoded/bomb`.
pub const BOMB_DECODED_BYTES: u64 = 64 << 20;

/// `data` compressed with one content coding: `gzip`, `deflate` (zlib, as
/// HTTP defines it), `deflate-raw` (raw deflate, which servers also label
/// `deflate`), `br` or `zstd`.
pub fn encode(coding: &str, data: &[u8]) -> io::Result<Vec<u8>> {
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;
    match coding {
        "gzip" => {
            let mut e = GzEncoder::new(Vec::new(), Compression::default());
            e.write_all(data)?;
            e.finish()
        }
        "deflate" => {
            let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
            e.write_all(data)?;
            e.finish()
        }
        "deflate-raw" => {
            let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
            e.write_all(data)?;
            e.finish()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(data)?;
                w.flush()?;
            }
            Ok(out)
        }
        "zstd" => zstd::stream::encode_all(data, 3),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unknown content coding {other:?}"),
        )),
    }
}

/// The body `/encoded/CODINGS/N` sends: `n` bytes of [`body_pattern`] compressed
/// with each comma-separated coding in turn (so `gzip,br` is gzip, then brotli,
/// as `Content-Encoding: gzip, br` says).
pub fn encoded_body(codings: &str, n: usize) -> io::Result<Vec<u8>> {
    let mut body = body_pattern(n);
    for coding in codings.split(',') {
        body = encode(coding.trim(), &body)?;
    }
    Ok(body)
}

/// The most intervals that overlap at one instant (intervals are half-open,
/// so one that ends as another starts does not overlap it).
pub fn max_overlap(intervals: &[(Instant, Instant)]) -> usize {
    let mut edges: Vec<(Instant, i32)> = intervals
        .iter()
        .flat_map(|(a, b)| [(*a, 1), (*b, -1)])
        .collect();
    // Ends sort before starts at the same instant.
    edges.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    max.max(0) as usize
}

/// The echo body: everything a case may assert about the request, with the
/// headers a library adds on its own (Host, framing) set apart so the JSON is
/// the same on every backend.
fn echo_json(req: &RecordedRequest, local_port: u16) -> serde_json::Value {
    // The port differs from run to run; the echo says whether it was right instead.
    let hosts: Vec<String> = req
        .header_values("host")
        .iter()
        .map(|h| match h.rsplit_once(':') {
            Some((name, port)) if port == local_port.to_string() => format!("{name}:PORT"),
            _ => (*h).to_owned(),
        })
        .collect();
    serde_json::json!({
        "method": req.method,
        "target": req.target,
        "headers": req.application_headers(),
        "host": hosts,
        "framing": req.framing,
        "body_len": req.body_len,
        "body_sha256": req.body_sha256,
        "body": req.body_text,
    })
}
