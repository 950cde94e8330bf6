//! The origin server: echo of the received request, status codes, byte and
//! chunked bodies, delays, drips, gated streams and HTTP/1.0 bodies.
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

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::listener::{Listener, Stats};

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

struct State {
    requests: Mutex<Vec<RecordedRequest>>,
    gates: Gates,
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
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            gates: Gates::default(),
        });
        let st = state.clone();
        let listener = Listener::start_on("origin", port, move |conn, index| {
            let _ = serve(conn, index, &st);
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

    /// Lets `/gated/ID` send the rest of its body.
    pub fn open_gate(&self, id: &str) {
        lock(&self.state.gates.open).insert(id.to_owned());
        self.state.gates.cond.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Head {
    method: String,
    target: String,
    version_minor: u8,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request head; `Ok(None)` when the peer closed between requests.
fn read_head(r: &mut BufReader<TcpStream>) -> io::Result<Option<Head>> {
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
fn read_body(
    r: &mut BufReader<TcpStream>,
    head: &Head,
    mut f: impl FnMut(&[u8]),
) -> io::Result<String> {
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

fn serve(conn: TcpStream, index: usize, state: &State) -> io::Result<()> {
    let local_port = conn.local_addr()?.port();
    let mut reader = BufReader::with_capacity(64 * 1024, conn.try_clone()?);
    let mut out = conn;
    loop {
        let Some(head) = read_head(&mut reader)? else {
            return Ok(());
        };
        let (path, query) = match head.target.split_once('?') {
            Some((p, q)) => (p.to_owned(), parse_query(q)),
            None => (head.target.clone(), HashMap::new()),
        };
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
        let keep_alive = head.version_minor == 1
            && !head
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let is_head = head.method == "HEAD";
        let resp = Responder {
            out: &mut out,
            is_head,
        };
        let keep = route(resp, &path, &query, &record, state, local_port)?;
        if !(keep && keep_alive) {
            return Ok(());
        }
    }
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Responder<'a> {
    out: &'a mut TcpStream,
    is_head: bool,
}

impl Responder<'_> {
    fn head(&mut self, status: u16, reason: &str, headers: &[(&str, String)]) -> io::Result<()> {
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
fn route(
    mut r: Responder<'_>,
    path: &str,
    query: &HashMap<String, String>,
    req: &RecordedRequest,
    state: &State,
    local_port: u16,
) -> io::Result<bool> {
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
        _ => r.full(404, "Not Found", "text/plain", b"no such route\n"),
    }
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
