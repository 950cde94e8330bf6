//! TLS with rustls (ring provider): the client configuration built once
//! from [`TlsConfig`], the handshake, and rustls' errors as
//! [`TlsProblem`]s.
//!
//! The roots are exactly [`TlsConfig::roots`], the list every backend
//! trusts, so a certificate curl rejects is rejected here too, for the same
//! reason.

use std::sync::Arc;

use handle_api::{Error, ErrorKind, KeyFormat, Result, TlsConfig, TlsProblem};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    ServerName, UnixTime,
};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The ALPN protocol id of HTTP/2.
const H2: &[u8] = b"h2";
/// The ALPN protocol id of HTTP/1.1.
const HTTP11: &[u8] = b"http/1.1";

/// The backend's TLS client: one rustls configuration per ALPN offer, all
/// built from the same roots, verifier and identity.
#[derive(Clone)]
pub(crate) struct Tls {
    /// Offers `http/1.1` only; `Err` when the client identity is unusable,
    /// which fails every https load the same way curl fails them.
    http1: std::result::Result<Arc<ClientConfig>, Error>,
    /// Offers `h2` and `http/1.1`, the server choosing.
    h2: std::result::Result<Arc<ClientConfig>, Error>,
}

/// A finished handshake.
pub(crate) struct Handshaken {
    /// The encrypted stream.
    pub(crate) stream: TlsStream<TcpStream>,
    /// The server chose `h2` by ALPN.
    pub(crate) h2: bool,
}

impl Tls {
    /// Builds the configurations from `config`.
    pub(crate) fn new(config: &TlsConfig) -> Tls {
        match base(config) {
            Ok(base) => {
                let with = |alpn: &[&[u8]]| {
                    let mut c = base.clone();
                    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
                    Ok(Arc::new(c))
                };
                Tls {
                    http1: with(&[HTTP11]),
                    h2: with(&[H2, HTTP11]),
                }
            }
            Err(e) => Tls {
                http1: Err(e.clone()),
                h2: Err(e),
            },
        }
    }

    /// Runs the handshake with `host` (SNI and the name checked against
    /// the certificate) over `tcp`, offering h2 too when `offer_h2`.
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
        host: &str,
        offer_h2: bool,
    ) -> Result<Handshaken> {
        let config = if offer_h2 { &self.h2 } else { &self.http1 };
        let config = config.as_ref().map_err(Clone::clone)?.clone();
        let name = ServerName::try_from(host.to_owned()).map_err(|e| {
            Error::tls(
                TlsProblem::Handshake,
                format!("{host:?} cannot be a TLS server name: {e}"),
            )
        })?;
        let stream = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| handshake_error(e, host))?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(H2);
        Ok(Handshaken { stream, h2 })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The configuration without ALPN: roots or no verification, and the identity.
fn base(config: &TlsConfig) -> Result<ClientConfig> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = if config.verify {
        let mut roots = RootCertStore::empty();
        // Certificates webpki cannot use are skipped, as OpenSSL skips
        // unreadable entries of a CA bundle.
        let _ = roots.add_parsable_certificates(
            config
                .roots()
                .iter()
                .map(|c| CertificateDer::from(c.der().to_vec())),
        );
        if roots.is_empty() {
            // webpki refuses to build a verifier without roots; with none,
            // every chain is untrusted.
            Arc::new(Verifier::NoRoots(algorithms))
        } else {
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| {
                        Error::new(
                            ErrorKind::InvalidRequest,
                            format!("the trusted roots cannot be used: {e}"),
                        )
                    })?;
            webpki
        }
    } else {
        Arc::new(Verifier::AcceptAny(algorithms))
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            Error::tls(
                TlsProblem::Handshake,
                format!("no TLS version is available: {e}"),
            )
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match &config.identity {
        None => Ok(builder.with_no_client_auth()),
        Some(identity) => {
            let bad = |why: String| {
                Error::tls(
                    TlsProblem::ClientCertificate,
                    format!("the client certificate cannot be used: {why}"),
                )
            };
            let chain = identity
                .chain()
                .iter()
                .map(|c| CertificateDer::from(c.der().to_vec()))
                .collect();
            let der = identity.key_der().to_vec();
            let key = match identity.key_format() {
                KeyFormat::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
                KeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
                KeyFormat::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
                other => return Err(bad(format!("the key format {other:?} is unknown"))),
            };
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad(e.to_string()))
        }
    }
}

