//! The test PKI and the TLS origin.
//!
//! A CA is made once per process with rcgen ([`pki`]), and with it the
//! certificates the TLS cases need ([`CertKind`]): valid, expired, for the
//! wrong host, issued by a second CA nobody trusts, self-signed, and one
//! issued by a third CA that only [`Pki::bundle_pem`] carries. Cases give the
//! manager [`Pki::ca_pem`] and turn the system's roots off, so nothing on the
//! machine changes what is trusted.
//!
//! [`TlsOrigin`] is the [`Origin`] (every route of it) behind rustls, with
//! the ring provider. Its port also answers plain HTTP (a first byte other
//! than a TLS handshake record), so `http://tls.test:PORT` and
//! `https://tls.test:PORT` are the two schemes of one server, as an HSTS
//! upgrade (which keeps the port) needs.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::origin::Origin;

/// Host names every test certificate but [`CertKind::WrongHost`] is valid
/// for; `sub.tls.test` is there for HSTS's includeSubDomains.
pub const CERT_NAMES: [&str; 4] = ["tls.test", "sub.tls.test", "h2.test", "localhost"];

/// The only name the [`CertKind::WrongHost`] certificate is valid for.
pub const WRONG_HOST_NAME: &str = "elsewhere.test";

/// ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// The certificate a test server presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertKind {
    /// Issued by the test CA for [`CERT_NAMES`], valid now.
    Valid,
    /// Issued by the test CA for [`CERT_NAMES`], expired in 2001.
    Expired,
    /// Issued by the test CA, valid now, but only for [`WRONG_HOST_NAME`].
    WrongHost,
    /// For [`CERT_NAMES`], valid now, issued by a second CA that no case trusts.
    Untrusted,
    /// For [`CERT_NAMES`], valid now, signed by its own key.
    SelfSigned,
    /// For [`CERT_NAMES`], valid now, issued by the CA that only
    /// [`Pki::bundle_pem`] carries (first, before the test CA).
    BundleIssued,
}

impl CertKind {
    /// Every kind.
    pub const ALL: [CertKind; 6] = [
        CertKind::Valid,
        CertKind::Expired,
        CertKind::WrongHost,
        CertKind::Untrusted,
        CertKind::SelfSigned,
        CertKind::BundleIssued,
    ];
}

/// Whether a server asks the client for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// It does not ask.
    #[default]
    None,
    /// It asks, and takes the connection without one.
    Optional,
    /// It asks, and refuses a handshake without one issued by the test CA.
    Required,
}

/// A server certificate chain and its key.
struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: Vec<u8>,
}

/// The test CA, the certificates it issued and the odd ones beside.
pub struct Pki {
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    bundle_ca_pem: String,
    leaves: HashMap<CertKind, Leaf>,
    client_cert_pem: String,
    client_key_pem: String,
    client_cert_der: Vec<u8>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

/// The process's test PKI, made on first use.
pub fn pki() -> Result<&'static Pki, String> {
    static PKI: OnceLock<Result<Pki, String>> = OnceLock::new();
    PKI.get_or_init(|| Pki::generate().map_err(|e| format!("the test PKI: {e}")))
        .as_ref()
        .map_err(Clone::clone)
}

