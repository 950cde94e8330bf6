//! The test proxy: HTTP forward proxying, CONNECT tunnels and SOCKS5 on one
//! port, told apart by the first byte (5 is SOCKS5's version).
//!
//! - An absolute-form request (`GET http://origin.test:PORT/echo HTTP/1.1`)
//!   is forwarded to the origin in origin form, without the proxy's own
//!   headers (`Proxy-Authorization`, `Proxy-Connection`) and with
//!   `Connection: close`; the response is streamed back with
//!   `Connection: close`, so every forwarded request has a connection of
//!   its own.
//! - `CONNECT host:port` opens a tunnel and relays bytes both ways.
//! - SOCKS5 (RFC 1928) with the no-auth and username/password (RFC 1929)
//!   methods and the IPv4, IPv6 and domain-name address types.
//!
//! Names are looked up in the table it is given ([`ProxyServer::set_hosts`],
//! the case's host overrides), never by the system resolver, and only
//! loopback addresses are ever connected to. Everything received is
//! recorded ([`Seen`]), so a case can assert what the client sent to the
//! proxy and how it named the target.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use resource_handle::{HostOverrides, Resolution};

use super::listener::{Listener, Stats};
use super::origin::{read_head, Head};

const MAX_HEAD: usize = 64 * 1024;

/// How the proxy behaves.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// Require these credentials (user name, password): HTTP requests
    /// without them get a 407 with `Proxy-Authenticate: Basic realm="proxy"`,
    /// a SOCKS5 client that does not offer username/password gets "no
    /// acceptable method", and wrong ones fail the SOCKS5 authentication.
    pub credentials: Option<(String, String)>,
    /// Answer every CONNECT with this status instead of opening a tunnel.
    pub refuse_connect: Option<u16>,
    /// Refuse every SOCKS5 connect with reply 0x02 (not allowed by ruleset).
    pub refuse_socks: bool,
}

impl ProxyOptions {
    /// Requires `user`:`password`.
    pub fn with_credentials(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some((user.to_owned(), password.to_owned()));
        self
    }
}

/// How a SOCKS5 client named its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocksAddress {
    /// Address type 1: the client resolved the name itself.
    Ipv4(Ipv4Addr),
    /// Address type 4: the client resolved the name itself.
    Ipv6(Ipv6Addr),
    /// Address type 3: the name, for the proxy to resolve.
    Domain(String),
}

/// One thing the proxy received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A request to forward (or one refused with 407).
    Forward {
        /// The method.
        method: String,
        /// The request-target as received (absolute form from a proxy client).
        target: String,
        /// Header lines in received order, names as sent.
        headers: Vec<(String, String)>,
    },
    /// A CONNECT request.
    Connect {
        /// The authority asked for (`host:port`).
        target: String,
        /// Header lines in received order, names as sent.
        headers: Vec<(String, String)>,
    },
    /// A SOCKS5 exchange, as far as it got.
    Socks {
        /// The authentication methods offered (0 none, 2 username/password).
        methods: Vec<u8>,
        /// The user name and password sent, if the client authenticated.
        credentials: Option<(String, String)>,
        /// The command (1 is CONNECT), if a request came.
        command: Option<u8>,
        /// The target's address as the client sent it, if a request came.
        address: Option<SocksAddress>,
        /// The target's port.
        port: u16,
    },
}

impl Seen {
    /// The header values of `name` (case-insensitive) of an HTTP request or CONNECT.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        match self {
            Seen::Forward { headers, .. } | Seen::Connect { headers, .. } => headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect(),
            Seen::Socks { .. } => Vec::new(),
        }
    }
}

