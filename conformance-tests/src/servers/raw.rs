//! The raw server: sends scripted bytes, for malformed, truncated and
//! otherwise unusual responses that a well-behaved server never produces.
//!
//! Every connection plays a script of [`Step`]s: the same one for all
//! connections ([`RawServer::start`]), one per connection in accept order
//! ([`RawServer::per_connection`]), or one made for each connection by a
//! function ([`RawServer::start_with`], for random faults). What the client
//! sent is recorded per request, with whether the request arrived complete,
//! so a case can assert that a faulty upload never reached the server whole.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::listener::{Listener, Stats};

/// The most a request head may be before the server gives up on it.
const MAX_HEAD: usize = 256 * 1024;
/// How long a step that waits for the client waits at most.
const CLIENT_WAIT: Duration = Duration::from_secs(10);

/// One step of a connection's script.
#[derive(Debug, Clone)]
pub enum Step {
    /// Reads one request, head and body (by Content-Length or chunked), and records it.
    ReadRequest,
    /// Reads one request head only and records it; the body stays unread.
    ReadHead,
    /// Writes bytes.
    Send(Vec<u8>),
    /// Writes bytes one piece at a time with a pause after each piece.
    Drip {
        /// What to send.
        data: Vec<u8>,
        /// Bytes per piece.
        piece: usize,
        /// Pause after each piece.
        every: Duration,
    },
    /// Waits.
    Sleep(Duration),
    /// Closes the connection cleanly (FIN after a drain of what the peer sent).
    Close,
    /// Resets the connection (RST, via SO_LINGER 0).
    Reset,
    /// Waits (up to 10 s) until the client closes its end, reading and
    /// dropping whatever it sends meanwhile, then ends the connection.
    AwaitClose,
}

impl Step {
    /// A `Send` of `s`'s bytes.
    pub fn send(s: impl AsRef<[u8]>) -> Step {
        Step::Send(s.as_ref().to_vec())
    }

    /// A `Drip` of `s`'s bytes, `piece` at a time, `every` apart.
    pub fn drip(s: impl AsRef<[u8]>, piece: usize, every: Duration) -> Step {
        Step::Drip {
            data: s.as_ref().to_vec(),
            piece: piece.max(1),
            every,
        }
    }
}

/// One request as the raw server received it.
#[derive(Debug, Clone, Default)]
pub struct RawRequest {
    /// Which connection (0, 1, … in accept order) carried it.
    pub connection: usize,
    /// The head as received, through its blank line (possibly cut short).
    pub head: Vec<u8>,
    /// The body bytes received (chunked framing removed).
    pub body: Vec<u8>,
    /// True when the head and the whole body as framed arrived.
    pub complete: bool,
}

impl RawRequest {
    /// The request line, lossily as text.
    pub fn request_line(&self) -> String {
        let end = self
            .head
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(self.head.len());
        String::from_utf8_lossy(&self.head[..end])
            .trim_end()
            .to_owned()
    }
}

type ScriptFn = dyn Fn(usize) -> Vec<Step> + Send + Sync;

/// A running raw server.
pub struct RawServer {
    listener: Listener,
    received: Arc<Mutex<Vec<RawRequest>>>,
    client_closes: Arc<AtomicUsize>,
}

impl RawServer {
    /// Starts a raw server playing `script` on each connection.
    pub fn start(script: Vec<Step>) -> io::Result<RawServer> {
        Self::start_with(move |_| script.clone())
    }

    /// Starts a raw server whose connection `i` (in accept order) plays
    /// `scripts[i]`; connections past the list play its last script.
    pub fn per_connection(scripts: Vec<Vec<Step>>) -> io::Result<RawServer> {
        Self::start_with(move |i| {
            scripts
                .get(i)
                .or_else(|| scripts.last())
                .cloned()
                .unwrap_or_default()
        })
    }

    /// Starts a raw server whose connection `i` plays `script(i)`.
    pub fn start_with(
        script: impl Fn(usize) -> Vec<Step> + Send + Sync + 'static,
    ) -> io::Result<RawServer> {
        let received = Arc::new(Mutex::new(Vec::new()));
        let client_closes = Arc::new(AtomicUsize::new(0));
        let (rec, closes) = (received.clone(), client_closes.clone());
        let script: Arc<ScriptFn> = Arc::new(script);
        let listener = Listener::start("raw", move |conn, index| {
            let steps = script(index);
            let _ = play(conn, index, &steps, &rec, &closes);
        })?;
        Ok(RawServer {
            listener,
            received,
            client_closes,
        })
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

    /// The request heads received, in order.
    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.received().into_iter().map(|r| r.head).collect()
    }

