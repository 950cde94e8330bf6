//! The raw server: sends scripted bytes, for malformed, truncated and
//! otherwise unusual responses that a well-behaved server never produces.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::listener::{Listener, Stats};

/// One step of a connection's script.
#[derive(Debug, Clone)]
pub enum Step {
    /// Reads one request head (and a Content-Length body) and records it.
    ReadRequest,
    /// Writes bytes.
    Send(Vec<u8>),
    /// Waits.
    Sleep(Duration),
    /// Closes the connection cleanly (FIN after a drain of what the peer sent).
    Close,
    /// Resets the connection (RST, via SO_LINGER 0).
    Reset,
}

impl Step {
    /// A `Send` of `s`'s bytes.
    pub fn send(s: impl AsRef<[u8]>) -> Step {
        Step::Send(s.as_ref().to_vec())
    }
}

/// A running raw server: every connection plays the same script.
pub struct RawServer {
    listener: Listener,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RawServer {
    /// Starts a raw server playing `script` on each connection.
    pub fn start(script: Vec<Step>) -> io::Result<RawServer> {
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = received.clone();
        let listener = Listener::start("raw", move |conn, _| {
            let _ = play(conn, &script, &rec);
        })?;
        Ok(RawServer { listener, received })
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
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn read_request(conn: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
        if head.len() > 256 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    io::copy(&mut (&mut *conn).take(len), &mut io::sink())?;
    Ok(head)
}

fn play(mut conn: TcpStream, script: &[Step], rec: &Mutex<Vec<Vec<u8>>>) -> io::Result<()> {
    for step in script {
        match step {
            Step::ReadRequest => {
                let head = read_request(&mut conn)?;
                rec.lock().unwrap_or_else(|p| p.into_inner()).push(head);
            }
            Step::Send(b) => {
                conn.write_all(b)?;
                conn.flush()?;
            }
            Step::Sleep(d) => std::thread::sleep(*d),
            Step::Close => {
                conn.shutdown(std::net::Shutdown::Write)?;
                // Drain until the peer closes, so our FIN is not turned into a reset.
                conn.set_read_timeout(Some(Duration::from_secs(5)))?;
                let _ = io::copy(&mut conn, &mut io::sink());
                return Ok(());
            }
            Step::Reset => {
                socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
        }
    }
    // A script that ends without Close keeps the connection until the peer goes.
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let _ = io::copy(&mut conn, &mut io::sink());
    Ok(())
}
