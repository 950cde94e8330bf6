//! Test servers for the TLS and proxy tests: a CA made at start-up, an
//! HTTPS origin on 127.0.0.1:0 (rustls, ring provider) that records what
//! each connection negotiated and sent, and request-head reading.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority for one test.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: Vec<u8>,
}

/// A certificate chain with its key.
pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// How a leaf certificate is made.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Valid,
    Expired,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Ca {
            issuer: Issuer::new(params, key),
            der,
        }
    }

    /// The CA certificate, as handle-api takes it.
    pub fn certificate(&self) -> handle_api::Certificate {
        handle_api::Certificate::from_der(self.der.clone())
    }

    pub fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.der.clone())
    }

    /// A server (or, with `client`, a client) certificate for `names`.
    pub fn leaf(&self, names: &[&str], validity: Validity, client: bool) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "leaf");
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if validity == Validity::Expired {
            params.not_before = date_time_ymd(2001, 1, 1);
            params.not_after = date_time_ymd(2002, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain: vec![cert.der().clone()],
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration offering h2 and http/1.1 in ALPN; with
/// `client_ca`, a client certificate issued by it is required.
pub fn server_config(leaf: &Leaf, client_ca: Option<&Ca>) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.der()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(leaf.chain.clone(), leaf.key())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A request head as a server received it.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn target(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or_default()
    }
}

/// Reads one request head; `None` at the end of the stream.
pub fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut head = Head {
        line: line.trim_end().to_owned(),
        headers: Vec::new(),
    };
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let l = l.trim_end();
        if l.is_empty() {
            return Ok(Some(head));
        }
        let (n, v) = l.split_once(':').unwrap_or((l, ""));
        head.headers.push((n.to_owned(), v.trim().to_owned()));
    }
}

/// A response whose body is `body`.
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What one TLS connection negotiated and carried.
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub alpn: Option<Vec<u8>>,
    pub sni: Option<String>,
    pub client_cert: bool,
    pub requests: Vec<Head>,
}

/// An HTTPS origin answering every bodyless request with its target as the
/// body, keeping connections alive.
pub struct TlsServer {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
    pub sessions: Arc<Mutex<Vec<Session>>>,
}

impl TlsServer {
    pub fn start(config: Arc<ServerConfig>) -> TlsServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let (c, s) = (connections.clone(), sessions.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let (config, s) = (config.clone(), s.clone());
                thread::spawn(move || serve_tls(config, stream, &s));
            }
        });
        TlsServer {
            port,
            connections,
            sessions,
        }
    }

    pub fn sessions(&self) -> Vec<Session> {
        self.sessions.lock().unwrap().clone()
    }
}

fn serve_tls(config: Arc<ServerConfig>, mut tcp: TcpStream, sessions: &Mutex<Vec<Session>>) {
    let mut conn = ServerConnection::new(config).unwrap();
    while conn.is_handshaking() {
        if conn.complete_io(&mut tcp).is_err() {
            return;
        }
    }
    let index = {
        let mut all = sessions.lock().unwrap();
        all.push(Session {
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            sni: conn.server_name().map(str::to_owned),
            client_cert: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
            requests: Vec::new(),
        });
        all.len() - 1
    };
    let mut r = BufReader::new(StreamOwned::new(conn, tcp));
    while let Ok(Some(head)) = read_head(&mut r) {
        let reply = ok(head.target());
        sessions.lock().unwrap()[index].requests.push(head);
        if r.get_mut().write_all(&reply).is_err() || r.get_mut().flush().is_err() {
            return;
        }
    }
}

/// Copies bytes both ways between two sockets until either side closes.
pub fn pipe(a: TcpStream, b: TcpStream) {
    let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let t = thread::spawn(move || copy(a2, b2));
    copy(b, a);
    let _ = t.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
