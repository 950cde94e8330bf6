//! The proxy handshakes the transport runs on a fresh connection to a proxy:
//! an HTTP CONNECT tunnel (for https urls through an HTTP proxy) and SOCKS5
//! (RFC 1928, with RFC 1929 username/password).
//!
//! ureq has both, but its connectors open their own sockets (out of reach
//! of the backend's cancel and response filter), its CONNECT sends headers
//! of its own (`Proxy-Connection`, a User-Agent) and accepts only a 200. The
//! handshakes are small, so they are written here over the backend's socket.
//! http urls through an HTTP proxy need no handshake: the transport writes
//! their request line in absolute form instead (see `transport.rs`).
//!
//! Failures are [`ProxyFailure`]s (kind `proxy`) wrapped in `io::Error`;
//! socket timeouts pass through untouched so that the caller reports them
//! as the connect timeout.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

use handle_api::http::HeaderValue;
use handle_api::ProxyCredentials;

use crate::error::ProxyFailure;

fn refused(message: impl Into<String>) -> io::Error {
    io::Error::other(ProxyFailure::new(message))
}

/// Asks an HTTP proxy for a tunnel to `authority` (`host:port`, an IPv6
/// host in brackets). The request carries Host and, with credentials,
/// Proxy-Authorization: nothing of the origin request. Any 2xx opens the
/// tunnel; anything else is refused. The response head is held to
/// `max_head` bytes.
pub(crate) fn connect_tunnel(
    mut stream: &TcpStream,
    authority: &str,
    authorization: Option<&HeaderValue>,
    max_head: usize,
) -> io::Result<()> {
    let request = handle_api::connect_request(authority, authorization);
    stream.write_all(&request)?;
    let head = read_head(stream, max_head)?;
    let status = tunnel_status(&head)?;
    if (200..300).contains(&status.0) {
        return Ok(());
    }
    Err(refused(format!(
        "the proxy refused the tunnel to {authority}: {} {}",
        status.0, status.1
    )))
}

/// Reads a response head, byte by byte: the tunnel's bytes that follow it
/// belong to the TLS session and must stay in the socket.
fn read_head(mut stream: &TcpStream, max_head: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(refused(
                    "the proxy closed the connection before answering the CONNECT",
                ))
            }
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return Ok(head);
        }
        if head.len() >= max_head {
            return Err(refused(format!(
                "the proxy's answer to the CONNECT is longer than {max_head} bytes"
            )));
        }
    }
}

/// The status code and reason of a CONNECT response head.
fn tunnel_status(head: &[u8]) -> io::Result<(u16, String)> {
    let text = String::from_utf8_lossy(head);
    let line = text.lines().find(|l| !l.is_empty()).unwrap_or_default();
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let reason = parts.next().unwrap_or_default().trim_end().to_owned();
    match code.parse::<u16>() {
        Ok(c) if version.starts_with("HTTP/1.") && code.len() == 3 && (100..600).contains(&c) => {
            Ok((c, reason))
        }
        _ => Err(refused(format!(
            "the proxy's answer to the CONNECT is not an HTTP/1 status line: {line:?}"
        ))),
    }
}

/// Where a SOCKS5 proxy is asked to connect.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SocksTarget<'a> {
    /// An address resolved here (`socks5://`).
    Addr(SocketAddr),
    /// A host name the proxy resolves (`socks5h://`), and the port.
    Name(&'a str, u16),
}

const SOCKS5: u8 = 5;
const NO_AUTH: u8 = 0;
const USER_PASS: u8 = 2;
const NO_ACCEPTABLE: u8 = 0xff;

