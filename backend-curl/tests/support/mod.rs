//! Servers for the TLS, HTTP/2 and proxy tests, all on 127.0.0.1:0 on
//! threads of their own: a test CA made at start-up, a TLS origin, a plain
//! origin, an HTTP forward and CONNECT proxy, and a SOCKS5 proxy. Each
//! records what it received so a test can assert what the backend sent.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The crypto provider of the test servers (ring), named explicitly so no
/// process-wide default is needed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key, for a server.
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A throw-away CA and the certificates it issues.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// A CA with a name of its own.
    pub fn new() -> Pki {
        static N: AtomicUsize = AtomicUsize::new(0);
        Pki::named(&format!(
            "backend-curl test CA {}",
            N.fetch_add(1, Ordering::SeqCst)
        ))
    }

    /// A CA called `name`: two of the same name differ only in their keys.
    pub fn named(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn ca_der(&self) -> Vec<u8> {
        self.ca.der().to_vec()
    }

    /// A server certificate for `names`, issued by this CA; `expired` puts
    /// its validity in 2000.
    pub fn server_cert(&self, names: &[&str], expired: bool) -> ServerCert {
        let key = KeyPair::generate().unwrap();
        let mut params = leaf_params(names, ExtendedKeyUsagePurpose::ServerAuth);
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2000, 12, 31);
        }
        let cert = params.signed_by(&key, &self.ca).unwrap();
        ServerCert {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    /// A client certificate issued by this CA, as (chain PEM, key PEM).
    pub fn client_identity(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params = leaf_params(&["client.test"], ExtendedKeyUsagePurpose::ClientAuth);
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A store that trusts this CA, for a server checking client certificates.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }
}

fn leaf_params(names: &[&str], usage: ExtendedKeyUsagePurpose) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "backend-curl test leaf");
    params.extended_key_usages = vec![usage];
    params
}

/// A self-signed certificate for `names`: no CA vouches for it.
pub fn self_signed(names: &[&str]) -> ServerCert {
    let key = KeyPair::generate().unwrap();
    let params = leaf_params(names, ExtendedKeyUsagePurpose::ServerAuth);
    let cert = params.self_signed(&key).unwrap();
    ServerCert {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// A rustls server configuration presenting `cert`, asking for a client
/// certificate issued by `client_ca` when given, offering `alpn`.
pub fn server_config(
    cert: ServerCert,
    client_ca: Option<&Pki>,
    alpn: &[&[u8]],
) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(pki) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(pki.roots()), provider())
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(cert.chain, cert.key).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Accepts connections on 127.0.0.1:0 and runs `handler` on a thread per
/// connection; counts the connections.
fn serve(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> (u16, Arc<AtomicUsize>) {
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
    (port, connections)
}

/// Reads one request head (up to and including the blank line), byte by
/// byte so nothing after it is consumed; `None` when the peer closed first.
pub fn read_head(r: &mut impl Read) -> io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if r.read(&mut byte)? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
        if head.len() > 64 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

/// The value of header `name` in a raw head, if present.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The header names of a raw head, lower-cased, in order.
pub fn header_names(head: &str) -> Vec<String> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_ascii_lowercase()))
        .collect()
}

/// Answers every request on `stream` with 200 and `body`, keeping the
/// connection open, and records each head.
fn answer_all(mut stream: impl Read + Write, body: &str, heads: &Mutex<Vec<String>>) {
    while let Ok(Some(head)) = read_head(&mut stream) {
        heads.lock().unwrap().push(head);
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).is_err() || stream.flush().is_err() {
            return;
        }
    }
}

/// An HTTP/1.1 origin, over TLS or in cleartext, answering every request
/// with 200 and a fixed body.
pub struct Origin {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
    pub heads: Arc<Mutex<Vec<String>>>,
}