/// The rustls crypto provider every test server uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.distinguished_name
        .push(DnType::OrganizationName, "resource-handle tests");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn leaf_params(
    cn: &str,
    names: &[&str],
    eku: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::NoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![eku];
    // OpenSSL finds the issuer by key identifier as well as by name.
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

impl Pki {
    fn generate() -> Result<Pki, rcgen::Error> {
        let ca = CertifiedIssuer::self_signed(
            ca_params("resource-handle test CA"),
            KeyPair::generate()?,
        )?;
        let second = CertifiedIssuer::self_signed(
            ca_params("resource-handle untrusted CA"),
            KeyPair::generate()?,
        )?;
        let bundle = CertifiedIssuer::self_signed(
            ca_params("resource-handle bundle CA"),
            KeyPair::generate()?,
        )?;
        let server = ExtendedKeyUsagePurpose::ServerAuth;
        let issue = |params: CertificateParams,
                     issuer: &CertifiedIssuer<'_, KeyPair>|
         -> Result<Leaf, rcgen::Error> {
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, issuer)?;
            Ok(Leaf {
                chain: vec![cert.der().clone()],
                key_pkcs8: key.serialize_der(),
            })
        };
        let mut leaves = HashMap::new();
        leaves.insert(
            CertKind::Valid,
            issue(leaf_params("tls.test", &CERT_NAMES, server.clone())?, &ca)?,
        );
        let mut expired = leaf_params("tls.test (expired)", &CERT_NAMES, server.clone())?;
        expired.not_before = rcgen::date_time_ymd(2000, 1, 1);
        expired.not_after = rcgen::date_time_ymd(2001, 1, 1);
        leaves.insert(CertKind::Expired, issue(expired, &ca)?);
        leaves.insert(
            CertKind::WrongHost,
            issue(
                leaf_params(WRONG_HOST_NAME, &[WRONG_HOST_NAME], server.clone())?,
                &ca,
            )?,
        );
        leaves.insert(
            CertKind::Untrusted,
            issue(
                leaf_params("tls.test (untrusted CA)", &CERT_NAMES, server.clone())?,
                &second,
            )?,
        );
        leaves.insert(
            CertKind::BundleIssued,
            issue(
                leaf_params("tls.test (bundle CA)", &CERT_NAMES, server.clone())?,
                &bundle,
            )?,
        );
        let self_key = KeyPair::generate()?;
        let self_cert =
            leaf_params("tls.test (self-signed)", &CERT_NAMES, server)?.self_signed(&self_key)?;
        leaves.insert(
            CertKind::SelfSigned,
            Leaf {
                chain: vec![self_cert.der().clone()],
                key_pkcs8: self_key.serialize_der(),
            },
        );
        let client_key = KeyPair::generate()?;
        let client_cert = leaf_params(
            "resource-handle test client",
            &["client.test"],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?
        .signed_by(&client_key, &ca)?;
        Ok(Pki {
            ca_der: ca.der().clone(),
            ca_pem: ca.pem(),
            bundle_ca_pem: bundle.pem(),
            leaves,
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            client_cert_der: client_cert.der().to_vec(),
        })
    }

    /// The test CA's certificate as PEM: what cases give the manager.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A PEM file with two CA certificates: the bundle CA (which issued
    /// [`CertKind::BundleIssued`]) first, then the test CA.
    pub fn bundle_pem(&self) -> String {
        format!("{}{}", self.bundle_ca_pem, self.ca_pem)
    }

    /// The client certificate (issued by the test CA) as PEM.
    pub fn client_cert_pem(&self) -> &str {
        &self.client_cert_pem
    }

    /// The client certificate's PKCS#8 private key as PEM.
    pub fn client_key_pem(&self) -> &str {
        &self.client_key_pem
    }

    /// The client certificate's DER bytes (what a server that saw it records).
    pub fn client_cert_der(&self) -> &[u8] {
        &self.client_cert_der
    }

    /// A rustls server configuration presenting `kind`'s certificate,
    /// offering `alpn` (in preference order), asking for a client
    /// certificate as `client_auth` says.
    pub fn server_config(
        &self,
        kind: CertKind,
        alpn: &[&[u8]],
        client_auth: ClientAuth,
    ) -> Result<Arc<ServerConfig>, String> {
        let leaf = self
            .leaves
            .get(&kind)
            .ok_or_else(|| format!("no {kind:?} certificate"))?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?;
        let builder = match client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional | ClientAuth::Required => {
                let mut roots = RootCertStore::empty();
                roots
                    .add(self.ca_der.clone())
                    .map_err(|e| format!("the test CA: {e}"))?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
                let verifier = if client_auth == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|e| format!("client verifier: {e}"))?,
                )
            }
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_pkcs8.clone()));
        let mut config = builder
            .with_single_cert(leaf.chain.clone(), key)
            .map_err(|e| format!("server certificate: {e}"))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// What a TLS server saw of one connection's handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// Which connection (0, 1, …) of the server.
    pub connection: usize,
    /// The server name the client sent (SNI).
    pub sni: Option<String>,
    /// The ALPN protocol agreed on.
    pub alpn: Option<String>,
    /// The client certificate presented (DER), if any.
    pub client_cert: Option<Vec<u8>>,
    /// Why the handshake failed, when it did.
    pub error: Option<String>,
}