/// The server certificate check when webpki's cannot be used: no roots at
/// all, or verification turned off. Handshake signatures are checked either
/// way, so the peer still proves it holds the certificate's key.
#[derive(Debug)]
enum Verifier {
    /// Nothing is trusted.
    NoRoots(WebPkiSupportedAlgorithms),
    /// Any certificate is accepted (`danger_accept_invalid_certs`).
    AcceptAny(WebPkiSupportedAlgorithms),
}

impl Verifier {
    fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        match self {
            Verifier::NoRoots(a) | Verifier::AcceptAny(a) => a,
        }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self {
            Verifier::NoRoots(_) => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
            Verifier::AcceptAny(_) => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, self.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, self.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms().supported_schemes()
    }
}

/// A failed handshake with `host`.
fn handshake_error(e: std::io::Error, host: &str) -> Error {
    let problem = rustls_error(&e).map_or(TlsProblem::Handshake, problem);
    Error::tls(
        problem,
        format!("the TLS handshake with {host} failed: {e}"),
    )
    .with_source(e)
}

/// The rustls error inside an `io::Error`, as tokio-rustls reports them.
pub(crate) fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// What a rustls error says was wrong, in the terms every backend uses.
pub(crate) fn problem(e: &rustls::Error) -> TlsProblem {
    match e {
        rustls::Error::InvalidCertificate(c) => certificate_problem(c),
        rustls::Error::AlertReceived(alert) => alert_problem(*alert),
        rustls::Error::NoCertificatesPresented => TlsProblem::UntrustedIssuer,
        _ => TlsProblem::Handshake,
    }
}

fn certificate_problem(e: &CertificateError) -> TlsProblem {
    use CertificateError as C;
    match e {
        C::UnknownIssuer
        | C::BadSignature
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. }
        | C::InvalidPurpose
        | C::InvalidPurposeContext { .. } => TlsProblem::UntrustedIssuer,
        C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
            TlsProblem::Expired
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => TlsProblem::WrongHost,
        _ => TlsProblem::Handshake,
    }
}

/// An alert from the server: the ones about certificates are about ours,
/// since the server's certificate is checked here, not there.
fn alert_problem(alert: AlertDescription) -> TlsProblem {
    use AlertDescription as A;
    match alert {
        A::CertificateRequired
        | A::BadCertificate
        | A::UnsupportedCertificate
        | A::CertificateRevoked
        | A::CertificateExpired
        | A::CertificateUnknown
        | A::UnknownCA
        | A::AccessDenied => TlsProblem::ClientCertificate,
        _ => TlsProblem::Handshake,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_map_to_the_shared_problems() {
        let cert = |c| problem(&rustls::Error::InvalidCertificate(c));
        assert_eq!(
            cert(CertificateError::UnknownIssuer),
            TlsProblem::UntrustedIssuer
        );
        assert_eq!(
            cert(CertificateError::BadSignature),
            TlsProblem::UntrustedIssuer
        );
        assert_eq!(cert(CertificateError::Expired), TlsProblem::Expired);
        assert_eq!(cert(CertificateError::NotValidYet), TlsProblem::Expired);
        assert_eq!(
            cert(CertificateError::NotValidForName),
            TlsProblem::WrongHost
        );
        assert_eq!(cert(CertificateError::BadEncoding), TlsProblem::Handshake);
        let alert = |a| problem(&rustls::Error::AlertReceived(a));
        assert_eq!(
            alert(AlertDescription::CertificateRequired),
            TlsProblem::ClientCertificate
        );
        assert_eq!(
            alert(AlertDescription::UnknownCA),
            TlsProblem::ClientCertificate
        );
        assert_eq!(
            alert(AlertDescription::ProtocolVersion),
            TlsProblem::Handshake
        );
    }
}