/// The SOCKS5 handshake: method negotiation, username/password when the
/// proxy picks it, then CONNECT to `target`.
pub(crate) fn socks5(
    mut stream: &TcpStream,
    target: SocksTarget<'_>,
    credentials: Option<&ProxyCredentials>,
) -> io::Result<()> {
    // Without credentials only "no authentication" is offered; with them
    // both, as curl does, and the proxy picks.
    let greeting: &[u8] = match credentials {
        Some(_) => &[SOCKS5, 2, NO_AUTH, USER_PASS],
        None => &[SOCKS5, 1, NO_AUTH],
    };
    stream.write_all(greeting)?;
    let mut choice = [0u8; 2];
    read_exact(stream, &mut choice)?;
    if choice[0] != SOCKS5 {
        return Err(refused(format!(
            "the proxy does not speak SOCKS5 (version {})",
            choice[0]
        )));
    }
    match (choice[1], credentials) {
        (NO_AUTH, _) => {}
        (USER_PASS, Some(c)) => authenticate(stream, c)?,
        (NO_ACCEPTABLE, None) => {
            return Err(refused(
                "the SOCKS5 proxy requires authentication, and no credentials are set",
            ))
        }
        (NO_ACCEPTABLE, Some(_)) => {
            return Err(refused(
                "the SOCKS5 proxy accepts neither no authentication nor username/password",
            ))
        }
        (m, _) => {
            return Err(refused(format!(
                "the SOCKS5 proxy chose an authentication method that was not offered ({m})"
            )))
        }
    }

    let mut request = vec![SOCKS5, 1, 0];
    let port = match target {
        SocksTarget::Addr(SocketAddr::V4(a)) => {
            request.push(1);
            request.extend_from_slice(&a.ip().octets());
            a.port()
        }
        SocksTarget::Addr(SocketAddr::V6(a)) => {
            request.push(4);
            request.extend_from_slice(&a.ip().octets());
            a.port()
        }
        SocksTarget::Name(host, port) => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            match bare.parse::<std::net::IpAddr>() {
                // An IP literal goes as an address, not as a name.
                Ok(std::net::IpAddr::V4(ip)) => {
                    request.push(1);
                    request.extend_from_slice(&ip.octets());
                }
                Ok(std::net::IpAddr::V6(ip)) => {
                    request.push(4);
                    request.extend_from_slice(&ip.octets());
                }
                Err(_) => {
                    let len = u8::try_from(bare.len()).map_err(|_| {
                        refused("the host name is longer than the 255 bytes SOCKS5 can carry")
                    })?;
                    request.push(3);
                    request.push(len);
                    request.extend_from_slice(bare.as_bytes());
                }
            }
            port
        }
    };
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request)?;

    let mut reply = [0u8; 4];
    read_exact(stream, &mut reply)?;
    if reply[0] != SOCKS5 {
        return Err(refused(format!(
            "the proxy's SOCKS5 reply has version {}",
            reply[0]
        )));
    }
    if reply[1] != 0 {
        return Err(refused(format!(
            "the SOCKS5 proxy could not connect: {}",
            reply_text(reply[1])
        )));
    }
    // The bound address, which a CONNECT does not need, then the port.
    let rest = match reply[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            read_exact(stream, &mut len)?;
            usize::from(len[0]) + 2
        }
        t => {
            return Err(refused(format!(
                "the SOCKS5 reply has an unknown address type {t}"
            )))
        }
    };
    let mut skip = vec![0u8; rest];
    read_exact(stream, &mut skip)
}

/// RFC 1929 username/password sub-negotiation.
fn authenticate(mut stream: &TcpStream, c: &ProxyCredentials) -> io::Result<()> {
    let too_long = || refused("SOCKS5 credentials are at most 255 bytes each");
    let user = u8::try_from(c.username.len()).map_err(|_| too_long())?;
    let pass = u8::try_from(c.password.len()).map_err(|_| too_long())?;
    let mut request = vec![1, user];
    request.extend_from_slice(c.username.as_bytes());
    request.push(pass);
    request.extend_from_slice(c.password.as_bytes());
    stream.write_all(&request)?;
    let mut reply = [0u8; 2];
    read_exact(stream, &mut reply)?;
    if reply[1] != 0 {
        return Err(refused(
            "the SOCKS5 proxy refused the username and password",
        ));
    }
    Ok(())
}

fn read_exact(mut stream: &TcpStream, buf: &mut [u8]) -> io::Result<()> {
    stream.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            refused("the proxy closed the connection during the SOCKS5 handshake")
        } else {
            e
        }
    })
}

fn reply_text(code: u8) -> String {
    let text = match code {
        1 => "general failure",
        2 => "connection not allowed by the ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => return format!("reply code {code}"),
    };
    format!("{text} ({code})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_status_lines() {
        assert_eq!(
            tunnel_status(b"HTTP/1.1 200 Connection established\r\n\r\n").unwrap(),
            (200, "Connection established".to_owned())
        );
        assert_eq!(tunnel_status(b"HTTP/1.0 407\r\n\r\n").unwrap().0, 407);
        assert!(tunnel_status(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(tunnel_status(b"HTTP/1.1 2000 x\r\n\r\n").is_err());
    }
}