/// Handshakes of a TLS server, in order of completion.
pub(crate) type HandshakeLog = Arc<Mutex<Vec<Handshake>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the server side of a handshake on `sock` and records it. The
/// handshake is finished before the first request is read, so a client that
/// refuses the certificate shows up in the log with the alert it sent.
pub(crate) fn handshake(
    mut sock: TcpStream,
    config: Arc<ServerConfig>,
    connection: usize,
    log: &HandshakeLog,
) -> io::Result<rustls::StreamOwned<ServerConnection, TcpStream>> {
    let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
    // A client that stalls mid-handshake must not hold the thread for ever.
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut result = Ok(());
    while conn.is_handshaking() {
        match conn.complete_io(&mut sock) {
            Ok((0, 0)) if conn.is_handshaking() => {
                result = Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                break;
            }
            Ok(_) => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let record = Handshake {
        connection,
        sni: conn.server_name().map(str::to_owned),
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        client_cert: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec()),
        error: result.as_ref().err().map(|e| e.to_string()),
    };
    lock(log).push(record);
    result?;
    sock.set_read_timeout(None)?;
    Ok(rustls::StreamOwned::new(conn, sock))
}

/// A connection of the TLS origin: TLS, or plain HTTP on the same port.
pub(crate) enum Sniffed {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<ServerConnection, TcpStream>>),
}

impl Read for Sniffed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sniffed::Plain(s) => s.read(buf),
            Sniffed::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Sniffed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sniffed::Plain(s) => s.write(buf),
            Sniffed::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sniffed::Plain(s) => s.flush(),
            Sniffed::Tls(s) => s.flush(),
        }
    }
}

impl Drop for Sniffed {
    fn drop(&mut self) {
        // End TLS with close_notify, so a body delimited by the end of the
        // connection (`/http10/N`) is complete rather than truncated.
        if let Sniffed::Tls(s) = self {
            s.conn.send_close_notify();
            while s.conn.wants_write() {
                if s.conn.write_tls(&mut s.sock).is_err() {
                    break;
                }
            }
        }
    }
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// The origin behind TLS: every route of [`Origin`], its recorded requests
/// and connection counts, and the handshakes it saw.
pub struct TlsOrigin {
    origin: Origin,
    kind: CertKind,
    handshakes: HandshakeLog,
}

impl TlsOrigin {
    /// Starts a TLS origin on 127.0.0.1 with a free port, presenting `kind`'s
    /// certificate with ALPN `http/1.1`.
    pub fn start(kind: CertKind, client_auth: ClientAuth) -> Result<TlsOrigin, String> {
        let config = pki()?.server_config(kind, &[ALPN_HTTP11], client_auth)?;
        let handshakes: HandshakeLog = Arc::default();
        let log = handshakes.clone();
        let origin = Origin::start_over("tls-origin", 0, move |sock: TcpStream, index| {
            let mut first = [0u8; 1];
            if sock.peek(&mut first)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if first[0] != TLS_HANDSHAKE {
                return Ok(Sniffed::Plain(sock));
            }
            let tls = handshake(sock, config.clone(), index, &log)?;
            Ok(Sniffed::Tls(Box::new(tls)))
        })
        .map_err(|e| format!("TLS origin did not start: {e}"))?;
        Ok(TlsOrigin {
            origin,
            kind,
            handshakes,
        })
    }

    /// The certificate it presents.
    pub fn kind(&self) -> CertKind {
        self.kind
    }

    /// Every handshake so far, failed ones included, in order of completion.
    pub fn handshakes(&self) -> Vec<Handshake> {
        lock(&self.handshakes).clone()
    }
}

impl Deref for TlsOrigin {
    type Target = Origin;

    fn deref(&self) -> &Origin {
        &self.origin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, StreamOwned};