    /// Every request received (complete or not), in order.
    pub fn received(&self) -> Vec<RawRequest> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many [`Step::AwaitClose`] steps saw the client close its end.
    pub fn client_closes(&self) -> usize {
        self.client_closes.load(Ordering::SeqCst)
    }
}

/// Reads up to the end of a request head; `Err` with what arrived when the
/// peer stops first.
fn read_head(conn: &mut TcpStream) -> Result<Vec<u8>, Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return Err(head),
        }
        if head.len() > MAX_HEAD {
            return Err(head);
        }
    }
    Ok(head)
}

/// How the body of a request with `head` is framed: `Some(n)` bytes, or
/// `None` for chunked.
fn body_framing(head: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let chunked = text.lines().any(|l| {
        l.strip_prefix("transfer-encoding:")
            .is_some_and(|v| v.contains("chunked"))
    });
    if chunked {
        return None;
    }
    Some(
        text.lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0),
    )
}

fn read_line(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        match conn.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
        if line.len() > MAX_HEAD {
            return None;
        }
    }
    Some(line)
}

/// Reads a chunked body into `body`; true when its last chunk and trailer section arrived.
fn read_chunked(conn: &mut TcpStream, body: &mut Vec<u8>) -> bool {
    loop {
        let Some(line) = read_line(conn) else {
            return false;
        };
        let size = String::from_utf8_lossy(&line);
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(size) = u64::from_str_radix(size, 16) else {
            return false;
        };
        if size == 0 {
            // Trailer fields, then the blank line.
            loop {
                match read_line(conn) {
                    Some(l) if l == b"\r\n" || l == b"\n" => return true,
                    Some(_) => {}
                    None => return false,
                }
            }
        }
        let before = body.len();
        let _ = (&mut *conn).take(size).read_to_end(body);
        if (body.len() - before) as u64 != size {
            return false;
        }
        if read_line(conn).is_none() {
            return false;
        }
    }
}

fn read_request(conn: &mut TcpStream, index: usize, with_body: bool) -> (RawRequest, bool) {
    let mut req = RawRequest {
        connection: index,
        ..RawRequest::default()
    };
    match read_head(conn) {
        Ok(head) => req.head = head,
        Err(partial) => {
            req.head = partial;
            return (req, false);
        }
    }
    if !with_body {
        req.complete = true;
        return (req, true);
    }
    req.complete = match body_framing(&req.head) {
        Some(len) => {
            let _ = (&mut *conn).take(len).read_to_end(&mut req.body);
            req.body.len() as u64 == len
        }
        None => read_chunked(conn, &mut req.body),
    };
    let ok = req.complete;
    (req, ok)
}

fn play(
    mut conn: TcpStream,
    index: usize,
    script: &[Step],
    rec: &Mutex<Vec<RawRequest>>,
    closes: &AtomicUsize,
) -> io::Result<()> {
    let _ = conn.set_read_timeout(Some(CLIENT_WAIT));
    for step in script {
        match step {
            Step::ReadRequest | Step::ReadHead => {
                let (req, ok) = read_request(&mut conn, index, matches!(step, Step::ReadRequest));
                // A connection the client closed without sending anything is no request.
                if !req.head.is_empty() {
                    rec.lock().unwrap_or_else(|p| p.into_inner()).push(req);
                }
                if !ok {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            Step::Send(b) => {
                conn.write_all(b)?;
                conn.flush()?;
            }
            Step::Drip { data, piece, every } => {
                for part in data.chunks(*piece) {
                    conn.write_all(part)?;
                    conn.flush()?;
                    std::thread::sleep(*every);
                }
            }
            Step::Sleep(d) => std::thread::sleep(*d),
            Step::Close => {
                conn.shutdown(std::net::Shutdown::Write)?;
                // Drain until the peer closes, so our FIN is not turned into a reset.
                let _ = io::copy(&mut conn, &mut io::sink());
                return Ok(());
            }
            Step::Reset => {
                socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
            Step::AwaitClose => {
                if io::copy(&mut conn, &mut io::sink()).is_ok() {
                    closes.fetch_add(1, Ordering::SeqCst);
                }
                return Ok(());
            }
        }
    }
    // A script that ends without Close keeps the connection until the peer goes.
    let _ = io::copy(&mut conn, &mut io::sink());
    Ok(())
}