struct State {
    options: ProxyOptions,
    hosts: Mutex<HostOverrides>,
    seen: Mutex<Vec<Seen>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running test proxy; it stops when dropped.
pub struct ProxyServer {
    listener: Listener,
    state: Arc<State>,
}

impl ProxyServer {
    /// Starts a proxy on 127.0.0.1 with a free port, reaching names through
    /// `hosts` only.
    pub fn start(options: ProxyOptions, hosts: HostOverrides) -> io::Result<ProxyServer> {
        let state = Arc::new(State {
            options,
            hosts: Mutex::new(hosts),
            seen: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let listener = Listener::start("proxy", move |conn, _| {
            let _ = serve(conn, &st);
        })?;
        Ok(ProxyServer { listener, state })
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

    /// Replaces the name table (servers started after the proxy).
    pub fn set_hosts(&self, hosts: HostOverrides) {
        *lock(&self.state.hosts) = hosts;
    }

    /// Everything received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.state.seen).clone()
    }
}

fn serve(conn: TcpStream, state: &State) -> io::Result<()> {
    // A client that stalls before the tunnel is up must not hold the thread.
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut first = [0u8; 1];
    if conn.peek(&mut first)? == 0 {
        return Ok(());
    }
    if first[0] == 5 {
        socks5(conn, state)
    } else {
        http(conn, state)
    }
}

/// Where `host:port` is, by the table only; loopback addresses only.
fn resolve(state: &State, host: &str, port: u16) -> Option<SocketAddr> {
    let addrs = match lock(&state.hosts).lookup(host, port) {
        Resolution::Addrs(a) => a,
        Resolution::NoAddress | Resolution::System => return None,
    };
    addrs.into_iter().find(|a| a.ip().is_loopback())
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Relays bytes both ways until each side has ended, starting with the
/// bytes the client sent early (`early`, already read from its socket).
fn relay(client: TcpStream, upstream: TcpStream, early: &[u8]) -> io::Result<()> {
    client.set_read_timeout(None)?;
    let mut up_w = upstream.try_clone()?;
    up_w.write_all(early)?;
    let mut client_r = client.try_clone()?;
    let up = thread::Builder::new()
        .name("proxy-relay".into())
        .spawn(move || {
            let _ = io::copy(&mut client_r, &mut up_w);
            let _ = up_w.shutdown(Shutdown::Write);
        })?;
    let (mut up_r, mut client_w) = (upstream, client);
    let _ = io::copy(&mut up_r, &mut client_w);
    let _ = client_w.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}

/// Whether the head carries the required credentials (always, when none are).
fn authorized(state: &State, headers: &[(String, String)]) -> bool {
    let Some((user, password)) = &state.options.credentials else {
        return true;
    };
    let expected = STANDARD.encode(format!("{user}:{password}"));
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("proxy-authorization"))
        .any(|(_, v)| {
            v.split_once(' ').is_some_and(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("basic") && token.trim() == expected
            })
        })
}

fn simple_response(out: &mut TcpStream, status: u16, extra: &str) -> io::Result<()> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let body = format!("proxy: {status} {reason}\n");
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\n{extra}content-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

fn http(conn: TcpStream, state: &State) -> io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut reader = BufReader::with_capacity(MAX_HEAD, conn);
    let Some(head) = read_head(&mut reader)? else {
        return Ok(());
    };
    let is_connect = head.method.eq_ignore_ascii_case("CONNECT");
    lock(&state.seen).push(if is_connect {
        Seen::Connect {
            target: head.target.clone(),
            headers: head.headers.clone(),
        }
    } else {
        Seen::Forward {
            method: head.method.clone(),
            target: head.target.clone(),
            headers: head.headers.clone(),
        }
    });
    if !authorized(state, &head.headers) {
        return simple_response(
            &mut out,
            407,
            "proxy-authenticate: Basic realm=\"proxy\"\r\n",
        );
    }
    if is_connect {
        if let Some(status) = state.options.refuse_connect {
            return simple_response(&mut out, status, "");
        }
        let target = head
            .target
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)));
        let Some((host, port)) = target else {
            return simple_response(&mut out, 400, "");
        };
        let Some(upstream) = resolve(state, &host, port).and_then(|a| connect(a).ok()) else {
            return simple_response(&mut out, 502, "");
        };
        out.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
        let early = reader.buffer().to_vec();
        return relay(reader.into_inner(), upstream, &early);
    }
    forward(head, reader, out, state)
}

/// Headers that belong to the hop between client and proxy.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "proxy-authorization" | "proxy-connection" | "connection" | "keep-alive"
    )
}