    /// A rustls client trusting `roots_pem` only.
    fn client(roots_pem: &str, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    fn get(
        port: u16,
        config: Arc<ClientConfig>,
        name: &str,
        path: &str,
    ) -> io::Result<(String, Option<Vec<u8>>)> {
        let sock = TcpStream::connect(("127.0.0.1", port))?;
        let conn = ClientConnection::new(config, ServerName::try_from(name.to_owned()).unwrap())
            .map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, sock);
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
        )?;
        let mut out = Vec::new();
        tls.read_to_end(&mut out)?;
        let alpn = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
        Ok((String::from_utf8_lossy(&out).into_owned(), alpn))
    }

    #[test]
    fn serves_the_origin_routes_over_tls_and_plain() {
        let pki = pki().unwrap();
        let o = TlsOrigin::start(CertKind::Valid, ClientAuth::None).unwrap();
        let (resp, alpn) = get(
            o.port(),
            client(pki.ca_pem(), &[ALPN_H2, ALPN_HTTP11]),
            "tls.test",
            "/echo",
        )
        .unwrap();
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
        assert!(resp.contains("\"target\":\"/echo\""), "{resp}");
        assert_eq!(alpn.as_deref(), Some(ALPN_HTTP11));
        let hs = o.handshakes();
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].sni.as_deref(), Some("tls.test"));
        assert_eq!(hs[0].error, None);
        // The same port answers plain HTTP.
        let mut plain = TcpStream::connect(("127.0.0.1", o.port())).unwrap();
        plain
            .write_all(b"GET /status/204 HTTP/1.1\r\nHost: tls.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        plain.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 204"), "{out}");
        assert_eq!(o.requests().len(), 2);
        assert_eq!(o.stats().accepted(), 2);
        // A close-delimited body ends with close_notify, not a truncation.
        let (resp, _) = get(
            o.port(),
            client(pki.ca_pem(), &[]),
            "localhost",
            "/http10/1000",
        )
        .unwrap();
        assert!(resp.starts_with("HTTP/1.0 200 OK"), "{resp}");
    }

    #[test]
    fn each_bad_certificate_is_refused_for_its_own_reason() {
        let pki = pki().unwrap();
        let cases = [
            (CertKind::Expired, "Expired"),
            (CertKind::WrongHost, "NotValidForName"),
            (CertKind::Untrusted, "UnknownIssuer"),
            (CertKind::SelfSigned, "UnknownIssuer"),
            (CertKind::BundleIssued, "UnknownIssuer"),
        ];
        for (kind, why) in cases {
            let o = TlsOrigin::start(kind, ClientAuth::None).unwrap();
            let err = get(o.port(), client(pki.ca_pem(), &[]), "tls.test", "/echo").unwrap_err();
            assert!(format!("{err:?}").contains(why), "{kind:?}: {err:?}");
            assert!(crate::cases::wait_for(Duration::from_secs(5), || o
                .handshakes()
                .first()
                .is_some_and(|h| h.error.is_some())));
        }
        // The bundle's first CA issued the bundle certificate.
        let o = TlsOrigin::start(CertKind::BundleIssued, ClientAuth::None).unwrap();
        let (resp, _) = get(
            o.port(),
            client(&pki.bundle_pem(), &[]),
            "tls.test",
            "/echo",
        )
        .unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }

    #[test]
    fn a_required_client_certificate_is_recorded() {
        let pki = pki().unwrap();
        let o = TlsOrigin::start(CertKind::Valid, ClientAuth::Required).unwrap();
        // Without one the handshake fails.
        assert!(get(o.port(), client(pki.ca_pem(), &[]), "tls.test", "/echo").is_err());
        use rustls_pki_types::pem::PemObject;
        let chain = vec![CertificateDer::from_pem_slice(pki.client_cert_pem().as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(pki.client_key_pem().as_bytes()).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        let (resp, _) = get(o.port(), Arc::new(config), "tls.test", "/echo").unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let hs = o.handshakes();
        assert_eq!(hs.len(), 2);
        assert!(hs[0].error.is_some());
        assert_eq!(hs[1].client_cert.as_deref(), Some(pki.client_cert_der()));
    }
}
