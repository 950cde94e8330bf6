//! TLS with rustls (ring provider), layered inside the backend's own
//! transport rather than through ureq's `RustlsConnector`.
//!
//! Why not ureq's connector: it would wrap the transport of `transport.rs`
//! from the outside, so the response filter of `framing.rs`, the reason
//! phrase capture and the idle probe would all see ciphertext; and it offers
//! no ALPN setting. Here the TLS session sits between the socket (which a
//! cancel can still shut down) and the filter, and the client configuration
//! is built from handle-api's [`TlsConfig`] alone:
//!
//! - the roots are exactly [`TlsConfig::roots`] (no webpki-roots, no platform
//!   verifier);
//! - `verify: false` accepts any certificate for any name, but still checks
//!   the handshake signatures, so the peer holds the key of what it sent;
//! - the identity, when set, is presented when the server asks for one;
//! - ALPN offers `http/1.1` only: ureq speaks nothing else.
//!
//! Certificate failures map onto [`TlsProblem`] the way the other backends
//! map theirs ([`problem`]), so traces agree.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use handle_api::{Error, TlsConfig, TlsProblem};
use rustls::{ClientConfig, ClientConnection};
use rustls_pki_types::ServerName;

use crate::error::TlsFailure;

/// The only protocol offered in ALPN.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The rustls client configuration of the backend, or why it cannot be
/// made (an unusable client identity), which every https load then reports,
/// as the other backends report it.
pub(crate) type TlsSetup = std::result::Result<Arc<ClientConfig>, Error>;

/// The rustls client configuration for `settings` (`handle_api::rustls`,
/// shared with the hyper backend), offering `http/1.1` only.
pub(crate) fn client_config(settings: &TlsConfig) -> TlsSetup {
    let mut config = handle_api::rustls::client_config(settings)?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// A new client session for `host` (a name, or an IP literal with or without brackets).
pub(crate) fn session(
    config: &TlsSetup,
    host: &str,
) -> std::result::Result<ClientConnection, TlsFailure> {
    let config = config.as_ref().map_err(|e| {
        TlsFailure::new(
            e.tls_problem().unwrap_or(TlsProblem::Handshake),
            e.message().to_owned(),
        )
    })?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_owned()).map_err(|e| {
        TlsFailure::new(
            TlsProblem::Handshake,
            format!("{host:?} cannot be used as a TLS server name: {e}"),
        )
    })?;
    ClientConnection::new(config.clone(), name).map_err(TlsFailure::from_rustls)
}

pub(crate) use handle_api::rustls::problem;

/// A rustls error as the I/O error the transport hands ureq; `error.rs`
/// finds the [`TlsFailure`] inside again.
fn failure(e: rustls::Error) -> io::Error {
    io::Error::other(TlsFailure::from_rustls(e))
}

/// Reads TLS records into the session and processes them. Returns the
/// number of bytes read from the socket (0 at its end). An error the session
/// finds is answered with its alert before it is returned.
fn receive(conn: &mut ClientConnection, mut sock: &TcpStream) -> io::Result<usize> {
    let n = loop {
        match conn.read_tls(&mut sock) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => break r?,
        }
    };
    if let Err(e) = conn.process_new_packets() {
        // Best effort: the peer learns why, but the error is ours to report.
        let _ = conn.write_tls(&mut sock);
        return Err(failure(e));
    }
    Ok(n)
}

/// Sends every TLS record the session has queued.
fn flush(conn: &mut ClientConnection, mut sock: &TcpStream) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(&mut sock)?;
    }
    Ok(())
}

/// Runs the handshake to its end. `before_io` is called before every
/// socket read or write (to apply what is left of the connect budget).
pub(crate) fn handshake(
    conn: &mut ClientConnection,
    sock: &TcpStream,
    mut before_io: impl FnMut() -> io::Result<()>,
) -> io::Result<()> {
    while conn.is_handshaking() {
        before_io()?;
        if conn.wants_write() {
            let mut s = sock;
            conn.write_tls(&mut s)?;
            continue;
        }
        if receive(conn, sock)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection during the TLS handshake",
            ));
        }
    }
    // The client's last flight (Finished, and a certificate when asked for).
    before_io()?;
    flush(conn, sock)
}

/// Reads plaintext. 0 is the end of the stream: a close_notify, or the peer
/// closing the socket without one, which is reported like a TCP close so
/// that the response's framing (as for cleartext) decides whether the
/// body was complete.
pub(crate) fn read(
    conn: &mut ClientConnection,
    sock: &TcpStream,
    buf: &mut [u8],
) -> io::Result<usize> {
    loop {
        match conn.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        // Socket errors (a timeout included) pass through as they are.
        receive(conn, sock)?;
        // Answers the session may owe (a key update, an alert).
        flush(conn, sock)?;
    }
}

/// Writes all of `buf` as plaintext.
pub(crate) fn write_all(
    conn: &mut ClientConnection,
    sock: &TcpStream,
    mut buf: &[u8],
) -> io::Result<()> {
    while !buf.is_empty() {
        let n = conn.writer().write(buf)?;
        buf = &buf[n..];
        if let Err(e) = flush(conn, sock) {
            return Err(pending_alert(conn, sock).unwrap_or(e));
        }
        if n == 0 && !conn.wants_write() {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}

/// After a failed write: the reason the server gave before it closed, if
/// one is waiting (a TLS 1.3 server refuses a client certificate only after
/// the handshake, so its alert can race the request).
fn pending_alert(conn: &mut ClientConnection, sock: &TcpStream) -> Option<io::Error> {
    sock.set_nonblocking(true).ok()?;
    let found = match receive(conn, sock) {
        Err(e) if e.get_ref().is_some_and(|i| i.is::<TlsFailure>()) => Some(e),
        _ => None,
    };
    let _ = sock.set_nonblocking(false);
    found
}

/// True when an idle session can carry another request: no plaintext nobody
/// asked for, no close from the peer. Records that arrive meanwhile (TLS 1.3
/// session tickets) are processed, never mistaken for data.
pub(crate) fn idle_ok(conn: &mut ClientConnection, sock: &TcpStream) -> io::Result<bool> {
    sock.set_nonblocking(true)?;
    let result = (|| loop {
        let state = conn.process_new_packets().map_err(failure)?;
        if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
            return Ok(false);
        }
        match receive(conn, sock) {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(e),
        }
    })();
    sock.set_nonblocking(false)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_offers_http11_only() {
        let c = client_config(&TlsConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
