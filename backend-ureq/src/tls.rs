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

use handle_api::{Error, ErrorKind, KeyFormat, Result, TlsConfig, TlsProblem};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct,
    RootCertStore, SignatureScheme,
};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    ServerName, UnixTime,
};

use crate::error::TlsFailure;

/// The only protocol offered in ALPN.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The rustls client configuration for `settings`. A client identity rustls
/// cannot use fails here, when the backend is made, not at the first load.
pub(crate) fn client_config(settings: &TlsConfig) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("the TLS provider cannot be used: {e}"),
            )
            .with_source(e)
        })?;
    let builder = if settings.verify {
        let mut roots = RootCertStore::empty();
        // Certificates rustls cannot parse are skipped, as OpenSSL skips them.
        roots.add_parsable_certificates(
            settings
                .roots()
                .iter()
                .map(|c| CertificateDer::from(c.der().to_vec())),
        );
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                provider.signature_verification_algorithms,
            )))
    };
    let mut config = match &settings.identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let chain = identity
                .chain()
                .iter()
                .map(|c| CertificateDer::from(c.der().to_vec()))
                .collect();
            let der = identity.key_der().to_vec();
            let key = match identity.key_format() {
                KeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
                KeyFormat::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
                // Pkcs8, and any format handle-api adds later that rustls
                // would recognise from its PKCS#8 wrapping.
                _ => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
            };
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::tls(
                    TlsProblem::ClientCertificate,
                    format!("the client identity cannot be used: {e}"),
                )
                .with_source(e)
            })?
        }
    };
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// A new client session for `host` (a name, or an IP literal with or without brackets).
pub(crate) fn session(
    config: &Arc<ClientConfig>,
    host: &str,
) -> std::result::Result<ClientConnection, TlsFailure> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_owned()).map_err(|e| {
        TlsFailure::new(
            TlsProblem::Handshake,
            format!("{host:?} cannot be used as a TLS server name: {e}"),
        )
    })?;
    ClientConnection::new(config.clone(), name).map_err(TlsFailure::from_rustls)
}

/// What was wrong, in the terms every backend reports.
pub(crate) fn problem(e: &rustls::Error) -> TlsProblem {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            // No chain to a trusted root, or a chain that cannot vouch for
            // a TLS server: OpenSSL reports these as an unverifiable issuer.
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. }
            | CertificateError::InvalidPurpose
            | CertificateError::InvalidPurposeContext { .. } => TlsProblem::UntrustedIssuer,
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsProblem::Expired,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsProblem::WrongHost
            }
            _ => TlsProblem::Handshake,
        },
        // The server presented no certificate at all: nothing vouches for it.
        E::NoCertificatesPresented => TlsProblem::UntrustedIssuer,
        // A server only ever complains about a certificate with these alerts
        // when it is the client's: missing, unknown, refused or expired.
        E::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied,
        ) => TlsProblem::ClientCertificate,
        _ => TlsProblem::Handshake,
    }
}

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

/// The verifier of `verify: false`: any certificate, any name, any date;
/// the handshake signatures are still checked with the provider's algorithms.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_map_onto_the_shared_problems() {
        let cert = |c| rustls::Error::InvalidCertificate(c);
        assert_eq!(
            problem(&cert(CertificateError::UnknownIssuer)),
            TlsProblem::UntrustedIssuer
        );
        assert_eq!(
            problem(&cert(CertificateError::Expired)),
            TlsProblem::Expired
        );
        assert_eq!(
            problem(&cert(CertificateError::NotValidYet)),
            TlsProblem::Expired
        );
        assert_eq!(
            problem(&cert(CertificateError::NotValidForName)),
            TlsProblem::WrongHost
        );
        assert_eq!(
            problem(&rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired
            )),
            TlsProblem::ClientCertificate
        );
        assert_eq!(
            problem(&rustls::Error::AlertReceived(
                AlertDescription::HandshakeFailure
            )),
            TlsProblem::Handshake
        );
    }

    #[test]
    fn alpn_offers_http11_only() {
        let c = client_config(&TlsConfig::default()).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