impl Origin {
    /// A TLS origin with `config`; a failed handshake just ends the connection.
    pub fn tls(config: Arc<ServerConfig>, body: &'static str) -> Origin {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let (port, connections) = serve(move |tcp| {
            let Ok(conn) = ServerConnection::new(config.clone()) else {
                return;
            };
            answer_all(StreamOwned::new(conn, tcp), body, &seen);
        });
        Origin {
            port,
            connections,
            heads,
        }
    }

    /// A cleartext origin.
    pub fn plain(body: &'static str) -> Origin {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let (port, connections) = serve(move |tcp| answer_all(tcp, body, &seen));
        Origin {
            port,
            connections,
            heads,
        }
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Copies bytes both ways between `a` and `b` until both directions end.
fn splice(a: TcpStream, b: TcpStream) {
    let (mut a_read, mut b_write) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let up = thread::spawn(move || {
        let _ = io::copy(&mut a_read, &mut b_write);
        let _ = b_write.shutdown(Shutdown::Write);
    });
    let (mut b_read, mut a_write) = (b, a);
    let _ = io::copy(&mut b_read, &mut a_write);
    let _ = a_write.shutdown(Shutdown::Write);
    let _ = up.join();
}

/// An HTTP proxy: answers absolute-form requests itself (the body is the
/// request line it received) and tunnels CONNECT to 127.0.0.1 at the
/// requested port, or refuses it with `connect_status`.
pub struct HttpProxy {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
    pub heads: Arc<Mutex<Vec<String>>>,
}

impl HttpProxy {
    pub fn start(connect_status: u16) -> HttpProxy {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let (port, connections) = serve(move |mut tcp| {
            while let Ok(Some(head)) = read_head(&mut tcp) {
                seen.lock().unwrap().push(head.clone());
                let line = head.lines().next().unwrap_or_default().to_owned();
                if let Some(target) = line.strip_prefix("CONNECT ") {
                    if connect_status != 200 {
                        let _ = write!(
                            tcp,
                            "HTTP/1.1 {connect_status} Refused\r\nContent-Length: 0\r\n\r\n"
                        );
                        return;
                    }
                    let authority = target.split(' ').next().unwrap_or_default();
                    let port: u16 = authority
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(443);
                    let Ok(upstream) = TcpStream::connect((LOCALHOST, port)) else {
                        let _ =
                            tcp.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
                        return;
                    };
                    let _ = tcp.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                    splice(tcp, upstream);
                    return;
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{line}",
                    line.len()
                );
                if tcp.write_all(response.as_bytes()).is_err() {
                    return;
                }
            }
        });
        HttpProxy {
            port,
            connections,
            heads,
        }
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// A SOCKS5 proxy (RFC 1928) with optional username/password (RFC 1929)
/// that connects to 127.0.0.1 at the requested port, or refuses every
/// CONNECT (reply 5, connection refused).
pub struct Socks5Proxy {
    pub port: u16,
    /// Each CONNECT's destination: `name:HOST:PORT` or `ip:ADDR:PORT`.
    pub targets: Arc<Mutex<Vec<String>>>,
    /// The credentials each client sent.
    pub logins: Arc<Mutex<Vec<(String, String)>>>,
}

impl Socks5Proxy {
    pub fn start(require_auth: bool, refuse: bool) -> Socks5Proxy {
        let targets = Arc::new(Mutex::new(Vec::new()));
        let logins = Arc::new(Mutex::new(Vec::new()));
        let (t, l) = (targets.clone(), logins.clone());
        let (port, _) = serve(move |tcp| {
            let _ = socks5_session(tcp, require_auth, refuse, &t, &l);
        });
        Socks5Proxy {
            port,
            targets,
            logins,
        }
    }
}

fn socks5_session(
    mut tcp: TcpStream,
    require_auth: bool,
    refuse: bool,
    targets: &Mutex<Vec<String>>,
    logins: &Mutex<Vec<(String, String)>>,
) -> io::Result<()> {
    let mut two = [0u8; 2];
    tcp.read_exact(&mut two)?;
    let mut methods = vec![0u8; usize::from(two[1])];
    tcp.read_exact(&mut methods)?;
    let method = if require_auth { 2 } else { 0 };
    if !methods.contains(&method) {
        return tcp.write_all(&[5, 0xff]);
    }
    tcp.write_all(&[5, method])?;
    if require_auth {
        let mut ver_len = [0u8; 2];
        tcp.read_exact(&mut ver_len)?;
        let mut user = vec![0u8; usize::from(ver_len[1])];
        tcp.read_exact(&mut user)?;
        let mut len = [0u8; 1];
        tcp.read_exact(&mut len)?;
        let mut pass = vec![0u8; usize::from(len[0])];
        tcp.read_exact(&mut pass)?;
        logins.lock().unwrap().push((
            String::from_utf8_lossy(&user).into_owned(),
            String::from_utf8_lossy(&pass).into_owned(),
        ));
        tcp.write_all(&[1, 0])?;
    }
    let mut req = [0u8; 4];
    tcp.read_exact(&mut req)?;
    let target = match req[3] {
        1 => {
            let mut ip = [0u8; 4];
            tcp.read_exact(&mut ip)?;
            format!("ip:{}", Ipv4Addr::from(ip))
        }
        3 => {
            let mut len = [0u8; 1];
            tcp.read_exact(&mut len)?;
            let mut name = vec![0u8; usize::from(len[0])];
            tcp.read_exact(&mut name)?;
            format!("name:{}", String::from_utf8_lossy(&name))
        }
        _ => return tcp.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]),
    };
    let mut port = [0u8; 2];
    tcp.read_exact(&mut port)?;
    let port = u16::from_be_bytes(port);
    targets.lock().unwrap().push(format!("{target}:{port}"));
    if refuse {
        return tcp.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
    }
    let upstream = TcpStream::connect((LOCALHOST, port))?;
    let p = port.to_be_bytes();
    tcp.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, p[0], p[1]])?;
    splice(tcp, upstream);
    Ok(())
}
