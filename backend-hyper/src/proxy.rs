//! The two proxy handshakes that run before the origin's bytes: an HTTP
//! CONNECT tunnel and SOCKS5 (RFC 1928, with RFC 1929 username/password).
//!
//! Forwarding an http url through an HTTP proxy needs no handshake: the
//! request simply goes to the proxy in absolute form (see `pool.rs`).
//!
//! Every failure here is the proxy's: `ErrorKind::Proxy`, never `connect`.

use std::net::{IpAddr, SocketAddr};

use handle_api::http::HeaderValue;
use handle_api::{Error, ErrorKind, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The most bytes a CONNECT response head may take.
const MAX_CONNECT_HEAD: usize = 16 * 1024;

/// Fields parsed in a CONNECT response head.
const MAX_CONNECT_FIELDS: usize = 100;

fn proxy_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Proxy, message)
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    proxy_error(format!("{what}: {e}")).with_source(e)
}

/// `host:port` as an authority (IPv6 literals bracketed).
pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Asks the HTTP proxy on `io` for a tunnel to `host:port`. The request
/// carries Host and, when given, Proxy-Authorization, and nothing else: no
/// header of the application's goes to the proxy.
pub(crate) async fn tunnel<S>(
    io: &mut S,
    host: &str,
    port: u16,
    authorization: Option<&HeaderValue>,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let target = authority(host, port);
    let request = handle_api::connect_request(&target, authorization);
    io.write_all(&request)
        .await
        .map_err(|e| io_error("sending CONNECT to the proxy failed", e))?;
    io.flush()
        .await
        .map_err(|e| io_error("sending CONNECT to the proxy failed", e))?;

    // Byte by byte, so not one byte of the tunnel is read into a buffer
    // that the TLS layer would then miss; the head is short.
    let mut head = Vec::with_capacity(128);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() >= MAX_CONNECT_HEAD {
            return Err(proxy_error(format!(
                "the proxy's answer to CONNECT is longer than {MAX_CONNECT_HEAD} bytes"
            )));
        }
        let n = io
            .read(&mut byte)
            .await
            .map_err(|e| io_error("reading the proxy's answer to CONNECT failed", e))?;
        if n == 0 {
            return Err(proxy_error(
                "the proxy closed the connection instead of answering CONNECT",
            ));
        }
        head.push(byte[0]);
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_CONNECT_FIELDS];
    let mut response = httparse::Response::new(&mut fields);
    match response.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => {
            return Err(proxy_error(
                "the proxy's answer to CONNECT is not an HTTP response",
            ))
        }
    }
    let code = response.code.unwrap_or(0);
    if (200..300).contains(&code) {
        return Ok(());
    }
    let reason = response.reason.unwrap_or("");
    Err(proxy_error(format!(
        "the proxy refused the tunnel to {target}: {code} {reason}"
    )))
}

/// Where a SOCKS5 proxy is asked to connect.
pub(crate) enum SocksTarget<'a> {
    /// An address resolved here (`socks5://`).
    Addr(SocketAddr),
    /// A name the proxy resolves (`socks5h://`).
    Name(&'a str, u16),
}

/// RFC 1928 reply codes, for messages.
fn socks_reply(code: u8) -> &'static str {
    match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown failure",
    }
}

/// The SOCKS5 handshake on `io`: method negotiation (no authentication, or
/// username/password when `credentials` are given), then CONNECT to `target`.
pub(crate) async fn socks5<S>(
    io: &mut S,
    target: SocksTarget<'_>,
    credentials: Option<(&str, &str)>,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io_err = |e| io_error("the SOCKS5 handshake failed", e);
    // Offer username/password only with credentials to give, as curl does.
    let greeting: &[u8] = if credentials.is_some() {
        &[5, 2, 0, 2]
    } else {
        &[5, 1, 0]
    };
    io.write_all(greeting).await.map_err(io_err)?;
    let mut choice = [0u8; 2];
    io.read_exact(&mut choice).await.map_err(io_err)?;
    if choice[0] != 5 {
        return Err(proxy_error(format!(
            "the proxy does not speak SOCKS5 (version byte {})",
            choice[0]
        )));
    }
    match (choice[1], credentials) {
        (0, _) => {}
        (2, Some((user, password))) => {
            let (u, p) = (user.as_bytes(), password.as_bytes());
            if u.len() > 255 || p.len() > 255 {
                return Err(proxy_error(
                    "SOCKS5 user names and passwords are at most 255 bytes",
                ));
            }
            let mut auth = Vec::with_capacity(3 + u.len() + p.len());
            auth.push(1);
            auth.push(u.len() as u8);
            auth.extend_from_slice(u);
            auth.push(p.len() as u8);
            auth.extend_from_slice(p);
            io.write_all(&auth).await.map_err(io_err)?;
            let mut status = [0u8; 2];
            io.read_exact(&mut status).await.map_err(io_err)?;
            if status[1] != 0 {
                return Err(proxy_error(
                    "the SOCKS5 proxy refused the user name and password",
                ));
            }
        }
        (0xff, _) => {
            return Err(proxy_error(
                "the SOCKS5 proxy accepts none of the offered authentication methods",
            ))
        }
        (m, _) => {
            return Err(proxy_error(format!(
                "the SOCKS5 proxy chose an authentication method that was not offered ({m})"
            )))
        }
    }

    let mut request = vec![5, 1, 0];
    match target {
        SocksTarget::Addr(SocketAddr::V4(a)) => {
            request.push(1);
            request.extend_from_slice(&a.ip().octets());
            request.extend_from_slice(&a.port().to_be_bytes());
        }
        SocksTarget::Addr(SocketAddr::V6(a)) => {
            request.push(4);
            request.extend_from_slice(&a.ip().octets());
            request.extend_from_slice(&a.port().to_be_bytes());
        }
        SocksTarget::Name(name, port) => {
            // An IP literal goes as an address even through socks5h.
            match name.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => {
                    request.push(1);
                    request.extend_from_slice(&ip.octets());
                }
                Ok(IpAddr::V6(ip)) => {
                    request.push(4);
                    request.extend_from_slice(&ip.octets());
                }
                Err(_) => {
                    let n = name.as_bytes();
                    if n.len() > 255 {
                        return Err(proxy_error(
                            "a host name sent to a SOCKS5 proxy is at most 255 bytes",
                        ));
                    }
                    request.push(3);
                    request.push(n.len() as u8);
                    request.extend_from_slice(n);
                }
            }
            request.extend_from_slice(&port.to_be_bytes());
        }
    }
    io.write_all(&request).await.map_err(io_err)?;
    let mut reply = [0u8; 4];
    io.read_exact(&mut reply).await.map_err(io_err)?;
    if reply[0] != 5 {
        return Err(proxy_error("the SOCKS5 proxy's reply is malformed"));
    }
    if reply[1] != 0 {
        return Err(proxy_error(format!(
            "the SOCKS5 proxy could not connect: {} ({})",
            socks_reply(reply[1]),
            reply[1]
        )));
    }
    // The bound address, which nothing here needs, ends the reply.
    let rest = match reply[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            io.read_exact(&mut len).await.map_err(io_err)?;
            usize::from(len[0]) + 2
        }
        other => {
            return Err(proxy_error(format!(
                "the SOCKS5 proxy's reply has an unknown address type ({other})"
            )))
        }
    };
    let mut bound = vec![0u8; rest];
    io.read_exact(&mut bound).await.map_err(io_err)?;
    Ok(())
}