fn forward(
    head: Head,
    reader: BufReader<TcpStream>,
    mut out: TcpStream,
    state: &State,
) -> io::Result<()> {
    let Ok(url) = url::Url::parse(&head.target) else {
        return simple_response(&mut out, 400, "");
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return simple_response(&mut out, 400, "");
    };
    if url.scheme() != "http" {
        return simple_response(&mut out, 400, "");
    }
    let Some(upstream) = resolve(state, host, port).and_then(|a| connect(a).ok()) else {
        return simple_response(&mut out, 502, "");
    };
    let mut origin_form = url.path().to_owned();
    if let Some(q) = url.query() {
        origin_form.push('?');
        origin_form.push_str(q);
    }
    let mut req = format!("{} {origin_form} HTTP/1.1\r\n", head.method);
    for (n, v) in &head.headers {
        if !hop_by_hop(n) {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut up_w = upstream.try_clone()?;
    up_w.write_all(req.as_bytes())?;
    // The request body (whatever its framing) follows the head as sent.
    let early = reader.buffer().to_vec();
    let mut client_r = reader.into_inner();
    client_r.set_read_timeout(None)?;
    up_w.write_all(&early)?;
    let body = thread::Builder::new()
        .name("proxy-body".into())
        .spawn(move || {
            let _ = io::copy(&mut client_r, &mut up_w);
        })?;
    // The response head gets `Connection: close`; the rest is streamed as is.
    let mut up_r = BufReader::with_capacity(MAX_HEAD, upstream);
    let mut resp_head = Vec::new();
    loop {
        let n = up_r.read_until(b'\n', &mut resp_head)?;
        if n == 0 || resp_head.ends_with(b"\r\n\r\n") || resp_head.len() > MAX_HEAD {
            break;
        }
    }
    let text = String::from_utf8_lossy(&resp_head).into_owned();
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let mut rewritten = String::new();
    if let Some(status_line) = lines.next() {
        rewritten.push_str(status_line);
        rewritten.push_str("\r\n");
        for l in lines {
            let name = l.split(':').next().unwrap_or("");
            if !hop_by_hop(name) {
                rewritten.push_str(l);
                rewritten.push_str("\r\n");
            }
        }
        rewritten.push_str("connection: close\r\n\r\n");
        out.write_all(rewritten.as_bytes())?;
        let _ = io::copy(&mut up_r, &mut out);
    }
    // Ends the body relay too, blocked on a client that keeps its side open.
    let _ = out.shutdown(Shutdown::Both);
    let _ = up_r.get_ref().shutdown(Shutdown::Both);
    let _ = body.join();
    Ok(())
}

fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn read_vec(r: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; len];
    r.read_exact(&mut v)?;
    Ok(v)
}

/// A SOCKS5 reply with the given code and an empty IPv4 bound address.
fn socks_reply(code: u8) -> [u8; 10] {
    [5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// A SOCKS5 exchange as far as it got; recorded before every answer, so a
/// client that reacts to the answer finds it recorded.
struct SocksLog<'a> {
    state: &'a State,
    index: usize,
    methods: Vec<u8>,
    credentials: Option<(String, String)>,
    command: Option<u8>,
    address: Option<SocksAddress>,
    port: u16,
}

impl SocksLog<'_> {
    fn answer(&self, conn: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
        let seen = Seen::Socks {
            methods: self.methods.clone(),
            credentials: self.credentials.clone(),
            command: self.command,
            address: self.address.clone(),
            port: self.port,
        };
        let mut all = lock(&self.state.seen);
        if self.index < all.len() {
            all[self.index] = seen;
        }
        drop(all);
        conn.write_all(bytes)
    }
}

fn socks5(mut conn: TcpStream, state: &State) -> io::Result<()> {
    let index = {
        let mut all = lock(&state.seen);
        all.push(Seen::Socks {
            methods: Vec::new(),
            credentials: None,
            command: None,
            address: None,
            port: 0,
        });
        all.len() - 1
    };
    let mut log = SocksLog {
        state,
        index,
        methods: Vec::new(),
        credentials: None,
        command: None,
        address: None,
        port: 0,
    };
    match socks5_exchange(&mut conn, &mut log)? {
        Some(upstream) => relay(conn, upstream, &[]),
        None => Ok(()),
    }
}

/// The SOCKS5 handshake; the upstream connection when the tunnel is up.
fn socks5_exchange(conn: &mut TcpStream, log: &mut SocksLog<'_>) -> io::Result<Option<TcpStream>> {
    let state = log.state;
    let _version = read_u8(conn)?;
    let n = read_u8(conn)? as usize;
    log.methods = read_vec(conn, n)?;
    let required = state.options.credentials.clone();
    let method = if required.is_some() {
        log.methods.contains(&2).then_some(2)
    } else if log.methods.contains(&0) {
        Some(0)
    } else {
        log.methods.contains(&2).then_some(2)
    };
    let Some(method) = method else {
        log.answer(conn, &[5, 0xff])?;
        return Ok(None);
    };
    log.answer(conn, &[5, method])?;
    if method == 2 {
        let _sub_version = read_u8(conn)?;
        let ulen = read_u8(conn)? as usize;
        let user = String::from_utf8_lossy(&read_vec(conn, ulen)?).into_owned();
        let plen = read_u8(conn)? as usize;
        let password = String::from_utf8_lossy(&read_vec(conn, plen)?).into_owned();
        let ok = required
            .as_ref()
            .is_none_or(|(u, p)| *u == user && *p == password);
        log.credentials = Some((user, password));
        if !ok {
            log.answer(conn, &[1, 1])?;
            return Ok(None);
        }
        log.answer(conn, &[1, 0])?;
    }
    let head = read_vec(conn, 4)?;
    log.command = Some(head[1]);
    let target = match head[3] {
        1 => {
            let b = read_vec(conn, 4)?;
            SocksAddress::Ipv4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
        4 => {
            let b: [u8; 16] = read_vec(conn, 16)?.try_into().unwrap_or([0; 16]);
            SocksAddress::Ipv6(Ipv6Addr::from(b))
        }
        3 => {
            let len = read_u8(conn)? as usize;
            SocksAddress::Domain(String::from_utf8_lossy(&read_vec(conn, len)?).into_owned())
        }
        _ => {
            // Address type not supported.
            log.answer(conn, &socks_reply(8))?;
            return Ok(None);
        }
    };
    let p = read_vec(conn, 2)?;
    log.port = u16::from_be_bytes([p[0], p[1]]);
    log.address = Some(target.clone());
    if head[1] != 1 {
        // Command not supported.
        log.answer(conn, &socks_reply(7))?;
        return Ok(None);
    }
    if state.options.refuse_socks {
        // Connection not allowed by ruleset.
        log.answer(conn, &socks_reply(2))?;
        return Ok(None);
    }
    let addr = match target {
        SocksAddress::Ipv4(ip) => Some(SocketAddr::new(IpAddr::V4(ip), log.port)),
        SocksAddress::Ipv6(ip) => Some(SocketAddr::new(IpAddr::V6(ip), log.port)),
        SocksAddress::Domain(name) => resolve(state, &name, log.port),
    }
    .filter(|a| a.ip().is_loopback());
    let Some(addr) = addr else {
        // Host unreachable.
        log.answer(conn, &socks_reply(4))?;
        return Ok(None);
    };
    match connect(addr) {
        Ok(upstream) => {
            log.answer(conn, &socks_reply(0))?;
            Ok(Some(upstream))
        }
        Err(_) => {
            // Connection refused.
            log.answer(conn, &socks_reply(5))?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servers::Origin;

    fn hosts(name: &str, port: u16) -> HostOverrides {
        let mut h = HostOverrides::default();
        h.only(true);
        h.insert(name, port, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        h
    }

    fn read_all(mut s: TcpStream) -> String {
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn forwards_absolute_form_and_strips_its_own_headers() {
        let origin = Origin::start().unwrap();
        let p = ProxyServer::start(
            ProxyOptions::default().with_credentials("u", "p"),
            hosts("origin.test", origin.port()),
        )
        .unwrap();
        let mut c = TcpStream::connect(p.addr()).unwrap();
        write!(
            c,
            "POST http://origin.test:{}/echo?x=1 HTTP/1.1\r\nHost: origin.test\r\nProxy-Authorization: Basic dTpw\r\nContent-Length: 5\r\n\r\nhello",
            origin.port()
        )
        .unwrap();
        let out = read_all(c);
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.contains("connection: close"), "{out}");
        assert!(out.contains("\"body\":\"hello\""), "{out}");
        let r = origin.last_request().unwrap();
        assert_eq!(r.target, "/echo?x=1");
        assert!(r.header_values("proxy-authorization").is_empty());
        match &p.seen()[0] {
            Seen::Forward { method, target, .. } => {
                assert_eq!(method, "POST");
                assert!(target.starts_with("http://origin.test:"), "{target}");
            }
            other => panic!("{other:?}"),
        }
        // Without credentials: 407.
        let mut c = TcpStream::connect(p.addr()).unwrap();
        write!(
            c,
            "GET http://origin.test:{}/echo HTTP/1.1\r\n\r\n",
            origin.port()
        )
        .unwrap();
        let out = read_all(c);
        assert!(out.starts_with("HTTP/1.1 407"), "{out}");
        assert!(
            out.contains("proxy-authenticate: Basic realm=\"proxy\""),
            "{out}"
        );
        // An unknown name is never resolved by the system.
        let mut c = TcpStream::connect(p.addr()).unwrap();
        write!(
            c,
            "GET http://localhost:1/ HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\n\r\n"
        )
        .unwrap();
        assert!(read_all(c).starts_with("HTTP/1.1 502"));
    }

    #[test]
    fn connect_tunnels_and_refusals() {
        let origin = Origin::start().unwrap();
        let p = ProxyServer::start(ProxyOptions::default(), hosts("origin.test", origin.port()))
            .unwrap();
        let mut c = TcpStream::connect(p.addr()).unwrap();
        write!(
            c,
            "CONNECT origin.test:{0} HTTP/1.1\r\nHost: origin.test:{0}\r\n\r\n",
            origin.port()
        )
        .unwrap();
        let mut buf = [0u8; 39];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf[..], b"HTTP/1.1 200 Connection established\r\n\r\n");
        c.write_all(b"GET /status/201 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        assert!(read_all(c).starts_with("HTTP/1.1 201"));
        assert!(
            matches!(&p.seen()[0], Seen::Connect { target, .. } if target.starts_with("origin.test:"))
        );

        let refusing = ProxyServer::start(
            ProxyOptions {
                refuse_connect: Some(403),
                ..Default::default()
            },
            hosts("origin.test", origin.port()),
        )
        .unwrap();
        let mut c = TcpStream::connect(refusing.addr()).unwrap();
        write!(c, "CONNECT origin.test:{} HTTP/1.1\r\n\r\n", origin.port()).unwrap();
        assert!(read_all(c).starts_with("HTTP/1.1 403"));
    }

    #[test]
    fn socks5_with_each_address_type_and_auth() {
        let origin = Origin::start().unwrap();
        let port = origin.port().to_be_bytes();
        let p = ProxyServer::start(
            ProxyOptions::default().with_credentials("user", "pw"),
            hosts("origin.test", origin.port()),
        )
        .unwrap();
        let get = |c: &mut TcpStream| {
            c.write_all(b"GET /status/202 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            let _ = c.read_to_string(&mut out);
            out
        };
        let auth = |c: &mut TcpStream, pw: &[u8]| {
            c.write_all(&[5, 2, 0, 2]).unwrap();
            let mut b = [0u8; 2];
            c.read_exact(&mut b).unwrap();
            assert_eq!(b, [5, 2]);
            let mut m = vec![1, 4];
            m.extend_from_slice(b"user");
            m.push(pw.len() as u8);
            m.extend_from_slice(pw);
            c.write_all(&m).unwrap();
            c.read_exact(&mut b).unwrap();
            b[1]
        };
        // Domain name.
        let mut c = TcpStream::connect(p.addr()).unwrap();
        assert_eq!(auth(&mut c, b"pw"), 0);
        let mut req = vec![5, 1, 0, 3, 11];
        req.extend_from_slice(b"origin.test");
        req.extend_from_slice(&port);
        c.write_all(&req).unwrap();
        let mut reply = [0u8; 10];
        c.read_exact(&mut reply).unwrap();
        assert_eq!(reply[1], 0);
        assert!(get(&mut c).starts_with("HTTP/1.1 202"));
        // IPv4.
        let mut c = TcpStream::connect(p.addr()).unwrap();
        assert_eq!(auth(&mut c, b"pw"), 0);
        c.write_all(&[5, 1, 0, 1, 127, 0, 0, 1, port[0], port[1]])
            .unwrap();
        c.read_exact(&mut reply).unwrap();
        assert_eq!(reply[1], 0);
        assert!(get(&mut c).starts_with("HTTP/1.1 202"));
        // IPv6 loopback: nothing listens there, so "connection refused".
        let mut c = TcpStream::connect(p.addr()).unwrap();
        assert_eq!(auth(&mut c, b"pw"), 0);
        let mut req = vec![5, 1, 0, 4];
        req.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        req.extend_from_slice(&port);
        c.write_all(&req).unwrap();
        c.read_exact(&mut reply).unwrap();
        assert_ne!(reply[1], 0);
        // Wrong password.
        let mut c = TcpStream::connect(p.addr()).unwrap();
        assert_eq!(auth(&mut c, b"nope"), 1);
        // No acceptable method.
        let mut c = TcpStream::connect(p.addr()).unwrap();
        c.write_all(&[5, 1, 0]).unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).unwrap();
        assert_eq!(b, [5, 0xff]);
        drop(c);
        let seen = p.seen();
        let addresses: Vec<Option<SocksAddress>> = seen
            .iter()
            .map(|s| match s {
                Seen::Socks { address, .. } => address.clone(),
                _ => None,
            })
            .collect();
        assert!(addresses.contains(&Some(SocksAddress::Domain("origin.test".into()))));
        assert!(addresses.contains(&Some(SocksAddress::Ipv4(Ipv4Addr::LOCALHOST))));
        assert!(addresses.contains(&Some(SocksAddress::Ipv6(Ipv6Addr::LOCALHOST))));
    }
}
